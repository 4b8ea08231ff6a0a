//! Tree of Thoughts: a beam search over partial solutions.
//!
//! A state is the task and the thoughts (steps) taken so far. At each depth, every
//! state of the beam gets [`TreeSearch::breadth`] proposals — the first greedy on the
//! main branch, the others sampled at once on branches forked from it, so they share
//! the prompt in the KV cache — each read by the [`ThoughtSpace`] as next thoughts.
//! The space checks each thought ([`Step`]: open, solved or rejected); the model
//! values each new state with [`PromptKind::Evaluate`] (its first token read as
//! `sure`, `likely` or `impossible`, as probabilities where the backend reports them);
//! the [`TreeSearch::beam`] best states are kept and the rest dropped (the search
//! backtracks to the other kept states when one leads nowhere). The search stops at
//! the first solved state, when no state is left, or at [`TreeSearch::depth`].
//!
//! What a thought is, and when a state is solved, is the space's: [`FreeThoughts`]
//! takes a line per proposal and a line saying "the answer is" as the solution (any
//! task, with the propose and evaluate prompts). Spaces with checkers of their own
//! live with their puzzles (the Game of 24 in `jielong-puzzles`) and reach the
//! agent by name through a [`ThoughtSpaces`] catalog.

use std::collections::HashSet;
use std::fmt;
use std::time::Instant;

use futures::future::join_all;

use super::consistency::SAMPLE_TEMPERATURE;
use super::events::{AgentEvent, AgentRun, StopReason, ThoughtOutcome};
use super::judge::{first_token, one_token_reply};
use super::prompts::{fill, PromptKind};
use super::run::stop_for;
use super::Agent;
use jielong_chat::chat::Message;
use jielong_chat::error::RuntimeError;
use jielong_chat::generate::{Completion, SamplingParams, ToolChoice, Usage};
use jielong_chat::model::{BranchId, ModelSession};
use jielong_chat::respond::{Chat, ChatRequest};

/// The shape of a tree search: how many proposals per state, how many states are
/// kept per depth, how deep it goes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(default, deny_unknown_fields)]
pub struct TreeSearch {
    /// Proposals per state, 1 to [`TreeSearch::MAX`] (default 3): the first greedy
    /// (when the agent is), the others sampled on branches.
    pub breadth: usize,
    /// States kept per depth, 1 to [`TreeSearch::MAX`] (default 3).
    pub beam: usize,
    /// The most thoughts on a path, 1 to 16 (default 4).
    pub depth: usize,
}

impl Default for TreeSearch {
    fn default() -> Self {
        Self {
            breadth: 3,
            beam: 3,
            depth: 4,
        }
    }
}

impl TreeSearch {
    /// The most proposals per state and states per depth.
    pub const MAX: usize = 8;

    /// Why the shape is out of range, if it is.
    pub fn check(&self) -> Result<(), String> {
        for (name, value, max) in [
            ("breadth", self.breadth, Self::MAX),
            ("beam", self.beam, Self::MAX),
            ("depth", self.depth, 16),
        ] {
            if !(1..=max).contains(&value) {
                return Err(format!(
                    "tree {name} = {value} is out of range (1 to {max})"
                ));
            }
        }
        Ok(())
    }
}

/// A thought checked by a [`ThoughtSpace`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A partial solution to go on from.
    Open {
        /// What the prompts show of it (`{state}`).
        state: String,
        /// States with equal keys are the same; only the first is kept.
        key: String,
    },
    /// The task is solved: `answer` is the run's answer.
    Solved {
        /// The answer.
        answer: String,
    },
    /// Not a valid thought here (the search drops it).
    Rejected {
        /// Why.
        reason: String,
    },
}

/// What a thought is, for a kind of task: how a proposal is read as thoughts, which
/// thoughts are valid, when a state is solved. The seam of [`Strategy::Tree`]
/// (`Agent::builder(..).thoughts(..)`).
///
/// Contract: [`ThoughtSpace::root`] and [`ThoughtSpace::step`] are pure functions of
/// their arguments (the search calls them in any order, and may call `step` twice
/// with the same arguments).
///
/// [`Strategy::Tree`]: super::Strategy::Tree
pub trait ThoughtSpace: Send + Sync + fmt::Debug {
    /// The name it is known by (`free`, `game24`).
    fn name(&self) -> &str;

