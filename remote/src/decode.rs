//! The streamed reply turned into [`GenerationEvent`]s: text deltas, tool-call deltas
//! accumulated per index into checked calls, `<tool_call>` blocks in plain content
//! (servers without native tool parsing) split with the Hermes parser, per-token
//! log-probabilities, and the usage of the final chunk. No I/O: `model.rs` feeds it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jielong_chat::{
    call_check, CallCheck, CallRefused, Completion, FinishReason, GenerationEvent, MalformedCall,
    ParsedEvent, RemoteFault, TokenLogprob, TokenProb, ToolCall, ToolCallFormat, ToolCallParser,
    ToolSpec, Usage,
};
use serde_json::Value;

use jielong_wire::{self as openai, ChatCompletionChunk, Timings, ToolCallDelta};

use crate::wire::{one_line, value_message};

/// What went wrong in the stream itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamFault {
    pub kind: RemoteFault,
    pub reason: String,
}

/// A call being streamed.
#[derive(Debug, Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// The state of one streamed reply.
pub(crate) struct Decoder {
    check: Option<CallCheck>,
    max_calls: usize,
    parser: ToolCallParser,
    pending: BTreeMap<u32, PartialCall>,
    /// The index of the last call delta (deltas after the first may omit it).
    last_index: Option<u32>,
    text: String,
    calls: Vec<ToolCall>,
    malformed: Vec<MalformedCall>,
    logprobs: Vec<TokenLogprob>,
    finish: Option<openai::FinishReason>,
    usage: Option<openai::Usage>,
    timings: Option<Timings>,
    done: bool,
    /// Deltas that carried output (an estimate of the generated tokens when the server
    /// reports no usage).
    pieces: usize,
    started: Instant,
    first_token: Option<Instant>,
    /// The prefill the server may echo at the start of the content (llama-server
    /// streams the continued assistant message whole), while it is still undecided.
    echo: Option<String>,
    /// Content held while it is a prefix of `echo`.
    held: String,
}

impl Decoder {
    /// A decoder for a reply whose calls may use `tools` (at most `max_calls` of them),
    /// timed from `started` (when the request was sent).
    pub fn new(tools: &[ToolSpec], max_calls: u32, started: Instant) -> Self {
        Self {
            check: (!tools.is_empty()).then(|| call_check(tools)),
            max_calls: max_calls.max(1) as usize,
            parser: ToolCallFormat::Hermes.parser(),
            pending: BTreeMap::new(),
            last_index: None,
            text: String::new(),
            calls: Vec::new(),
            malformed: Vec::new(),
            logprobs: Vec::new(),
            finish: None,
            usage: None,
            timings: None,
            done: false,
            pieces: 0,
            started,
            first_token: None,
            echo: None,
            held: String::new(),
        }
    }

    /// Expects the reply to continue `prefill`: content that starts by repeating it
    /// (llama-server sends the continued message whole) has the repetition dropped.
    pub fn continuing(mut self, prefill: &str) -> Self {
        self.echo = (!prefill.is_empty()).then(|| prefill.to_string());
        self
    }

    /// The content after an echoed prefill; `None` while it may still be the echo.
    fn unecho(&mut self, content: String) -> Option<String> {
        let Some(echo) = &self.echo else {
            return Some(content);
        };
        self.held.push_str(&content);
        if self.held.len() < echo.len() && echo.starts_with(self.held.as_str()) {
            return None;
        }
        let held = std::mem::take(&mut self.held);
        let rest = match held.strip_prefix(echo.as_str()) {
            Some(rest) => rest.to_string(),
            None => held,
        };
        self.echo = None;
        Some(rest)
    }

    /// Whether `data: [DONE]` arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the reply ended properly: `[DONE]`, or at least a finish reason (some
    /// servers close the stream without `[DONE]`).
    pub fn is_complete(&self) -> bool {
        self.done || self.finish.is_some()
    }

