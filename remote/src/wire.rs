//! The OpenAI chat-completions wire format: the request body built from a [`Chat`]
//! and a [`ChatRequest`], and the pieces of the streamed reply (lenient: unknown
//! fields, such as llama-server's `timings`, are ignored or read when useful).

use jielong_chat::{Chat, ChatRequest, Message, Role, ToolCall, ToolChoice, ToolSpec};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

/// The JSON body of a streamed `POST /chat/completions`.
pub(crate) fn request_body(model: &str, chat: &Chat, request: &ChatRequest) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    let mut messages = messages(&chat.messages);
    if !chat.prefill.is_empty() {
        // The server continues a final assistant message (llama-server: prefill).
        messages.push(json!({"role": "assistant", "content": chat.prefill}));
    }
    body.insert("messages".into(), Value::Array(messages));
    body.insert("stream".into(), json!(true));
    body.insert("stream_options".into(), json!({"include_usage": true}));
    let (tools, choice) = match &request.call_tools {
        Some(tools) => (tools.as_slice(), ToolChoice::Required),
        None => (chat.tools.as_slice(), request.tool_choice),
    };
    if !tools.is_empty() {
        body.insert(
            "tools".into(),
            Value::Array(tools.iter().map(tool).collect()),
        );
        let choice = match choice {
            ToolChoice::Auto => "auto",
            ToolChoice::Required => "required",
            ToolChoice::None => "none",
        };
        body.insert("tool_choice".into(), json!(choice));
        body.insert("parallel_tool_calls".into(), json!(request.max_calls > 1));
    }
    body.insert("max_tokens".into(), json!(request.max_tokens));
    let sampling = &request.sampling;
    body.insert("temperature".into(), json!(sampling.temperature));
    // Greedy decoding ignores the filters: they are sent only when they act (`top_k`
    // and `min_p` are extensions that llama-server and vLLM read).
    if !sampling.is_greedy() {
        body.insert("top_p".into(), json!(sampling.top_p));
        if sampling.top_k > 0 {
            body.insert("top_k".into(), json!(sampling.top_k));
        }
        if sampling.min_p > 0.0 {
            body.insert("min_p".into(), json!(sampling.min_p));
        }
    }
    body.insert("seed".into(), json!(sampling.seed));
    if !request.stop.is_empty() {
        body.insert("stop".into(), json!(request.stop));
    }
    if let Some(top) = request.logprobs {
        body.insert("logprobs".into(), json!(true));
        body.insert("top_logprobs".into(), json!(top));
    }
    Value::Object(body)
}

/// A tool as the API lists it.
fn tool(spec: &ToolSpec) -> Value {
    let parameters = match &spec.parameters {
        Value::Object(map) if !map.is_empty() => spec.parameters.clone(),
        _ => json!({"type": "object", "properties": {}}),
    };
    json!({
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": parameters,
        }
    })
}

/// The messages in OpenAI JSON. The API ties a tool result to its call by id: calls
/// without one get `call_<message>_<call>`, and a tool message without an id answers
/// the first unanswered call of the same tool (else the first unanswered call).
fn messages(messages: &[Message]) -> Vec<Value> {
    let mut unanswered: Vec<(String, String)> = Vec::new();
    messages
        .iter()
        .enumerate()
        .map(|(at, message)| match message.role {
            Role::System | Role::User => {
                json!({"role": message.role.as_str(), "content": message.content})
            }
            Role::Assistant if message.tool_calls.is_empty() => {
                json!({"role": "assistant", "content": message.content})
            }
            Role::Assistant => {
                unanswered.clear();
                let calls: Vec<Value> = message
                    .tool_calls
                    .iter()
                    .enumerate()
                    .map(|(n, call)| {
                        let id = call.id.clone().unwrap_or_else(|| format!("call_{at}_{n}"));
                        unanswered.push((call.name.clone(), id.clone()));
                        tool_call(call, id)
                    })
                    .collect();
                let content = if message.content.is_empty() {
                    Value::Null
                } else {
                    json!(message.content)
                };
                json!({"role": "assistant", "content": content, "tool_calls": calls})
            }
            Role::Tool => {
                let id = match &message.tool_call_id {
                    Some(id) => {
                        unanswered.retain(|(_, open)| open != id);
                        id.clone()
                    }
                    None => {
                        let by_name = message
                            .name
                            .as_ref()
                            .and_then(|name| unanswered.iter().position(|(open, _)| open == name));
                        match by_name.or((!unanswered.is_empty()).then_some(0)) {
                            Some(i) => unanswered.remove(i).1,
                            None => format!("call_{at}"),
                        }
                    }
                };
                json!({"role": "tool", "tool_call_id": id, "content": message.content})
            }
        })
        .collect()
}

