//! The OpenAI chat-completions request built from a [`Chat`] and a [`ChatRequest`]
//! (`jielong-wire`'s types, which also read the streamed reply), what the model list
//! says of a model, and the one-line messages of error bodies.

use jielong_chat::{Chat, ChatRequest, Message, Role, ToolCall, ToolChoice, ToolSpec};
use jielong_wire::{self as openai, ChatCompletionRequest, ChatMessage};
use serde_json::{json, Value};

/// The body of a streamed `POST /chat/completions`.
pub(crate) fn request_body(
    model: &str,
    chat: &Chat,
    request: &ChatRequest,
) -> ChatCompletionRequest {
    let mut messages = messages(&chat.messages);
    if !chat.prefill.is_empty() {
        // The server continues a final assistant message (llama-server: prefill).
        messages.push(ChatMessage::text(openai::Role::Assistant, &chat.prefill));
    }
    let mut body = ChatCompletionRequest {
        model: Some(model.to_string()),
        messages,
        stream: Some(true),
        stream_options: Some(openai::StreamOptions {
            include_usage: true,
        }),
        max_tokens: Some(request.max_tokens as u64),
        ..ChatCompletionRequest::default()
    };
    let (tools, choice) = match &request.call_tools {
        Some(tools) => (tools.as_slice(), ToolChoice::Required),
        None => (chat.tools.as_slice(), request.tool_choice),
    };
    if !tools.is_empty() {
        body.tools = Some(tools.iter().map(tool).collect());
        body.tool_choice = Some(match choice {
            ToolChoice::Auto => openai::ToolChoice::Auto,
            ToolChoice::Required => openai::ToolChoice::Required,
            ToolChoice::None => openai::ToolChoice::None,
        });
        body.parallel_tool_calls = Some(request.max_calls > 1);
    }
    let sampling = &request.sampling;
    body.temperature = Some(sampling.temperature);
    // Greedy decoding ignores the filters: they are sent only when they act (`top_k`
    // and `min_p` are extensions that llama-server and vLLM read).
    if !sampling.is_greedy() {
        body.top_p = Some(sampling.top_p);
        body.top_k = (sampling.top_k > 0).then_some(sampling.top_k);
        body.min_p = (sampling.min_p > 0.0).then_some(sampling.min_p);
    }
    body.seed = Some(sampling.seed.into());
    if !request.stop.is_empty() {
        body.stop = Some(openai::Stop::Many(request.stop.clone()));
    }
    if let Some(top) = request.logprobs {
        body.logprobs = Some(true);
        body.top_logprobs = Some(top);
    }
    body
}

/// A tool as the API lists it.
fn tool(spec: &ToolSpec) -> openai::Tool {
    let parameters = match &spec.parameters {
        Value::Object(map) if !map.is_empty() => spec.parameters.clone(),
        _ => json!({"type": "object", "properties": {}}),
    };
    openai::Tool::function(&spec.name, &spec.description, parameters)
}

/// The messages in OpenAI's shape. The API ties a tool result to its call by id: calls
/// without one get `call_<message>_<call>`, and a tool message without an id answers
/// the first unanswered call of the same tool (else the first unanswered call).
fn messages(messages: &[Message]) -> Vec<ChatMessage> {
    let mut unanswered: Vec<(String, String)> = Vec::new();
    messages
        .iter()
        .enumerate()
        .map(|(at, message)| match message.role {
            Role::System => ChatMessage::text(openai::Role::System, &message.content),
            Role::User => ChatMessage::text(openai::Role::User, &message.content),
            Role::Assistant if message.tool_calls.is_empty() => {
                ChatMessage::text(openai::Role::Assistant, &message.content)
            }
            Role::Assistant => {
                unanswered.clear();
                let calls = message
                    .tool_calls
                    .iter()
                    .enumerate()
                    .map(|(n, call)| {
                        let id = call.id.clone().unwrap_or_else(|| format!("call_{at}_{n}"));
                        unanswered.push((call.name.clone(), id.clone()));
                        tool_call(call, id)
                    })
                    .collect();
                let content = (!message.content.is_empty()).then(|| message.content.clone());
                ChatMessage::assistant(content, calls)
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
                ChatMessage::tool_result(id, &message.content)
            }
        })
        .collect()
}

fn tool_call(call: &ToolCall, id: String) -> openai::ToolCall {
    let arguments = match &call.arguments {
        Value::Null => "{}".to_string(),
        other => other.to_string(),
    };
    openai::ToolCall::function(id, &call.name, arguments)
}

/// The context length a listed model has, 0 when the server says none.
pub(crate) fn context_length(model: &openai::Model) -> u32 {
    let n = model
        .meta
        .as_ref()
        .and_then(|m| m.n_ctx_train)
        .or(model.max_model_len)
        .or(model.context_length)
        .unwrap_or(0);
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The context window the server runs a listed model with, when it says.
pub(crate) fn served_context(model: &openai::Model) -> Option<u32> {
    let n = model.meta.as_ref().and_then(|m| m.n_ctx)?;
    Some(u32::try_from(n).unwrap_or(u32::MAX))
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
        let body = serde_json::to_value(request_body("qwen", &chat, &request)).expect("encodes");
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
        let body = serde_json::to_value(request_body("m", &chat, &request)).expect("encodes");
        assert_eq!(body["tool_choice"], "required");
        assert_eq!(body["parallel_tool_calls"], false);
        assert_eq!(body["tools"][0]["function"]["name"], "submit_plan");
        assert!(body.get("logprobs").is_none());
        assert!(body.get("stop").is_none());
        let plain = serde_json::to_value(request_body("m", &chat, &ChatRequest::default()))
            .expect("encodes");
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
        let body = serde_json::to_value(request_body("m", &chat, &sampled)).expect("encodes");
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