    /// Handles the data of one server-sent event.
    pub fn data(&mut self, data: &str) -> Result<Vec<GenerationEvent>, StreamFault> {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(self.end());
        }
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let chunk: ChatCompletionChunk = serde_json::from_str(data).map_err(|e| StreamFault {
            kind: RemoteFault::Protocol,
            reason: format!("malformed chunk ({e}): {}", one_line(data, 120)),
        })?;
        if let Some(error) = &chunk.error {
            return Err(StreamFault {
                kind: RemoteFault::Server,
                reason: format!(
                    "the server reported an error in the stream: {}",
                    one_line(
                        &match error {
                            Value::String(s) => s.clone(),
                            other => value_message(other).unwrap_or_else(|| other.to_string()),
                        },
                        300
                    )
                ),
            });
        }
        let mut events = Vec::new();
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        if let Some(timings) = chunk.timings {
            self.timings = Some(timings);
        }
        // Only the first choice is asked for (no `n`).
        if let Some(choice) = chunk.choices.into_iter().next() {
            if let Some(content) = choice.delta.content.filter(|c| !c.is_empty()) {
                self.output();
                if let Some(content) = self.unecho(content).filter(|c| !c.is_empty()) {
                    self.text.push_str(&content);
                    let parsed = self.parser.push(&content);
                    self.take(parsed, &mut events);
                }
            }
            for delta in choice.delta.tool_calls {
                self.output();
                self.call_delta(delta, &mut events);
            }
            if let Some(logprobs) = choice.logprobs {
                for entry in logprobs.content {
                    let logprob = token_logprob(entry);
                    self.logprobs.push(logprob.clone());
                    events.push(GenerationEvent::Logprob(logprob));
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(reason);
                events.extend(self.end());
            }
        }
        Ok(events)
    }

    /// Ends the output: text held back by the parser and calls still open.
    pub fn end(&mut self) -> Vec<GenerationEvent> {
        let mut events = Vec::new();
        // Content that was only ever a prefix of the prefill: the model's own after all.
        self.echo = None;
        let held = std::mem::take(&mut self.held);
        if !held.is_empty() {
            self.text.push_str(&held);
            let parsed = self.parser.push(&held);
            self.take(parsed, &mut events);
        }
        let parsed = self.parser.finish();
        self.take(parsed, &mut events);
        let pending = std::mem::take(&mut self.pending);
        for (_, call) in pending {
            self.close(call, &mut events);
        }
        events
    }

    /// The completion, ended for `finish` (the server's reason when `None`).
    pub fn completion(mut self, finish: Option<FinishReason>) -> Completion {
        let finish = finish.unwrap_or(match self.finish {
            Some(openai::FinishReason::Length) => FinishReason::MaxTokens,
            _ => FinishReason::EndOfText,
        });
        let usage = self.usage();
        Completion {
            text: std::mem::take(&mut self.text),
            calls: std::mem::take(&mut self.calls),
            malformed: std::mem::take(&mut self.malformed),
            logprobs: std::mem::take(&mut self.logprobs),
            finish,
            usage,
        }
    }

    /// Counts and times: the server's where it reports them, else measured.
    fn usage(&self) -> Usage {
        let now = Instant::now();
        let first = self.first_token.unwrap_or(now);
        let ms = |ms: f64| Duration::from_secs_f64((ms / 1e3).max(0.0));
        let timings = self.timings.clone().unwrap_or_default();
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let (prompt_tokens, generated, cached) = match &self.usage {
            Some(usage) => (
                count(usage.prompt_tokens),
                count(usage.completion_tokens),
                usage.cached_tokens().or(timings.cache_n),
            ),
            None => (0, self.pieces, timings.cache_n),
        };
        let cached = cached.map_or(0, count).min(prompt_tokens);
        Usage {
            prompt_tokens,
            cached_tokens: cached,
            evaluated_tokens: prompt_tokens - cached,
            generated_tokens: generated,
            prompt_time: timings
                .prompt_ms
                .map(ms)
                .unwrap_or_else(|| first.duration_since(self.started)),
            generation_time: timings
                .predicted_ms
                .map(ms)
                .unwrap_or_else(|| now.duration_since(first)),
            // A server's own decoding has no loop guard of ours.
            loops_broken: 0,
        }
    }

    fn output(&mut self) {
        self.pieces += 1;
        self.first_token.get_or_insert_with(Instant::now);
    }

    fn call_delta(&mut self, delta: ToolCallDelta, events: &mut Vec<GenerationEvent>) {
        let index = delta.index.or(self.last_index).unwrap_or(0);
        if !self.pending.contains_key(&index) {
            // A new call: the ones before it are complete.
            let done: Vec<u32> = self.pending.range(..index).map(|(i, _)| *i).collect();
            for i in done {
                if let Some(call) = self.pending.remove(&i) {
                    self.close(call, events);
                }
            }
            self.pending.insert(index, PartialCall::default());
            events.push(GenerationEvent::CallStarted);
        }
        self.last_index = Some(index);
        let Some(call) = self.pending.get_mut(&index) else {
            return;
        };
        if let Some(id) = delta.id.filter(|id| !id.is_empty()) {
            call.id.get_or_insert(id);
        }
        if let Some(name) = delta.function.name {
            // Servers send the name once; some repeat it whole in later deltas.
            if call.name != name {
                call.name.push_str(&name);
            }
        }
        if let Some(arguments) = delta.function.arguments {
            call.arguments.push_str(&arguments);
        }
    }

