//! `web_search`: the [`SearchBackend`] trait, its configuration and two backends —
//! a self-hosted [SearXNG](searxng::SearxngBackend) instance and the
//! [Brave Search API](brave::BraveBackend).

pub mod brave;
pub mod searxng;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::error::WebError;
use super::http::{strip_html, truncate_chars};

pub use brave::BraveBackend;
pub use searxng::SearxngBackend;

/// Environment variable with the base URL of a SearXNG instance.
pub const SEARXNG_URL_ENV: &str = "JIELONG_SEARXNG_URL";
/// Environment variable with the Brave Search API key (the default `api_key_env`).
pub const BRAVE_API_KEY_ENV: &str = "BRAVE_SEARCH_API_KEY";
/// Environment variable overriding the Brave Search API base URL.
pub const BRAVE_URL_ENV: &str = "JIELONG_BRAVE_SEARCH_URL";
/// Default Brave Search API base URL.
pub const BRAVE_DEFAULT_BASE_URL: &str = "https://api.search.brave.com";
/// The message of [`WebError::NotConfigured`] when nothing is configured.
pub const NOT_CONFIGURED_MESSAGE: &str =
    "web_search is not configured: set JIELONG_SEARXNG_URL or BRAVE_SEARCH_API_KEY";

/// Longest snippet kept per result, in characters.
const MAX_SNIPPET_CHARS: usize = 600;
/// Longest title kept per result, in characters.
const MAX_TITLE_CHARS: usize = 200;
/// Most bytes of a search response read before giving up.
pub(crate) const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// The future returned by [`SearchBackend::search`].
pub type SearchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<SearchResult>, WebError>> + Send + 'a>>;

/// A web search engine.
///
/// The method returns a boxed future so the trait stays object-safe
/// (`Box<dyn SearchBackend>`); call it as `backend.search(&query).await`.
pub trait SearchBackend: Send + Sync + fmt::Debug {
    /// The backend's display name (`SearXNG`, `Brave Search`).
    fn name(&self) -> &'static str;

    /// Runs a search. Results are cleaned (no HTML in titles or snippets), deduplicated
    /// by URL and capped at the query's (or the backend's) maximum.
    fn search<'a>(&'a self, query: &'a SearchQuery) -> SearchFuture<'a>;
}

/// Safe-search filtering level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SafeSearch {
    /// No filtering.
    Off,
    /// The engines' default filtering.
    #[default]
    Moderate,
    /// Strict filtering.
    Strict,
}

/// One search request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchQuery {
    /// The search terms.
    pub query: String,
    /// Most results wanted; `None` uses the backend's configured maximum (which also
    /// caps this value).
    #[serde(default)]
    pub max_results: Option<usize>,
    /// Preferred language as a BCP 47 tag (`en`, `de-CH`); `None` for any.
    #[serde(default)]
    pub language: Option<String>,
    /// Safe-search level.
    #[serde(default)]
    pub safe_search: SafeSearch,
    /// 1-based result page.
    #[serde(default = "first_page")]
    pub page: u32,
}

fn first_page() -> u32 {
    1
}

impl SearchQuery {
    /// A query with default options (moderate safe search, first page).
    pub fn new(query: impl Into<String>) -> Self {
        SearchQuery {
            query: query.into(),
            max_results: None,
            language: None,
            safe_search: SafeSearch::default(),
            page: 1,
        }
    }

    /// Sets the most results wanted.
    pub fn with_max_results(mut self, max_results: usize) -> Self {
        self.max_results = Some(max_results);
        self
    }

    /// Sets the preferred language.
    pub fn with_language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Sets the safe-search level.
    pub fn with_safe_search(mut self, safe_search: SafeSearch) -> Self {
        self.safe_search = safe_search;
        self
    }

    /// Sets the 1-based result page.
    pub fn with_page(mut self, page: u32) -> Self {
        self.page = page;
        self
    }

    /// The trimmed query text, or [`WebError::InvalidQuery`] when empty.
    pub(crate) fn terms(&self) -> Result<&str, WebError> {
        let terms = self.query.trim();
        if terms.is_empty() {
            return Err(WebError::InvalidQuery("the query is empty".to_owned()));
        }
        Ok(terms)
    }

    /// The number of results to return given the backend's cap.
    pub(crate) fn limit(&self, backend_max: usize) -> usize {
        self.max_results
            .map_or(backend_max, |m| m.min(backend_max))
            .max(1)
    }

