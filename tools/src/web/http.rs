//! Helpers shared by the search backends and the fetcher: bounded body reads, error
//! mapping, `Retry-After`, one-line excerpts, URL redaction and text cleaning.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Response, Url};

use super::error::WebError;
use super::ssrf::ResolveFailure;

/// Longest excerpt of an error body put into a [`WebError::Http`] message.
const EXCERPT_CHARS: usize = 200;

/// Reads at most `limit` bytes of the body; returns the bytes and whether more followed.
pub(crate) async fn read_limited(
    response: &mut Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit.saturating_sub(body.len());
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// Maps a reqwest error to a [`WebError`], finding SSRF and DNS failures raised by our
/// resolver deep in the error chain. `origin` names the service or redacted URL.
pub(crate) fn map_reqwest_error(err: &reqwest::Error, origin: &str, after: Duration) -> WebError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if let Some(failure) = current.downcast_ref::<ResolveFailure>() {
            return failure.to_web_error();
        }
        source = current.source();
    }
    if err.is_timeout() {
        return WebError::Timeout {
            what: format!("request to {origin}"),
            after,
        };
    }
    let message = root_cause(err);
    if err.is_connect() {
        WebError::Connect {
            origin: origin.to_owned(),
            message,
        }
    } else {
        WebError::Request {
            origin: origin.to_owned(),
            message,
        }
    }
}

/// The innermost error message of a chain, on one line (reqwest's own messages carry
/// the URL, which may hold credentials, so they are avoided).
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = last.source() {
        last = next;
    }
    let text = if std::ptr::eq(last as *const _ as *const u8, err as *const _ as *const u8) {
        "request failed".to_owned()
    } else {
        last.to_string()
    };
    one_line(&text, EXCERPT_CHARS)
}

/// The error for a non-success status: 429 becomes [`WebError::RateLimited`].
pub(crate) fn status_error(
    status: u16,
    headers: &HeaderMap,
    origin: &str,
    body: &[u8],
) -> WebError {
    if status == 429 {
        return WebError::RateLimited {
            retry_after: retry_after(headers),
        };
    }
    WebError::Http {
        status,
        origin: origin.to_owned(),
        excerpt: body_excerpt(body),
    }
}

/// A one-line excerpt of an error body: HTML is reduced to its text, whitespace is
/// collapsed and the result is cut to a couple of hundred characters.
pub(crate) fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim_start();
    let plain = if trimmed.starts_with('<') {
        strip_html(trimmed)
    } else {
        trimmed.to_owned()
    };
    let line = one_line(&plain, EXCERPT_CHARS);
    if line.is_empty() {
        "(empty body)".to_owned()
    } else {
        line
    }
}

/// Collapses all whitespace runs to one space and cuts to `max_chars` (adding `…`).
pub(crate) fn one_line(text: &str, max_chars: usize) -> String {
    let collapsed = collapse_whitespace(text);
    truncate_chars(&collapsed, max_chars)
}

/// Collapses all whitespace runs (including newlines) to single spaces and trims.
pub(crate) fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Cuts `text` to at most `max_chars` characters, ending in `…` when cut.
pub(crate) fn truncate_chars(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some((cut, _)) => {
            let mut out = text[..cut].trim_end().to_owned();
            out.push('…');
            out
        }
    }
}

/// Removes HTML tags and decodes entities (`<b>A&amp;B</b>` → `A&B`), collapsing
/// whitespace. Text without `<` or `&` is only whitespace-collapsed.
pub(crate) fn strip_html(text: &str) -> String {
    if !text.contains('<') && !text.contains('&') {
        return collapse_whitespace(text);
    }
    let fragment = scraper::Html::parse_fragment(text);
    let mut out = String::with_capacity(text.len());
    for node in fragment.root_element().descendants() {
        if let Some(element) = node.value().as_element() {
            // Block-level boundaries separate words; inline tags do not.
            if matches!(
                element.name(),
                "br" | "p"
                    | "div"
                    | "li"
                    | "tr"
                    | "td"
                    | "th"
                    | "h1"
                    | "h2"
                    | "h3"
                    | "h4"
                    | "h5"
                    | "h6"
                    | "ul"
                    | "ol"
                    | "table"
                    | "hr"
                    | "section"
                    | "article"
            ) {
                out.push(' ');
            }
        } else if let Some(t) = node.value().as_text() {
            let skipped = node.ancestors().any(|a| {
                a.value()
                    .as_element()
                    .is_some_and(|e| matches!(e.name(), "script" | "style" | "title" | "head"))
            });
            if !skipped {
                out.push_str(t);
            }
        }
    }
    collapse_whitespace(&out)
}

/// The URL without user name and password, for messages and results.
pub(crate) fn redact_url(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut clean = url.clone();
    // Both only fail for URLs that cannot have credentials, which then have none.
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.to_string()
}

/// The wait a 429 response asks for: `Retry-After` (delta-seconds or an HTTP date),
/// falling back to the first value of `X-RateLimit-Reset` (Brave's per-window header).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(value) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if let Ok(secs) = value.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Some(at) = parse_http_date(value) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            return Some(Duration::from_secs(at.saturating_sub(now)));
        }
    }
    let reset = headers.get("x-ratelimit-reset")?.to_str().ok()?;
    let first = reset.split(',').next()?.trim();
    first.parse::<u64>().ok().map(Duration::from_secs)
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds.
pub(crate) fn parse_http_date(value: &str) -> Option<u64> {
    let at = jielong_util::date::parse_http_date(value)?;
    at.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn html_is_stripped() {
        assert_eq!(
            strip_html("The <strong>Rust</strong> Book &amp; more&nbsp;docs"),
            "The Rust Book & more docs"
        );
        assert_eq!(strip_html("plain\n  text"), "plain text");
        assert_eq!(strip_html("R<b>us</b>t<br>next"), "Rust next");
        assert_eq!(truncate_chars("abcdef", 3), "abc…");
    }
}
