//! What a run reports: [`AgentEvent`]s as it goes, an [`AgentRun`] at the end, and the
//! [`StopReason`] that ended it.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use jielong_chat::chat::{Message, ToolCall};
use jielong_chat::generate::{FinishReason, Usage};
use jielong_chat::tool::ToolError;

/// What a model step was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Working on the task itself (no plan).
    Task,
    /// Asking for a plan (constrained to `submit_plan`).
    Plan,
    /// Working on one subtask of the plan.
    Subtask,
    /// Combining the subtasks' results into the answer.
    Synthesis,
    /// Criticising a draft answer (constrained to `submit_critique`).
    Critique,
    /// Revising a draft after a critique.
    Revision,
}

/// What the thought space of a tree search made of a proposed thought.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ThoughtOutcome {
    /// A new partial solution; `state` is how the prompts show it.
    Open {
        /// The state.
        state: String,
    },
    /// It solves the task.
    Solved {
        /// The answer.
        answer: String,
    },
    /// Not valid here.
    Rejected {
        /// Why.
        reason: String,
    },
    /// It leads to a state already in the tree (dropped).
    Repeated,
}

/// A critique of a draft answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the draft answers the task correctly.
    pub ok: bool,
    /// What is wrong with it (empty when `ok`).
    pub problem: String,
}

