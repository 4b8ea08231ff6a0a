//! [`Report`] and [`Summary`]: what a run produced, its accuracy with a Wilson
//! interval, latency percentiles, tokens, stop reasons and categories; atomic JSONL
//! and JSON files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::Path;

use jielong_util::write_atomic;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{io_err, EvalError};
use crate::run::Row;
use crate::system::Tokens;

/// The z of a 95% interval.
const Z95: f64 = 1.96;

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The system's name.
    pub system: String,
    /// One row per example done (run now or reused from the cache), in dataset order.
    pub rows: Vec<Row>,
    /// Aggregates over `rows`.
    pub summary: Summary,
    /// True when cancellation stopped the run before every example was done.
    pub interrupted: bool,
    /// Examples in the evaluation (`rows.len()` unless interrupted).
    pub total: usize,
    /// Rows reused from the cache rather than run.
    pub cached: usize,
    /// Corrupt cache lines ignored (a last line cut short by a kill).
    pub cache_ignored: usize,
}

/// Aggregates over a run's rows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Rows.
    pub examples: usize,
    /// Rows with an expected answer.
    pub graded: usize,
    /// Graded rows answered correctly.
    pub correct: usize,
    /// `correct / graded` (0 when nothing is graded).
    pub accuracy: f64,
    /// The 95% Wilson score interval of the accuracy (`(0, 1)` when nothing is graded).
    pub ci95: (f64, f64),
    /// Median seconds per example (nearest rank).
    pub latency_p50: f64,
    /// 95th percentile of seconds per example (nearest rank).
    pub latency_p95: f64,
    /// Mean seconds per example.
    pub latency_mean: f64,
    /// Tokens, summed.
    pub tokens: Tokens,
    /// Rows per stop reason.
    pub stops: BTreeMap<String, usize>,
    /// Rows whose outcome has an error.
    pub errors: usize,
    /// Per `category` (rows without one are not listed).
    pub by_category: BTreeMap<String, CategorySummary>,
    /// Per tool, the number of rows that called it at least once.
    pub tools: BTreeMap<String, usize>,
    /// The judge's ratings, when rows were judged (metric `judge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeSummary>,
}

/// What a judge made of a run's answers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct JudgeSummary {
    /// Rows the judge saw.
    pub judged: usize,
    /// Of them, rows with a readable rating.
    pub rated: usize,
    /// The mean rating (0 when none was readable).
    pub mean_score: f64,
    /// Rows whose judgement held no readable rating (or whose judge failed).
    pub unreadable: usize,
}

/// Accuracy within one category.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CategorySummary {
    /// Rows in the category.
    pub examples: usize,
    /// Of them, rows with an expected answer.
    pub graded: usize,
    /// Graded rows answered correctly.
    pub correct: usize,
    /// `correct / graded` (0 when nothing is graded).
    pub accuracy: f64,
}

