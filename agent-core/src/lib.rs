//! # jielong-core
//!
//! The core of [Jielong](https://example.invalid/jielong): chat messages and the
//! model's own chat template, the language-model abstraction, and (feature `llama`,
//! on by default) the embedded llama.cpp runtime with KV-cache prefix reuse.
//!
//! ```no_run
//! # #[cfg(feature = "llama")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use jielong_core::{Chat, ChatRequest, LlamaModel, Message, SessionOptions};
//!
//! let model = LlamaModel::load("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")?;
//! let session = model.session(&SessionOptions::default())?;
//! let chat = Chat::new(vec![Message::user(
//!     "What is the capital of France? Answer in one word.",
//! )]);
//! let completion = session
//!     .respond(&chat, &ChatRequest::new(32))?
//!     .wait(|piece| print!("{piece}"))?;
//! eprintln!("{} prompt tokens, {} reused", completion.usage.prompt_tokens, completion.usage.cached_tokens);
//! # Ok(()) }
//! # #[cfg(not(feature = "llama"))] fn main() {}
//! ```

pub mod agent;
pub mod chat;
pub mod error;
pub mod generate;
pub mod intent;
#[cfg(feature = "llama")]
pub mod llama;
pub mod logprob;
pub mod loop_guard;
pub mod model;
pub mod quotes;
pub mod respond;
pub mod stop;
pub mod technique;
pub mod template;
pub mod tool;
pub mod tool_format;

pub use agent::{Agent, AgentBuilder, AgentError, AgentEvent, AgentRun, AgentSettings, StopReason};
pub use chat::{Message, Role, ToolCall, ToolSpec};
pub use error::{RemoteFault, RuntimeError};
pub use generate::{
    CallCheck, Completion, FinishReason, GenerateRequest, Generation, GenerationEvent,
    GenerationSender, MalformedCall, ReplyFormat, SamplingParams, ToolChoice, ToolConstraint,
    Usage,
};
#[cfg(feature = "llama")]
pub use llama::{LlamaModel, LlamaSession, ParallelGeneration};
pub use logprob::{Score, TokenLogprob, TokenProb};
pub use loop_guard::LoopGuard;
pub use model::{
    physical_cores, BranchId, BranchUsage, Capabilities, KvUsage, LanguageModel, ModelInfo,
    ModelSession, OnBranch, SessionOptions,
};
pub use quotes::{Nesting, Quotes};
pub use respond::{call_check, CallMode, Chat, ChatRequest, PromptFormat};
pub use stop::StopMatcher;
pub use technique::{Framing, Shot, Shots, ShotsError, Technique, Wording};
pub use template::{ChatTemplate, TemplateError};
pub use tool::{DynTool, SchemaTool, Tool, ToolDefinitionError, ToolError, ToolRegistry};
pub use tool_format::{ParsedEvent, ToolCallFormat, ToolCallParser};
