//! `jielong serve` end to end: the binary serves the default model (`-t 1`) on a
//! free loopback port and these tests talk OpenAI's HTTP API to it — plain and
//! streamed answers, tool calls (auto, required, named), `n`, log-probabilities, a
//! multi-turn conversation reusing its cache, JSON-Schema output, the error statuses,
//! concurrent clients and clients that hang up mid-stream; then the official `openai`
//! Python package against the same server (`tests/serve_client.py`, skipped with a
//! line when the package is missing).

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{model_lock, QWEN};
use serde_json::{json, Value};

/// A running `jielong serve`; killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts the server with `args` after `serve` and waits until `/health` answers.
async fn start(args: &[&str], key: Option<&str>) -> Server {
    let port = free_port();
    let mut command = common::command();
    command
        .args(["--model", QWEN, "-t", "1", "serve", "--port"])
        .arg(port.to_string())
        .args(args)
        .env_remove("JIELONG_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(key) = key {
        command.env("JIELONG_API_KEY", key);
    }
    let child = command.spawn().expect("jielong serve starts");
    let mut server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("jielong serve exited early: {status}");
        }
        if let Ok(response) = client.get(format!("{}/health", server.base)).send().await {
            if response.status().is_success() {
                return server;
            }
        }
        assert!(Instant::now() < deadline, "the server did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("an HTTP client")
}

/// Sends a chat completion request of `body` (JSON) to `base`; the response, unread
/// (a stream can be read chunk by chunk).
async fn open_chat(base: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{base}/v1/chat/completions"))
        .body(body.to_string())
        .send()
        .await
        .expect("the server answers")
}

/// POSTs `body` (JSON) to `path`; the status and the body (JSON when it parses,
/// else the text as a string).
async fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    post_raw(server, path, body.to_string().into_bytes(), None).await
}

async fn post_raw(server: &Server, path: &str, body: Vec<u8>, key: Option<&str>) -> (u16, Value) {
    let mut request = client()
        .post(format!("{}{path}", server.base))
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

async fn get(server: &Server, path: &str, key: Option<&str>) -> (u16, String) {
    let mut request = client().get(format!("{}{path}", server.base));
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// The `data:` payloads of an SSE body (`[DONE]` included, as a string).
fn sse_events(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap_or(Value::String(data.to_string())))
        .collect()
}

/// A metric's value from the Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// A function tool in OpenAI's shape: an object of `properties` with `required` ones.
fn tool(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
    json!({"type": "function", "function": {
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required},
    }})
}

