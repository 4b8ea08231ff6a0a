//! `fetch_url`: GET a page (with SSRF protection and limits) and return readable text.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::redirect::Policy;
use reqwest::{Response, Url};
use serde::{Deserialize, Serialize};

use super::error::WebError;
use super::extract::{decode_body, html_to_text};
use super::http::{map_reqwest_error, read_limited, redact_url, status_error};
use super::ssrf::{NetPolicy, VettingResolver};

/// Limits and exceptions for [`Fetcher`] (serde, for the YAML config).
///
/// ```yaml
/// max_bytes: 2097152
/// timeout: 20s
/// max_redirects: 5
/// allow_hosts: [wiki.intranet.example, "*.corp.example"]
/// allow_cidrs: [10.1.0.0/16]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    /// Most body bytes read; the rest is not downloaded and the result is marked
    /// truncated. Default 2 MiB.
    pub max_bytes: usize,
    /// Limit for the whole fetch, redirects and body included. Default 20 s.
    #[serde(with = "jielong_util::duration")]
    pub timeout: Duration,
    /// Limit for establishing each connection. Default 10 s.
    #[serde(with = "jielong_util::duration")]
    pub connect_timeout: Duration,
    /// Most redirects followed. Default 5.
    pub max_redirects: usize,
    /// Hosts (names or IP literals, `*.example.org` for subdomains) exempt from the
    /// address checks — e.g. `127.0.0.1` in tests or an intranet wiki.
    pub allow_hosts: Vec<String>,
    /// Address ranges exempt from the address checks.
    pub allow_cidrs: Vec<IpNet>,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            max_bytes: 2 * 1024 * 1024,
            timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
            max_redirects: 5,
            allow_hosts: Vec::new(),
            allow_cidrs: Vec::new(),
            user_agent: concat!(
                "Mozilla/5.0 (compatible; jielong/",
                env!("CARGO_PKG_VERSION"),
                ")"
            )
            .to_owned(),
        }
    }
}

/// A fetched page as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchResult {
    /// The final URL after redirects (credentials removed).
    pub url: String,
    /// The HTTP status of the final response.
    pub status: u16,
    /// The media type (`text/html`, …) without parameters.
    pub content_type: String,
    /// The page title (HTML only).
    pub title: Option<String>,
    /// The readable text: extracted from HTML, pretty-printed JSON, or the body as is.
    pub text: String,
    /// Whether the body was cut at `max_bytes`.
    pub truncated: bool,
    /// Body bytes read.
    pub bytes: usize,
}

/// How a content type is turned into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Html,
    Plain,
    Json,
    Xml,
}