    /// The state before any thought; [`Step::Rejected`] says why the task is not one
    /// of this space.
    fn root(&self, task: &str) -> Step;

    /// The state after `thought`, taken after `steps` (the earlier thoughts, oldest
    /// first).
    fn step(&self, task: &str, steps: &[String], thought: &str) -> Step;

    /// The thoughts a proposal holds (default: its first non-empty line).
    fn thoughts(&self, proposal: &str) -> Vec<String> {
        proposal
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .map(str::to_owned)
            .into_iter()
            .collect()
    }

    /// The most tokens a proposal may have (default 96).
    fn proposal_tokens(&self) -> usize {
        96
    }

    /// The propose and evaluate prompts this space brings, if any: an agent uses them
    /// in place of the built-in ones, and prompt files given to it override them.
    fn prompts(&self) -> Vec<(PromptKind, &'static str)> {
        Vec::new()
    }
}

/// Any task, a line at a time: a proposal's first line is the next thought, and a
/// thought that says "the answer is …" (or starts with "Answer:") solves the task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FreeThoughts;

/// The steps so far, numbered, as the prompts show them.
fn numbered(steps: &[String]) -> String {
    if steps.is_empty() {
        return "(none yet)".to_owned();
    }
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{}. {s}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ThoughtSpace for FreeThoughts {
    fn name(&self) -> &str {
        "free"
    }

    /// The first non-empty line, without a step number (`2.`, `Step 2:`).
    fn thoughts(&self, proposal: &str) -> Vec<String> {
        let Some(line) = proposal.lines().map(str::trim).find(|l| !l.is_empty()) else {
            return Vec::new();
        };
        let line = line
            .trim_start_matches(|c: char| c.is_ascii_digit() || ".):-* ".contains(c))
            .trim();
        let line = line
            .strip_prefix("Step")
            .map(|rest| rest.trim_start_matches(|c: char| c.is_ascii_digit() || ".: ".contains(c)))
            .unwrap_or(line)
            .trim();
        if line.is_empty() {
            return Vec::new();
        }
        vec![line.to_owned()]
    }

    fn root(&self, _task: &str) -> Step {
        Step::Open {
            state: numbered(&[]),
            key: String::new(),
        }
    }

    fn step(&self, _task: &str, steps: &[String], thought: &str) -> Step {
        let thought = thought.trim();
        if thought.is_empty() {
            return Step::Rejected {
                reason: "an empty thought".into(),
            };
        }
        let lower = thought.to_lowercase();
        if lower.contains("the answer is") || lower.starts_with("answer:") {
            return Step::Solved {
                answer: thought.to_owned(),
            };
        }
        let mut path = steps.to_vec();
        path.push(thought.to_owned());
        Step::Open {
            state: numbered(&path),
            key: path
                .iter()
                .map(|s| {
                    s.to_lowercase()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// The thought spaces a program offers by name (`--thoughts`, a workflow's
/// `thoughts:`): [`FreeThoughts`] as `free`, and whatever the program adds
/// ([`ThoughtSpaces::with`]; the `jielong` binary adds the Game of 24 from
/// `jielong-puzzles`). Cheap to clone.
#[derive(Clone)]
pub struct ThoughtSpaces {
    spaces: std::collections::BTreeMap<String, std::sync::Arc<dyn ThoughtSpace>>,
}

impl ThoughtSpaces {
    /// The catalog with the built-in `free` space.
    pub fn new() -> Self {
        Self {
            spaces: std::collections::BTreeMap::new(),
        }
        .with(std::sync::Arc::new(FreeThoughts))
    }

    /// The catalog with `space` added under its [`ThoughtSpace::name`] (replacing a
    /// space of that name).
    pub fn with(mut self, space: std::sync::Arc<dyn ThoughtSpace>) -> Self {
        self.spaces.insert(space.name().to_owned(), space);
        self
    }

    /// The space called `name`.
    pub fn get(&self, name: &str) -> Option<std::sync::Arc<dyn ThoughtSpace>> {
        self.spaces.get(name.trim()).cloned()
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.spaces.keys().map(String::as_str).collect()
    }
}

impl Default for ThoughtSpaces {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ThoughtSpaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.spaces.keys()).finish()
    }
}

/// A node of the search tree.
#[derive(Debug, Clone)]
struct Node {
    id: usize,
    steps: Vec<String>,
    state: String,
    value: f32,
}

/// Runs `agent`'s task as a tree search.
pub(super) async fn run(
    agent: &Agent,
    session: &mut dyn ModelSession,
    task: &str,
    shape: TreeSearch,
) -> AgentRun {
    let started = Instant::now();
    let mut search = Search {
        agent,
        task,
        shape,
        usage: Usage::default(),
        calls: 0,
        longest_prompt: 0,
        next_id: 1,
    };
    let outcome = search.search(session).await;
    let (answer, stop, path) = match outcome {
        Ok((answer, path)) => (Some(answer), StopReason::Answered, path),
        Err((stop, path)) => (None, stop, path),
    };
    let mut transcript = vec![Message::user(task)];
    let mut work = path.join("\n");
    if let Some(answer) = &answer {
        if !work.is_empty() {
            work.push('\n');
        }
        work.push_str(answer);
    }
    if !work.is_empty() {
        transcript.push(Message::assistant(work));
    }
    agent.finish(AgentRun {
        answer,
        stop,
        transcript,
        usage: search.usage,
        distinct_prompt_tokens: search.longest_prompt,
        steps: search.calls,
        tool_calls: 0,
        elapsed: started.elapsed(),
        unverified: None,
    })
}

struct Search<'a> {
    agent: &'a Agent,
    task: &'a str,
    shape: TreeSearch,
    usage: Usage,
    /// Model calls made.
    calls: usize,
    longest_prompt: usize,
    next_id: usize,
}

/// The search's end: the answer and the thoughts before it, or why it stopped and
/// the best path it had.
type Outcome = Result<(String, Vec<String>), (StopReason, Vec<String>)>;

impl Search<'_> {
    async fn search(&mut self, session: &mut dyn ModelSession) -> Outcome {
        let settings = &self.agent.settings;
        let shape = self.shape;
        let space = self.agent.thoughts.clone();
        let deadline = settings.max_wall_time.map(|d| Instant::now() + d);
        let root_state = match space.root(self.task) {
            Step::Open { state, .. } => state,
            Step::Solved { answer } => return Ok((answer, Vec::new())),
            Step::Rejected { reason } => return Err((StopReason::Unsolved { reason }, Vec::new())),
        };
        let mut beam = vec![Node {
            id: 0,
            steps: Vec::new(),
            state: root_state,
            value: 1.0,
        }];
        let mut seen = HashSet::new();
        for depth in 1..=shape.depth {
            let mut children = Vec::new();
            for node in &beam {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err((StopReason::WallTime, beam[0].steps.clone()));
                }
                if self.spent() >= settings.max_total_tokens {
                    return Err((StopReason::MaxTokens, beam[0].steps.clone()));
                }
                let proposals = match self.propose(session, node, shape.breadth).await {
                    Ok(proposals) => proposals,
                    Err(e) => return Err((stop_for(e), node.steps.clone())),
                };
                let thoughts: Vec<String> =
                    proposals.iter().flat_map(|p| space.thoughts(p)).collect();
                for thought in thoughts {
                    let id = self.next_id;
                    self.next_id += 1;
                    let step = space.step(self.task, &node.steps, &thought);
                    let outcome = match &step {
                        Step::Open { key, .. } if !seen.insert(key.clone()) => {
                            ThoughtOutcome::Repeated
                        }
                        Step::Open { state, .. } => ThoughtOutcome::Open {
                            state: state.clone(),
                        },
                        Step::Solved { answer } => ThoughtOutcome::Solved {
                            answer: answer.clone(),
                        },
                        Step::Rejected { reason } => ThoughtOutcome::Rejected {
                            reason: reason.clone(),
                        },
                    };
                    let opens = matches!(outcome, ThoughtOutcome::Open { .. });
                    self.agent.emit(AgentEvent::Thought {
                        id,
                        parent: node.id,
                        depth,
                        text: thought.clone(),
                        outcome,
                    });
                    let mut steps = node.steps.clone();
                    steps.push(thought);
                    match step {
                        Step::Solved { answer } => {
                            steps.pop();
                            return Ok((answer, steps));
                        }
                        Step::Open { state, .. } if opens => children.push(Node {
                            id,
                            steps,
                            state,
                            value: 0.0,
                        }),
                        _ => {}
                    }
                }
            }
            if children.is_empty() {
                return Err((
                    StopReason::Unsolved {
                        reason: format!("no valid thought to go on with at depth {depth}"),
                    },
                    beam[0].steps.clone(),
                ));
            }
            if depth == shape.depth {
                break;
            }
            // Only as many states as the beam keeps need a value when there are no more.
            if children.len() > shape.beam {
                for child in &mut children {
                    match self.value(session, &child.steps, &child.state).await {
                        Ok(value) => child.value = value,
                        Err(e) => return Err((stop_for(e), child.steps.clone())),
                    }
                    self.agent.emit(AgentEvent::Valued {
                        id: child.id,
                        value: child.value,
                    });
                }
                // Stable: among equal values, the order proposed (greedy first).
                children.sort_by(|a, b| b.value.total_cmp(&a.value));
            }
            let dropped = children.len().saturating_sub(shape.beam);
            children.truncate(shape.beam);
            self.agent.emit(AgentEvent::Beam {
                depth,
                kept: children.iter().map(|c| c.id).collect(),
                dropped,
            });
            beam = children;
        }
        Err((
            StopReason::Unsolved {
                reason: format!("no solution within {} thoughts", shape.depth),
            },
            beam[0].steps.clone(),
        ))
    }

    fn spent(&self) -> usize {
        self.usage.generated_tokens + self.usage.evaluated_tokens
    }

    fn record(&mut self, completion: &Completion) {
        self.calls += 1;
        self.usage.accumulate(&completion.usage);
        self.longest_prompt = self.longest_prompt.max(completion.usage.prompt_tokens);
    }

    fn prompt(&self, kind: PromptKind, steps: &[String], state: &str) -> Chat {
        let text = fill(
            self.agent.prompts.get(kind),
            &[
                ("task", self.task),
                ("steps", &numbered(steps)),
                ("state", state),
            ],
        );
        Chat::new(vec![Message::user(text)])
    }

    /// `breadth` proposals for `node`: the first on the main branch (greedy when the
    /// agent is), the rest sampled at once on branches forked from it, where the
    /// backend has them (else one after another).
    async fn propose(
        &mut self,
        session: &mut dyn ModelSession,
        node: &Node,
        breadth: usize,
    ) -> Result<Vec<String>, RuntimeError> {
        let chat = self.prompt(PromptKind::Propose, &node.steps, &node.state);
        let agent = self.agent;
        let base = &agent.settings.sampling;
        let salt = self.next_id * 31;
        let request = |i: usize| ChatRequest {
            max_tokens: agent.thoughts.proposal_tokens(),
            sampling: if i == 0 && base.is_greedy() {
                base.clone()
            } else {
                SamplingParams {
                    temperature: if base.is_greedy() {
                        SAMPLE_TEMPERATURE
                    } else {
                        base.temperature
                    },
                    seed: base.seed.wrapping_add((salt + i) as u32),
                    ..base.clone()
                }
            },
            tool_choice: ToolChoice::None,
            ..ChatRequest::default()
        };
        let first = session.respond(&chat, &request(0))?.finish(|_| {}).await?;
        self.record(&first);
        let mut proposals = vec![first.text];
        if breadth == 1 {
            return Ok(proposals);
        }
        let forks = session.capabilities().forks();
        let branches = if forks {
            session.fork(BranchId::MAIN, breadth - 1).ok()
        } else {
            None
        };
        match branches {
            Some(branches) => {
                let jobs: Vec<(Chat, ChatRequest)> = branches
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| (chat.clone().on(b), request(i + 1)))
                    .collect();
                let generated = session.respond_batch(&jobs);
                let completions = match generated {
                    Ok(generations) => {
                        join_all(generations.into_iter().map(|g| g.finish(|_| {}))).await
                    }
                    Err(e) => vec![Err(e)],
                };
                for &b in &branches {
                    let _ = session.drop_branch(b);
                }
                for completion in completions {
                    let completion = completion?;
                    self.record(&completion);
                    proposals.push(completion.text);
                }
            }
            None => {
                for i in 1..breadth {
                    let completion = session.respond(&chat, &request(i))?.finish(|_| {}).await?;
                    self.record(&completion);
                    proposals.push(completion.text);
                }
            }
        }
        Ok(proposals)
    }

    /// The model's value of a state, 0 (impossible) to 1 (sure).
    async fn value(
        &mut self,
        session: &mut dyn ModelSession,
        steps: &[String],
        state: &str,
    ) -> Result<f32, RuntimeError> {
        let chat = self.prompt(PromptKind::Evaluate, steps, state);
        let completion = one_token_reply(session, &chat).await?;
        self.record(&completion);
        Ok(state_value(&completion).unwrap_or(0.5))
    }
}

