//! Grammar-constrained tool calls on the real models: once a call opens, decoding is
//! restricted to the allowed tools' schemas, so every call parses and validates.

mod common;

use common::{model, model_lock, QWEN, SMOLLM};
use jielong::chat::{ParsedEvent, ToolCallFormat, ToolChoice, ToolConstraint};
use jielong::{GenerateRequest, Message, SamplingParams, SessionOptions, ToolCall, ToolSpec};
use serde_json::{json, Value};

fn python_tool() -> ToolSpec {
    ToolSpec {
        name: "python".into(),
        description: "Run Python code and return what it prints.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"code": {"type": "string", "description": "Python code to run", "maxLength": 120}},
            "required": ["code"]
        }),
    }
}

/// Splits a reply into its calls and problems (malformed blocks).
fn calls_in(format: ToolCallFormat, text: &str) -> (Vec<ToolCall>, Vec<String>) {
    let mut parser = format.parser();
    let mut events = parser.push(text);
    events.extend(parser.finish());
    let mut calls = Vec::new();
    let mut problems = Vec::new();
    for e in events {
        match e {
            ParsedEvent::Call(c) => calls.push(c),
            ParsedEvent::Malformed { raw, error } => problems.push(format!("{error}: {raw}")),
            _ => {}
        }
    }
    (calls, problems)
}

#[test]
fn qwen_calls_python_with_valid_arguments() {
    let _lock = model_lock();
    let m = model(QWEN);
    let format = m.info().tool_call_format;
    let tools = vec![python_tool()];
    let prompt = m
        .chat_template()
        .render(
            &[
                Message::system("You are a helpful assistant. You can call tools. To call a tool, reply with <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call> and nothing else; the result comes back to you."),
                Message::user("What is 12345 * 6789? Use the python tool to compute it."),
            ],
            &tools,
            true,
        )
        .unwrap();
    let session = m.session(&SessionOptions::default()).unwrap();
    let request = GenerateRequest {
        max_tokens: 120,
        tools: Some(ToolConstraint::new(
            format,
            tools.clone(),
            ToolChoice::Required,
        )),
        ..GenerateRequest::default()
    };
    let done = session
        .generate(&prompt, &request)
        .unwrap()
        .wait(|_| {})
        .unwrap();
    let (calls, problems) = calls_in(format, &done.text);
    assert!(problems.is_empty(), "{problems:?}\n{}", done.text);
    assert_eq!(calls.len(), 1, "{}", done.text);
    assert_eq!(calls[0].name, "python");
    let code = calls[0].arguments["code"].as_str().unwrap();
    assert!(code.contains("12345") && code.contains("6789"), "{code}");
}

