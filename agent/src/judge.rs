//! Best-of-N with a judge: the task solved by several independent samples (as for
//! self-consistency), then the model judges their distinct answers pairwise and the
//! best-ranked one is the answer.
//!
//! Each pair of candidates is judged twice, once in each order, so a judge that
//! prefers whatever it sees first (small models do) cancels out. The judge is the same
//! model on the same session, prompted with [`PromptKind::Judge`] and the two
//! candidates' work (their replies and tool results, the end of them when long); its
//! reply's first token is read as `A` or `B`, as probabilities where the backend
//! reports log-probabilities. A pair is won when the preference, averaged over both
//! orders, is more than [`MIN_MARGIN`] from even; a candidate's score is the pairs it
//! won, and equal scores go to the answer with more votes, then to the one that
//! appeared first (the greedy sample's). A judge that cannot tell the candidates apart
//! thus leaves the vote's winner (on the default model it mostly cannot: it prefers
//! whatever it is shown first, which the two orders cancel).

use super::consistency::Votes;
use super::events::{AgentEvent, AgentRun};
use super::prompts::{fill, PromptKind, Prompts};
use super::Agent;
use jielong_chat::chat::{Message, Role};
use jielong_chat::error::RuntimeError;
use jielong_chat::generate::{Completion, SamplingParams, ToolChoice, Usage};
use jielong_chat::logprob::MAX_TOP_LOGPROBS;
use jielong_chat::model::ModelSession;
use jielong_chat::respond::{Chat, ChatRequest};

/// The most distinct answers the judge compares (those with the most votes): the
/// comparisons grow with the square of their number.
pub const MAX_JUDGED: usize = 4;

/// How far from even (0.5) a pair's preference, averaged over both orders, must be
/// for the pair to count as won.
pub const MIN_MARGIN: f32 = 0.1;

/// The most characters of a candidate's work shown to the judge (its end is kept:
/// that is where the result and the answer are).
const MAX_WORK_CHARS: usize = 1500;

/// Lets the model judge the distinct answers of `runs` (counted in `votes`): the run
/// whose answer ranks first, and the judge's tokens.
pub(super) async fn pick(
    agent: &Agent,
    session: &mut dyn ModelSession,
    task: &str,
    runs: &[AgentRun],
    votes: &Votes,
) -> (Option<usize>, Usage) {
    let candidates: Vec<_> = votes.ranked.iter().take(MAX_JUDGED).collect();
    let shots = agent.settings.framing.shots.0.len();
    let work: Vec<String> = candidates
        .iter()
        .map(|c| work(&runs[c.first], shots))
        .collect();
    let judge = Judge::from_prompts(&agent.prompts);
    let n = candidates.len();
    // preference[a][b]: candidate a shown as A against b. Calls are grouped by the
    // candidate shown first, so consecutive prompts share it as a cached prefix.
    let mut preference = vec![vec![None; n]; n];
    let mut usage = Usage::default();
    let mut error = None;
    'calls: for a in 0..n {
        for b in (0..n).filter(|&b| b != a) {
            match judge.prefer(session, task, &work[a], &work[b]).await {
                Ok(judgement) => {
                    usage.accumulate(&judgement.usage);
                    agent.emit(AgentEvent::Judged {
                        first: candidates[a].first + 1,
                        second: candidates[b].first + 1,
                        preference: judgement.preference,
                    });
                    preference[a][b] = Some(judgement);
                }
                Err(e) => {
                    error = Some(e.to_string());
                    break 'calls;
                }
            }
        }
    }
    // A pair is won only when both orders, averaged, favour one side by more than
    // `MIN_MARGIN`: a judge that cannot tell them apart leaves the vote's order.
    let mut scores = vec![0.0f32; n];
    for i in 0..n {
        for j in i + 1..n {
            let (Some(forward), Some(backward)) =
                (preference[i][j].take(), preference[j][i].take())
            else {
                continue;
            };
            let comparison = Comparison { forward, backward };
            let won = comparison.preference();
            if won > 0.5 + MIN_MARGIN {
                scores[i] += 1.0;
            } else if won < 0.5 - MIN_MARGIN {
                scores[j] += 1.0;
            }
        }
    }
    // Best score first; `candidates` is in vote order, so a stable sort breaks ties by
    // votes, then by first appearance.
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let chosen = order.first().map(|&k| candidates[k].first);
    agent.emit(AgentEvent::Ranking {
        candidates: order
            .iter()
            .map(|&k| (candidates[k].key.clone(), candidates[k].count, scores[k]))
            .collect(),
        winner: chosen.and_then(|i| runs[i].answer.clone()),
        error,
    });
    (chosen, usage)
}

