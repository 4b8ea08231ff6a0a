//! Calls the model wrote as JSON in its prose instead of its call syntax.
//!
//! Small models asked with `tool_choice: auto` often answer with a fenced or bare
//! `{"name": …, "arguments": {…}}` block rather than their `<tool_call>` token. A
//! client of an OpenAI server expects `tool_calls` then, so a reply whose whole text
//! is one such object naming a listed tool (with arguments its schema accepts)
//! becomes a call. Anything else — text around the object, an unknown name, arguments
//! the schema refuses — stays text.

use jielong_core::{call_check, ToolCall, ToolSpec};
use serde_json::Value;

/// The body of `text` without an optional Markdown code fence (```` ```json ````).
fn unfenced(text: &str) -> &str {
    let text = text.trim();
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    let Some(body) = rest.strip_suffix("```") else {
        return text;
    };
    // The info string (`json`) runs to the end of the first line.
    match body.split_once('\n') {
        Some((info, rest)) if !info.trim_start().starts_with('{') => rest.trim(),
        _ => body.trim(),
    }
}

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
    let body = unfenced(text);
    if !body.starts_with('{') {
        return None;
    }
    let Value::Object(map) = serde_json::from_str::<Value>(body).ok()? else {
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
    tools.iter().find(|t| t.name == name)?;
    let call = ToolCall::new(name, arguments);
    call_check(tools)(&call).ok()?;
    Some(call)
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
