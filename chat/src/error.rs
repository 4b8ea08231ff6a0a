//! The runtime's error type.

use std::path::PathBuf;

/// Everything that can go wrong loading a model or generating with it.
///
/// Each message is one line that says what failed and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The model file does not exist.
    #[error("model file {path} does not exist")]
    ModelNotFound {
        /// The path that was given.
        path: PathBuf,
    },
    /// llama.cpp refused to load the file.
    #[error("cannot load model {path}: {reason}")]
    ModelLoad {
        /// The model file.
        path: PathBuf,
        /// Why, as far as it is known.
        reason: String,
    },
    /// The llama.cpp backend could not start.
    #[error("cannot initialise llama.cpp: {0}")]
    Backend(String),
    /// A context (KV cache) could not be created, usually for lack of memory.
    #[error("cannot create a context of {n_ctx} tokens: {reason}")]
    Context {
        /// The requested context size.
        n_ctx: u32,
        /// Why.
        reason: String,
    },
    /// The prompt does not fit in the context window.
    #[error("the prompt has {prompt_tokens} tokens but the context holds {n_ctx}; shorten it or raise --ctx-size")]
    PromptTooLong {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// The context size.
        n_ctx: u32,
    },
    /// The prompt rendered to no tokens at all.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// A request's values are out of range.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// llama.cpp failed to evaluate a batch.
    #[error("llama.cpp failed to evaluate tokens: {0}")]
    Decode(String),
    /// Rendering the chat template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The backend cannot do this (see [`crate::Capabilities`]).
    #[error("this model backend does not support {0}")]
    Unsupported(String),
    /// A remote model server failed; `kind` says how, for callers that react to it.
    #[error("{message}")]
    Remote {
        /// The kind of fault.
        kind: RemoteFault,
        /// One line: what failed and where.
        message: String,
    },
    /// The session's worker thread ended (it panicked or was shut down).
    #[error("the model session has shut down")]
    WorkerGone,
}

/// How a remote model server failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteFault {
    /// Nothing answers at the address (connection refused, DNS failure).
    Unreachable,
    /// The server refused the credentials (401, 403).
    Unauthorized,
    /// The server does not know the model (404).
    UnknownModel,
    /// Too many requests (429), still failing after the retries.
    RateLimited,
    /// The server failed (5xx), still failing after the retries.
    Server,
    /// The server answered something that is not the protocol (malformed JSON, a
    /// stream cut short, an unexpected status).
    Protocol,
    /// No answer within the time limit.
    Timeout,
}

/// Why a chat template could not be compiled or rendered. Messages are one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template source is not valid Jinja.
    #[error("chat template syntax error on line {line}: {detail}")]
    Syntax {
        /// The 1-based line of the error (0 if unknown).
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// Rendering failed (a type error, an unknown filter, bad `tojson` input, ...).
    #[error("chat template rendering failed: {detail}")]
    Render {
        /// What went wrong, with the template line when known.
        detail: String,
    },
    /// The template itself refused the input with `raise_exception(msg)` (e.g. "Conversation
    /// roles must alternate user/assistant/user/assistant/...").
    #[error("chat template raised an exception: {0}")]
    Raised(String),
}
