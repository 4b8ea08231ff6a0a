//! Automatic prompt search in the style of APE and OPRO: a model rewrites an
//! instruction from the scores of the instructions tried so far and from examples the
//! best of them got wrong; every variant is evaluated on the same examples, and the best
//! one is kept.
//!
//! [`Search`] knows nothing about models: the caller gives it [`Systems`] (the system
//! that answers with a given instruction) and a [`Proposer`] (whatever writes the
//! rewrites, normally the same model on the meta-prompt [`META_PROMPT`]). Its folder:
//!
//! - `candidates/ID/` per variant (ID: the first 12 hex digits of the SHA-256 of its
//!   text): `instruction.md`, the eval `cache.jsonl`, `rows.jsonl`, `summary.json`;
//! - `holdout/ID/` the same for the held-out examples (the start and the best only);
//! - `round-N.json` the variants proposed in round N (written once, so a resumed search
//!   evaluates the same variants even though they were sampled);
//! - `report.json`, `report.md` (every variant with its score) and `best.md` (the best
//!   instruction, a prompt file as it is used: `--instruction-file best.md`).
//!
//! A killed search resumes from its caches: no example of any variant is run twice.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use jielong_util::write_atomic;
use serde::{Deserialize, Serialize};

use crate::error::io_err;
use crate::run::input_hash;
use crate::{Eval, EvalError, Example, Metric, Metrics, Observer, Report, Summary, System};

/// The meta-prompt the proposer is asked with: `{instructions}` (the best variants so
/// far with their scores, worst first) and `{failures}` (examples the best one got
/// wrong) are filled in.
pub const META_PROMPT: &str = include_str!("../../prompts/optimize.md");

/// The longest instruction a proposal may hold, in characters.
pub const MAX_INSTRUCTION_CHARS: usize = 600;

/// The system that answers with a given instruction.
pub trait Systems: Send + Sync {
    /// The system for `instruction` (its [`System::config`] must tell instructions
    /// apart, so that each variant's cache is its own).
    fn system(&self, instruction: &str) -> Result<Box<dyn System + '_>, String>;
}

/// Writes rewrites of an instruction.
pub trait Proposer: Send + Sync {
    /// `count` completions of `prompt` (the filled meta-prompt) for round `round`
    /// (from 1), as they were written; they should differ (sampled with different
    /// seeds). An `Err` stops the search with its message.
    fn propose<'a>(
        &'a self,
        prompt: &'a str,
        count: usize,
        round: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, String>>;
}

/// Told about a search's progress. Every method does nothing by default.
pub trait SearchObserver: Send + Sync {
    /// What hears about each evaluation's examples (default: nothing).
    fn examples(&self) -> &dyn Observer {
        &()
    }
    /// A variant's evaluation starts (`split` is `"train"` or `"holdout"`).
    fn evaluating(&self, _candidate: &Candidate, _split: &str) {}
    /// A variant was scored on the train split.
    fn scored(&self, _scored: &Scored) {}
    /// Round `round`'s proposals were read: the variants kept, and each proposal left
    /// out with the reason.
    fn proposed(&self, _round: usize, _kept: &[Candidate], _rejected: &[(String, String)]) {}
}

impl SearchObserver for () {}

/// One instruction tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// [`candidate_id`] of the text.
    pub id: String,
    /// The round it was proposed in (0: the starting instruction).
    pub round: usize,
    /// The variant whose failures were shown when it was proposed.
    pub parent: Option<String>,
    /// The instruction.
    pub text: String,
}

/// A candidate with its score on the train split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scored {
    /// The candidate.
    pub candidate: Candidate,
    /// Its summary on the train split.
    pub train: Summary,
    /// Its summary on the held-out split, for the start and the best.
    pub holdout: Option<Summary>,
    /// Train examples it got wrong, in dataset order (what the next proposal is shown).
    #[serde(skip)]
    pub failures: Vec<Failure>,
}

/// An example answered wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The question.
    pub input: String,
    /// The answer given (`None`: no answer).
    pub answer: Option<String>,
    /// What the metric read from it (the number it compared), if anything.
    pub extracted: Option<String>,
    /// The expected answer.
    pub expected: String,
}

