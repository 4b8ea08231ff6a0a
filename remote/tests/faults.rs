//! The remote backend against a scripted loopback HTTP server: a good streamed reply
//! (text, a tool call split across deltas, log-probabilities, usage), and every fault
//! typed, on one line and naming the URL: unreachable, unauthorized, unknown model,
//! retried 5xx and 429 (`Retry-After`), a stream cut short, a malformed chunk, time-outs,
//! calls that break their schema, cancellation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jielong_chat::{
    Chat, ChatRequest, Completion, FinishReason, Generation, GenerationEvent, LanguageModel,
    Message, ModelSession, RemoteFault, RuntimeError, SessionOptions, ToolCall, ToolSpec,
};
use jielong_remote::{RemoteConfig, RemoteModel, RetryPolicy};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------
// The scripted server.

/// A request the server received.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("the request body is JSON")
    }
}

/// How the stream ends.
#[derive(Debug, Clone, Copy)]
enum End {
    /// The last chunk of the chunked body: a proper end.
    Clean,
    /// The connection closes in the middle of the body.
    Abort,
}

/// What the server answers.
#[derive(Debug, Clone)]
enum Reply {
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// `200 text/event-stream`, each piece after its delay.
    Stream {
        pieces: Vec<(Duration, String)>,
        end: End,
    },
    /// Waits before answering.
    Delay(Duration, Box<Reply>),
}

type Script = dyn Fn(&Request, usize) -> Reply + Send + Sync;

/// A loopback server answering each request with `script(request, n)`, `n` counting
/// the earlier requests to the same path.
struct Server {
    base: String,
    requests: Arc<Mutex<Vec<Request>>>,
    /// Streams whose writes failed: the client went away.
    broken: Arc<AtomicUsize>,
}

impl Server {
    async fn start(script: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let broken = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let (r, b) = (requests.clone(), broken.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (script, requests, broken) = (script.clone(), r.clone(), b.clone());
                tokio::spawn(async move {
                    handle(socket, script, requests, broken).await;
                });
            }
        });
        Server {
            base: format!("http://127.0.0.1:{port}/v1"),
            requests,
            broken,
        }
    }

    fn requests_to(&self, path: &str) -> Vec<Request> {
        let requests = self.requests.lock().expect("requests");
        requests
            .iter()
            .filter(|r| r.path.ends_with(path))
            .cloned()
            .collect()
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// A config for this server and model `qwen`, with quick retries.
    fn config(&self) -> RemoteConfig {
        RemoteConfig::new(&self.base, "qwen")
            .expect("a good config")
            .with_retry(RetryPolicy {
                retries: 3,
                initial_backoff: Duration::from_millis(10),
                max_wait: Duration::from_secs(3),
            })
    }
}

async fn handle(
    mut socket: TcpStream,
    script: Arc<Script>,
    requests: Arc<Mutex<Vec<Request>>>,
    broken: Arc<AtomicUsize>,
) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    let n = {
        let mut all = requests.lock().expect("requests");
        let n = all.iter().filter(|r| r.path == request.path).count();
        all.push(request.clone());
        n
    };
    let mut reply = script(&request, n);
    while let Reply::Delay(wait, next) = reply {
        tokio::time::sleep(wait).await;
        reply = *next;
    }
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                reason(status),
                body.len()
            );
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                head.push_str("Content-Type: application/json\r\n");
            }
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
        Reply::Stream { pieces, end } => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for (wait, piece) in pieces {
                tokio::time::sleep(wait).await;
                let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
                let sent = async {
                    socket.write_all(chunk.as_bytes()).await?;
                    socket.flush().await
                };
                if sent.await.is_err() {
                    broken.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            if let End::Clean = end {
                let _ = socket.write_all(b"0\r\n\r\n").await;
                let _ = socket.shutdown().await;
            }
            // Abort: the socket is dropped in the middle of the chunked body.
        }
        Reply::Delay(..) => unreachable!("delays are unwrapped above"),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

async fn read_request(socket: &mut TcpStream) -> Option<Request> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

// ---------------------------------------------------------------------------------
// Replies.

fn json_reply(status: u16, body: Value) -> Reply {
    Reply::Full {
        status,
        headers: Vec::new(),
        body: body.to_string(),
    }
}

/// llama-server's `/v1/models` for `ids`.
fn models(ids: &[&str]) -> Reply {
    let data: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({"id": id, "object": "model", "owned_by": "llamacpp",
                   "meta": {"n_ctx_train": 32768, "n_params": 494032768, "size": 491400032}})
        })
        .collect();
    json_reply(200, json!({"object": "list", "data": data}))
}