/// A pairwise judge: the model behind a session, asked with a prompt
/// ([`PromptKind::Judge`]: `{task}`, `{first}`, `{second}`) which of two solutions
/// answers a task, greedily; the first token of its reply is read as `A` (the first)
/// or `B`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judge {
    prompt: String,
}

/// One judgement of two solutions in one order.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The probability that the solution shown first (A) is the right one: from the
    /// first token's log-probabilities of `A` against `B` where the backend reports
    /// them, else 1 or 0 by the letter written; `None` when the judge named neither.
    pub preference: Option<f32>,
    /// The judge call's tokens and times.
    pub usage: Usage,
}

/// Two solutions judged in both orders, so a preference for whatever is shown first
/// cancels out.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The first solution shown as A.
    pub forward: Judgement,
    /// The second solution shown as A.
    pub backward: Judgement,
}

impl Comparison {
    /// The probability that the first solution is the right one, averaged over both
    /// orders (a judgement without a preference counts as 0.5).
    pub fn preference(&self) -> f32 {
        let forward = self.forward.preference.unwrap_or(0.5);
        let backward = self.backward.preference.unwrap_or(0.5);
        (forward + 1.0 - backward) / 2.0
    }
}

impl Judge {
    /// A judge asked with `prompt` (placeholders `{task}`, `{first}`, `{second}`).
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
        }
    }

    /// The judge of an agent's prompts ([`PromptKind::Judge`]).
    pub fn from_prompts(prompts: &Prompts) -> Self {
        Self::new(prompts.get(PromptKind::Judge))
    }

    /// Judges `first` (shown as A) against `second` (B) for `task`, on the session's
    /// main branch.
    pub async fn prefer(
        &self,
        session: &mut dyn ModelSession,
        task: &str,
        first: &str,
        second: &str,
    ) -> Result<Judgement, RuntimeError> {
        let prompt = fill(
            &self.prompt,
            &[("task", task), ("first", first), ("second", second)],
        );
        let chat = Chat::new(vec![Message::user(prompt)]);
        let completion = one_token_reply(session, &chat).await?;
        Ok(Judgement {
            preference: preference(&completion),
            usage: completion.usage,
        })
    }

    /// Judges `first` against `second` in both orders.
    pub async fn compare(
        &self,
        session: &mut dyn ModelSession,
        task: &str,
        first: &str,
        second: &str,
    ) -> Result<Comparison, RuntimeError> {
        let forward = self.prefer(session, task, first, second).await?;
        let backward = self.prefer(session, task, second, first).await?;
        Ok(Comparison { forward, backward })
    }
}

/// The greedy reply to `chat` of a one-word question (a judge's letter, an
/// evaluator's label): one token with its top log-probabilities where the backend
/// reports them, else a few tokens of text (room for a leading space or mark).
pub(super) async fn one_token_reply(
    session: &mut dyn ModelSession,
    chat: &Chat,
) -> Result<Completion, RuntimeError> {
    let logprobs = session.capabilities().logprobs;
    let request = ChatRequest {
        max_tokens: if logprobs { 1 } else { 3 },
        sampling: SamplingParams::greedy(),
        tool_choice: ToolChoice::None,
        logprobs: logprobs.then_some(MAX_TOP_LOGPROBS),
        ..ChatRequest::default()
    };
    session.respond(chat, &request)?.finish(|_| {}).await
}

/// The first generated token's alternatives, each with its probability: the top
/// alternatives the backend reported, or the chosen token alone when it reported none
/// (empty without log-probabilities). What one-token judges and evaluators read.
pub(super) fn first_token(completion: &Completion) -> Vec<(&str, f32)> {
    let Some(first) = completion.logprobs.first() else {
        return Vec::new();
    };
    first
        .top
        .iter()
        .chain(first.top.is_empty().then_some(&first.chosen))
        .map(|token| (token.token.as_str(), token.logprob.exp()))
        .collect()
}

