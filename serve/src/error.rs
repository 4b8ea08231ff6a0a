//! Errors: the ones a request gets back in OpenAI's error shape, and the ones that
//! keep a server from starting.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use jielong_chat::RuntimeError;
use jielong_wire::ErrorBody;

/// Why a server cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A host other than loopback was asked for without an API key.
    #[error("refusing to listen on {host} without an API key: anyone on the network could use the model; pass --api-key KEY (or set JIELONG_API_KEY), or bind 127.0.0.1")]
    PublicWithoutKey {
        /// The host that was asked for.
        host: String,
    },
    /// The settings are out of range.
    #[error("invalid server settings: {0}")]
    Config(String),
    /// The model session could not be opened or prepared.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// An error answer: an HTTP status and OpenAI's
/// `{"error": {"message", "type", "param", "code"}}` body.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// One line for the client.
    pub message: String,
    /// OpenAI's error `type` (`invalid_request_error`, `server_error`, …).
    pub kind: &'static str,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// A machine-readable code (`context_length_exceeded`, `invalid_api_key`, …).
    pub code: Option<&'static str>,
    /// Seconds to wait before retrying (503), sent as `Retry-After`.
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// A 400 about the request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// A 400 about one field of the request.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            ..Self::invalid(message)
        }
    }

    /// A 401: no key, or the wrong one.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            code: Some("invalid_api_key"),
            ..Self::invalid("missing or invalid API key (send `Authorization: Bearer KEY`)")
        }
    }

    /// A 503: every slot busy and the queue full.
    pub fn overloaded(queue: usize) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            code: Some("overloaded"),
            retry_after: Some(1),
            ..Self::invalid(format!(
                "the server is busy: every slot is in use and {queue} requests are already waiting; retry later"
            ))
        }
    }

    /// A 404 for a path the server does not have.
    pub fn not_found(path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: Some("not_found"),
            ..Self::invalid(format!("no such endpoint: {path}"))
        }
    }

    /// A 500: the server failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            ..Self::invalid(message)
        }
    }

    /// The error body, as sent (also inside a stream).
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(
            self.message.clone(),
            self.kind,
            self.param.clone(),
            self.code,
        )
    }
}

impl From<RuntimeError> for ApiError {
    fn from(error: RuntimeError) -> Self {
        match &error {
            RuntimeError::PromptTooLong {
                prompt_tokens,
                n_ctx,
            } => Self {
                param: Some("messages".into()),
                code: Some("context_length_exceeded"),
                ..Self::invalid(format!(
                    "the prompt has {prompt_tokens} tokens but the context window holds {n_ctx}; shorten the conversation"
                ))
            },
            RuntimeError::EmptyPrompt => Self::invalid_param("messages", error.to_string()),
            RuntimeError::InvalidRequest(_) | RuntimeError::Template(_) => {
                Self::invalid(error.to_string())
            }
            RuntimeError::Unsupported(_) => Self::invalid(error.to_string()),
            _ => Self::internal(error.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            crate::run::encode(&self.body()),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
