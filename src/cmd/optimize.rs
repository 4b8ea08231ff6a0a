//! `jielong optimize DATA.jsonl`: automatic prompt search. The search itself is
//! `jielong_eval::optimize`; this module gives it the CLI's systems (the plain model or
//! the agent, as `jielong eval` builds them, with each variant as the instruction), the
//! model as the proposer, and a progress display.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use futures::future::BoxFuture;
use futures::FutureExt;
use jielong::agent::{Framing, Wording};
use jielong::chat::{Chat, ChatRequest, Message};
use jielong::eval::optimize::rejected_counts;
use jielong::eval::{
    metric_for, Candidate, Observer, Proposer, Scored, Search, SearchObserver, System, Systems,
};
use jielong::{ModelSession, SamplingParams};
use tokio::sync::Mutex as AsyncMutex;

use super::eval::{cancel_on_ctrl_c, examples, Bar, Evaluated, Subset};
use crate::cli::{GlobalArgs, OptimizeArgs};

/// The most tokens a proposal may take.
const PROPOSAL_TOKENS: usize = 160;

/// Runs `jielong optimize`.
pub async fn optimize(global: &GlobalArgs, args: OptimizeArgs) -> anyhow::Result<()> {
    let eval = &args.eval;
    let data = eval
        .data
        .clone()
        .context("jielong optimize: give a dataset (DATA.jsonl)")?;
    let start = start_instruction(&args)?;
    let train = examples(eval, &data, eval.split.as_deref(), Subset::Sampled)?;
    let holdout = match &args.holdout {
        Some(split) => examples(eval, &data, Some(split), Subset::Whole)?,
        None => Vec::new(),
    };
    let train_ids: HashSet<&str> = train.iter().map(|e| e.id.as_str()).collect();
    if let Some(shared) = holdout.iter().find(|e| train_ids.contains(e.id.as_str())) {
        anyhow::bail!(
            "the held-out split {} shares example `{}` with the split searched on; held-out examples must be new",
            args.holdout.as_deref().unwrap_or_default(),
            shared.id
        );
    }
    let metrics = jielong::metrics();
    let metric = metrics.parse(&eval.metric)?;
    for example in train.iter().chain(&holdout) {
        metric_for(example, &metric, &metrics)?;
    }
    let out = eval.out.clone().unwrap_or_else(|| default_out(&data));
    if !eval.resume && holds_a_search(&out) {
        anyhow::bail!(
            "{} already holds a search; `--resume` continues it, or give another --out",
            out.display()
        );
    }

    let base = super::framing(&eval.framing, &eval.input_field, &eval.answer_field)?;
    let evaluated = Evaluated::new(global, eval, &train, &out).await?;
    let systems = Variants { evaluated, base };
    let session = match &args.proposer {
        Some(reference) => {
            let global = GlobalArgs {
                model: reference.clone(),
                ..global.clone()
            };
            let model = super::load_model(&global).await?;
            let session = model.open_session(&super::session_options(&global))?;
            Arc::new(AsyncMutex::new(session))
        }
        None => systems.evaluated.session(),
    };
    let proposer = ModelProposer {
        session,
        temperature: args.proposal_temperature,
        seed: global.seed,
    };
    let search = Search::new(train, metric, &out)
        .metrics(metrics)
        .holdout(holdout)
        .rounds(args.rounds)
        .proposals(args.proposals as usize)
        .failures_shown(args.failures)
        .cancel(cancel_on_ctrl_c("optimize"));
    let display = Display {
        bar: Bar::new(global.verbose > 0),
    };
    let report = search.run(&start, &systems, &proposer, &display).await?;
    display.bar.done();

    println!("{}", report.to_markdown());
    if let (Some(start), Some(best)) = (report.start(), report.best()) {
        println!(
            "start {} right on the search split, best {} ({}).",
            score(start, Split::Train),
            score(best, Split::Train),
            best.candidate.id
        );
        if best.holdout.is_some() {
            println!(
                "held out: start {}, best {}.",
                score(start, Split::Holdout),
                score(best, Split::Holdout)
            );
        }
    }
    println!(
        "best instruction: {} (use it with --instruction-file); report: {}",
        out.join("best.md").display(),
        out.join("report.md").display()
    );
    if report.interrupted {
        anyhow::bail!("interrupted; `--resume` continues the search");
    }
    Ok(())
}

