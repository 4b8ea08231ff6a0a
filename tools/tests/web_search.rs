//! `web_search` against real HTTP servers on 127.0.0.1 that answer in the SearXNG and
//! Brave Search API formats.

#[path = "web_fixtures/server.rs"]
mod server;

use std::time::{Duration, Instant};

use jielong_tools::web::search::{NOT_CONFIGURED_MESSAGE, SEARXNG_URL_ENV};
use jielong_tools::web::{
    BraveBackend, SafeSearch, SearchBackend, SearchBackendKind, SearchQuery, SearchResult,
    SearxngBackend, WebError, WebSearchConfig,
};
use server::{closed_port, fixture, Reply, TestServer};

const TIMEOUT: Duration = Duration::from_secs(5);

fn searxng(server: &TestServer, max_results: usize) -> SearxngBackend {
    SearxngBackend::new(&server.url("/"), TIMEOUT, max_results).expect("backend")
}

fn brave(server: &TestServer, max_results: usize) -> BraveBackend {
    BraveBackend::new(&server.url("/"), "test-key-123", TIMEOUT, max_results).expect("backend")
}

fn assert_one_line(err: &WebError) {
    let text = err.to_string();
    assert!(!text.contains('\n'), "multi-line error: {text:?}");
    assert!(text.len() < 600, "overlong error: {text}");
}

fn result(title: &str, url: &str, snippet: &str) -> SearchResult {
    SearchResult {
        title: title.to_owned(),
        url: url.to_owned(),
        snippet: snippet.to_owned(),
    }
}

#[tokio::test]
async fn searxng_parses_real_response() {
    let server = TestServer::start(|_| Reply::json(200, fixture("searxng_search.json")));
    let backend = searxng(&server, 10);
    let query = SearchQuery::new("  rust ownership ")
        .with_language("en-US")
        .with_safe_search(SafeSearch::Strict)
        .with_page(2);
    let results = backend.search(&query).await.expect("search");

    let request = &server.requests()[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path(), "/search");
    assert_eq!(request.param("q").as_deref(), Some("rust ownership"));
    assert_eq!(request.param("format").as_deref(), Some("json"));
    assert_eq!(request.param("language").as_deref(), Some("en-US"));
    assert_eq!(request.param("pageno").as_deref(), Some("2"));
    assert_eq!(request.param("safesearch").as_deref(), Some("2"));

    assert_eq!(
        results,
        vec![
            result(
                "Rust",
                "https://en.wikipedia.org/wiki/Rust_(programming_language)",
                "Rust is a general-purpose programming language emphasizing performance, type safety, and concurrency."
            ),
            result(
                "What Is Ownership? - The Rust Programming Language",
                "https://doc.rust-lang.org/book/ch04-01-what-is-ownership.html",
                "Ownership is a set of rules that govern how a Rust program manages memory. All programs have to manage the way they use a computer's memory while running."
            ),
            result(
                "Understanding Ownership in Rust",
                "https://blog.example.org/2023/understanding-ownership",
                "A gentle introduction: moves, borrows and lifetimes — explained with diagrams."
            ),
            result(
                "Newest 'rust' Questions - Stack Overflow",
                "https://stackoverflow.com/questions/tagged/rust",
                ""
            ),
            result(
                "MIR borrow check - Rust Compiler Development Guide",
                "https://rustc-dev-guide.rust-lang.org/borrow_check.html",
                "The borrow check is Rust's \"secret sauce\" – it is tasked with enforcing a number of properties."
            ),
        ]
    );
    assert_eq!(backend.name(), "SearXNG");
}

#[tokio::test]
async fn searxng_caps_results_and_keeps_base_path() {
    let server = TestServer::start(|_| Reply::json(200, fixture("searxng_search.json")));
    let backend = SearxngBackend::new(&server.url("/searx"), TIMEOUT, 3).expect("backend");
    // The backend's cap wins over a larger per-query wish; a smaller one is honoured.
    let results = backend
        .search(&SearchQuery::new("rust").with_max_results(50))
        .await
        .expect("search");
    assert_eq!(results.len(), 3);
    let results = backend
        .search(&SearchQuery::new("rust").with_max_results(2))
        .await
        .expect("search");
    assert_eq!(results.len(), 2);
    let request = &server.requests()[0];
    assert_eq!(request.path(), "/searx/search");
    assert_eq!(request.param("language"), None);
    assert_eq!(request.param("safesearch").as_deref(), Some("1"));
}

