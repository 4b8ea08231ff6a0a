//! What a generation request asks for and what it reports back.
//!
//! These types are backend-independent: the embedded llama.cpp runtime, a remote
//! server or a scripted test model all take a [`GenerateRequest`] and stream
//! [`GenerationEvent`]s through a [`Generation`] handle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::chat::ToolCall;
use crate::error::RuntimeError;
use crate::logprob::TokenLogprob;
use crate::tool_format::{ParsedEvent, ToolCallFormat, ToolCallParser};

/// How the next token is chosen.
///
/// `temperature == 0.0` means greedy decoding (always the most likely token), which is
/// deterministic; the other fields then have no effect. With a positive temperature the
/// filters apply in llama.cpp's order: top-k, top-p, min-p, temperature, then a seeded
/// draw, so a fixed `seed` reproduces a run on the same build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// Softmax temperature; `0.0` selects greedy decoding.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (`0` disables the filter).
    pub top_k: u32,
    /// Keep the smallest set of tokens whose probabilities add up to `p` (`1.0` disables).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (`0.0` disables).
    pub min_p: f32,
    /// Seed of the random draw.
    pub seed: u32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingParams {
    /// Greedy decoding: deterministic, the default.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            seed: 0,
        }
    }

    /// Whether these settings pick the most likely token every time.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Checks that every value is in its range.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |field: &'static str, value: f32, range: &'static str| {
            Err(RuntimeError::InvalidRequest(format!(
                "sampling.{field} = {value} is out of range ({range})"
            )))
        };
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad("temperature", self.temperature, ">= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p, "0 < top_p <= 1");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "0 <= min_p <= 1");
        }
        Ok(())
    }
}

/// One request to continue a prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateRequest {
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// How tokens are chosen.
    pub sampling: SamplingParams,
    /// Generation ends before the first occurrence of any of these strings; the stop
    /// string itself is not part of the output.
    pub stop: Vec<String>,
    /// Constrain tool calls to the tools' schemas (see [`ToolConstraint`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolConstraint>,
    /// Report each generated token's log-probability with this many alternatives
    /// (`Some(0)`: the chosen token only; `None`: no log-probabilities). Backends that
    /// cannot ([`crate::Capabilities::logprobs`]) refuse the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
}

/// Grammar-constrained tool calls: once the model opens a call (its trigger token or
/// marker), decoding is restricted to `{"name": <one of these tools>, "arguments":
/// <that tool's schema>}` in the model's call format, so every call parses and
/// validates. Text before a call stays free.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolConstraint {
    /// The model's call syntax.
    pub format: crate::tool_format::ToolCallFormat,
    /// The tools that may be called.
    pub tools: Vec<crate::chat::ToolSpec>,
    /// Whether a call is optional or required.
    #[serde(default)]
    pub choice: ToolChoice,
    /// The most calls in one reply (formats that allow several); at least 1.
    #[serde(default = "default_max_calls")]
    pub max_calls: u32,
    /// The shape a reply that is not a call must have (JSON, a JSON Schema), enforced
    /// from the first token; `None`: free prose. With a reply format `tools` may be
    /// empty (a structured answer without tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyFormat>,
}

/// The shape of a reply's text (an OpenAI-style `response_format`): the embedded
/// backend holds the reply to it with a grammar from the first token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "schema")]
pub enum ReplyFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON matching this JSON Schema (converted to a grammar with llama.cpp's
    /// converter; a schema it cannot convert makes the request invalid).
    JsonSchema(serde_json::Value),
}

impl ReplyFormat {
    /// The JSON Schema a reply must match.
    pub fn schema(&self) -> serde_json::Value {
        match self {
            ReplyFormat::JsonObject => serde_json::json!({"type": "object"}),
            ReplyFormat::JsonSchema(schema) => {
                let mut schema = schema.clone();
                if let Some(map) = schema.as_object_mut() {
                    map.remove("$schema");
                }
                schema
            }
        }
    }
}

fn default_max_calls() -> u32 {
    ToolConstraint::DEFAULT_MAX_CALLS
}

impl ToolConstraint {
    /// Calls allowed in one reply unless set otherwise.
    pub const DEFAULT_MAX_CALLS: u32 = 4;

    /// A constraint to `tools` in `format` with the default choice and call limit.
    pub fn new(
        format: crate::tool_format::ToolCallFormat,
        tools: Vec<crate::chat::ToolSpec>,
        choice: ToolChoice,
    ) -> Self {
        Self {
            format,
            tools,
            choice,
            max_calls: Self::DEFAULT_MAX_CALLS,
            reply: None,
        }
    }
}

