//! Sampling: the task worked by several runs of inner strategies (taken in turn), one
//! answer picked among theirs — by vote (self-consistency, and the vote across ways
//! of answering) or by the model as judge ([`super::judge`]); all runs drawn at once,
//! or adaptively, more only while the answers disagree.
//!
//! Each sample is a full agent run (tools included, each with state of its own — its
//! own Python session) with a seed of its own; with a greedy agent the first sample
//! of each way is greedy and the others sample. On a backend with branches the
//! samples of a round run at once, each on a branch forked from the session's main
//! one, so their prompts share the cached prefix and their tokens are decoded in the
//! same batches; elsewhere they run one after another on the session.

use std::time::Instant;

use futures::future::join_all;

use super::compose::Figures;
use super::events::{AgentEvent, AgentRun, StopReason};
use super::strategy::{Draw, Pick, Sample};
use super::Agent;
use super::{check, judge};
use jielong_chat::generate::{SamplingParams, Usage};
use jielong_chat::model::{BranchId, ModelSession, OnBranch};
use jielong_chat::numbers::numbers;

/// The temperature samples are drawn at when the agent's own sampling is greedy.
pub const SAMPLE_TEMPERATURE: f32 = 0.7;

/// How far the leading answer must be ahead of the next for an adaptive draw to stop
/// before `n` (when the answers do not all agree).
const LEAD: usize = 2;

/// Runs `agent`'s task as `sample` says and picks the answer.
pub(super) async fn run(
    agent: &Agent,
    session: &mut dyn ModelSession,
    task: &str,
    sample: &Sample,
) -> AgentRun {
    let started = Instant::now();
    let mut runs = Vec::new();
    let round = match sample.draw {
        Draw::All => sample.n,
        Draw::Adaptive => sample.of.len().min(sample.n),
    };
    loop {
        let count = round.min(sample.n - runs.len());
        let drawn = sample_runs(agent, session, task, sample, runs.len(), count).await;
        announce(agent, &drawn, runs.len());
        runs.extend(drawn);
        if runs.len() >= sample.n || settled(&Votes::count(&runs)) {
            break;
        }
    }
    let votes = Votes::count(&runs);
    let winner = preferred(&votes, &runs);
    agent.emit(AgentEvent::Tally {
        votes: votes
            .ranked
            .iter()
            .map(|v| (v.key.clone(), v.count))
            .collect(),
        abstained: votes.abstained,
        winner: winner.and_then(|i| runs[i].answer.clone()),
        tie: votes.ranked.len() > 1 && votes.ranked[0].count == votes.ranked[1].count,
    });
    let (chosen, extra) = match sample.pick {
        Pick::Vote => (winner, Figures::default()),
        Pick::Judge => {
            let (chosen, usage) = judge::pick(agent, session, task, &runs, &votes).await;
            let figures = Figures {
                usage,
                ..Figures::default()
            };
            (chosen, figures)
        }
        Pick::Check => check::pick(agent, session, task, &runs, &votes).await,
    };
    fold(agent, runs, chosen, extra, started)
}

/// The run whose answer wins the vote: the most votes; among equals, an answer a run
/// that called tools (a computed result) gave, else the first to appear.
fn preferred(votes: &Votes, runs: &[AgentRun]) -> Option<usize> {
    let top = votes.ranked.first()?.count;
    let tied = votes.ranked.iter().take_while(|v| v.count == top);
    let computed = |vote: &&Vote| {
        runs.iter().position(|r| {
            r.tool_calls > 0
                && r.stop.is_answered()
                && r.answer.as_deref().and_then(vote_key).as_deref() == Some(vote.key.as_str())
        })
    };
    tied.clone()
        .find_map(|vote| computed(&vote))
        .or_else(|| votes.ranked.first().map(|vote| vote.first))
}

/// Whether an adaptive draw can stop: at least two answers, all the same, or the
/// leader [`LEAD`] votes ahead of the next.
fn settled(votes: &Votes) -> bool {
    match votes.ranked.as_slice() {
        [] => false,
        [only] => only.count >= 2,
        [first, second, ..] => first.count >= second.count + LEAD,
    }
}