fn weather_tool() -> Value {
    tool(
        "get_weather",
        "The current weather in a city",
        json!({"city": {"type": "string"}}),
        &["city"],
    )
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// The first tool-call delta of a streamed reply's events.
fn first_call_delta(events: &[Value]) -> Value {
    events
        .iter()
        .find_map(|e| {
            let call = &e["choices"][0]["delta"]["tool_calls"][0];
            call.is_object().then(|| call.clone())
        })
        .unwrap_or_else(|| panic!("no tool_calls delta in {events:?}"))
}

/// The reply's message content.
/// A tool call's arguments (`function.arguments`, a JSON string) parsed.
fn call_arguments(call: &Value) -> Value {
    call["function"]["arguments"]
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_else(|| panic!("arguments are not a JSON string: {call}"))
}

/// The tool calls of a whole (not streamed) chat reply to `body`, which must be a 200
/// that finished with `tool_calls`.
async fn tool_call_reply(server: &Server, body: &Value) -> Vec<Value> {
    let (status, reply) = post(server, "/v1/chat/completions", body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["choices"][0]["finish_reason"], "tool_calls",
        "{body}: {reply}"
    );
    reply["choices"][0]["message"]["tool_calls"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn content(reply: &Value) -> &str {
    reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

fn assert_error(status: u16, body: &Value, want: u16, what: &str) {
    assert_eq!(status, want, "{what}: {body}");
    let error = &body["error"];
    assert!(error["message"].is_string(), "{what}: {body}");
    assert!(error["type"].is_string(), "{what}: {body}");
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{what}: {body}"
    );
}

/// Runs `test` on a multi-threaded runtime while holding the model lock.
fn with_runtime<F: std::future::Future<Output = ()>>(test: F) {
    let _lock = model_lock();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(test);
}

#[test]
fn serves_the_openai_api() {
    with_runtime(serves_the_openai_api_on_a_server());
}

async fn serves_the_openai_api_on_a_server() {
    let server = start(&["--parallel", "4", "--queue", "64"], None).await;

    // Models.
    let (status, models) = get(&server, "/v1/models", None).await;
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&models).expect("JSON");
    assert_eq!(models["data"][0]["id"], QWEN, "{models}");

    // A plain answer.
    let question = user("What is the capital of France? Answer in one word.");
    let (status, reply) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": QWEN, "messages": question, "temperature": 0, "max_tokens": 16}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(content(&reply).contains("Paris"), "{reply}");
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop", "{reply}");
    let usage = &reply["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap_or(0) > 0, "{reply}");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap_or(0)
                + usage["completion_tokens"].as_u64().unwrap_or(0)
        )
    );

    // Streamed, with the usage chunk.
    let response = open_chat(
        &server.base,
        &json!({"messages": question, "temperature": 0, "max_tokens": 16, "stream": true,
                "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream")));
    let events = sse_events(&response.text().await.expect("a body"));
    assert_eq!(events.last(), Some(&Value::String("[DONE]".into())));
    let streamed: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(streamed.contains("Paris"), "{events:?}");
    assert_eq!(events[0]["object"], "chat.completion.chunk");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(events
        .iter()
        .any(|e| e["choices"][0]["finish_reason"] == "stop"));
    let usage_chunk = &events[events.len() - 2];
    assert!(
        usage_chunk["usage"]["completion_tokens"]
            .as_u64()
            .unwrap_or(0)
            > 0
            && usage_chunk["choices"].as_array().is_some_and(Vec::is_empty),
        "{usage_chunk}"
    );

    // Tool calls: auto, required, named; arguments are a JSON string.
    let ask = user("What is the weather in Paris right now?");
    for choice in [
        json!("auto"),
        json!("required"),
        json!({"type": "function", "function": {"name": "get_weather"}}),
    ] {
        let (status, reply) = post(
            &server,
            "/v1/chat/completions",
            &json!({"messages": ask, "tools": [weather_tool()], "tool_choice": choice,
                    "temperature": 0, "max_tokens": 80}),
        )
        .await;
        assert_eq!(status, 200, "{reply}");
        let choice0 = &reply["choices"][0];
        assert_eq!(choice0["finish_reason"], "tool_calls", "{choice}: {reply}");
        let call = &choice0["message"]["tool_calls"][0];
        assert!(
            call["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("call_")),
            "{reply}"
        );
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather", "{reply}");
        let arguments = call_arguments(call);
        assert!(
            arguments["city"]
                .as_str()
                .is_some_and(|c| c.contains("Paris")),
            "{arguments}"
        );
    }
    // A streamed call arrives as a tool_calls delta (auto: also when the model wrote
    // it as JSON in its text).
    for choice in ["required", "auto"] {
        let (_, body) = post_text(
            &server,
            &json!({"messages": ask, "tools": [weather_tool()], "tool_choice": choice,
                    "temperature": 0, "max_tokens": 80, "stream": true}),
        )
        .await;
        let events = sse_events(&body);
        let call = first_call_delta(&events);
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["index"], 0);
        assert!(events
            .iter()
            .any(|e| e["choices"][0]["finish_reason"] == "tool_calls"));
        let text: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(
            !text.contains("get_weather"),
            "{choice}: the call leaked as text: {text}"
        );
    }
    // A call the budget cuts is returned as OpenAI does: the tool, its arguments as
    // far as they go (no JSON yet), `finish_reason: "length"`; streamed the same.
    let cut = json!({"messages": ask, "tools": [weather_tool()], "tool_choice": "required",
                     "temperature": 0, "max_tokens": 16});
    let (status, reply) = post(&server, "/v1/chat/completions", &cut).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["choices"][0]["finish_reason"], "length", "{reply}");
    let call = &reply["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "get_weather", "{reply}");
    let partial = call["arguments"].as_str().expect("arguments as a string");
    assert!(
        serde_json::from_str::<Value>(partial).is_err() && partial.starts_with('{'),
        "{reply}"
    );
    let mut streamed = cut.clone();
    streamed["stream"] = json!(true);
    let (_, body) = post_text(&server, &streamed).await;
    let events = sse_events(&body);
    let delta = first_call_delta(&events);
    assert_eq!(delta["function"]["name"], "get_weather");
    assert_eq!(delta["function"]["arguments"].as_str(), Some(partial));
    assert!(
        events
            .iter()
            .any(|e| e["choices"][0]["finish_reason"] == "length"),
        "{events:?}"
    );

    // Questions on which the model, held to the schema, lists the same ingredients
    // round and round until the budget cuts the call: the loop guard ends the list,
    // so each gets a whole call well within the budget.
    let recipes = tool(
        "search_recipes",
        "Search recipes by diet, meal and the ingredients to use.",
        json!({
            "diet": {"type": "string", "description": "Dietary restriction, e.g. 'vegan'."},
            "meal": {"type": "string", "description": "Meal type, e.g. 'lunch'."},
            "ingredients": {"type": "array", "items": {"type": "string"},
                            "description": "Ingredients to use; empty for any."}}),
        &["diet", "meal"],
    );
    for question in [
        "What are some gluten-free recipes for dinner?",
        "Which dairy-free breakfast recipes are there?",
        "Suggest gluten-free dinner recipes with lots of spices.",
    ] {
        let body = json!({"messages": user(question), "tools": [recipes],
                          "tool_choice": "required", "temperature": 0, "max_tokens": 256});
        let calls = tool_call_reply(&server, &body).await;
        let arguments = call_arguments(&calls[0]);
        assert!(arguments["diet"].is_string(), "{question}: {arguments}");
    }
    let (_, metrics) = get(&server, "/metrics", None).await;
    assert!(
        metric(&metrics, "jielong_loops_broken_total") >= 1.0,
        "{metrics}"
    );

    // A reply that writes its call as JSON with an expression for a value (`2 * pi`,
    // which no schema takes) is generated again with the call required: the client
    // gets a call with a number, in both shapes, and the metric counts each redo.
    let sine = tool(
        "plot_sine_wave",
        "Plot a sine wave with given start and end of the range, frequency, amplitude",
        json!({
            "start_range": {"type": "number", "description": "Start of the range in radians"},
            "end_range": {"type": "number", "description": "End of the range in radians"},
            "frequency": {"type": "integer", "description": "Frequency in Hz"}}),
        &["start_range", "end_range", "frequency"],
    );
    let plot = user("Plot a sine wave from 0 to 2 pi with a frequency of 5 Hz.");
    let (_, before) = get(&server, "/metrics", None).await;
    let before = metric(&before, "jielong_calls_regenerated_total");
    for stream in [false, true] {
        let body = json!({"messages": plot, "tools": [sine], "temperature": 0,
                          "max_tokens": 120, "stream": stream});
        let call = if stream {
            let (_, text) = post_text(&server, &body).await;
            let events = sse_events(&text);
            first_call_delta(&events)
        } else {
            tool_call_reply(&server, &body).await.remove(0)
        };
        assert_eq!(call["function"]["name"], "plot_sine_wave", "{call}");
        let arguments = call_arguments(&call);
        assert!(arguments["end_range"].is_number(), "{arguments}");
        assert_eq!(arguments["frequency"], 5, "{arguments}");
    }
    let (_, after) = get(&server, "/metrics", None).await;
    assert_eq!(
        metric(&after, "jielong_calls_regenerated_total") - before,
        2.0,
        "{after}"
    );

    // The conversation goes on with the call and its result.
    let (status, reply) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": [
            {"role": "user", "content": "What is the weather in Paris right now?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature_c\": 21, \"sky\": \"sunny\"}"},
        ], "tools": [weather_tool()], "temperature": 0, "max_tokens": 60}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        content(&reply).contains("21") || content(&reply).to_lowercase().contains("sunny"),
        "{reply}"
    );

    // n = 3 choices.
    let (status, reply) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": user("Name a fruit."), "n": 3, "temperature": 0.9, "seed": 7, "max_tokens": 12}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let choices = reply["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 3, "{reply}");
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert!(
            !c["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{reply}"
        );
    }

    // Log-probabilities.
    let (status, reply) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": question, "temperature": 0, "max_tokens": 8, "logprobs": true, "top_logprobs": 2}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let entries = reply["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("logprobs.content");
    assert_eq!(
        entries.len() as u64,
        reply["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        "{reply}"
    );
    for entry in entries {
        assert!(
            entry["logprob"].as_f64().is_some_and(|l| l <= 0.0),
            "{entry}"
        );
        assert!(
            entry["token"].is_string() && entry["bytes"].is_array(),
            "{entry}"
        );
        assert_eq!(
            entry["top_logprobs"].as_array().map(Vec::len),
            Some(2),
            "{entry}"
        );
    }

    // A second turn reuses the first turn's cells.
    let first = user("My name is Ada. Reply with one short sentence.");
    let (status, one) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": first, "temperature": 0, "max_tokens": 24}),
    )
    .await;
    assert_eq!(status, 200, "{one}");
    let (status, two) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": [
            {"role": "user", "content": "My name is Ada. Reply with one short sentence."},
            {"role": "assistant", "content": content(&one)},
            {"role": "user", "content": "What is my name?"},
        ], "temperature": 0, "max_tokens": 16}),
    )
    .await;
    assert_eq!(status, 200, "{two}");
    let cached = two["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        cached >= one["usage"]["prompt_tokens"].as_u64().unwrap_or(u64::MAX),
        "the second turn reused {cached} tokens: {one} {two}"
    );

    // A request on another slot takes the system prompt a busy slot already holds.
    let system = "You are the help desk of the Lindqvist municipal library in Vaxholm. \
                  Answer questions about opening hours, borrowing rules, late fees, the \
                  reading room, the children's corner, interlibrary loans and printing, in \
                  one friendly sentence, and never invent a rule the library does not have.";
    let asking = |question: &str| json!([{"role": "system", "content": system}, {"role": "user", "content": question}]);
    let mut busy = open_chat(
        &server.base,
        &json!({"messages": asking("Describe every service of the library in detail."),
                "temperature": 0, "max_tokens": 200, "stream": true}),
    )
    .await;
    // Its first chunk: the prompt has been evaluated and the slot is generating.
    let _ = busy.chunk().await;
    let (status, other) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": asking("Can I print there?"), "temperature": 0, "max_tokens": 8}),
    )
    .await;
    drop(busy);
    assert_eq!(status, 200, "{other}");
    let cached = other["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0);
    let prompt = other["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    // Everything but the question and the template's tail comes from the busy slot.
    assert!(
        cached >= 60 && prompt - cached <= 20,
        "reused {cached} of {prompt} prompt tokens: {other}"
    );

    // JSON-Schema output.
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                        "required": ["name", "age"], "additionalProperties": false});
    let (status, reply) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": user("Describe a person with a name and an age."), "temperature": 0, "max_tokens": 60,
                "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let parsed: Value = serde_json::from_str(content(&reply)).expect("the reply is JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    assert!(validator.is_valid(&parsed), "{parsed}");

    // Raw text completion with log-probabilities.
    let (status, reply) = post(
        &server,
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0, "logprobs": 2}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["choices"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Paris")),
        "{reply}"
    );
    assert_eq!(
        reply["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    // Bad requests.
    let (status, body) = post_raw(
        &server,
        "/v1/chat/completions",
        b"{\"messages\": [".to_vec(),
        None,
    )
    .await;
    assert_error(status, &body, 400, "malformed JSON");
    let (status, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "wizard", "content": "hi"}]}),
    )
    .await;
    assert_error(status, &body, 400, "a bad role");
    assert_eq!(body["error"]["param"], "messages[0].role");
    let (status, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": question, "response_format": {"type": "xml"}}),
    )
    .await;
    assert_error(status, &body, 400, "an unknown response_format");
    let (status, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": question, "response_format": {"type": "json_schema", "json_schema":
            {"name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}}),
    )
    .await;
    assert_error(status, &body, 400, "a schema without a grammar");
    let (status, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": question, "tools": [{"type": "function", "function": {"name": "f",
            "parameters": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}]}),
    )
    .await;
    assert_error(status, &body, 400, "a tool schema without a grammar");
    let long = "word ".repeat(9000);
    let (status, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": user(&long)}),
    )
    .await;
    assert_error(status, &body, 400, "a prompt longer than the context");
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    let huge = format!(
        "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}",
        "a".repeat(5 << 20)
    );
    let (status, body) = post_raw(&server, "/v1/chat/completions", huge.into_bytes(), None).await;
    assert_error(status, &body, 413, "a body over the limit");
    // Still serving after all that.
    let (status, reply) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": question, "temperature": 0, "max_tokens": 8}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(content(&reply).contains("Paris"), "{reply}");

    // A bounded load test: 32 concurrent clients, 3 requests each, half of them
    // streamed; every answer must be complete.
    const CLIENTS: u32 = 32;
    const REQUESTS: u32 = 3;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let base = server.base.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for r in 0..REQUESTS {
                let stream = (c + r) % 2 == 0;
                let body = json!({"messages": user(&format!("Write the number {} in words.", c * 10 + r)),
                                  "temperature": 0, "max_tokens": 12, "stream": stream});
                let result = client()
                    .post(format!("{base}/v1/chat/completions"))
                    .body(body.to_string())
                    .send()
                    .await;
                let problem = match result {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let text = response.text().await.unwrap_or_default();
                        incomplete(status, &text, stream)
                    }
                    Err(e) => Some(e.to_string()),
                };
                if let Some(problem) = problem {
                    errors.push(format!("client {c} request {r}: {problem}"));
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for task in tasks {
        errors.extend(task.await.expect("a client task"));
    }
    assert!(errors.is_empty(), "{errors:#?}");
    eprintln!(
        "serve: {} requests from {CLIENTS} concurrent clients in {:.1} s",
        CLIENTS * REQUESTS,
        started.elapsed().as_secs_f64()
    );

    // Clients that hang up mid-stream, all at once (more than there are slots).
    let mut hangups = Vec::new();
    for c in 0..8 {
        let base = server.base.clone();
        hangups.push(tokio::spawn(async move {
            let mut response = open_chat(
                &base,
                &json!({"messages": user(&format!("Tell a long story about the number {c}.")),
                        "temperature": 0, "max_tokens": 400, "stream": true}),
            )
            .await;
            let _ = response.chunk().await;
            let _ = response.chunk().await;
            drop(response);
        }));
    }
    for hangup in hangups {
        hangup.await.expect("a client that hangs up");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, text) = get(&server, "/metrics", None).await;
        assert_eq!(status, 200);
        if metric(&text, "jielong_requests_in_flight") == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "requests still in flight:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, health) = get(&server, "/health", None).await;
    assert_eq!(status, 200, "{health}");
    // Nothing in flight: the figures are the worker's own. The main branch and the
    // four slots remain (the n = 3 forks are gone); cells no more than the branches
    // hold.
    let (_, metrics) = get(&server, "/metrics", None).await;
    assert_eq!(metric(&metrics, "jielong_kv_branches"), 5.0, "{metrics}");
    let used = metric(&metrics, "jielong_kv_cells_used");
    assert!(
        used <= metric(&metrics, "jielong_kv_cells_total"),
        "{metrics}"
    );
    assert!(
        used <= metric(&metrics, "jielong_kv_branch_tokens"),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "jielong_requests_cancelled_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("jielong_requests_total{endpoint=\"chat_completions\",status=\"200\"}")
    );
    let (status, reply) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": question, "temperature": 0, "max_tokens": 8}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");

    // The official Python client.
    python_client(&server);
}

