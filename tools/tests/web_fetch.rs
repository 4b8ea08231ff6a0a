//! `fetch_url` against real HTTP servers on loopback: SSRF refusals, redirects,
//! limits, content types, charsets and HTML extraction.
//!
//! Loopback is itself a forbidden address, so every test that fetches opts in with
//! the allow list; the refusal tests run without it and prove that no connection is
//! made. Non-loopback addresses are only ever checked, never contacted: each is
//! vetted offline (`check_url`) and must be refused there before `fetch` is called.

#[path = "web_fixtures/server.rs"]
mod server;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use jielong_tools::web::{blocked_reason, FetchConfig, Fetcher, WebError};
use server::{fixture, Reply, TestServer};

/// A fetcher that may reach 127.0.0.1 only.
fn loopback_fetcher(config: FetchConfig) -> Fetcher {
    Fetcher::new(FetchConfig {
        allow_hosts: vec!["127.0.0.1".to_owned()],
        ..config
    })
    .expect("fetcher")
}

fn default_loopback_fetcher() -> Fetcher {
    loopback_fetcher(FetchConfig::default())
}

fn assert_one_line(err: &WebError) {
    let text = err.to_string();
    assert!(!text.contains('\n'), "multi-line error: {text:?}");
}

#[tokio::test]
async fn forbidden_addresses_are_refused_before_connecting() {
    let v4 = TestServer::start(|_| Reply::html(200, "<p>secret</p>"));
    let v6 = TestServer::start_on("[::1]:0", |_| Reply::html(200, "<p>secret</p>")).ok();
    let port = v4.addr.port();
    let port6 = v6.as_ref().map_or(port, |s| s.addr.port());
    let fetcher = Fetcher::new(FetchConfig::default()).expect("fetcher");

    let urls = [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://LOCALHOST.:{port}/"),
        format!("http://api.localhost:{port}/"),
        format!("http://[::1]:{port6}/"),
        format!("http://10.0.0.1:{port}/"),
        format!("http://169.254.169.254:{port}/latest/meta-data/"),
        format!("http://0.0.0.0:{port}/"),
        format!("http://[::]:{port6}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f.1:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::ffff:7f00:1]:{port6}/"),
        format!("https://192.168.1.1:{port}/"),
        format!("http://100.64.0.1:{port}/"),
        format!("http://[fd00::1]:{port6}/"),
        format!("http://[fe80::1]:{port6}/"),
        format!("http://user:hunter2@127.0.0.1:{port}/"),
    ];
    for url in &urls {
        // Offline first: IP literals and `localhost` names are refused without any
        // network access, so none of these addresses is ever contacted.
        let err = fetcher.check_url(url).expect_err(url);
        assert!(matches!(err, WebError::Blocked { .. }), "{url}: {err:?}");
        let err = fetcher.fetch(url).await.expect_err(url);
        let WebError::Blocked { addr, reason, .. } = &err else {
            panic!("{url}: expected Blocked, got {err:?}");
        };
        assert!(blocked_reason(*addr).is_some(), "{url}: {addr}");
        assert!(!reason.is_empty());
        assert!(!err.retryable());
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_one_line(&err);
    }
    // Let any stray connection attempt land before counting.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        v4.connections(),
        0,
        "the IPv4 loopback listener was contacted"
    );
    if let Some(v6) = &v6 {
        assert_eq!(
            v6.connections(),
            0,
            "the IPv6 loopback listener was contacted"
        );
    }
}

