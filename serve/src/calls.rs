//! Calls the model wrote as JSON in its prose instead of its call syntax.
//!
//! Small models asked with `tool_choice: auto` often answer with a fenced or bare
//! `{"name": …, "arguments": {…}}` block rather than their `<tool_call>` token. A
//! client of an OpenAI server expects `tool_calls` then, so a reply whose whole text
//! is one such object naming a listed tool (with arguments its schema accepts)
//! becomes a call. What small models get wrong in such blocks and still clearly mean
//! is forgiven: `//` comments, a number written as a string (or the reverse) where
//! the schema says which, and — when only one tool is listed — a made-up name (the
//! arguments must still pass that tool's schema). Anything else — text around the
//! object, an unknown name among several tools, arguments the schema refuses — stays
//! text here; the chat handler then generates such a reply again with the call
//! required when it still means a call (`jielong_chat::intent`).

use jielong_chat::intent::fenced_body;
use jielong_chat::{call_check, Completion, FinishReason, Nesting, Quotes, ToolCall, ToolSpec};
use serde_json::Value;

/// Whether streamed text that starts like this could turn out to be a written call
/// (so it is held back until the reply ends).
pub fn may_be_call(start: &str) -> bool {
    let start = start.trim_start();
    start.starts_with('{') || start.starts_with("```") || "```".starts_with(start)
}

/// The call `text` is, when it is exactly one JSON object `{"name": <a tool in
/// `tools`>, "arguments" | "parameters": {…}}` (optionally fenced) whose arguments
/// pass the tool's schema.
pub fn written_call(text: &str, tools: &[ToolSpec]) -> Option<ToolCall> {
    if tools.is_empty() {
        return None;
    }
    let body = fenced_body(text);
    if !body.starts_with('{') {
        return None;
    }
    let Value::Object(map) = serde_json::from_str::<Value>(&without_comments(body)).ok()? else {
        return None;
    };
    let name = map.get("name")?.as_str()?;
    let arguments = match (map.get("arguments"), map.get("parameters")) {
        (Some(a), _) | (None, Some(a)) => a.clone(),
        (None, None) => return None,
    };
    // Some models write the arguments as a JSON string.
    let arguments = match arguments {
        Value::String(s) => serde_json::from_str(&s).ok()?,
        other => other,
    };
    // Only the call's own keys: an object with more is something else.
    if map
        .keys()
        .any(|k| !matches!(k.as_str(), "name" | "arguments" | "parameters"))
    {
        return None;
    }
    // A made-up name means the one tool there is.
    let tool = match tools.iter().find(|t| t.name == name) {
        Some(tool) => tool,
        None if tools.len() == 1 => &tools[0],
        None => return None,
    };
    let arguments = coerced(arguments, &tool.parameters);
    let call = ToolCall::new(tool.name.clone(), arguments);
    call_check(tools)(&call).ok()?;
    Some(call)
}

/// A call the token budget (or the context) cut before it ended: the tool it names and
/// the arguments written so far, which are not complete JSON. OpenAI returns such a
/// call as it stands, with `finish_reason: "length"`, so a client sees why it is cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutCall {
    /// The tool the call names.
    pub name: String,
    /// The arguments' text so far.
    pub arguments: String,
}

/// The call `completion` ends inside of, when generation ran out of room in it: the
/// last malformed block ends the reply and names one of `tools`.
pub fn cut_call(completion: &Completion, tools: &[ToolSpec]) -> Option<CutCall> {
    if !matches!(
        completion.finish,
        FinishReason::MaxTokens | FinishReason::ContextFull
    ) {
        return None;
    }
    let raw = completion.malformed.last()?.raw.trim();
    if raw.is_empty() || !completion.text.trim_end().ends_with(raw) {
        return None;
    }
    let name: String = key_value(raw, "name")
        .and_then(|rest| serde_json::Deserializer::from_str(rest).into_iter().next())?
        .ok()?;
    if !tools.iter().any(|t| t.name == name) {
        return None;
    }
    let arguments = key_value(raw, "arguments")
        .or_else(|| key_value(raw, "parameters"))
        .unwrap_or_default();
    Some(CutCall {
        name,
        arguments: arguments.to_string(),
    })
}

/// What follows `"key":` at the top level of the JSON object `text` starts.
fn key_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut nesting = Nesting::default();
    let quoted = format!("\"{key}\"");
    for (at, c) in text.char_indices() {
        let opening = c == '"' && !nesting.in_string() && nesting.depth() == 1;
        nesting.feed(c);
        if opening && text[at..].starts_with(&quoted) {
            let rest = text[at + quoted.len()..].trim_start();
            if let Some(value) = rest.strip_prefix(':') {
                return Some(value.trim_start());
            }
        }
    }
    None
}

