//! How a model writes tool calls, and a streaming parser that splits its output into
//! text and calls.
//!
//! The format is detected from the model itself ([`ToolCallFormat::detect`]): the
//! special tokens in its vocabulary and the markers its chat template uses.
//!
//! | format | a call looks like | models |
//! | --- | --- | --- |
//! | [`Hermes`](ToolCallFormat::Hermes) | `<tool_call>{"name": …, "arguments": {…}}</tool_call>` | Qwen 2/2.5/3, Hermes 2 Pro+, many fine-tunes |
//! | [`Llama3`](ToolCallFormat::Llama3) | `<\|python_tag\|>{"name": …, "parameters": {…}}` | Llama 3.1+ |
//! | [`Mistral`](ToolCallFormat::Mistral) | `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]` | Mistral, Mixtral |
//! | [`Generic`](ToolCallFormat::Generic) | the Hermes markers, written as plain text | models with no tool tokens |
//!
//! The **generic format** is for models without native tool tokens: the system prompt
//! ([`ToolCallFormat::generic_instructions`]) lists the tools and asks for exactly
//! `<tool_call>{"name": "<tool>", "arguments": {…}}</tool_call>`, one call per block,
//! with nothing else inside the block. Results come back as `tool` messages.

use serde_json::Value;

use crate::chat::{ToolCall, ToolSpec};
use crate::quotes::Nesting;

/// A model's tool-call syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolCallFormat {
    /// `<tool_call>` / `</tool_call>` special tokens around a JSON object.
    Hermes,
    /// `<|python_tag|>` followed by a JSON object with `name` and `parameters`.
    Llama3,
    /// `[TOOL_CALLS]` followed by a JSON array of calls.
    Mistral,
    /// The Hermes markers as plain text, taught by the system prompt.
    Generic,
}

/// What the detection saw in the model.
pub trait FormatEvidence {
    /// Whether `text` is a single token of the vocabulary (a special or added token).
    fn is_single_token(&self, text: &str) -> bool;
    /// The chat template's source.
    fn template_source(&self) -> &str;
}

impl ToolCallFormat {
    /// Detects the format from the model's vocabulary and chat template: a format is
    /// native only when its opening marker is one token of the vocabulary *and* the
    /// template uses it; anything else gets [`ToolCallFormat::Generic`].
    pub fn detect(model: &dyn FormatEvidence) -> Self {
        let template = model.template_source();
        let native = |marker: &str| model.is_single_token(marker) && template.contains(marker);
        if native("<tool_call>") && model.is_single_token("</tool_call>") {
            Self::Hermes
        } else if native("<|python_tag|>") {
            Self::Llama3
        } else if native("[TOOL_CALLS]") {
            Self::Mistral
        } else {
            Self::Generic
        }
    }

    /// Whether the model has its own tokens for calls.
    pub fn is_native(self) -> bool {
        self != Self::Generic
    }

    /// The text that opens a call.
    pub fn open_marker(self) -> &'static str {
        match self {
            Self::Hermes | Self::Generic => "<tool_call>",
            Self::Llama3 => "<|python_tag|>",
            Self::Mistral => "[TOOL_CALLS]",
        }
    }

    /// The text that closes a call, for formats that have one (the others end with the
    /// JSON value).
    pub fn close_marker(self) -> Option<&'static str> {
        match self {
            Self::Hermes | Self::Generic => Some("</tool_call>"),
            Self::Llama3 | Self::Mistral => None,
        }
    }

    /// The key holding a call's arguments.
    pub fn arguments_key(self) -> &'static str {
        match self {
            Self::Llama3 => "parameters",
            _ => "arguments",
        }
    }

    /// A parser for streamed output in this format.
    pub fn parser(self) -> ToolCallParser {
        ToolCallParser::new(self)
    }

    /// The system-prompt text that teaches the generic format (append it to the system
    /// message; native formats get their tools from the chat template instead).
    pub fn generic_instructions(tools: &[ToolSpec]) -> String {
        let mut out = String::from(
            "You can call tools. To call one, write exactly\n<tool_call>{\"name\": \"TOOL\", \"arguments\": {ARGUMENTS}}</tool_call>\n\
             with JSON arguments that follow the tool's schema, one call per block. \
             The result comes back in the next message. Without a tool call, your reply is the final answer.\n\nTools:\n",
        );
        for tool in tools {
            out.push_str(&format!(
                "- {}: {} Arguments schema: {}\n",
                tool.name,
                tool.description,
                serde_json::to_string(&tool.parameters).unwrap_or_default()
            ));
        }
        out
    }
}

