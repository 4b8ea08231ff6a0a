//! The OpenAI request bodies the server reads (`jielong-wire`'s types) translated
//! into a [`Chat`] and a [`ChatRequest`]; what the wire types keep for a reader to
//! refuse (an unknown role, `tool_choice` or `response_format`) is refused here, as a
//! 400 naming the field.

use jielong_chat::{
    Chat, ChatRequest, Message, ReplyFormat, Role, SamplingParams, ToolCall, ToolChoice, ToolSpec,
};
use jielong_wire::{
    ChatCompletionRequest, ChatMessage, Content, ResponseFormat, Role as WireRole, Stop,
    ToolChoice as WireChoice,
};
use serde_json::Value;

use crate::error::ApiError;

/// A chat request translated: the conversation and what to generate.
#[derive(Debug)]
pub struct Translated {
    /// The conversation (on the main branch until a slot is chosen).
    pub chat: Chat,
    /// What to generate; `max_tokens` is the client's, if it gave one.
    pub request: ChatRequest,
    /// Whether the client set a token limit.
    pub max_tokens: Option<usize>,
    /// How many choices.
    pub n: usize,
    /// Stream the answer.
    pub stream: bool,
    /// Send a usage chunk at the end of a stream.
    pub include_usage: bool,
    /// Report log-probabilities.
    pub logprobs: bool,
}

/// Sampling settings from OpenAI's fields; what a request leaves out comes from
/// `defaults` (the server's, e.g. `jielong serve --temperature`), except the seed:
/// without one every request draws differently.
pub fn sampling(
    defaults: &SamplingParams,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u32>,
    min_p: Option<f32>,
    seed: Option<i64>,
) -> Result<SamplingParams, ApiError> {
    let temperature = temperature.unwrap_or(defaults.temperature);
    if !temperature.is_finite() || !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid_param(
            "temperature",
            format!("temperature {temperature} is out of range (0 to 2)"),
        ));
    }
    let top_p = top_p.unwrap_or(defaults.top_p);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid_param(
            "top_p",
            format!("top_p {top_p} is out of range (0 < top_p <= 1)"),
        ));
    }
    let min_p = min_p.unwrap_or(defaults.min_p);
    if !(0.0..=1.0).contains(&min_p) {
        return Err(ApiError::invalid_param(
            "min_p",
            format!("min_p {min_p} is out of range (0 to 1)"),
        ));
    }
    Ok(SamplingParams {
        temperature,
        top_k: top_k.unwrap_or(defaults.top_k),
        top_p,
        min_p,
        // Any 64-bit seed is accepted (llama.cpp's draw takes 32 bits).
        seed: seed.map_or_else(fresh_seed, |s| (s as u64 & 0xffff_ffff) as u32),
    })
}

/// A seed for a request that gives none.
fn fresh_seed() -> u32 {
    let id = crate::run::unique_id("");
    u32::from_str_radix(&id[..8], 16).unwrap_or_default()
}

/// A token limit from the request, checked.
pub fn token_limit(value: Option<u64>, param: &str) -> Result<Option<usize>, ApiError> {
    match value {
        None => Ok(None),
        Some(0) => Err(ApiError::invalid_param(
            param,
            format!("{param} must be at least 1"),
        )),
        Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
    }
}

/// Stop strings, checked (OpenAI allows up to 4; more are accepted).
pub fn stops(stop: Option<Stop>) -> Result<Vec<String>, ApiError> {
    let stops = stop.map(Stop::into_vec).unwrap_or_default();
    if stops.iter().any(String::is_empty) {
        return Err(ApiError::invalid_param(
            "stop",
            "a stop string must not be empty",
        ));
    }
    Ok(stops)
}