/// `text` without `//` comments (outside strings), which small models put after values.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut quotes = Quotes::default();
    while let Some(c) = chars.next() {
        if quotes.feed(c) {
            out.push(c);
            continue;
        }
        if c == '/' && chars.peek() == Some(&'/') {
            for rest in chars.by_ref() {
                if rest == '\n' {
                    out.push('\n');
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// `arguments` with each top-level value the schema types as a number (or integer)
/// but written as a numeric string made a number, and each one typed as a string but
/// written as a number made a string. Everything else is left for the schema check.
fn coerced(arguments: Value, schema: &Value) -> Value {
    let Value::Object(mut map) = arguments else {
        return arguments;
    };
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Value::Object(map);
    };
    for (key, value) in map.iter_mut() {
        let Some(kind) = properties
            .get(key)
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let replacement = match (kind, &*value) {
            ("number", Value::String(text)) => text
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number),
            ("integer", Value::String(text)) => text.trim().parse::<i64>().ok().map(Value::from),
            ("string", Value::Number(number)) => Some(Value::String(number.to_string())),
            _ => None,
        };
        if let Some(replacement) = replacement {
            *value = replacement;
        }
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec::new(
            "get_weather",
            "Weather in a city",
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        )]
    }

    #[test]
    fn fenced_and_bare_calls_are_recognised() {
        let fenced =
            "```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```";
        let call = written_call(fenced, &tools()).expect("a call");
        assert_eq!(call.name, "get_weather");
        assert_eq!(call.arguments, json!({"city": "Paris"}));
        let bare = " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}} ";
        assert_eq!(
            written_call(bare, &tools()).map(|c| c.arguments),
            Some(json!({"city": "Oslo"}))
        );
    }

    #[test]
    fn what_small_models_get_wrong_in_a_written_call_is_forgiven() {
        let plot = vec![ToolSpec::new(
            "plot_sine_wave",
            "Plot a sine wave",
            json!({"type": "object", "properties": {
                "start_range": {"type": "number"}, "end_range": {"type": "number"},
                "frequency": {"type": "integer"}, "label": {"type": "string"}},
                "required": ["start_range", "end_range", "frequency"]}),
        )];
        // Comments after values (a `//` inside a string is kept), numbers as strings
        // and the reverse.
        let text = "```json\n{\n  \"name\": \"plot_sine_wave\",\n  \"arguments\": {\n    \"start_range\": \"0.0\", // in s\n    \"end_range\": 2.5,\n    \"frequency\": \"5\",\n    \"label\": 7 // a // b\n  }\n}\n```";
        let call = written_call(text, &plot).expect("a call");
        assert_eq!(
            call.arguments,
            json!({"start_range": 0.0, "end_range": 2.5, "frequency": 5, "label": "7"})
        );
        let url = "{\"name\": \"plot_sine_wave\", \"arguments\": {\"start_range\": 0, \"end_range\": 1, \"frequency\": 2, \"label\": \"http://x\"}}";
        assert_eq!(
            written_call(url, &plot).unwrap().arguments["label"],
            "http://x"
        );
        // A made-up name with the only tool's arguments is a call of that tool...
        let renamed = "{\"name\": \"Sine Wave Plotter\", \"arguments\": {\"start_range\": 0, \"end_range\": 1, \"frequency\": 2}}";
        assert_eq!(written_call(renamed, &plot).unwrap().name, "plot_sine_wave");
        // ...but not when its arguments do not fit, nor among several tools.
        assert!(written_call(
            "{\"name\": \"x\", \"arguments\": {\"city\": \"Oslo\"}}",
            &plot
        )
        .is_none());
        let mut two = plot.clone();
        two.extend(tools());
        assert!(written_call(renamed, &two).is_none());
        // A value that is no JSON (an expression) keeps the reply text.
        assert!(written_call("{\"name\": \"plot_sine_wave\", \"arguments\": {\"start_range\": 3 * 60, \"end_range\": 1, \"frequency\": 2}}", &plot).is_none());
    }

    #[test]
    fn a_call_cut_by_the_budget_keeps_its_name_and_partial_arguments() {
        let cut = |text: &str, raw: &str, finish: FinishReason| {
            let mut completion = Completion::new(text, finish, Default::default());
            completion.malformed.push(jielong_chat::MalformedCall {
                raw: raw.into(),
                error: "the call was not finished".into(),
            });
            cut_call(&completion, &tools())
        };
        let raw = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par";
        let text = format!("<tool_call>\n{raw}");
        assert_eq!(
            cut(&text, raw, FinishReason::MaxTokens),
            Some(CutCall {
                name: "get_weather".into(),
                arguments: "{\"city\": \"Par".into()
            })
        );
        // Cut before the arguments: empty arguments.
        let early = "{\"name\": \"get_weather\", \"argu";
        assert_eq!(
            cut(early, early, FinishReason::ContextFull).map(|c| c.arguments),
            Some(String::new())
        );
        // A "name" inside the arguments is not the call's name.
        let nested = "{\"arguments\": {\"name\": \"x\"}, \"name\": \"get_weather\"";
        assert_eq!(
            cut(nested, nested, FinishReason::MaxTokens).map(|c| c.name),
            Some("get_weather".into())
        );
        // Not when the reply ended for another reason, when text follows the block,
        // or when the name is no listed tool.
        assert_eq!(cut(&text, raw, FinishReason::EndOfText), None);
        assert_eq!(
            cut(&format!("{text} and so on"), raw, FinishReason::MaxTokens),
            None
        );
        let other = "{\"name\": \"other\", \"arguments\": {";
        assert_eq!(cut(other, other, FinishReason::MaxTokens), None);
    }

    #[test]
    fn answers_stay_text() {
        let t = tools();
        assert!(written_call("The weather is fine.", &t).is_none());
        assert!(written_call("{\"name\": \"other\", \"arguments\": {}}", &t).is_none());
        assert!(written_call("{\"name\": \"get_weather\", \"arguments\": {}}", &t).is_none());
        assert!(written_call(
            "Here: {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
            &t
        )
        .is_none());
        assert!(written_call("{\"city\": \"Paris\"}", &t).is_none());
        assert!(may_be_call("  ```json"));
        assert!(may_be_call("`") && may_be_call(" ") && may_be_call("{\""));
        assert!(!may_be_call("Sure"));
    }
}