/// What a search found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchReport {
    /// Every variant, in the order tried.
    pub candidates: Vec<Scored>,
    /// The id of the best (most right on the train split; the earliest among equals).
    pub best: String,
    /// The id of the starting instruction.
    pub start: String,
    /// Train and held-out example counts.
    pub train_examples: usize,
    /// Held-out examples (0: none).
    pub holdout_examples: usize,
    /// True when cancellation stopped the search early.
    pub interrupted: bool,
}

impl SearchReport {
    /// The best variant.
    pub fn best(&self) -> Option<&Scored> {
        self.candidates.iter().find(|s| s.candidate.id == self.best)
    }

    /// The starting instruction's row.
    pub fn start(&self) -> Option<&Scored> {
        self.candidates
            .iter()
            .find(|s| s.candidate.id == self.start)
    }

    /// The report as Markdown: a table of every variant (train, held-out, round,
    /// parent, text on one line), best first.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let percent =
            |s: &Summary| format!("{:.1}% ({}/{})", 100.0 * s.accuracy, s.correct, s.graded);
        let _ = writeln!(out, "# Prompt search\n");
        let _ = writeln!(
            out,
            "{} variants on {} train examples{}.{}\n",
            self.candidates.len(),
            self.train_examples,
            if self.holdout_examples > 0 {
                format!(
                    "; the start and the best also on {} held-out examples",
                    self.holdout_examples
                )
            } else {
                String::new()
            },
            if self.interrupted {
                " Interrupted: `--resume` continues."
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "| id | round | parent | train | held-out | p50 s | instruction |\n| --- | --- | --- | --- | --- | --- | --- |"
        );
        let mut rows: Vec<&Scored> = self.candidates.iter().collect();
        rows.sort_by_key(|s| std::cmp::Reverse(s.train.correct));
        for scored in rows {
            let c = &scored.candidate;
            let mark = match (c.id == self.best, c.id == self.start) {
                (true, true) => " (best, start)",
                (true, false) => " (best)",
                (false, true) => " (start)",
                (false, false) => "",
            };
            let _ = writeln!(
                out,
                "| `{}`{mark} | {} | {} | {} | {} | {:.1} | {} |",
                c.id,
                c.round,
                c.parent.as_deref().unwrap_or("—"),
                percent(&scored.train),
                scored.holdout.as_ref().map_or("—".to_string(), percent),
                scored.train.latency_p50,
                one_line(&c.text).replace('|', "\\|"),
            );
        }
        out
    }
}

/// A search over instructions.
#[derive(Debug, Clone)]
pub struct Search {
    train: Vec<Example>,
    holdout: Vec<Example>,
    metric: Metric,
    metrics: Metrics,
    rounds: usize,
    proposals: usize,
    shown: usize,
    failures_shown: usize,
    template: String,
    dir: PathBuf,
    cancel: Option<Arc<AtomicBool>>,
}

impl Search {
    /// A search on `train` (graded with `metric`; an example's own `metric` field wins)
    /// kept in `dir`: 3 rounds of 4 proposals, the 6 best variants and 3 failures shown
    /// in the meta-prompt, no held-out split.
    pub fn new(train: Vec<Example>, metric: Metric, dir: impl Into<PathBuf>) -> Search {
        Search {
            train,
            holdout: Vec::new(),
            metric,
            metrics: Metrics::new(),
            rounds: 3,
            proposals: 4,
            shown: 6,
            failures_shown: 3,
            template: META_PROMPT.to_string(),
            dir: dir.into(),
            cancel: None,
        }
    }

    /// The metrics an example's own `metric` field may name ([`Eval::metrics`]).
    pub fn metrics(mut self, metrics: Metrics) -> Search {
        self.metrics = metrics;
        self
    }

    /// Examples the start and the best are also scored on (nothing is chosen on them).
    pub fn holdout(mut self, examples: Vec<Example>) -> Search {
        self.holdout = examples;
        self
    }

    /// Rounds of proposals after the start.
    pub fn rounds(mut self, rounds: usize) -> Search {
        self.rounds = rounds;
        self
    }

    /// Proposals asked for per round (at least 1).
    pub fn proposals(mut self, proposals: usize) -> Search {
        self.proposals = proposals.max(1);
        self
    }

    /// Failures shown per meta-prompt.
    pub fn failures_shown(mut self, count: usize) -> Search {
        self.failures_shown = count;
        self
    }