/// Fetches pages with SSRF protection. Cheap to clone; reuse one for many fetches.
#[derive(Clone)]
pub struct Fetcher {
    config: Arc<FetchConfig>,
    policy: Arc<NetPolicy>,
    client: reqwest::Client,
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher with the given limits.
    pub fn new(config: FetchConfig) -> Result<Self, WebError> {
        if config.max_bytes == 0 {
            return Err(WebError::InvalidConfig(
                "max_bytes must be at least 1".to_owned(),
            ));
        }
        if config.timeout.is_zero() || config.connect_timeout.is_zero() {
            return Err(WebError::InvalidConfig(
                "timeouts must be greater than zero".to_owned(),
            ));
        }
        let policy = Arc::new(NetPolicy::new(&config.allow_hosts, &config.allow_cidrs));
        let resolver = Arc::new(VettingResolver {
            policy: Arc::clone(&policy),
        });
        let client = reqwest::Client::builder()
            // Redirects are followed by hand so that every hop is vetted.
            .redirect(Policy::none())
            // A proxy would resolve the target itself, past the address checks.
            .no_proxy()
            .dns_resolver(resolver)
            .connect_timeout(config.connect_timeout)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| WebError::InvalidConfig(format!("cannot build HTTP client: {e}")))?;
        Ok(Fetcher {
            config: Arc::new(config),
            policy,
            client,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// Vets a URL without touching the network: it must parse, use http or https and,
    /// when its host is an IP literal (in any form the URL standard accepts, such as
    /// `2130706433` or `[::ffff:127.0.0.1]`), be an allowed address; `localhost` and
    /// `*.localhost` count as 127.0.0.1. Other host names are vetted when they are
    /// resolved during [`Fetcher::fetch`].
    pub fn check_url(&self, url: &str) -> Result<Url, WebError> {
        let parsed = Url::parse(url.trim()).map_err(|e| WebError::InvalidUrl {
            url: strip_userinfo_text(url),
            reason: e.to_string(),
        })?;
        self.check_parsed(&parsed)?;
        Ok(parsed)
    }

    fn check_parsed(&self, url: &Url) -> Result<(), WebError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebError::UnsupportedScheme {
                scheme: url.scheme().to_owned(),
            });
        }
        let host = match url.host() {
            Some(host) => host,
            None => {
                return Err(WebError::InvalidUrl {
                    url: redact_url(url),
                    reason: "the URL has no host".to_owned(),
                })
            }
        };
        let ip = match host {
            url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    // RFC 6761: always loopback, whatever DNS says.
                    Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
                } else {
                    name.parse::<IpAddr>().ok()
                }
            }
        };
        if let Some(ip) = ip {
            let host_text = url.host_str().unwrap_or_default();
            if let Err(reason) = self.policy.check(host_text, ip) {
                tracing::warn!(host = host_text, addr = %ip, reason, "fetch_url refused address");
                return Err(WebError::Blocked {
                    host: host_text.to_owned(),
                    addr: ip,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Fetches `url`, following up to `max_redirects` vetted redirects, and returns its
    /// readable text. Error statuses (4xx/5xx) are errors; so are content types other
    /// than HTML, plain text, JSON and XML.
    pub async fn fetch(&self, url: &str) -> Result<FetchResult, WebError> {
        let start = self.check_url(url)?;
        let shown = redact_url(&start);
        let limit = self.config.timeout;
        match tokio::time::timeout(limit, self.fetch_checked(start)).await {
            Ok(result) => result,
            Err(_) => Err(WebError::Timeout {
                what: format!("fetching {shown}"),
                after: limit,
            }),
        }
    }

    async fn fetch_checked(&self, start: Url) -> Result<FetchResult, WebError> {
        let first = redact_url(&start);
        let mut visited = HashSet::new();
        visited.insert(without_fragment(&start));
        let mut current = start;
        let mut redirects = 0usize;
        let mut response = loop {
            self.check_parsed(&current)?;
            let shown = redact_url(&current);
            tracing::debug!(url = %shown, "fetch_url GET");
            let response = self
                .client
                .get(current.clone())
                .header(
                    ACCEPT,
                    "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.8,application/xml;q=0.8,*/*;q=0.1",
                )
                .send()
                .await
                .map_err(|e| map_reqwest_error(&e, &shown, self.config.timeout))?;
            let Some(next) = redirect_target(&response, &current)? else {
                break response;
            };
            redirects += 1;
            if redirects > self.config.max_redirects {
                return Err(WebError::TooManyRedirects {
                    max: self.config.max_redirects,
                    url: first,
                });
            }
            if !visited.insert(without_fragment(&next)) {
                return Err(WebError::RedirectLoop {
                    url: redact_url(&next),
                });
            }
            current = next;
        };

        let shown = redact_url(&current);
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if !response.status().is_success() {
            let (body, _) = read_limited(&mut response, 4096)
                .await
                .map_err(|e| map_reqwest_error(&e, &shown, self.config.timeout))?;
            return Err(status_error(status, &headers, &shown, &body));
        }
        let (media_type, charset) = content_type(&headers);
        let declared = match media_type.as_deref() {
            Some(media) => {
                Some(
                    classify(media).ok_or_else(|| WebError::UnsupportedContentType {
                        content_type: media.to_owned(),
                        url: shown.clone(),
                    })?,
                )
            }
            None => None,
        };
        let (body, truncated) = read_limited(&mut response, self.config.max_bytes)
            .await
            .map_err(|e| map_reqwest_error(&e, &shown, self.config.timeout))?;
        let (kind, media_type) = match (declared, media_type) {
            (Some(kind), Some(media)) => (kind, media),
            _ => sniff(&body).ok_or_else(|| WebError::UnsupportedContentType {
                content_type: "(none; binary body)".to_owned(),
                url: shown.clone(),
            })?,
        };
        let decoded = decode_body(&body, charset.as_deref());
        let (title, text) = match kind {
            Kind::Html => {
                let page = html_to_text(&decoded);
                (page.title, page.text)
            }
            Kind::Json => (None, pretty_json(&decoded)),
            Kind::Plain | Kind::Xml => (None, decoded.replace("\r\n", "\n")),
        };
        Ok(FetchResult {
            url: shown,
            status,
            content_type: media_type,
            title,
            text,
            truncated,
            bytes: body.len(),
        })
    }
}

/// The next URL when `response` is a redirect with a `Location`, vetted for scheme.
fn redirect_target(response: &Response, current: &Url) -> Result<Option<Url>, WebError> {
    if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
        return Ok(None);
    }
    let Some(location) = response.headers().get(LOCATION) else {
        return Ok(None);
    };
    let location = String::from_utf8_lossy(location.as_bytes()).into_owned();
    let next = current
        .join(location.trim())
        .map_err(|e| WebError::InvalidUrl {
            url: strip_userinfo_text(&location),
            reason: format!("bad redirect Location: {e}"),
        })?;
    Ok(Some(next))
}

fn without_fragment(url: &Url) -> String {
    let mut url = url.clone();
    url.set_fragment(None);
    url.to_string()
}

/// `(media type, charset)` from `Content-Type`, lower-cased.
fn content_type(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return (None, None);
    };
    let value = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
    let mut parts = value.split(';');
    let media = parts.next().map(str::trim).filter(|m| !m.is_empty());
    let charset = parts.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        (name.trim() == "charset").then(|| value.trim().trim_matches(['"', '\'']).to_owned())
    });
    (media.map(str::to_owned), charset)
}

