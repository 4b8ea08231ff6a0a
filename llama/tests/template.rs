//! Golden tests of chat-template rendering against Hugging Face transformers' reference.
//!
//! `tests/fixtures/templates/` holds the chat templates (two extracted from real GGUF files,
//! Jielong's ChatML fallback, and a template exercising template features), the cases
//! (`cases/*.json`: messages, tools, `add_generation_prompt`), and the outputs Python's jinja2
//! produced for every template × case, as transformers' `apply_chat_template` renders them
//! (`expected/<template>/<case>.txt`, or `.error` when the template raises). Regenerate them
//! with `python3 tests/fixtures/templates/generate.py`. Every pair must match byte for byte.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use jielong_chat::chat::{Message, Role, ToolCall, ToolSpec};
use jielong_llama::template::{ChatTemplate, TemplateError};
use serde::Deserialize;
use serde_json::json;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/templates")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[derive(Deserialize)]
struct TemplateInfo {
    file: String,
    bos_token: String,
    eos_token: String,
}

#[derive(Deserialize)]
struct Case {
    messages: Vec<Message>,
    #[serde(default)]
    tools: Vec<ToolSpec>,
    add_generation_prompt: bool,
}

/// Loads a fixture template: the ChatML one through `ChatTemplate::chatml()` (checking that
/// the fixture is its source), the others through `ChatTemplate::new`.
fn load_template(name: &str, info: &TemplateInfo) -> ChatTemplate {
    let source = read(&fixtures().join(&info.file));
    if name == "chatml" {
        let template = ChatTemplate::chatml();
        assert_eq!(
            template.source(),
            source,
            "chatml.jinja differs from ChatTemplate::chatml().source()"
        );
        assert_eq!(template.bos_token(), info.bos_token);
        assert_eq!(template.eos_token(), info.eos_token);
        return template;
    }
    let template = ChatTemplate::new(source.clone(), &info.bos_token, &info.eos_token)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(template.source(), source);
    template
}

