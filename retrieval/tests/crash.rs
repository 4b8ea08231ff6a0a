//! A writer killed with SIGKILL mid-ingest leaves the last commit intact; the next
//! ingest completes the work with every file present exactly once.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jielong_retrieval::chunk::chunk_plain;
use jielong_retrieval::{Index, IngestOptions, IngestProgress};

const FILES: usize = 300;
const CHILD_ENV: &str = "JIELONG_CRASH_CHILD";

/// Slows the child down so the parent can kill it between commits.
struct Slow;

impl IngestProgress for Slow {
    fn start(&self, _files: usize, _bytes: u64) {}
    fn file_done(&self, _path: &Path, _bytes: u64) {
        std::thread::sleep(Duration::from_millis(4));
    }
    fn warn(&self, _path: &Path, _message: &str) {}
}

/// The child's side: runs only when the parent re-executes this binary.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (docs, index) = spec.split_once('\n').unwrap();
    let index = Index::open_or_create(Path::new(index))
        .unwrap()
        .with_commit_bytes(64 << 10);
    index
        .ingest(&[PathBuf::from(docs)], &IngestOptions::default(), &Slow)
        .unwrap();
}

fn file_text(i: usize) -> String {
    let mut text = format!("unique{i:04} opens this file.\n");
    let mut n = i;
    while text.len() < 8000 {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        text.push_str(&format!(
            "filler word{} line about crashes and recovery\n",
            n >> 54
        ));
    }
    text
}

#[test]
fn killed_ingest_resumes_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    let texts: Vec<String> = (0..FILES).map(file_text).collect();
    for (i, text) in texts.iter().enumerate() {
        common::write_files(
            &docs,
            &[(&format!("d{}/f{i:04}.txt", i % 7), text.as_bytes())],
        );
    }
    let index_dir = dir.path().join("index");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--test-threads=1", "--nocapture"])
        .env(
            CHILD_ENV,
            format!("{}\n{}", docs.display(), index_dir.display()),
        )
        .spawn()
        .unwrap();
    let committed = |dir: &Path| {
        Index::open(dir)
            .and_then(|i| i.stats())
            .map_or(0, |s| s.files)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&index_dir) < 20 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child ended before it was killed"
        );
        assert!(Instant::now() < deadline, "the child committed nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = committed(&index_dir);
    assert!(
        at_kill < FILES,
        "the child finished before the kill ({at_kill} files)"
    );
    eprintln!("killed with {at_kill} of {FILES} files committed");

    let index = Index::open(&index_dir).unwrap();
    let (report, _) = common::ingest(&index, [&docs]);
    assert_eq!(
        (report.added, report.unchanged, report.updated),
        (FILES - at_kill, at_kill, 0)
    );

    let options = IngestOptions::default();
    let expected_chunks: usize = texts
        .iter()
        .map(|t| chunk_plain(t, options.chunk_chars, options.overlap_chars).len())
        .sum();
    let stats = index.stats().unwrap();
    assert_eq!((stats.files, stats.chunks), (FILES, expected_chunks));
    for i in 0..FILES {
        let hits = common::search(&index, &format!("unique{i:04}"));
        assert_eq!(hits.len(), 1, "file {i}: {} copies", hits.len());
        assert!(hits[0].source.ends_with(&format!("/f{i:04}.txt")));
    }
}
