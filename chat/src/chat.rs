//! Chat messages, tool calls and tool descriptions: the types every part of Jielong speaks.
//!
//! They serialize with serde in a flat, OpenAI-like shape:
//!
//! ```
//! use jielong_chat::chat::{Message, Role, ToolCall};
//! use serde_json::json;
//!
//! let call = ToolCall::new("get_weather", json!({"city": "Paris"})).with_id("call_1");
//! let history = vec![
//!     Message::system("You are terse."),
//!     Message::user("Weather in Paris?"),
//!     Message::assistant_with_tool_calls("", vec![call.clone()]),
//!     Message::tool_result("18°C, cloudy", &call),
//! ];
//! assert_eq!(history[3].role, Role::Tool);
//! assert_eq!(history[3].tool_call_id.as_deref(), Some("call_1"));
//! let json = serde_json::to_string(&history[1]).unwrap();
//! assert_eq!(json, r#"{"role":"user","content":"Weather in Paris?"}"#);
//! ```
//!
//! How these types appear inside a model's chat template is described in
//! [`crate::template`].

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Who speaks a [`Message`].
///
/// Serialized in lowercase (`"system"`, `"user"`, `"assistant"`, `"tool"`), which is also the
/// string chat templates compare `message.role` against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that set up the conversation.
    System,
    /// The human (or the program acting for them).
    User,
    /// The model.
    Assistant,
    /// The result of a tool the model called.
    Tool,
}

impl Role {
    /// The lowercase name of the role, as chat templates see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// The text of the turn; may be empty (e.g. an assistant turn that only calls tools).
    #[serde(default)]
    pub content: String,
    /// Tools the assistant calls in this turn (only meaningful for [`Role::Assistant`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a [`Role::Tool`] message: the [`ToolCall::id`] this message answers, if calls have ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a [`Role::Tool`] message: the name of the tool that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    /// A message with the given role and text, and nothing else.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// A plain assistant message (no tool calls).
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// An assistant message that calls tools; `content` is any text the model wrote besides the
    /// calls (often empty).
    pub fn assistant_with_tool_calls(
        content: impl Into<String>,
        tool_calls: Vec<ToolCall>,
    ) -> Self {
        Message {
            tool_calls,
            ..Self::new(Role::Assistant, content)
        }
    }

    /// A tool result: `content` is what the tool returned, `name` the tool's name.
    ///
    /// Add the id of the call it answers with [`Message::with_tool_call_id`], or build it from
    /// the call with [`Message::tool_result`].
    pub fn tool(content: impl Into<String>, name: impl Into<String>) -> Self {
        Message {
            name: Some(name.into()),
            ..Self::new(Role::Tool, content)
        }
    }

    /// A tool result answering `call`: takes the tool's name and the call's id (if any) from it.
    pub fn tool_result(content: impl Into<String>, call: &ToolCall) -> Self {
        Message {
            name: Some(call.name.clone()),
            tool_call_id: call.id.clone(),
            ..Self::new(Role::Tool, content)
        }
    }

    /// Sets [`Message::tool_call_id`] (builder style).
    pub fn with_tool_call_id(mut self, id: impl Into<String>) -> Self {
        self.tool_call_id = Some(id.into());
        self
    }

    /// The message as the dict Hugging Face chat templates see in `messages`: `role` and
    /// `content`, plus `tool_calls` (see [`ToolCall::to_template_json`]) when there are any, and
    /// `tool_call_id` / `name` when set.
    pub fn to_template_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        map.insert("role".into(), Value::String(self.role.as_str().into()));
        map.insert("content".into(), Value::String(self.content.clone()));
        if !self.tool_calls.is_empty() {
            map.insert(
                "tool_calls".into(),
                Value::Array(
                    self.tool_calls
                        .iter()
                        .map(ToolCall::to_template_json)
                        .collect(),
                ),
            );
        }
        if let Some(id) = &self.tool_call_id {
            map.insert("tool_call_id".into(), Value::String(id.clone()));
        }
        if let Some(name) = &self.name {
            map.insert("name".into(), Value::String(name.clone()));
        }
        Value::Object(map)
    }
}

/// A call of a tool by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ToolCall {
    /// An id tying the call to its result message, when the caller assigns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The name of the tool called.
    pub name: String,
    /// The arguments, normally a JSON object matching the tool's [`ToolSpec::parameters`].
    #[serde(default)]
    pub arguments: Value,
}

impl ToolCall {
    /// A call of `name` with `arguments`, without an id.
    pub fn new(name: impl Into<String>, arguments: Value) -> Self {
        ToolCall {
            id: None,
            name: name.into(),
            arguments,
        }
    }

    /// Sets [`ToolCall::id`] (builder style).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The call in the shape Hugging Face chat templates expect in `message.tool_calls`:
    /// `{"id"?, "type": "function", "function": {"name", "arguments"}}`, with `arguments` kept
    /// as a JSON value (templates render it with `| tojson`).
    pub fn to_template_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        if let Some(id) = &self.id {
            map.insert("id".into(), Value::String(id.clone()));
        }
        map.insert("type".into(), Value::String("function".into()));
        map.insert(
            "function".into(),
            json!({"name": self.name, "arguments": self.arguments}),
        );
        Value::Object(map)
    }
}

/// The description of a tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The name the model uses to call the tool.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// A JSON Schema of the arguments (normally `{"type": "object", "properties": {...}}`).
    pub parameters: Value,
}

impl ToolSpec {
    /// A tool named `name`, described by `description`, taking arguments per the JSON Schema
    /// `parameters`.
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        ToolSpec {
            name: name.into(),
            description: description.into(),
            parameters,
        }
    }

    /// The tool in the OpenAI shape that Hugging Face chat templates expect in `tools`:
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`.
    pub fn to_template_json(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            }
        })
    }
}
