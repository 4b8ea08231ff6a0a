//! Web search backends and URL fetching — two standalone engines that the tool layer
//! wraps as `web_search` and `fetch_url`.
//!
//! - [`search`]: the [`SearchBackend`] trait with a SearXNG and a Brave Search
//!   backend, configured by [`WebSearchConfig`] (or [`WebSearchConfig::from_env`]).
//! - [`Fetcher`]: GET a page with limits (size, time, redirects, content types) and
//!   SSRF protection on resolved addresses, and turn it into readable text.
//!
//! Every failure is a [`WebError`] with a one-line message and a
//! [`retryable`](WebError::retryable) hint.

mod error;
mod extract;
mod fetch;
mod http;
pub mod search;
mod ssrf;

pub use error::WebError;
pub use extract::{decode_body, detect_encoding, html_to_text, PageText};
pub use fetch::{FetchConfig, FetchResult, Fetcher};
pub use search::{
    BraveBackend, SafeSearch, SearchBackend, SearchBackendKind, SearchFuture, SearchQuery,
    SearchResult, SearxngBackend, WebSearchConfig,
};
pub use ssrf::blocked_reason;