fn error_reply(status: u16, message: &str) -> Reply {
    json_reply(
        status,
        json!({"error": {"code": status, "message": message, "type": "server_error"}}),
    )
}

fn event(data: &Value) -> String {
    format!("data: {data}\n\n")
}

fn text_delta(text: &str) -> Value {
    json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
}

fn finish(reason: &str) -> Value {
    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
}

/// An SSE stream of these events, then `[DONE]`, all at once.
fn stream(events: &[Value]) -> Reply {
    let mut pieces: Vec<(Duration, String)> =
        events.iter().map(|e| (Duration::ZERO, event(e))).collect();
    pieces.push((Duration::ZERO, "data: [DONE]\n\n".into()));
    Reply::Stream {
        pieces,
        end: End::Clean,
    }
}

/// "Paris." in two deltas.
fn paris() -> Reply {
    stream(&[
        text_delta("Par"),
        text_delta("is."),
        finish("stop"),
        usage(12, 3),
    ])
}

/// The default script: `/models` lists `qwen`; chats get `chat(request, n)`.
async fn server_with(chat: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Server {
    Server::start(move |request, n| {
        if request.path.ends_with("/models") {
            models(&["qwen"])
        } else if request.path.ends_with("/chat/completions") {
            chat(request, n)
        } else {
            error_reply(404, "no such route")
        }
    })
    .await
}

// ---------------------------------------------------------------------------------
// Helpers.

fn python() -> ToolSpec {
    ToolSpec::new(
        "python",
        "Runs Python code and returns what it prints.",
        json!({"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"], "additionalProperties": false}),
    )
}

fn question() -> Chat {
    Chat::new(vec![Message::user("What is the capital of France?")])
}

/// Every event of a generation, and its result.
async fn collect(
    mut generation: Generation,
) -> (Vec<GenerationEvent>, Result<Completion, RuntimeError>) {
    let mut events = Vec::new();
    while let Some(event) = generation.next().await {
        if let GenerationEvent::Done(result) = event {
            return (events, result);
        }
        events.push(event);
    }
    panic!("the generation ended without Done");
}

