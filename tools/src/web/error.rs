//! [`WebError`]: every way a web search or a page fetch can fail.

use std::net::IpAddr;
use std::time::Duration;

/// A failed web search or page fetch.
///
/// Messages are one line and never contain URL credentials. [`WebError::retryable`]
/// tells whether the same call may succeed later.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// No search backend is configured (neither in the config nor the environment).
    #[error("{0}")]
    NotConfigured(String),
    /// The Brave Search backend was chosen but no API key was found.
    #[error("missing API key for {service}: set the environment variable {env} or `api_key` in the config")]
    MissingApiKey {
        /// The service that needs the key.
        service: &'static str,
        /// The environment variable that was consulted.
        env: String,
    },
    /// The configuration is invalid (bad base URL, zero limits, …).
    #[error("invalid web configuration: {0}")]
    InvalidConfig(String),
    /// The search query is unusable (for example empty).
    #[error("invalid search query: {0}")]
    InvalidQuery(String),
    /// The URL could not be parsed or has no host.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (credentials removed when it parsed).
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The URL's scheme is not http or https.
    #[error("unsupported URL scheme {scheme:?}: only http and https are allowed")]
    UnsupportedScheme {
        /// The scheme that was refused.
        scheme: String,
    },
    /// The host resolves to (or is) an address the SSRF policy forbids.
    #[error("refused to connect to {host} ({addr}): {reason} addresses are blocked (allow_hosts/allow_cidrs can permit it)")]
    Blocked {
        /// The host name or IP literal from the URL.
        host: String,
        /// The forbidden address.
        addr: IpAddr,
        /// The kind of address, e.g. `loopback` or `private`.
        reason: &'static str,
    },
    /// The host name could not be resolved.
    #[error("could not resolve {host}: {message}")]
    Dns {
        /// The host name.
        host: String,
        /// The resolver's message.
        message: String,
    },
    /// The operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out, e.g. `SearXNG search`.
        what: String,
        /// The limit that was exceeded.
        after: Duration,
    },
    /// No connection could be made.
    #[error("could not connect to {origin}: {message}")]
    Connect {
        /// The service or URL (without credentials).
        origin: String,
        /// The underlying error.
        message: String,
    },
    /// The request failed after connecting (reset, TLS, protocol error, …).
    #[error("request to {origin} failed: {message}")]
    Request {
        /// The service or URL (without credentials).
        origin: String,
        /// The underlying error.
        message: String,
    },
    /// The server answered with an error status.
    #[error("HTTP {status} from {origin}: {excerpt}")]
    Http {
        /// The HTTP status code.
        status: u16,
        /// The service or URL (without credentials).
        origin: String,
        /// A short, one-line excerpt of the response body (or a hint).
        excerpt: String,
    },
    /// The server answered 429 Too Many Requests.
    #[error("rate limited{}", fmt_retry_after(retry_after))]
    RateLimited {
        /// How long the server asked to wait (`Retry-After`), when it said.
        retry_after: Option<Duration>,
    },
    /// The response could not be understood (malformed JSON, wrong shape).
    #[error("invalid response from {origin}: {message}")]
    InvalidResponse {
        /// The service or URL (without credentials).
        origin: String,
        /// What was wrong.
        message: String,
    },
    /// The search backend answered but could not search (e.g. every engine failed).
    #[error("{backend} could not search: {message}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// What it reported.
        message: String,
    },
    /// More redirects than allowed.
    #[error("too many redirects (more than {max}) fetching {url}")]
    TooManyRedirects {
        /// The configured maximum.
        max: usize,
        /// The URL first requested (without credentials).
        url: String,
    },
    /// A redirect led back to a URL already visited.
    #[error("redirect loop: {url} was already visited")]
    RedirectLoop {
        /// The repeated URL (without credentials).
        url: String,
    },
    /// The page's content type cannot be turned into text.
    #[error("unsupported content type {content_type:?} at {url}: only HTML, plain text, JSON and XML can be read")]
    UnsupportedContentType {
        /// The content type that was refused.
        content_type: String,
        /// The URL (without credentials).
        url: String,
    },
}

impl WebError {
    /// Whether retrying the same call later may succeed (timeouts, connection
    /// failures, rate limits, 5xx statuses, temporarily failing engines). DNS failures
    /// count as permanent: they are far more often a wrong host name than a hiccup.
    pub fn retryable(&self) -> bool {
        match self {
            WebError::Timeout { .. }
            | WebError::Connect { .. }
            | WebError::Request { .. }
            | WebError::RateLimited { .. }
            | WebError::Backend { .. } => true,
            WebError::Http { status, .. } => {
                matches!(status, 408 | 425 | 429 | 500 | 502 | 503 | 504)
            }
            _ => false,
        }
    }

    /// How long to wait before retrying, when the server said (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            WebError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

fn fmt_retry_after(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) if d.subsec_millis() == 0 => format!(" (retry after {}s)", d.as_secs()),
        Some(d) => format!(" (retry after {:.1}s)", d.as_secs_f64()),
        None => String::new(),
    }
}
