//! # jielong-serve
//!
//! An OpenAI-compatible HTTP server over any
//! [`BranchedSession`](jielong_chat::BranchedSession) (the embedded
//! llama.cpp runtime's, or a scripted one in tests), as an axum [`Router`] an
//! application can mount or serve on its own:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use jielong_llama::LlamaModel;
//! use jielong_chat::SessionOptions;
//! use jielong_serve::{router, ServeConfig, ServeState};
//!
//! let model = LlamaModel::load("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")?;
//! let config = ServeConfig::new("qwen2.5-coder-0.5b");
//! let state = tokio::task::spawn_blocking(move || {
//!     let session = model.session(&config.session_options(&SessionOptions::default()))?;
//!     ServeState::open(Arc::new(session), config)
//! })
//! .await??;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, router(state)).await?;
//! # Ok(()) }
//! ```
//!
//! Endpoints: `POST /v1/chat/completions` (tools and `tool_choice`, streaming,
//! log-probabilities, `n`, `response_format`), `POST /v1/completions` (raw text),
//! `GET /v1/models`, `GET /health` (no key needed), `GET /metrics` (Prometheus).
//!
//! One session serves every request. Each request runs on a *slot* — a branch of the
//! session's KV cache — chosen as the idle one sharing the longest prefix with its
//! prompt, so a conversation that extends an earlier one only evaluates what is new;
//! an opening another slot holds (a shared system prompt) is borrowed from it by the
//! runtime, not evaluated again. Requests on different slots decode together in one batch per step (the worker's
//! continuous batching); requests beyond `parallel` wait in a bounded queue, and
//! beyond that get 503 with `Retry-After`. A client that disconnects from a stream
//! cancels its generation.

mod calls;
mod chat;
mod completions;
mod error;
mod metrics;
mod run;
mod slots;
mod state;
mod wire;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use jielong_wire as openai;
use subtle::ConstantTimeEq;

pub use calls::written_call;
pub use error::{ApiError, ServeError};
pub use state::{ServeConfig, ServeState};

/// The server's routes over `state`, with its body limit, API-key check and request
/// counters. Mount it in an app or serve it with `axum::serve`.
pub fn router(state: ServeState) -> Router {
    let limit = state.config().body_limit;
    let api = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{*model}", get(model))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/health", get(health))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` completes (then stops taking
/// connections and lets running requests finish).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ServeState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Whether `host` is a loopback address (or `localhost`), where a server without a
/// key is safe to start.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses a non-loopback `host` without an API key.
pub fn check_exposure(host: &str, api_key: Option<&str>) -> Result<(), ServeError> {
    if api_key.is_none() && !is_loopback(host) {
        return Err(ServeError::PublicWithoutKey {
            host: host.to_string(),
        });
    }
    Ok(())
}

/// 401 unless the request carries the key (when one is set), compared in constant
/// time.
async fn authorize(State(state): State<ServeState>, request: Request, next: Next) -> Response {
    let Some(key) = state.config().api_key.as_deref() else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    let equal_length = given.len() == key.len();
    // Compare against the key itself when the lengths differ, so the time taken
    // does not depend on how much of a guess is right.
    let against = if equal_length { given } else { key };
    let same = bool::from(against.as_bytes().ct_eq(key.as_bytes())) && equal_length;
    if same {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// Counts every answer by endpoint and status.
async fn count(State(state): State<ServeState>, request: Request, next: Next) -> Response {
    let endpoint = match request.uri().path() {
        "/v1/chat/completions" => "chat_completions",
        "/v1/completions" => "completions",
        "/v1/models" => "models",
        path if path.starts_with("/v1/models/") => "models",
        "/health" => "health",
        "/metrics" => "metrics",
        _ => "other",
    };
    let response = next.run(request).await;
    state
        .inner
        .metrics
        .record(endpoint, response.status().as_u16());
    response
}

/// `GET /health` (llama-server's shape, not OpenAI's).
#[derive(serde::Serialize)]
struct Health {
    status: &'static str,
    slots: usize,
    slots_idle: usize,
}

async fn health(State(state): State<ServeState>) -> Response {
    let (slots, idle) = state.inner.slots.counts();
    let body = Health {
        status: "ok",
        slots,
        slots_idle: idle,
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        run::encode(&body),
    )
        .into_response()
}

/// The one model, as `/v1/models` lists it.
fn served_model(state: &ServeState) -> openai::Model {
    let info = &state.inner.info;
    openai::Model {
        id: state.config().model_id.clone(),
        object: "model".into(),
        created: Some(state.inner.created),
        owned_by: Some("jielong".into()),
        meta: Some(openai::ModelMeta {
            name: Some(info.name.clone()),
            architecture: Some(info.architecture.clone()),
            parameters: Some(info.parameters),
            context_length: Some(state.inner.session.context_size().into()),
            context_length_trained: Some(info.context_length.into()),
            ..openai::ModelMeta::default()
        }),
        ..openai::Model::default()
    }
}

async fn models(State(state): State<ServeState>) -> Response {
    let body = openai::ModelList::of(vec![served_model(&state)]);
    (
        [(header::CONTENT_TYPE, "application/json")],
        run::encode(&body),
    )
        .into_response()
}

async fn model(State(state): State<ServeState>, Path(id): Path<String>) -> Response {
    if id != state.config().model_id {
        return ApiError {
            status: StatusCode::NOT_FOUND,
            code: Some("model_not_found"),
            ..ApiError::invalid_param(
                "model",
                format!(
                    "the model {id:?} is not served here (this server serves {:?})",
                    state.config().model_id
                ),
            )
        }
        .into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        run::encode(&served_model(&state)),
    )
        .into_response()
}

async fn metrics(State(state): State<ServeState>) -> Response {
    let kv = state.kv_usage().await;
    let (slots, _) = state.inner.slots.counts();
    let text = state.inner.metrics.render(kv.as_ref(), slots);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> Response {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: Some("method_not_allowed"),
        ..ApiError::invalid(format!("{method} is not allowed on {}", uri.path()))
    }
    .into_response()
}

async fn not_found(uri: Uri) -> Response {
    ApiError::not_found(uri.path()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_may_go_without_a_key() {
        assert!(check_exposure("127.0.0.1", None).is_ok());
        assert!(check_exposure("::1", None).is_ok());
        assert!(check_exposure("localhost", None).is_ok());
        assert!(check_exposure("0.0.0.0", None).is_err());
        assert!(check_exposure("0.0.0.0", Some("k")).is_ok());
    }
}
