//! Every case goes through one [`check`]: the text parses into the expected value,
//! the value is written as the expected JSON, and that JSON reads back as the value.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::*;

/// `text` reads as `want`; `want` is written as `written` (compared as JSON values:
/// field names, presence and values, not spacing or order); `written` reads back as
/// `want`.
fn check<T>(what: &str, text: &str, want: &T, written: Value)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let read: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(&read, want, "{what}: read");
    let encoded = serde_json::to_string(want).unwrap_or_else(|e| panic!("{what}: {e}"));
    let value: Value = serde_json::from_str(&encoded).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(value, written, "{what}: written");
    let again: T = serde_json::from_str(&encoded).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(&again, want, "{what}: read back");
}

fn weather() -> Tool {
    Tool::function(
        "get_weather",
        "The weather in a city.",
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    )
}

#[test]
fn a_request_round_trips() {
    let full = json!({
        "model": "qwen",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
        ],
        "stream": true,
        "stream_options": {"include_usage": true},
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
        "max_tokens": 64, "max_completion_tokens": 32,
        "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 7,
        "stop": ["\n\n", "END"],
        "logprobs": true, "top_logprobs": 3, "n": 2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
    });
    let want = ChatCompletionRequest {
        model: Some("qwen".into()),
        messages: vec![
            ChatMessage {
                content: Some(Content::Parts(vec![ContentPart {
                    kind: "text".into(),
                    text: Some("Be brief.".into()),
                }])),
                ..ChatMessage::text(Role::Developer, "")
            },
            ChatMessage::text(Role::User, "Weather in Paris?"),
            ChatMessage {
                content: None,
                tool_calls: Some(vec![ToolCall::function(
                    "call_1",
                    "get_weather",
                    "{\"city\":\"Paris\"}",
                )]),
                ..ChatMessage::text(Role::Assistant, "")
            },
            ChatMessage::tool_result("call_1", "sunny"),
        ],
        stream: Some(true),
        stream_options: Some(StreamOptions {
            include_usage: true,
        }),
        tools: Some(vec![weather()]),
        tool_choice: Some(ToolChoice::Function(NamedToolChoice {
            kind: Some("function".into()),
            function: FunctionName {
                name: "get_weather".into(),
            },
        })),
        parallel_tool_calls: Some(false),
        max_tokens: Some(64),
        max_completion_tokens: Some(32),
        temperature: Some(0.7),
        top_p: Some(0.9),
        top_k: Some(40),
        min_p: Some(0.05),
        seed: Some(7),
        stop: Some(Stop::Many(vec!["\n\n".into(), "END".into()])),
        logprobs: Some(true),
        top_logprobs: Some(3),
        n: Some(2),
        response_format: Some(ResponseFormat::JsonSchema {
            json_schema: json!({"name": "w", "schema": {"type": "object"}}),
        }),
    };
    check("full request", &full.to_string(), &want, full.clone());

    // The least a request is; nothing absent is written.
    let least = ChatCompletionRequest {
        messages: vec![ChatMessage::text(Role::User, "hi")],
        ..ChatCompletionRequest::default()
    };
    let text = r#"{"messages": [{"role": "user", "content": "hi"}]}"#;
    check(
        "least request",
        text,
        &least,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    );

    // Read leniently: what a reader refuses itself is kept, arguments given as an
    // object are their text, `null` is absent.
    let odd = r#"{"messages": [{"role": "robot", "content": "x", "tool_calls": [
        {"function": {"name": "f", "arguments": {"x": 1}}}]}],
        "tool_choice": "sometimes", "response_format": {"type": "yaml"}, "stop": "END",
        "seed": null}"#;
    let want = ChatCompletionRequest {
        messages: vec![ChatMessage {
            tool_calls: Some(vec![ToolCall {
                id: None,
                kind: None,
                function: FunctionCall {
                    name: "f".into(),
                    arguments: "{\"x\":1}".into(),
                },
            }]),
            ..ChatMessage::text(Role::Other("robot".into()), "x")
        }],
        tool_choice: Some(ToolChoice::Other(json!("sometimes"))),
        response_format: Some(ResponseFormat::Other(json!({"type": "yaml"}))),
        stop: Some(Stop::One("END".into())),
        ..ChatCompletionRequest::default()
    };
    check(
        "odd request",
        odd,
        &want,
        json!({"messages": [{"role": "robot", "content": "x", "tool_calls": [
                {"function": {"name": "f", "arguments": "{\"x\":1}"}}]}],
               "tool_choice": "sometimes", "response_format": {"type": "yaml"}, "stop": "END"}),
    );
    let modes = r#"{"messages": [], "tool_choice": "required", "response_format": {"type": "json_object"}}"#;
    let want = ChatCompletionRequest {
        tool_choice: Some(ToolChoice::Required),
        response_format: Some(ResponseFormat::JsonObject),
        ..ChatCompletionRequest::default()
    };
    check(
        "modes",
        modes,
        &want,
        json!({"messages": [], "tool_choice": "required", "response_format": {"type": "json_object"}}),
    );

    let legacy =
        r#"{"prompt": ["The capital of France is"], "max_tokens": 3, "logprobs": 2, "echo": true}"#;
    let want = CompletionRequest {
        model: None,
        prompt: Prompt::Many(vec!["The capital of France is".into()]),
        max_tokens: Some(3),
        temperature: None,
        top_p: None,
        top_k: None,
        min_p: None,
        seed: None,
        stop: None,
        stream: None,
        stream_options: None,
        logprobs: Some(2),
        echo: Some(true),
        n: None,
    };
    check(
        "text request",
        legacy,
        &want,
        json!({"prompt": ["The capital of France is"], "max_tokens": 3, "logprobs": 2, "echo": true}),
    );
}

