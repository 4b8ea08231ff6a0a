//! # Jielong
//!
//! Agents on local language models. This crate is the facade: it re-exports the
//! workspace's crates and adds the glue a program needs first, [`open_model`], which
//! turns a model name into a loaded model (downloading and verifying it on first use).
//!
//! ```no_run
//! use jielong::{GenerateRequest, Message, SessionOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let model = jielong::open_model("qwen2.5-coder-0.5b", &jielong::models::NoProgress).await?;
//! let session = model.session(&SessionOptions::default())?;
//! let prompt = model
//!     .chat_template()
//!     .render(&[Message::user("What is the capital of France?")], &[], true)?;
//! let answer = session.generate(&prompt, &GenerateRequest::default())?.finish(|_| {}).await?;
//! println!("{}", answer.text);
//! # Ok(()) }
//! ```
//!
//! The crates behind it: [`core`] (chat types, templates, the model runtime, tools,
//! the agent loop), [`models`] (the catalog and the model cache), [`tools`] (the
//! built-in tools), [`retrieval`] (the local search index).

/// The README's Rust examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;

pub use jielong_core as core;
pub use jielong_models as models;
pub use jielong_retrieval as retrieval;
pub use jielong_tools as tools;

pub use jielong_core::{
    ChatTemplate, Completion, FinishReason, GenerateRequest, Generation, GenerationEvent,
    LanguageModel, LlamaModel, LlamaSession, Message, ModelInfo, ModelSession, Role, RuntimeError,
    SamplingParams, SessionOptions, ToolCall, ToolSpec, Usage,
};
pub use jielong_models::{ModelError, ModelRef, ModelStore};

/// Why [`open_model`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenModelError {
    /// The model could not be found, downloaded or verified.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// llama.cpp could not load it.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Resolves a model reference (a catalog name, a `.gguf` path, or
/// `hf:OWNER/REPO/FILE.gguf`), downloads and verifies it if it is not cached yet,
/// checks the file's GGUF structure, and loads it.
pub async fn open_model(
    reference: &str,
    progress: &dyn models::Progress,
) -> Result<LlamaModel, OpenModelError> {
    let store = ModelStore::from_env()?;
    let model_ref = store.parse(reference)?;
    let path = store.resolve(&model_ref, progress).await?;
    models::gguf::inspect(&path)?;
    let model = tokio::task::spawn_blocking(move || LlamaModel::load(path))
        .await
        .map_err(|_| RuntimeError::WorkerGone)??;
    Ok(model)
}
