//! The error body: `{"error": {"message", "type", "param", "code"}}`.

use serde::{Deserialize, Serialize};

/// An error answer's body (also sent as a `data:` event inside a stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

impl ErrorBody {
    /// An error of `kind` (`invalid_request_error`, `server_error`, …) with the field
    /// at fault and a machine-readable code, when there are.
    pub fn new(
        message: impl Into<String>,
        kind: impl Into<String>,
        param: Option<String>,
        code: Option<&str>,
    ) -> Self {
        Self {
            error: ErrorDetail {
                message: message.into(),
                kind: kind.into(),
                param,
                code: code.map(|c| ErrorCode::Name(c.into())),
            },
        }
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// One line for people.
    pub message: String,
    /// OpenAI's error type (`invalid_request_error`, `server_error`, …).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The request field at fault (`null` when none is).
    #[serde(default)]
    pub param: Option<String>,
    /// A machine-readable code (`null` when there is none).
    #[serde(default)]
    pub code: Option<ErrorCode>,
}

/// An error's `code`: a name (OpenAI: `context_length_exceeded`), or a number
/// (llama-server sends the HTTP status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ErrorCode {
    /// A name.
    Name(String),
    /// A number.
    Number(i64),
}