#[test]
fn replies_round_trip() {
    // OpenAI's reply to a call, as its API sends it (fields Jielong does not read are
    // dropped).
    let openai = r#"{
      "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
      "object": "chat.completion",
      "created": 1741570283,
      "model": "gpt-4o-2024-08-06",
      "choices": [
        {
          "index": 0,
          "message": {
            "role": "assistant",
            "content": null,
            "tool_calls": [{"id": "call_abc", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}],
            "refusal": null,
            "annotations": []
          },
          "logprobs": null,
          "finish_reason": "tool_calls"
        }
      ],
      "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}
      },
      "service_tier": "default",
      "system_fingerprint": "fp_fc9f1d7035"
    }"#;
    let want = ChatCompletion {
        id: "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG".into(),
        object: chat::CHAT_COMPLETION.into(),
        created: 1741570283,
        model: "gpt-4o-2024-08-06".into(),
        system_fingerprint: Some("fp_fc9f1d7035".into()),
        choices: vec![ChatChoice {
            index: 0,
            message: ChatMessage {
                content: None,
                tool_calls: Some(vec![ToolCall::function(
                    "call_abc",
                    "get_weather",
                    "{\"city\":\"Paris\"}",
                )]),
                ..ChatMessage::text(Role::Assistant, "")
            },
            logprobs: None,
            finish_reason: Some(FinishReason::ToolCalls),
        }],
        usage: Some(Usage::new(1117, 1024, 46)),
        timings: None,
    };
    check(
        "OpenAI reply",
        openai,
        &want,
        json!({
            "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "object": "chat.completion",
            "created": 1741570283,
            "model": "gpt-4o-2024-08-06",
            "system_fingerprint": "fp_fc9f1d7035",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": null, "tool_calls": [{"id": "call_abc",
                    "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                "logprobs": null,
                "finish_reason": "tool_calls",
            }],
            "usage": {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
                      "prompt_tokens_details": {"cached_tokens": 1024}},
        }),
    );

    // llama-server's streamed text with log-probabilities, then its usage chunk with
    // its timings.
    let token = r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"content":" Paris"},
        "logprobs":{"content":[{"id":12095,"token":" Paris","bytes":[32,80,97,114,105,115],"logprob":-0.25,
        "top_logprobs":[{"id":12095,"token":" Paris","bytes":[32,80,97,114,105,115],"logprob":-0.25},
                        {"id":279,"token":" the","bytes":[32,116,104,101],"logprob":-1.5}]}]}}],
        "created":1735000000,"id":"chatcmpl-abc","model":"qwen","system_fingerprint":"b5000-abcdef",
        "object":"chat.completion.chunk"}"#;
    let paris = TopLogprob {
        token: " Paris".into(),
        logprob: -0.25,
        bytes: Some(b" Paris".to_vec()),
        id: Some(12095),
    };
    let the = TopLogprob {
        token: " the".into(),
        logprob: -1.5,
        bytes: Some(b" the".to_vec()),
        id: Some(279),
    };
    let head = ChatCompletionChunk {
        id: "chatcmpl-abc".into(),
        object: chat::CHAT_COMPLETION_CHUNK.into(),
        created: 1735000000,
        model: "qwen".into(),
        system_fingerprint: Some("b5000-abcdef".into()),
        ..ChatCompletionChunk::default()
    };
    let want = ChatCompletionChunk {
        choices: vec![ChunkChoice {
            index: 0,
            delta: Delta {
                content: Some(" Paris".into()),
                ..Delta::default()
            },
            logprobs: Some(ChoiceLogprobs::of(vec![TokenLogprob {
                token: " Paris".into(),
                logprob: -0.25,
                bytes: Some(b" Paris".to_vec()),
                id: Some(12095),
                top_logprobs: vec![paris, the],
            }])),
            finish_reason: None,
        }],
        ..head.clone()
    };
    let written = |choices: Value| {
        json!({"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1735000000,
               "model": "qwen", "system_fingerprint": "b5000-abcdef", "choices": choices})
    };
    check(
        "llama-server token",
        token,
        &want,
        written(json!([{"index": 0, "delta": {"content": " Paris"},
            "logprobs": {"content": [{"token": " Paris", "logprob": -0.25, "bytes": [32, 80, 97, 114, 105, 115],
                "id": 12095, "top_logprobs": [
                    {"token": " Paris", "logprob": -0.25, "bytes": [32, 80, 97, 114, 105, 115], "id": 12095},
                    {"token": " the", "logprob": -1.5, "bytes": [32, 116, 104, 101], "id": 279}]}],
                "refusal": null},
            "finish_reason": null}])),
    );
    let last = r#"{"choices":[],"created":1735000000,"id":"chatcmpl-abc","model":"qwen",
        "system_fingerprint":"b5000-abcdef","object":"chat.completion.chunk",
        "usage":{"completion_tokens":9,"prompt_tokens":40,"total_tokens":49},
        "timings":{"cache_n":25,"prompt_n":15,"prompt_ms":30.5,"prompt_per_token_ms":2.03,
                   "predicted_n":9,"predicted_ms":90.0,"predicted_per_second":100.0}}"#;
    let want = ChatCompletionChunk {
        usage: Some(Usage {
            prompt_tokens_details: None,
            ..Usage::new(40, 0, 9)
        }),
        timings: Some(Timings {
            cache_n: Some(25),
            prompt_n: Some(15),
            prompt_ms: Some(30.5),
            predicted_n: Some(9),
            predicted_ms: Some(90.0),
        }),
        ..head.clone()
    };
    let mut usage = written(json!([]));
    usage["usage"] = json!({"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49});
    usage["timings"] = json!({"cache_n": 25, "prompt_n": 15, "prompt_ms": 30.5, "predicted_n": 9, "predicted_ms": 90.0});
    check("llama-server usage", last, &want, usage);

    // A call streamed in pieces (only the first names it), and the end of a choice.
    let call = r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function",
        "function":{"name":"python","arguments":"{\"co"}}]},"finish_reason":null}]}"#;
    let want = ChatCompletionChunk {
        choices: vec![ChunkChoice {
            delta: Delta {
                tool_calls: vec![ToolCall::function("c1", "python", "{\"co").into_delta(0)],
                ..Delta::default()
            },
            ..ChunkChoice::default()
        }],
        ..ChatCompletionChunk::default()
    };
    check(
        "call delta",
        call,
        &want,
        json!({"id": "", "object": "", "created": 0, "model": "", "choices": [{"index": 0,
            "delta": {"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                "function": {"name": "python", "arguments": "{\"co"}}]},
            "logprobs": null, "finish_reason": null}]}),
    );
    // Servers send `null` for empty lists, reasons of their own, fractional times.
    let nulls = r#"{"choices":[{"delta":{"role":"assistant","content":null,"tool_calls":null},
        "logprobs":{"content":null},"finish_reason":"eos"}],"error":null,"created":1735000000.75}"#;
    let want = ChatCompletionChunk {
        choices: vec![ChunkChoice {
            delta: Delta {
                role: Some(Role::Assistant),
                ..Delta::default()
            },
            logprobs: Some(ChoiceLogprobs::default()),
            finish_reason: Some(FinishReason::Other("eos".into())),
            ..ChunkChoice::default()
        }],
        created: 1735000000,
        ..ChatCompletionChunk::default()
    };
    check(
        "nulls",
        nulls,
        &want,
        json!({"id": "", "object": "", "created": 1735000000, "model": "", "choices": [{"index": 0,
            "delta": {"role": "assistant"}, "logprobs": {"content": [], "refusal": null},
            "finish_reason": "eos"}]}),
    );

    // A text completion with the legacy log-probabilities; a repeated token keeps its
    // first place.
    let text = r#"{"id":"cmpl-1","object":"text_completion","created":5,"model":"qwen","choices":[
        {"index":0,"text":" Paris","logprobs":{"tokens":[" Paris"],"token_logprobs":[-0.5],
        "top_logprobs":[{" Paris":-0.5," the":-2.0," Paris":-0.25}],"text_offset":[0]},"finish_reason":"length"}],
        "usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6,"prompt_tokens_details":{"cached_tokens":0}}}"#;
    let want = TextCompletion {
        id: "cmpl-1".into(),
        object: completion::TEXT_COMPLETION.into(),
        created: 5,
        model: "qwen".into(),
        system_fingerprint: None,
        choices: vec![TextChoice {
            index: 0,
            text: " Paris".into(),
            logprobs: Some(TextLogprobs {
                tokens: vec![" Paris".into()],
                token_logprobs: vec![-0.5],
                top_logprobs: vec![[(" Paris", -0.25), (" the", -2.0)].into_iter().collect()],
                text_offset: vec![0],
            }),
            finish_reason: Some(FinishReason::Length),
        }],
        usage: Some(Usage::new(5, 0, 1)),
    };
    check(
        "text completion",
        text,
        &want,
        json!({"id": "cmpl-1", "object": "text_completion", "created": 5, "model": "qwen", "choices": [
            {"index": 0, "text": " Paris", "logprobs": {"tokens": [" Paris"], "token_logprobs": [-0.5],
             "top_logprobs": [{" Paris": -0.25, " the": -2.0}], "text_offset": [0]}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6,
                      "prompt_tokens_details": {"cached_tokens": 0}}}),
    );
}