/// Whether the model must call a tool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides; the grammar applies from the moment a call starts (lazy).
    #[default]
    Auto,
    /// The reply must be one or more calls (the grammar applies from the first token).
    Required,
    /// The reply must be prose, not a call: it may not open with a call marker, a JSON
    /// object or array, or a code fence. For a model that keeps writing calls when it
    /// should answer (the tools stay listed, so the prompt and its cache are unchanged).
    None,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            max_tokens: 512,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            tools: None,
            logprobs: None,
        }
    }
}

impl GenerateRequest {
    /// Checks the request before any work starts.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        if self.max_tokens == 0 {
            return Err(RuntimeError::InvalidRequest(
                "max_tokens must be at least 1".into(),
            ));
        }
        if let Some(tools) = &self.tools {
            if tools.tools.is_empty() && tools.reply.is_none() {
                return Err(RuntimeError::InvalidRequest(
                    "a tool constraint needs at least one tool".into(),
                ));
            }
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(RuntimeError::InvalidRequest(
                "a stop string must not be empty".into(),
            ));
        }
        if self
            .logprobs
            .is_some_and(|k| k > crate::logprob::MAX_TOP_LOGPROBS)
        {
            return Err(RuntimeError::InvalidRequest(format!(
                "logprobs asks for {} alternatives; at most {} are reported",
                self.logprobs.unwrap_or_default(),
                crate::logprob::MAX_TOP_LOGPROBS
            )));
        }
        self.sampling.validate()
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    #[default]
    EndOfText,
    /// One of the request's stop strings appeared (it is not in the output).
    StopString(String),
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context window is full.
    ContextFull,
    /// The caller cancelled or dropped the [`Generation`].
    Cancelled,
}

/// Token counts and timings of one generation.
///
/// `prompt_tokens = cached_tokens + evaluated_tokens`: the prefix shared with what the
/// session had already evaluated is reused from the KV cache, only the rest is computed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens reused from the KV cache (not evaluated again).
    pub cached_tokens: usize,
    /// Prompt tokens evaluated by this call.
    pub evaluated_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Time to tokenize and evaluate the prompt.
    pub prompt_time: Duration,
    /// Time spent generating, from the first sampled token to the end.
    pub generation_time: Duration,
    /// Loops the [`crate::LoopGuard`] broke in grammar-constrained output.
    #[serde(default)]
    pub loops_broken: usize,
}

impl Usage {
    /// Prompt evaluation speed in tokens per second (`None` when nothing was evaluated).
    pub fn prompt_tokens_per_second(&self) -> Option<f64> {
        rate(self.evaluated_tokens, self.prompt_time)
    }

    /// Generation speed in tokens per second.
    pub fn generation_tokens_per_second(&self) -> Option<f64> {
        rate(self.generated_tokens, self.generation_time)
    }

    /// Adds another call's counts and times to these.
    pub fn accumulate(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.cached_tokens += other.cached_tokens;
        self.evaluated_tokens += other.evaluated_tokens;
        self.generated_tokens += other.generated_tokens;
        self.prompt_time += other.prompt_time;
        self.generation_time += other.generation_time;
        self.loops_broken += other.loops_broken;
    }
}

fn rate(tokens: usize, time: Duration) -> Option<f64> {
    let secs = time.as_secs_f64();
    (tokens > 0 && secs > 0.0).then(|| tokens as f64 / secs)
}

/// The result of a finished generation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// Everything generated (without a matched stop string), call blocks included.
    pub text: String,
    /// The tool calls in the reply, in order (a chat response; empty for raw text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<ToolCall>,
    /// Call blocks that are not valid calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub malformed: Vec<MalformedCall>,
    /// Per generated token, when the request asked for log-probabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<TokenLogprob>,
    /// Why generation ended.
    pub finish: FinishReason,
    /// Token counts and timings.
    pub usage: Usage,
}

impl Completion {
    /// A completion of `text` that ended for `finish`.
    pub fn new(text: impl Into<String>, finish: FinishReason, usage: Usage) -> Self {
        Self {
            text: text.into(),
            finish,
            usage,
            ..Self::default()
        }
    }
}