/// What the parser found in the stream, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedEvent {
    /// Plain text (outside any call).
    Text(String),
    /// The opening marker of a call appeared (the call's JSON follows).
    CallStarted,
    /// A complete call.
    Call(ToolCall),
    /// A call block that is not a valid call; `raw` is what was inside it.
    Malformed {
        /// The text of the block.
        raw: String,
        /// Why it is not a call.
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Text,
    InCall,
}

/// Splits streamed model output into text and tool calls.
///
/// Feed it pieces with [`push`](Self::push) as they are generated, then call
/// [`finish`](Self::finish). Text that may be the start of an opening marker is held
/// back until it is known not to be one.
#[derive(Debug, Clone)]
pub struct ToolCallParser {
    format: ToolCallFormat,
    state: State,
    buffer: String,
}

impl ToolCallParser {
    /// A parser for `format`.
    pub fn new(format: ToolCallFormat) -> Self {
        Self {
            format,
            state: State::Text,
            buffer: String::new(),
        }
    }

    /// Whether the parser is inside a call (its JSON has started but not ended).
    pub fn in_call(&self) -> bool {
        self.state == State::InCall
    }

    /// Feeds the next piece of output.
    pub fn push(&mut self, piece: &str) -> Vec<ParsedEvent> {
        self.buffer.push_str(piece);
        let mut events = Vec::new();
        loop {
            match self.state {
                State::Text => {
                    let open = self.format.open_marker();
                    if let Some(at) = self.buffer.find(open) {
                        if at > 0 {
                            events.push(ParsedEvent::Text(self.buffer[..at].to_string()));
                        }
                        self.buffer.drain(..at + open.len());
                        self.state = State::InCall;
                        events.push(ParsedEvent::CallStarted);
                        continue;
                    }
                    let hold = partial_suffix(&self.buffer, open);
                    let cut = self.buffer.len() - hold;
                    if cut > 0 {
                        events.push(ParsedEvent::Text(self.buffer[..cut].to_string()));
                        self.buffer.drain(..cut);
                    }
                    break;
                }
                State::InCall => {
                    let Some(end) = self.call_end() else { break };
                    let (raw_end, consumed) = end;
                    let raw = self.buffer[..raw_end].to_string();
                    self.buffer.drain(..consumed);
                    self.state = State::Text;
                    events.extend(self.parse_block(&raw));
                }
            }
        }
        events
    }

    /// Ends the stream: held-back text is emitted; an unfinished call is reported as
    /// malformed unless its JSON is complete (formats whose calls end at the end of
    /// the reply).
    pub fn finish(&mut self) -> Vec<ParsedEvent> {
        let rest = std::mem::take(&mut self.buffer);
        match self.state {
            State::Text if rest.is_empty() => Vec::new(),
            State::Text => vec![ParsedEvent::Text(rest)],
            State::InCall => {
                self.state = State::Text;
                if self.format.close_marker().is_some() {
                    return vec![ParsedEvent::Malformed {
                        raw: rest.clone(),
                        error: format!(
                            "the call was not finished (no `{}`)",
                            self.format.close_marker().unwrap_or_default()
                        ),
                    }];
                }
                self.parse_block(&rest)
            }
        }
    }

    /// Where the current call ends: (end of its text, bytes to consume). A JSON value
    /// is read to its end first, so a close marker inside a string argument does not
    /// end the call.
    fn call_end(&self) -> Option<(usize, usize)> {
        let start = self.buffer.len() - self.buffer.trim_start().len();
        let json = json_end(&self.buffer[start..]).map(|len| start + len);
        match self.format.close_marker() {
            Some(close) => {
                let after = match json {
                    Some(end) => end,
                    // Still inside the JSON value: wait for it to end.
                    None if self.buffer[start..].starts_with(['{', '[']) => return None,
                    None => 0,
                };
                self.buffer[after..]
                    .find(close)
                    .map(|at| (after + at, after + at + close.len()))
            }
            None => json.map(|end| (end, end)),
        }
    }