    /// The primary language subtag, lower-cased (`de-CH` → `de`); `None` for any.
    pub(crate) fn primary_language(&self) -> Option<String> {
        let language = self.language.as_deref()?.trim();
        let primary = language.split(['-', '_']).next()?.to_ascii_lowercase();
        (!primary.is_empty() && primary != "all").then_some(primary)
    }
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SearchResult {
    /// The page title (plain text).
    pub title: String,
    /// The page URL.
    pub url: String,
    /// A short excerpt (plain text, may be empty).
    pub snippet: String,
}

/// Cleans raw hits (HTML stripped, long text cut), drops hits without an http(s) URL,
/// removes duplicate URLs (ignoring fragments and a trailing slash) and caps the count.
pub(crate) fn finalize_results(
    raw: impl IntoIterator<Item = SearchResult>,
    limit: usize,
) -> Vec<SearchResult> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for hit in raw {
        if out.len() >= limit {
            break;
        }
        let Ok(url) = Url::parse(hit.url.trim()) else {
            continue;
        };
        if !matches!(url.scheme(), "http" | "https") {
            continue;
        }
        if !seen.insert(dedupe_key(&url)) {
            continue;
        }
        let mut title = truncate_chars(&strip_html(&hit.title), MAX_TITLE_CHARS);
        if title.is_empty() {
            title = url.to_string();
        }
        out.push(SearchResult {
            title,
            url: url.to_string(),
            snippet: truncate_chars(&strip_html(&hit.snippet), MAX_SNIPPET_CHARS),
        });
    }
    out
}

/// The URL identity used for deduplication.
fn dedupe_key(url: &Url) -> String {
    let mut key = url.clone();
    key.set_fragment(None);
    let text = key.to_string();
    let scheme_less = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .unwrap_or(&text);
    let scheme_less = scheme_less.strip_prefix("www.").unwrap_or(scheme_less);
    scheme_less.trim_end_matches('/').to_owned()
}

/// Which search service to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchBackendKind {
    /// A self-hosted SearXNG instance (JSON API enabled).
    Searxng,
    /// The Brave Search API.
    Brave,
}

/// Configuration of `web_search` (serde, for the YAML config).
///
/// ```yaml
/// backend: searxng            # or brave; omit to pick from the environment
/// base_url: http://127.0.0.1:8888
/// api_key_env: BRAVE_SEARCH_API_KEY
/// timeout: 10s
/// max_results: 8
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSearchConfig {
    /// The backend; `None` picks SearXNG when `JIELONG_SEARXNG_URL` is set, else Brave
    /// when its API key is set.
    pub backend: Option<SearchBackendKind>,
    /// Base URL of the service (SearXNG: required unless `JIELONG_SEARXNG_URL` is set;
    /// Brave: defaults to the public API).
    pub base_url: Option<String>,
    /// The Brave API key itself; prefer `api_key_env`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Environment variable holding the Brave API key (default `BRAVE_SEARCH_API_KEY`).
    pub api_key_env: Option<String>,
    /// Limit for a whole search request.
    #[serde(with = "jielong_util::duration")]
    pub timeout: Duration,
    /// Most results returned per search (also caps [`SearchQuery::max_results`]).
    pub max_results: usize,
}

impl Default for WebSearchConfig {
    fn default() -> Self {
        WebSearchConfig {
            backend: None,
            base_url: None,
            api_key: None,
            api_key_env: None,
            timeout: Duration::from_secs(10),
            max_results: 8,
        }
    }
}

impl fmt::Debug for WebSearchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSearchConfig")
            .field("backend", &self.backend)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_env", &self.api_key_env)
            .field("timeout", &self.timeout)
            .field("max_results", &self.max_results)
            .finish()
    }
}