/// What is wrong with a chat completion's response, if anything: a status other than
/// 200, no text, no finish reason, or a stream without its `[DONE]`.
fn incomplete(status: u16, text: &str, stream: bool) -> Option<String> {
    if status != 200 {
        return Some(format!("{status} {text}"));
    }
    let (content, finish) = if stream {
        if !text.contains("data: [DONE]") {
            return Some(format!("a stream without [DONE]: {text}"));
        }
        let events = sse_events(text);
        let content: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        let finish = events.iter().find_map(|e| {
            e["choices"][0]["finish_reason"]
                .as_str()
                .map(str::to_string)
        });
        (content, finish)
    } else {
        let Ok(reply) = serde_json::from_str::<Value>(text) else {
            return Some(format!("not JSON: {text}"));
        };
        let content = content(&reply).to_string();
        let finish = reply["choices"][0]["finish_reason"]
            .as_str()
            .map(str::to_string);
        (content, finish)
    };
    match finish.as_deref() {
        Some("stop" | "length") if !content.trim().is_empty() => None,
        _ => Some(format!("incomplete ({finish:?}, {content:?}): {text}")),
    }
}

/// POSTs a chat request and returns the body as text (for streams).
async fn post_text(server: &Server, body: &Value) -> (u16, String) {
    let response = open_chat(&server.base, body).await;
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// Runs `tests/serve_client.py` with the `openai` package, or says why not.
fn python_client(server: &Server) {
    let have = Command::new("python3")
        .args(["-c", "import openai"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        eprintln!("skipping tests/serve_client.py: the `openai` Python package is not installed (scripts/test.sh installs it)");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/serve_client.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(format!("{}/v1", server.base))
        .arg(QWEN)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "serve_client.py failed:\n{stdout}\n{stderr}"
    );
    eprint!("{stdout}");
}

#[test]
fn a_key_is_required_and_a_full_queue_is_refused() {
    with_runtime(key_and_queue());
}

async fn key_and_queue() {
    let server = start(&["--parallel", "1", "--queue", "0"], Some("s3cret-key")).await;
    let (status, body) = get(&server, "/v1/models", None).await;
    assert_eq!(status, 401, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_error(401, &body, 401, "no key");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let (status, _) = get(&server, "/v1/models", Some("s3cret-kez")).await;
    assert_eq!(status, 401);
    let (status, _) = get(&server, "/v1/models", Some("s3cret")).await;
    assert_eq!(status, 401);
    let (status, body) = post_raw(
        &server,
        "/v1/chat/completions",
        json!({"messages": user("Hi")}).to_string().into_bytes(),
        None,
    )
    .await;
    assert_error(status, &body, 401, "a chat without a key");
    let (status, _) = get(&server, "/v1/models", Some("s3cret-key")).await;
    assert_eq!(status, 200);
    let (status, body) = post_raw(
        &server,
        "/v1/chat/completions",
        json!({"messages": user("Say hi."), "max_tokens": 4, "temperature": 0})
            .to_string()
            .into_bytes(),
        Some("s3cret-key"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = get(&server, "/health", None).await;
    assert_eq!(status, 200, "health needs no key");

    // One slot, no queue: while a stream holds the slot, another request gets 503.
    let mut busy = client()
        .post(format!("{}/v1/chat/completions", server.base))
        .header("authorization", "Bearer s3cret-key")
        .body(
            json!({"messages": user("Tell a long story."), "max_tokens": 300, "temperature": 0, "stream": true})
                .to_string(),
        )
        .send()
        .await
        .expect("a stream");
    let _ = busy.chunk().await;
    let response = client()
        .post(format!("{}/v1/chat/completions", server.base))
        .header("authorization", "Bearer s3cret-key")
        .body(json!({"messages": user("Hi"), "max_tokens": 4}).to_string())
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().get("retry-after").is_some());
    let body: Value = serde_json::from_str(&response.text().await.expect("a body")).expect("JSON");
    assert_error(503, &body, 503, "a full queue");
    drop(busy);
}

#[test]
fn a_public_host_needs_a_key() {
    let output = common::command()
        .args(["serve", "--host", "0.0.0.0", "--port"])
        .arg(free_port().to_string())
        .env_remove("JIELONG_API_KEY")
        .output()
        .expect("jielong runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("API key"), "{stderr}");
}

/// `--call-fit fitted`: a request that names two cities gets a call for each (whole and
/// streamed), a tool the request never names is declined and the reply is written
/// instead; the metrics count both.
#[test]
fn calls_are_fitted_to_the_request() {
    with_runtime(calls_fitted());
}

async fn calls_fitted() {
    let server = start(&["--call-fit", "fitted"], None).await;
    let two = user("What is the weather in Oslo and in Lima?");
    for stream in [false, true] {
        let body = json!({"messages": two, "tools": [weather_tool()], "temperature": 0,
                          "max_tokens": 120, "stream": stream});
        let calls: Vec<Value> = if stream {
            let (_, text) = post_text(&server, &body).await;
            sse_events(&text)
                .iter()
                .flat_map(|e| {
                    e["choices"][0]["delta"]["tool_calls"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .collect()
        } else {
            tool_call_reply(&server, &body).await
        };
        let mut cities: Vec<String> = calls
            .iter()
            .map(|call| {
                call_arguments(call)["city"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        cities.sort();
        assert_eq!(cities, ["Lima", "Oslo"], "stream {stream}: {calls:?}");
        let indices: Vec<u64> = calls.iter().filter_map(|c| c["index"].as_u64()).collect();
        if stream {
            assert_eq!(indices, [0, 1], "{calls:?}");
        }
    }
    let (status, reply) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": user("What is the area of a triangle with base 10 and height 5?"),
                "tools": [weather_tool()], "temperature": 0, "max_tokens": 80}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["choices"][0]["message"]["tool_calls"].is_null(),
        "{reply}"
    );
    assert!(!content(&reply).trim().is_empty(), "{reply}");
    let (_, metrics) = get(&server, "/metrics", None).await;
    assert!(
        metric(&metrics, "jielong_calls_added_total") >= 2.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "jielong_calls_declined_total") >= 1.0,
        "{metrics}"
    );
}