#[test]
fn model_lists_and_errors_round_trip() {
    let llama = r#"{"object":"list","data":[{"id":"qwen","object":"model","created":1735000000,
        "owned_by":"llamacpp","meta":{"vocab_type":2,"n_vocab":151936,"n_ctx_train":32768,
        "n_embd":896,"n_params":494032768,"size":491400032}}]}"#;
    let want = ModelList::of(vec![Model {
        id: "qwen".into(),
        object: "model".into(),
        created: Some(1735000000),
        owned_by: Some("llamacpp".into()),
        meta: Some(ModelMeta {
            n_ctx_train: Some(32768),
            n_params: Some(494032768),
            size: Some(491400032),
            ..ModelMeta::default()
        }),
        ..Model::default()
    }]);
    check(
        "llama-server models",
        llama,
        &want,
        json!({"object": "list", "data": [{"id": "qwen", "object": "model", "created": 1735000000,
            "owned_by": "llamacpp", "meta": {"n_ctx_train": 32768, "n_params": 494032768, "size": 491400032}}]}),
    );
    let vllm = r#"{"data":[{"id":"m","created":null,"max_model_len":4096}]}"#;
    let want = ModelList {
        object: String::new(),
        data: vec![Model {
            id: "m".into(),
            max_model_len: Some(4096),
            ..Model::default()
        }],
    };
    check(
        "vLLM models",
        vllm,
        &want,
        json!({"object": "", "data": [{"id": "m", "object": "", "max_model_len": 4096}]}),
    );

    let openai = r#"{"error":{"message":"too long","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
    check(
        "OpenAI error",
        openai,
        &ErrorBody::new(
            "too long",
            "invalid_request_error",
            Some("messages".into()),
            Some("context_length_exceeded"),
        ),
        serde_json::from_str(openai).expect("JSON"),
    );
    // llama-server's code is the status; `param` and `code` are always written.
    let llama = r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#;
    let want = ErrorBody {
        error: ErrorDetail {
            message: "Loading model".into(),
            kind: "unavailable_error".into(),
            param: None,
            code: Some(ErrorCode::Number(503)),
        },
    };
    check(
        "llama-server error",
        llama,
        &want,
        json!({"error": {"message": "Loading model", "type": "unavailable_error", "param": null, "code": 503}}),
    );
}
