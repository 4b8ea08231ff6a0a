//! Picking a sample's answer by checking it ([`Pick::Check`](crate::Pick::Check)):
//! each distinct answer (the [`MAX_JUDGED`] with the most votes) is worked again by
//! the other way of answering — a program checks an answer written without one, the
//! model in writing checks a program's — told the answer ([`PromptKind::Check`]);
//! an answer its checker arrives at again gains [`CHECK_WEIGHT`] votes, and the
//! answer with the most votes then wins (the vote's order between equals).

use super::compose::Figures;
use super::consistency::{vote_key, Votes};
use super::events::{AgentEvent, AgentRun};
use super::judge::MAX_JUDGED;
use super::prompts::fill;
use super::strategy::{Strategy, CHECK_WEIGHT};
use super::Agent;
use jielong_chat::model::ModelSession;

/// Checks the distinct answers of `runs` (counted in `votes`): the run whose answer
/// wins, and what the checkers spent.
pub(super) async fn pick(
    agent: &Agent,
    session: &mut dyn ModelSession,
    task: &str,
    runs: &[AgentRun],
    votes: &Votes,
) -> (Option<usize>, Figures) {
    let mut figures = Figures::default();
    let mut best: Option<(usize, usize)> = None;
    for (i, candidate) in votes.ranked.iter().take(MAX_JUDGED).enumerate() {
        let source = &runs[candidate.first];
        let answer = source.answer.clone().unwrap_or_default();
        // The other way of answering: a program for a written answer, and writing for
        // a program's.
        let way = if source.tool_calls > 0 {
            Strategy::Written
        } else {
            Strategy::Direct
        };
        let checker = agent.part(way.clone(), format!("check {}", i + 1));
        let message = fill(&agent.prompts.check, &[("task", task), ("answer", &answer)]);
        let run = checker.run(&mut *session, &message).await;
        figures.add(&run);
        let found = run
            .answer
            .filter(|_| run.stop.is_answered())
            .as_deref()
            .and_then(vote_key);
        let agreed = found.as_deref() == Some(candidate.key.as_str());
        agent.emit(AgentEvent::Checked {
            sample: candidate.first + 1,
            answer: candidate.key.clone(),
            checker: way.to_string(),
            found,
            agreed,
        });
        let score = candidate.count + if agreed { CHECK_WEIGHT } else { 0 };
        if best.map_or(true, |(_, top)| score > top) {
            best = Some((candidate.first, score));
        }
    }
    (best.map(|(first, _)| first), figures)
}
