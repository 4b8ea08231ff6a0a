//! The legacy `POST /v1/completions`: raw text in, its continuation out.

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::chat::{FinishReason, Stop, StreamOptions, Usage};
use crate::{nullable, seconds};

/// The `object` of a [`TextCompletion`] (whole or streamed).
pub const TEXT_COMPLETION: &str = "text_completion";

/// The body of `POST /v1/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The model's id (servers of one model may ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The raw prompt.
    pub prompt: Prompt,
    /// The most tokens to generate (OpenAI's default: 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Top-k filter (an extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Min-p filter (an extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    /// Seed of the random draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stop strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Stream [`TextCompletion`] chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// `{"include_usage": true}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Log-probabilities with this many alternatives per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    /// Prepend the prompt to the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    /// How many choices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
}

/// A completion prompt: a string, or a batch of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One prompt.
    One(String),
    /// A batch of prompts.
    Many(Vec<String>),
}

/// A text completion, whole or one chunk of a stream (OpenAI uses one shape for both;
/// a stream's usage chunk has no choices).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextCompletion {
    /// The reply's id (`cmpl-…`).
    #[serde(default, deserialize_with = "nullable")]
    pub id: String,
    /// `text_completion`.
    #[serde(default, deserialize_with = "nullable")]
    pub object: String,
    /// Unix seconds.
    #[serde(default, deserialize_with = "seconds")]
    pub created: u64,
    /// The model that answered.
    #[serde(default, deserialize_with = "nullable")]
    pub model: String,
    /// What the server runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// The choices.
    #[serde(default, deserialize_with = "nullable")]
    pub choices: Vec<TextChoice>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One choice of a [`TextCompletion`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextChoice {
    /// Which choice.
    #[serde(default, deserialize_with = "nullable")]
    pub index: u32,
    /// The text (a piece of it in a stream).
    #[serde(default, deserialize_with = "nullable")]
    pub text: String,
    /// Per-token log-probabilities, when asked for (`null` otherwise).
    #[serde(default)]
    pub logprobs: Option<TextLogprobs>,
    /// Why generation stopped (`null` before the end of a stream).
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
}

/// The legacy `logprobs` object: parallel lists, one entry per token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextLogprobs {
    /// The tokens' text.
    #[serde(default, deserialize_with = "nullable")]
    pub tokens: Vec<String>,
    /// Their log-probabilities.
    #[serde(default, deserialize_with = "nullable")]
    pub token_logprobs: Vec<f32>,
    /// The alternatives at each position.
    #[serde(default, deserialize_with = "nullable")]
    pub top_logprobs: Vec<TopTokens>,
    /// Where each token starts in the text (bytes).
    #[serde(default, deserialize_with = "nullable")]
    pub text_offset: Vec<u64>,
}

/// The alternatives at one position, `{token: logprob}` in order (most likely
/// first); a token text that comes twice keeps its first place and its last value,
/// as a JSON object would.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopTokens(Vec<(String, f32)>);

impl TopTokens {
    /// Adds `token` (or sets its value when it is there).
    pub fn insert(&mut self, token: impl Into<String>, logprob: f32) {
        let token = token.into();
        match self.0.iter_mut().find(|(t, _)| *t == token) {
            Some(entry) => entry.1 = logprob,
            None => self.0.push((token, logprob)),
        }
    }

    /// The tokens and their log-probabilities, in order.
    pub fn entries(&self) -> &[(String, f32)] {
        &self.0
    }
}

impl<T: Into<String>> FromIterator<(T, f32)> for TopTokens {
    fn from_iter<I: IntoIterator<Item = (T, f32)>>(iter: I) -> Self {
        let mut top = TopTokens::default();
        for (token, logprob) in iter {
            top.insert(token, logprob);
        }
        top
    }
}

impl Serialize for TopTokens {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (token, logprob) in &self.0 {
            map.serialize_entry(token, logprob)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for TopTokens {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = TopTokens;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of tokens and their log-probabilities")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopTokens, A::Error> {
                let mut top = TopTokens::default();
                while let Some((token, logprob)) = map.next_entry::<String, f32>()? {
                    top.insert(token, logprob);
                }
                Ok(top)
            }
        }
        deserializer.deserialize_map(Entries)
    }
}
