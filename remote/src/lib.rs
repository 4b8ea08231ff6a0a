//! # jielong-remote
//!
//! A [`LanguageModel`](jielong_chat::LanguageModel) on any OpenAI-compatible
//! chat-completions server: llama.cpp's `llama-server`, vLLM, or a hosted API. Agents
//! and workflows use it like the embedded model; the server renders the chat template,
//! parses tool calls and keeps its own prompt cache.
//!
//! ## Model references
//!
//! ```text
//! openai:<base_url>#<model>[;api_key_env=VAR]
//! openai:http://127.0.0.1:8080/v1#qwen
//! openai:https://api.example.invalid/v1#some-model;api_key_env=MY_API_KEY
//! ```
//!
//! `base_url` is what `/models` and `/chat/completions` are appended to; `model` is
//! the id the server lists (llama-server lists its `--alias`). With `api_key_env`, the
//! key is read from that environment variable and sent as `Authorization: Bearer`.
//!
//! ## Usage
//!
//! ```no_run
//! use jielong_chat::{Chat, ChatRequest, GenerationEvent, LanguageModel, Message, SessionOptions};
//! use jielong_remote::{RemoteConfig, RemoteModel};
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = RemoteConfig::parse("openai:http://127.0.0.1:8080/v1#qwen")?
//!     .with_first_byte_timeout(Duration::from_secs(120));
//! let model = RemoteModel::connect(config).await?; // GET /models: is `qwen` served?
//! let mut session = model.open_session(&SessionOptions::default())?;
//! let chat = Chat::new(vec![Message::user("What is the capital of France? One word.")]);
//! let mut reply = session.respond(&chat, &ChatRequest::new(32))?;
//! while let Some(event) = reply.next().await {
//!     match event {
//!         GenerationEvent::Text(text) => print!("{text}"),
//!         GenerationEvent::Done(result) => {
//!             let completion = result?; // faults are RuntimeError::Remote { kind, .. }
//!             eprintln!("\n{} tokens generated", completion.usage.generated_tokens);
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! A program that takes any reference goes through the facade:
//! `jielong::open_language_model("openai:…", &progress)`.
//!
//! ## What a reply carries
//!
//! - text deltas as [`GenerationEvent::Text`](jielong_chat::GenerationEvent::Text);
//! - tool calls, streamed per index and emitted once complete, parsed and checked
//!   against the tool's schema ([`jielong_chat::call_check`]): a valid one is a
//!   `Call`, bad JSON, an unknown tool or arguments against the schema a `Malformed`
//!   with the reason (the agent feeds it back). `<tool_call>{…}</tool_call>` blocks in
//!   plain content (servers without native tool parsing) are split the same way;
//! - per-token log-probabilities when the request asks for them;
//! - the usage: prompt, cached (`prompt_tokens_details.cached_tokens` or
//!   llama-server's `timings.cache_n`), evaluated and generated tokens; the server's
//!   timings when it sends them, else measured.
//!
//! ## Faults
//!
//! Every failure is a [`RuntimeError::Remote`](jielong_chat::RuntimeError::Remote)
//! whose `kind` ([`RemoteFault`](jielong_chat::RemoteFault)) says how and whose
//! message is one line naming the URL: `Unreachable` (nothing listens),
//! `Unauthorized` (401/403), `UnknownModel` (404, or not in `/models`), `RateLimited`
//! (429) and `Server` (5xx) after bounded retries with exponential backoff
//! ([`RetryPolicy`]; only before anything was streamed), `Protocol` (a malformed chunk,
//! a stream cut short), `Timeout` ([`Timeouts`]: connect, first byte, idle between
//! chunks). A prompt over the server's context (llama-server's
//! `exceed_context_size_error`) is [`RuntimeError::PromptTooLong`](jielong_chat::RuntimeError::PromptTooLong).
//!
//! Cancelling (or dropping) the [`Generation`](jielong_chat::Generation) drops the
//! connection, which stops the server; the completion then ends
//! [`Cancelled`](jielong_chat::FinishReason::Cancelled).
//!
//! All HTTP work runs on a small runtime the model owns, so async callers on any
//! runtime and plain threads ([`Generation::wait`](jielong_chat::Generation::wait))
//! both work.

#![warn(missing_docs)]

mod config;
mod decode;
mod http;
mod model;
mod wire;

pub use config::{ConfigError, RemoteConfig, RetryPolicy, Timeouts, SCHEME};
pub use model::{RemoteModel, RemoteSession, REMOTE_CAPABILITIES};