    /// A streamed call, complete: parsed, checked, counted.
    fn close(&mut self, call: PartialCall, events: &mut Vec<GenerationEvent>) {
        let raw = format!(
            "{{\"name\": {}, \"arguments\": {}}}",
            Value::String(call.name.clone()),
            if call.arguments.trim().is_empty() {
                "{}"
            } else {
                call.arguments.as_str()
            }
        );
        if call.name.is_empty() {
            return self.reject(raw, "the call has no tool name".into(), events);
        }
        let arguments = if call.arguments.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            match serde_json::from_str::<Value>(&call.arguments) {
                Ok(value) => value,
                Err(e) => {
                    let reason =
                        format!("the arguments of `{}` are not valid JSON: {e}", call.name);
                    return self.reject(raw, reason, events);
                }
            }
        };
        let call = ToolCall {
            id: call.id,
            name: call.name,
            arguments,
        };
        self.accept(call, raw, events);
    }

    fn accept(&mut self, call: ToolCall, raw: String, events: &mut Vec<GenerationEvent>) {
        if let Some(check) = &self.check {
            if let Err(refused) = check(&call) {
                return self.reject(raw, refused.to_string(), events);
            }
        } else {
            let refused = CallRefused::NoTools {
                name: call.name.clone(),
            };
            return self.reject(raw, refused.to_string(), events);
        }
        if self.calls.len() >= self.max_calls {
            let reason = format!(
                "at most {} call{} in one reply",
                self.max_calls,
                if self.max_calls == 1 { "" } else { "s" }
            );
            return self.reject(raw, reason, events);
        }
        self.calls.push(call.clone());
        events.push(GenerationEvent::Call(call));
    }

    fn reject(&mut self, raw: String, error: String, events: &mut Vec<GenerationEvent>) {
        let bad = MalformedCall { raw, error };
        self.malformed.push(bad.clone());
        events.push(GenerationEvent::Malformed(bad));
    }

    /// Events of the Hermes parser over plain content.
    fn take(&mut self, parsed: Vec<ParsedEvent>, events: &mut Vec<GenerationEvent>) {
        for event in parsed {
            match event {
                ParsedEvent::Text(text) => events.push(GenerationEvent::Text(text)),
                ParsedEvent::CallStarted => events.push(GenerationEvent::CallStarted),
                ParsedEvent::Call(call) => {
                    let raw = serde_json::json!({"name": call.name, "arguments": call.arguments})
                        .to_string();
                    self.accept(call, raw, events);
                }
                ParsedEvent::Malformed { raw, error } => self.reject(raw, error, events),
            }
        }
    }
}

