//! `hf:` downloads against a real HTTP server on 127.0.0.1.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use common::{files_but_locks, sample_gguf, serve, sha256_hex, Recorder, Reply};
use jielong_models::{
    Catalog, CatalogEntry, ModelError, ModelRef, ModelSource, ModelStore, NoProgress,
};

fn routes(items: &[(&str, Reply)]) -> HashMap<String, Reply> {
    items
        .iter()
        .map(|(p, r)| (p.to_string(), r.clone()))
        .collect()
}

#[tokio::test]
async fn download_with_correct_sha_then_cached() {
    let body = sample_gguf();
    let server = serve(routes(&[(
        "/org/repo/resolve/main/model.gguf",
        Reply::Body(body.clone()),
    )]));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ModelStore::new(dir.path()).with_hf_endpoint(&server.base);
    let r = store
        .parse(&format!(
            "hf:org/repo/model.gguf#sha256={}",
            sha256_hex(&body)
        ))
        .expect("parse");
    let want = dir.path().join("hf/org/repo/main/model.gguf");
    assert_eq!(store.path(&r).ok(), Some(want.clone()));
    assert!(!store.is_present(&r));

    let progress = Recorder::default();
    let path = store.resolve(&r, &progress).await.expect("download");
    assert_eq!(path, want);
    assert_eq!(std::fs::read(&path).expect("read"), body);
    assert_eq!(progress.bytes.load(Ordering::SeqCst), body.len());
    assert!(progress.ends.load(Ordering::SeqCst) >= 1);
    assert!(store.is_present(&r));
    assert_eq!(
        files_but_locks(dir.path()),
        vec![
            "hf/org/repo/main/model.gguf",
            "hf/org/repo/main/model.gguf.verified"
        ]
    );
    let marker = std::fs::read_to_string(dir.path().join("hf/org/repo/main/model.gguf.verified"))
        .expect("marker");
    assert!(marker.contains(&sha256_hex(&body)), "{marker}");
    assert!(marker.contains(&format!("size={}", body.len())), "{marker}");

    // A second resolve and pull use the cache: no new request.
    let hits = server.hits.load(Ordering::SeqCst);
    assert_eq!(
        store.resolve(&r, &NoProgress).await.ok(),
        Some(want.clone())
    );
    assert_eq!(store.pull(&r, &NoProgress).await.ok(), Some(want.clone()));
    assert_eq!(server.hits.load(Ordering::SeqCst), hits);

    // A size change (e.g. a damaged file) makes resolve fetch again.
    std::fs::write(&want, b"GGUF").expect("damage");
    assert_eq!(
        store.resolve(&r, &NoProgress).await.ok(),
        Some(want.clone())
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), hits + 1);
    assert_eq!(std::fs::read(&want).expect("read"), body);
}

#[tokio::test]
async fn revision_goes_into_url_and_path_without_sha() {
    let body = sample_gguf();
    let server = serve(routes(&[(
        "/o/r/resolve/v2/sub/m.gguf",
        Reply::Body(body.clone()),
    )]));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ModelStore::new(dir.path()).with_hf_endpoint(format!("{}/", server.base));
    let r = ModelRef::parse("hf:o/r/sub/m.gguf@v2").expect("parse");
    let path = store.pull(&r, &NoProgress).await.expect("download");
    assert_eq!(path, dir.path().join("hf/o/r/v2/sub/m.gguf"));
    assert_eq!(std::fs::read(&path).expect("read"), body);
    assert!(store.is_present(&r));
    assert_eq!(
        server.paths.lock().map(|p| p.clone()).unwrap_or_default(),
        vec!["/o/r/resolve/v2/sub/m.gguf"]
    );
}

