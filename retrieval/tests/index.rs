//! The index's life cycle: incremental re-ingest, removal, path filters, the writer
//! lock, foreign and corrupt directories, and concurrent search.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use jielong_retrieval::{
    Index, IngestOptions, IngestProgress, NoProgress, RetrievalError, SearchRequest, MARKER_FILE,
};

/// The number of hits for an exact phrase.
fn count(index: &Index, phrase: &str) -> usize {
    common::search(index, &format!("\"{phrase}\"")).len()
}

#[test]
fn reingest_is_incremental() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    common::write_files(
        &docs,
        &[
            ("keep.txt", b"the keeper sentence stays forever"),
            ("change.md", b"# Change\n\nthe original wording of mutable"),
            ("gone.txt", b"the vanishing sentence disappears"),
            ("sub/deep.txt", b"the deep sentence lives below"),
        ],
    );
    let index = Index::open_or_create(&dir.path().join("index")).unwrap();
    let (r, progress) = common::ingest(&index, [&docs]);
    assert_eq!((r.added, r.updated, r.unchanged, r.removed), (4, 0, 0, 0));
    assert_eq!(*progress.started.lock().unwrap(), Some((4, r.bytes)));
    assert_eq!(progress.done.lock().unwrap().len(), 4);

    let (r, _) = common::ingest(&index, [&docs]);
    assert_eq!(
        (r.added, r.updated, r.unchanged, r.removed, r.chunks),
        (0, 0, 4, 0, 0)
    );

    std::fs::write(
        docs.join("change.md"),
        "# Change\n\nthe revised wording of mutable, longer",
    )
    .unwrap();
    std::fs::remove_file(docs.join("gone.txt")).unwrap();
    std::fs::write(docs.join("new.txt"), "the newcomer sentence arrives").unwrap();
    let (r, _) = common::ingest(&index, [&docs]);
    assert_eq!((r.added, r.updated, r.unchanged, r.removed), (1, 1, 2, 1));

    // (phrase, expected hits): exactly one copy of every live sentence.
    let cases = [
        ("keeper sentence stays", 1),
        ("revised wording", 1),
        ("original wording", 0),
        ("vanishing sentence", 0),
        ("deep sentence", 1),
        ("newcomer sentence", 1),
    ];
    for (phrase, want) in cases {
        assert_eq!(count(&index, phrase), want, "{phrase}");
    }
    let stats = index.stats().unwrap();
    assert_eq!((stats.files, stats.chunks), (4, 4));

    // Same content, new mtime: unchanged (by hash), and still one copy.
    std::fs::write(docs.join("keep.txt"), "the keeper sentence stays forever").unwrap();
    let (r, _) = common::ingest(&index, &[docs.join("keep.txt")]);
    assert_eq!((r.added, r.updated, r.unchanged), (0, 0, 1));
    assert_eq!(count(&index, "keeper sentence stays"), 1);

    // A file given directly that no longer exists leaves the index.
    std::fs::remove_file(docs.join("new.txt")).unwrap();
    let (r, _) = common::ingest(&index, &[docs.join("new.txt")]);
    assert_eq!((r.removed, r.skipped.len()), (1, 0));
    assert_eq!(count(&index, "newcomer sentence"), 0);

    // remove(): a folder, then a file that is not indexed.
    assert_eq!(index.remove(&docs.join("sub")).unwrap(), 1);
    assert_eq!(count(&index, "deep sentence"), 0);
    assert_eq!(index.remove(&docs.join("sub")).unwrap(), 0);
    assert_eq!(index.stats().unwrap().files, 2);

    // Reopening sees the same state, and a later ingest brings the folder back.
    drop(index);
    let index = Index::open(&dir.path().join("index")).unwrap();
    assert_eq!(index.stats().unwrap().files, 2);
    let (r, _) = common::ingest(&index, [&docs]);
    assert_eq!((r.added, r.unchanged), (1, 2));
    assert_eq!(count(&index, "deep sentence"), 1);
}