fn token_logprob(entry: openai::TokenLogprob) -> TokenLogprob {
    let id = |id: Option<i64>| id.and_then(|id| i32::try_from(id).ok());
    TokenLogprob {
        chosen: TokenProb {
            token: entry.token,
            id: id(entry.id),
            logprob: entry.logprob,
        },
        top: entry
            .top_logprobs
            .into_iter()
            .map(|top| TokenProb {
                token: top.token,
                id: id(top.id),
                logprob: top.logprob,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec::new(
            "python",
            "Runs Python.",
            json!({"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}),
        )]
    }

    fn feed(decoder: &mut Decoder, chunks: &[Value]) -> Vec<GenerationEvent> {
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(decoder.data(&chunk.to_string()).expect("a good chunk"));
        }
        events
    }

    fn delta(delta: Value) -> Value {
        json!({"choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
    }

    #[test]
    fn call_deltas_are_joined_per_index() {
        let mut d = Decoder::new(&tools(), 4, Instant::now());
        let events = feed(
            &mut d,
            &[
                delta(json!({"role": "assistant", "content": null})),
                delta(
                    json!({"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "python", "arguments": "{\"co"}}]}),
                ),
                delta(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "de\": \"1\"}"}}]}),
                ),
                delta(
                    json!({"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "python", "arguments": "{\"code\": 5}"}}]}),
                ),
                delta(
                    json!({"tool_calls": [{"index": 2, "function": {"name": "nope", "arguments": "{"}}]}),
                ),
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            ],
        );
        let kinds: Vec<String> = events
            .iter()
            .map(|e| match e {
                GenerationEvent::CallStarted => "start".into(),
                GenerationEvent::Call(c) => format!("call {}", c.arguments),
                GenerationEvent::Malformed(m) => format!("bad {}", m.error),
                other => format!("{other:?}"),
            })
            .collect();
        // A call is emitted once the next one starts (or the reply ends).
        assert_eq!(kinds[0], "start");
        assert_eq!(kinds[1], "call {\"code\":\"1\"}");
        assert_eq!(kinds[2], "start");
        assert!(
            kinds[3].starts_with("bad arguments of `python` do not match its schema"),
            "{kinds:?}"
        );
        assert_eq!(kinds[4], "start");
        assert!(
            kinds[5].starts_with("bad the arguments of `nope` are not valid JSON"),
            "{kinds:?}"
        );
        assert_eq!(kinds.len(), 6);
        let completion = d.completion(None);
        assert_eq!(completion.calls.len(), 1);
        assert_eq!(completion.calls[0].id.as_deref(), Some("c1"));
        assert_eq!(completion.malformed.len(), 2);
        assert_eq!(completion.finish, FinishReason::EndOfText);
    }

    #[test]
    fn hermes_blocks_in_content_are_calls() {
        let mut d = Decoder::new(&tools(), 4, Instant::now());
        let events = feed(
            &mut d,
            &[
                delta(json!({"content": "Let me run it.\n<tool_"})),
                delta(
                    json!({"content": "call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print(1)\"}}\n</tool_call>"}),
                ),
                json!({"choices": [{"delta": {}, "finish_reason": "stop"}]}),
                json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 4}, "timings": {"cache_n": 3, "prompt_ms": 12.5, "predicted_ms": 40.0}}),
            ],
        );
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                GenerationEvent::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "Let me run it.\n");
        assert!(events.iter().any(
            |e| matches!(e, GenerationEvent::Call(c) if c.arguments == json!({"code": "print(1)"}))
        ));
        assert!(d.is_complete() && !d.is_done());
        let completion = d.completion(None);
        assert!(completion.text.contains("</tool_call>"));
        assert_eq!(completion.usage.prompt_tokens, 10);
        assert_eq!(completion.usage.cached_tokens, 3);
        assert_eq!(completion.usage.evaluated_tokens, 7);
        assert_eq!(completion.usage.generated_tokens, 4);
        assert_eq!(completion.usage.prompt_time, Duration::from_micros(12_500));
    }

    #[test]
    fn an_echoed_prefill_is_dropped() {
        let text = |d: &mut Decoder, pieces: &[&str]| {
            let chunks: Vec<Value> = pieces
                .iter()
                .map(|p| delta(json!({"content": p})))
                .collect();
            let mut events = feed(d, &chunks);
            events.extend(d.end());
            events
                .iter()
                .filter_map(|e| match e {
                    GenerationEvent::Text(t) => Some(t.clone()),
                    _ => None,
                })
                .collect::<String>()
        };
        // llama-server: the whole message, prefill first.
        let mut d = Decoder::new(&[], 1, Instant::now()).continuing("The capital is");
        assert_eq!(text(&mut d, &["The capital is Paris", "."]), " Paris.");
        assert_eq!(d.completion(None).text, " Paris.");
        // The echo split over deltas.
        let mut d = Decoder::new(&[], 1, Instant::now()).continuing("The capital is");
        assert_eq!(text(&mut d, &["The cap", "ital is", " Paris"]), " Paris");
        // A server that does not echo.
        let mut d = Decoder::new(&[], 1, Instant::now()).continuing("The capital is");
        assert_eq!(text(&mut d, &[" Paris", "."]), " Paris.");
        // A reply that ends inside what looked like the echo.
        let mut d = Decoder::new(&[], 1, Instant::now()).continuing("The capital is");
        assert_eq!(text(&mut d, &["The"]), "The");
    }

    #[test]
    fn bad_chunks_and_stream_errors_are_faults() {
        let mut d = Decoder::new(&[], 1, Instant::now());
        let fault = d.data("{\"choices\": [").unwrap_err();
        assert_eq!(fault.kind, RemoteFault::Protocol);
        assert!(
            fault.reason.starts_with("malformed chunk"),
            "{}",
            fault.reason
        );
        let fault = d
            .data(r#"{"error": {"message": "slot unavailable", "code": 503}}"#)
            .unwrap_err();
        assert_eq!(fault.kind, RemoteFault::Server);
        assert!(fault.reason.contains("slot unavailable"));
    }

    #[test]
    fn extra_calls_and_calls_without_tools_are_malformed() {
        let mut d = Decoder::new(&tools(), 1, Instant::now());
        let call = |i: u32| json!({"tool_calls": [{"index": i, "function": {"name": "python", "arguments": "{\"code\": \"1\"}"}}]});
        feed(&mut d, &[delta(call(0)), delta(call(1))]);
        d.data("[DONE]").unwrap();
        let completion = d.completion(None);
        assert_eq!(completion.calls.len(), 1);
        assert_eq!(completion.malformed[0].error, "at most 1 call in one reply");

        let mut d = Decoder::new(&[], 1, Instant::now());
        feed(&mut d, &[delta(call(0))]);
        d.data("[DONE]").unwrap();
        assert!(d.completion(None).malformed[0]
            .error
            .contains("no tools are available"));
    }
}
