//! # jielong-llama
//!
//! The embedded llama.cpp backend: a GGUF model in this process behind the
//! `jielong_chat` seam. It renders chats with the model's own template
//! ([`template`], [`prompt`]), constrains calls with GBNF grammars built from the
//! tools' JSON Schemas, breaks loops inside them ([`loop_guard`]), and keeps every
//! branch's KV cache so a prompt evaluates only what it does not share.
//!
//! [`LlamaModel::load`] maps a GGUF file into memory once; [`LlamaModel::session`]
//! opens a [`LlamaSession`], a context with its own KV cache that runs on a worker
//! thread of its own and reuses every prompt prefix it has already evaluated.

mod branch;
mod grammar;
mod kv;
pub mod loop_guard;
pub mod prompt;
mod session;
pub mod template;
mod warm;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel as RawModel;

use jielong_chat::error::RuntimeError;
use jielong_chat::model::{Capabilities, LanguageModel, ModelInfo, ModelSession, SessionOptions};
use jielong_chat::tool_format::{FormatEvidence, ToolCallFormat};

pub use grammar::{check_json_schema, check_tool_schema};
pub use kv::common_prefix_len;
pub use loop_guard::LoopGuard;
pub use prompt::PromptFormat;
pub use session::{LlamaSession, ParallelGeneration};
pub use template::ChatTemplate;

/// The process-wide llama.cpp backend (llama.cpp may be initialised only once per
/// process). Public for code that drives llama-cpp-2 directly next to Jielong, such as
/// the benchmark's bare loop.
pub fn backend() -> Result<&'static LlamaBackend, RuntimeError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs every tensor it loads; route that into `tracing` (shown
            // with `-vv`) instead of stderr.
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| RuntimeError::Backend(e.clone()))
}

/// A GGUF model loaded into memory, shared by all its sessions.
///
/// Cloning is cheap (the weights are shared).
#[derive(Clone)]
pub struct LlamaModel {
    loaded: Arc<Loaded>,
}

/// The parts every session reads.
pub(crate) struct Loaded {
    pub(crate) model: RawModel,
    pub(crate) info: ModelInfo,
    /// The chat template and call format chats are rendered and parsed with.
    pub(crate) prompt: PromptFormat,
}

impl std::fmt::Debug for LlamaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaModel")
            .field("info", &self.loaded.info)
            .finish_non_exhaustive()
    }
}

impl LlamaModel {
    /// Loads a GGUF file (memory-mapped; weights stay on the CPU).
    ///
    /// The file is not validated beyond what llama.cpp checks: call a GGUF check first
    /// (as the CLI does) to get a precise message for a truncated or foreign file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, RuntimeError> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(RuntimeError::ModelNotFound {
                path: path.to_path_buf(),
            });
        }
        let backend = backend()?;
        let params = LlamaModelParams::default();
        let model = RawModel::load_from_file(backend, path, &params).map_err(|e| {
            RuntimeError::ModelLoad {
                path: path.to_path_buf(),
                reason: match e {
                    llama_cpp_2::LlamaModelLoadError::NullResult => {
                        "llama.cpp rejected the file (not a GGUF model, truncated, or an unsupported architecture; run with -vv to see its log)".into()
                    }
                    other => other.to_string(),
                },
            }
        })?;
        let template = own_template(&model)?;
        let tool_call_format = ToolCallFormat::detect(&Evidence {
            model: &model,
            template: &template.0,
        });
        let info = ModelInfo {
            name: model
                .meta_val_str("general.name")
                .ok()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| file_stem(path)),
            path: Some(path.to_path_buf()),
            architecture: model
                .meta_val_str("general.architecture")
                .unwrap_or_else(|_| "unknown".into()),
            context_length: model.n_ctx_train(),
            parameters: model.n_params(),
            size_bytes: model.size(),
            has_own_template: template.1,
            tool_call_format,
        };
        Ok(Self {
            loaded: Arc::new(Loaded {
                model,
                info,
                prompt: PromptFormat {
                    template: template.0,
                    calls: tool_call_format,
                },
            }),
        })
    }

    /// What is known about the model.
    pub fn info(&self) -> &ModelInfo {
        &self.loaded.info
    }

    /// The model's chat template (from the GGUF, or ChatML when it has none).
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.loaded.prompt.template
    }

    /// How chats are rendered into prompts and replies parsed.
    pub fn prompt_format(&self) -> &PromptFormat {
        &self.loaded.prompt
    }

    /// Opens a session with its own context and KV cache.
    pub fn session(&self, options: &SessionOptions) -> Result<LlamaSession, RuntimeError> {
        LlamaSession::open(self.loaded.clone(), options)
    }

    /// Tokenizes `text` as a prompt would be (special tokens such as `<|im_start|>`
    /// are recognised). Returns token ids.
    pub fn tokenize(&self, text: &str) -> Vec<i32> {
        kv::tokenize(&self.loaded.model, text)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    /// The context size a session gets from `options`.
    pub fn context_size_for(&self, options: &SessionOptions) -> u32 {
        context_size(&self.loaded.info, options)
    }
}

impl LanguageModel for LlamaModel {
    fn info(&self) -> &ModelInfo {
        self.info()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            grammar: true,
            max_branches: SessionOptions::DEFAULT_SEQUENCES,
            logprobs: true,
            scoring: true,
            raw_prompts: true,
        }
    }

    fn open_session(
        &self,
        options: &SessionOptions,
    ) -> Result<Box<dyn ModelSession>, RuntimeError> {
        Ok(Box::new(self.session(options)?))
    }
}

/// The context size for a session: the option, else the trained length capped at the
/// default; never 0.
pub(crate) fn context_size(info: &ModelInfo, options: &SessionOptions) -> u32 {
    let trained = if info.context_length == 0 {
        SessionOptions::DEFAULT_CONTEXT
    } else {
        info.context_length
    };
    options
        .context_size
        .unwrap_or(trained.min(SessionOptions::DEFAULT_CONTEXT))
        .max(16)
}

pub(crate) fn nonzero(n: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(n)
}

/// The model's own chat template, with its BOS/EOS token texts; the flag says whether
/// it came from the file.
fn own_template(model: &RawModel) -> Result<(ChatTemplate, bool), RuntimeError> {
    let vocab = model.vocab();
    let piece = |t| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
    let bos = piece(vocab.bos());
    let eos = piece(vocab.eos());
    match model.meta_val_str("tokenizer.chat_template") {
        Ok(source) if !source.trim().is_empty() => {
            Ok((ChatTemplate::new(source, &bos, &eos)?, true))
        }
        _ => Ok((ChatTemplate::chatml(), false)),
    }
}

/// What tool-call format detection reads from a loaded model.
struct Evidence<'a> {
    model: &'a RawModel,
    template: &'a ChatTemplate,
}

impl FormatEvidence for Evidence<'_> {
    fn is_single_token(&self, text: &str) -> bool {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), false, true)
            .len()
            == 1
    }

    fn template_source(&self) -> &str {
        self.template.source()
    }
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| PathBuf::from(path).display().to_string())
}
