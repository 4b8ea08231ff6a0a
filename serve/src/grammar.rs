//! Checks that a request's tools and response format convert to a grammar, before
//! it reaches the session: the worker fails a request whose grammar it cannot build
//! by clearing the whole KV cache, every slot's branch with it.

use jielong_core::llama::llama_cpp_2;
use jielong_core::{ReplyFormat, ToolCallFormat, ToolSpec};
use serde_json::{json, Value};

use crate::error::ApiError;

/// A JSON Schema as llama.cpp's converter takes it (no `$schema`; an empty one is
/// any object).
fn arguments_schema(parameters: &Value) -> Value {
    match parameters {
        Value::Object(map) if !map.is_empty() => {
            let mut map = map.clone();
            map.remove("$schema");
            Value::Object(map)
        }
        _ => json!({"type": "object"}),
    }
}

fn converts(schema: &Value) -> Result<(), String> {
    // The converter throws on what it cannot handle; llama-cpp-2 returns that as
    // an error (without its text).
    llama_cpp_2::json_schema_to_grammar(&schema.to_string())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Each tool's call (`{"name": …, <arguments>: <its schema>}`) converts to a grammar.
pub fn check_tools(format: ToolCallFormat, tools: &[ToolSpec]) -> Result<(), ApiError> {
    let key = format.arguments_key();
    for (i, tool) in tools.iter().enumerate() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"const": tool.name},
                key: arguments_schema(&tool.parameters),
            },
            "required": ["name", key],
            "additionalProperties": false,
        });
        converts(&schema).map_err(|e| {
            ApiError::invalid_param(
                format!("tools[{i}].function.parameters"),
                format!(
                    "the parameters of tool `{}` cannot be enforced: llama.cpp cannot turn the JSON Schema into a grammar ({e})",
                    tool.name
                ),
            )
        })?;
    }
    Ok(())
}

/// The response format converts to a grammar.
pub fn check_format(format: &ReplyFormat) -> Result<(), ApiError> {
    converts(&format.schema()).map_err(|e| {
        ApiError::invalid_param(
            "response_format",
            format!(
                "the response format's JSON Schema cannot be enforced: llama.cpp cannot turn it into a grammar ({e})"
            ),
        )
    })
}
