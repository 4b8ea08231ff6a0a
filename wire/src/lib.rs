//! # jielong-wire
//!
//! The OpenAI wire format as typed serde structs: what goes over HTTP between an
//! OpenAI-compatible client and server, in both directions.
//!
//! - [`chat`]: `POST /v1/chat/completions` — the request ([`ChatCompletionRequest`]:
//!   messages whose content is a string or parts, tools, `tool_choice`, `stop`,
//!   sampling, `stream_options`, log-probabilities, `response_format`), the reply
//!   ([`ChatCompletion`]) and its streamed form ([`ChatCompletionChunk`] with
//!   [`Delta`]s, tool calls whole or as [`ToolCallDelta`]s), [`Usage`] and
//!   llama-server's [`Timings`].
//! - [`completion`]: the legacy `POST /v1/completions` (raw text).
//! - [`model`]: `GET /v1/models`.
//! - [`error`]: the error body, `{"error": {"message", "type", "param", "code"}}`.
//!
//! `jielong-serve` reads requests and writes replies with these types;
//! `jielong-remote` writes requests and reads replies with them. Both keep their own
//! conversions to and from `jielong-chat`'s vocabulary: this crate knows no HTTP and no
//! Jielong type.
//!
//! Invariant: **this is the only definition of the OpenAI wire format in the
//! workspace.** A field the server writes or the client reads is added here, once.
//!
//! How the types read and write:
//! - Reading is lenient, as OpenAI-compatible servers are: unknown fields are
//!   ignored, most fields may be missing, `null` stands for an empty list where
//!   servers send one (`"choices": null`), and values a reader wants to refuse with
//!   a message of its own (an unknown role, `tool_choice` or `response_format`) are
//!   kept (`Other` variants) rather than failing the whole body.
//! - Writing gives OpenAI's shapes: an absent `Option` is left out, except the fields
//!   OpenAI always sends, `null` when empty (a message's `content`, a choice's
//!   `logprobs` and `finish_reason`, an error's `param` and `code`).

pub mod chat;
pub mod completion;
pub mod error;
pub mod model;

pub use chat::{
    ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage,
    ChoiceLogprobs, ChunkChoice, Content, ContentPart, Delta, FinishReason, FunctionCall,
    FunctionDef, FunctionDelta, FunctionName, NamedToolChoice, PromptTokensDetails, ResponseFormat,
    Role, Stop, StreamOptions, Timings, TokenLogprob, Tool, ToolCall, ToolCallDelta, ToolChoice,
    TopLogprob, Usage,
};
pub use completion::{
    CompletionRequest, Prompt, TextChoice, TextCompletion, TextLogprobs, TopTokens,
};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use model::{Model, ModelList, ModelMeta};

use serde::{Deserialize, Deserializer};

/// `null` read as the default (servers send `"choices": null`, `"delta": null`).
pub(crate) fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Unix seconds, read leniently: a whole or fractional number; anything else is 0.
pub(crate) fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(some_seconds(deserializer)?.unwrap_or(0))
}

/// Unix seconds when given: a whole or fractional number; anything else is none.
pub(crate) fn some_seconds<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(match value {
        Some(serde_json::Value::Number(n)) => Some(
            n.as_u64()
                .unwrap_or_else(|| n.as_f64().map_or(0, |f| f.max(0.0) as u64)),
        ),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