/// A call block the model wrote that is not a valid call (unparsable JSON, an unknown
/// tool, arguments against the schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MalformedCall {
    /// What the block held.
    pub raw: String,
    /// Why it is not a call.
    pub error: String,
}

/// What a running generation reports, in order.
#[derive(Debug)]
pub enum GenerationEvent {
    /// More output text. Text that might be the start of a stop string is held back
    /// until it is known not to be; in a chat response, call blocks are not text.
    Text(String),
    /// A chat response opened a call block (its JSON follows).
    CallStarted,
    /// A complete tool call, parsed (and schema-valid when the request constrained it).
    Call(ToolCall),
    /// A call block that is not a valid call.
    Malformed(MalformedCall),
    /// The log-probability of the token just generated (when asked for).
    Logprob(TokenLogprob),
    /// The end: the completion or the error that ended it. Always the last event.
    Done(Result<Completion, RuntimeError>),
}

/// A generation in progress: a stream of [`GenerationEvent`]s.
///
/// Usable from async code ([`Generation::next`], [`Generation::finish`]) and from
/// blocking code ([`Generation::blocking_next`], [`Generation::wait`]). Dropping it
/// cancels the generation.
#[derive(Debug)]
pub struct Generation {
    events: mpsc::UnboundedReceiver<GenerationEvent>,
    cancel: Arc<AtomicBool>,
    /// Splits text into prose and calls ([`Generation::parsing`]).
    calls: Option<CallSplitter>,
}

/// The state of [`Generation::parsing`].
struct CallSplitter {
    parser: ToolCallParser,
    /// Parsed events not yet handed out.
    queue: std::collections::VecDeque<GenerationEvent>,
    calls: Vec<ToolCall>,
    malformed: Vec<MalformedCall>,
    /// Whether any text came as events (else the completion's text is parsed).
    streamed: bool,
    /// Checks a parsed call (schema validation); `Err` makes it malformed.
    check: Option<CallCheck>,
}

/// A check of each parsed call: `Err(why)` turns it into a malformed block.
pub type CallCheck = Arc<dyn Fn(&ToolCall) -> Result<(), CallRefused> + Send + Sync>;

/// Why a parsed call was refused ([`CallCheck`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallRefused {
    /// The call names a tool that is not offered.
    #[error("unknown tool `{name}` (tools: {known})")]
    UnknownTool {
        /// The tool the call names.
        name: String,
        /// The tools offered, comma-separated.
        known: String,
    },
    /// No tool is offered at all.
    #[error("no tools are available, so `{name}` cannot be called")]
    NoTools {
        /// The tool the call names.
        name: String,
    },
    /// The arguments are not a JSON object.
    #[error("the arguments of `{name}` are not a JSON object")]
    NotAnObject {
        /// The tool.
        name: String,
    },
    /// The arguments break the tool's schema.
    #[error("arguments of `{name}` do not match its schema: {error} (at {at})")]
    Schema {
        /// The tool.
        name: String,
        /// The first schema error.
        error: String,
        /// Where in the arguments (a JSON pointer).
        at: String,
    },
}