    /// Another meta-prompt (with `{instructions}` and `{failures}`).
    pub fn template(mut self, template: impl Into<String>) -> Search {
        self.template = template.into();
        self
    }

    /// Stops after the current example when the flag is set.
    pub fn cancel(mut self, flag: Arc<AtomicBool>) -> Search {
        self.cancel = Some(flag);
        self
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::SeqCst))
    }

    /// Runs the search from `start`. Fails on an unusable folder or cache, a system
    /// that cannot be built or a proposer error; an example that fails is a wrong row.
    pub async fn run(
        &self,
        start: &str,
        systems: &dyn Systems,
        proposer: &dyn Proposer,
        observer: &dyn SearchObserver,
    ) -> Result<SearchReport, EvalError> {
        if self.train.is_empty() {
            return Err(EvalError::file(&self.dir, "no train examples to search on"));
        }
        let start = start.trim();
        if start.is_empty() {
            return Err(EvalError::file(
                &self.dir,
                "the starting instruction is empty",
            ));
        }
        std::fs::create_dir_all(&self.dir).map_err(io_err("create the folder", &self.dir))?;
        let first = Candidate {
            id: candidate_id(start),
            round: 0,
            parent: None,
            text: start.to_string(),
        };
        let mut pool: Vec<Scored> = Vec::new();
        let mut interrupted = false;
        match self.score(first.clone(), systems, observer).await? {
            Some(scored) => pool.push(scored),
            None => interrupted = true,
        }
        for round in 1..=self.rounds {
            if interrupted || self.cancelled() {
                interrupted = true;
                break;
            }
            let candidates = self.round(round, &pool, proposer, observer).await?;
            for candidate in candidates {
                if pool.iter().any(|s| s.candidate.id == candidate.id) {
                    continue;
                }
                match self.score(candidate, systems, observer).await? {
                    Some(scored) => pool.push(scored),
                    None => {
                        interrupted = true;
                        break;
                    }
                }
            }
        }
        let best = best_of(&pool)
            .map(|s| s.candidate.id.clone())
            .unwrap_or_else(|| first.id.clone());
        if !interrupted && !self.holdout.is_empty() {
            let mut ids = vec![first.id.clone()];
            if best != first.id {
                ids.push(best.clone());
            }
            for id in ids {
                let Some(index) = pool.iter().position(|s| s.candidate.id == id) else {
                    continue;
                };
                let candidate = pool[index].candidate.clone();
                observer.evaluating(&candidate, "holdout");
                let dir = self.dir.join("holdout").join(&candidate.id);
                let report = self
                    .evaluate(&candidate, &self.holdout, &dir, systems, observer)
                    .await?;
                if report.interrupted {
                    interrupted = true;
                    break;
                }
                pool[index].holdout = Some(report.summary);
            }
        }
        let report = SearchReport {
            candidates: pool,
            best,
            start: first.id,
            train_examples: self.train.len(),
            holdout_examples: self.holdout.len(),
            interrupted,
        };
        self.write(&report)?;
        Ok(report)
    }

    /// The variants of round `round`: read from `round-N.json` when it was proposed
    /// before, else proposed now (from the pool so far) and written there.
    async fn round(
        &self,
        round: usize,
        pool: &[Scored],
        proposer: &dyn Proposer,
        observer: &dyn SearchObserver,
    ) -> Result<Vec<Candidate>, EvalError> {
        let path = self.dir.join(format!("round-{round}.json"));
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(io_err("read", &path))?;
            let saved: RoundFile = serde_json::from_str(&text).map_err(|e| {
                EvalError::file(&path, format!("not a round file of a search: {e}"))
            })?;
            observer.proposed(round, &saved.kept, &saved.rejected);
            return Ok(saved.kept);
        }
        let parent = best_of(pool);
        let prompt = self.meta_prompt(pool, round);
        let raw = proposer
            .propose(&prompt, self.proposals, round)
            .await
            .map_err(|message| {
                EvalError::file(
                    &path,
                    format!("round {round}: the proposer failed: {message}"),
                )
            })?;
        let mut kept: Vec<Candidate> = Vec::new();
        let mut rejected = Vec::new();
        for text in raw {
            match parse_proposal(&text) {
                Ok(instructions) => {
                    let tried: Vec<String> = pool
                        .iter()
                        .map(|s| &s.candidate)
                        .chain(kept.iter())
                        .map(|c| same_key(&c.text))
                        .collect();
                    match instructions
                        .into_iter()
                        .find(|i| !tried.contains(&same_key(i)))
                    {
                        Some(instruction) => kept.push(Candidate {
                            id: candidate_id(&instruction),
                            round,
                            parent: parent.map(|p| p.candidate.id.clone()),
                            text: instruction,
                        }),
                        None => {
                            rejected.push((text, "the same as an earlier instruction".to_string()))
                        }
                    }
                }
                Err(reason) => rejected.push((text, reason.to_string())),
            }
        }
        let file = RoundFile {
            round,
            prompt,
            kept,
            rejected,
        };
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| EvalError::file(&path, format!("cannot encode: {e}")))?;
        write_atomic(&path, &json)?;
        observer.proposed(round, &file.kept, &file.rejected);
        Ok(file.kept)
    }

    /// The meta-prompt for round `round`: the best [`Search::shown`] variants (worst
    /// first, as OPRO orders them) and failures of the best one (a different window of
    /// them each round).
    pub fn meta_prompt(&self, pool: &[Scored], round: usize) -> String {
        let mut ranked: Vec<&Scored> = pool.iter().collect();
        ranked.sort_by(|a, b| {
            b.train
                .correct
                .cmp(&a.train.correct)
                .then(a.candidate.round.cmp(&b.candidate.round))
        });
        ranked.truncate(self.shown);
        ranked.reverse();
        let mut instructions = String::new();
        for scored in &ranked {
            let _ = writeln!(
                instructions,
                "<INS>{}</INS>\nscore: {:.0}%\n",
                scored.candidate.text.trim(),
                100.0 * scored.train.accuracy
            );
        }
        let mut failures = String::new();
        if let Some(best) = best_of(pool) {
            let all = &best.failures;
            if !all.is_empty() {
                let start = (round.saturating_sub(1) * self.failures_shown) % all.len();
                for failure in all
                    .iter()
                    .cycle()
                    .skip(start)
                    .take(self.failures_shown.min(all.len()))
                {
                    // The end of a worked answer says what it concluded.
                    let answer = match (&failure.answer, &failure.extracted) {
                        (None, _) => "(no answer)".to_string(),
                        (Some(a), Some(read)) => {
                            format!("{read} (\"{}\")", clip_start(&one_line(a), 160))
                        }
                        (Some(a), None) => format!("\"{}\"", clip_start(&one_line(a), 160)),
                    };
                    let _ = writeln!(
                        failures,
                        "Problem: {}\nWrong answer given: {answer}\nRight answer: {}\n",
                        one_line(&failure.input),
                        failure.expected
                    );
                }
            }
        }
        if failures.is_empty() {
            failures.push_str("(none)\n");
        }
        fill(&self.template, instructions.trim_end(), failures.trim_end())
    }

    /// Scores `candidate` on the train split; `None` when cancelled part-way.
    async fn score(
        &self,
        candidate: Candidate,
        systems: &dyn Systems,
        observer: &dyn SearchObserver,
    ) -> Result<Option<Scored>, EvalError> {
        observer.evaluating(&candidate, "train");
        let dir = self.dir.join("candidates").join(&candidate.id);
        let report = self
            .evaluate(&candidate, &self.train, &dir, systems, observer)
            .await?;
        if report.interrupted {
            return Ok(None);
        }
        let failures = report
            .rows
            .iter()
            .filter(|row| row.correct == Some(false))
            .filter_map(|row| {
                Some(Failure {
                    input: row.input.clone(),
                    answer: row.outcome.answer.clone(),
                    extracted: row.extracted.clone(),
                    expected: row.expected.clone()?,
                })
            })
            .collect();
        let scored = Scored {
            candidate,
            train: report.summary,
            holdout: None,
            failures,
        };
        observer.scored(&scored);
        Ok(Some(scored))
    }

    async fn evaluate(
        &self,
        candidate: &Candidate,
        examples: &[Example],
        dir: &Path,
        systems: &dyn Systems,
        observer: &dyn SearchObserver,
    ) -> Result<Report, EvalError> {
        std::fs::create_dir_all(dir).map_err(io_err("create the folder", dir))?;
        write_atomic(
            &dir.join("instruction.md"),
            format!("{}\n", candidate.text).as_bytes(),
        )?;
        let system = systems.system(&candidate.text).map_err(|message| {
            EvalError::file(dir, format!("cannot build the system: {message}"))
        })?;
        let mut eval = Eval::new(examples.to_vec(), self.metric.clone())
            .metrics(self.metrics.clone())
            .cache(dir.join("cache.jsonl"));
        if let Some(flag) = &self.cancel {
            eval = eval.cancel(flag.clone());
        }
        let report = eval.run(system.as_ref(), observer.examples()).await?;
        report.write_rows(&dir.join("rows.jsonl"))?;
        report.write_summary(&dir.join("summary.json"))?;
        Ok(report)
    }

    fn write(&self, report: &SearchReport) -> Result<(), EvalError> {
        let path = self.dir.join("report.json");
        let json = serde_json::to_vec_pretty(report)
            .map_err(|e| EvalError::file(&path, format!("cannot encode: {e}")))?;
        write_atomic(&path, &json)?;
        write_atomic(&self.dir.join("report.md"), report.to_markdown().as_bytes())?;
        if let Some(best) = report.best() {
            write_atomic(
                &self.dir.join("best.md"),
                format!("{}\n", best.candidate.text).as_bytes(),
            )?;
        }
        Ok(())
    }
}