#[test]
fn blocked_reason_covers_special_ranges() {
    let blocked = [
        ("0.0.0.0", "unspecified (this-network)"),
        ("10.1.2.3", "private"),
        ("100.100.0.1", "shared (CGNAT)"),
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("172.31.255.255", "private"),
        ("192.0.0.8", "IETF protocol assignment"),
        ("192.0.2.1", "documentation"),
        ("192.168.0.1", "private"),
        ("198.18.0.1", "benchmarking"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("224.0.0.251", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::127.0.0.1", "IPv4-compatible (deprecated)"),
        ("64:ff9b::7f00:1", "loopback"),
        ("2002:a9fe:a9fe::1", "link-local"),
        ("2001:db8::1", "documentation"),
        (
            "2001:0:4136:e378::1",
            "IETF protocol assignment (incl. Teredo)",
        ),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local (deprecated)"),
        ("ff02::1", "multicast"),
        ("100::1", "discard-only"),
        ("4000::1", "reserved"),
    ];
    for (ip, reason) in blocked {
        let addr: IpAddr = ip.parse().expect(ip);
        assert_eq!(blocked_reason(addr), Some(reason), "{ip}");
    }
    for ip in [
        "1.1.1.1",
        "8.8.8.8",
        "93.184.215.14",
        "172.32.0.1",
        "100.128.0.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:0808:0808::1",
    ] {
        let addr: IpAddr = ip.parse().expect(ip);
        assert_eq!(blocked_reason(addr), None, "{ip}");
    }
}

#[tokio::test]
async fn html_article_is_extracted() {
    let server = TestServer::start(|_| Reply::html(200, fixture("article.html")));
    let result = default_loopback_fetcher()
        .fetch(&server.url("/2023/understanding-ownership"))
        .await
        .expect("fetch");
    assert_eq!(result.status, 200);
    assert_eq!(result.content_type, "text/html");
    assert_eq!(
        result.title.as_deref(),
        Some("Understanding Ownership in Rust | Example Dev Blog")
    );
    assert!(!result.truncated);
    assert_eq!(result.bytes, fixture("article.html").len());
    assert_eq!(result.url, server.url("/2023/understanding-ownership"));

    let text = &result.text;
    for kept in [
        "# Understanding Ownership in Rust",
        "By Ada Example · March 14, 2023 · 8 min read",
        "Ownership is Rust’s most unique feature, and it has deep implications for the rest of the language. It enables Rust to make memory safety guarantees without needing a garbage collector.",
        "In this post we look at the three ownership rules, what a move is,",
        "## The ownership rules",
        "1. Each value in Rust has an owner.\n2. There can only be one owner at a time.\n3. When the owner goes out of scope, the value will be dropped.",
        "## Moves",
        "```\nlet s1 = String::from(\"hello\");\nlet s2 = s1;\n// println!(\"{s1}\"); // error[E0382]: borrow of moved value\n```",
        "Figure 1: after the move only s2 owns the heap buffer.",
        "Reference | How many at once\n&T | any number\n&mut T | exactly one",
        "- Shared references allow reading.\n- Mutable references allow writing, but are exclusive.\n  - No other reference may exist meanwhile.",
        "“Fighting the borrow checker” is a rite of passage.",
        "Read more in the follow-up post on lifetimes.",
        "Tags: rust, memory",
    ] {
        assert!(text.contains(kept), "missing {kept:?} in:\n{text}");
    }
    for dropped in [
        "gtag",
        "dataLayer",
        "font-family",
        "schema.org",
        "Skip to content",
        "cookies",
        "Accept all",
        "Archive",
        "About us",
        "Search the blog",
        "Share on Twitter",
        "Hidden tracking text",
        "42 Comments",
        "Related posts",
        "Traits in depth",
        "newsletter",
        "All rights reserved",
        "Privacy policy",
        "<",
        "&amp;",
    ] {
        assert!(!text.contains(dropped), "kept {dropped:?} in:\n{text}");
    }
    assert!(
        text.starts_with("# Understanding Ownership in Rust"),
        "{text}"
    );
    assert!(!text.contains("\n\n\n"));
}

#[tokio::test]
async fn page_without_main_keeps_body_text() {
    let server = TestServer::start(|_| {
        Reply::html(
            200,
            "<html><head><title>Plain</title></head><body><nav><a href=/>Home</a></nav>\
             <h1>Old page</h1><p>Just a <a href=/x>link</a> and text.</p><footer>Footer</footer></body></html>",
        )
    });
    let result = default_loopback_fetcher()
        .fetch(&server.url("/"))
        .await
        .expect("fetch");
    assert_eq!(result.title.as_deref(), Some("Plain"));
    assert_eq!(result.text, "# Old page\n\nJust a link and text.");
}

#[tokio::test]
async fn redirects_are_followed_and_each_hop_rechecked() {
    let server = TestServer::start(|request| match request.path() {
        "/start" => Reply::redirect(302, "/middle"),
        "/middle" => Reply::redirect(301, "/final?x=1#frag"),
        "/final" => Reply::new(200, "text/plain; charset=utf-8", "arrived\r\nsafely"),
        _ => Reply::new(404, "text/plain", "not found"),
    });
    let result = default_loopback_fetcher()
        .fetch(&server.url("/start"))
        .await
        .expect("fetch");
    assert_eq!(result.url, server.url("/final?x=1#frag"));
    assert_eq!(result.text, "arrived\nsafely");
    assert_eq!(result.content_type, "text/plain");
    assert_eq!(result.title, None);
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn redirect_to_forbidden_address_is_refused() {
    let server = TestServer::start(|request| match request.path() {
        "/to-localhost" => {
            let port = request
                .header("host")
                .and_then(|h| h.rsplit(':').next())
                .unwrap_or("80")
                .to_owned();
            Reply::redirect(302, &format!("http://localhost:{port}/secret"))
        }
        "/to-mapped" => {
            let port = request
                .header("host")
                .and_then(|h| h.rsplit(':').next())
                .unwrap_or("80")
                .to_owned();
            Reply::redirect(307, &format!("http://[::ffff:127.0.0.1]:{port}/secret"))
        }
        "/to-metadata" => Reply::redirect(302, "http://169.254.169.254/latest/meta-data/"),
        "/to-file" => Reply::redirect(302, "file:///etc/passwd"),
        _ => Reply::html(200, "<p>secret</p>"),
    });
    let fetcher = default_loopback_fetcher();
    // The metadata target is an IP literal: refused offline, never contacted.
    assert!(matches!(
        fetcher.check_url("http://169.254.169.254/latest/meta-data/"),
        Err(WebError::Blocked { .. })
    ));
    for (path, expect_addr) in [
        ("/to-localhost", None),
        ("/to-mapped", Some("::ffff:127.0.0.1")),
        ("/to-metadata", Some("169.254.169.254")),
    ] {
        let err = fetcher.fetch(&server.url(path)).await.expect_err(path);
        let WebError::Blocked { addr, .. } = &err else {
            panic!("{path}: expected Blocked, got {err:?}");
        };
        if let Some(expected) = expect_addr {
            assert_eq!(addr.to_string(), expected, "{path}");
        } else {
            assert!(
                addr.is_loopback() || addr.to_canonical().is_loopback(),
                "{addr}"
            );
        }
    }
    let err = fetcher
        .fetch(&server.url("/to-file"))
        .await
        .expect_err("file");
    assert_eq!(
        err,
        WebError::UnsupportedScheme {
            scheme: "file".to_owned()
        }
    );
    let secret_hits = server
        .requests()
        .iter()
        .filter(|r| r.path() == "/secret")
        .count();
    assert_eq!(secret_hits, 0);
}

#[tokio::test]
async fn redirect_loop_and_too_many_redirects() {
    let server = TestServer::start(|request| {
        let path = request.path().to_owned();
        if path == "/a" {
            return Reply::redirect(302, "/b");
        }
        if path == "/b" {
            return Reply::redirect(302, "/a#again");
        }
        if let Some(n) = path.strip_prefix("/hop/") {
            let n: u32 = n.parse().unwrap_or(0);
            return Reply::redirect(302, &format!("/hop/{}", n + 1));
        }
        Reply::html(200, "<p>end</p>")
    });
    let fetcher = loopback_fetcher(FetchConfig {
        max_redirects: 3,
        ..FetchConfig::default()
    });
    let err = fetcher.fetch(&server.url("/a")).await.expect_err("loop");
    assert_eq!(
        err,
        WebError::RedirectLoop {
            url: server.url("/a#again")
        }
    );
    let err = fetcher
        .fetch(&server.url("/hop/0"))
        .await
        .expect_err("too many");
    assert_eq!(
        err,
        WebError::TooManyRedirects {
            max: 3,
            url: server.url("/hop/0")
        }
    );
    // 1 request for /hop/0 plus 3 followed redirects.
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.path().starts_with("/hop/"))
            .count(),
        4
    );
}

#[tokio::test]
async fn body_over_limit_is_truncated() {
    let big = "0123456789abcdef".repeat(200 * 1024); // 3.2 MB
    let server = TestServer::start(move |_| Reply::new(200, "text/plain", big.clone()));
    let fetcher = loopback_fetcher(FetchConfig {
        max_bytes: 64 * 1024,
        ..FetchConfig::default()
    });
    let result = fetcher.fetch(&server.url("/big")).await.expect("fetch");
    assert!(result.truncated);
    assert_eq!(result.bytes, 64 * 1024);
    assert_eq!(result.text.len(), 64 * 1024);
    assert!(result.text.starts_with("0123456789abcdef"));

    // The default limit is 2 MiB.
    let result = default_loopback_fetcher()
        .fetch(&server.url("/big"))
        .await
        .expect("fetch");
    assert!(result.truncated);
    assert_eq!(result.bytes, 2 * 1024 * 1024);
}

#[tokio::test]
async fn slow_body_times_out() {
    let server = TestServer::start(|_| Reply::Stall {
        status: 200,
        headers: vec![("Content-Type".to_owned(), "text/html".to_owned())],
        first: b"<html><body><p>partial".to_vec(),
        content_length: 100_000,
        stall: Duration::from_secs(3),
    });
    let fetcher = loopback_fetcher(FetchConfig {
        timeout: Duration::from_millis(500),
        ..FetchConfig::default()
    });
    let started = Instant::now();
    let err = fetcher
        .fetch(&server.url("/slow"))
        .await
        .expect_err("timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, WebError::Timeout { .. }), "{err:?}");
    assert!(err.retryable());
    assert_eq!(
        err.to_string(),
        format!("fetching {} timed out after 500ms", server.url("/slow"))
    );
}

#[tokio::test]
async fn binary_content_is_refused() {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01".to_vec();
    let server = TestServer::start(move |request| match request.path() {
        "/image" => Reply::new(200, "image/png", png.clone()),
        "/pdf" => Reply::new(200, "application/pdf", "%PDF-1.7"),
        _ => Reply::Full {
            status: 200,
            headers: Vec::new(),
            body: png.clone(),
        },
    });
    let fetcher = default_loopback_fetcher();
    let err = fetcher.fetch(&server.url("/image")).await.expect_err("png");
    assert_eq!(
        err,
        WebError::UnsupportedContentType {
            content_type: "image/png".to_owned(),
            url: server.url("/image"),
        }
    );
    assert!(err.to_string().contains("\"image/png\""), "{err}");
    assert!(!err.retryable());
    let err = fetcher.fetch(&server.url("/pdf")).await.expect_err("pdf");
    assert!(err.to_string().contains("application/pdf"), "{err}");
    // Without a Content-Type the body is sniffed; binary stays refused.
    let err = fetcher
        .fetch(&server.url("/untyped"))
        .await
        .expect_err("untyped");
    assert!(
        matches!(err, WebError::UnsupportedContentType { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn non_utf8_charsets_are_decoded() {
    let (latin1, _, _) = encoding_rs::WINDOWS_1252.encode("<p>Café crème – 10 €</p>");
    let latin1 = latin1.into_owned();
    let page =
        "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=Shift_JIS\">\
                <title>日本語のページ</title></head><body><p>こんにちは、世界。</p></body></html>";
    let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode(page);
    let sjis = sjis.into_owned();
    assert!(std::str::from_utf8(&sjis).is_err());
    let server = TestServer::start(move |request| match request.path() {
        "/latin1" => Reply::new(200, "text/html; charset=windows-1252", latin1.clone()),
        _ => Reply::new(200, "text/html", sjis.clone()),
    });
    let fetcher = default_loopback_fetcher();
    let result = fetcher.fetch(&server.url("/latin1")).await.expect("latin1");
    assert_eq!(result.text, "Café crème – 10 €");
    let result = fetcher.fetch(&server.url("/sjis")).await.expect("sjis");
    assert_eq!(result.title.as_deref(), Some("日本語のページ"));
    assert_eq!(result.text, "こんにちは、世界。");
}

#[tokio::test]
async fn json_and_xml_are_text() {
    let server = TestServer::start(|request| match request.path() {
        "/json" => Reply::json(200, r#"{"name":"jielong","tags":["a","b"]}"#),
        _ => Reply::new(
            200,
            "application/rss+xml",
            "<?xml version=\"1.0\"?><rss><channel><title>Feed</title></channel></rss>",
        ),
    });
    let fetcher = default_loopback_fetcher();
    let json = fetcher.fetch(&server.url("/json")).await.expect("json");
    assert_eq!(json.content_type, "application/json");
    assert_eq!(
        json.text,
        "{\n  \"name\": \"jielong\",\n  \"tags\": [\n    \"a\",\n    \"b\"\n  ]\n}"
    );
    let xml = fetcher.fetch(&server.url("/feed")).await.expect("xml");
    assert_eq!(xml.content_type, "application/rss+xml");
    assert!(xml.text.contains("<title>Feed</title>"));
}

#[tokio::test]
async fn error_statuses_are_errors() {
    let server = TestServer::start(|request| match request.path() {
        "/missing" => Reply::html(
            404,
            "<html><head><title>404</title></head><body><h1>Page not found</h1></body></html>",
        ),
        "/busy" => Reply::html(429, "slow down").with_header("Retry-After", "12"),
        _ => Reply::new(503, "text/plain", "maintenance"),
    });
    let fetcher = default_loopback_fetcher();
    let err = fetcher
        .fetch(&server.url("/missing"))
        .await
        .expect_err("404");
    assert_eq!(
        err,
        WebError::Http {
            status: 404,
            origin: server.url("/missing"),
            excerpt: "Page not found".to_owned(),
        }
    );
    assert!(!err.retryable());
    let err = fetcher.fetch(&server.url("/busy")).await.expect_err("429");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(12)));
    let err = fetcher.fetch(&server.url("/down")).await.expect_err("503");
    assert!(err.retryable());
    assert_one_line(&err);
}

#[tokio::test]
async fn credentials_are_sent_but_never_reported() {
    let server = TestServer::start(|request| match request.path() {
        "/private" => Reply::new(
            200,
            "text/plain",
            format!("auth={}", request.header("authorization").unwrap_or("none")),
        ),
        _ => Reply::new(500, "text/plain", "boom"),
    });
    let fetcher = default_loopback_fetcher();
    let port = server.addr.port();
    let result = fetcher
        .fetch(&format!("http://user:hunter2@127.0.0.1:{port}/private"))
        .await
        .expect("fetch");
    assert!(result.text.starts_with("auth=Basic "), "{}", result.text);
    assert_eq!(result.url, server.url("/private"));
    let err = fetcher
        .fetch(&format!("http://user:hunter2@127.0.0.1:{port}/fail"))
        .await
        .expect_err("500");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    let err = fetcher
        .fetch("http://user:hunter2@127.0.0.1:99999/")
        .await
        .expect_err("bad port");
    assert!(matches!(err, WebError::InvalidUrl { .. }), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn unsupported_schemes_and_bad_urls() {
    let fetcher = Fetcher::new(FetchConfig::default()).expect("fetcher");
    for (url, scheme) in [
        ("file:///etc/passwd", "file"),
        ("ftp://127.0.0.1/x", "ftp"),
        ("gopher://127.0.0.1:70/", "gopher"),
        ("data:text/html,<p>hi</p>", "data"),
    ] {
        let err = fetcher.fetch(url).await.expect_err(url);
        assert_eq!(
            err,
            WebError::UnsupportedScheme {
                scheme: scheme.to_owned()
            },
            "{url}"
        );
    }
    let err = fetcher.fetch("not a url").await.expect_err("garbage");
    assert!(matches!(err, WebError::InvalidUrl { .. }), "{err:?}");
}

#[tokio::test]
async fn allow_cidrs_opt_in() {
    let server = TestServer::start(|_| Reply::new(200, "text/plain", "intranet"));
    let fetcher = Fetcher::new(FetchConfig {
        allow_cidrs: vec!["127.0.0.0/8".parse().expect("cidr")],
        ..FetchConfig::default()
    })
    .expect("fetcher");
    let port = server.addr.port();
    // Both the literal and a name resolving into the range are allowed.
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
    ] {
        let result = fetcher.fetch(&url).await.expect(&url);
        assert_eq!(result.text, "intranet");
    }
    // A host name on the allow list may resolve anywhere.
    let hosts = Fetcher::new(FetchConfig {
        allow_hosts: vec!["localhost".to_owned()],
        ..FetchConfig::default()
    })
    .expect("fetcher");
    let result = hosts
        .fetch(&format!("http://localhost:{port}/"))
        .await
        .expect("localhost allowed by name");
    assert_eq!(result.text, "intranet");
}

#[test]
fn fetch_config_deserializes() {
    let config: FetchConfig = serde_json::from_str(
        r#"{"max_bytes": 1024, "timeout": "5s", "max_redirects": 2,
            "allow_hosts": ["wiki.intranet.example"], "allow_cidrs": ["10.1.0.0/16", "fd00::/8"]}"#,
    )
    .expect("config");
    assert_eq!(config.max_bytes, 1024);
    assert_eq!(config.timeout, Duration::from_secs(5));
    assert_eq!(config.max_redirects, 2);
    assert_eq!(config.allow_cidrs.len(), 2);
    assert_eq!(
        config.connect_timeout,
        FetchConfig::default().connect_timeout
    );
    assert!(serde_json::from_str::<FetchConfig>(r#"{"allow_cidrs": ["10.1.0.0/99"]}"#).is_err());
    assert!(Fetcher::new(FetchConfig {
        max_bytes: 0,
        ..FetchConfig::default()
    })
    .is_err());
}