impl std::fmt::Debug for CallSplitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallSplitter")
            .field("parser", &self.parser)
            .field("queue", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl CallSplitter {
    fn take(&mut self, events: Vec<ParsedEvent>) {
        for event in events {
            let event = match event {
                ParsedEvent::Text(text) => GenerationEvent::Text(text),
                ParsedEvent::CallStarted => GenerationEvent::CallStarted,
                ParsedEvent::Call(call) => {
                    match self.check.as_ref().map_or(Ok(()), |check| check(&call)) {
                        Ok(()) => {
                            self.calls.push(call.clone());
                            GenerationEvent::Call(call)
                        }
                        Err(error) => {
                            let raw =
                                serde_json::json!({"name": call.name, "arguments": call.arguments})
                                    .to_string();
                            let bad = MalformedCall {
                                raw,
                                error: error.to_string(),
                            };
                            self.malformed.push(bad.clone());
                            GenerationEvent::Malformed(bad)
                        }
                    }
                }
                ParsedEvent::Malformed { raw, error } => {
                    let bad = MalformedCall { raw, error };
                    self.malformed.push(bad.clone());
                    GenerationEvent::Malformed(bad)
                }
            };
            self.queue.push_back(event);
        }
    }

    /// Handles one event of the underlying stream.
    fn feed(&mut self, event: GenerationEvent) {
        match event {
            GenerationEvent::Text(text) => {
                self.streamed = true;
                let parsed = self.parser.push(&text);
                self.take(parsed);
            }
            GenerationEvent::Done(Ok(mut completion)) => {
                if !self.streamed && !completion.text.is_empty() {
                    let parsed = self.parser.push(&completion.text);
                    self.take(parsed);
                }
                let parsed = self.parser.finish();
                self.take(parsed);
                completion.calls.append(&mut self.calls);
                completion.malformed.append(&mut self.malformed);
                self.queue.push_back(GenerationEvent::Done(Ok(completion)));
            }
            other => self.queue.push_back(other),
        }
    }
}

/// The producing side of a [`Generation`], held by a backend.
#[derive(Debug, Clone)]
pub struct GenerationSender {
    events: mpsc::UnboundedSender<GenerationEvent>,
    cancel: Arc<AtomicBool>,
}

impl Generation {
    /// A connected pair: the backend sends into the [`GenerationSender`], the caller reads
    /// the [`Generation`].
    pub fn channel() -> (GenerationSender, Generation) {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        (
            GenerationSender {
                events: tx,
                cancel: cancel.clone(),
            },
            Generation {
                events: rx,
                cancel,
                calls: None,
            },
        )
    }

    /// This generation's text split into prose and tool calls in `format`: text events
    /// then carry only prose, calls come as [`GenerationEvent::Call`] (or
    /// [`GenerationEvent::Malformed`] when `check` refuses them) and the completion
    /// lists them. For backends that continue rendered prompts.
    pub fn parsing(mut self, format: ToolCallFormat, check: Option<CallCheck>) -> Self {
        self.calls = Some(CallSplitter {
            parser: format.parser(),
            queue: Default::default(),
            calls: Vec::new(),
            malformed: Vec::new(),
            streamed: false,
            check,
        });
        self
    }

    /// Asks the backend to stop after the current token; the final event then reports
    /// [`FinishReason::Cancelled`].
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// The next event, waiting for it (async). `None` after [`GenerationEvent::Done`].
    pub async fn next(&mut self) -> Option<GenerationEvent> {
        loop {
            if let Some(event) = self.calls.as_mut().and_then(|c| c.queue.pop_front()) {
                return Some(event);
            }
            let event = self.events.recv().await?;
            match self.calls.as_mut() {
                None => return Some(event),
                Some(calls) => calls.feed(event),
            }
        }
    }

    /// The next event, blocking the thread. Do not call from inside an async runtime.
    pub fn blocking_next(&mut self) -> Option<GenerationEvent> {
        loop {
            if let Some(event) = self.calls.as_mut().and_then(|c| c.queue.pop_front()) {
                return Some(event);
            }
            let event = self.events.blocking_recv()?;
            match self.calls.as_mut() {
                None => return Some(event),
                Some(calls) => calls.feed(event),
            }
        }
    }

    /// Blocks until the end, handing each piece of text to `on_text`.
    pub fn wait(mut self, mut on_text: impl FnMut(&str)) -> Result<Completion, RuntimeError> {
        while let Some(event) = self.blocking_next() {
            match event {
                GenerationEvent::Text(text) => on_text(&text),
                GenerationEvent::Done(result) => return result,
                _ => {}
            }
        }
        Err(RuntimeError::WorkerGone)
    }

    /// Waits (async) until the end, handing each piece of text to `on_text`.
    pub async fn finish(
        mut self,
        mut on_text: impl FnMut(&str),
    ) -> Result<Completion, RuntimeError> {
        while let Some(event) = self.next().await {
            match event {
                GenerationEvent::Text(text) => on_text(&text),
                GenerationEvent::Done(result) => return result,
                _ => {}
            }
        }
        Err(RuntimeError::WorkerGone)
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl GenerationSender {
    /// Sends a piece of text; `false` when the caller has gone (treat as cancelled).
    pub fn text(&self, text: String) -> bool {
        self.events.send(GenerationEvent::Text(text)).is_ok()
    }

    /// Sends any other event; `false` when the caller has gone.
    pub fn send(&self, event: GenerationEvent) -> bool {
        self.events.send(event).is_ok()
    }

    /// Sends the final event.
    pub fn done(&self, result: Result<Completion, RuntimeError>) {
        // The receiver may be gone; then nobody wants the result.
        let _ = self.events.send(GenerationEvent::Done(result));
    }

    /// Whether the caller asked to stop or dropped the [`Generation`].
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.events.is_closed()
    }
}