/// Samples `from..from + count` of `sample`: at once on branches of the session's
/// main one where the backend has them, else one after another on the session. In
/// sample order.
async fn sample_runs(
    agent: &Agent,
    session: &mut dyn ModelSession,
    task: &str,
    sample: &Sample,
    from: usize,
    count: usize,
) -> Vec<AgentRun> {
    let agents: Vec<Agent> = (from..from + count)
        .map(|i| sample_agent(agent, sample, i))
        .collect();
    let forked = session.capabilities().forks() && count > 1;
    match forked.then(|| on_branches(session, count)).transpose() {
        Ok(Some(mut handles)) => {
            let runs = join_all(
                agents
                    .iter()
                    .zip(handles.iter_mut())
                    .map(|(agent, handle)| agent.run(handle, task)),
            )
            .await;
            for handle in &handles {
                let _ = session.drop_branch(handle.branch());
            }
            runs
        }
        // No branches (or no room for them): one sample after another.
        _ => {
            let mut runs = Vec::with_capacity(count);
            for agent in &agents {
                runs.push(agent.run(session, task).await);
            }
            runs
        }
    }
}

/// Emits each run's [`AgentEvent::SampleAnswer`] (`from`: the index of the first).
fn announce(agent: &Agent, runs: &[AgentRun], from: usize) {
    for (i, run) in runs.iter().enumerate() {
        let answer = run.answer.clone().filter(|_| run.stop.is_answered());
        agent.emit(AgentEvent::SampleAnswer {
            sample: from + i + 1,
            vote: answer.as_deref().and_then(vote_key),
            answer,
            stop: run.stop.clone(),
        });
    }
}

/// One normalised answer of the samples ([`vote_key`]).
#[derive(Debug, Clone)]
pub(super) struct Vote {
    /// The normalised answer.
    pub key: String,
    /// How many samples gave it.
    pub count: usize,
    /// The first sample (index) that gave it.
    pub first: usize,
}

/// The samples' answers counted.
#[derive(Debug, Clone, Default)]
pub(super) struct Votes {
    /// Every distinct answer, most votes first; among equals, the first to appear.
    pub ranked: Vec<Vote>,
    /// Samples without an answer.
    pub abstained: usize,
}

impl Votes {
    pub(super) fn count(runs: &[AgentRun]) -> Votes {
        let mut votes = Votes::default();
        for (i, run) in runs.iter().enumerate() {
            let answer = run.answer.clone().filter(|_| run.stop.is_answered());
            let key = answer.as_deref().and_then(vote_key);
            match &key {
                Some(key) => match votes.ranked.iter_mut().find(|v| &v.key == key) {
                    Some(vote) => vote.count += 1,
                    None => votes.ranked.push(Vote {
                        key: key.clone(),
                        count: 1,
                        first: i,
                    }),
                },
                None => votes.abstained += 1,
            }
        }
        votes
            .ranked
            .sort_by(|a, b| b.count.cmp(&a.count).then(a.first.cmp(&b.first)));
        votes
    }
}

/// One handle per sample, each on a fresh branch of the main one.
fn on_branches(
    session: &mut dyn ModelSession,
    samples: usize,
) -> Result<Vec<OnBranch>, jielong_chat::error::RuntimeError> {
    let branches = session.fork(BranchId::MAIN, samples)?;
    let mut handles = Vec::with_capacity(samples);
    for &branch in &branches {
        match session.share() {
            Ok(handle) => handles.push(OnBranch::new(handle, branch)),
            Err(error) => {
                for &branch in &branches {
                    let _ = session.drop_branch(branch);
                }
                return Err(error);
            }
        }
    }
    Ok(handles)
}

/// The agent of sample `i`: way `i % len` of the sample's strategies, tools with
/// state of their own, events tagged with the sample. When the agent decodes
/// greedily, the first sample of each way does too (the way's own answer; the first
/// wins ties) and the others sample at [`SAMPLE_TEMPERATURE`]; an agent that samples
/// already gives each sample a seed of its own.
fn sample_agent(agent: &Agent, sample: &Sample, i: usize) -> Agent {
    let way = i % sample.of.len();
    let strategy = sample.of[way].clone();
    let first_of_its_way = i == way && !sample.of[..way].contains(&strategy);
    let sample_number = i + 1;
    let mut derived = agent.derived(strategy, agent.tools.isolated(), move |event| {
        Some(AgentEvent::Sample {
            sample: sample_number,
            event: Box::new(event),
        })
    });
    let base = &agent.settings.sampling;
    if !(base.is_greedy() && first_of_its_way) {
        derived.settings.sampling = SamplingParams {
            temperature: if base.is_greedy() {
                SAMPLE_TEMPERATURE
            } else {
                base.temperature
            },
            seed: base.seed.wrapping_add(1 + i as u32),
            ..base.clone()
        };
    }
    derived
}