fn text_of(events: &[GenerationEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            GenerationEvent::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// A session on a model connected to `server` with `config`.
async fn open(config: RemoteConfig) -> Box<dyn ModelSession> {
    let model = RemoteModel::connect(config).await.expect("connects");
    model
        .open_session(&SessionOptions::default())
        .expect("a session")
}

/// A reply of `chat` from `server` (default config).
async fn reply(
    server: &Server,
    chat: &Chat,
    request: &ChatRequest,
) -> (Vec<GenerationEvent>, Result<Completion, RuntimeError>) {
    let mut session = open(server.config()).await;
    collect(session.respond(chat, request).expect("the request starts")).await
}

/// `error` is a remote fault of `kind`, one line, naming `url` and containing `needle`.
fn assert_fault(error: &RuntimeError, kind: RemoteFault, url: &str, needle: &str) {
    let RuntimeError::Remote { kind: got, message } = error else {
        panic!("want a remote {kind:?} fault, got {error:?}");
    };
    eprintln!("{kind:?}: {message}");
    assert_eq!(*got, kind, "{message}");
    assert_eq!(error.to_string(), *message);
    assert!(!message.contains('\n'), "one line: {message:?}");
    assert!(message.contains(url), "{url:?} not in {message:?}");
    assert!(message.contains(needle), "{needle:?} not in {message:?}");
}

// ---------------------------------------------------------------------------------
// A good reply.

#[tokio::test]
async fn a_streamed_reply_carries_text_a_tool_call_logprobs_and_usage() {
    let lp = |token: &str, logprob: f32| {
        json!({"id": 1, "token": token, "bytes": [], "logprob": logprob,
               "top_logprobs": [{"id": 1, "token": token, "bytes": [], "logprob": logprob},
                                {"id": 2, "token": "x", "bytes": [], "logprob": -3.5}]})
    };
    let server = server_with(move |_, _| {
        stream(&[
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "Let me"}, "logprobs": {"content": [lp("Let", -0.1), lp(" me", -0.2)]}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {"content": " compute."}, "logprobs": {"content": [lp(" compute.", -0.3)]}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_7", "type": "function", "function": {"name": "python", "arguments": ""}}]}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"code\": \"print(12345"}}]}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": " * 6789)\"}"}}]}, "finish_reason": null}]}),
            finish("tool_calls"),
            json!({"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 25}},
                   "timings": {"cache_n": 25, "prompt_n": 15, "prompt_ms": 30.0, "predicted_n": 9, "predicted_ms": 90.0}}),
        ])
    })
    .await;
    let config = server.config().with_api_key("sk-test");
    let model = RemoteModel::connect(config).await.expect("connects");
    assert_eq!(model.info().name, "qwen");
    assert_eq!(model.info().architecture, "remote");
    assert_eq!(model.info().context_length, 32768);
    assert!(model.info().path.is_none());
    let caps = model.capabilities();
    assert!(!caps.grammar && caps.logprobs && !caps.scoring && !caps.raw_prompts);
    assert_eq!(caps.max_branches, 1);
    assert_eq!(model.available_models(), ["qwen".to_string()]);

    let call = ToolCall::new("python", json!({"code": "print(1)"})).with_id("call_1");
    let chat = Chat::new(vec![
        Message::system("You compute with Python."),
        Message::user("What is 1?"),
        Message::assistant_with_tool_calls("", vec![call.clone()]),
        Message::tool_result("1", &call),
        Message::user("And 12345 * 6789?"),
    ])
    .with_tools(vec![python()]);
    let request = ChatRequest {
        logprobs: Some(2),
        ..ChatRequest::new(100)
    };
    let mut session = model.session();
    let (events, result) = collect(session.respond(&chat, &request).expect("starts")).await;
    let completion = result.expect("a completion");

    assert_eq!(text_of(&events), "Let me compute.");
    let calls: Vec<&ToolCall> = events
        .iter()
        .filter_map(|e| match e {
            GenerationEvent::Call(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "{events:?}");
    assert_eq!(calls[0].id.as_deref(), Some("call_7"));
    assert_eq!(calls[0].name, "python");
    assert_eq!(calls[0].arguments, json!({"code": "print(12345 * 6789)"}));
    let started = events
        .iter()
        .position(|e| matches!(e, GenerationEvent::CallStarted))
        .expect("CallStarted");
    let called = events
        .iter()
        .position(|e| matches!(e, GenerationEvent::Call(_)))
        .expect("Call");
    assert!(started < called);
    let logprobs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            GenerationEvent::Logprob(l) => Some(l.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(logprobs.len(), 3);
    assert_eq!(logprobs[1].chosen.token, " me");
    assert_eq!(logprobs[1].chosen.logprob, -0.2);
    assert_eq!(logprobs[1].top.len(), 2);

    assert_eq!(completion.text, "Let me compute.");
    assert_eq!(completion.calls, vec![calls[0].clone()]);
    assert!(completion.malformed.is_empty());
    assert_eq!(completion.logprobs, logprobs);
    assert_eq!(completion.finish, FinishReason::EndOfText);
    let usage = &completion.usage;
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.evaluated_tokens,
            usage.generated_tokens
        ),
        (40, 25, 15, 9)
    );
    assert_eq!(usage.prompt_time, Duration::from_millis(30));
    assert_eq!(usage.generation_time, Duration::from_millis(90));

    // What was sent.
    let models = server.requests_to("/models");
    assert_eq!(models[0].method, "GET");
    assert_eq!(models[0].header("authorization"), Some("Bearer sk-test"));
    let chats = server.requests_to("/chat/completions");
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].method, "POST");
    assert_eq!(chats[0].path, "/v1/chat/completions");
    assert_eq!(chats[0].header("authorization"), Some("Bearer sk-test"));
    let body = chats[0].json();
    assert_eq!(body["model"], "qwen");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["max_tokens"], 100);
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["logprobs"], true);
    assert_eq!(body["top_logprobs"], 2);
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["function"]["name"], "python");
    let messages = body["messages"].as_array().expect("messages");
    let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
    assert_eq!(
        messages[2]["tool_calls"][0],
        json!({"id": "call_1", "type": "function", "function": {"name": "python", "arguments": "{\"code\":\"print(1)\"}"}})
    );
    assert_eq!(messages[3]["tool_call_id"], "call_1");
}