#[tokio::test]
async fn searxng_all_engines_unresponsive_is_retryable_backend_error() {
    let server = TestServer::start(|_| Reply::json(200, fixture("searxng_unresponsive.json")));
    let err = searxng(&server, 5)
        .search(&SearchQuery::new("rust"))
        .await
        .expect_err("no results");
    assert!(matches!(err, WebError::Backend { .. }), "{err:?}");
    assert!(err.retryable());
    let text = err.to_string();
    assert!(
        text.contains("google (Suspended: too many requests)"),
        "{text}"
    );
    assert!(text.contains("duckduckgo (timeout)"), "{text}");
    assert_one_line(&err);
}

#[tokio::test]
async fn searxng_empty_results_are_not_an_error() {
    let server = TestServer::start(|_| {
        Reply::json(
            200,
            r#"{"query":"zzqx","number_of_results":0,"results":[],"answers":[],"corrections":[],"infoboxes":[],"suggestions":[],"unresponsive_engines":[]}"#,
        )
    });
    let results = searxng(&server, 5)
        .search(&SearchQuery::new("zzqx"))
        .await
        .expect("search");
    assert!(results.is_empty());
}

#[tokio::test]
async fn searxng_json_format_disabled_gives_hint() {
    let server = TestServer::start(|_| {
        Reply::html(
            403,
            "<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>\n<body><h1>Forbidden</h1>\n<p>You don't have the permission to access the requested resource.</p></body></html>",
        )
    });
    let err = searxng(&server, 5)
        .search(&SearchQuery::new("rust"))
        .await
        .expect_err("403");
    let WebError::Http {
        status, excerpt, ..
    } = &err
    else {
        panic!("expected Http, got {err:?}");
    };
    assert_eq!(*status, 403);
    assert!(
        excerpt.starts_with("Forbidden You don't have the permission"),
        "{excerpt}"
    );
    assert!(excerpt.contains("search.formats"), "{excerpt}");
    assert!(!err.retryable());
    assert_one_line(&err);
}

#[tokio::test]
async fn searxng_server_error_has_status_and_excerpt() {
    let long_body = format!(
        "Internal Server Error\n\n{}",
        "traceback line\n".repeat(200)
    );
    let server = TestServer::start(move |_| Reply::new(500, "text/plain", long_body.clone()));
    let err = searxng(&server, 5)
        .search(&SearchQuery::new("rust"))
        .await
        .expect_err("500");
    let WebError::Http {
        status, excerpt, ..
    } = &err
    else {
        panic!("expected Http, got {err:?}");
    };
    assert_eq!(*status, 500);
    assert!(
        excerpt.starts_with("Internal Server Error traceback line"),
        "{excerpt}"
    );
    assert!(excerpt.chars().count() <= 201, "{excerpt}");
    assert!(err.retryable());
    assert!(err
        .to_string()
        .starts_with("HTTP 500 from SearXNG at http://127.0.0.1:"));
    assert_one_line(&err);
}