impl Summary {
    /// Aggregates `rows`.
    pub fn from_rows(rows: &[Row]) -> Summary {
        let mut summary = Summary {
            examples: rows.len(),
            ..Summary::default()
        };
        let mut seconds = Vec::with_capacity(rows.len());
        for row in rows {
            let outcome = &row.outcome;
            if let Some(correct) = row.correct {
                summary.graded += 1;
                summary.correct += usize::from(correct);
            }
            seconds.push(outcome.seconds);
            summary.tokens += outcome.tokens;
            *summary.stops.entry(outcome.stop.clone()).or_default() += 1;
            summary.errors += usize::from(outcome.error.is_some());
            if let Some(category) = &row.category {
                let c = summary.by_category.entry(category.clone()).or_default();
                c.examples += 1;
                if let Some(correct) = row.correct {
                    c.graded += 1;
                    c.correct += usize::from(correct);
                }
            }
            if let Some(judgement) = &row.judgement {
                let judge = summary.judge.get_or_insert_with(JudgeSummary::default);
                judge.judged += 1;
                match judgement.score {
                    Some(score) => {
                        judge.rated += 1;
                        judge.mean_score += score;
                    }
                    None => judge.unreadable += 1,
                }
            }
            let used: BTreeSet<&String> = outcome.tools.iter().collect();
            for tool in used {
                *summary.tools.entry(tool.clone()).or_default() += 1;
            }
        }
        if let Some(judge) = summary.judge.as_mut() {
            judge.mean_score = if judge.rated == 0 {
                0.0
            } else {
                judge.mean_score / judge.rated as f64
            };
        }
        summary.accuracy = ratio(summary.correct, summary.graded);
        summary.ci95 = wilson(summary.correct, summary.graded);
        for c in summary.by_category.values_mut() {
            c.accuracy = ratio(c.correct, c.graded);
        }
        seconds.sort_by(f64::total_cmp);
        summary.latency_p50 = nearest_rank(&seconds, 50.0);
        summary.latency_p95 = nearest_rank(&seconds, 95.0);
        summary.latency_mean = if seconds.is_empty() {
            0.0
        } else {
            seconds.iter().sum::<f64>() / seconds.len() as f64
        };
        summary
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The 95% Wilson score interval for `successes` out of `trials` (z = 1.96);
/// `(0, 1)` for no trials.
pub fn wilson(successes: usize, trials: usize) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = Z95 * Z95;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// The `percent` percentile of ascending `sorted` by nearest rank (the value at rank
/// `ceil(percent / 100 * n)`); 0 for no values.
pub fn nearest_rank(sorted: &[f64], percent: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Report {
    /// Writes the rows as JSONL, whole or not at all (temporary file, fsync, rename).
    pub fn write_rows(&self, path: &Path) -> Result<(), EvalError> {
        let mut bytes = Vec::new();
        for row in &self.rows {
            serde_json::to_writer(&mut bytes, row).map_err(|e| {
                EvalError::file(path, format!("cannot encode row `{}`: {e}", row.id))
            })?;
            bytes.push(b'\n');
        }
        Ok(write_atomic(path, &bytes)?)
    }

    /// Writes `{"system", "interrupted", "total", "cached", "summary"}` as JSON, whole
    /// or not at all.
    pub fn write_summary(&self, path: &Path) -> Result<(), EvalError> {
        let file = serde_json::json!({
            "system": self.system,
            "interrupted": self.interrupted,
            "total": self.total,
            "cached": self.cached,
            "summary": self.summary,
        });
        let mut bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| EvalError::file(path, format!("cannot encode summary: {e}")))?;
        bytes.push(b'\n');
        Ok(write_atomic(path, &bytes)?)
    }

    /// Reads rows written by [`Report::write_rows`] (or a cache file: its header line
    /// is skipped). Blank lines are skipped; any other bad line is an error naming it.
    pub fn read_rows(path: &Path) -> Result<Vec<Row>, EvalError> {
        let text = fs::read_to_string(path).map_err(io_err("read", path))?;
        let mut rows = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line)
                .map_err(|e| EvalError::line(path, line_no, format!("invalid JSON: {e}")))?;
            if crate::journal::is_header(&value, crate::run::CACHE) {
                continue;
            }
            let row = serde_json::from_value(value)
                .map_err(|e| EvalError::line(path, line_no, format!("not a row: {e}")))?;
            rows.push(row);
        }
        Ok(rows)
    }
}

impl fmt::Display for Summary {
    /// A plain-text table: accuracy with its interval, latency, tokens, errors, stop
    /// reasons, tools and categories.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let percent = |x: f64| format!("{:.1}%", 100.0 * x);
        writeln!(
            f,
            "{:<10}{} (graded {})",
            "examples", self.examples, self.graded
        )?;
        writeln!(
            f,
            "{:<10}{} ({}/{}), 95% CI [{}, {}]",
            "accuracy",
            percent(self.accuracy),
            self.correct,
            self.graded,
            percent(self.ci95.0),
            percent(self.ci95.1)
        )?;
        writeln!(
            f,
            "{:<10}p50 {:.2}s, p95 {:.2}s, mean {:.2}s",
            "latency", self.latency_p50, self.latency_p95, self.latency_mean
        )?;
        let t = &self.tokens;
        writeln!(
            f,
            "{:<10}prompt {} (cached {}, evaluated {}), generated {}",
            "tokens", t.prompt, t.cached, t.evaluated, t.generated
        )?;
        if let Some(judge) = &self.judge {
            writeln!(
                f,
                "{:<10}mean rating {:.2} over {} rated ({} judged, {} unreadable)",
                "judge", judge.mean_score, judge.rated, judge.judged, judge.unreadable
            )?;
        }
        writeln!(f, "{:<10}{}", "errors", self.errors)?;
        let counts = |map: &BTreeMap<String, usize>| {
            if map.is_empty() {
                return "-".to_owned();
            }
            map.iter()
                .map(|(k, v)| format!("{} {v}", if k.is_empty() { "?" } else { k }))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(f, "{:<10}{}", "stops", counts(&self.stops))?;
        writeln!(f, "{:<10}{}", "tools", counts(&self.tools))?;
        if !self.by_category.is_empty() {
            let width = self
                .by_category
                .keys()
                .map(|k| k.chars().count())
                .max()
                .unwrap_or(0)
                .max("category".len());
            writeln!(
                f,
                "{:<width$}  {:>8}  {:>6}  {:>7}  {:>8}",
                "category", "examples", "graded", "correct", "accuracy"
            )?;
            for (name, c) in &self.by_category {
                writeln!(
                    f,
                    "{name:<width$}  {:>8}  {:>6}  {:>7}  {:>8}",
                    c.examples,
                    c.graded,
                    c.correct,
                    percent(c.accuracy)
                )?;
            }
        }
        Ok(())
    }
}
