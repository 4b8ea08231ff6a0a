//! Where the server is and how patiently to talk to it: [`RemoteConfig`], parsed from
//! a model reference `openai:<base_url>#<model>[;api_key_env=VAR]`.

use std::fmt;
use std::time::Duration;

/// The prefix of a remote model reference.
pub const SCHEME: &str = "openai:";

/// A model reference that is not a valid remote reference, or names an API-key
/// variable that is not set. One line: `invalid model reference `…`: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid model reference `{reference}`: {reason}")]
pub struct ConfigError {
    /// What was given.
    pub reference: String,
    /// What is wrong with it.
    pub reason: String,
}

/// How long to wait for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the TCP (and TLS) connection.
    pub connect: Duration,
    /// From sending a request to the response's status and headers (a server that
    /// evaluates a long prompt before answering needs this long).
    pub first_byte: Duration,
    /// Between two pieces of a streamed reply.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

/// How requests answered 429 or 5xx are retried: up to `retries` more times, waiting
/// `initial_backoff`, then twice as long each time, or what the server's
/// `Retry-After` asks, never longer than `max_wait`. Only a request whose reply has
/// not started streaming is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// The wait before the first retry.
    pub initial_backoff: Duration,
    /// The longest wait before one retry.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 3,
            initial_backoff: Duration::from_millis(250),
            max_wait: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based), given the server's
    /// `Retry-After` (if any).
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt));
        retry_after.unwrap_or(backoff).min(self.max_wait)
    }
}

/// A remote OpenAI-compatible server and the model to use on it.
///
/// ```
/// use jielong_remote::RemoteConfig;
///
/// let config = RemoteConfig::parse("openai:http://127.0.0.1:8080/v1#qwen")?;
/// assert_eq!(config.base_url(), "http://127.0.0.1:8080/v1");
/// assert_eq!(config.model(), "qwen");
/// assert_eq!(config.url("models"), "http://127.0.0.1:8080/v1/models");
/// # Ok::<(), jielong_remote::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RemoteConfig {
    base_url: String,
    model: String,
    api_key: Option<String>,
    api_key_env: Option<String>,
    timeouts: Timeouts,
    retry: RetryPolicy,
}

impl fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_env", &self.api_key_env)
            .field("timeouts", &self.timeouts)
            .field("retry", &self.retry)
            .finish()
    }
}

impl RemoteConfig {
    /// Whether `reference` is meant as a remote reference (starts with `openai:`).
    pub fn is_remote(reference: &str) -> bool {
        reference.starts_with(SCHEME)
    }

    /// A server at `base_url` (e.g. `http://127.0.0.1:8080/v1`, the part the
    /// `/chat/completions` and `/models` paths are appended to) and the model id
    /// `model`, no API key, default timeouts and retries.
    pub fn new(base_url: &str, model: &str) -> Result<Self, ConfigError> {
        let reference = format!("{SCHEME}{base_url}#{model}");
        let fail = |reason: String| ConfigError {
            reference: reference.clone(),
            reason,
        };
        let base_url = check_base_url(base_url).map_err(fail)?;
        if model.trim().is_empty() {
            return Err(fail("the model id is empty".into()));
        }
        Ok(Self {
            base_url,
            model: model.to_string(),
            api_key: None,
            api_key_env: None,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
        })
    }

    /// Parses `openai:<base_url>#<model>[;api_key_env=VAR]`; the API key is read from
    /// the environment variable `VAR` (an error if it is unset or empty).
    pub fn parse(reference: &str) -> Result<Self, ConfigError> {
        Self::parse_with_env(reference, |name| std::env::var(name).ok())
    }

    /// [`RemoteConfig::parse`] with environment variables looked up by `env`.
    pub fn parse_with_env(
        reference: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let fail = |reason: String| ConfigError {
            reference: reference.to_string(),
            reason,
        };
        let Some(rest) = reference.strip_prefix(SCHEME) else {
            return Err(fail(format!(
                "a remote model reference starts with `{SCHEME}` (`{SCHEME}<base_url>#<model>`)"
            )));
        };
        let Some((base, after)) = rest.split_once('#') else {
            return Err(fail(format!(
                "no model id: write `{SCHEME}<base_url>#<model>`, e.g. `{SCHEME}http://127.0.0.1:8080/v1#qwen`"
            )));
        };
        if base.is_empty() {
            return Err(fail("no base URL before `#`".into()));
        }
        let mut parts = after.split(';');
        let model = parts.next().unwrap_or_default();
        if model.trim().is_empty() {
            return Err(fail("no model id after `#`".into()));
        }
        let mut config = Self::new(base, model).map_err(|e| fail(e.reason))?;
        for option in parts {
            let Some((key, value)) = option.split_once('=') else {
                return Err(fail(format!(
                    "option `{option}` is not `key=value` (options: api_key_env=VAR)"
                )));
            };
            match key.trim() {
                "api_key_env" => {
                    let var = value.trim();
                    if var.is_empty() {
                        return Err(fail("api_key_env names no variable".into()));
                    }
                    if config.api_key_env.is_some() {
                        return Err(fail("api_key_env is given twice".into()));
                    }
                    match env(var) {
                        Some(key) if !key.trim().is_empty() => {
                            config.api_key = Some(key.trim().to_string());
                            config.api_key_env = Some(var.to_string());
                        }
                        Some(_) => {
                            return Err(fail(format!(
                                "the environment variable `{var}` (api_key_env) is empty"
                            )))
                        }
                        None => {
                            return Err(fail(format!(
                                "the environment variable `{var}` (api_key_env) is not set"
                            )))
                        }
                    }
                }
                other => {
                    return Err(fail(format!(
                        "unknown option `{other}` (options: api_key_env=VAR)"
                    )))
                }
            }
        }
        Ok(config)
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The model id sent in every request.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The URL of an endpoint below the base URL (`models`, `chat/completions`).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url, path.trim_start_matches('/'))
    }

    /// The reference in the `openai:` grammar (the key itself is never part of it).
    pub fn reference(&self) -> String {
        match &self.api_key_env {
            Some(var) => format!("{SCHEME}{}#{};api_key_env={var}", self.base_url, self.model),
            None => format!("{SCHEME}{}#{}", self.base_url, self.model),
        }
    }

    /// Whether requests carry an API key.
    pub fn has_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    pub(crate) fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// Sends `key` as `Authorization: Bearer <key>` (builder style).
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The time limits.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Sets every time limit (builder style).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Sets the limit on establishing a connection (builder style; default 5 s).
    pub fn with_connect_timeout(mut self, limit: Duration) -> Self {
        self.timeouts.connect = limit;
        self
    }

    /// Sets the limit on waiting for a response's headers (builder style; default 60 s).
    pub fn with_first_byte_timeout(mut self, limit: Duration) -> Self {
        self.timeouts.first_byte = limit;
        self
    }

    /// Sets the limit on the silence between two streamed pieces (builder style;
    /// default 60 s).
    pub fn with_idle_timeout(mut self, limit: Duration) -> Self {
        self.timeouts.idle = limit;
        self
    }

    /// The retry policy.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// Sets the retry policy (builder style).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets how many times a 429 or 5xx answer is retried (builder style; default 3).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retry.retries = retries;
        self
    }
}