#[test]
fn path_prefix_filters() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    common::write_files(
        &docs,
        &[
            ("a/one.txt", b"shared topic alpha"),
            ("a/two.txt", b"shared topic beta"),
            ("ab/three.txt", b"shared topic gamma"),
        ],
    );
    let index = Index::open_or_create(&dir.path().join("index")).unwrap();
    common::ingest(&index, [&docs]);
    let root = common::key(&docs);
    // (prefix, expected number of hits): an existing folder matches the files under
    // it (not `ab/`); a prefix that names nothing is matched as a plain string.
    let cases = [
        (None, 3),
        (Some(docs.join("a").to_string_lossy().into_owned()), 2),
        (Some(format!("{root}/a")), 2),
        (Some(format!("{root}/a/t")), 1),
        (
            Some(docs.join("a/one.txt").to_string_lossy().into_owned()),
            1,
        ),
        (Some(format!("{root}/ab/")), 1),
        (Some("/nowhere".to_string()), 0),
    ];
    for (prefix, want) in cases {
        let request = SearchRequest {
            query: "shared topic".into(),
            limit: 10,
            path_prefix: prefix.clone(),
        };
        let hits = index.search(&request).unwrap();
        assert_eq!(hits.len(), want, "{prefix:?}");
        if let Some(p) = prefix.filter(|p| p.starts_with(&root)) {
            assert!(hits.iter().all(|h| h.source.starts_with(&p)), "{p}");
        }
    }
    // The filter does not change scores.
    let all = index.search(&SearchRequest::new("alpha", 1)).unwrap();
    let filtered = index
        .search(&SearchRequest::new("alpha", 1).with_path_prefix(format!("{root}/a")))
        .unwrap();
    assert_eq!(all[0].score, filtered[0].score);
}

/// Blocks ingest in `start` until told to go on.
struct Gate {
    entered: mpsc::SyncSender<()>,
    release: std::sync::Mutex<mpsc::Receiver<()>>,
}

impl IngestProgress for Gate {
    fn start(&self, _files: usize, _bytes: u64) {
        self.entered.send(()).unwrap();
        self.release.lock().unwrap().recv().unwrap();
    }
    fn file_done(&self, _path: &Path, _bytes: u64) {}
    fn warn(&self, _path: &Path, _message: &str) {}
}

#[test]
fn second_writer_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.txt");
    std::fs::write(&file, "locking is exclusive").unwrap();
    let index_dir = dir.path().join("index");
    let first = Index::open_or_create(&index_dir).unwrap();
    let second = Index::open(&index_dir).unwrap();
    let (entered_tx, entered) = mpsc::sync_channel(1);
    let (release, release_rx) = mpsc::channel();
    let gate = Gate {
        entered: entered_tx,
        release: std::sync::Mutex::new(release_rx),
    };
    let files = vec![file.clone()];
    std::thread::scope(|s| {
        let writer = s.spawn(|| first.ingest(&files, &IngestOptions::default(), &gate));
        entered.recv_timeout(Duration::from_secs(30)).unwrap();
        for attempt in [
            second
                .ingest(
                    std::slice::from_ref(&file),
                    &IngestOptions::default(),
                    &NoProgress,
                )
                .map(|_| 0),
            second.remove(&file),
        ] {
            let err = attempt.unwrap_err();
            assert!(
                matches!(err, RetrievalError::Locked { holder: Some(pid), .. } if pid == std::process::id()),
                "{err:?}"
            );
            let message = err.to_string();
            let expected = format!(
                "index at {} is locked by another process (pid {})",
                common::key(&index_dir),
                std::process::id()
            );
            assert_eq!(message, expected);
        }
        // Searching needs no lock.
        second.search(&SearchRequest::new("locking", 5)).unwrap();
        release.send(()).unwrap();
        assert_eq!(writer.join().unwrap().unwrap().added, 1);
    });
    // Once released, the second index can write.
    assert_eq!(second.remove(&file).unwrap(), 1);
}

