//! [`Eval`]: runs a [`System`] over examples, grades each outcome into a [`Row`], and
//! keeps a resumable cache of finished rows.
//!
//! The cache is a JSONL file: a header line `{"system": NAME, "config": CONFIG}`,
//! then one row per finished example, appended and fsynced as soon as the example
//! finishes. On start, a cached row is reused (not run again) when its id and input
//! hash match an example; rows are re-graded with the current metric and expected
//! answer, so changing either needs no re-run. A last line cut short by a kill is
//! ignored (and cut off the file); a cache whose header names another system or
//! configuration is refused. One process should use a cache file at a time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};

use crate::dataset::Example;
use crate::error::EvalError;
use crate::judge::Judgement;
use crate::metric::{metric_for, Metric, Metrics};

use crate::journal::{Journal, Kind, Opened};
use crate::report::{Report, Summary};
use crate::system::{Outcome, System};

/// One graded example: what was asked, what came back, and whether it was right.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The example's id.
    pub id: String,
    /// [`input_hash`] of the input: a cached row is reused only while it matches.
    pub input_hash: String,
    /// The input.
    pub input: String,
    /// The expected answer, if any.
    pub expected: Option<String>,
    /// Whether the answer was right; `None` when there is no expected answer.
    pub correct: Option<bool>,
    /// What the metric compared (see [`Score::extracted`](crate::Score::extracted)).
    pub extracted: Option<String>,
    /// The record's `category`, if a string.
    pub category: Option<String>,
    /// What the system did.
    pub outcome: Outcome,
    /// An LLM judge's rating, when the metric is `judge` (set by
    /// [`apply_grades`](crate::judge::apply_grades)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judgement: Option<Judgement>,
}

impl Row {
    /// Grades `outcome` for `example` with `metric`. An outcome without an answer is
    /// wrong; an example without an expected answer is not graded, nor (until a judge
    /// rates it) one whose metric is [`Metric::Judge`].
    pub fn grade(example: &Example, metric: &Metric, outcome: Outcome) -> Row {
        let score = match (&example.expected, &outcome.answer) {
            _ if matches!(metric, Metric::Judge) => None,
            (Some(expected), Some(answer)) => Some(metric.score(answer, expected)),
            (Some(_), None) => Some(Default::default()),
            (None, _) => None,
        };
        Row {
            id: example.id.clone(),
            input_hash: input_hash(&example.input),
            input: example.input.clone(),
            expected: example.expected.clone(),
            correct: score.as_ref().map(|s| s.correct),
            extracted: score.and_then(|s| s.extracted),
            category: example.category().map(str::to_owned),
            outcome,
            judgement: None,
        }
    }
}

/// The SHA-256 of `input`, in lower-case hex.
pub fn input_hash(input: &str) -> String {
    jielong_util::sha256_hex(input.as_bytes())
}

/// Told about a run's progress (the CLI draws a progress bar from it). Every method
/// does nothing by default; `()` is an observer that ignores everything.
pub trait Observer: Send + Sync {
    /// The run starts: `total` examples, of which `cached` are reused from the cache.
    fn started(&self, _total: usize, _cached: usize) {}

    /// An example finished; `done` counts cached and finished rows so far.
    fn finished(&self, _row: &Row, _done: usize, _total: usize) {}

    /// Something worth telling that does not stop the run (an ignored cache line).
    fn warning(&self, _message: &str) {}
}

impl Observer for () {}

/// An evaluation: examples, a metric, and how to run them.
#[derive(Debug, Clone)]
pub struct Eval {
    examples: Vec<Example>,
    metric: Metric,
    metrics: Metrics,
    cache: Option<PathBuf>,
    concurrency: usize,
    cancel: Option<Arc<AtomicBool>>,
    retry_errors: bool,
}

impl Eval {
    /// Evaluates `examples` with `metric` (an example's `metric` field overrides it,
    /// see [`metric_for`]); no cache, one example at a time, in order.
    pub fn new(examples: Vec<Example>, metric: Metric) -> Eval {
        Eval {
            examples,
            metric,
            metrics: Metrics::new(),
            cache: None,
            concurrency: 1,
            cancel: None,
            retry_errors: false,
        }
    }

    /// The metrics an example's own `metric` field may name (default: the built-in
    /// ones; add a [`Checker`](crate::Checker) such as the Game of 24's).
    pub fn metrics(mut self, metrics: Metrics) -> Eval {
        self.metrics = metrics;
        self
    }

    /// Keeps finished rows in the JSONL file `path` and reuses them on the next run
    /// (see the [module docs](self)).
    pub fn cache(mut self, path: impl Into<PathBuf>) -> Eval {
        self.cache = Some(path.into());
        self
    }