/// Which text kind a media type is, or `None` when it is refused.
fn classify(media: &str) -> Option<Kind> {
    match media {
        "text/html" | "application/xhtml+xml" => Some(Kind::Html),
        "text/plain" | "text/markdown" | "text/csv" => Some(Kind::Plain),
        "application/json" | "text/json" => Some(Kind::Json),
        "application/xml" | "text/xml" => Some(Kind::Xml),
        m if m.ends_with("+json") => Some(Kind::Json),
        m if m.ends_with("+xml") => Some(Kind::Xml),
        _ => None,
    }
}

/// Guesses the kind of an untyped body: HTML, XML or JSON by their start, other text
/// as plain; `None` for binary (NUL bytes or invalid UTF-8 early on).
fn sniff(body: &[u8]) -> Option<(Kind, String)> {
    let head = &body[..body.len().min(1024)];
    if head.contains(&0) {
        return None;
    }
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    if text.contains('\u{fffd}') && !text.ends_with('\u{fffd}') {
        return None;
    }
    let start = text.trim_start();
    if start.starts_with("<!doctype html") || start.starts_with("<html") {
        Some((Kind::Html, "text/html".to_owned()))
    } else if start.starts_with("<?xml") {
        Some((Kind::Xml, "application/xml".to_owned()))
    } else if start.starts_with('{') || start.starts_with('[') {
        Some((Kind::Json, "application/json".to_owned()))
    } else {
        Some((Kind::Plain, "text/plain".to_owned()))
    }
}

/// Pretty-prints JSON (keeping key order); text that is not valid JSON (e.g. cut at
/// `max_bytes`) is returned unchanged.
fn pretty_json(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

/// Removes a `user:pass@` part from URL text that did not parse.
fn strip_userinfo_text(url: &str) -> String {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return crate::web::http::one_line(url, 200);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    crate::web::http::one_line(&format!("{scheme}://{host}{tail}"), 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(classify("text/html"), Some(Kind::Html));
        assert_eq!(classify("application/ld+json"), Some(Kind::Json));
        assert_eq!(classify("application/rss+xml"), Some(Kind::Xml));
        assert_eq!(classify("image/png"), None);
        assert_eq!(classify("application/pdf"), None);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0"), None);
        assert_eq!(
            sniff(b"  <!DOCTYPE html><p>x").map(|k| k.0),
            Some(Kind::Html)
        );
        assert_eq!(sniff(b"hello").map(|k| k.0), Some(Kind::Plain));
    }

    #[test]
    fn userinfo_is_removed_from_unparsed_urls() {
        assert_eq!(
            strip_userinfo_text("http://u:p@h:99999/x"),
            "http://h:99999/x"
        );
    }

    #[test]
    fn body_excerpt_is_one_line() {
        assert_eq!(
            crate::web::http::body_excerpt(b"<html><h1>Not\nFound</h1></html>"),
            "Not Found"
        );
    }
}