/// What `round-N.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct RoundFile {
    round: usize,
    prompt: String,
    kept: Vec<Candidate>,
    rejected: Vec<(String, String)>,
}

/// The most right on the train split; the earliest among equals (the start wins a tie).
fn best_of(pool: &[Scored]) -> Option<&Scored> {
    pool.iter().reduce(|best, s| {
        if s.train.correct > best.train.correct {
            s
        } else {
            best
        }
    })
}

/// The id of an instruction: the first 12 hex digits of the SHA-256 of its trimmed text.
pub fn candidate_id(text: &str) -> String {
    input_hash(text.trim())[..12].to_string()
}

/// The instructions in a proposal, in order: the text of each `<INS>…</INS>` (or
/// after a lone last `<INS>`), else the first paragraph; quotes and a leading label
/// such as "Instruction:" dropped. A small model often copies the list it was shown
/// before its own, so the caller takes the first one it has not tried. `Err` says why
/// there is none.
pub fn parse_proposal(text: &str) -> Result<Vec<String>, &'static str> {
    let lower = text.to_ascii_lowercase();
    let mut pieces: Vec<&str> = Vec::new();
    let mut at = 0;
    while let Some(open) = lower[at..].find("<ins>") {
        let from = at + open + 5;
        match lower[from..].find("</ins>") {
            Some(close) => {
                pieces.push(&text[from..from + close]);
                at = from + close + 6;
            }
            None => {
                pieces.push(&text[from..]);
                break;
            }
        }
    }
    if pieces.is_empty() {
        pieces.push(text.trim().split("\n\n").next().unwrap_or_default());
    }
    let mut reason = "no instruction in it";
    let mut found = Vec::new();
    for piece in pieces {
        match clean_instruction(piece) {
            Ok(instruction) => found.push(instruction),
            Err(why) => reason = why,
        }
    }
    if found.is_empty() {
        Err(reason)
    } else {
        Ok(found)
    }
}