/// What happens during a run, in order. Serialized with a `type` tag, one JSON object per
/// event (the CLI writes them as a JSONL trace):
///
/// ```
/// use jielong_agent::AgentEvent;
/// let line = serde_json::to_string(&AgentEvent::StepStarted {
///     step: 1,
///     phase: jielong_agent::Phase::Task,
/// })
/// .unwrap();
/// assert_eq!(line, r#"{"type":"step_started","step":1,"phase":"task"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// A model step (one model call) starts; steps count from 1.
    StepStarted {
        /// The step.
        step: usize,
        /// What the step is for.
        phase: Phase,
    },
    /// A piece of text the model generated.
    Token {
        /// The step it belongs to.
        step: usize,
        /// The text.
        text: String,
    },
    /// The model's reply was bare JSON naming a tool instead of a call block; the step is
    /// generated again with calls required (the prompt is the same, so the KV cache makes
    /// it cheap).
    ConstrainedRetry {
        /// The step.
        step: usize,
        /// The tool the bare JSON named.
        tool: String,
    },
    /// The reply was bare JSON for a call that would tell the model nothing new (the
    /// same call again, or arguments that restate a result it has); the step is
    /// generated again as prose ([`ToolChoice::None`](jielong_chat::generate::ToolChoice::None)),
    /// which is the answer.
    AnswerRetry {
        /// The step.
        step: usize,
    },
    /// The reply closed a ```` ```python ```` block ([`CodeActions::Fenced`]): the
    /// agent cut generation there, runs the code (a `python` [`AgentEvent::ToolCall`]
    /// and [`AgentEvent::ToolResult`] follow) and continues the reply after an
    /// ```` ```output ```` block with the result.
    ///
    /// [`CodeActions::Fenced`]: super::CodeActions::Fenced
    CodeBlock {
        /// The step.
        step: usize,
        /// The code.
        code: String,
    },
    /// The reply was a call-shaped blob (JSON naming a tool that does not exist, or
    /// arguments that are expressions rather than JSON): the agent turned it into
    /// Python code and runs that instead of taking the blob as the answer.
    BlobConverted {
        /// The step.
        step: usize,
        /// The blob as the model wrote it.
        blob: String,
        /// The code it became.
        code: String,
    },
    /// The reply was call-shaped but not a call the agent could make or convert; it is
    /// never the answer: the model is asked again for a plain answer.
    CallShapedAnswer {
        /// The step.
        step: usize,
    },
    /// Calls of tools the question never names were dropped
    /// ([`crate::AgentSettings::call_fit`]); without other calls the step answers in
    /// writing.
    Declined {
        /// The step.
        step: usize,
        /// The tools whose calls were dropped.
        tools: Vec<String>,
    },
    /// The answer states numbers that no tool result backs (and that are not in the
    /// question): it is sent back once for a check with the code tool.
    Ungrounded {
        /// The step.
        step: usize,
        /// The answer that was sent back.
        answer: String,
    },
    /// After the check of an [`AgentEvent::Ungrounded`] answer, the model's answer still
    /// did not state the number the check's program printed: the check's result stands
    /// (in place of the answer's own number, rounded as the question asks).
    CheckKept {
        /// The step.
        step: usize,
        /// The model's answer after the check.
        answer: String,
        /// The answer kept.
        kept: String,
    },
    /// The step after a failed or repeated call samples instead of decoding greedily,
    /// so the retry does not replay the same path.
    Resampled {
        /// The step.
        step: usize,
        /// The temperature used.
        temperature: f32,
        /// The seed used.
        seed: u32,
        /// What went wrong before.
        reason: String,
    },
    /// The reply was cut by the per-step token limit before it ended: it is not
    /// taken as an answer as it stands.
    Truncated {
        /// The step.
        step: usize,
    },
    /// An event of one sample of a self-consistency run (samples run at once, so
    /// their events interleave; `sample` tells them apart).
    Sample {
        /// The sample, from 1.
        sample: usize,
        /// Its event.
        event: Box<AgentEvent>,
    },
    /// An event of a part of a composed run: a subtask or a draft worked by a strategy
    /// of its own, or a checker. Its events come in order, its own `Final` and
    /// `Stopped` included; the composed run ends with its own. (A strategy that hands
    /// the whole task on — `route`, `fallback` — passes its runs' events through as its
    /// own, without their ends.)
    Part {
        /// Which part (`subtask 2`, `draft`, `check 1`).
        part: String,
        /// Its event.
        event: Box<AgentEvent>,
    },
    /// A self-consistency sample ended: its answer and the voting key it counts as
    /// (`None`: no answer, not counted).
    SampleAnswer {
        /// The sample, from 1.
        sample: usize,
        /// Its answer, if any.
        answer: Option<String>,
        /// The normalised answer it votes for.
        vote: Option<String>,
        /// Why the sample's run ended.
        stop: StopReason,
    },
    /// The votes of a self-consistency run, most votes first (ties in the order the
    /// answers first appeared).
    Tally {
        /// Each normalised answer and its votes.
        votes: Vec<(String, usize)>,
        /// Samples without an answer.
        abstained: usize,
        /// The answer chosen: of the answers with the most votes, the first a run that
        /// called a tool gave, else the first to appear.
        winner: Option<String>,
        /// Whether the winner shared the most votes with another answer.
        tie: bool,
    },
    /// A checker worked the task again, told one of the samples' answers
    /// ([`Pick::Check`](crate::Pick::Check)).
    Checked {
        /// The sample (from 1) whose answer was checked.
        sample: usize,
        /// That answer, as it votes.
        answer: String,
        /// The way of answering that checked it (`direct` or `written`).
        checker: String,
        /// What the checker found, as it votes (`None`: no answer).
        found: Option<String>,
        /// Whether it found the same answer.
        agreed: bool,
    },
    /// The judge of a best-of-N run compared two candidates: `first` shown as
    /// solution A, `second` as B (each pair is judged in both orders).
    Judged {
        /// The sample (from 1) shown first.
        first: usize,
        /// The sample shown second.
        second: usize,
        /// The judge's probability that the first is the right one (`A` against `B`
        /// in its reply's first token); `None`: it named neither.
        preference: Option<f32>,
    },
    /// The judge's ranking of a best-of-N run's candidates, best first: each distinct
    /// answer (normalised as for voting), its votes among the samples and its score
    /// (the pairs it won: both orders averaged, by more than the margin).
    Ranking {
        /// `(answer, votes, score)` per candidate.
        candidates: Vec<(String, usize, f32)>,
        /// The answer chosen.
        winner: Option<String>,
        /// Why the judge could not finish, when it could not (the ranking is then the
        /// vote's, for pairs it did not judge).
        error: Option<String>,
    },
    /// A thought proposed in a tree-of-thoughts search, and what the thought space made
    /// of it.
    Thought {
        /// Its id (the root state is 0).
        id: usize,
        /// The state it was proposed for.
        parent: usize,
        /// Its depth (the root's children are at 1).
        depth: usize,
        /// The thought.
        text: String,
        /// Open, solved, rejected or a repeat of a state seen before.
        outcome: ThoughtOutcome,
    },
    /// The model's value of a state of a tree-of-thoughts search (0 impossible, 1
    /// sure); states are only valued when more are open than the beam keeps.
    Valued {
        /// The thought that led to the state.
        id: usize,
        /// Its value.
        value: f32,
    },
    /// The states a tree-of-thoughts search keeps at a depth, best first; the others
    /// are dropped.
    Beam {
        /// The depth.
        depth: usize,
        /// The ids of the thoughts kept.
        kept: Vec<usize>,
        /// How many open states were dropped.
        dropped: usize,
    },
    /// A model call ended (a step generated again has two or three).
    StepFinished {
        /// The step.
        step: usize,
        /// Why generation ended.
        finish: FinishReason,
        /// Tokens and times of the call.
        usage: Usage,
    },
    /// The reply held a call block that is not a valid call; the error goes back to the
    /// model.
    MalformedCall {
        /// The step.
        step: usize,
        /// The text of the block.
        raw: String,
        /// Why it is not a call.
        error: String,
    },
    /// The model calls a tool.
    ToolCall {
        /// The step whose reply made the call (0: one of the agent's own
        /// [initial calls](super::AgentSettings::initial_calls)).
        step: usize,
        /// The call (with the id the agent gave it when the model gave none).
        call: ToolCall,
    },
    /// A tool call ended; `content` is what the model sees.
    ToolResult {
        /// The step whose reply made the call.
        step: usize,
        /// The id of the call.
        call_id: Option<String>,
        /// The tool.
        name: String,
        /// Whether the tool succeeded.
        ok: bool,
        /// The result, or the error, as given to the model.
        content: String,
        /// How many times the tool ran (more than 1 after retries of transient errors).
        attempts: usize,
    },
    /// The plan the model made (plan mode).
    Plan {
        /// The subtasks, in order (empty when no usable plan came back).
        subtasks: Vec<String>,
    },
    /// Work on a subtask of the plan starts.
    Subtask {
        /// Its position, from 1.
        index: usize,
        /// How many subtasks there are.
        count: usize,
        /// The subtask.
        subtask: String,
    },
    /// A critique of the draft answer (reflection).
    Critique {
        /// The round, from 1.
        round: usize,
        /// The critique.
        verdict: Verdict,
    },
    /// The first strategy of a fallback ended without an answer; the fallback works
    /// the task now, and its answer will be unverified.
    FellBack {
        /// Why the first strategy ended.
        reason: StopReason,
        /// The strategy that takes over.
        then: String,
    },
    /// A route chose how the task is worked.
    Routed {
        /// Whether the task needs the agent's tools ([`needs_tools`](crate::needs_tools)).
        needs_tools: bool,
        /// The strategy chosen.
        then: String,
    },
    /// The answer of the run.
    Final {
        /// The answer.
        answer: String,
    },
    /// The run ended; always the last event.
    Stopped {
        /// Why.
        reason: StopReason,
    },
}

