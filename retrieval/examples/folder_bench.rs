//! Ingest throughput and query latency on a folder of documents (the needle-test essays
//! by default): indexes the folder in a temporary directory with the default settings,
//! then runs one query per sampled sentence of the documents (its first six words).
//!
//! ```text
//! cargo run -p jielong-retrieval --release --example folder_bench -- [DIR] [--queries N]
//! ```
//!
//! `DIR` defaults to the workspace's `../shared/data/niah/essays`. Each query checks
//! that its own document is among the top 10 hits, so the figures come with a
//! sanity check of the ranking.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use jielong_retrieval::{Index, IngestOptions, NoProgress, SearchRequest};

fn main() -> Result<(), Box<dyn Error>> {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/niah/essays");
    let mut queries = 500usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--queries" => queries = args.next().ok_or("--queries needs a value")?.parse()?,
            _ => dir = PathBuf::from(arg),
        }
    }
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;

    let tmp = tempfile::tempdir()?;
    let index = Index::open_or_create(&tmp.path().join("index"))?;
    let start = Instant::now();
    let report = index.ingest(
        std::slice::from_ref(&dir),
        &IngestOptions::default(),
        &NoProgress,
    )?;
    let ingest = start.elapsed().as_secs_f64();

    // Queries: the first six words of sentences spread over every document.
    let mut samples: Vec<(String, String)> = Vec::new();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for file in &files {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        for sentence in text.split(". ") {
            let words: Vec<&str> = sentence.split_whitespace().collect();
            if words.len() >= 10 {
                samples.push((words[..6].join(" "), file.display().to_string()));
            }
        }
    }
    if samples.is_empty() {
        return Err("no sentences to query with".into());
    }
    let step = (samples.len() / queries.max(1)).max(1);
    let mut latencies = Vec::new();
    let mut found = 0usize;
    for (query, source) in samples.iter().step_by(step).take(queries) {
        let start = Instant::now();
        let hits = index.search(&SearchRequest::new(query.clone(), 10))?;
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        if hits.iter().any(|h| &h.source == source) {
            found += 1;
        }
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let mb = report.bytes as f64 / 1e6;
    println!(
        "{}: {} files, {} chunks, {mb:.2} MB",
        dir.display(),
        report.added,
        report.chunks
    );
    println!(
        "ingest: {ingest:.2} s, {:.1} MB/s (commit included)",
        mb / ingest.max(1e-9)
    );
    println!(
        "queries: {} (top 10 with snippets): p50 {:.2} ms, p99 {:.2} ms; own document in the top 10 for {:.1}%",
        latencies.len(),
        at(0.5),
        at(0.99),
        100.0 * found as f64 / latencies.len() as f64
    );
    Ok(())
}