#[tokio::test]
async fn a_prefill_is_sent_as_the_final_assistant_message_and_its_echo_dropped() {
    // llama-server streams the continued message whole: the prefill comes back first.
    let server = server_with(|_, _| {
        stream(&[
            text_delta("The capital is Par"),
            text_delta("is."),
            finish("stop"),
        ])
    })
    .await;
    let chat = question().with_prefill("The capital is ");
    let (events, result) = reply(&server, &chat, &ChatRequest::new(8)).await;
    assert_eq!(result.expect("a completion").text, "Paris.");
    assert_eq!(
        text_of(&events),
        "Paris.",
        "the echoed prefill is not output"
    );
    let body = server.requests_to("/chat/completions")[0].json();
    let last = body["messages"].as_array().and_then(|m| m.last()).cloned();
    assert_eq!(
        last,
        Some(json!({"role": "assistant", "content": "The capital is "}))
    );
}

#[tokio::test]
async fn a_call_in_plain_content_is_split_out() {
    let server = server_with(|_, _| {
        stream(&[
            text_delta("I will compute.\n<tool_"),
            text_delta("call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print(2**10)\"}}\n</tool_call>"),
            finish("stop"),
            usage(20, 30),
        ])
    })
    .await;
    let chat = question().with_tools(vec![python()]);
    let (events, result) = reply(&server, &chat, &ChatRequest::default()).await;
    let completion = result.expect("a completion");
    assert_eq!(text_of(&events), "I will compute.\n");
    assert_eq!(completion.calls.len(), 1);
    assert_eq!(
        completion.calls[0].arguments,
        json!({"code": "print(2**10)"})
    );
    assert!(events.iter().any(|e| matches!(e, GenerationEvent::Call(_))));
}