/// The probability of `A` against `B` in a judge's reply: from the first token's
/// alternatives when it has them, else 1 or 0 by the letter it wrote.
fn preference(completion: &Completion) -> Option<f32> {
    let (mut a, mut b) = (0.0f32, 0.0f32);
    for (token, p) in first_token(completion) {
        match letter(token) {
            Some('A') => a += p,
            Some('B') => b += p,
            _ => {}
        }
    }
    if a + b > 0.0 {
        return Some(a / (a + b));
    }
    match letter(&completion.text) {
        Some('A') => Some(1.0),
        Some('B') => Some(0.0),
        _ => None,
    }
}

/// `A` or `B` when `text` starts with that letter as a word (after spaces and marks
/// such as `**` or `(`): "A", " B", "(A)"; not "Answer" or "Both".
fn letter(text: &str) -> Option<char> {
    let text = text.trim_start_matches(|c: char| c.is_whitespace() || "*(\"'[".contains(c));
    let mut chars = text.chars();
    let first = chars.next()?;
    let word = chars.next().map_or(true, |c| !c.is_alphanumeric());
    (word && matches!(first, 'A' | 'B')).then_some(first)
}

/// What the judge sees of a run: its replies and tool results after the task (the
/// `shots` worked examples before it and the agent's own nudges left out), the end of
/// them when long.
fn work(run: &AgentRun, shots: usize) -> String {
    let task = run
        .transcript
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == Role::User)
        .nth(shots)
        .map(|(i, _)| i);
    let after = task.map_or(&run.transcript[..0], |i| &run.transcript[i + 1..]);
    let mut parts = Vec::new();
    for message in after {
        match message.role {
            Role::Assistant => {
                if !message.content.trim().is_empty() {
                    parts.push(message.content.trim().to_string());
                }
                for call in &message.tool_calls {
                    parts.push(format!("Call {}: {}", call.name, call.arguments));
                }
            }
            Role::Tool => parts.push(format!("Result: {}", message.content.trim())),
            Role::System | Role::User => {}
        }
    }
    let text = parts.join("\n\n");
    let count = text.chars().count();
    if count <= MAX_WORK_CHARS {
        return text;
    }
    let tail: String = text.chars().skip(count - MAX_WORK_CHARS).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jielong_chat::generate::FinishReason;
    use jielong_chat::logprob::{TokenLogprob, TokenProb};

    #[test]
    fn the_first_letter_of_a_reply_is_a_choice_only_as_a_word() {
        let check = |text: &str, expected: Option<char>| {
            assert_eq!(letter(text), expected, "{text:?}");
        };
        check("A", Some('A'));
        check(" B", Some('B'));
        check("**A**", Some('A'));
        check("(B) is right", Some('B'));
        check("A.", Some('A'));
        check("Answer: A", None);
        check("Both", None);
        check("", None);
        check("C", None);
    }

    #[test]
    fn a_preference_is_the_share_of_a_against_b_in_the_first_token() {
        let prob = |token: &str, p: f32| TokenProb {
            token: token.into(),
            id: None,
            logprob: p.ln(),
        };
        let reply = |text: &str, top: Vec<TokenProb>| {
            let mut completion = Completion::new(text, FinishReason::MaxTokens, Usage::default());
            if !top.is_empty() {
                completion.logprobs = vec![TokenLogprob {
                    chosen: top[0].clone(),
                    top,
                }];
            }
            completion
        };
        let near = |got: Option<f32>, want: f32| {
            let got = got.expect("a preference");
            assert!((got - want).abs() < 1e-4, "{got} != {want}");
        };
        // "A" and " A" both count for A; other tokens are ignored.
        near(
            preference(&reply(
                "A",
                vec![
                    prob("A", 0.5),
                    prob(" A", 0.1),
                    prob("B", 0.2),
                    prob("The", 0.2),
                ],
            )),
            0.75,
        );
        // Without log-probabilities the letter written decides.
        near(preference(&reply("B", vec![])), 0.0);
        near(preference(&reply(" A", vec![])), 1.0);
        // Neither letter anywhere: no preference.
        assert_eq!(preference(&reply("The", vec![prob("The", 0.9)])), None);
    }
}
