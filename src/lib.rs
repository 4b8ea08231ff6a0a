//! # Jielong
//!
//! Agents on local language models. This crate is the facade: it re-exports the
//! workspace's crates and adds the glue a program needs first, [`open_model`], which
//! turns a model name into a loaded model (downloading and verifying it on first use).
//!
//! ```no_run
//! use jielong::chat::{Chat, ChatRequest};
//! use jielong::{Message, SessionOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // A catalog name, a .gguf path, or an OpenAI-compatible server
//! // ("openai:http://127.0.0.1:8080/v1#MODEL"): every backend takes messages.
//! let model = jielong::open_language_model("qwen2.5-coder-0.5b", &jielong::models::NoProgress).await?;
//! let mut session = model.open_session(&SessionOptions::default())?;
//! let chat = Chat::new(vec![Message::user("What is the capital of France?")]);
//! let answer = session.respond(&chat, &ChatRequest::new(64))?.finish(|_| {}).await?;
//! println!("{}", answer.text);
//! # Ok(()) }
//! ```
//!
//! The crates behind it: [`chat`] (the vocabulary and the model seam: messages,
//! requests, replies, sessions and branches, tools), [`llama`] (the embedded llama.cpp
//! backend: templates, grammars, sessions), [`agent`] (the planner loop and its
//! strategies), [`puzzles`] (exact checkers and the Game of 24 thought space), [`models`] (the catalog and the model cache), [`tools`] (the
//! built-in tools), [`retrieval`] (the local search index), [`workflow`] (YAML
//! workflows; [`LocalModels`] gives them models), [`remote`] (OpenAI-compatible
//! servers as models), [`serve`] (the embedded model as an OpenAI-compatible server),
//! [`eval`] (the evaluation harness).
//!
//! A YAML workflow from a program runs the same way as `jielong workflow run`:
//!
//! ```no_run
//! use jielong::workflow::{RunOptions, Workflow};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let workflow = Workflow::from_file("examples/workflows/math.yaml")?;
//! let report = workflow
//!     .run(&jielong::LocalModels::new(), RunOptions::new().input("question", "What is 2**20?"))
//!     .await?;
//! println!("{}", report.outputs["answer"]);
//! # Ok(()) }
//! ```

/// The README's Rust examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;

pub use jielong_agent as agent;
pub use jielong_chat as chat;
pub use jielong_eval as eval;
pub use jielong_llama as llama;
pub use jielong_models as models;
pub use jielong_puzzles as puzzles;
pub use jielong_remote as remote;
pub use jielong_retrieval as retrieval;
pub use jielong_serve as serve;
pub use jielong_tools as tools;
pub use jielong_workflow as workflow;

use std::collections::HashMap;
use std::sync::Arc;

pub use jielong_chat::{
    Completion, FinishReason, GenerateRequest, Generation, GenerationEvent, LanguageModel, Message,
    ModelInfo, ModelSession, Role, RuntimeError, SamplingParams, SessionOptions, ToolCall,
    ToolSpec, Usage,
};
pub use jielong_llama::{ChatTemplate, LlamaModel, LlamaSession};
pub use jielong_models::{ModelError, ModelRef, ModelStore};
pub use jielong_remote::{RemoteConfig, RemoteModel, RemoteSession};

/// The thought spaces Jielong offers by name (`--thoughts`, a workflow's
/// `thoughts:`): the agent's `free` and the Game of 24 from [`puzzles`].
pub fn thought_spaces() -> agent::ThoughtSpaces {
    agent::ThoughtSpaces::new().with(Arc::new(puzzles::thoughts::Game24))
}

/// The metrics Jielong knows by name (`--metric`, an example's `metric` field): the
/// built-in ones and the Game of 24's `game24` from [`puzzles`].
pub fn metrics() -> eval::Metrics {
    eval::Metrics::new().with(Arc::new(puzzles::metric::Game24Metric))
}

/// The names workflows may use that Jielong provides ([`thought_spaces`]).
pub fn workflow_catalog() -> workflow::Catalog {
    workflow::Catalog::default().with_thought_spaces(thought_spaces())
}

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

/// Opens any model reference as a [`LanguageModel`]: a remote OpenAI-compatible
/// server for `openai:<base_url>#<model>[;api_key_env=VAR]` (connected and checked
/// with [`RemoteModel::connect`]: the server answers and serves that model), else what
/// [`open_model`] opens, loaded embedded.
pub async fn open_language_model(
    reference: &str,
    progress: &dyn models::Progress,
) -> Result<Arc<dyn LanguageModel>, OpenModelError> {
    if RemoteConfig::is_remote(reference) {
        let config = RemoteConfig::parse(reference).map_err(|e| ModelError::BadReference {
            input: e.reference,
            reason: e.reason,
        })?;
        return Ok(Arc::new(RemoteModel::connect(config).await?));
    }
    Ok(Arc::new(open_model(reference, progress).await?))
}

/// Models for workflows from the local cache: each reference is resolved, pulled on
/// first use (see [`open_model`]) and loaded once, then shared by every agent that
/// names it.
pub struct LocalModels {
    progress: Arc<dyn models::Progress>,
    default_model: String,
    session: SessionOptions,
    loaded: tokio::sync::Mutex<HashMap<String, Arc<dyn LanguageModel>>>,
}

impl Default for LocalModels {
    fn default() -> Self {
        LocalModels::new()
    }
}

impl LocalModels {
    /// The default model `qwen2.5-coder-0.5b`, default sessions, no progress display.
    pub fn new() -> Self {
        LocalModels {
            progress: Arc::new(models::NoProgress),
            default_model: models::DEFAULT_MODEL.to_string(),
            session: SessionOptions::default(),
            loaded: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The model agents use when a workflow names none.
    pub fn with_default_model(mut self, reference: impl Into<String>) -> Self {
        self.default_model = reference.into();
        self
    }

    /// Session settings (threads, context) for models the workflow does not tune.
    pub fn with_session_options(mut self, options: SessionOptions) -> Self {
        self.session = options;
        self
    }

    /// Reports downloads through `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn models::Progress>) -> Self {
        self.progress = progress;
        self
    }
}

impl workflow::ModelProvider for LocalModels {
    fn load<'a>(
        &'a self,
        reference: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Arc<dyn LanguageModel>, String>> {
        Box::pin(async move {
            let mut loaded = self.loaded.lock().await;
            if let Some(model) = loaded.get(reference) {
                return Ok(model.clone() as Arc<dyn LanguageModel>);
            }
            let model = open_language_model(reference, self.progress.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            loaded.insert(reference.to_string(), model.clone());
            Ok(model)
        })
    }

    fn default_model(&self) -> String {
        self.default_model.clone()
    }

    fn session_options(&self) -> SessionOptions {
        self.session.clone()
    }
}