/// Translates a chat request; a bad role, content part, argument string or option is
/// a 400 naming the field.
pub fn translate(
    wire: ChatCompletionRequest,
    max_n: usize,
    defaults: &SamplingParams,
) -> Result<Translated, ApiError> {
    if wire.messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must not be empty",
        ));
    }
    let mut messages = Vec::with_capacity(wire.messages.len());
    for (i, m) in wire.messages.into_iter().enumerate() {
        messages.push(message(i, m)?);
    }
    let mut tools = Vec::new();
    for (i, tool) in wire.tools.unwrap_or_default().into_iter().enumerate() {
        if tool.kind.as_deref().is_some_and(|k| k != "function") {
            return Err(ApiError::invalid_param(
                format!("tools[{i}].type"),
                "only tools of type \"function\" are supported",
            ));
        }
        let f = tool.function;
        if f.name.trim().is_empty() {
            return Err(ApiError::invalid_param(
                format!("tools[{i}].function.name"),
                "a tool needs a name",
            ));
        }
        let parameters = match f.parameters {
            None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => p,
            Some(_) => {
                return Err(ApiError::invalid_param(
                    format!("tools[{i}].function.parameters"),
                    "parameters must be a JSON Schema object",
                ))
            }
        };
        tools.push(ToolSpec::new(
            f.name,
            f.description.unwrap_or_default(),
            parameters,
        ));
    }
    let (tool_choice, call_tools) = tool_choice(wire.tool_choice, &tools)?;
    let n = wire.n.unwrap_or(1) as usize;
    if n == 0 || n > max_n {
        return Err(ApiError::invalid_param(
            "n",
            format!("n must be between 1 and {max_n} on this server"),
        ));
    }
    let logprobs = wire.logprobs.unwrap_or(false);
    let top = wire.top_logprobs.unwrap_or(0);
    if top > jielong_chat::logprob::MAX_TOP_LOGPROBS {
        return Err(ApiError::invalid_param(
            "top_logprobs",
            format!(
                "top_logprobs must be at most {}",
                jielong_chat::logprob::MAX_TOP_LOGPROBS
            ),
        ));
    }
    if wire.top_logprobs.is_some() && !logprobs {
        return Err(ApiError::invalid_param(
            "top_logprobs",
            "top_logprobs needs logprobs: true",
        ));
    }
    let max_tokens = match token_limit(wire.max_completion_tokens, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => token_limit(wire.max_tokens, "max_tokens")?,
    };
    let format = response_format(wire.response_format)?;
    let request = ChatRequest {
        max_tokens: max_tokens.unwrap_or(1),
        sampling: sampling(
            defaults,
            wire.temperature,
            wire.top_p,
            wire.top_k,
            wire.min_p,
            wire.seed,
        )?,
        stop: stops(wire.stop)?,
        tool_choice,
        call_tools,
        max_calls: if wire.parallel_tool_calls == Some(false) {
            1
        } else {
            jielong_chat::ToolConstraint::DEFAULT_MAX_CALLS
        },
        logprobs: logprobs.then_some(top),
        format,
        ..ChatRequest::default()
    };
    Ok(Translated {
        chat: Chat::new(messages).with_tools(tools),
        request,
        max_tokens,
        n,
        stream: wire.stream.unwrap_or(false),
        include_usage: wire.stream_options.is_some_and(|o| o.include_usage),
        logprobs,
    })
}

/// One message, checked.
fn message(i: usize, m: ChatMessage) -> Result<Message, ApiError> {
    let role = match m.role {
        WireRole::System | WireRole::Developer => Role::System,
        WireRole::User => Role::User,
        WireRole::Assistant => Role::Assistant,
        WireRole::Tool => Role::Tool,
        WireRole::Other(other) => {
            return Err(ApiError::invalid_param(
                format!("messages[{i}].role"),
                format!(
                    "unknown role {other:?} (expected system, developer, user, assistant or tool)"
                ),
            ))
        }
    };
    let content = match m.content {
        None => String::new(),
        Some(Content::Text(text)) => text,
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for (k, part) in parts.into_iter().enumerate() {
                match (part.kind.as_str(), part.text) {
                    ("text", Some(t)) => text.push_str(&t),
                    (kind, _) => {
                        return Err(ApiError::invalid_param(
                            format!("messages[{i}].content[{k}]"),
                            format!("content parts of type {kind:?} are not supported (text only)"),
                        ))
                    }
                }
            }
            text
        }
    };
    let mut message = Message::new(role, content);
    if let Some(calls) = m.tool_calls {
        if role != Role::Assistant && !calls.is_empty() {
            return Err(ApiError::invalid_param(
                format!("messages[{i}].tool_calls"),
                "only assistant messages carry tool_calls",
            ));
        }
        for (k, call) in calls.into_iter().enumerate() {
            let text = &call.function.arguments;
            let arguments = if text.trim().is_empty() {
                serde_json::json!({})
            } else {
                serde_json::from_str(text).map_err(|e| {
                    ApiError::invalid_param(
                        format!("messages[{i}].tool_calls[{k}].function.arguments"),
                        format!("the arguments are not valid JSON: {e}"),
                    )
                })?
            };
            let mut parsed = ToolCall::new(call.function.name, arguments);
            parsed.id = call.id;
            message.tool_calls.push(parsed);
        }
    }
    if role == Role::Tool {
        message.tool_call_id = m.tool_call_id;
    }
    message.name = m.name;
    Ok(message)
}

/// `tool_choice`: the choice and, for a named function, the one tool it may call.
fn tool_choice(
    choice: Option<WireChoice>,
    tools: &[ToolSpec],
) -> Result<(ToolChoice, Option<Vec<ToolSpec>>), ApiError> {
    let bad = |message: String| ApiError::invalid_param("tool_choice", message);
    let named = |name: &str| {
        let tool = tools
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| bad(format!("tool_choice names {name:?}, which is not in tools")))?;
        Ok((ToolChoice::Required, Some(vec![tool.clone()])))
    };
    match choice {
        None | Some(WireChoice::Auto) | Some(WireChoice::Other(Value::Null)) => {
            Ok((ToolChoice::Auto, None))
        }
        Some(WireChoice::None) => Ok((ToolChoice::None, None)),
        Some(WireChoice::Required) if tools.is_empty() => {
            Err(bad("tool_choice \"required\" needs tools".into()))
        }
        Some(WireChoice::Required) => Ok((ToolChoice::Required, None)),
        Some(WireChoice::Function(choice)) => named(&choice.function.name),
        Some(WireChoice::Other(Value::String(other))) => Err(bad(format!(
            "unknown tool_choice {other:?} (auto, none, required or a function)"
        ))),
        Some(WireChoice::Other(Value::Object(map))) => {
            let name = map
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    bad("expected {\"type\": \"function\", \"function\": {\"name\": …}}".into())
                })?;
            named(name)
        }
        Some(WireChoice::Other(_)) => Err(bad("tool_choice must be a string or an object".into())),
    }
}