fn tool_call(call: &ToolCall, id: String) -> Value {
    let arguments = match &call.arguments {
        Value::Null => "{}".to_string(),
        other => other.to_string(),
    };
    json!({
        "id": id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    })
}

/// `null` read as the default (servers send `"choices": null`, `"content": null`).
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// One `data:` event of the stream.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Chunk {
    #[serde(default, deserialize_with = "nullable")]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
    /// llama-server's own counts and times.
    #[serde(default)]
    pub timings: Option<Timings>,
    /// An error reported inside the stream.
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Choice {
    #[serde(default, deserialize_with = "nullable")]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub logprobs: Option<ChoiceLogprobs>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Delta {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub tool_calls: Vec<ToolCallDelta>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ToolCallDelta {
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub function: FunctionDelta,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct FunctionDelta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ChoiceLogprobs {
    #[serde(default, deserialize_with = "nullable")]
    pub content: Vec<WireLogprob>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireLogprob {
    pub token: String,
    pub logprob: f32,
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    pub top_logprobs: Vec<WireTop>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireTop {
    pub token: String,
    pub logprob: f32,
    #[serde(default)]
    pub id: Option<i64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: usize,
    #[serde(default)]
    pub completion_tokens: usize,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<usize>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct Timings {
    #[serde(default)]
    pub cache_n: Option<usize>,
    #[serde(default)]
    pub prompt_ms: Option<f64>,
    #[serde(default)]
    pub predicted_ms: Option<f64>,
}

/// `GET /models`.
#[derive(Debug, Deserialize)]
pub(crate) struct ModelList {
    pub data: Vec<ModelEntry>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ModelEntry {
    pub id: String,
    /// llama-server: what the GGUF says.
    #[serde(default)]
    pub meta: Option<ModelMeta>,
    /// vLLM's name for the context length.
    #[serde(default)]
    pub max_model_len: Option<u64>,
    /// Other servers' name for it.
    #[serde(default)]
    pub context_length: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ModelMeta {
    /// The context the server runs with.
    #[serde(default)]
    pub n_ctx: Option<u64>,
    #[serde(default)]
    pub n_ctx_train: Option<u64>,
    #[serde(default)]
    pub n_params: Option<u64>,
    #[serde(default)]
    pub size: Option<u64>,
}

impl ModelEntry {
    /// The context length the server reports, 0 when it says none.
    pub fn context_length(&self) -> u32 {
        let n = self
            .meta
            .as_ref()
            .and_then(|m| m.n_ctx_train)
            .or(self.max_model_len)
            .or(self.context_length)
            .unwrap_or(0);
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The context window the server runs the model with, when it says.
    pub fn served_context(&self) -> Option<u32> {
        let n = self.meta.as_ref().and_then(|m| m.n_ctx)?;
        Some(u32::try_from(n).unwrap_or(u32::MAX))
    }
}

/// The message of an error body: `{"error": {"message": …}}`, `{"error": "…"}`,
/// `{"message": …}` or the text itself (nothing for other JSON); one line, at most
/// 300 characters.
pub(crate) fn error_message(body: &str) -> String {
    let text = match serde_json::from_str::<Value>(body) {
        Ok(value) => value_message(&value).unwrap_or_default(),
        Err(_) => body.to_string(),
    };
    one_line(&text, 300)
}

/// The message inside an error value (`{"error": …}`, `{"message": …}`, or the error
/// object itself).
pub(crate) fn value_message(value: &Value) -> Option<String> {
    let message = |v: &Value| v.get("message").and_then(Value::as_str).map(str::to_string);
    match value.get("error") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(error @ Value::Object(_)) => message(error).or_else(|| Some(error.to_string())),
        Some(other) => Some(other.to_string()),
        None => message(value),
    }
}

/// `text` on one line (whitespace runs collapsed), cut to `max` characters.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= max {
        return joined;
    }
    let cut: String = joined.chars().take(max).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jielong_chat::SamplingParams;

    #[test]
    fn the_body_speaks_openai() {
        let call = ToolCall::new("python", json!({"code": "print(2)"}));
        let chat = Chat::new(vec![
            Message::system("Be brief."),
            Message::user("2?"),
            Message::assistant_with_tool_calls("", vec![call.clone()]),
            Message::tool_result("2", &call),
        ])
        .with_tools(vec![ToolSpec::new("python", "Runs Python.", json!({}))])
        .with_prefill("The answer");
        let request = ChatRequest {
            logprobs: Some(3),
            stop: vec!["\n\n".into()],
            sampling: SamplingParams {
                seed: 7,
                ..SamplingParams::greedy()
            },
            ..ChatRequest::new(64)
        };
        let body = request_body("qwen", &chat, &request);
        assert_eq!(body["model"], "qwen");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["seed"], 7);
        assert_eq!(body["stop"], json!(["\n\n"]));
        assert_eq!(body["logprobs"], true);
        assert_eq!(body["top_logprobs"], 3);
        assert_eq!(body["tool_choice"], "auto");
        assert_eq!(body["tools"][0]["type"], "function");
        assert_eq!(body["tools"][0]["function"]["parameters"]["type"], "object");
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 5);
        assert_eq!(messages[2]["content"], Value::Null);
        let id = messages[2]["tool_calls"][0]["id"].as_str().unwrap();
        assert_eq!(id, "call_2_0");
        assert_eq!(
            messages[2]["tool_calls"][0]["function"]["arguments"],
            "{\"code\":\"print(2)\"}"
        );
        assert_eq!(
            messages[3],
            json!({"role": "tool", "tool_call_id": id, "content": "2"})
        );
        assert_eq!(
            messages[4],
            json!({"role": "assistant", "content": "The answer"})
        );
    }

    #[test]
    fn call_tools_are_required() {
        let chat = Chat::new(vec![Message::user("plan")]);
        let request = ChatRequest {
            call_tools: Some(vec![ToolSpec::new(
                "submit_plan",
                "Plan.",
                json!({"type": "object"}),
            )]),
            max_calls: 1,
            ..ChatRequest::default()
        };
        let body = request_body("m", &chat, &request);
        assert_eq!(body["tool_choice"], "required");
        assert_eq!(body["parallel_tool_calls"], false);
        assert_eq!(body["tools"][0]["function"]["name"], "submit_plan");
        assert!(body.get("logprobs").is_none());
        assert!(body.get("stop").is_none());
        let plain = request_body("m", &chat, &ChatRequest::default());
        assert!(plain.get("tools").is_none() && plain.get("tool_choice").is_none());
        // Greedy: no filters; sampling: the filters that act.
        assert_eq!(plain["temperature"], 0.0);
        assert!(plain.get("top_k").is_none() && plain.get("top_p").is_none());
        let sampled = ChatRequest {
            sampling: SamplingParams {
                temperature: 0.7,
                top_k: 0,
                top_p: 0.9,
                min_p: 0.1,
                seed: 3,
            },
            ..ChatRequest::default()
        };
        let body = request_body("m", &chat, &sampled);
        assert!(body.get("top_k").is_none());
        assert_eq!(body["top_p"], json!(0.9f32));
        assert_eq!(body["min_p"], json!(0.1f32));
        assert_eq!(body["seed"], 3);
    }

    #[test]
    fn error_messages_are_one_line() {
        assert_eq!(
            error_message(r#"{"error": {"message": "no\nway", "code": 1}}"#),
            "no way"
        );
        assert_eq!(error_message(r#"{"error": "bad"}"#), "bad");
        assert_eq!(error_message("plain\ttext\n"), "plain text");
        assert_eq!(error_message("{}"), "");
        assert_eq!(error_message(r#"{"message": "m"}"#), "m");
        assert!(error_message(&"x".repeat(1000)).chars().count() <= 301);
    }
}
