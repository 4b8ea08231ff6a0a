//! Recognising a call the model meant to make but wrote as bare JSON.
//!
//! Small models often answer `{"name": "python", "arguments": {...}}`, or the same in a
//! ```` ```json ```` fence, instead of opening a call block. Whoever drives the model
//! then generates the reply again: the agent loop with calls required when the call
//! would do something new (as prose when it would only repeat a call already made or
//! restate a result the model already has), `jielong serve` with the call required
//! when a client's `tool_choice: auto` got such a reply.

use serde_json::Value;

use crate::chat::ToolSpec;

/// A call written as bare JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// The tool it names (one of the tools, or any name when it has arguments).
    pub name: String,
    /// Its arguments, when the object is complete and has them.
    pub arguments: Option<Value>,
}

/// The call a reply means to make: the reply (trimmed, an optional leading code fence
/// removed) starts with a JSON object whose `name` (or `function.name`) is one of
/// `tools`, or that has a name and `arguments` (or `parameters`): a call of a tool the
/// model misnamed. A truncated object counts when it starts with a tool's `name`.
pub fn intended_call(reply: &str, tools: &[ToolSpec]) -> Option<Intent> {
    let text = strip_fence(reply.trim());
    if !text.starts_with('{') || tools.is_empty() {
        return None;
    }
    let known = |name: &str| tools.iter().any(|t| t.name == name);
    match serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .next()
    {
        Some(Ok(value)) => {
            let call = value.get("function").unwrap_or(&value);
            let name = call.get("name")?.as_str()?.to_string();
            let arguments = call
                .get("arguments")
                .or_else(|| call.get("parameters"))
                .cloned();
            (known(&name) || arguments.is_some()).then_some(Intent { name, arguments })
        }
        _ => {
            let name = leading_name(text)?;
            known(&name).then_some(Intent {
                name,
                arguments: None,
            })
        }
    }
}

/// Whether a reply is shaped like a tool call rather than an answer: a JSON object
/// (bare or in a fence) with a `name` and `arguments`/`parameters`, a call marker
/// left in the text, or the prompt's `<tools>` list echoed back (what a small model
/// writes when it means to call but loses its way).
pub fn looks_like_call(reply: &str) -> bool {
    let text = reply.trim();
    if text.contains("<tool_call>")
        || text.contains("<|python_tag|>")
        || text.contains("[TOOL_CALLS]")
        || text.starts_with("<tools>")
    {
        return true;
    }
    let body = fenced_body(text);
    if !body.starts_with('{') {
        return false;
    }
    let has = |key: &str| body.contains(&format!("\"{key}\""));
    has("name") && (has("arguments") || has("parameters"))
}

/// Where a reply streamed so far stands as a bare JSON call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareCall {
    /// It opens (or may still open) with a JSON object, not yet complete.
    Open,
    /// It opens with a complete JSON object (possibly in a code fence): the call has
    /// said all it will say.
    Complete,
    /// It cannot be a bare call: it opens with something else.
    Not,
}

/// Classifies `text`, a reply so far. Once it is [`BareCall::Not`] it stays so, and the
/// caller can stop asking (the check parses the text, so it is not free per token).
pub fn bare_call_state(text: &str) -> BareCall {
    let trimmed = text.trim_start();
    if trimmed.is_empty() || "```".starts_with(trimmed) {
        return BareCall::Open;
    }
    // A fence line (```json) with nothing after it yet is still open.
    let body = strip_fence(trimmed);
    if body.is_empty() {
        return BareCall::Open;
    }
    if !body.starts_with('{') {
        return BareCall::Not;
    }
    match serde_json::Deserializer::from_str(body)
        .into_iter::<Value>()
        .next()
    {
        Some(Ok(_)) => BareCall::Complete,
        _ => BareCall::Open,
    }
}

/// `text` without a leading ```` ``` ```` or ```` ```json ```` line.
fn strip_fence(text: &str) -> &str {
    match text.strip_prefix("```") {
        Some(rest) => rest
            .trim_start_matches(|c: char| c.is_ascii_alphanumeric() || "_+-".contains(c))
            .trim_start(),
        None => text,
    }
}

/// `text` without its opening fence line and a closing fence: what a fenced (or bare)
/// blob holds.
pub fn fenced_body(text: &str) -> &str {
    strip_fence(text.trim()).trim_end_matches("```").trim()
}