    /// Runs up to `n` examples at once (at least 1); they start in dataset order.
    pub fn concurrency(mut self, n: usize) -> Eval {
        self.concurrency = n.max(1);
        self
    }

    /// Once `flag` is set, no new example starts; the running ones finish and the
    /// report comes back with `interrupted: true`.
    pub fn cancel(mut self, flag: Arc<AtomicBool>) -> Eval {
        self.cancel = Some(flag);
        self
    }

    /// Whether cached rows whose outcome has an error are run again (default: no,
    /// every cached row is reused).
    pub fn retry_errors(mut self, retry: bool) -> Eval {
        self.retry_errors = retry;
        self
    }

    /// The examples.
    pub fn examples(&self) -> &[Example] {
        &self.examples
    }

    /// The default metric.
    pub fn metric(&self) -> &Metric {
        &self.metric
    }

    /// Runs `system` on every example not in the cache. Fails before running anything
    /// on duplicate ids, a bad per-example metric or an unusable cache, and during the
    /// run only when the cache cannot be written; a failing example is a row with an
    /// error.
    pub async fn run(
        &self,
        system: &dyn System,
        observer: &dyn Observer,
    ) -> Result<Report, EvalError> {
        let examples = &self.examples;
        let total = examples.len();
        let mut positions: HashMap<&str, usize> = HashMap::new();
        for (i, example) in examples.iter().enumerate() {
            if let Some(first) = positions.insert(&example.id, i) {
                return Err(EvalError::Example {
                    id: example.id.clone(),
                    message: format!("appears twice (examples {} and {})", first + 1, i + 1),
                });
            }
        }
        let metrics = examples
            .iter()
            .map(|e| metric_for(e, &self.metric, &self.metrics))
            .collect::<Result<Vec<Cow<'_, Metric>>, _>>()?;

        let name = system.name();
        let (mut cache, mut previous) = match &self.cache {
            Some(path) => {
                let opened: Opened<Row> = Journal::open(path, CACHE, &name, &system.config())?;
                for warning in &opened.warnings {
                    observer.warning(warning);
                }
                let rows = opened.records.into_iter().map(|r| (r.id.clone(), r));
                (Some((opened.journal, opened.ignored)), rows.collect())
            }
            None => (None, HashMap::new()),
        };
        let cache_ignored = cache.as_ref().map_or(0, |(_, ignored)| *ignored);

        let mut slots: Vec<Option<Row>> = vec![None; total];
        let mut pending = Vec::new();
        for (i, example) in examples.iter().enumerate() {
            let reusable = previous.remove(example.id.as_str()).filter(|row| {
                row.input_hash == input_hash(&example.input)
                    && !(self.retry_errors && row.outcome.error.is_some())
            });
            match reusable {
                Some(row) => slots[i] = Some(Row::grade(example, &metrics[i], row.outcome)),
                None => pending.push(i),
            }
        }
        let cached = total - pending.len();
        observer.started(total, cached);

        let start_one = |i: usize| async move {
            let started = Instant::now();
            let mut outcome = system.answer(&examples[i]).await;
            if outcome.seconds == 0.0 {
                outcome.seconds = started.elapsed().as_secs_f64();
            }
            (i, outcome)
        };
        let cancelled = || {
            self.cancel
                .as_ref()
                .is_some_and(|flag| flag.load(Ordering::SeqCst))
        };
        let mut queue = pending.into_iter();
        let mut running = FuturesUnordered::new();
        let mut done = cached;
        loop {
            while running.len() < self.concurrency && !cancelled() {
                match queue.next() {
                    Some(i) => running.push(start_one(i)),
                    None => break,
                }
            }
            let Some((i, outcome)) = running.next().await else {
                break;
            };
            let row = Row::grade(&examples[i], &metrics[i], outcome);
            if let Some((journal, _)) = cache.as_mut() {
                journal.append(&row, &format!("row `{}`", row.id))?;
            }
            done += 1;
            observer.finished(&row, done, total);
            slots[i] = Some(row);
        }

        let rows: Vec<Row> = slots.into_iter().flatten().collect();
        Ok(Report {
            system: name,
            summary: Summary::from_rows(&rows),
            interrupted: rows.len() < total,
            rows,
            total,
            cached,
            cache_ignored,
        })
    }
}

/// An eval run's cache: a journal of rows, headed `{"system": …}`.
pub(crate) const CACHE: Kind = Kind {
    key: "system",
    file: "an eval cache",
    record: "row",
};