#[tokio::test]
async fn calls_that_break_their_schema_are_malformed_with_the_reason() {
    let server = server_with(|_, _| {
        let call = |index: u32, name: &str, arguments: &str| {
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": index, "id": format!("c{index}"), "type": "function", "function": {"name": name, "arguments": arguments}}]}, "finish_reason": null}]})
        };
        stream(&[
            call(0, "python", "{\"source\": \"print(1)\"}"),
            call(1, "shell", "{\"cmd\": \"ls\"}"),
            call(2, "python", "{\"code\": \"print(1)"),
            finish("tool_calls"),
        ])
    })
    .await;
    let chat = question().with_tools(vec![python()]);
    let (events, result) = reply(&server, &chat, &ChatRequest::default()).await;
    let completion = result.expect("a completion");
    assert!(completion.calls.is_empty(), "{:?}", completion.calls);
    let bad: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            GenerationEvent::Malformed(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(bad.len(), 3, "{events:?}");
    assert!(
        bad[0].error.contains("do not match its schema"),
        "{}",
        bad[0].error
    );
    assert!(bad[0].raw.contains("\"source\""), "{}", bad[0].raw);
    assert!(
        bad[1].error.contains("unknown tool `shell`"),
        "{}",
        bad[1].error
    );
    assert!(bad[2].error.contains("not valid JSON"), "{}", bad[2].error);
    assert_eq!(completion.malformed, bad);
}

#[tokio::test]
async fn length_is_max_tokens() {
    let server = server_with(|_, _| stream(&[text_delta("Par"), finish("length")])).await;
    let (_, result) = reply(&server, &question(), &ChatRequest::new(1)).await;
    let completion = result.expect("a completion");
    assert_eq!(completion.finish, FinishReason::MaxTokens);
    // No usage chunk: generated tokens are estimated from the deltas.
    assert_eq!(completion.usage.generated_tokens, 1);
}

// ---------------------------------------------------------------------------------
// Faults at connect.

#[tokio::test]
async fn connection_refused_is_unreachable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let base = format!("http://127.0.0.1:{port}/v1");
    let config = RemoteConfig::new(&base, "qwen").expect("config");
    let error = RemoteModel::connect(config)
        .await
        .expect_err("nothing listens");
    assert_fault(
        &error,
        RemoteFault::Unreachable,
        &format!("{base}/models"),
        "cannot connect",
    );
}

#[tokio::test]
async fn unauthorized_is_401_and_403() {
    let server = Server::start(|_, _| {
        json_reply(
            401,
            json!({"error": {"message": "Invalid API Key", "type": "authentication_error"}}),
        )
    })
    .await;
    let error = RemoteModel::connect(server.config())
        .await
        .expect_err("401");
    assert_fault(
        &error,
        RemoteFault::Unauthorized,
        &server.url("models"),
        "401 Unauthorized: Invalid API Key",
    );
    assert!(error.to_string().contains("api_key_env"), "{error}");
    // 401 is not retried.
    assert_eq!(server.requests_to("/models").len(), 1);

    let server = server_with(|_, _| error_reply(403, "forbidden")).await;
    let (_, result) = reply(&server, &question(), &ChatRequest::default()).await;
    let error = result.expect_err("403");
    assert_fault(
        &error,
        RemoteFault::Unauthorized,
        &server.url("chat/completions"),
        "403 Forbidden",
    );
}

#[tokio::test]
async fn an_unknown_model_lists_what_is_served() {
    let server = Server::start(|_, _| models(&["llama", "mistral"])).await;
    let error = RemoteModel::connect(server.config())
        .await
        .expect_err("no qwen");
    assert_fault(
        &error,
        RemoteFault::UnknownModel,
        &server.url("models"),
        "does not serve model `qwen`; it serves: `llama`, `mistral`",
    );

    // One model on the server and another asked for: still an error.
    let server = Server::start(|_, _| models(&["qwen2.5-coder"])).await;
    let error = RemoteModel::connect(server.config())
        .await
        .expect_err("strict");
    assert_fault(
        &error,
        RemoteFault::UnknownModel,
        &server.url("models"),
        "`qwen2.5-coder`",
    );

    let server = Server::start(|_, _| error_reply(404, "File Not Found")).await;
    let error = RemoteModel::connect(server.config())
        .await
        .expect_err("404");
    assert_fault(
        &error,
        RemoteFault::UnknownModel,
        &server.url("models"),
        "404 Not Found",
    );

    // A 404 on the chat (a hosted API that lists more than it serves).
    let server = server_with(|_, _| error_reply(404, "The model `qwen` does not exist")).await;
    let (_, result) = reply(&server, &question(), &ChatRequest::default()).await;
    assert_fault(
        &result.expect_err("404"),
        RemoteFault::UnknownModel,
        &server.url("chat/completions"),
        "does not exist",
    );
}