/// The name of an unfinished `{"name": "…", …` object.
fn leading_name(text: &str) -> Option<String> {
    let rest = text.strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"name\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    match serde_json::Deserializer::from_str(rest)
        .into_iter::<String>()
        .next()
    {
        Some(Ok(name)) => Some(name),
        _ => None,
    }
}

/// Whether `arguments` only restate one of `results`: every string or number in them
/// is, trimmed, a whole result (as `{"code": "83810205"}` after a result `83810205`).
pub fn restates_result(arguments: &Value, results: &[&str]) -> bool {
    let mut leaves = Vec::new();
    collect_leaves(arguments, &mut leaves);
    !leaves.is_empty()
        && leaves.iter().all(|leaf| {
            let leaf = leaf
                .trim()
                .trim_start_matches("print(")
                .trim_end_matches(')');
            !leaf.is_empty() && results.iter().any(|r| r.trim() == leaf.trim())
        })
}

fn collect_leaves(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| collect_leaves(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_leaves(v, out)),
        Value::Bool(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recognises_bare_and_fenced_json() {
        let tools = vec![ToolSpec::new("python", "Runs code.", json!({}))];
        let cases = [
            (
                r#"{"name": "python", "arguments": {"code": "print(1)"}}"#,
                Some("python"),
            ),
            (
                " ```json\n{\"name\": \"python\", \"arguments\": {}}\n```",
                Some("python"),
            ),
            ("```\n{\"name\":\"python\"}\n```", Some("python")),
            (r#"{"function": {"name": "python"}}"#, Some("python")),
            (
                r#"{"name": "python", "arguments": {"code": "print("#,
                Some("python"),
            ),
            (r#"{"name": "ruby", "arguments": {}}"#, Some("ruby")),
            (r#"{"name": "ruby"}"#, None),
            (r#"{"name": "ruby", "arguments": {"code": "print("#, None),
            (r#"The call is {"name": "python"}"#, None),
            ("42", None),
            ("{not json", None),
        ];
        for (reply, want) in cases {
            let got = intended_call(reply, &tools);
            assert_eq!(got.as_ref().map(|i| i.name.as_str()), want, "{reply:?}");
        }
        for (text, state) in [
            (" ```json\n{\"name\": \"python\"}", BareCall::Complete),
            ("{\"name\": \"python\"}\n{\"name\"", BareCall::Complete),
            ("{\"name\": \"python\"", BareCall::Open),
            ("", BareCall::Open),
            ("``", BareCall::Open),
            ("```json", BareCall::Open),
            ("```json\n", BareCall::Open),
            ("The answer is {}", BareCall::Not),
            ("```python\nprint(1)", BareCall::Not),
        ] {
            assert_eq!(bare_call_state(text), state, "{text:?}");
        }
        let full = intended_call(r#"{"name": "python", "arguments": {"code": "1"}}"#, &tools);
        assert_eq!(full.and_then(|i| i.arguments), Some(json!({"code": "1"})));
    }

    #[test]
    fn call_shapes_are_recognised() {
        for (reply, want) in [
            (
                "```json\n{\"name\": \"calc\", \"arguments\": {\"a\": 21 * 2}}\n```",
                true,
            ),
            ("{\"total\": 5 * 3}", false),
            ("<tool_call>\n{\"name\": \"python\"", true),
            ("<tools>\n{\"type\": \"function\", \"function\": {}}", true),
            ("The list is in <tools>.", false),
            ("The answer is 18.", false),
            ("{not a call", false),
            ("She has {3} apples", false),
        ] {
            assert_eq!(looks_like_call(reply), want, "{reply:?}");
        }
    }

    #[test]
    fn restating_a_result_is_recognised() {
        let results = ["83810205\n", "[1, 2]"];
        let cases = [
            (json!({"code": "83810205"}), true),
            (json!({"code": " print(83810205) "}), true),
            (json!({"x": 83810205}), true),
            (json!({"code": "[1, 2]"}), true),
            (json!({"code": "83810205 + 1"}), false),
            (json!({"code": ""}), false),
            (json!({}), false),
            (json!({"code": "83810205", "more": "x"}), false),
        ];
        for (arguments, want) in cases {
            assert_eq!(restates_result(&arguments, &results), want, "{arguments}");
        }
    }
}
