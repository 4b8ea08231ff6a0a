//! `jielong index add|search|stats|remove`: the local search index behind `rag_search`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use jielong::retrieval::{Index, IngestOptions, IngestProgress, SearchRequest};

use crate::cli::{IndexCommand, IndexDir};

/// The index directory: `--index`, `JIELONG_INDEX`, or the user's data directory.
pub fn index_dir(dir: &IndexDir) -> anyhow::Result<PathBuf> {
    match &dir.dir {
        Some(dir) => Ok(dir.clone()),
        None => dirs::data_dir()
            .map(|d| d.join("jielong").join("index"))
            .context("no data directory for the index: pass --index DIR or set JIELONG_INDEX"),
    }
}

/// Runs `jielong index …`.
pub async fn index(command: IndexCommand) -> anyhow::Result<()> {
    // The index does blocking file work: keep it off the async workers.
    tokio::task::spawn_blocking(move || run(command))
        .await
        .context("the index task failed")?
}

fn run(command: IndexCommand) -> anyhow::Result<()> {
    match command {
        IndexCommand::Add {
            paths,
            jsonl_field,
            index,
        } => {
            for path in &paths {
                anyhow::ensure!(path.exists(), "{}: no such file or folder", path.display());
            }
            let index = Index::open_or_create(&index_dir(&index)?)?;
            let options = IngestOptions {
                jsonl_text_field: jsonl_field,
                ..IngestOptions::default()
            };
            let progress = BarIngest::default();
            let report = index.ingest(&paths, &options, &progress)?;
            progress.finish();
            eprintln!(
                "{} added, {} updated, {} unchanged, {} removed, {} skipped; {} chunks from {:.1} MB ({})",
                report.added,
                report.updated,
                report.unchanged,
                report.removed,
                report.skipped.len(),
                report.chunks,
                report.bytes as f64 / 1e6,
                index.dir().display()
            );
            Ok(())
        }
        IndexCommand::Search {
            query,
            k,
            path,
            json,
            index,
        } => {
            let index = Index::open(&index_dir(&index)?)?;
            let mut request = SearchRequest::new(query, usize::from(k));
            request.path_prefix = path;
            let hits = index.search(&request)?;
            for (i, hit) in hits.iter().enumerate() {
                if json {
                    println!("{}", serde_json::to_string(hit)?);
                } else {
                    println!(
                        "{}. {}:{}-{}  {}  (score {:.2})\n   {}\n",
                        i + 1,
                        hit.source,
                        hit.line_start,
                        hit.line_end,
                        hit.title,
                        hit.score,
                        hit.snippet.split_whitespace().collect::<Vec<_>>().join(" ")
                    );
                }
            }
            if hits.is_empty() && !json {
                eprintln!("no hits");
            }
            Ok(())
        }
        IndexCommand::Stats { index } => {
            let stats = Index::open(&index_dir(&index)?)?.stats()?;
            println!(
                "{}\n  files  {}\n  chunks {}\n  text   {:.1} MB",
                stats.dir.display(),
                stats.files,
                stats.chunks,
                stats.bytes as f64 / 1e6
            );
            Ok(())
        }
        IndexCommand::Remove { path, index } => {
            let index = Index::open(&index_dir(&index)?)?;
            let removed = index.remove(&path)?;
            anyhow::ensure!(
                removed > 0,
                "{}: nothing from there is in the index",
                path.display()
            );
            eprintln!("{removed} file(s) removed");
            Ok(())
        }
    }
}

/// Ingest progress as a bar on stderr; warnings are printed above it.
#[derive(Default)]
struct BarIngest {
    bar: Mutex<Option<ProgressBar>>,
}

impl BarIngest {
    fn finish(&self) {
        if let Ok(mut bar) = self.bar.lock() {
            if let Some(bar) = bar.take() {
                bar.finish_and_clear();
            }
        }
    }
}

impl IngestProgress for BarIngest {
    fn start(&self, _files: usize, bytes: u64) {
        let bar = ProgressBar::new(bytes).with_style(
            ProgressStyle::with_template(
                "indexing [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn file_done(&self, _path: &Path, bytes: u64) {
        if let Ok(slot) = self.bar.lock() {
            if let Some(bar) = slot.as_ref() {
                bar.inc(bytes);
            }
        }
    }

    fn warn(&self, path: &Path, message: &str) {
        let line = format!("jielong: warning: {}: {message}", path.display());
        match self.bar.lock() {
            Ok(slot) if slot.is_some() => {
                if let Some(bar) = slot.as_ref() {
                    bar.println(line);
                }
            }
            _ => eprintln!("{line}"),
        }
    }
}