/// Shows a line readably: raw text, with tabs, carriage returns and other control characters
/// escaped and the line break drawn as `⏎`.
fn show(line: &str) -> String {
    let mut out = String::new();
    for c in line.chars() {
        match c {
            '\n' => out.push('⏎'),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// A readable line diff: the first differing line with context, and where in it the
/// difference starts.
fn diff(expected: &str, actual: &str) -> String {
    let exp: Vec<&str> = expected.split_inclusive('\n').collect();
    let act: Vec<&str> = actual.split_inclusive('\n').collect();
    let first = exp
        .iter()
        .zip(&act)
        .position(|(e, a)| e != a)
        .unwrap_or(exp.len().min(act.len()));
    let mut out = format!(
        "first difference at line {} (expected {} lines, got {}; - expected, + actual):\n",
        first + 1,
        exp.len(),
        act.len()
    );
    for (i, line) in exp
        .iter()
        .enumerate()
        .take(first)
        .skip(first.saturating_sub(3))
    {
        let _ = writeln!(out, "  {:>4} | {}", i + 1, show(line));
    }
    for i in first..(first + 6) {
        let (e, a) = (exp.get(i), act.get(i));
        if e.is_none() && a.is_none() {
            break;
        }
        if e == a {
            let _ = writeln!(
                out,
                "  {:>4} | {}",
                i + 1,
                show(e.copied().unwrap_or_default())
            );
            continue;
        }
        if let Some(e) = e {
            let _ = writeln!(out, "- {:>4} | {}", i + 1, show(e));
        }
        if let Some(a) = a {
            let _ = writeln!(out, "+ {:>4} | {}", i + 1, show(a));
        }
    }
    if let (Some(e), Some(a)) = (exp.get(first), act.get(first)) {
        let (e, a): (Vec<char>, Vec<char>) = (e.chars().collect(), a.chars().collect());
        let col = e
            .iter()
            .zip(&a)
            .position(|(x, y)| x != y)
            .unwrap_or(e.len().min(a.len()));
        let from = col.saturating_sub(20);
        let snippet = |chars: &[char]| {
            show(
                &chars[from.min(chars.len())..(col + 20).min(chars.len())]
                    .iter()
                    .collect::<String>(),
            )
        };
        let _ = writeln!(
            out,
            "line {}, column {}: expected …{}… got …{}…",
            first + 1,
            col + 1,
            snippet(&e),
            snippet(&a)
        );
    }
    out
}

/// Renders `case` with `template` and compares with the golden output of Python's jinja2.
/// Returns a description of the mismatch, if any.
fn check(
    template_name: &str,
    template: &ChatTemplate,
    case_name: &str,
    case: &Case,
) -> Option<String> {
    let dir = fixtures().join("expected").join(template_name);
    let label = format!("{template_name} × {case_name}");
    let rendered = template.render(&case.messages, &case.tools, case.add_generation_prompt);
    let txt = dir.join(format!("{case_name}.txt"));
    let err = dir.join(format!("{case_name}.error"));
    match (rendered, txt.exists(), err.exists()) {
        (Ok(actual), true, _) => {
            let expected = read(&txt);
            (actual != expected)
                .then(|| format!("{label}: output differs\n{}", diff(&expected, &actual)))
        }
        (Err(TemplateError::Raised(actual)), _, true) => {
            let expected = read(&err);
            (actual != expected)
                .then(|| format!("{label}: raised {actual:?}, expected {expected:?}"))
        }
        (Ok(actual), false, true) => Some(format!(
            "{label}: expected raise_exception({:?}), rendered:\n{actual}",
            read(&err)
        )),
        (Err(e), _, _) => Some(format!("{label}: {e}")),
        (Ok(_), false, false) => Some(format!("{label}: no golden file {}", txt.display())),
    }
}

#[test]
fn golden_outputs_match_transformers_byte_for_byte() {
    let root = fixtures();
    let templates: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&read(&root.join("templates.json"))).expect("templates.json");
    let mut case_paths: Vec<PathBuf> = std::fs::read_dir(root.join("cases"))
        .expect("cases/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    case_paths.sort();
    assert!(case_paths.len() >= 10, "cases missing: {case_paths:?}");

    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, info) in &templates {
        let info: TemplateInfo = serde_json::from_value(info.clone()).expect("template info");
        let template = load_template(name, &info);
        for path in &case_paths {
            let case_name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("case name");
            let case: Case = serde_json::from_str(&read(path))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if let Some(failure) = check(name, &template, case_name, &case) {
                failures.push(failure);
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} renderings differ from the reference:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert_eq!(checked, templates.len() * case_paths.len());
    assert!(templates.len() >= 4);
}

fn render_one(
    source: &str,
    messages: &[Message],
    tools: &[ToolSpec],
) -> Result<String, TemplateError> {
    ChatTemplate::new(source, "<s>", "</s>")?.render(messages, tools, false)
}

#[test]
fn tojson_does_not_html_escape_and_keeps_key_order() {
    let tools = [ToolSpec::new(
        "t",
        "a <b> & 'c' é 中",
        json!({"type": "object", "z": 1, "a": [true, null, 1.5]}),
    )];
    let out = render_one("{{ tools[0] | tojson }}", &[], &tools).unwrap();
    assert_eq!(
        out,
        r#"{"type": "function", "function": {"name": "t", "description": "a <b> & 'c' é 中", "parameters": {"type": "object", "z": 1, "a": [true, null, 1.5]}}}"#
    );
    let out = render_one(
        "{{ tools[0].function.parameters | tojson(indent=1) }}",
        &[],
        &tools,
    )
    .unwrap();
    assert_eq!(
        out,
        "{\n \"type\": \"object\",\n \"z\": 1,\n \"a\": [\n  true,\n  null,\n  1.5\n ]\n}"
    );
    let out = render_one("{{ 'é\"\\\\' | tojson(ensure_ascii=true) }}", &[], &[]).unwrap();
    assert_eq!(out, r#""\u00e9\"\\""#);
    let err = render_one("{{ x | tojson }}", &[], &[]).unwrap_err();
    assert!(matches!(err, TemplateError::Render { .. }), "{err}");
    let err = render_one("{{ 1 | tojson(bogus=1) }}", &[], &[]).unwrap_err();
    assert!(matches!(err, TemplateError::Render { .. }), "{err}");
}

#[test]
fn raise_exception_gives_raised() {
    let source = "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools here: ' + m.name) }}{% endif %}{% endfor %}";
    let err = render_one(
        source,
        &[Message::user("hi"), Message::tool("42", "calc")],
        &[],
    )
    .unwrap_err();
    assert_eq!(err, TemplateError::Raised("no tools here: calc".into()));
    assert_eq!(
        err.to_string(),
        "chat template raised an exception: no tools here: calc"
    );
    // Also from inside a macro.
    let source = "{% macro check() %}{{ raise_exception('nope') }}{% endmacro %}{{ check() }}";
    assert_eq!(
        render_one(source, &[], &[]).unwrap_err(),
        TemplateError::Raised("nope".into())
    );
}

#[test]
fn syntax_errors_report_the_line() {
    let err = ChatTemplate::new("line one\n{% if x %}\nthree\n{% endfor %}\n", "", "").unwrap_err();
    match &err {
        TemplateError::Syntax { line, detail } => {
            assert_eq!(*line, 4, "{err}");
            assert!(!detail.is_empty());
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.starts_with("chat template syntax error on line 4: "),
        "{message}"
    );
    assert!(!message.contains('\n'));
}

#[test]
fn render_errors_are_one_line_with_location() {
    let err = render_one(
        "a\n{{ messages[0].content.nope() }}",
        &[Message::user("x")],
        &[],
    )
    .unwrap_err();
    let TemplateError::Render { detail } = &err else {
        panic!("expected a render error, got {err:?}");
    };
    assert!(detail.contains("line") || detail.contains(":2"), "{detail}");
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn context_matches_hugging_face() {
    // No tools: `tools` is none (defined), so both idioms work.
    let source = "{{ tools is none }} {{ tools is defined }} {% if tools %}T{% else %}F{% endif %} {{ documents is none }} {{ bos_token }}{{ eos_token }} {{ add_generation_prompt }}";
    assert_eq!(
        render_one(source, &[], &[]).unwrap(),
        "True True F True <s></s> False"
    );
    let tools = [ToolSpec::new("a", "b", json!({}))];
    assert_eq!(
        render_one("{% if tools %}{{ tools | length }}{% endif %}", &[], &tools).unwrap(),
        "1"
    );

    // Messages: missing keys are undefined (lenient), tool calls are OpenAI-shaped.
    let call = ToolCall::new("f", json!({"x": 1})).with_id("c1");
    let messages = [
        Message::user("u"),
        Message::assistant_with_tool_calls("", vec![call.clone()]),
        Message::tool_result("r", &call),
    ];
    let source = "{% for m in messages %}{{ m | tojson }}|{{ m.tool_calls is defined }}|{{ m.nothing }}\n{% endfor %}";
    assert_eq!(
        render_one(source, &messages, &[]).unwrap(),
        concat!(
            r#"{"role": "user", "content": "u"}|False|"#,
            "\n",
            r#"{"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]}|True|"#,
            "\n",
            r#"{"role": "tool", "content": "r", "tool_call_id": "c1", "name": "f"}|False|"#,
            "\n"
        )
    );
}

#[test]
fn python_methods_and_strftime_now() {
    let source = "{{ '  a b  '.strip() }}|{{ 'abc'.startswith('ab') }}|{{ 'a,b'.split(',') | join('+') }}|{% for k, v in messages[0].items() %}{{ k }}={{ v }};{% endfor %}|{{ strftime_now('%Y') | length }}";
    assert_eq!(
        render_one(source, &[Message::system("s")], &[]).unwrap(),
        "a b|True|a+b|role=system;content=s;|4"
    );
}

#[test]
fn render_with_passes_extra_variables() {
    let template =
        ChatTemplate::new("{{ enable_thinking }} {{ messages | length }}", "", "").unwrap();
    let mut extra = serde_json::Map::new();
    extra.insert("enable_thinking".into(), json!(false));
    extra.insert(
        "messages".into(),
        json!("ignored: the standard variable wins"),
    );
    let out = template
        .render_with(&[Message::user("x")], &[], false, &extra)
        .unwrap();
    assert_eq!(out, "False 1");
}

#[test]
fn chatml_fallback_renders_plain_chatml() {
    let template = ChatTemplate::chatml();
    let out = template
        .render(
            &[Message::user("Hi"), Message::assistant("Hello")],
            &[],
            false,
        )
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
    );
}

#[test]
fn chat_types_serialize_flat() {
    assert_eq!(
        serde_json::to_string(&Role::Assistant).unwrap(),
        r#""assistant""#
    );
    let call = ToolCall::new("f", json!({"a": 1}));
    let message = Message::assistant_with_tool_calls("thinking", vec![call]);
    let text = serde_json::to_string(&message).unwrap();
    assert_eq!(
        text,
        r#"{"role":"assistant","content":"thinking","tool_calls":[{"name":"f","arguments":{"a":1}}]}"#
    );
    let back: Message = serde_json::from_str(&text).unwrap();
    assert_eq!(back, message);
    let tool: Message =
        serde_json::from_str(r#"{"role":"tool","content":"ok","tool_call_id":"1"}"#).unwrap();
    assert_eq!(tool, Message::new(Role::Tool, "ok").with_tool_call_id("1"));
    let spec = ToolSpec::new("n", "d", json!({"type": "object"}));
    assert_eq!(
        spec.to_template_json(),
        json!({"type": "function", "function": {"name": "n", "description": "d", "parameters": {"type": "object"}}})
    );
}

#[test]
fn chat_template_is_send_sync_clone() {
    fn assert_traits<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_traits::<ChatTemplate>();
    assert_traits::<TemplateError>();
}