#[tokio::test]
async fn searxng_rate_limit_honours_retry_after() {
    let server = TestServer::start(|_| {
        Reply::html(429, "<html><body><h1>Too Many Requests</h1></body></html>")
            .with_header("Retry-After", "30")
    });
    let err = searxng(&server, 5)
        .search(&SearchQuery::new("rust"))
        .await
        .expect_err("429");
    assert_eq!(
        err,
        WebError::RateLimited {
            retry_after: Some(Duration::from_secs(30))
        }
    );
    assert!(err.retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(err.to_string(), "rate limited (retry after 30s)");
}

#[tokio::test]
async fn rate_limit_with_http_date_and_without_header() {
    // An HTTP date in the past means "now".
    let server = TestServer::start(|request| {
        if request.param("q").as_deref() == Some("dated") {
            Reply::json(429, "{}").with_header("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")
        } else {
            Reply::json(429, "{}")
        }
    });
    let backend = searxng(&server, 5);
    let dated = backend
        .search(&SearchQuery::new("dated"))
        .await
        .expect_err("429");
    assert_eq!(dated.retry_after(), Some(Duration::ZERO));
    let bare = backend
        .search(&SearchQuery::new("bare"))
        .await
        .expect_err("429");
    assert_eq!(bare, WebError::RateLimited { retry_after: None });
    assert_eq!(bare.to_string(), "rate limited");
}

#[tokio::test]
async fn searxng_invalid_json_is_invalid_response() {
    let server = TestServer::start(|request| {
        if request.param("q").as_deref() == Some("shape") {
            Reply::json(200, r#"{"results": "not a list"}"#)
        } else {
            Reply::json(200, "<html>\n<body>not json at all</body>\n</html>")
        }
    });
    let backend = searxng(&server, 5);
    for q in ["garbage", "shape"] {
        let err = backend
            .search(&SearchQuery::new(q))
            .await
            .expect_err("invalid JSON");
        assert!(matches!(err, WebError::InvalidResponse { .. }), "{err:?}");
        assert!(err.to_string().contains("malformed JSON"), "{err}");
        assert!(!err.retryable());
        assert_one_line(&err);
    }
}

#[tokio::test]
async fn slow_server_times_out() {
    let server = TestServer::start(|_| Reply::Sleep(Duration::from_secs(3)));
    let backend =
        SearxngBackend::new(&server.url("/"), Duration::from_millis(400), 5).expect("backend");
    let started = Instant::now();
    let err = backend
        .search(&SearchQuery::new("rust"))
        .await
        .expect_err("timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, WebError::Timeout { .. }), "{err:?}");
    assert!(err.retryable());
    assert_eq!(err.to_string(), "SearXNG search timed out after 400ms");
}

#[tokio::test]
async fn connection_refused_is_retryable_connect_error() {
    let port = closed_port();
    let backend =
        SearxngBackend::new(&format!("http://127.0.0.1:{port}"), TIMEOUT, 5).expect("backend");
    let err = backend
        .search(&SearchQuery::new("rust"))
        .await
        .expect_err("refused");
    assert!(matches!(err, WebError::Connect { .. }), "{err:?}");
    assert!(err.retryable());
    assert_one_line(&err);
}

#[tokio::test]
async fn empty_query_is_rejected_without_request() {
    let server = TestServer::start(|_| Reply::json(200, "{}"));
    let err = searxng(&server, 5)
        .search(&SearchQuery::new("   "))
        .await
        .expect_err("empty");
    assert!(matches!(err, WebError::InvalidQuery(_)), "{err:?}");
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn brave_parses_real_response_and_sends_key() {
    let server = TestServer::start(|_| Reply::json(200, fixture("brave_search.json")));
    let backend = brave(&server, 10);
    let query = SearchQuery::new("rust ownership")
        .with_language("en-GB")
        .with_safe_search(SafeSearch::Off);
    let results = backend.search(&query).await.expect("search");

    let request = &server.requests()[0];
    assert_eq!(request.path(), "/res/v1/web/search");
    assert_eq!(request.param("q").as_deref(), Some("rust ownership"));
    assert_eq!(request.param("count").as_deref(), Some("10"));
    assert_eq!(request.param("offset").as_deref(), Some("0"));
    assert_eq!(request.param("safesearch").as_deref(), Some("off"));
    assert_eq!(request.param("search_lang").as_deref(), Some("en"));
    assert_eq!(request.header("x-subscription-token"), Some("test-key-123"));
    assert_eq!(request.header("accept"), Some("application/json"));

    assert_eq!(
        results,
        vec![
            result(
                "What is Ownership? - The Rust Programming Language",
                "https://doc.rust-lang.org/book/ch04-01-what-is-ownership.html",
                "Ownership is a set of rules that govern how a Rust program manages memory. All programs have to manage the way they use a computer's memory while running."
            ),
            result(
                "Understanding Ownership in Rust | Example Dev Blog",
                "https://blog.example.org/2023/understanding-ownership",
                "March 14, 2023 - Ownership is Rust's most unique feature & has deep implications for the rest of the language."
            ),
            result(
                "Rust by Example: Ownership and moves",
                "https://doc.rust-lang.org/rust-by-example/scope/move.html",
                "Because variables are in charge of freeing their own resources, resources can only have one owner."
            ),
            result(
                "r/rust on Reddit: How do you explain ownership?",
                "https://www.reddit.com/r/rust/comments/abc123/how_do_you_explain_ownership/",
                "Posted by u/someone - 152 votes and 48 comments"
            ),
        ]
    );
    assert_eq!(backend.name(), "Brave Search");
    // The key never shows in debug output.
    assert!(!format!("{backend:?}").contains("test-key-123"));
}

#[tokio::test]
async fn brave_count_is_clamped_and_capped() {
    let server = TestServer::start(|_| Reply::json(200, fixture("brave_search.json")));
    let results = brave(&server, 50)
        .search(&SearchQuery::new("rust").with_page(30))
        .await
        .expect("search");
    assert_eq!(results.len(), 4);
    let request = &server.requests()[0];
    assert_eq!(request.param("count").as_deref(), Some("20"));
    assert_eq!(request.param("offset").as_deref(), Some("9"));
    let results = brave(&server, 2)
        .search(&SearchQuery::new("rust"))
        .await
        .expect("search");
    assert_eq!(results.len(), 2);
}

#[tokio::test]
async fn brave_without_web_section_is_empty() {
    let server = TestServer::start(|_| {
        Reply::json(
            200,
            r#"{"type":"search","query":{"original":"x"},"mixed":{"type":"mixed","main":[]}}"#,
        )
    });
    let results = brave(&server, 5)
        .search(&SearchQuery::new("x"))
        .await
        .expect("search");
    assert!(results.is_empty());
}

#[tokio::test]
async fn brave_invalid_token_reports_detail() {
    let server = TestServer::start(|_| Reply::json(422, fixture("brave_error_invalid_token.json")));
    let err = brave(&server, 5)
        .search(&SearchQuery::new("rust"))
        .await
        .expect_err("422");
    let WebError::Http {
        status, excerpt, ..
    } = &err
    else {
        panic!("expected Http, got {err:?}");
    };
    assert_eq!(*status, 422);
    assert_eq!(
        excerpt,
        "SUBSCRIPTION_TOKEN_INVALID: The provided subscription token is invalid."
    );
    assert!(!err.retryable());
    assert_one_line(&err);
}

#[tokio::test]
async fn brave_rate_limit_uses_retry_after_then_ratelimit_reset() {
    let server = TestServer::start(|request| {
        let reply = Reply::json(429, fixture("brave_error_rate_limited.json"))
            .with_header("X-RateLimit-Limit", "1, 2000")
            .with_header("X-RateLimit-Remaining", "0, 1943")
            .with_header("X-RateLimit-Reset", "1, 1419704");
        if request.param("q").as_deref() == Some("with-retry-after") {
            reply.with_header("Retry-After", "7")
        } else {
            reply
        }
    });
    let backend = brave(&server, 5);
    let err = backend
        .search(&SearchQuery::new("with-retry-after"))
        .await
        .expect_err("429");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    let err = backend
        .search(&SearchQuery::new("reset-only"))
        .await
        .expect_err("429");
    assert_eq!(
        err,
        WebError::RateLimited {
            retry_after: Some(Duration::from_secs(1))
        }
    );
    assert!(err.retryable());
}

#[tokio::test]
async fn brave_invalid_json_is_invalid_response() {
    let server =
        TestServer::start(|_| Reply::json(200, r#"{"web": {"results": [ {"title": "cut off"#));
    let err = brave(&server, 5)
        .search(&SearchQuery::new("rust"))
        .await
        .expect_err("invalid");
    assert!(matches!(err, WebError::InvalidResponse { .. }), "{err:?}");
    assert_one_line(&err);
}

#[test]
fn nothing_configured_is_a_clear_error() {
    let err = WebSearchConfig::from_lookup(|_| None).expect_err("not configured");
    assert_eq!(err.to_string(), NOT_CONFIGURED_MESSAGE);
    assert_eq!(
        err.to_string(),
        "web_search is not configured: set JIELONG_SEARXNG_URL or BRAVE_SEARCH_API_KEY"
    );
    let err = WebSearchConfig::default()
        .build_with_lookup(|_| None)
        .expect_err("not configured");
    assert!(matches!(err, WebError::NotConfigured(_)));
    // Blank values count as unset.
    let err = WebSearchConfig::from_lookup(|_| Some("  ".to_owned())).expect_err("blank");
    assert!(matches!(err, WebError::NotConfigured(_)));
}

#[test]
fn env_selects_backend() {
    let config = WebSearchConfig::from_lookup(|name| match name {
        "JIELONG_SEARXNG_URL" => Some("http://127.0.0.1:8888".to_owned()),
        "BRAVE_SEARCH_API_KEY" => Some("k".to_owned()),
        _ => None,
    })
    .expect("config");
    assert_eq!(config.backend, Some(SearchBackendKind::Searxng));
    assert_eq!(config.base_url.as_deref(), Some("http://127.0.0.1:8888"));

    let config = WebSearchConfig::from_lookup(|name| {
        (name == "BRAVE_SEARCH_API_KEY").then(|| "secret".to_owned())
    })
    .expect("config");
    assert_eq!(config.backend, Some(SearchBackendKind::Brave));
    assert_eq!(config.api_key, None, "the key stays in the environment");
    let backend = config
        .build_with_lookup(|name| (name == "BRAVE_SEARCH_API_KEY").then(|| "secret".to_owned()))
        .expect("backend");
    assert_eq!(backend.name(), "Brave Search");
    assert!(!format!("{backend:?}").contains("secret"));
}

#[test]
fn brave_without_key_is_missing_api_key() {
    let config = WebSearchConfig {
        backend: Some(SearchBackendKind::Brave),
        api_key_env: Some("MY_BRAVE_KEY".to_owned()),
        ..WebSearchConfig::default()
    };
    let err = config.build_with_lookup(|_| None).expect_err("no key");
    assert_eq!(
        err,
        WebError::MissingApiKey {
            service: "Brave Search",
            env: "MY_BRAVE_KEY".to_owned()
        }
    );
    assert!(err.to_string().contains("MY_BRAVE_KEY"));
    assert!(!err.retryable());
    // The key variable named in the config is used.
    let backend = config
        .build_with_lookup(|name| (name == "MY_BRAVE_KEY").then(|| "k".to_owned()))
        .expect("backend");
    assert_eq!(backend.name(), "Brave Search");
}

#[tokio::test]
async fn missing_api_key_sends_nothing() {
    let server = TestServer::start(|_| Reply::json(200, fixture("brave_search.json")));
    let err = BraveBackend::new(&server.url("/"), "  ", TIMEOUT, 5).expect_err("no key");
    assert!(matches!(err, WebError::MissingApiKey { .. }), "{err:?}");
    assert_eq!(server.connections(), 0);
}

#[test]
fn config_deserializes_and_builds() {
    let config: WebSearchConfig = serde_json::from_str(
        r#"{"backend": "searxng", "base_url": "http://127.0.0.1:8888/", "timeout": "2500ms", "max_results": 4}"#,
    )
    .expect("config");
    assert_eq!(config.backend, Some(SearchBackendKind::Searxng));
    assert_eq!(config.timeout, Duration::from_millis(2500));
    assert_eq!(config.max_results, 4);
    let json = serde_json::to_value(&config).expect("serialize");
    assert_eq!(json["timeout"], "2500ms");
    let back: WebSearchConfig = serde_json::from_value(json).expect("round trip");
    assert_eq!(back, config);
    assert_eq!(
        config.build_with_lookup(|_| None).expect("backend").name(),
        "SearXNG"
    );

    let numeric: WebSearchConfig =
        serde_json::from_str(r#"{"backend": "brave", "timeout": 3}"#).expect("config");
    assert_eq!(numeric.timeout, Duration::from_secs(3));
    assert_eq!(numeric.max_results, WebSearchConfig::default().max_results);

    assert!(serde_json::from_str::<WebSearchConfig>(r#"{"backend": "google"}"#).is_err());
    assert!(serde_json::from_str::<WebSearchConfig>(r#"{"timeout": "soon"}"#).is_err());
    assert!(serde_json::from_str::<WebSearchConfig>(r#"{"base_urll": "x"}"#).is_err());

    let bad = WebSearchConfig {
        backend: Some(SearchBackendKind::Searxng),
        base_url: Some("not a url".to_owned()),
        ..WebSearchConfig::default()
    };
    let err = bad.build_with_lookup(|_| None).expect_err("bad url");
    assert!(matches!(err, WebError::InvalidConfig(_)), "{err:?}");

    // A SearXNG backend without a URL falls back to the environment.
    let from_env = WebSearchConfig {
        backend: Some(SearchBackendKind::Searxng),
        ..WebSearchConfig::default()
    };
    assert!(
        from_env
            .build_with_lookup(
                |name| (name == SEARXNG_URL_ENV).then(|| "http://127.0.0.1:1".to_owned())
            )
            .is_ok()
    );
}

#[test]
fn api_key_is_redacted_in_config_debug() {
    let config = WebSearchConfig {
        backend: Some(SearchBackendKind::Brave),
        api_key: Some("super-secret".to_owned()),
        ..WebSearchConfig::default()
    };
    assert!(!format!("{config:?}").contains("super-secret"));
}
