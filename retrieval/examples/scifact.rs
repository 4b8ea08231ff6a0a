//! Retrieval quality on BEIR SciFact: builds an index of the corpus in a temporary
//! directory, runs the test queries and prints nDCG@10, ingest throughput and query
//! latency.
//!
//! ```text
//! cargo run -p jielong-retrieval --release --example scifact -- [DIR] [--title-boost X] [--chunk-chars N]
//! ```
//!
//! `DIR` holds `corpus.jsonl`, `queries.jsonl` and `qrels/test.tsv` (default: the
//! workspace's `../shared/data/scifact`). A document's score is the best score of its
//! chunks.

use std::collections::HashMap;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use jielong_retrieval::{Index, IngestOptions, NoProgress, SearchRequest, DEFAULT_TITLE_BOOST};

const K: usize = 10;

fn main() -> Result<(), Box<dyn Error>> {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/scifact");
    let mut title_boost = DEFAULT_TITLE_BOOST;
    let mut chunk_chars = 1_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--title-boost" => {
                title_boost = args.next().ok_or("--title-boost needs a value")?.parse()?
            }
            "--chunk-chars" => {
                chunk_chars = args.next().ok_or("--chunk-chars needs a value")?.parse()?
            }
            _ => dir = PathBuf::from(arg),
        }
    }
    let corpus = dir.join("corpus.jsonl");
    let queries = load_queries(&dir.join("queries.jsonl"))?;
    let qrels = load_qrels(&dir.join("qrels/test.tsv"))?;

    let tmp = tempfile::tempdir()?;
    let index = Index::open_or_create(&tmp.path().join("index"))?.with_title_boost(title_boost);
    let options = IngestOptions {
        chunk_chars,
        overlap_chars: (chunk_chars / 5).min(200),
        ..IngestOptions::default()
    };
    let start = Instant::now();
    let report = index.ingest(&[corpus], &options, &NoProgress)?;
    let secs = start.elapsed().as_secs_f64();
    let mb = report.bytes as f64 / 1e6;

    let mut latencies = Vec::new();
    let mut total = 0.0;
    let mut ids: Vec<&String> = qrels.keys().collect();
    ids.sort();
    if ids.is_empty() {
        return Err("the qrels hold no relevant documents".into());
    }
    for qid in &ids {
        let Some(text) = queries.get(*qid) else {
            return Err(format!("query {qid} of the qrels is not in queries.jsonl").into());
        };
        let t = Instant::now();
        let hits = index.search(&SearchRequest::new(text.as_str(), K * 10))?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        // Document score = best chunk score; hits come best first.
        let mut ranked: Vec<String> = Vec::new();
        for hit in &hits {
            let doc = hit
                .source
                .rsplit('#')
                .next()
                .unwrap_or_default()
                .to_string();
            if !ranked.contains(&doc) {
                ranked.push(doc);
            }
            if ranked.len() == K {
                break;
            }
        }
        total += ndcg(&ranked, &qrels[*qid]);
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "SciFact test: {} queries, {} chunks",
        ids.len(),
        index.stats()?.chunks
    );
    println!("settings: title boost {title_boost}, chunk chars {chunk_chars}, Lucene stop words, Snowball English stemmer");
    println!("nDCG@{K}: {:.4}", total / ids.len() as f64);
    println!("ingest: {mb:.2} MB in {secs:.2} s = {:.2} MB/s", mb / secs);
    println!(
        "query latency: p50 {:.2} ms, p99 {:.2} ms",
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}

/// nDCG@K with linear gains (trec_eval's `ndcg_cut`, as BEIR reports).
fn ndcg(ranked: &[String], relevant: &HashMap<String, u32>) -> f64 {
    let discount = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let dcg: f64 = ranked
        .iter()
        .take(K)
        .enumerate()
        .map(|(i, d)| f64::from(relevant.get(d).copied().unwrap_or(0)) * discount(i))
        .sum();
    let mut grades: Vec<u32> = relevant.values().copied().collect();
    grades.sort_unstable_by(|a, b| b.cmp(a));
    let ideal: f64 = grades
        .iter()
        .take(K)
        .enumerate()
        .map(|(i, g)| f64::from(*g) * discount(i))
        .sum();
    if ideal == 0.0 {
        0.0
    } else {
        dcg / ideal
    }
}

fn load_queries(path: &Path) -> Result<HashMap<String, String>, Box<dyn Error>> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let id = v["_id"].as_str().ok_or("query without _id")?.to_string();
        let text = v["text"].as_str().ok_or("query without text")?.to_string();
        out.insert(id, text);
    }
    Ok(out)
}

fn load_qrels(path: &Path) -> Result<HashMap<String, HashMap<String, u32>>, Box<dyn Error>> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out: HashMap<String, HashMap<String, u32>> = HashMap::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [qid, doc, grade] = cols[..] else {
            return Err(format!("bad qrels line {line:?}").into());
        };
        let grade: u32 = grade.trim().parse()?;
        if grade > 0 {
            out.entry(qid.to_string())
                .or_default()
                .insert(doc.to_string(), grade);
        }
    }
    Ok(out)
}