#[tokio::test]
async fn a_model_list_that_is_not_one_is_a_protocol_fault() {
    let server = Server::start(|_, _| Reply::Full {
        status: 200,
        headers: vec![("Content-Type", "text/html".into())],
        body: "<html>hello</html>".into(),
    })
    .await;
    let error = RemoteModel::connect(server.config())
        .await
        .expect_err("not a list");
    assert_fault(
        &error,
        RemoteFault::Protocol,
        &server.url("models"),
        "not an OpenAI model list",
    );
}

// ---------------------------------------------------------------------------------
// Retries.

#[tokio::test]
async fn a_server_error_is_retried_and_then_succeeds() {
    let server = server_with(|_, n| {
        if n == 0 {
            error_reply(500, "boom")
        } else {
            paris()
        }
    })
    .await;
    let (events, result) = reply(&server, &question(), &ChatRequest::default()).await;
    assert_eq!(result.expect("succeeds after a retry").text, "Paris.");
    assert_eq!(
        text_of(&events),
        "Paris.",
        "no event from the failed attempt"
    );
    assert_eq!(server.requests_to("/chat/completions").len(), 2);
}

#[tokio::test]
async fn a_server_error_that_persists_gives_up_after_the_retries() {
    let server = server_with(|_, _| error_reply(503, "loading model")).await;
    let (_, result) = reply(&server, &question(), &ChatRequest::default()).await;
    let error = result.expect_err("still failing");
    assert_fault(
        &error,
        RemoteFault::Server,
        &server.url("chat/completions"),
        "503 Service Unavailable (after 3 retries): loading model",
    );
    assert_eq!(server.requests_to("/chat/completions").len(), 4);
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let server = server_with(|_, n| {
        if n == 0 {
            Reply::Full {
                status: 429,
                headers: vec![("Retry-After", "1".into())],
                body: json!({"error": {"message": "slow down"}}).to_string(),
            }
        } else {
            paris()
        }
    })
    .await;
    let mut session = open(server.config()).await;
    let started = Instant::now();
    let (_, result) = collect(
        session
            .respond(&question(), &ChatRequest::default())
            .expect("starts"),
    )
    .await;
    assert_eq!(result.expect("succeeds after the wait").text, "Paris.");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 honoured, waited {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(server.requests_to("/chat/completions").len(), 2);

    // Retry-After beyond the cap waits the cap; a limit that persists is RateLimited.
    let server = server_with(|_, _| Reply::Full {
        status: 429,
        headers: vec![("Retry-After", "3600".into())],
        body: "{}".into(),
    })
    .await;
    let config = server.config().with_retry(RetryPolicy {
        retries: 1,
        initial_backoff: Duration::from_millis(10),
        max_wait: Duration::from_millis(100),
    });
    let mut session = open(config).await;
    let started = Instant::now();
    let (_, result) = collect(
        session
            .respond(&question(), &ChatRequest::default())
            .expect("starts"),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_fault(
        &result.expect_err("rate limited"),
        RemoteFault::RateLimited,
        &server.url("chat/completions"),
        "429 Too Many Requests (after 1 retry)",
    );
    assert_eq!(server.requests_to("/chat/completions").len(), 2);
}

// ---------------------------------------------------------------------------------
// Faults in the stream.

#[tokio::test]
async fn a_stream_cut_mid_way_is_a_protocol_fault_and_not_retried() {
    let server = server_with(|_, _| Reply::Stream {
        pieces: vec![(Duration::ZERO, event(&text_delta("Par")))],
        end: End::Abort,
    })
    .await;
    let (events, result) = reply(&server, &question(), &ChatRequest::default()).await;
    assert_eq!(
        text_of(&events),
        "Par",
        "what came before the cut was streamed"
    );
    assert_fault(
        &result.expect_err("cut"),
        RemoteFault::Protocol,
        &server.url("chat/completions"),
        "cut short",
    );
    assert_eq!(server.requests_to("/chat/completions").len(), 1);
}

#[tokio::test]
async fn a_stream_ending_without_done_or_finish_is_a_protocol_fault() {
    let server = server_with(|_, _| Reply::Stream {
        pieces: vec![(Duration::ZERO, event(&text_delta("Par")))],
        end: End::Clean,
    })
    .await;
    let (_, result) = reply(&server, &question(), &ChatRequest::default()).await;
    assert_fault(
        &result.expect_err("unfinished"),
        RemoteFault::Protocol,
        &server.url("chat/completions"),
        "ended before the reply did",
    );
}

#[tokio::test]
async fn a_malformed_chunk_is_a_protocol_fault() {
    let server = server_with(|_, _| Reply::Stream {
        pieces: vec![
            (Duration::ZERO, event(&text_delta("Par"))),
            (
                Duration::ZERO,
                "data: {\"choices\": [{\"delta\": \n\n".into(),
            ),
            (Duration::ZERO, "data: [DONE]\n\n".into()),
        ],
        end: End::Clean,
    })
    .await;
    let (_, result) = reply(&server, &question(), &ChatRequest::default()).await;
    assert_fault(
        &result.expect_err("malformed"),
        RemoteFault::Protocol,
        &server.url("chat/completions"),
        "malformed chunk",
    );
}

#[tokio::test]
async fn an_error_inside_the_stream_is_a_server_fault() {
    let server = server_with(|_, _| {
        stream(&[
            text_delta("Par"),
            json!({"error": {"code": 500, "message": "the slot crashed", "type": "server_error"}}),
        ])
    })
    .await;
    let (_, result) = reply(&server, &question(), &ChatRequest::default()).await;
    assert_fault(
        &result.expect_err("error event"),
        RemoteFault::Server,
        &server.url("chat/completions"),
        "the slot crashed",
    );
}

#[tokio::test]
async fn a_prompt_over_the_context_is_prompt_too_long() {
    let server = server_with(|_, _| {
        json_reply(400, json!({"error": {"code": 400, "message": "the request exceeds the available context size", "type": "exceed_context_size_error", "n_prompt_tokens": 9000, "n_ctx": 8192}}))
    })
    .await;
    let (_, result) = reply(&server, &question(), &ChatRequest::default()).await;
    match result {
        Err(RuntimeError::PromptTooLong {
            prompt_tokens: 9000,
            n_ctx: 8192,
        }) => {}
        other => panic!("want PromptTooLong, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------
// Time-outs.

#[tokio::test]
async fn slow_headers_time_out() {
    let server = server_with(|_, _| Reply::Delay(Duration::from_secs(5), Box::new(paris()))).await;
    let config = server
        .config()
        .with_first_byte_timeout(Duration::from_millis(300));
    let mut session = open(config).await;
    let started = Instant::now();
    let (_, result) = collect(
        session
            .respond(&question(), &ChatRequest::default())
            .expect("starts"),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_fault(
        &result.expect_err("timeout"),
        RemoteFault::Timeout,
        &server.url("chat/completions"),
        "300 ms",
    );
}

#[tokio::test]
async fn a_silent_stream_times_out() {
    let server = server_with(|_, _| Reply::Stream {
        pieces: vec![
            (Duration::ZERO, event(&text_delta("Par"))),
            (Duration::from_secs(5), event(&text_delta("is"))),
        ],
        end: End::Clean,
    })
    .await;
    let config = server
        .config()
        .with_idle_timeout(Duration::from_millis(300));
    let mut session = open(config).await;
    let started = Instant::now();
    let (events, result) = collect(
        session
            .respond(&question(), &ChatRequest::default())
            .expect("starts"),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(text_of(&events), "Par");
    assert_fault(
        &result.expect_err("timeout"),
        RemoteFault::Timeout,
        &server.url("chat/completions"),
        "silent for 300 ms",
    );
}

// ---------------------------------------------------------------------------------
// Cancellation, order, blocking callers.

#[tokio::test]
async fn cancelling_drops_the_connection() {
    let server = server_with(|_, _| {
        let mut pieces = vec![(Duration::ZERO, event(&text_delta("Par")))];
        for _ in 0..100 {
            pieces.push((Duration::from_millis(50), event(&text_delta("is"))));
        }
        Reply::Stream {
            pieces,
            end: End::Clean,
        }
    })
    .await;
    let mut session = open(server.config()).await;
    let mut generation = session
        .respond(&question(), &ChatRequest::default())
        .expect("starts");
    match generation.next().await {
        Some(GenerationEvent::Text(text)) => assert_eq!(text, "Par"),
        other => panic!("want text first, got {other:?}"),
    }
    let cancelled = Instant::now();
    generation.cancel();
    let (_, result) = collect(generation).await;
    let completion = result.expect("a cancelled completion");
    assert_eq!(completion.finish, FinishReason::Cancelled);
    assert!(completion.text.starts_with("Par"), "{:?}", completion.text);
    assert!(
        cancelled.elapsed() < Duration::from_secs(1),
        "{:?}",
        cancelled.elapsed()
    );
    // The server notices: its next writes fail.
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.broken.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the connection was not dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn requests_on_a_session_run_in_order() {
    let server = server_with(|request, _| {
        let body = request.json();
        let word = body["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let wait = if word == "first" {
            Duration::from_millis(300)
        } else {
            Duration::ZERO
        };
        Reply::Delay(wait, Box::new(stream(&[text_delta(&word), finish("stop")])))
    })
    .await;
    let mut session = open(server.config()).await;
    let first = session
        .respond(
            &Chat::new(vec![Message::user("first")]),
            &ChatRequest::default(),
        )
        .expect("starts");
    let second = session
        .respond(
            &Chat::new(vec![Message::user("second")]),
            &ChatRequest::default(),
        )
        .expect("starts");
    let (a, b) = tokio::join!(collect(first), collect(second));
    assert_eq!(a.1.expect("first").text, "first");
    assert_eq!(b.1.expect("second").text, "second");
    let order: Vec<String> = server
        .requests_to("/chat/completions")
        .iter()
        .map(|r| {
            r.json()["messages"][0]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(order, ["first", "second"]);
}

#[tokio::test]
async fn a_plain_thread_without_a_runtime_can_wait_for_a_reply() {
    let server = server_with(|_, _| paris()).await;
    let model = RemoteModel::connect(server.config())
        .await
        .expect("connects");
    let (done, answer) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        assert!(tokio::runtime::Handle::try_current().is_err());
        let mut session = model.session();
        let mut pieces = Vec::new();
        let result = session
            .respond(&question(), &ChatRequest::default())
            .and_then(|g| g.wait(|piece| pieces.push(piece.to_string())));
        let _ = done.send((pieces, result.map(|c| c.text)));
    });
    let (pieces, text) = answer.await.expect("the thread answers");
    assert_eq!(pieces, ["Par", "is."]);
    assert_eq!(text.expect("a completion"), "Paris.");
}

#[tokio::test]
async fn bad_requests_fail_before_any_traffic() {
    let server = server_with(|_, _| paris()).await;
    let mut session = open(server.config()).await;
    let required = ChatRequest {
        tool_choice: jielong_chat::ToolChoice::Required,
        ..ChatRequest::default()
    };
    assert!(matches!(
        session.respond(&question(), &required),
        Err(RuntimeError::InvalidRequest(_))
    ));
    let branch = question().on(jielong_chat::BranchId(1));
    assert!(matches!(
        session.respond(&branch, &ChatRequest::default()),
        Err(RuntimeError::Unsupported(_))
    ));
    assert!(server.requests_to("/chat/completions").is_empty());
}