#[test]
fn foreign_and_corrupt_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    {
        let index = Index::open_or_create(&good).unwrap();
        std::fs::write(dir.path().join("a.txt"), "some content").unwrap();
        common::ingest(&index, &[dir.path().join("a.txt")]);
    }
    let copy = |name: &str| -> PathBuf {
        let to = dir.path().join(name);
        std::fs::create_dir(&to).unwrap();
        for entry in std::fs::read_dir(&good).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
        to
    };
    let foreign = dir.path().join("foreign");
    common::write_files(&foreign, &[("README.txt", b"my own files")]);
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let file = dir.path().join("a.txt");
    let bad_meta = copy("bad-meta");
    std::fs::write(bad_meta.join("meta.json"), "{ not json").unwrap();
    let no_meta = copy("no-meta");
    std::fs::remove_file(no_meta.join("meta.json")).unwrap();
    let bad_marker = copy("bad-marker");
    std::fs::write(bad_marker.join(MARKER_FILE), "garbage").unwrap();
    let future = copy("future");
    std::fs::write(
        future.join(MARKER_FILE),
        r#"{"format":"jielong-index","version":99}"#,
    )
    .unwrap();
    let other_format = copy("other-format");
    std::fs::write(
        other_format.join(MARKER_FILE),
        r#"{"format":"something-else","version":1}"#,
    )
    .unwrap();
    let bad_payload = copy("bad-payload");
    let meta = std::fs::read_to_string(bad_payload.join("meta.json")).unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    meta["payload"] = serde_json::Value::String("not a manifest".into());
    std::fs::write(bad_payload.join("meta.json"), meta.to_string()).unwrap();

    // (dir, open_or_create error kind and message fragment; open's is the same unless noted)
    let cases: Vec<(&Path, &str, &str)> = vec![
        (&foreign, "NotAnIndex", "has no jielong-index.json"),
        (&file, "NotAnIndex", "not a directory"),
        (&bad_meta, "Corrupt", "is corrupt"),
        (&no_meta, "Corrupt", "meta.json is missing"),
        (&bad_marker, "Corrupt", "jielong-index.json is unreadable"),
        (&future, "NotAnIndex", "format version 99"),
        (&other_format, "NotAnIndex", "something-else"),
        (&bad_payload, "Corrupt", "file manifest"),
    ];
    for (path, kind, fragment) in cases {
        for result in [Index::open_or_create(path), Index::open(path)] {
            let err = result.unwrap_err();
            let name = match err {
                RetrievalError::NotAnIndex { .. } => "NotAnIndex",
                RetrievalError::Corrupt { .. } => "Corrupt",
                _ => "other",
            };
            let message = err.to_string();
            assert_eq!(name, kind, "{}: {message}", path.display());
            assert!(message.contains(fragment), "{}: {message}", path.display());
            assert!(
                message.contains(&*path.to_string_lossy()),
                "{message} names the dir"
            );
            assert!(!message.contains('\n'), "{message}");
        }
    }
    // open() does not create; open_or_create() does, in a missing or empty folder.
    let missing = dir.path().join("missing");
    assert!(matches!(
        Index::open(&missing),
        Err(RetrievalError::NotAnIndex { .. })
    ));
    assert!(matches!(
        Index::open(&empty),
        Err(RetrievalError::NotAnIndex { .. })
    ));
    Index::open_or_create(&missing).unwrap();
    Index::open_or_create(&empty).unwrap();
    Index::open(&missing).unwrap();
    assert!(Index::open(&good).is_ok());
}

#[test]
fn concurrent_searches() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Index>();
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..50)
        .map(|i| {
            (
                format!("f{i}.txt"),
                format!("document number{i} about threads").into_bytes(),
            )
        })
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    common::write_files(dir.path(), &refs);
    let index = Index::open_or_create(&dir.path().join("index")).unwrap();
    common::ingest(&index, &[dir.path().to_path_buf()]);
    std::thread::scope(|s| {
        for t in 0..4 {
            let index = &index;
            s.spawn(move || {
                for i in 0..50 {
                    let hits = index
                        .search(&SearchRequest::new(format!("number{i} threads {t}"), 3))
                        .unwrap();
                    assert!(hits[0].source.ends_with(&format!("/f{i}.txt")));
                }
            });
        }
    });
}

#[test]
fn bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open_or_create(&dir.path().join("index")).unwrap();
    for (chunk_chars, overlap_chars) in [(0, 0), (100, 100), (100, 150)] {
        let options = IngestOptions {
            chunk_chars,
            overlap_chars,
            ..IngestOptions::default()
        };
        let err = index.ingest(&[], &options, &NoProgress).unwrap_err();
        assert!(matches!(err, RetrievalError::Options(_)), "{err}");
    }
}