    fn parse_block(&self, raw: &str) -> Vec<ParsedEvent> {
        let malformed = |error: String| ParsedEvent::Malformed {
            raw: raw.to_string(),
            error,
        };
        let value: Value = match serde_json::from_str(raw.trim()) {
            Ok(v) => v,
            Err(e) => return vec![malformed(format!("not valid JSON: {e}"))],
        };
        let items = match (self.format, value) {
            (ToolCallFormat::Mistral, Value::Array(items)) => items,
            (_, Value::Array(_)) if self.format != ToolCallFormat::Mistral => {
                return vec![malformed("expected one JSON object, got an array".into())]
            }
            (_, v) => vec![v],
        };
        items
            .into_iter()
            .map(
                |item| match call_from_json(item, self.format.arguments_key()) {
                    Ok(call) => ParsedEvent::Call(call),
                    Err(e) => malformed(e),
                },
            )
            .collect()
    }
}

/// Reads `{"name": …, "<args_key>": {…}}` (also accepting `arguments`/`parameters`
/// either way, and arguments given as a JSON string).
fn call_from_json(value: Value, args_key: &str) -> Result<ToolCall, String> {
    let Value::Object(mut map) = value else {
        return Err("a call must be a JSON object with `name` and arguments".into());
    };
    let name = match map.remove("name") {
        Some(Value::String(name)) if !name.is_empty() => name,
        Some(_) => return Err("`name` must be a non-empty string".into()),
        None => return Err("the call has no `name`".into()),
    };
    let arguments = map
        .remove(args_key)
        .or_else(|| map.remove("arguments"))
        .or_else(|| map.remove("parameters"))
        .unwrap_or(Value::Object(Default::default()));
    let arguments = match arguments {
        Value::String(s) => serde_json::from_str(&s)
            .map_err(|e| format!("`{args_key}` is a string that is not JSON: {e}"))?,
        other => other,
    };
    if !arguments.is_object() {
        return Err(format!("`{args_key}` must be a JSON object"));
    }
    let id = map
        .remove("id")
        .and_then(|v| v.as_str().map(str::to_string));
    Ok(ToolCall {
        id,
        name,
        arguments,
    })
}

/// The length of the JSON value (object or array) at the start of `text`, once it is
/// complete; `None` while it is still open or if `text` does not start with one.
fn json_end(text: &str) -> Option<usize> {
    if !text.starts_with(['{', '[']) {
        return None;
    }
    let mut nesting = Nesting::default();
    for (i, c) in text.char_indices() {
        if !nesting.feed(c) && nesting.depth() == 0 {
            return Some(i + c.len_utf8());
        }
    }
    None
}