/// The base URL checked (http or https, a host, no query or fragment) and without its
/// trailing `/`.
fn check_base_url(base: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(base).map_err(|e| {
        format!("the base URL `{base}` is not a URL ({e}); write e.g. http://127.0.0.1:8080/v1")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the base URL `{base}` must start with http:// or https://"
        ));
    }
    if url.host_str().map_or(true, str::is_empty) {
        return Err(format!("the base URL `{base}` has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "the base URL `{base}` must not have a query or a fragment"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the base URL must not hold credentials; use api_key_env=VAR".into());
    }
    Ok(base.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-secret".into()),
            "EMPTY" => Some(" ".into()),
            _ => None,
        }
    }

    fn parse(reference: &str) -> Result<RemoteConfig, ConfigError> {
        RemoteConfig::parse_with_env(reference, env)
    }

    #[test]
    fn parses_the_grammar() {
        let c = parse("openai:http://127.0.0.1:8080/v1#qwen").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:8080/v1");
        assert_eq!(c.model(), "qwen");
        assert!(!c.has_api_key());
        assert_eq!(
            c.url("/chat/completions"),
            "http://127.0.0.1:8080/v1/chat/completions"
        );
        assert_eq!(c.reference(), "openai:http://127.0.0.1:8080/v1#qwen");

        let c =
            parse("openai:https://api.example.invalid/v1/#org/model:7b;api_key_env=KEY").unwrap();
        assert_eq!(c.base_url(), "https://api.example.invalid/v1");
        assert_eq!(c.model(), "org/model:7b");
        assert_eq!(c.api_key(), Some("sk-secret"));
        assert_eq!(
            c.reference(),
            "openai:https://api.example.invalid/v1#org/model:7b;api_key_env=KEY"
        );
        assert!(!format!("{c:?}").contains("sk-secret"));
    }

    #[test]
    fn says_what_is_wrong() {
        let cases = [
            ("qwen", "starts with `openai:`"),
            ("openai:http://127.0.0.1:8080/v1", "no model id"),
            ("openai:#qwen", "no base URL"),
            ("openai:http://127.0.0.1:8080/v1#", "no model id after `#`"),
            (
                "openai:http://127.0.0.1:8080/v1#;api_key_env=KEY",
                "no model id after `#`",
            ),
            ("openai:127.0.0.1:8080#qwen", "is not a URL"),
            ("openai:localhost:8080#qwen", "must start with http"),
            ("openai:localhost#qwen", "is not a URL"),
            ("openai:ftp://h/v1#qwen", "must start with http"),
            ("openai:http://h/v1?x=1#qwen", "query"),
            ("openai:http://u:p@h/v1#qwen", "credentials"),
            (
                "openai:http://h/v1#qwen;api_key_env=MISSING",
                "`MISSING` (api_key_env) is not set",
            ),
            ("openai:http://h/v1#qwen;api_key_env=EMPTY", "is empty"),
            ("openai:http://h/v1#qwen;api_key_env=", "names no variable"),
            (
                "openai:http://h/v1#qwen;api_key_env=KEY;api_key_env=KEY",
                "twice",
            ),
            ("openai:http://h/v1#qwen;key=1", "unknown option `key`"),
            ("openai:http://h/v1#qwen;verbose", "not `key=value`"),
        ];
        for (reference, want) in cases {
            let error = parse(reference).expect_err(reference).to_string();
            assert!(error.contains(want), "{reference}: {error}");
            assert!(
                error.starts_with(&format!("invalid model reference `{reference}`")),
                "{error}"
            );
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.wait(0, None), Duration::from_millis(250));
        assert_eq!(policy.wait(1, None), Duration::from_millis(500));
        assert_eq!(policy.wait(2, None), Duration::from_millis(1000));
        assert_eq!(policy.wait(30, None), Duration::from_secs(10));
        assert_eq!(
            policy.wait(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.wait(0, Some(Duration::from_secs(99))),
            Duration::from_secs(10)
        );
    }
}