#[tokio::test]
async fn not_found_is_clear_and_leaves_nothing() {
    let server = serve(HashMap::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ModelStore::new(dir.path()).with_hf_endpoint(&server.base);
    let r = ModelRef::parse("hf:o/r/missing.gguf").expect("parse");
    let err = store.resolve(&r, &NoProgress).await.expect_err("404");
    assert!(
        matches!(err, ModelError::Http { status: 404, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "not found at {}/o/r/resolve/main/missing.gguf (HTTP 404)",
            server.base
        )
    );
    assert!(
        files_but_locks(dir.path()).is_empty(),
        "{:?}",
        files_but_locks(dir.path())
    );
    assert!(!store.is_present(&r));
}

#[tokio::test]
async fn sha_mismatch_leaves_nothing() {
    let body = sample_gguf();
    let server = serve(routes(&[("/o/r/resolve/main/m.gguf", Reply::Body(body))]));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ModelStore::new(dir.path()).with_hf_endpoint(&server.base);
    let wrong = "0".repeat(64);
    let r = ModelRef::parse(&format!("hf:o/r/m.gguf#sha256={wrong}")).expect("parse");
    let err = store.pull(&r, &NoProgress).await.expect_err("mismatch");
    match &err {
        ModelError::ChecksumMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual.len(), 64);
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert!(
        files_but_locks(dir.path()).is_empty(),
        "{:?}",
        files_but_locks(dir.path())
    );
}

#[tokio::test]
async fn body_cut_short_leaves_no_partial() {
    let body = sample_gguf();
    let half = body[..body.len() / 2].to_vec();
    let server = serve(routes(&[(
        "/o/r/resolve/main/m.gguf",
        Reply::Cut {
            body: half,
            claimed: body.len(),
        },
    )]));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ModelStore::new(dir.path()).with_hf_endpoint(&server.base);
    let r = ModelRef::parse("hf:o/r/m.gguf").expect("parse");
    let err = store.pull(&r, &NoProgress).await.expect_err("cut");
    println!("cut body: {err}");
    assert!(
        matches!(
            err,
            ModelError::Network { .. } | ModelError::SizeMismatch { .. }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("/o/r/resolve/main/m.gguf"),
        "{err}"
    );
    assert!(
        files_but_locks(dir.path()).is_empty(),
        "{:?}",
        files_but_locks(dir.path())
    );
}

#[tokio::test]
async fn non_gguf_body_is_rejected_and_removed() {
    let server = serve(routes(&[(
        "/o/r/resolve/main/m.gguf",
        Reply::Body(b"<html>login required</html>".to_vec()),
    )]));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ModelStore::new(dir.path()).with_hf_endpoint(&server.base);
    let r = ModelRef::parse("hf:o/r/m.gguf").expect("parse");
    let err = store.pull(&r, &NoProgress).await.expect_err("html");
    assert!(matches!(err, ModelError::NotGguf { .. }), "{err:?}");
    assert!(
        files_but_locks(dir.path()).is_empty(),
        "{:?}",
        files_but_locks(dir.path())
    );
}

#[tokio::test]
async fn connection_refused_is_a_network_error() {
    // Bind then drop a listener to get a port with (very likely) nothing on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ModelStore::new(dir.path()).with_hf_endpoint(format!("http://127.0.0.1:{port}"));
    let r = ModelRef::parse("hf:o/r/m.gguf").expect("parse");
    let err = store.pull(&r, &NoProgress).await.expect_err("refused");
    println!("refused: {err}");
    assert!(matches!(err, ModelError::Network { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("network error fetching http://127.0.0.1:"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
}

#[tokio::test]
async fn url_source_catalog_entry() {
    let body = sample_gguf();
    let server = serve(routes(&[("/files/tiny.gguf", Reply::Body(body.clone()))]));
    let entry = CatalogEntry {
        name: "tiny-url".into(),
        description: "a tiny test model over HTTP".into(),
        file_name: "tiny.gguf".into(),
        size: body.len() as u64,
        sha256: sha256_hex(&body),
        native_tool_calls: false,
        source: ModelSource::Url {
            url: format!("{}/files/tiny.gguf", server.base),
        },
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ModelStore::new(dir.path()).with_catalog(Catalog::new([entry.clone()]));
    let r = store.parse("tiny-url").expect("parse");
    let path = store.resolve(&r, &NoProgress).await.expect("fetch");
    assert_eq!(path, dir.path().join("tiny-url/tiny.gguf"));
    assert_eq!(std::fs::read(&path).expect("read"), body);
    let list = store.list();
    assert_eq!(list.len(), 1);
    assert!(list[0].present);
    assert_eq!(list[0].size, body.len() as u64);

    // The same URL with a wrong declared size fails early and leaves nothing.
    let mut bad = entry;
    bad.name = "tiny-bad".into();
    bad.size += 1;
    let store = store.with_catalog(Catalog::new([bad]));
    let err = store
        .pull(&ModelRef::Catalog("tiny-bad".into()), &NoProgress)
        .await
        .expect_err("size");
    assert!(matches!(err, ModelError::SizeMismatch { .. }), "{err:?}");
    assert!(!dir.path().join("tiny-bad").join("tiny.gguf").exists());
    assert!(!dir
        .path()
        .join("tiny-bad")
        .join("tiny.gguf.partial")
        .exists());
}
