//! The language-model abstraction: what any backend (embedded llama.cpp, a remote
//! server, a scripted test model) offers the rest of Jielong.

use std::path::PathBuf;

use serde::Serialize;

use crate::chat::{Message, ToolSpec};
use crate::error::RuntimeError;
use crate::generate::{GenerateRequest, Generation};
use crate::template::ChatTemplate;

/// What is known about a loaded model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// A display name (the GGUF's `general.name`, else the file name).
    pub name: String,
    /// The file it was loaded from, for local models.
    pub path: Option<PathBuf>,
    /// The architecture (`qwen2`, `llama`, …).
    pub architecture: String,
    /// The context length the model was trained with.
    pub context_length: u32,
    /// Number of parameters.
    pub parameters: u64,
    /// Size of the weights in bytes.
    pub size_bytes: u64,
    /// Whether the chat template came from the model file (`false`: the ChatML fallback).
    pub has_own_template: bool,
    /// How the model writes tool calls (detected from its vocabulary and template).
    pub tool_call_format: crate::tool_format::ToolCallFormat,
}

/// How a session's context is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// Context window in tokens; `None` picks the smaller of the model's trained
    /// length and [`SessionOptions::DEFAULT_CONTEXT`].
    pub context_size: Option<u32>,
    /// Threads for generation and prompt evaluation; `None` uses the physical cores.
    pub threads: Option<usize>,
    /// Largest number of prompt tokens evaluated in one batch.
    pub batch_size: u32,
    /// Sequences the context can hold at once (1 for a plain chat; more for forked
    /// parallel samples).
    pub max_sequences: u32,
}

impl SessionOptions {
    /// The default context window when none is given.
    pub const DEFAULT_CONTEXT: u32 = 8192;
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            context_size: None,
            threads: None,
            batch_size: 512,
            max_sequences: 1,
        }
    }
}

/// The number of physical CPU cores: the thread count at which llama.cpp decodes
/// fastest on a CPU (hyper-threads only add contention).
pub fn physical_cores() -> usize {
    num_cpus::get_physical().max(1)
}

/// A language model that can open sessions.
pub trait LanguageModel: Send + Sync {
    /// What is known about the model.
    fn info(&self) -> &ModelInfo;

    /// The chat template prompts are rendered with.
    fn chat_template(&self) -> &ChatTemplate;

    /// Opens a session: a conversation state that keeps what it has evaluated.
    fn open_session(&self, options: &SessionOptions)
        -> Result<Box<dyn ModelSession>, RuntimeError>;
}

/// A conversation state on a model: it remembers the tokens it has evaluated, so a
/// prompt that extends an earlier one only costs the new part.
///
/// Requests on one session run one after another, in the order they were made.
pub trait ModelSession: Send {
    /// Starts continuing `prompt` (raw text, special tokens allowed).
    fn generate(
        &mut self,
        prompt: &str,
        request: &GenerateRequest,
    ) -> Result<Generation, RuntimeError>;

    /// The chat template of the session's model.
    fn chat_template(&self) -> &ChatTemplate;

    /// Renders `messages` (and `tools`) with the model's chat template and generates the
    /// assistant's reply.
    fn chat(
        &mut self,
        messages: &[Message],
        tools: &[ToolSpec],
        request: &GenerateRequest,
    ) -> Result<Generation, RuntimeError> {
        let prompt = self.chat_template().render(messages, tools, true)?;
        self.generate(&prompt, request)
    }

    /// Forgets everything evaluated so far.
    fn reset(&mut self) -> Result<(), RuntimeError>;

    /// The context window in tokens.
    fn context_size(&self) -> u32;
}
