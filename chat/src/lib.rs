//! # jielong-chat
//!
//! The vocabulary every part of [Jielong](https://example.invalid/jielong) speaks and
//! the seam between callers and models: messages and tool specs, the message-level
//! request (`Chat`, `ChatRequest`), the streamed reply (`Generation`, `Completion`),
//! the `LanguageModel` / `ModelSession` traits with branches, the `Tool` trait and its
//! registry, the call syntaxes models write (and their streaming parser), and the text
//! scanners both sides of the seam share (intent recognition, JSON nesting, stop
//! strings). No backend lives here: the embedded llama.cpp runtime is `jielong-llama`,
//! OpenAI-compatible servers are `jielong-remote`.
//!
//! ```
//! use jielong_chat::{Chat, ChatRequest, Message, ToolChoice};
//!
//! let chat = Chat::new(vec![Message::user("What is the capital of France?")]);
//! let request = ChatRequest { tool_choice: ToolChoice::None, ..ChatRequest::new(32) };
//! assert!(request.validate(&chat).is_ok());
//! ```

pub mod branched;
pub mod chat;
pub mod error;
pub mod fit;
pub mod generate;
pub mod intent;
pub mod logprob;
pub mod model;
pub mod numbers;
pub mod quotes;
pub mod respond;
pub mod stop;
pub mod tool;
pub mod tool_format;

pub use branched::{BranchReply, BranchedSession, PreparedPrompt, Unenforceable};
pub use chat::{Message, Role, ToolCall, ToolSpec};
pub use error::{RemoteFault, RuntimeError, TemplateError};
pub use generate::{
    CallCheck, CallRefused, Completion, FinishReason, GenerateRequest, Generation, GenerationEvent,
    GenerationSender, MalformedCall, ReplyFormat, SamplingParams, ToolChoice, ToolConstraint,
    Usage,
};
pub use logprob::{Score, TokenLogprob, TokenProb};
pub use model::{
    physical_cores, BranchId, BranchUsage, Capabilities, KvUsage, LanguageModel, ModelInfo,
    ModelSession, OnBranch, PromptCache, SessionOptions,
};
pub use quotes::{Nesting, Quotes};
pub use respond::{call_check, CallMode, Chat, ChatRequest};
pub use stop::StopMatcher;
pub use tool::{
    DynTool, Interpreter, SchemaTool, Tool, ToolDefinitionError, ToolError, ToolKind, ToolRegistry,
};
pub use tool_format::{ParsedEvent, ToolCallFormat, ToolCallParser};
