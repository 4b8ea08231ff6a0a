//! The LLM judge of `jielong eval`: `--metric judge` (each answer rated against a
//! rubric) and `jielong eval pairwise A B` (two runs compared, each pair in both
//! orders).
//!
//! The judge is the plain model with the judge prompt's system message, run through
//! `jielong_eval::Eval` over the filled prompts (one cache per prompt in the output
//! folder), so an interrupted judging resumes and a re-run costs nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use jielong::eval::{
    apply_grades, pair_examples, single_examples, Eval, Example, JudgeKind, JudgePrompt, Metric,
    PairInputs, PairwiseReport, Report, Row, Transcript,
};
use jielong::ModelSession;
use tokio::sync::Mutex as AsyncMutex;

use super::eval::{cancel_on_ctrl_c, rows_path, Bar, PlainModel};
use crate::cli::{GlobalArgs, JudgeArgs, PairwiseArgs};

/// The default rubric.
const DEFAULT_RUBRIC: &str = include_str!("../../prompts/rubrics/default.md");

/// A judge: its model's session, the prompts and the rubric.
pub(super) struct Judge {
    global: GlobalArgs,
    session: Arc<AsyncMutex<Box<dyn ModelSession>>>,
    prompts: Vec<JudgePrompt>,
    prompt: String,
    rubric: String,
    pass: f64,
}

impl Judge {
    /// Reads the prompts and the rubric (failing before any model loads).
    pub(super) fn check(args: &JudgeArgs) -> anyhow::Result<(Vec<JudgePrompt>, String)> {
        let prompts = match &args.judge_prompts {
            Some(path) => JudgePrompt::load(path)?,
            None => JudgePrompt::builtin(),
        };
        if args.judge_prompt != "auto" && !prompts.iter().any(|p| p.name == args.judge_prompt) {
            let names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
            anyhow::bail!(
                "--judge-prompt {}: no such prompt (there are: {})",
                args.judge_prompt,
                names.join(", ")
            );
        }
        anyhow::ensure!(
            (0.0..=10.0).contains(&args.pass_score),
            "--pass-score {}: give a rating from 0 to 10",
            args.pass_score
        );
        let rubric = match &args.rubric {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the rubric {}", path.display()))?,
            None => DEFAULT_RUBRIC.to_string(),
        };
        anyhow::ensure!(
            !rubric.trim().is_empty(),
            "{}: the rubric is empty",
            args.rubric
                .as_deref()
                .map_or_else(|| "the rubric".into(), |p| p.display().to_string())
        );
        Ok((prompts, rubric))
    }

    /// The judge of `args`: its own model with `--judge-model`, else `shared` (the
    /// evaluated model's session) or `--model`.
    pub(super) async fn new(
        global: &GlobalArgs,
        args: &JudgeArgs,
        shared: Option<Arc<AsyncMutex<Box<dyn ModelSession>>>>,
    ) -> anyhow::Result<Judge> {
        let (prompts, rubric) = Judge::check(args)?;
        let own_model = args
            .judge_model
            .as_ref()
            .filter(|m| **m != global.model || shared.is_none());
        let global = GlobalArgs {
            model: args
                .judge_model
                .clone()
                .unwrap_or_else(|| global.model.clone()),
            // Verdicts are read, not sampled.
            temperature: 0.0,
            max_tokens: args.judge_max_tokens,
            stop: Vec::new(),
            ..global.clone()
        };
        let session = match (own_model, shared) {
            (None, Some(shared)) => shared,
            _ => {
                let model = super::load_model(&global).await?;
                let session = model.open_session(&super::session_options(&global))?;
                Arc::new(AsyncMutex::new(session))
            }
        };
        Ok(Judge {
            global,
            session,
            prompts,
            prompt: args.judge_prompt.clone(),
            rubric,
            pass: args.pass_score,
        })
    }

    /// The judge system for `prompt`.
    fn system(&self, prompt: &JudgePrompt) -> PlainModel {
        PlainModel::new(
            format!("judge:{}:{}", self.global.model, prompt.name),
            self.session.clone(),
            super::request(&self.global),
            Some(prompt.system(Some(&self.rubric))),
        )
    }

    /// The prompt `name` (checked by [`Judge::check`]).
    fn named(&self, name: &str) -> anyhow::Result<&JudgePrompt> {
        self.prompts
            .iter()
            .find(|p| p.name == name)
            .with_context(|| format!("no judge prompt `{name}`"))
    }

    /// Runs the judge over `examples` with `prompt`, cached in `cache` (removed first
    /// unless `resume`).
    async fn judge(
        &self,
        prompt: &JudgePrompt,
        examples: Vec<Example>,
        cache: &Path,
        resume: Resume,
        bar: &Bar,
    ) -> anyhow::Result<Report> {
        if resume == Resume::Fresh && cache.exists() {
            std::fs::remove_file(cache)
                .with_context(|| format!("cannot remove the old cache {}", cache.display()))?;
        }
        let system = self.system(prompt);
        let eval = Eval::new(examples, Metric::Judge)
            .cache(cache)
            .cancel(cancel_on_ctrl_c("eval"));
        let report = eval.run(&system, bar).await?;
        if report.interrupted {
            anyhow::bail!(
                "the judge was interrupted after {} of {} verdicts; `--resume` continues",
                report.rows.len(),
                report.total
            );
        }
        Ok(report)
    }