impl WebSearchConfig {
    /// A configuration from the process environment: SearXNG when
    /// `JIELONG_SEARXNG_URL` is set, else Brave when `BRAVE_SEARCH_API_KEY` is set
    /// (`JIELONG_BRAVE_SEARCH_URL` overrides its base URL), else
    /// [`WebError::NotConfigured`].
    pub fn from_env() -> Result<Self, WebError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`WebSearchConfig::from_env`] with a custom variable lookup (for tests and
    /// embedders).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, WebError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if let Some(url) = get(SEARXNG_URL_ENV) {
            return Ok(WebSearchConfig {
                backend: Some(SearchBackendKind::Searxng),
                base_url: Some(url.trim().to_owned()),
                ..Self::default()
            });
        }
        if get(BRAVE_API_KEY_ENV).is_some() {
            return Ok(WebSearchConfig {
                backend: Some(SearchBackendKind::Brave),
                base_url: get(BRAVE_URL_ENV).map(|u| u.trim().to_owned()),
                api_key_env: Some(BRAVE_API_KEY_ENV.to_owned()),
                ..Self::default()
            });
        }
        Err(WebError::NotConfigured(NOT_CONFIGURED_MESSAGE.to_owned()))
    }

    /// Builds the configured backend, reading missing settings from the environment.
    pub fn build(&self) -> Result<Box<dyn SearchBackend>, WebError> {
        self.build_with_lookup(|name| std::env::var(name).ok())
    }

    /// [`WebSearchConfig::build`] with a custom environment lookup.
    pub fn build_with_lookup(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Box<dyn SearchBackend>, WebError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if self.max_results == 0 {
            return Err(WebError::InvalidConfig(
                "max_results must be at least 1".to_owned(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(WebError::InvalidConfig(
                "timeout must be greater than zero".to_owned(),
            ));
        }
        let key_env = self.api_key_env.as_deref().unwrap_or(BRAVE_API_KEY_ENV);
        let backend = match self.backend {
            Some(kind) => kind,
            None if self.base_url.is_some() => SearchBackendKind::Searxng,
            None if get(SEARXNG_URL_ENV).is_some() => SearchBackendKind::Searxng,
            None if self.api_key.is_some() || get(key_env).is_some() => SearchBackendKind::Brave,
            None => return Err(WebError::NotConfigured(NOT_CONFIGURED_MESSAGE.to_owned())),
        };
        match backend {
            SearchBackendKind::Searxng => {
                let base = self
                    .base_url
                    .clone()
                    .or_else(|| get(SEARXNG_URL_ENV))
                    .ok_or_else(|| WebError::NotConfigured(NOT_CONFIGURED_MESSAGE.to_owned()))?;
                Ok(Box::new(SearxngBackend::new(
                    base.trim(),
                    self.timeout,
                    self.max_results,
                )?))
            }
            SearchBackendKind::Brave => {
                let key = self
                    .api_key
                    .clone()
                    .filter(|k| !k.trim().is_empty())
                    .or_else(|| get(key_env))
                    .ok_or_else(|| WebError::MissingApiKey {
                        service: "Brave Search",
                        env: key_env.to_owned(),
                    })?;
                let base = self
                    .base_url
                    .clone()
                    .or_else(|| get(BRAVE_URL_ENV))
                    .unwrap_or_else(|| BRAVE_DEFAULT_BASE_URL.to_owned());
                Ok(Box::new(BraveBackend::new(
                    base.trim(),
                    key.trim(),
                    self.timeout,
                    self.max_results,
                )?))
            }
        }
    }
}

/// Parses a base URL and makes sure it ends in `/` so that joining keeps its path.
pub(crate) fn parse_base_url(base: &str) -> Result<Url, WebError> {
    let mut url = Url::parse(base)
        .map_err(|e| WebError::InvalidConfig(format!("invalid search base URL {base:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(WebError::InvalidConfig(format!(
            "search base URL {base:?} must use http or https"
        )));
    }
    url.set_query(None);
    url.set_fragment(None);
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// A shared HTTP client for a search backend.
pub(crate) fn search_client(timeout: Duration) -> Result<reqwest::Client, WebError> {
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .user_agent(concat!("jielong/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| WebError::InvalidConfig(format!("cannot build HTTP client: {e}")))
}

/// Runs `request` under the backend's total time limit.
pub(crate) async fn with_timeout<T>(
    what: &str,
    timeout: Duration,
    request: impl Future<Output = Result<T, WebError>>,
) -> Result<T, WebError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result,
        Err(_) => Err(WebError::Timeout {
            what: what.to_owned(),
            after: timeout,
        }),
    }
}

/// Sends a prepared GET and returns the body of a successful response; error
/// statuses become [`WebError::Http`] / [`WebError::RateLimited`].
pub(crate) async fn get_json_body(
    request: reqwest::RequestBuilder,
    origin: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), WebError> {
    let mut response = request
        .send()
        .await
        .map_err(|e| super::http::map_reqwest_error(&e, origin, timeout))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let (body, truncated) = super::http::read_limited(&mut response, MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| super::http::map_reqwest_error(&e, origin, timeout))?;
    if !(200..300).contains(&status) {
        return Err(super::http::status_error(status, &headers, origin, &body));
    }
    if truncated {
        return Err(WebError::InvalidResponse {
            origin: origin.to_owned(),
            message: format!("response larger than {MAX_RESPONSE_BYTES} bytes"),
        });
    }
    Ok((status, body))
}

/// Parses a JSON body into `T`, reporting malformed or mis-shaped JSON in one line.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    origin: &str,
) -> Result<T, WebError> {
    serde_json::from_slice(body).map_err(|e| WebError::InvalidResponse {
        origin: origin.to_owned(),
        message: format!(
            "malformed JSON ({e}); body starts with: {}",
            super::http::body_excerpt(&body[..body.len().min(120)])
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(title: &str, url: &str, snippet: &str) -> SearchResult {
        SearchResult {
            title: title.to_owned(),
            url: url.to_owned(),
            snippet: snippet.to_owned(),
        }
    }

    #[test]
    fn dedupe_clean_cap() {
        let out = finalize_results(
            vec![
                hit("<b>A</b>", "https://a.example/x", "one &amp; two"),
                hit("A again", "https://a.example/x/#top", ""),
                hit("A www", "http://www.a.example/x", ""),
                hit("bad", "javascript:alert(1)", ""),
                hit("B", "https://b.example/", "b"),
                hit("C", "https://c.example/", "c"),
            ],
            2,
        );
        assert_eq!(
            out,
            vec![
                hit("A", "https://a.example/x", "one & two"),
                hit("B", "https://b.example/", "b")
            ]
        );
    }
}