/// The labels an evaluator answers with and what each is worth.
const LABELS: [(&str, f32); 4] = [
    ("sure", 1.0),
    ("likely", 0.5),
    ("maybe", 0.5),
    ("impossible", 0.0),
];

/// The label `text` starts (a prefix of one label only: `imp`, `Sure`, ` likely`).
fn label(text: &str) -> Option<f32> {
    let word: String = text
        .trim_start_matches(|c: char| c.is_whitespace() || "*\"'(".contains(c))
        .chars()
        .take_while(|c| c.is_alphabetic())
        .collect::<String>()
        .to_lowercase();
    if word.is_empty() {
        return None;
    }
    let mut matching = LABELS
        .iter()
        .filter(|(name, _)| name.starts_with(&word) || word.starts_with(name));
    match (matching.next(), matching.next()) {
        (Some((_, value)), None) => Some(*value),
        _ => None,
    }
}

/// The expected value of the label the reply starts with: from the first token's
/// alternatives where there are any, else the label written.
fn state_value(completion: &Completion) -> Option<f32> {
    let (mut mass, mut total) = (0.0f32, 0.0f32);
    for (token, p) in first_token(completion) {
        if let Some(value) = label(token) {
            mass += p;
            total += p * value;
        }
    }
    if mass > 0.0 {
        return Some(total / mass);
    }
    label(&completion.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_from_their_start() {
        for (text, value) in [
            ("sure", Some(1.0)),
            (" Sure.", Some(1.0)),
            ("imp", Some(0.0)),
            ("likely", Some(0.5)),
            ("**impossible**", Some(0.0)),
            ("", None),
            ("yes", None),
        ] {
            assert_eq!(label(text), value, "{text:?}");
        }
    }

    #[test]
    fn free_thoughts_end_at_an_answer() {
        let space = FreeThoughts;
        let steps = vec!["Add 2 and 3.".to_owned()];
        assert_eq!(
            space.thoughts("Step 2: The answer is 5.\nmore"),
            ["The answer is 5."]
        );
        assert_eq!(space.thoughts("2. Multiply by 4."), ["Multiply by 4."]);
        assert_eq!(
            space.step("t", &steps, "The answer is 5."),
            Step::Solved {
                answer: "The answer is 5.".into()
            }
        );
        match space.step("t", &steps, "Multiply by 4.") {
            Step::Open { state, .. } => assert_eq!(state, "1. Add 2 and 3.\n2. Multiply by 4."),
            other => panic!("{other:?}"),
        }
        assert!(space.thoughts(" - \n").is_empty());
        assert!(matches!(
            space.step("t", &steps, "  "),
            Step::Rejected { .. }
        ));
    }
}
