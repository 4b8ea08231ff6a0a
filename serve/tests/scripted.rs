//! `serve` on a scripted [`BranchedSession`]: real HTTP on 127.0.0.1, a backend
//! whose replies the test writes. What the server decides (slots, prepared prompts,
//! calls, choices, errors) is checked without a model; `tests/serve.rs` at the root
//! runs the same server on the real one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use jielong_chat::branched::common_prefix_len;
use jielong_chat::{
    call_check, BranchId, BranchReply, BranchUsage, BranchedSession, Chat, Completion,
    FinishReason, GenerateRequest, Generation, KvUsage, ModelInfo, PreparedPrompt, ReplyFormat,
    RuntimeError, ToolCallFormat, ToolSpec, Unenforceable, Usage,
};
use jielong_serve::{ServeConfig, ServeState};
use serde_json::{json, Value};

/// A backend that renders chats as plain text, counts each character as a token and
/// answers from a script.
struct Scripted {
    n_ctx: u32,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// What each live branch holds.
    branches: HashMap<BranchId, Vec<i32>>,
    /// Replies to hand out, in order ("ok" when none is left).
    script: VecDeque<String>,
    /// Prompts prepared (rendered and tokenized).
    prepared: usize,
    /// The branch and prompt of every reply.
    replies: Vec<(BranchId, String)>,
}