/// Why a run ended. Every stop keeps the transcript up to that point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum StopReason {
    /// The model gave its final answer.
    Answered,
    /// The step budget (model calls) ran out.
    MaxSteps,
    /// The token budget (generated + evaluated tokens) ran out, or a reply was cut by
    /// the per-step limit again after the model was asked for its answer.
    MaxTokens,
    /// The wall-time budget ran out.
    WallTime,
    /// The model made the same call (same tool, same arguments) more often than allowed.
    RepeatedCall {
        /// The tool.
        name: String,
    },
    /// A tool kept failing: its error went back to the model each time, and it failed
    /// the allowed number of times in a row.
    ToolFailed {
        /// The tool.
        name: String,
        /// Its last error.
        error: ToolError,
    },
    /// The model (or its chat template) failed.
    ModelError(String),
    /// The conversation no longer fits in the context window.
    ContextFull,
    /// A search (tree of thoughts) ended without a solution.
    Unsolved {
        /// Why: no valid thought left, the depth ran out, the task is not one of the
        /// thought space's.
        reason: String,
    },
}

impl StopReason {
    /// Whether the run ended with an answer from the model.
    pub fn is_answered(&self) -> bool {
        matches!(self, Self::Answered)
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Answered => f.write_str("answered"),
            Self::MaxSteps => f.write_str("the step budget ran out"),
            Self::MaxTokens => f.write_str("the token budget ran out"),
            Self::WallTime => f.write_str("the time budget ran out"),
            Self::RepeatedCall { name } => {
                write!(f, "the model kept repeating the same call of `{name}`")
            }
            Self::ToolFailed { name, error } => write!(f, "tool `{name}` kept failing: {error}"),
            Self::ModelError(message) => write!(f, "model error: {message}"),
            Self::ContextFull => f.write_str("the context window is full"),
            Self::Unsolved { reason } => write!(f, "no solution: {reason}"),
        }
    }
}

/// The outcome of [`Agent::run`](super::Agent::run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRun {
    /// The final answer. When a budget runs out during reflection it is the latest draft
    /// (and `stop` says which budget ran out); otherwise `None` unless `stop` is
    /// [`StopReason::Answered`].
    pub answer: Option<String>,
    /// Why the run ended.
    pub stop: StopReason,
    /// The conversation: system prompt, task, replies, calls and results (partial when
    /// the run stopped early).
    pub transcript: Vec<Message>,
    /// Tokens and times of every model call, added up.
    pub usage: Usage,
    /// The distinct prompt tokens of the run: the longest prompt of any model call
    /// (every prompt extends the conversation, so the longest holds all the others).
    /// With the KV cache reused across steps, `usage.evaluated_tokens` stays close to it.
    pub distinct_prompt_tokens: usize,
    /// Model steps taken (a constrained retry belongs to the step it redoes).
    pub steps: usize,
    /// Tool calls dispatched (retries of one call count once).
    pub tool_calls: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Why the answer is not checked, when a fallback gave it: the first strategy
    /// (a program, say) ended without an answer, for this reason (`None`: the answer
    /// came the planned way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unverified: Option<String>,
}

impl AgentRun {
    /// Prompt tokens evaluated over the run per distinct prompt token: 1.0 when nothing
    /// was evaluated twice (`None` before any model call).
    pub fn evaluated_per_distinct(&self) -> Option<f64> {
        (self.distinct_prompt_tokens > 0)
            .then(|| self.usage.evaluated_tokens as f64 / self.distinct_prompt_tokens as f64)
    }
}
