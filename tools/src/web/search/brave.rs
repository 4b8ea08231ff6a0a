//! The Brave Search API backend (`GET {base}/res/v1/web/search?q=…&count=N` with the
//! `X-Subscription-Token` header).

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT};
use reqwest::Url;
use serde::Deserialize;

use super::{
    finalize_results, parse_base_url, parse_json, search_client, with_timeout, SafeSearch,
    SearchBackend, SearchFuture, SearchQuery, SearchResult, MAX_RESPONSE_BYTES,
};
use crate::web::error::WebError;
use crate::web::http::{map_reqwest_error, one_line, read_limited, redact_url, status_error};

/// Most results the API returns per request.
const BRAVE_MAX_COUNT: usize = 20;
/// Highest page offset the API accepts.
const BRAVE_MAX_OFFSET: u32 = 9;

/// The Brave Search API.
#[derive(Clone)]
pub struct BraveBackend {
    search_url: Url,
    origin: String,
    api_key: HeaderValue,
    client: reqwest::Client,
    timeout: Duration,
    max_results: usize,
}

impl fmt::Debug for BraveBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BraveBackend")
            .field("search_url", &self.search_url.as_str())
            .field("api_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("max_results", &self.max_results)
            .finish()
    }
}

impl BraveBackend {
    /// A backend for the API at `base_url` (normally
    /// [`BRAVE_DEFAULT_BASE_URL`](super::BRAVE_DEFAULT_BASE_URL)) with the given key.
    pub fn new(
        base_url: &str,
        api_key: &str,
        timeout: Duration,
        max_results: usize,
    ) -> Result<Self, WebError> {
        let base = parse_base_url(base_url)?;
        let search_url = base
            .join("res/v1/web/search")
            .map_err(|e| WebError::InvalidConfig(format!("invalid Brave Search URL: {e}")))?;
        let api_key = api_key.trim();
        if api_key.is_empty() {
            return Err(WebError::MissingApiKey {
                service: "Brave Search",
                env: super::BRAVE_API_KEY_ENV.to_owned(),
            });
        }
        let mut api_key = HeaderValue::from_str(api_key).map_err(|_| {
            WebError::InvalidConfig("the Brave Search API key contains invalid characters".into())
        })?;
        api_key.set_sensitive(true);
        Ok(BraveBackend {
            origin: format!("Brave Search at {}", redact_url(&base)),
            search_url,
            api_key,
            client: search_client(timeout)?,
            timeout,
            max_results: max_results.max(1),
        })
    }

    async fn run(&self, query: &SearchQuery) -> Result<Vec<SearchResult>, WebError> {
        let terms = query.terms()?;
        let limit = query.limit(self.max_results);
        let count = limit.min(BRAVE_MAX_COUNT).to_string();
        let offset = query
            .page
            .saturating_sub(1)
            .min(BRAVE_MAX_OFFSET)
            .to_string();
        let safesearch = match query.safe_search {
            SafeSearch::Off => "off",
            SafeSearch::Moderate => "moderate",
            SafeSearch::Strict => "strict",
        };
        let language = query.primary_language();
        let mut params: Vec<(&str, &str)> = vec![
            ("q", terms),
            ("count", &count),
            ("offset", &offset),
            ("safesearch", safesearch),
        ];
        if let Some(language) = language.as_deref() {
            params.push(("search_lang", language));
        }
        let mut response = self
            .client
            .get(self.search_url.clone())
            .query(&params)
            .header(ACCEPT, "application/json")
            .header("X-Subscription-Token", self.api_key.clone())
            .send()
            .await
            .map_err(|e| map_reqwest_error(&e, &self.origin, self.timeout))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let (body, truncated) = read_limited(&mut response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| map_reqwest_error(&e, &self.origin, self.timeout))?;
        if !(200..300).contains(&status) {
            // Brave explains errors as `{"error": {"code", "detail"}}`.
            if status != 429 {
                if let Ok(error) = serde_json::from_slice::<BraveErrorBody>(&body) {
                    return Err(WebError::Http {
                        status,
                        origin: self.origin.clone(),
                        excerpt: one_line(&error.error.describe(), 200),
                    });
                }
            }
            return Err(status_error(status, &headers, &self.origin, &body));
        }
        if truncated {
            return Err(WebError::InvalidResponse {
                origin: self.origin.clone(),
                message: format!("response larger than {MAX_RESPONSE_BYTES} bytes"),
            });
        }
        let response: BraveResponse = parse_json(&body, &self.origin)?;
        let hits = response
            .web
            .map(|web| web.results)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| {
                Some(SearchResult {
                    url: r.url?,
                    title: r.title.unwrap_or_default(),
                    snippet: r.description.unwrap_or_default(),
                })
            });
        Ok(finalize_results(hits, limit))
    }
}

impl SearchBackend for BraveBackend {
    fn name(&self) -> &'static str {
        "Brave Search"
    }

    fn search<'a>(&'a self, query: &'a SearchQuery) -> SearchFuture<'a> {
        Box::pin(with_timeout("Brave search", self.timeout, self.run(query)))
    }
}

/// The used parts of a web search response (`mixed`, `news`, `videos`, … ignored).
#[derive(Debug, Deserialize)]
struct BraveResponse {
    #[serde(default)]
    web: Option<BraveWeb>,
}

#[derive(Debug, Deserialize)]
struct BraveWeb {
    #[serde(default)]
    results: Vec<BraveResult>,
}

#[derive(Debug, Deserialize)]
struct BraveResult {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct BraveErrorBody {
    error: BraveError,
}

#[derive(Debug, Deserialize)]
struct BraveError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

impl BraveError {
    fn describe(&self) -> String {
        match (&self.code, &self.detail) {
            (Some(code), Some(detail)) => format!("{code}: {detail}"),
            (Some(text), None) | (None, Some(text)) => text.clone(),
            (None, None) => "unknown error".to_owned(),
        }
    }
}