/// The instruction the search starts from: `--instruction`, `--instruction-file`, or a
/// technique's template.
fn start_instruction(args: &OptimizeArgs) -> anyhow::Result<String> {
    let framing = &args.eval.framing;
    if let Some(text) = &framing.instruction {
        return Ok(text.clone());
    }
    if let Some(path) = &framing.instruction_file {
        return std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the instruction file {}", path.display()));
    }
    framing
        .technique
        .template()
        .map(|t| t.trim().to_string())
        .context(
            "give the instruction to start from: --instruction TEXT, --instruction-file FILE or --technique NAME",
        )
}

fn default_out(data: &Path) -> PathBuf {
    let stem = data
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    PathBuf::from("optimize-out").join(stem)
}

/// Whether `dir` has a search's files in it.
fn holds_a_search(dir: &Path) -> bool {
    dir.join("candidates").exists() || dir.join("report.json").exists()
}

/// Every variant as the instruction of the system `jielong eval` would build.
struct Variants {
    evaluated: Evaluated,
    /// The framing of the options (its worked examples are kept for every variant).
    base: Framing,
}

impl Systems for Variants {
    fn system(&self, instruction: &str) -> Result<Box<dyn System + '_>, String> {
        Ok(self.evaluated.system(Framing {
            wording: Wording::Instruction(instruction.to_string()),
            shots: self.base.shots.clone(),
        }))
    }
}

/// The model writes the variants: the meta-prompt as the user's message, sampled once
/// per variant with seeds `seed + 1000 × round + i`.
struct ModelProposer {
    session: Arc<AsyncMutex<Box<dyn ModelSession>>>,
    temperature: f32,
    seed: u32,
}

impl Proposer for ModelProposer {
    fn propose<'a>(
        &'a self,
        prompt: &'a str,
        count: usize,
        round: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        async move {
            let chat = Chat::new(vec![Message::user(prompt)]);
            let mut session = self.session.lock().await;
            let mut texts = Vec::with_capacity(count);
            for i in 0..count {
                let offset = (1000 * round + i) as u32;
                let request = ChatRequest {
                    max_tokens: PROPOSAL_TOKENS,
                    sampling: SamplingParams {
                        temperature: self.temperature,
                        seed: self.seed.wrapping_add(offset),
                        ..SamplingParams::default()
                    },
                    ..Default::default()
                };
                let generation = session
                    .respond(&chat, &request)
                    .map_err(|e| e.to_string())?;
                let completion = generation.finish(|_| {}).await.map_err(|e| e.to_string())?;
                texts.push(completion.text);
            }
            Ok(texts)
        }
        .boxed()
    }
}

/// The progress bar of each evaluation, and a line per variant and round.
struct Display {
    bar: Bar,
}

#[derive(Clone, Copy)]
enum Split {
    Train,
    Holdout,
}

fn score(scored: &Scored, split: Split) -> String {
    let summary = match split {
        Split::Train => Some(&scored.train),
        Split::Holdout => scored.holdout.as_ref(),
    };
    match summary {
        Some(s) => format!("{}/{} ({:.1}%)", s.correct, s.graded, 100.0 * s.accuracy),
        None => "—".to_string(),
    }
}

impl SearchObserver for Display {
    fn examples(&self) -> &dyn Observer {
        &self.bar
    }

    fn evaluating(&self, candidate: &Candidate, split: &str) {
        self.bar.println(format!(
            "[round {}] `{}` on the {split} split: {}",
            candidate.round,
            candidate.id,
            super::run::one_line(&candidate.text, 100)
        ));
    }

    fn scored(&self, scored: &Scored) {
        self.bar.println(format!(
            "  `{}`: {} right, p50 {:.1} s",
            scored.candidate.id,
            score(scored, Split::Train),
            scored.train.latency_p50
        ));
    }

    fn proposed(&self, round: usize, kept: &[Candidate], rejected: &[(String, String)]) {
        let mut line = format!("[round {round}] {} new variants", kept.len());
        for (reason, count) in rejected_counts(rejected) {
            line.push_str(&format!("; {count} left out: {reason}"));
        }
        self.bar.println(line);
    }
}