/// Tool sets with bounded argument sizes (so any valid call fits the token budget).
fn toolsets() -> Vec<Vec<ToolSpec>> {
    let spec = |name: &str, description: &str, parameters: Value| ToolSpec {
        name: name.into(),
        description: description.into(),
        parameters,
    };
    vec![
        vec![python_tool()],
        vec![
            spec(
                "get_weather",
                "Current weather for a city.",
                json!({"type": "object", "properties": {
                    "city": {"type": "string", "maxLength": 24},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                }, "required": ["city"]}),
            ),
            spec(
                "calculator",
                "Apply an arithmetic operation to two integers.",
                json!({"type": "object", "properties": {
                    "a": {"type": "integer", "minimum": -100000, "maximum": 100000},
                    "b": {"type": "integer", "minimum": -100000, "maximum": 100000},
                    "op": {"type": "string", "enum": ["add", "sub", "mul", "div"]}
                }, "required": ["a", "b", "op"]}),
            ),
        ],
        vec![
            spec(
                "web_search",
                "Search the web.",
                json!({"type": "object", "properties": {
                    "query": {"type": "string", "maxLength": 40},
                    "max_results": {"type": "integer", "minimum": 1, "maximum": 10}
                }, "required": ["query"]}),
            ),
            spec(
                "set_alarm",
                "Set an alarm.",
                json!({"type": "object", "properties": {
                    "hour": {"type": "integer", "minimum": 0, "maximum": 23},
                    "minute": {"type": "integer", "minimum": 0, "maximum": 59},
                    "label": {"type": "string", "maxLength": 16},
                    "repeat": {"type": "boolean"},
                    "days": {"type": "array", "items": {"type": "string", "enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}, "maxItems": 3}
                }, "required": ["hour", "minute"]}),
            ),
            spec(
                "send_email",
                "Send a short email.",
                json!({"type": "object", "properties": {
                    "to": {"type": "string", "maxLength": 32},
                    "subject": {"type": "string", "maxLength": 24},
                    "urgent": {"type": "boolean"}
                }, "required": ["to", "subject"]}),
            ),
        ],
    ]
}

const PROMPTS: [&str; 7] = [
    "What is 12345 * 6789?",
    "What's the weather like in Paris today?",
    "Wake me up at 6:30 on weekdays.",
    "Find recent news about the Rust programming language.",
    "Email bob@example.com that the meeting moved to Friday.",
    "Compute the sum of the squares of 1 to 100.",
    "How much is 2 to the power of 20, minus 17?",
];

/// Over 200 sampled generations (both catalog models, seven prompts, three tool sets,
/// temperature 1.0 with top-k 40 and distinct seeds, forked in parallel from one prompt), every call
/// the model completes parses and validates against its tool's schema.
#[test]
fn two_hundred_constrained_generations_all_parse_and_validate() {
    let _lock = model_lock();
    let mut generations = 0;
    let mut calls = 0;
    let mut truncated = 0;
    let mut failures = Vec::new();
    for (name, forks) in [(QWEN, 2), (SMOLLM, 8)] {
        let m = model(name);
        let format = m.info().tool_call_format;
        let session = m
            .session(&SessionOptions {
                max_sequences: forks as u32 + 1,
                ..SessionOptions::default()
            })
            .unwrap();
        for (t, tools) in toolsets().into_iter().enumerate() {
            let validators: Vec<(String, jsonschema::Validator)> = tools
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        jsonschema::validator_for(&s.parameters).unwrap(),
                    )
                })
                .collect();
            let mut messages = vec![Message::system("You are a helpful assistant with tools.")];
            if !format.is_native() {
                messages[0].content.push('\n');
                messages[0]
                    .content
                    .push_str(&ToolCallFormat::generic_instructions(&tools));
            }
            for (p, prompt) in PROMPTS.iter().enumerate() {
                let mut conversation = messages.clone();
                conversation.push(Message::user(*prompt));
                let rendered = m
                    .chat_template()
                    .render(&conversation, &tools, true)
                    .unwrap();
                let requests: Vec<GenerateRequest> = (0..forks)
                    .map(|k| GenerateRequest {
                        max_tokens: 160,
                        sampling: SamplingParams {
                            temperature: 1.0,
                            top_k: 40,
                            top_p: 0.95,
                            min_p: 0.0,
                            seed: (t * 1000 + p * 10 + k) as u32,
                        },
                        tools: Some(ToolConstraint {
                            max_calls: 2,
                            ..ToolConstraint::new(format, tools.clone(), ToolChoice::Required)
                        }),
                        ..GenerateRequest::default()
                    })
                    .collect();
                let done = session
                    .generate_parallel(&rendered, &requests)
                    .unwrap()
                    .wait()
                    .unwrap();
                for completion in done {
                    generations += 1;
                    let (found, problems) = calls_in(format, &completion.text);
                    let cut = completion.finish == jielong::FinishReason::MaxTokens;
                    for problem in &problems {
                        if cut && problem.starts_with("the call was not finished") {
                            truncated += 1;
                        } else {
                            failures.push(format!("{name} {prompt:?}: {problem}"));
                        }
                    }
                    if found.is_empty() && problems.is_empty() {
                        failures.push(format!(
                            "{name} {prompt:?}: no call in {:?}",
                            completion.text
                        ));
                    }
                    for call in found {
                        calls += 1;
                        match validators.iter().find(|(n, _)| *n == call.name) {
                            None => failures.push(format!("{name}: unknown tool {}", call.name)),
                            Some((_, v)) => {
                                if let Err(e) = v.validate(&call.arguments) {
                                    failures.push(format!(
                                        "{name}: {} {}: {e}",
                                        call.name, call.arguments
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    eprintln!("{generations} generations, {calls} calls, {truncated} cut by the token budget");
    assert!(generations >= 200, "only {generations} generations");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        truncated * 20 <= generations,
        "{truncated} of {generations} ran out of tokens inside a call"
    );
}
