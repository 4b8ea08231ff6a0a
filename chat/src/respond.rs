//! The message-level request: a conversation, its tools and what to generate. Every
//! backend takes these ([`crate::ModelSession::respond`]); backends that continue
//! rendered text turn them into a prompt (the embedded backend's `PromptFormat`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::chat::{Message, ToolCall, ToolSpec};
use crate::error::RuntimeError;
use crate::generate::{
    CallCheck, CallRefused, GenerateRequest, ReplyFormat, SamplingParams, ToolChoice,
    ToolConstraint,
};
use crate::model::BranchId;

/// A conversation to answer: the messages so far, the tools the model is told about,
/// and (optionally) the start of the assistant's reply, already written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Chat {
    /// The messages, oldest first.
    pub messages: Vec<Message>,
    /// The tools the model is told about (listed in the prompt or sent to the server).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// The assistant's reply so far: the model continues it (empty: a new reply).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefill: String,
    /// The branch of the session this conversation lives on ([`BranchId::MAIN`]
    /// unless the caller forked).
    #[serde(default)]
    pub branch: BranchId,
}

impl Chat {
    /// A conversation of `messages` without tools.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }

    /// Sets the tools (builder style).
    pub fn with_tools(mut self, tools: Vec<ToolSpec>) -> Self {
        self.tools = tools;
        self
    }

    /// Sets the start of the reply (builder style).
    pub fn with_prefill(mut self, prefill: impl Into<String>) -> Self {
        self.prefill = prefill.into();
        self
    }

    /// Puts the conversation on `branch` (builder style).
    pub fn on(mut self, branch: BranchId) -> Self {
        self.branch = branch;
        self
    }
}

/// What to generate for a [`Chat`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatRequest {
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// How tokens are chosen.
    pub sampling: SamplingParams,
    /// Generation ends before the first of these strings.
    pub stop: Vec<String>,
    /// Whether the reply may, must or must not call a tool.
    pub tool_choice: ToolChoice,
    /// The tools a call may use when they differ from the listed ones (a structured
    /// answer such as a plan); `None`: the chat's tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_tools: Option<Vec<ToolSpec>>,
    /// The most calls in one reply.
    pub max_calls: u32,
    /// How calls are held to their schemas.
    pub calls: CallMode,
    /// Per-token log-probabilities with this many alternatives (see
    /// [`GenerateRequest::logprobs`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    /// The shape a reply that is not a call must have (JSON, a JSON Schema); `None`:
    /// free prose. The embedded backend enforces it with a grammar from the first
    /// token; backends without grammars ignore it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<ReplyFormat>,
}

impl Default for ChatRequest {
    fn default() -> Self {
        Self {
            max_tokens: 512,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            tool_choice: ToolChoice::Auto,
            call_tools: None,
            max_calls: ToolConstraint::DEFAULT_MAX_CALLS,
            calls: CallMode::default(),
            logprobs: None,
            format: None,
        }
    }
}

/// How a backend holds tool calls to their schemas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallMode {
    /// Constrain decoding where the backend can (a grammar), and validate every
    /// parsed call against its schema either way.
    #[default]
    Constrained,
    /// Parse and validate calls, but leave decoding free.
    Validated,
}

impl ChatRequest {
    /// A request for at most `max_tokens` tokens, otherwise the defaults.
    pub fn new(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            ..Self::default()
        }
    }

    /// The tools a call in this reply may use.
    pub fn callable<'a>(&'a self, chat: &'a Chat) -> &'a [ToolSpec] {
        self.call_tools.as_deref().unwrap_or(&chat.tools)
    }

    /// Checks the request before any work starts.
    pub fn validate(&self, chat: &Chat) -> Result<(), RuntimeError> {
        if self.tool_choice == ToolChoice::Required && self.callable(chat).is_empty() {
            return Err(RuntimeError::InvalidRequest(
                "tool_choice \"required\" needs at least one tool".into(),
            ));
        }
        self.text_request(None).validate()
    }

    /// The raw-text request with `tools` as its constraint (for backends that
    /// continue rendered text).
    pub fn text_request(&self, tools: Option<ToolConstraint>) -> GenerateRequest {
        GenerateRequest {
            max_tokens: self.max_tokens,
            sampling: self.sampling.clone(),
            stop: self.stop.clone(),
            tools,
            logprobs: self.logprobs,
        }
    }
}

/// Checks parsed calls against the schemas of the tools they may use: an unknown tool
/// or arguments that break the schema make the call malformed, with the reason. Shared
/// by every backend (grammar-constrained calls pass by construction).
pub fn call_check(tools: &[ToolSpec]) -> CallCheck {
    let validators: Vec<(String, Option<jsonschema::Validator>)> = tools
        .iter()
        .map(|t| {
            let validator = match &t.parameters {
                serde_json::Value::Object(map) if !map.is_empty() => {
                    jsonschema::validator_for(&t.parameters).ok()
                }
                _ => None,
            };
            (t.name.clone(), validator)
        })
        .collect();
    Arc::new(move |call: &ToolCall| {
        let Some((_, validator)) = validators.iter().find(|(name, _)| *name == call.name) else {
            let known: Vec<&str> = validators.iter().map(|(n, _)| n.as_str()).collect();
            return Err(CallRefused::UnknownTool {
                name: call.name.clone(),
                known: known.join(", "),
            });
        };
        if !call.arguments.is_object() {
            return Err(CallRefused::NotAnObject {
                name: call.name.clone(),
            });
        }
        match validator {
            Some(validator) => match validator.iter_errors(&call.arguments).next() {
                Some(error) => Err(CallRefused::Schema {
                    name: call.name.clone(),
                    error: error.to_string(),
                    at: error.instance_path().to_string(),
                }),
                None => Ok(()),
            },
            None => Ok(()),
        }
    })
}