/// `response_format`: none for text, else the reply format; anything else is a 400.
fn response_format(format: Option<ResponseFormat>) -> Result<Option<ReplyFormat>, ApiError> {
    let bad = |message: String| ApiError::invalid_param("response_format", message);
    match format {
        None | Some(ResponseFormat::Text) | Some(ResponseFormat::Other(Value::Null)) => Ok(None),
        Some(ResponseFormat::JsonObject) => Ok(Some(ReplyFormat::JsonObject)),
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            // OpenAI nests the schema ({"name", "schema", "strict"}); accept a bare one too.
            let schema = json_schema.get("schema").unwrap_or(&json_schema).clone();
            if !schema.is_object() {
                return Err(bad("the JSON Schema must be an object".into()));
            }
            Ok(Some(ReplyFormat::JsonSchema(schema)))
        }
        // What the typed formats did not take: no type, an unknown one, no schema.
        Some(ResponseFormat::Other(value)) => match value.get("type").and_then(Value::as_str) {
            None => Err(bad("response_format needs a \"type\"".into())),
            Some("text") => Ok(None),
            Some("json_object") => Ok(Some(ReplyFormat::JsonObject)),
            Some("json_schema") => Err(bad(
                "a json_schema response format needs \"json_schema\"".into()
            )),
            Some(other) => Err(bad(format!(
                "unknown response_format type {other:?} (text, json_object or json_schema)"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn translate(body: Value) -> Result<Translated, ApiError> {
        let request: ChatCompletionRequest = serde_json::from_value(body).expect("parses");
        super::translate(request, 4, &SamplingParams::greedy())
    }

    fn tool() -> Value {
        json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}})
    }

    #[test]
    fn messages_tools_and_choices_translate() {
        let t = translate(json!({
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "2"},
            ],
            "tools": [tool()],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "stop": "END", "max_completion_tokens": 9, "n": 2, "seed": 5,
            "logprobs": true, "top_logprobs": 3, "stream": true,
            "stream_options": {"include_usage": true},
        }))
        .expect("valid");
        let m = &t.chat.messages;
        assert_eq!(m[0].role, Role::System);
        assert_eq!(m[0].content, "Be brief.");
        assert_eq!(m[2].tool_calls[0].arguments, json!({"x": 1}));
        assert_eq!(m[2].tool_calls[0].id.as_deref(), Some("call_1"));
        assert_eq!(m[3].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(t.request.tool_choice, ToolChoice::Required);
        assert_eq!(t.request.call_tools.as_ref().map(Vec::len), Some(1));
        assert_eq!(t.request.stop, vec!["END".to_string()]);
        assert_eq!(t.max_tokens, Some(9));
        assert_eq!(t.request.logprobs, Some(3));
        assert_eq!(t.request.sampling.seed, 5);
        assert!(t.stream && t.include_usage && t.logprobs);
        assert_eq!(t.n, 2);
    }

    #[test]
    fn bad_fields_are_400s_naming_the_field() {
        let param = |body: Value| translate(body).expect_err("invalid").param;
        let user = json!([{"role": "user", "content": "hi"}]);
        assert_eq!(
            param(json!({"messages": [{"role": "robot", "content": "x"}]})).as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(
            param(json!({"messages": [{"role": "assistant", "tool_calls": [
                {"function": {"name": "f", "arguments": "{not json"}}]}]}))
            .as_deref(),
            Some("messages[0].tool_calls[0].function.arguments")
        );
        assert_eq!(
            param(json!({"messages": user, "tool_choice": "required"})).as_deref(),
            Some("tool_choice")
        );
        assert_eq!(
            param(json!({"messages": user, "tools": [tool()],
                         "tool_choice": {"type": "function", "function": {"name": "g"}}}))
            .as_deref(),
            Some("tool_choice")
        );
        assert_eq!(
            param(json!({"messages": user, "response_format": {"type": "yaml"}})).as_deref(),
            Some("response_format")
        );
        assert_eq!(
            param(json!({"messages": user, "n": 9})).as_deref(),
            Some("n")
        );
        assert_eq!(
            param(json!({"messages": user, "temperature": 3})).as_deref(),
            Some("temperature")
        );
        assert_eq!(
            param(json!({"messages": user, "max_tokens": 0})).as_deref(),
            Some("max_tokens")
        );
        let json_schema = translate(json!({"messages": user, "response_format":
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}))
        .expect("valid");
        assert_eq!(
            json_schema.request.format,
            Some(ReplyFormat::JsonSchema(json!({"type": "object"})))
        );
    }
}
