//! Shared by the end-to-end tests: the real catalog models, loaded once per test
//! binary, and a lock that keeps model work from running in parallel (llama.cpp
//! already uses every core; two at once only thrash).

#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard, OnceLock};

use jielong::LlamaModel;

/// The default model (Qwen2.5-Coder-0.5B-Instruct).
pub const QWEN: &str = "qwen2.5-coder-0.5b";
/// The small model without native tool tokens (SmolLM2-135M-Instruct).
pub const SMOLLM: &str = "smollm2-135m";

/// Serialises tests that run a model.
pub fn model_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A catalog model, pulled into the cache if needed, loaded once.
pub fn model(name: &str) -> LlamaModel {
    static MODELS: OnceLock<Mutex<Vec<(String, LlamaModel)>>> = OnceLock::new();
    let models = MODELS.get_or_init(|| Mutex::new(Vec::new()));
    let mut models = models.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, m)) = models.iter().find(|(n, _)| n == name) {
        return m.clone();
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let loaded = runtime
        .block_on(jielong::open_model(name, &jielong::models::NoProgress))
        .unwrap_or_else(|e| panic!("cannot open {name}: {e}"));
    models.push((name.to_string(), loaded.clone()));
    loaded
}

/// The path of a catalog model's file in the cache (pulled if needed).
pub fn model_path(name: &str) -> std::path::PathBuf {
    model(name)
        .info()
        .path
        .clone()
        .expect("a local model has a path")
}

/// The `jielong` binary as a command, with the prompt cache off: a test's prompts are
/// evaluated the same way whatever ran before it (tests of the cache give it a
/// folder of their own).
pub fn command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_jielong"));
    command.env("JIELONG_PROMPT_CACHE", "off");
    command
}

/// Runs the `jielong` binary with `args` and waits for it.
pub fn jielong(args: &[&str]) -> std::process::Output {
    command().args(args).output().expect("the binary runs")
}

/// A process's output as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A trace event as its inner run wrote it: `sample` and `part` events (a strategy's
/// inner runs) unwrapped to the event they carry.
pub fn unwrapped(event: &serde_json::Value) -> &serde_json::Value {
    match event["type"].as_str() {
        Some("sample" | "part") => unwrapped(&event["event"]),
        _ => event,
    }
}