/// Length of the longest suffix of `text` that is a proper prefix of `marker`.
fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Parses `output` fed whole, and fed in every two-way split, and compares the
    /// merged events with `want`.
    fn check(format: ToolCallFormat, output: &str, want: &[ParsedEvent]) {
        let mut splits = vec![vec![output.to_string()]];
        for (i, _) in output.char_indices().skip(1) {
            splits.push(vec![output[..i].to_string(), output[i..].to_string()]);
        }
        splits.push(output.chars().map(String::from).collect());
        for pieces in splits {
            let mut parser = format.parser();
            let mut events = Vec::new();
            for piece in &pieces {
                events.extend(parser.push(piece));
            }
            events.extend(parser.finish());
            assert_eq!(merge(events), want, "{format:?} pieces {pieces:?}");
        }
    }

    /// Joins adjacent text events (their split depends on the chunking).
    fn merge(events: Vec<ParsedEvent>) -> Vec<ParsedEvent> {
        let mut out: Vec<ParsedEvent> = Vec::new();
        for e in events {
            match (out.last_mut(), e) {
                (Some(ParsedEvent::Text(a)), ParsedEvent::Text(b)) => a.push_str(&b),
                (_, e) => out.push(e),
            }
        }
        out
    }

    fn text(s: &str) -> ParsedEvent {
        ParsedEvent::Text(s.into())
    }

    fn call(name: &str, args: Value) -> ParsedEvent {
        ParsedEvent::Call(ToolCall {
            id: None,
            name: name.into(),
            arguments: args,
        })
    }

    #[test]
    fn hermes_and_generic() {
        use ToolCallFormat::*;
        for f in [Hermes, Generic] {
            check(f, "Just text < not a tag", &[text("Just text < not a tag")]);
            check(
                f,
                "Let me compute.\n<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print(1+1)\"}}\n</tool_call>",
                &[
                    text("Let me compute.\n"),
                    ParsedEvent::CallStarted,
                    call("python", json!({"code": "print(1+1)"})),
                ],
            );
            check(
                f,
                "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call><tool_call>{\"name\": \"b\", \"arguments\": \"{\\\"x\\\": 1}\"}</tool_call>",
                &[
                    ParsedEvent::CallStarted,
                    call("a", json!({})),
                    ParsedEvent::CallStarted,
                    call("b", json!({"x": 1})),
                ],
            );
            check(
                f,
                "<tool_call>{\"name\": \"a\", \"arguments\": {\"s\": \"</tool\"}}</tool_call>",
                &[ParsedEvent::CallStarted, call("a", json!({"s": "</tool"}))],
            );
            check(
                f,
                "<tool_call>{\"name\": \"a\", \"arguments\": {\"s\": \"x</tool_call>y\"}}\n</tool_call>z",
                &[ParsedEvent::CallStarted, call("a", json!({"s": "x</tool_call>y"})), text("z")],
            );
        }
    }

    #[test]
    fn malformed_calls_are_reported_not_dropped() {
        let f = ToolCallFormat::Hermes;
        let bad = |raw: &str, error: &str| ParsedEvent::Malformed {
            raw: raw.into(),
            error: error.into(),
        };
        let mut p = f.parser();
        let mut events = p.push("<tool_call>{\"name\": \"a\", \"arguments\": [1]}</tool_call>");
        events.extend(p.finish());
        assert_eq!(
            events,
            vec![
                ParsedEvent::CallStarted,
                bad(
                    "{\"name\": \"a\", \"arguments\": [1]}",
                    "`arguments` must be a JSON object"
                )
            ]
        );
        let mut p = f.parser();
        let mut events = p.push("<tool_call>{\"name\": \"a\", \"argu");
        events.extend(p.finish());
        assert!(
            matches!(&events[1], ParsedEvent::Malformed { error, .. } if error.contains("not finished"))
        );
        let mut p = f.parser();
        let mut events = p.push("<tool_call>not json</tool_call>after");
        events.extend(p.finish());
        assert!(
            matches!(&events[1], ParsedEvent::Malformed { error, .. } if error.starts_with("not valid JSON"))
        );
        assert_eq!(events[2], text("after"));
    }

    #[test]
    fn llama3_and_mistral_end_with_the_json() {
        check(
            ToolCallFormat::Llama3,
            "<|python_tag|>{\"name\": \"search\", \"parameters\": {\"q\": \"}\"}}",
            &[ParsedEvent::CallStarted, call("search", json!({"q": "}"}))],
        );
        check(
            ToolCallFormat::Mistral,
            "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"n\": 1}}, {\"name\": \"b\", \"arguments\": {}}] done",
            &[
                ParsedEvent::CallStarted,
                call("a", json!({"n": 1})),
                call("b", json!({})),
                text(" done"),
            ],
        );
    }

    struct Fake(&'static [&'static str], &'static str);
    impl FormatEvidence for Fake {
        fn is_single_token(&self, text: &str) -> bool {
            self.0.contains(&text)
        }
        fn template_source(&self) -> &str {
            self.1
        }
    }

    #[test]
    fn detection_needs_the_token_and_the_template() {
        use ToolCallFormat::*;
        let cases: [(Fake, ToolCallFormat); 5] = [
            (
                Fake(&["<tool_call>", "</tool_call>"], "{{ '<tool_call>' }}"),
                Hermes,
            ),
            (
                Fake(&["<tool_call>", "</tool_call>"], "plain chatml"),
                Generic,
            ),
            (Fake(&[], "{{ '<tool_call>' }}"), Generic),
            (Fake(&["<|python_tag|>"], "<|python_tag|>"), Llama3),
            (Fake(&["[TOOL_CALLS]"], "[TOOL_CALLS]"), Mistral),
        ];
        for (evidence, want) in cases {
            assert_eq!(ToolCallFormat::detect(&evidence), want, "{:?}", evidence.0);
        }
    }
}
