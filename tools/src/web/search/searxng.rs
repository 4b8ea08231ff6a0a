//! The SearXNG JSON API backend (`GET {base}/search?q=…&format=json`).
//!
//! The instance must list `json` under `search.formats` in its `settings.yml`;
//! otherwise it answers 403, reported with that hint.

use std::time::Duration;

use reqwest::header::ACCEPT;
use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;

use super::{
    finalize_results, get_json_body, parse_base_url, parse_json, search_client, with_timeout,
    SafeSearch, SearchBackend, SearchFuture, SearchQuery, SearchResult,
};
use crate::web::error::WebError;
use crate::web::http::one_line;

/// A SearXNG instance.
#[derive(Debug, Clone)]
pub struct SearxngBackend {
    search_url: Url,
    origin: String,
    client: reqwest::Client,
    timeout: Duration,
    max_results: usize,
}

impl SearxngBackend {
    /// A backend for the instance at `base_url` (e.g. `http://127.0.0.1:8888` or
    /// `https://host/searx/`), with a total time limit per search and a cap on results.
    pub fn new(base_url: &str, timeout: Duration, max_results: usize) -> Result<Self, WebError> {
        let base = parse_base_url(base_url)?;
        let search_url = base
            .join("search")
            .map_err(|e| WebError::InvalidConfig(format!("invalid SearXNG URL: {e}")))?;
        Ok(SearxngBackend {
            origin: format!("SearXNG at {}", crate::web::http::redact_url(&base)),
            search_url,
            client: search_client(timeout)?,
            timeout,
            max_results: max_results.max(1),
        })
    }

    async fn run(&self, query: &SearchQuery) -> Result<Vec<SearchResult>, WebError> {
        let terms = query.terms()?;
        let limit = query.limit(self.max_results);
        let safesearch = match query.safe_search {
            SafeSearch::Off => "0",
            SafeSearch::Moderate => "1",
            SafeSearch::Strict => "2",
        };
        let page = query.page.max(1).to_string();
        let mut params: Vec<(&str, &str)> = vec![
            ("q", terms),
            ("format", "json"),
            ("pageno", &page),
            ("safesearch", safesearch),
        ];
        let language = query
            .language
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty());
        if let Some(language) = language {
            params.push(("language", language));
        }
        let request = self
            .client
            .get(self.search_url.clone())
            .query(&params)
            .header(ACCEPT, "application/json");
        let body = match get_json_body(request, &self.origin, self.timeout).await {
            Ok((_, body)) => body,
            Err(WebError::Http {
                status: 403,
                origin,
                excerpt,
            }) => {
                return Err(WebError::Http {
                    status: 403,
                    origin,
                    excerpt: format!(
                        "{excerpt} (is `json` listed under search.formats in the instance's settings.yml?)"
                    ),
                })
            }
            Err(e) => return Err(e),
        };
        let response: SearxngResponse = parse_json(&body, &self.origin)?;
        let unresponsive = response.unresponsive_summary();
        if !unresponsive.is_empty() {
            tracing::debug!(engines = %unresponsive, "SearXNG engines did not answer");
        }
        if response.results.is_empty()
            && response.answers.is_empty()
            && response.infoboxes.is_empty()
            && !unresponsive.is_empty()
        {
            return Err(WebError::Backend {
                backend: "SearXNG",
                message: format!("no results; unresponsive engines: {unresponsive}"),
            });
        }
        // Direct answers and infoboxes (e.g. a Wikipedia summary) lead when they
        // carry a URL; the ranked results follow.
        let answers = response.answers.iter().filter_map(answer_hit);
        let infoboxes = response.infoboxes.iter().filter_map(infobox_hit);
        let results = response.results.into_iter().filter_map(|r| {
            Some(SearchResult {
                url: r.url?,
                title: r.title.unwrap_or_default(),
                snippet: r.content.unwrap_or_default(),
            })
        });
        let hits: Vec<SearchResult> = answers.chain(infoboxes).chain(results).collect();
        Ok(finalize_results(hits, limit))
    }
}

impl SearchBackend for SearxngBackend {
    fn name(&self) -> &'static str {
        "SearXNG"
    }

    fn search<'a>(&'a self, query: &'a SearchQuery) -> SearchFuture<'a> {
        Box::pin(with_timeout(
            "SearXNG search",
            self.timeout,
            self.run(query),
        ))
    }
}

/// The parts of SearXNG's JSON response that are used (others are ignored).
#[derive(Debug, Deserialize)]
struct SearxngResponse {
    #[serde(default)]
    results: Vec<SearxngResult>,
    /// Objects `{answer, url, engine, …}` (older versions: plain strings).
    #[serde(default)]
    answers: Vec<Value>,
    /// Objects `{infobox, id, content, urls, engine, …}`.
    #[serde(default)]
    infoboxes: Vec<Value>,
    /// `[[engine, reason], …]`.
    #[serde(default)]
    unresponsive_engines: Vec<Value>,
}

impl SearxngResponse {
    /// `google (timeout), brave (too many requests)`.
    fn unresponsive_summary(&self) -> String {
        let parts: Vec<String> = self
            .unresponsive_engines
            .iter()
            .map(|entry| match entry {
                Value::Array(items) => {
                    let texts: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                    match texts.as_slice() {
                        [engine, reason, ..] => format!("{engine} ({reason})"),
                        [engine] => (*engine).to_owned(),
                        [] => entry.to_string(),
                    }
                }
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        one_line(&parts.join(", "), 300)
    }
}

/// One SearXNG result; every field is optional in practice.
#[derive(Debug, Deserialize)]
struct SearxngResult {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    content: Option<String>,
}

/// A direct answer with a source URL, as a hit.
fn answer_hit(answer: &Value) -> Option<SearchResult> {
    let text = answer.get("answer")?.as_str()?;
    let url = answer.get("url")?.as_str()?;
    Some(SearchResult {
        title: format!("Answer: {}", one_line(text, 80)),
        url: url.to_owned(),
        snippet: text.to_owned(),
    })
}

/// An infobox (`id` is its canonical URL, else its first link), as a hit.
fn infobox_hit(infobox: &Value) -> Option<SearchResult> {
    let title = infobox.get("infobox")?.as_str()?;
    let url = infobox
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| id.starts_with("http"))
        .or_else(|| {
            infobox
                .get("urls")?
                .as_array()?
                .iter()
                .find_map(|u| u.get("url")?.as_str())
        })?;
    let snippet = infobox.get("content").and_then(Value::as_str).unwrap_or("");
    Some(SearchResult {
        title: title.to_owned(),
        url: url.to_owned(),
        snippet: snippet.to_owned(),
    })
}