/// Folds the samples' runs into one: the answer and transcript of sample `chosen`
/// (`None`: no sample answered; the first one's transcript), the figures of all of
/// them plus `extra` (a judge's or the checkers'), and the run's end events.
pub(super) fn fold(
    agent: &Agent,
    runs: Vec<AgentRun>,
    chosen: Option<usize>,
    extra: Figures,
    started: Instant,
) -> AgentRun {
    let mut figures = extra;
    for run in &runs {
        figures.add(run);
    }
    let winner = chosen
        .and_then(|i| runs.get(i))
        .and_then(|r| r.answer.clone());
    let unbacked = chosen.and_then(|i| unbacked(&runs, i));
    let mut runs = runs;
    let pick = chosen.unwrap_or(0).min(runs.len().saturating_sub(1));
    let base = if runs.is_empty() {
        None
    } else {
        Some(runs.swap_remove(pick))
    };
    let (answer, stop, transcript, unverified) = match base {
        Some(run) if winner.is_some() => (
            winner,
            StopReason::Answered,
            run.transcript,
            run.unverified.or(unbacked),
        ),
        Some(run) => (None, run.stop, run.transcript, None),
        None => (None, StopReason::MaxSteps, Vec::new(), None),
    };
    agent.finish(figures.into_run(AgentRun {
        answer,
        stop,
        transcript,
        usage: Usage::default(),
        distinct_prompt_tokens: 0,
        steps: 0,
        tool_calls: 0,
        elapsed: started.elapsed(),
        unverified,
    }))
}

/// Why the answer of sample `chosen` is unverified, when samples ran tools (a
/// program) and none of them gave that answer: their answers differ, or none got to
/// one. `None` when one of them agrees, or no sample called a tool.
fn unbacked(runs: &[AgentRun], chosen: usize) -> Option<String> {
    let key = runs.get(chosen)?.answer.as_deref().and_then(vote_key)?;
    let tooled: Vec<&AgentRun> = runs.iter().filter(|r| r.tool_calls > 0).collect();
    if tooled.is_empty() {
        return None;
    }
    let keys: Vec<String> = tooled
        .iter()
        .filter(|r| r.stop.is_answered())
        .filter_map(|r| r.answer.as_deref().and_then(vote_key))
        .collect();
    if keys.contains(&key) {
        return None;
    }
    Some(if keys.is_empty() {
        "no program got to an answer".to_string()
    } else {
        format!("the programs' answers differ ({})", keys.join(", "))
    })
}

/// What an answer votes for: its last number (so "18", "$18.00" and "The answer is
/// 18." agree), else its text lowercased with punctuation and extra spaces removed.
/// `None` for an empty answer.
pub fn vote_key(answer: &str) -> Option<String> {
    if let Some(&last) = numbers(answer).last() {
        return Some(number_key(last));
    }
    let text: String = answer
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

/// A number as a voting key: integers without a decimal point, others rounded to six
/// places without trailing zeros.
fn number_key(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 && value.abs() < 1e15 {
        return format!("{}", value.round() as i64);
    }
    let text = format!("{value:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_vote_by_their_last_number_or_their_words() {
        let check = |answer: &str, key: Option<&str>| {
            assert_eq!(vote_key(answer).as_deref(), key, "{answer:?}");
        };
        check("18", Some("18"));
        check("$18.00", Some("18"));
        check("The answer is 18.", Some("18"));
        check("She pays 3 * 6 = 18 dollars", Some("18"));
        check("1,234 apples", Some("1234"));
        check("0.5", Some("0.5"));
        check("-4", Some("-4"));
        check("  Paris. ", Some("paris"));
        check("PARIS", Some("paris"));
        check("", None);
        check("  ...  ", None);
    }
}
