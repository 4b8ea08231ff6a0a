//! Self-consistency: the task solved by several independent samples, their answers
//! normalised and voted.
//!
//! Each sample is a full agent run (tools included, each with state of its own — its
//! own Python session) with a seed of its own; with a greedy agent the first sample
//! is the greedy run and the others sample. On a
//! backend with branches the samples run at once, each on a branch forked from the
//! session's main one, so their prompts share the cached prefix and their tokens are
//! decoded in the same batches; elsewhere they run one after another on the session.

use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;

use super::code::numbers;
use super::events::{AgentEvent, AgentRun, StopReason};
use super::{Agent, Strategy};
use jielong_chat::generate::{SamplingParams, Usage};
use jielong_chat::model::{BranchId, ModelSession, OnBranch};

/// The temperature samples are drawn at when the agent's own sampling is greedy.
pub const SAMPLE_TEMPERATURE: f32 = 0.7;

/// Runs `agent`'s task as `samples` independent samples and votes.
pub(super) async fn run(
    agent: &Agent,
    session: &mut dyn ModelSession,
    task: &str,
    samples: usize,
) -> AgentRun {
    let started = Instant::now();
    let runs = sample_runs(agent, session, task, samples).await;
    let votes = Votes::count(agent, &runs);
    let winner = votes.ranked.first().map(|vote| vote.first);
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
    fold(agent, runs, winner, Usage::default(), started)
}

/// `samples` independent direct runs of `agent`'s task ([`sample_agent`]): at once on
/// branches of the session's main one where the backend has them, else one after
/// another on the session. In sample order.
pub(super) async fn sample_runs(
    agent: &Agent,
    session: &mut dyn ModelSession,
    task: &str,
    samples: usize,
) -> Vec<AgentRun> {
    let samples = samples.max(1);
    let agents: Vec<Agent> = (0..samples).map(|i| sample_agent(agent, i)).collect();
    let forked = session.capabilities().forks() && samples > 1;
    match forked.then(|| on_branches(session, samples)).transpose() {
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
            let mut runs = Vec::with_capacity(samples);
            for agent in &agents {
                runs.push(agent.run(session, task).await);
            }
            runs
        }
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

/// The samples' answers counted: each sample's [`AgentEvent::SampleAnswer`] is emitted
/// on the way.
#[derive(Debug, Clone, Default)]
pub(super) struct Votes {
    /// Every distinct answer, most votes first; among equals, the first to appear.
    pub ranked: Vec<Vote>,
    /// Samples without an answer.
    pub abstained: usize,
}

impl Votes {
    pub(super) fn count(agent: &Agent, runs: &[AgentRun]) -> Votes {
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
            agent.emit(AgentEvent::SampleAnswer {
                sample: i + 1,
                answer,
                vote: key,
                stop: run.stop.clone(),
            });
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

/// The agent of sample `i`: the direct strategy, tools with state of their own,
/// events tagged with the sample. When the agent decodes greedily, the first sample
/// does too (it is the direct run's answer, and wins ties) and the others sample at
/// [`SAMPLE_TEMPERATURE`]; an agent that samples already gives each sample a seed of
/// its own.
fn sample_agent(agent: &Agent, i: usize) -> Agent {
    let mut settings = agent.settings.clone();
    settings.strategy = Strategy::Direct;
    let base = &agent.settings.sampling;
    if !(base.is_greedy() && i == 0) {
        settings.sampling = SamplingParams {
            temperature: if base.is_greedy() {
                SAMPLE_TEMPERATURE
            } else {
                base.temperature
            },
            seed: base.seed.wrapping_add(1 + i as u32),
            ..base.clone()
        };
    }
    let events = agent.events.clone().map(|handler| {
        let sample = i + 1;
        Arc::new(move |event: &AgentEvent| {
            handler(&AgentEvent::Sample {
                sample,
                event: Box::new(event.clone()),
            })
        }) as super::EventHandler
    });
    Agent {
        prompts: agent.prompts.clone(),
        tools: agent.tools.isolated(),
        format: agent.format,
        settings,
        events,
        thoughts: agent.thoughts.clone(),
    }
}

/// Folds the samples' runs into one: the answer and transcript of sample `chosen`
/// (`None`: no sample answered; the first one's transcript), the usage of all of them
/// plus `extra` (a judge's), and the run's end events.
pub(super) fn fold(
    agent: &Agent,
    runs: Vec<AgentRun>,
    chosen: Option<usize>,
    extra: Usage,
    started: Instant,
) -> AgentRun {
    let mut usage = extra;
    for run in &runs {
        usage.accumulate(&run.usage);
    }
    let steps = runs.iter().map(|r| r.steps).sum();
    let tool_calls = runs.iter().map(|r| r.tool_calls).sum();
    let distinct = runs
        .iter()
        .map(|r| r.distinct_prompt_tokens)
        .max()
        .unwrap_or(0);
    let winner = chosen
        .and_then(|i| runs.get(i))
        .and_then(|r| r.answer.clone());
    let mut runs = runs;
    let pick = chosen.unwrap_or(0).min(runs.len().saturating_sub(1));
    let base = if runs.is_empty() {
        None
    } else {
        Some(runs.swap_remove(pick))
    };
    let (answer, stop, transcript) = match base {
        Some(run) if winner.is_some() => (winner, StopReason::Answered, run.transcript),
        Some(run) => (None, run.stop, run.transcript),
        None => (None, StopReason::MaxSteps, Vec::new()),
    };
    agent.finish(AgentRun {
        answer,
        stop,
        transcript,
        usage,
        distinct_prompt_tokens: distinct,
        steps,
        tool_calls,
        elapsed: started.elapsed(),
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
