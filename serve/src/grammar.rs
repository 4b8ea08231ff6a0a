//! Checks that a request's tools and response format convert to a grammar before it
//! reaches the session, so a schema llama.cpp cannot enforce is a 400 with the field
//! named, not a failed generation after the response has started.

use jielong_chat::{ReplyFormat, ToolCallFormat, ToolSpec};
use jielong_llama::{check_json_schema, check_tool_schema};

use crate::error::ApiError;

/// Each tool's call (`{"name": …, <arguments>: <its schema>}`) converts to a grammar.
pub fn check_tools(format: ToolCallFormat, tools: &[ToolSpec]) -> Result<(), ApiError> {
    for (i, tool) in tools.iter().enumerate() {
        check_tool_schema(format, tool).map_err(|e| {
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
    check_json_schema(&format.schema()).map_err(|e| {
        ApiError::invalid_param(
            "response_format",
            format!(
                "the response format's JSON Schema cannot be enforced: llama.cpp cannot turn it into a grammar ({e})"
            ),
        )
    })
}