    /// Rates every answered row of `rows` (`examples` give the references), setting
    /// its judgement and verdict; caches go to `out/judge-PROMPT.jsonl`.
    pub(super) async fn grade(
        &self,
        rows: &mut [Row],
        examples: &[Example],
        out: &Path,
        resume: Resume,
    ) -> anyhow::Result<()> {
        let judged_metric = |row: &Row| {
            examples
                .iter()
                .find(|e| e.id == row.id)
                .and_then(|e| e.record.get("metric"))
                .and_then(|m| m.as_str())
                .map_or(true, |m| m == "judge")
        };
        // Transcripts grouped by the prompt that judges them.
        let mut groups: Vec<(String, Vec<Transcript>)> = Vec::new();
        for row in rows.iter().filter(|r| judged_metric(r)) {
            let Some(transcript) = Transcript::of_row(row) else {
                continue;
            };
            let transcript = match examples.iter().find(|e| e.id == row.id) {
                Some(example) => transcript.with_references(example),
                None => transcript,
            };
            let prompt =
                JudgePrompt::choose(&self.prompts, &self.prompt, JudgeKind::Single, &transcript)
                    .map_err(|m| anyhow::anyhow!("example `{}`: {m}", row.id))?;
            match groups.iter_mut().find(|(name, _)| *name == prompt.name) {
                Some((_, group)) => group.push(transcript),
                None => groups.push((prompt.name.clone(), vec![transcript])),
            }
        }
        let bar = Bar::new(self.global.verbose > 0);
        for (name, transcripts) in groups {
            let prompt = self.named(&name)?;
            let inputs = single_examples(prompt, Some(&self.rubric), &transcripts)?;
            let started = Instant::now();
            bar.println(format!(
                "judging {} answers with `{name}` on {}",
                inputs.len(),
                self.global.model
            ));
            let cache = out.join(format!("judge-{name}.jsonl"));
            let judged = self.judge(prompt, inputs, &cache, resume, &bar).await?;
            apply_grades(rows, &name, &judged, self.pass);
            bar.println(format!(
                "judged {} answers in {:.0} s",
                judged.rows.len(),
                started.elapsed().as_secs_f64()
            ));
        }
        bar.done();
        Ok(())
    }
}

/// Whether a judge reuses its cached verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resume {
    /// Judge everything again.
    Fresh,
    /// Reuse what the cache holds.
    Continue,
}

impl From<bool> for Resume {
    fn from(resume: bool) -> Resume {
        if resume {
            Resume::Continue
        } else {
            Resume::Fresh
        }
    }
}

/// Runs `jielong eval pairwise A B`.
pub(super) async fn pairwise(global: &GlobalArgs, args: PairwiseArgs) -> anyhow::Result<()> {
    Judge::check(&args.judge)?;
    let rows_a = Report::read_rows(&rows_path(&args.a))?;
    let rows_b = Report::read_rows(&rows_path(&args.b))?;
    let examples = match &args.data {
        Some(data) => {
            let fields = jielong::eval::Fields {
                input: args.input_field.clone(),
                answer: args.answer_field.clone(),
                ..Default::default()
            };
            jielong::eval::load_jsonl(data, &fields)?
        }
        None => Vec::new(),
    };
    let transcripts = |rows: &[Row]| -> Vec<Transcript> {
        rows.iter()
            .filter_map(|row| {
                let t = Transcript::of_row(row)?;
                Some(match examples.iter().find(|e| e.id == row.id) {
                    Some(example) => t.with_references(example),
                    None => t,
                })
            })
            .collect()
    };
    let (ta, tb) = (transcripts(&rows_a), transcripts(&rows_b));
    let judge = Judge::new(global, &args.judge, None).await?;
    let PairInputs { groups, unmatched } = pair_examples(&judge.prompts, &judge.prompt, &ta, &tb)?;
    anyhow::ensure!(
        !groups.is_empty(),
        "{} and {} have no answered example in common (same id and question)",
        args.a.display(),
        args.b.display()
    );
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.a, &args.b));
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the output folder {}", out.display()))?;
    let bar = Bar::new(global.verbose > 0);
    let mut judged = Vec::new();
    let mut names = Vec::new();
    for (name, inputs) in groups {
        let prompt = judge.named(&name)?;
        bar.println(format!(
            "judging {} pairs in both orders with `{name}` on {}",
            inputs.len() / 2,
            judge.global.model
        ));
        let cache = out.join(format!("pairwise-{name}.jsonl"));
        let report = judge
            .judge(prompt, inputs, &cache, args.resume.into(), &bar)
            .await?;
        names.push(report.system.clone());
        judged.extend(report.rows);
    }
    bar.done();
    let report = PairwiseReport::new(
        &args.a.display().to_string(),
        &args.b.display().to_string(),
        &names.join(", "),
        &ta,
        &judged,
        unmatched,
    );
    report.write_pairs(&out.join("pairs.jsonl"))?;
    report.write_summary(&out.join("pairwise.json"))?;
    println!("{report}");
    println!(
        "pairs: {}; summary: {}",
        out.join("pairs.jsonl").display(),
        out.join("pairwise.json").display()
    );
    Ok(())
}

/// `eval-out/pairwise.A-vs-B`, from the runs' folder (or file) names.
fn default_out(a: &Path, b: &Path) -> PathBuf {
    let name = |p: &Path| {
        let p = if p.is_dir() {
            p
        } else {
            p.parent().unwrap_or(p)
        };
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into())
    };
    PathBuf::from("eval-out").join(format!("pairwise.{}-vs-{}", name(a), name(b)))
}
