//! One module per subcommand.

pub mod ask;
pub mod bench;
pub mod chat;
pub mod eval;
pub mod eval_systems;
pub mod game24;
pub mod generate;
pub mod index;
pub mod judge;
pub mod models;
pub mod needle;
pub mod optimize;
pub mod run;
pub mod runs;
pub mod serve;
pub mod settings;
pub mod tools;
pub mod workflow;

use std::sync::Arc;

use anyhow::Context;

use jielong::chat::{ChatRequest, LanguageModel};
use jielong::{GenerateRequest, LlamaModel, SamplingParams, SessionOptions};

use crate::cli::{FramingArgs, GlobalArgs};
use crate::progress::BarProgress;

/// The generation request the global options describe.
pub fn request(global: &GlobalArgs) -> GenerateRequest {
    GenerateRequest {
        max_tokens: global.max_tokens,
        sampling: SamplingParams {
            temperature: global.temperature,
            top_k: global.top_k,
            top_p: global.top_p,
            min_p: global.min_p,
            seed: global.seed,
        },
        stop: global.stop.clone(),
        tools: None,
        logprobs: None,
    }
}

/// The session options the global options describe.
pub fn session_options(global: &GlobalArgs) -> SessionOptions {
    SessionOptions {
        context_size: global.ctx_size,
        threads: global.threads.map(usize::from),
        prompt_cache: match global.prompt_cache.as_deref().map(str::trim) {
            Some("off") => None,
            Some(dir) if !dir.is_empty() => Some(jielong::chat::PromptCache::new(dir)),
            _ => dirs::cache_dir()
                .or_else(|| dirs::home_dir().map(|home| home.join(".cache")))
                .map(|cache| {
                    jielong::chat::PromptCache::new(cache.join("jielong").join("prompts"))
                }),
        },
        ..SessionOptions::default()
    }
}

/// How `args` put a task to the model; worked examples read with the given fields.
pub fn framing(
    args: &FramingArgs,
    input_field: &str,
    answer_field: &str,
) -> anyhow::Result<jielong::agent::Framing> {
    let shots = match &args.few_shot {
        Some(path) => {
            jielong::agent::Shots::from_jsonl(path, input_field, answer_field, args.shots)?
        }
        None => jielong::agent::Shots::default(),
    };
    let wording = match (&args.instruction, &args.instruction_file) {
        (Some(text), _) => jielong::agent::Wording::Instruction(text.clone()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the instruction file {}", path.display()))?;
            anyhow::ensure!(
                !text.trim().is_empty(),
                "the instruction file {} is empty",
                path.display()
            );
            jielong::agent::Wording::Instruction(text)
        }
        (None, None) => args.technique.into(),
    };
    Ok(jielong::agent::Framing { wording, shots })
}

/// How a wording is recorded in an eval cache's configuration: a technique by its
/// name (as before instructions existed, so older caches stay valid), an instruction
/// by its text.
pub fn wording_config(wording: &jielong::agent::Wording) -> serde_json::Value {
    match wording {
        jielong::agent::Wording::Technique(technique) => serde_json::json!(technique),
        jielong::agent::Wording::Instruction(text) => serde_json::json!({ "instruction": text }),
    }
}

/// The thought space `--thoughts` names.
pub fn thoughts(
    args: &crate::cli::TreeArgs,
) -> anyhow::Result<std::sync::Arc<dyn jielong::agent::ThoughtSpace>> {
    let spaces = jielong::thought_spaces();
    spaces.get(&args.thoughts).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown thought space `{}` (expected {})",
            args.thoughts,
            spaces.names().join(", ")
        )
    })
}

/// The chat request the global options describe.
pub fn chat_request(global: &GlobalArgs) -> ChatRequest {
    let request = request(global);
    ChatRequest {
        max_tokens: request.max_tokens,
        sampling: request.sampling,
        stop: request.stop,
        ..ChatRequest::default()
    }
}

/// Resolves `--model` (a local model, pulled on first use with a progress bar, or a
/// remote `openai:` server) and opens it.
pub async fn load_model(global: &GlobalArgs) -> anyhow::Result<Arc<dyn LanguageModel>> {
    let progress = BarProgress::new();
    let model = jielong::open_language_model(&global.model, &progress).await?;
    describe(global, model.info());
    Ok(model)
}

/// Resolves `--model` as an embedded model (for what only the embedded runtime does,
/// such as the benchmarks).
pub async fn load_local_model(global: &GlobalArgs) -> anyhow::Result<LlamaModel> {
    let progress = BarProgress::new();
    let model = jielong::open_model(&global.model, &progress).await?;
    describe(global, model.info());
    Ok(model)
}

/// The model line of `-v`.
fn describe(global: &GlobalArgs, info: &jielong::ModelInfo) {
    if global.verbose > 0 {
        eprintln!(
            "model: {} ({}, {:.0}M parameters, {} trained context) from {}",
            info.name,
            info.architecture,
            info.parameters as f64 / 1e6,
            info.context_length,
            info.path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
}

/// One line of token and timing statistics (for `-v`).
pub fn usage_line(usage: &jielong::Usage) -> String {
    let rate = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.1}"));
    format!(
        "tokens: prompt {} (cached {}, evaluated {}), generated {}; prompt {:.0} ms ({} tok/s), generation {:.0} ms ({} tok/s)",
        usage.prompt_tokens,
        usage.cached_tokens,
        usage.evaluated_tokens,
        usage.generated_tokens,
        usage.prompt_time.as_secs_f64() * 1e3,
        rate(usage.prompt_tokens_per_second()),
        usage.generation_time.as_secs_f64() * 1e3,
        rate(usage.generation_tokens_per_second()),
    )
}
