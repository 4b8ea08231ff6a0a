//! Requests and their faults: sending with retries, reading error bodies, and turning
//! every failure into one typed, one-line [`RuntimeError::Remote`] that names the URL.

use std::future::Future;
use std::time::Duration;

use jielong_chat::{GenerationSender, RemoteFault, RuntimeError};
use reqwest::{Response, StatusCode};

use crate::config::RemoteConfig;
use crate::wire::{error_message, one_line};

/// How often a wait checks whether the caller cancelled.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// A remote fault: `kind`, and `message` on one line.
pub(crate) fn fault(kind: RemoteFault, message: impl AsRef<str>) -> RuntimeError {
    RuntimeError::Remote {
        kind,
        message: one_line(message.as_ref(), 600),
    }
}

/// Runs `future` unless the caller cancels first (`None` then).
pub(crate) async fn unless_cancelled<F: Future>(
    sender: Option<&GenerationSender>,
    future: F,
) -> Option<F::Output> {
    let Some(sender) = sender else {
        return Some(future.await);
    };
    tokio::pin!(future);
    let mut poll = tokio::time::interval(CANCEL_POLL);
    loop {
        tokio::select! {
            out = &mut future => return Some(out),
            _ = poll.tick() => {
                if sender.is_cancelled() {
                    return None;
                }
            }
        }
    }
}

/// A request as a function of nothing, so it can be sent again.
pub(crate) type MakeRequest<'a> = &'a (dyn Fn() -> reqwest::RequestBuilder + Send + Sync);

/// Sends the request `make` builds until it is answered 2xx, retrying 429 and 5xx per
/// the config's policy; `None` when the caller cancelled. `what` names the request in
/// messages (`POST http://…/chat/completions`).
pub(crate) async fn send(
    config: &RemoteConfig,
    what: &str,
    make: MakeRequest<'_>,
    sender: Option<&GenerationSender>,
) -> Result<Option<Response>, RuntimeError> {
    let policy = config.retry();
    let limit = config.timeouts().first_byte;
    let mut attempt = 0u32;
    loop {
        let sent = tokio::time::timeout(limit, make().send());
        let response = match unless_cancelled(sender, sent).await {
            None => return Ok(None),
            Some(Err(_)) => {
                return Err(fault(
                    RemoteFault::Timeout,
                    format!(
                        "{what}: no response within {} (first-byte time-out)",
                        seconds(limit)
                    ),
                ))
            }
            Some(Ok(Err(e))) => return Err(transport(what, &e, config)),
            Some(Ok(Ok(response))) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(Some(response));
        }
        let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        if retryable && attempt < policy.retries {
            let wait = policy.wait(attempt, retry_after(&response));
            tracing::debug!(%status, attempt, ?wait, "{what}: retrying");
            drop(response);
            if unless_cancelled(sender, tokio::time::sleep(wait))
                .await
                .is_none()
            {
                return Ok(None);
            }
            attempt += 1;
            continue;
        }
        return Err(status_fault(what, response, attempt, config).await);
    }
}

/// `Retry-After` in seconds (the HTTP-date form is left to the backoff).
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    let secs: f64 = value.to_str().ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// The fault for a response that is not 2xx.
async fn status_fault(
    what: &str,
    response: Response,
    retries: u32,
    config: &RemoteConfig,
) -> RuntimeError {
    let status = response.status();
    let body = match tokio::time::timeout(config.timeouts().first_byte, response.text()).await {
        Ok(Ok(body)) => body,
        _ => String::new(),
    };
    let detail = error_message(&body);
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    };
    let after = if retries > 0 {
        format!(
            " (after {retries} retr{})",
            if retries == 1 { "y" } else { "ies" }
        )
    } else {
        String::new()
    };
    let status_text = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let status_text = status_text.trim_end();
    match status.as_u16() {
        401 | 403 => fault(
            RemoteFault::Unauthorized,
            format!(
                "{what}: {status_text}{detail}; {}",
                if config.has_api_key() {
                    "the server refused the API key"
                } else {
                    "the server wants an API key (add ;api_key_env=VAR to the reference)"
                }
            ),
        ),
        404 => fault(
            RemoteFault::UnknownModel,
            format!(
                "{what}: {status_text}{detail} (model `{}`; is {} an OpenAI-compatible API base URL?)",
                config.model(),
                config.base_url()
            ),
        ),
        429 => fault(RemoteFault::RateLimited, format!("{what}: {status_text}{after}{detail}")),
        500..=599 => fault(RemoteFault::Server, format!("{what}: {status_text}{after}{detail}")),
        400 => context_exceeded(&body).unwrap_or_else(|| {
            fault(
                RemoteFault::Protocol,
                format!("{what}: the server refused the request: {status_text}{detail}"),
            )
        }),
        _ => fault(
            RemoteFault::Protocol,
            format!("{what}: unexpected status {status_text}{detail}"),
        ),
    }
}

/// llama-server's answer to a prompt larger than its context.
fn context_exceeded(body: &str) -> Option<RuntimeError> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let error = value.get("error")?;
    if error.get("type")?.as_str()? != "exceed_context_size_error" {
        return None;
    }
    let prompt_tokens = error.get("n_prompt_tokens")?.as_u64()?;
    let n_ctx = error.get("n_ctx")?.as_u64()?;
    Some(RuntimeError::PromptTooLong {
        prompt_tokens: usize::try_from(prompt_tokens).ok()?,
        n_ctx: u32::try_from(n_ctx).ok()?,
    })
}

/// The fault for a request that got no response.
pub(crate) fn transport(what: &str, error: &reqwest::Error, config: &RemoteConfig) -> RuntimeError {
    let cause = root_cause(error);
    if error.is_timeout() {
        let limit = if error.is_connect() {
            config.timeouts().connect
        } else {
            config.timeouts().first_byte
        };
        return fault(
            RemoteFault::Timeout,
            format!("{what}: no answer within {}: {cause}", seconds(limit)),
        );
    }
    if error.is_connect() {
        return fault(
            RemoteFault::Unreachable,
            format!("{what}: cannot connect: {cause} (is the server running?)"),
        );
    }
    fault(RemoteFault::Protocol, format!("{what}: {cause}"))
}

/// The innermost cause of an error (reqwest's own message names the URL, which the
/// caller already does).
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// `5 s`, `250 ms`.
pub(crate) fn seconds(d: Duration) -> String {
    if d >= Duration::from_secs(1) && d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}
