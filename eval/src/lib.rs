//! # jielong-eval
//!
//! The library half of Jielong's evaluation harness. It knows nothing about models:
//! whatever is evaluated implements [`System`] (the CLI wraps a plain model, an
//! agent, `ask` or a workflow), and this crate does the rest.
//!
//! - [`dataset`]: JSONL rows as [`Example`]s ([`load_jsonl`] with configurable
//!   [`Fields`]; GSM8K `#### N` answers reduced to `N`), [`Split`]s such as `50:150`,
//!   and seeded [`sample`]s that keep dataset order.
//! - [`metric`]: [`Metric`] — `exact`, `numeric` (the last number in the answer, or a
//!   `\boxed{…}` one; `$1,234.50`, `3/4`, `1e3`, `50%` understood), `contains`,
//!   `regex:PATTERN`; an example's `metric` field overrides the default.
//! - [`judge`]: LLM-as-judge. [`JudgePrompt`]s in MT-Bench's `judge_prompts.jsonl`
//!   format; single grading of a run's answers against a rubric (`judge` metric:
//!   [`single_examples`], then [`apply_grades`]); two runs compared pairwise in both
//!   orders ([`pair_examples`], [`PairwiseReport`] with the share of flipped
//!   verdicts). The judge is any [`System`], run through [`Eval`] (so cached).
//! - [`system`]: the [`System`] trait and the [`Outcome`] of one example (answer,
//!   error, stop reason, [`Tokens`], tools, steps, seconds, free-form detail).
//! - [`run`]: [`Eval`] runs a system over the examples (in order, or `concurrency`
//!   at a time), grades each [`Row`], appends it to a fsynced JSONL cache so a killed
//!   run resumes where it stopped, and stops cleanly on a cancel flag; an
//!   [`Observer`] hears about progress.
//! - [`report`]: the [`Report`] and its [`Summary`] (accuracy with a Wilson
//!   interval, nearest-rank latency percentiles, tokens, stops, tools, categories);
//!   rows and summary written atomically.
//! - [`needle`]: needle in a haystack on the context path: a [`Grid`] of context
//!   lengths × depths × [`Variant`]s (`plain`, and `tip`, whose answer starts with
//!   "Here is the most relevant sentence in the context:"), a haystack of the user's
//!   [`Documents`] cut to each length with the [`Needle`] at each depth, read by a
//!   [`Reader`] (the seam the CLI implements: count tokens, answer a prompt), graded
//!   by key phrases, cached per cell; the [`GridReport`] as JSON, a table and an SVG
//!   heatmap.
//! - [`optimize`]: [`Search`], automatic prompt search (APE/OPRO): a [`Proposer`]
//!   rewrites an instruction from scores and failures, each variant is evaluated
//!   through [`Systems`] with its own cache, the best is kept and checked on a
//!   held-out split.
//! - [`compare`](mod@compare): two runs paired by id ([`compare()`]), with an exact
//!   McNemar test.
//!
//! ```
//! use futures::future::BoxFuture;
//! use jielong_eval::{Eval, Example, Metric, Outcome, System};
//!
//! /// Answers "2 + 2" right and everything else wrong.
//! struct Adder;
//!
//! impl System for Adder {
//!     fn name(&self) -> String {
//!         "adder".into()
//!     }
//!     fn answer<'a>(&'a self, example: &'a Example) -> BoxFuture<'a, Outcome> {
//!         let answer = if example.input == "2 + 2" { "It is 4." } else { "no idea" };
//!         Box::pin(async move { Outcome::answered(answer) })
//!     }
//! }
//!
//! let examples = vec![
//!     Example::new("a", "2 + 2", Some("4")),
//!     Example::new("b", "3 + 5", Some("8")),
//! ];
//! let eval = Eval::new(examples, Metric::parse("numeric")?);
//! let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! let report = runtime.block_on(eval.run(&Adder, &()))?;
//!
//! assert_eq!(report.summary.correct, 1);
//! assert_eq!(report.rows[0].extracted.as_deref(), Some("4"));
//! assert_eq!(report.rows[1].extracted, None); // "no idea" holds no number
//! let table = report.summary.to_string();
//! assert!(table.contains("accuracy  50.0% (1/2), 95% CI [9.5%, 90.5%]"), "{table}");
//! # Ok::<(), jielong_eval::EvalError>(())
//! ```

#![warn(missing_docs)]

pub mod compare;
pub mod dataset;
pub mod error;
mod journal;
pub mod judge;
pub mod metric;
pub mod needle;
pub mod optimize;
pub mod report;
pub mod run;
pub mod system;

pub use compare::{compare, mcnemar_p, Change, Comparison};
pub use dataset::{load_jsonl, mt_bench_turns, normalize_answer, sample, Example, Fields, Split};
pub use error::EvalError;
pub use judge::{
    apply_grades, pair_examples, read_rating, read_verdict, single_examples, Agreement, JudgeKind,
    JudgePrompt, Judgement, Pair, PairInputs, PairwiseReport, Transcript, Turn, Verdict, Winner,
};
pub use metric::{extract_number, metric_for, Checker, Metric, Metrics, Score};
pub use needle::{
    Documents, Grid, GridObserver, GridReport, Haystack, Needle, ReadError, Reader, Reply, Variant,
};
pub use optimize::{Candidate, Proposer, Scored, Search, SearchObserver, SearchReport, Systems};
pub use report::{nearest_rank, wilson, CategorySummary, JudgeSummary, Report, Summary};
pub use run::{input_hash, Eval, Observer, Row};
pub use system::{Outcome, System, Tokens};