fn clean_instruction(piece: &str) -> Result<String, &'static str> {
    let mut instruction = piece.trim();
    for label in ["new instruction:", "instruction:", "text:"] {
        if instruction.to_ascii_lowercase().starts_with(label) {
            instruction = instruction[label.len()..].trim();
        }
    }
    let instruction = instruction
        .trim_matches(|c: char| c == '"' || c == '`' || c == '“' || c == '”')
        .trim();
    if instruction.is_empty() {
        return Err("no instruction in it");
    }
    if instruction.chars().count() > MAX_INSTRUCTION_CHARS {
        return Err("longer than 600 characters");
    }
    if instruction.to_ascii_lowercase().contains("score:") {
        return Err("it copies the scored list");
    }
    Ok(instruction.to_string())
}

/// What two instructions that say the same share: lower case, words only.
fn same_key(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric() && c != '{' && c != '}')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The template with `{instructions}` and `{failures}` filled in (in one pass: the
/// values are not searched for placeholders).
fn fill(template: &str, instructions: &str, failures: &str) -> String {
    template
        .split("{failures}")
        .map(|part| part.replace("{instructions}", instructions))
        .collect::<Vec<_>>()
        .join(failures)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The last `max` characters of `text`, "…" before them when cut.
fn clip_start(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    match text.char_indices().nth(count - max) {
        Some((at, _)) => format!("…{}", &text[at..]),
        None => text.to_string(),
    }
}

/// Counts per reason, for a one-line account of what was rejected.
pub fn rejected_counts(rejected: &[(String, String)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, reason) in rejected {
        *counts.entry(reason.clone()).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;
    use futures::FutureExt;
    use std::sync::Mutex;

    /// Answers right when the instruction says "please" as often as the example's id
    /// number: an instruction with `k` of them gets examples 1..=k right.
    struct Shouter {
        instruction: String,
        calls: Arc<Mutex<usize>>,
    }

    impl System for Shouter {
        fn name(&self) -> String {
            "shouter".into()
        }
        fn config(&self) -> serde_json::Value {
            serde_json::json!({ "instruction": self.instruction })
        }
        fn answer<'a>(&'a self, example: &'a Example) -> BoxFuture<'a, Outcome> {
            async move {
                if let Ok(mut calls) = self.calls.lock() {
                    *calls += 1;
                }
                let needed: usize = example.id.parse().unwrap_or(usize::MAX);
                let marks = self.instruction.matches("please").count();
                if marks >= needed {
                    Outcome::answered(example.expected.clone().unwrap_or_default())
                } else {
                    Outcome::answered("0")
                }
            }
            .boxed()
        }
    }

    struct Shouters(Arc<Mutex<usize>>);

    impl Systems for Shouters {
        fn system(&self, instruction: &str) -> Result<Box<dyn System + '_>, String> {
            Ok(Box::new(Shouter {
                instruction: instruction.to_string(),
                calls: self.0.clone(),
            }))
        }
    }

    /// Proposes the best instruction shown with one more "please" (and a copy and a
    /// blank), recording the prompts it saw.
    struct Louder(Mutex<Vec<String>>);

    impl Proposer for Louder {
        fn propose<'a>(
            &'a self,
            prompt: &'a str,
            count: usize,
            _round: usize,
        ) -> BoxFuture<'a, Result<Vec<String>, String>> {
            async move {
                self.0.lock().unwrap().push(prompt.to_string());
                // The last instruction listed is the best (worst first).
                let best = prompt
                    .rsplit("<INS>")
                    .next()
                    .and_then(|s| s.split("</INS>").next())
                    .unwrap_or_default()
                    .to_string();
                let mut out = vec![
                    format!("Sure! <INS>{best} please</INS>"),
                    format!("<INS>{best}!</INS>"),
                ];
                out.push("   ".into());
                out.truncate(count);
                Ok(out)
            }
            .boxed()
        }
    }

    fn examples(range: std::ops::RangeInclusive<usize>) -> Vec<Example> {
        range
            .map(|i| {
                Example::new(
                    i.to_string(),
                    format!("question {i}"),
                    Some(&format!("{}", i * 7)),
                )
            })
            .collect()
    }

    #[test]
    fn a_search_climbs_from_failures_keeps_the_best_and_resumes_without_rerunning() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Arc::new(Mutex::new(0));
        let systems = Shouters(calls.clone());
        let proposer = Louder(Mutex::new(Vec::new()));
        let search = Search::new(
            examples(1..=6),
            Metric::parse("numeric").unwrap(),
            dir.path(),
        )
        .template("{instructions}\n---\n{failures}")
        .holdout(examples(7..=8))
        .rounds(3)
        .proposals(3);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let report = runtime
            .block_on(search.run("Go please", &systems, &proposer, &()))
            .unwrap();

        // Start "Go please" gets 1 of 6; each round adds a "please" (the copy, which
        // differs in punctuation only, and the blank are rejected), so round 3 reaches
        // 4 of 6.
        let best = report.best().unwrap();
        assert_eq!(best.candidate.text, "Go please please please please");
        assert_eq!(best.candidate.round, 3);
        assert_eq!(best.train.correct, 4);
        assert_eq!(report.start().unwrap().train.correct, 1);
        // Held out: only the start and the best, both 0 of 2 (they need 7 and 8).
        assert_eq!(best.holdout.as_ref().unwrap().graded, 2);
        assert!(
            report
                .candidates
                .iter()
                .filter(|s| s.holdout.is_some())
                .count()
                == 2
        );
        assert_eq!(report.candidates.len(), 4);
        // The meta-prompt showed the scores and the best one's failures, with answers.
        let prompts = proposer.0.lock().unwrap().clone();
        assert_eq!(prompts.len(), 3);
        assert!(
            prompts[0].contains("<INS>Go please</INS>\nscore: 17%"),
            "{}",
            prompts[0]
        );
        assert!(
            prompts[0]
                .contains("Problem: question 2\nWrong answer given: 0 (\"0\")\nRight answer: 14"),
            "{}",
            prompts[0]
        );
        // The files: best.md is the instruction alone; the report lists every variant.
        let best_file = std::fs::read_to_string(dir.path().join("best.md")).unwrap();
        assert_eq!(best_file, "Go please please please please\n");
        let markdown = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(
            markdown.contains("| 66.7% (4/6) | 0.0% (0/2) |"),
            "{markdown}"
        );
        let round: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("round-1.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(round["rejected"].as_array().unwrap().len(), 2);
        let runs = *calls.lock().unwrap();
        assert_eq!(runs, 4 * 6 + 2 * 2);

        // Run again: everything comes from the caches and round files.
        let again = runtime
            .block_on(search.run("Go please", &systems, &proposer, &()))
            .unwrap();
        assert_eq!(*calls.lock().unwrap(), runs);
        assert_eq!(proposer.0.lock().unwrap().len(), 3);
        assert_eq!(again.best, report.best);
    }

    #[test]
    fn the_meta_prompt_has_both_places_and_values_are_not_filled_again() {
        assert!(META_PROMPT.contains("{instructions}") && META_PROMPT.contains("{failures}"));
        assert_eq!(
            fill("{instructions} / {failures}", "{failures}", "x"),
            "{failures} / x"
        );
    }

    #[test]
    fn proposals_are_read_from_tags_or_the_first_paragraph() {
        let check = |text: &str, expected: Result<&[&str], &'static str>| {
            let expected = expected.map(|list| list.iter().map(|s| s.to_string()).collect());
            assert_eq!(parse_proposal(text), expected, "{text:?}");
        };
        check(
            "Here: <INS>Think, then answer.</INS> Done.",
            Ok(&["Think, then answer."]),
        );
        check("<ins> \"Solve it in steps.\"", Ok(&["Solve it in steps."]));
        check(
            "Instruction: Check each number.\n\nThis helps because…",
            Ok(&["Check each number."]),
        );
        check("<INS></INS>", Err("no instruction in it"));
        // A copy of the list first, then its own: both, in order (the search takes the
        // first it has not tried).
        check(
            "<INS>Be exact.</INS>\nscore: 50%\n<INS>Check the units.</INS>",
            Ok(&["Be exact.", "Check the units."]),
        );
        check("Be exact.\nscore: 50%", Err("it copies the scored list"));
        check(&"a".repeat(601), Err("longer than 600 characters"));
        assert_eq!(clip_start("abcdef", 3), "…def");
        assert_eq!(
            same_key("Think step-by-step!"),
            same_key("think step by step")
        );
    }

    #[test]
    fn a_bad_start_or_folder_is_an_error_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let systems = Shouters(Arc::new(Mutex::new(0)));
        let proposer = Louder(Mutex::new(Vec::new()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let search = Search::new(
            examples(1..=2),
            Metric::parse("numeric").unwrap(),
            dir.path(),
        );
        let err = runtime
            .block_on(search.run("  ", &systems, &proposer, &()))
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("the starting instruction is empty"),
            "{err}"
        );
        let empty = Search::new(Vec::new(), Metric::parse("numeric").unwrap(), dir.path());
        let err = runtime
            .block_on(empty.run("Go!", &systems, &proposer, &()))
            .unwrap_err();
        assert!(
            err.to_string().ends_with("no train examples to search on"),
            "{err}"
        );
        // A corrupt round file is named, not overwritten.
        std::fs::write(dir.path().join("round-1.json"), "{").unwrap();
        let err = runtime
            .block_on(search.run("Go please", &systems, &proposer, &()))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("round-1.json: not a round file of a search"),
            "{err}"
        );
    }
}