impl Scripted {
    fn new(n_ctx: u32, script: &[&str]) -> Arc<Self> {
        let mut state = State::default();
        state.branches.insert(BranchId::MAIN, Vec::new());
        state.script = script.iter().map(|s| s.to_string()).collect();
        Arc::new(Self {
            n_ctx,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tokens(text: &str) -> Vec<i32> {
        text.chars().map(|c| c as i32).collect()
    }

    /// One reply on `branch` from `prompt`: the branch then holds the prompt and the
    /// reply (published before the reply's last event, as the contract says).
    fn reply(
        &self,
        branch: BranchId,
        prompt: &PreparedPrompt,
        max_tokens: usize,
        text: String,
    ) -> Result<Generation, RuntimeError> {
        let mut state = self.lock();
        let held = state
            .branches
            .get(&branch)
            .ok_or_else(|| RuntimeError::InvalidRequest(format!("no branch {branch}")))?;
        let reused = common_prefix_len(held, &prompt.tokens);
        let (text, finish) = if text.chars().count() > max_tokens {
            let cut: String = text.chars().take(max_tokens).collect();
            (cut, FinishReason::MaxTokens)
        } else {
            (text, FinishReason::EndOfText)
        };
        let mut holds = prompt.tokens.clone();
        holds.extend(Self::tokens(&text));
        state.branches.insert(branch, holds);
        state.replies.push((branch, prompt.text.clone()));
        let usage = Usage {
            prompt_tokens: prompt.len(),
            cached_tokens: reused,
            evaluated_tokens: prompt.len() - reused,
            generated_tokens: text.chars().count(),
            ..Usage::default()
        };
        let (tx, generation) = Generation::channel();
        tx.text(text.clone());
        tx.done(Ok(Completion::new(text, finish, usage)));
        Ok(generation)
    }
}

impl BranchedSession for Scripted {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: "scripted".into(),
            path: None,
            architecture: "script".into(),
            context_length: self.n_ctx,
            parameters: 0,
            size_bytes: 0,
            has_own_template: false,
            tool_call_format: ToolCallFormat::Hermes,
        }
    }

    fn context_size(&self) -> u32 {
        self.n_ctx
    }

    fn call_format(&self) -> ToolCallFormat {
        ToolCallFormat::Hermes
    }

    fn prepare(&self, chat: &Chat) -> Result<PreparedPrompt, RuntimeError> {
        let mut text = String::new();
        if !chat.tools.is_empty() {
            let names: Vec<&str> = chat.tools.iter().map(|t| t.name.as_str()).collect();
            text.push_str(&format!("<|tools|>{}\n", names.join(",")));
        }
        for message in &chat.messages {
            text.push_str(&format!("<|{:?}|>{}\n", message.role, message.content));
        }
        text.push_str("<|Assistant|>");
        self.prepare_text(&text)
    }

    fn prepare_text(&self, text: &str) -> Result<PreparedPrompt, RuntimeError> {
        self.lock().prepared += 1;
        if text.is_empty() {
            return Err(RuntimeError::EmptyPrompt);
        }
        Ok(PreparedPrompt {
            text: text.to_string(),
            tokens: Self::tokens(text),
        })
    }

    fn check_schemas(
        &self,
        tools: &[ToolSpec],
        _format: Option<&ReplyFormat>,
    ) -> Result<(), Unenforceable> {
        match tools
            .iter()
            .position(|t| t.name.starts_with("unenforceable"))
        {
            Some(index) => Err(Unenforceable::Tool {
                index,
                name: tools[index].name.clone(),
                reason: "the scripted backend has no grammar for it".into(),
            }),
            None => Ok(()),
        }
    }

    fn respond_on(&self, jobs: &[BranchReply<'_>]) -> Result<Vec<Generation>, RuntimeError> {
        let mut generations = Vec::with_capacity(jobs.len());
        for job in jobs {
            job.request.validate(job.chat)?;
            let text = self
                .lock()
                .script
                .pop_front()
                .unwrap_or_else(|| "ok".into());
            let generation = self.reply(job.branch, job.prompt, job.request.max_tokens, text)?;
            let tools = job.request.callable(job.chat);
            generations.push(generation.parsing(
                ToolCallFormat::Hermes,
                (!tools.is_empty()).then(|| call_check(tools)),
            ));
        }
        Ok(generations)
    }

    fn generate_on(
        &self,
        branch: BranchId,
        prompt: &PreparedPrompt,
        request: &GenerateRequest,
    ) -> Result<Generation, RuntimeError> {
        self.reply(branch, prompt, request.max_tokens, " and so on.".into())
    }

    fn fork(&self, from: BranchId, n: usize) -> Result<Vec<BranchId>, RuntimeError> {
        let mut state = self.lock();
        let held = state
            .branches
            .get(&from)
            .cloned()
            .ok_or_else(|| RuntimeError::InvalidRequest(format!("no branch {from}")))?;
        let mut ids = Vec::with_capacity(n);
        let mut next = 1;
        while ids.len() < n {
            let id = BranchId(next);
            next += 1;
            if let std::collections::hash_map::Entry::Vacant(free) = state.branches.entry(id) {
                free.insert(held.clone());
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn drop_branch(&self, branch: BranchId) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        if branch == BranchId::MAIN {
            state.branches.insert(branch, Vec::new());
        } else {
            state.branches.remove(&branch);
        }
        Ok(())
    }

    fn kv_usage(&self) -> Result<KvUsage, RuntimeError> {
        let state = self.lock();
        let mut branches: Vec<BranchUsage> = state
            .branches
            .iter()
            .map(|(&id, tokens)| BranchUsage {
                id,
                tokens: tokens.len(),
                shared: 0,
            })
            .collect();
        branches.sort_by_key(|b| b.id);
        Ok(KvUsage {
            context: self.n_ctx,
            cells: branches.iter().map(|b| b.tokens).sum(),
            branches,
        })
    }

    fn holds(&self, branch: BranchId) -> Vec<i32> {
        self.lock()
            .branches
            .get(&branch)
            .cloned()
            .unwrap_or_default()
    }
}

/// A server on 127.0.0.1 over `backend`; its base URL.
async fn start(backend: Arc<Scripted>, parallel: usize) -> String {
    let config = ServeConfig {
        parallel,
        ..ServeConfig::new("scripted")
    };
    let state = ServeState::open(backend, config).expect("the server opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("an address");
    tokio::spawn(jielong_serve::serve(
        listener,
        state,
        std::future::pending(),
    ));
    format!("http://{address}")
}

/// POSTs `body` to `path`; the status and the body as JSON (or text as a JSON string).
async fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("a response");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// A counter's value in `/metrics`.
async fn metric(base: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("a body");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }})
}

/// One case: the script, the request, and what the reply's first choice must say.
struct Case {
    name: &'static str,
    script: &'static [&'static str],
    request: Value,
    status: u16,
    /// A JSON pointer into the reply and the value expected there.
    expect: Vec<(&'static str, Value)>,
}

async fn check(case: Case) {
    let backend = Scripted::new(4096, case.script);
    let base = start(backend.clone(), 2).await;
    let (status, body) = post(&base, "/v1/chat/completions", &case.request).await;
    assert_eq!(status, case.status, "{}: {body}", case.name);
    for (pointer, want) in &case.expect {
        assert_eq!(
            body.pointer(pointer),
            Some(want),
            "{}: {pointer} in {body}",
            case.name
        );
    }
    // However the reply was decided, the request's prompt was prepared once (a redo
    // on the same chat reuses it).
    assert_eq!(
        metric(&base, "jielong_prompts_prepared_total").await,
        1,
        "{}",
        case.name
    );
    assert_eq!(backend.lock().prepared, 1, "{}", case.name);
    // Streamed, the same script gives the same message.
    let streamed = Scripted::new(4096, case.script);
    let base = start(streamed, 2).await;
    let mut request = case.request.clone();
    request["stream"] = json!(true);
    let (status, sse) = post(&base, "/v1/chat/completions", &request).await;
    assert_eq!(status, case.status, "{}: {sse}", case.name);
    if status == 200 {
        let whole = &body["choices"][0];
        let message = |m: &Value| {
            let calls: Vec<(Value, Value)> = m["tool_calls"]
                .as_array()
                .map(|calls| {
                    calls
                        .iter()
                        .map(|c| {
                            (
                                c["function"]["name"].clone(),
                                c["function"]["arguments"].clone(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (m["content"].clone(), calls)
        };
        let assembled = assemble(sse.as_str().unwrap_or_default());
        assert_eq!(
            message(&assembled["message"]),
            message(&whole["message"]),
            "{}: streamed {assembled} whole {whole}",
            case.name
        );
        assert_eq!(
            assembled["finish_reason"], whole["finish_reason"],
            "{}",
            case.name
        );
    }
}

/// The first choice of an SSE chat stream put together: its message (content, calls)
/// and finish reason.
fn assemble(sse: &str) -> Value {
    let mut content: Option<String> = None;
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut finish = Value::Null;
    let chunks = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok());
    for chunk in chunks {
        let choice = &chunk["choices"][0];
        if let Some(text) = choice["delta"]["content"].as_str() {
            content.get_or_insert_with(String::new).push_str(text);
        }
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().unwrap_or(0) as usize;
            if calls.len() <= index {
                calls.resize(index + 1, Default::default());
            }
            if let Some(name) = call["function"]["name"].as_str() {
                calls[index].0.push_str(name);
            }
            if let Some(arguments) = call["function"]["arguments"].as_str() {
                calls[index].1.push_str(arguments);
            }
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    // A stream opens with empty content; a reply of only calls has none.
    let content = content.filter(|c| !c.is_empty() || calls.is_empty());
    let calls: Vec<Value> = calls
        .into_iter()
        .map(|(name, arguments)| json!({"function": {"name": name, "arguments": arguments}}))
        .collect();
    let mut message = json!({"content": content});
    if !calls.is_empty() {
        message["tool_calls"] = json!(calls);
    }
    json!({"message": message, "finish_reason": finish})
}

fn ask(content: &str, tools: bool) -> Value {
    let mut request = json!({
        "model": "scripted",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 256,
    });
    if tools {
        request["tools"] = json!([weather_tool()]);
    }
    request
}

#[tokio::test]
async fn replies_are_decided_on_the_seam() {
    let cases = [
        Case {
            name: "prose",
            script: &["Paris is the capital."],
            request: ask("What is the capital of France?", false),
            status: 200,
            expect: vec![
                ("/choices/0/message/content", json!("Paris is the capital.")),
                ("/choices/0/finish_reason", json!("stop")),
            ],
        },
        Case {
            name: "a native call",
            script: &[
                r#"<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>"#,
            ],
            request: ask("Weather in Paris?", true),
            status: 200,
            expect: vec![
                (
                    "/choices/0/message/tool_calls/0/function/name",
                    json!("get_weather"),
                ),
                (
                    "/choices/0/message/tool_calls/0/function/arguments",
                    json!(r#"{"city":"Paris"}"#),
                ),
                ("/choices/0/finish_reason", json!("tool_calls")),
            ],
        },
        Case {
            name: "a call written as JSON text",
            script: &[r#"{"name": "get_weather", "arguments": {"city": "Oslo"}}"#],
            request: ask("Weather in Oslo?", true),
            status: 200,
            expect: vec![
                (
                    "/choices/0/message/tool_calls/0/function/name",
                    json!("get_weather"),
                ),
                ("/choices/0/finish_reason", json!("tool_calls")),
            ],
        },
        Case {
            name: "a meant call that cannot be taken is generated again, call required",
            script: &[
                r#"{"name": "get_weather", "arguments": {"city": 12 * 3}}"#,
                r#"<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>"#,
            ],
            request: ask("Weather in Rome?", true),
            status: 200,
            expect: vec![
                (
                    "/choices/0/message/tool_calls/0/function/arguments",
                    json!(r#"{"city":"Rome"}"#),
                ),
                ("/usage/completion_tokens", json!(54 + 77)),
            ],
        },
        Case {
            name: "cut by the budget",
            script: &["one two three four five six seven eight nine ten eleven twelve thirteen"],
            request: json!({"model": "scripted", "max_tokens": 7,
                "messages": [{"role": "user", "content": "Count."}]}),
            status: 200,
            expect: vec![
                ("/choices/0/message/content", json!("one two")),
                ("/choices/0/finish_reason", json!("length")),
            ],
        },
    ];
    for case in cases {
        check(case).await;
    }
}

#[tokio::test]
async fn refusals_name_the_field() {
    let backend = Scripted::new(64, &[]);
    let base = start(backend.clone(), 1).await;
    let mut request = ask("Weather?", true);
    request["tools"][0]["function"]["name"] = json!("unenforceable_tool");
    let (status, body) = post(&base, "/v1/chat/completions", &request).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body.pointer("/error/param"),
        Some(&json!("tools[0].function.parameters")),
        "{body}"
    );
    let long = "word ".repeat(40);
    let (status, body) = post(&base, "/v1/chat/completions", &ask(&long, false)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body.pointer("/error/code"),
        Some(&json!("context_length_exceeded")),
        "{body}"
    );
    assert!(
        backend.lock().replies.is_empty(),
        "nothing refused reached a branch"
    );
}

#[tokio::test]
async fn choices_share_one_prepared_prompt() {
    let backend = Scripted::new(4096, &["First.", "Second.", "Third."]);
    let base = start(backend.clone(), 1).await;
    let mut request = ask("Say something.", false);
    request["n"] = json!(3);
    let (status, body) = post(&base, "/v1/chat/completions", &request).await;
    assert_eq!(status, 200, "{body}");
    let texts: Vec<&str> = (0..3)
        .filter_map(|i| {
            body.pointer(&format!("/choices/{i}/message/content"))?
                .as_str()
        })
        .collect();
    assert_eq!(texts, ["First.", "Second.", "Third."], "{body}");
    assert_eq!(metric(&base, "jielong_prompts_prepared_total").await, 1);
    let state = backend.lock();
    let branches: Vec<BranchId> = state.replies.iter().map(|(b, _)| *b).collect();
    assert_eq!(branches.len(), 4, "a prefill and three choices");
    let mut distinct = branches[1..].to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "each choice on its own branch: {branches:?}"
    );
    // The temporary branches are gone again: the main branch and the one slot stay.
    assert_eq!(state.branches.len(), 2);
}

#[tokio::test]
async fn a_conversation_comes_back_to_the_branch_that_holds_it() {
    let backend = Scripted::new(4096, &["Hello Ann.", "Hello Bob.", "You are Ann."]);
    let base = start(backend.clone(), 2).await;
    let ann = json!([{"role": "user", "content": "I am Ann."}]);
    let (_, first) = post(
        &base,
        "/v1/chat/completions",
        &json!({"model": "scripted", "messages": ann}),
    )
    .await;
    let (_, _) = post(
        &base,
        "/v1/chat/completions",
        &json!({"model": "scripted", "messages": [{"role": "user", "content": "I am Bob."}]}),
    )
    .await;
    let mut again = ann.as_array().cloned().unwrap_or_default();
    again
        .push(json!({"role": "assistant", "content": first.pointer("/choices/0/message/content")}));
    again.push(json!({"role": "user", "content": "Who am I?"}));
    let (status, body) = post(
        &base,
        "/v1/chat/completions",
        &json!({"model": "scripted", "messages": again}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let state = backend.lock();
    let on: Vec<BranchId> = state.replies.iter().map(|(b, _)| *b).collect();
    assert_ne!(on[0], on[1], "Bob took the other slot");
    assert_eq!(on[2], on[0], "Ann came back to hers");
    let cached = body
        .pointer("/usage/prompt_tokens_details/cached_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    // "<|User|>I am Ann.\n<|Assistant|>Hello Ann." is held.
    assert_eq!(cached, 41, "{body}");
}

#[tokio::test]
async fn text_completions_and_streams_run_on_the_seam() {
    let backend = Scripted::new(
        4096,
        &[r#"<tool_call>{"name": "get_weather", "arguments": {"city": "Lima"}}</tool_call>"#],
    );
    let base = start(backend.clone(), 1).await;
    let (status, body) = post(
        &base,
        "/v1/completions",
        &json!({"model": "scripted", "prompt": "Once upon a time", "max_tokens": 8}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.pointer("/choices/0/text"), Some(&json!(" and so ")));
    let mut request = ask("Weather in Lima?", true);
    request["stream"] = json!(true);
    let (status, body) = post(&base, "/v1/chat/completions", &request).await;
    assert_eq!(status, 200, "{body}");
    let text = body.as_str().unwrap_or_default();
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let name = chunks
        .iter()
        .find_map(|c| c.pointer("/choices/0/delta/tool_calls/0/function/name"));
    assert_eq!(name, Some(&json!("get_weather")), "{text}");
    let finish = chunks.iter().find_map(|c| {
        c.pointer("/choices/0/finish_reason")
            .filter(|f| !f.is_null())
    });
    assert_eq!(finish, Some(&json!("tool_calls")), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(metric(&base, "jielong_prompts_prepared_total").await, 2);
}
