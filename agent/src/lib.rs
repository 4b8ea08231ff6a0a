//! # jielong-agent
//!
//! The planner loop: an [`Agent`] drives a [`ModelSession`] through a task, calling
//! tools until the model answers.
//!
//! Each step renders the whole conversation with the model's chat template and
//! generates on the same session, so only the new suffix is evaluated (the KV cache
//! holds the rest); the session is never reset between steps. A step's reply is parsed
//! with the model's [`ToolCallFormat`]: calls are dispatched (concurrently when
//! [`AgentSettings::parallel_calls`] is set), their results go back as `tool` messages
//! and the loop continues; a reply without calls is the answer.
//!
//! Small models often write a call as bare JSON instead of a call block; the loop then
//! generates that step again with calls required ([`AgentEvent::ConstrainedRetry`]).
//! Tool errors go back to the model as the tool's result, so it can adapt; malformed
//! call blocks are reported back to it as well.
//!
//! How the agent works a task is a [`Strategy`] ([`AgentSettings::strategy`]): a value
//! that carries its own parameters and may wrap others, all under the same budgets
//! (steps, tokens, wall time) per run:
//! - **direct** (the default): the task, then steps with tools until the answer;
//!   **written**: the model answers in writing, without tools;
//! - **plan**: the model first lists at most five subtasks through a `submit_plan`
//!   call (grammar-constrained), works through them one by one (in the same
//!   conversation, or each by an inner strategy), then writes the answer
//!   ([`PromptKind::Synthesize`]);
//! - **reflect**: after the inner strategy's draft, the model criticises it through a
//!   `submit_critique` call (`{"ok", "problem"}`) and revises it when it is not ok;
//! - **sample** (`vote`, `judge`, `adaptive`): several runs of inner strategies, taken
//!   in turn, one answer picked by vote or by the model as judge, all drawn at once or
//!   more only while they disagree;
//! - **fallback**: a second strategy when the first ends without an answer (its answer
//!   is marked unverified);
//! - **route**: one strategy for a task that needs the tools ([`needs_tools`]), another
//!   for the rest (a written answer by default);
//! - **tree**: Tree of Thoughts over the agent's [`ThoughtSpace`].
//!
//! `submit_plan` and `submit_critique` are only ever offered in the constraint of their
//! own step, never listed in the chat template's tools, so the rendered prefix (and the
//! KV cache) stays the same across steps.
//!
//! ```no_run
//! # async fn demo(session: &mut dyn jielong_chat::ModelSession, tools: jielong_chat::ToolRegistry)
//! # -> Result<(), jielong_agent::AgentError> {
//! use jielong_agent::{Agent, AgentEvent};
//! use jielong_chat::ToolCallFormat;
//!
//! let agent = Agent::builder(ToolCallFormat::Hermes)
//!     .tools(tools)
//!     .max_steps(8)
//!     .on_event(|event| {
//!         if let AgentEvent::Token { text, .. } = event {
//!             eprint!("{text}");
//!         }
//!     })
//!     .build()?;
//! let run = agent.run(session, "What is 12345 * 6789?").await;
//! println!("{:?} ({})", run.answer, run.stop);
//! # Ok(()) }
//! ```

mod check;
mod code;
mod compose;
mod consistency;
mod events;
mod judge;
mod present;
mod prompts;
mod route;
mod run;
mod strategy;
pub mod technique;
mod trace;
mod tree;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jielong_chat::chat::ToolCall;
use jielong_chat::fit::CallFit;
use jielong_chat::generate::SamplingParams;
use jielong_chat::model::{LanguageModel, ModelSession};
use jielong_chat::tool::ToolRegistry;
use jielong_chat::tool_format::ToolCallFormat;

pub use consistency::{vote_key, SAMPLE_TEMPERATURE};
pub use events::{AgentEvent, AgentRun, Phase, StopReason, ThoughtOutcome, Verdict};
pub use judge::{Comparison, Judge, Judgement, MAX_JUDGED, MIN_MARGIN};
pub use present::plain_text;
pub use prompts::{fill, PromptKind, Prompts};
pub use route::{computes, needs_tools};
pub use strategy::{
    Draw, Fallback, Pick, Plan, Reflect, Route, Sample, Strategy, StrategyError, CHECK_WEIGHT,
    MAX_ROUNDS, MAX_RUNS, NAMES as STRATEGY_NAMES,
};
pub use technique::{Framing, Shot, Shots, ShotsError, Technique, Wording};
pub use trace::{now_ms, TraceError, TraceWriter, TIMESTAMP_FIELD};
pub use tree::{FreeThoughts, Step, ThoughtSpace, ThoughtSpaces, TreeSearch};

/// The name of the run-time tool the plan is submitted through.
pub const SUBMIT_PLAN: &str = "submit_plan";
/// The name of the run-time tool a critique is submitted through.
pub const SUBMIT_CRITIQUE: &str = "submit_critique";

/// An agent could not be set up. Messages are one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A prompt file or directory could not be read.
    #[error("cannot read prompt {path}: {detail}")]
    PromptFile {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A prompt is unusable.
    #[error("prompt {kind} is unusable: {detail}")]
    Prompt {
        /// Which prompt.
        kind: PromptKind,
        /// What is wrong.
        detail: String,
    },
    /// A setting is out of range.
    #[error("invalid agent setting: {0}")]
    InvalidSetting(String),
}

/// How the model writes code for the tool that runs it (the registry's
/// [`interpreter`](ToolRegistry::interpreter), `python` among the built-in tools).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CodeActions {
    /// In its reply, as ```` ```python ```` blocks: the agent runs each block as soon as
    /// it is closed and continues the same reply after an ```` ```output ```` block
    /// with the result (the tool-integrated reasoning format of Qwen2.5-Math; no code
    /// is escaped into JSON). `python` is then not offered as a JSON tool; other tools
    /// are. The default: on GSM8K it beats JSON calls on the default model.
    #[default]
    Fenced,
    /// As a tool call with the code in a JSON string (`{"code": "..."}`), like any
    /// other tool.
    ToolCall,
}

/// Whether a final answer's numbers are checked against the tool results.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Grounding {
    /// An answer whose numbers appear in no result of the code tool (results of
    /// other tools, such as passages, are inputs) and are not in the question
    /// is sent back once with [`PromptKind::Ground`], when the agent has a tool that
    /// runs code (default).
    #[default]
    CheckNumbers,
    /// Answers are taken as they are.
    Off,
}

/// Whether tools may make their own first call with the task ([`Tool::prefetch`]).
///
/// [`Tool::prefetch`]: jielong_chat::tool::Tool::prefetch
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Prefetch {
    /// Each tool that asks for it is called with the task before the first step, after
    /// [`AgentSettings::initial_calls`] (a tool those already call is skipped), so a
    /// search tool's passages are in front of the model before it can answer from
    /// memory (default).
    #[default]
    Tools,
    /// Only [`AgentSettings::initial_calls`] are made.
    Off,
}

/// Receives every [`AgentEvent`] of a run, in order.
pub type EventHandler = Arc<dyn Fn(&AgentEvent) + Send + Sync>;

/// Budgets and switches of an [`Agent`]. [`Default`] gives the documented defaults.
///
/// The one definition of an agent's configuration: it reads from and writes to JSON
/// or YAML (every key optional, an unknown key refused; durations as seconds or
/// `"90s"`, `"500ms"`, `"2m"`; the strategy in its text or nested form), and its
/// JSON Schema (`schemars`) is what editors check a workflow's `settings:` against.
/// `jielong run --settings FILE`, `jielong eval --settings FILE` and a workflow
/// agent's `settings:` all read it. Only [`AgentSettings::framing`] stays out: the
/// front ends build it from a technique, an instruction or a few-shot file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSettings {
    /// The most tokens one model step may generate (default 512).
    pub max_tokens_per_step: usize,
    /// How tokens are chosen (default greedy).
    pub sampling: SamplingParams,
    /// The most model steps (calls) in a run, planning, subtasks, synthesis and
    /// reflection included; a constrained retry belongs to its step (default
    /// [`AgentSettings::DEFAULT_MAX_STEPS`], 12).
    pub max_steps: usize,
    /// The most tokens (generated + evaluated) in a run (default 32768).
    pub max_total_tokens: usize,
    /// The longest a run may take (default none).
    #[serde(with = "jielong_util::duration::option")]
    #[schemars(with = "Option<jielong_util::duration::Schema>")]
    pub max_wall_time: Option<Duration>,
    /// How many times the same call (same tool, same arguments) may be made in a run; one
    /// more stops it with [`StopReason::RepeatedCall`] (default 2).
    pub max_identical_calls: usize,
    /// How often a call that failed with a retryable error (a timeout, a transient
    /// failure) is run again before its error goes to the model (default 1).
    pub tool_retries: usize,
    /// The pause before such a retry (default 200 ms).
    #[serde(with = "jielong_util::duration")]
    #[schemars(with = "jielong_util::duration::Schema")]
    pub retry_delay: Duration,
    /// How many failures in a row of one tool stop the run with
    /// [`StopReason::ToolFailed`] (default 3). Each error goes back to the model first.
    pub max_tool_failures: usize,
    /// The most calls in one reply (default 4).
    pub max_calls_per_step: u32,
    /// Whether the calls of one reply run concurrently (default true); results go back in
    /// call order either way.
    pub parallel_calls: bool,
    /// Longest tool result given to the model, in characters; longer ones are cut
    /// (default 4000).
    pub max_result_chars: usize,
    /// How the task is worked (default [`Strategy::Direct`]): a value that carries its
    /// own parameters and may wrap other strategies. Each run inside a composed
    /// strategy (a sample, a subtask worked by a strategy of its own, a fallback) has
    /// the step and token budgets of a whole run.
    pub strategy: Strategy,
    /// Calls the agent makes itself before the first model step, right after the task
    /// (in plan mode, after the plan request), recorded as an assistant call and its
    /// result as if the model had made them (default none). For agents that should
    /// always start from a tool's result, such as a search over the task.
    pub initial_calls: Vec<ToolCall>,
    /// Whether tools make their own first call with the task (default
    /// [`Prefetch::Tools`]).
    pub prefetch: Prefetch,
    /// How code for `python` is written (default [`CodeActions::Fenced`]).
    pub code_actions: CodeActions,
    /// Whether answers are checked against tool results (default
    /// [`Grounding::CheckNumbers`]).
    pub grounding: Grounding,
    /// Whether calls are fitted to the question (default [`CallFit::AsWritten`]): with
    /// [`CallFit::Fitted`], a call of a tool for a subject of its own
    /// ([`jielong_chat::ToolKind::Plain`]) that the question never names is declined,
    /// and the step answers in writing instead. Off by default: the judgement is by
    /// words, and an app's tool (`add` for "2 + 3") may fit a question that never names
    /// it; `jielong serve`, whose clients send tools for every request, fits by default.
    pub call_fit: CallFit,
    /// The temperature of the step after a failed tool call, so the model does not
    /// walk the same greedy path into the same mistake (with a seed that changes per
    /// retry; default 0.7; 0 keeps the run's own sampling).
    pub recovery_temperature: f32,
    /// Worked examples before the task and the technique the task message is worded
    /// with (default none and [`Technique::Plain`]): the examples follow the system
    /// prompt as earlier turns; the technique words the task of a direct run (each
    /// sample's, and the draft of a reflecting one) before the code prompt wraps it.
    /// Not part of the serialized settings: a front end builds it from the files and
    /// names it is given.
    #[serde(skip)]
    #[schemars(skip)]
    pub framing: Framing,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            max_tokens_per_step: 512,
            sampling: SamplingParams::default(),
            max_steps: Self::DEFAULT_MAX_STEPS,
            max_total_tokens: 32_768,
            max_wall_time: None,
            max_identical_calls: 2,
            tool_retries: 1,
            retry_delay: Duration::from_millis(200),
            max_tool_failures: 3,
            max_calls_per_step: 4,
            parallel_calls: true,
            max_result_chars: 4000,
            strategy: Strategy::Direct,
            initial_calls: Vec::new(),
            prefetch: Prefetch::default(),
            code_actions: CodeActions::default(),
            grounding: Grounding::default(),
            call_fit: CallFit::default(),
            recovery_temperature: 0.7,
            framing: Framing::default(),
        }
    }
}

impl AgentSettings {
    /// The default of [`AgentSettings::max_steps`]: the one default of every entry
    /// point (the library, `jielong run --max-steps`, a workflow agent's `max_steps`).
    pub const DEFAULT_MAX_STEPS: usize = 12;

    /// Checks that every value is in its range.
    pub fn validate(&self) -> Result<(), AgentError> {
        let at_least_one = [
            ("max_tokens_per_step", self.max_tokens_per_step),
            ("max_steps", self.max_steps),
            ("max_total_tokens", self.max_total_tokens),
            ("max_identical_calls", self.max_identical_calls),
            ("max_tool_failures", self.max_tool_failures),
            ("max_calls_per_step", self.max_calls_per_step as usize),
            ("max_result_chars", self.max_result_chars),
        ];
        for (name, value) in at_least_one {
            if value == 0 {
                return Err(AgentError::InvalidSetting(format!(
                    "{name} must be at least 1"
                )));
            }
        }
        if !self.recovery_temperature.is_finite() || self.recovery_temperature < 0.0 {
            return Err(AgentError::InvalidSetting(format!(
                "recovery_temperature = {} is out of range (>= 0)",
                self.recovery_temperature
            )));
        }
        self.strategy.check().map_err(AgentError::InvalidSetting)?;
        self.sampling
            .validate()
            .map_err(|e| AgentError::InvalidSetting(e.to_string()))
    }
}

/// A tool-using agent: prompts, tools, the model's call format and budgets. Build one
/// with [`Agent::builder`]; [`Agent::run`] it on any [`ModelSession`]. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    prompts: Prompts,
    tools: ToolRegistry,
    format: ToolCallFormat,
    settings: AgentSettings,
    events: Option<EventHandler>,
    thoughts: Arc<dyn ThoughtSpace>,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("format", &self.format)
            .field("tools", &self.tools)
            .field("settings", &self.settings)
            .field("thoughts", &self.thoughts.name())
            .field("events", &self.events.is_some())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Starts building an agent for a model that writes calls in `format`.
    pub fn builder(format: ToolCallFormat) -> AgentBuilder {
        AgentBuilder {
            format,
            tools: ToolRegistry::new(),
            settings: AgentSettings::default(),
            prompt_sources: Vec::new(),
            events: None,
            thoughts: Arc::new(FreeThoughts),
        }
    }

    /// Starts building an agent for `model` (its detected call format).
    pub fn for_model(model: &dyn LanguageModel) -> AgentBuilder {
        Self::builder(model.info().tool_call_format)
    }

    /// The prompts in use.
    pub fn prompts(&self) -> &Prompts {
        &self.prompts
    }

    /// The tools the model may call.
    pub fn tools(&self) -> &ToolRegistry {
        &self.tools
    }

    /// The model's call format.
    pub fn format(&self) -> ToolCallFormat {
        self.format
    }

    /// The budgets and switches.
    pub fn settings(&self) -> &AgentSettings {
        &self.settings
    }

    /// Works on `task` with the model behind `session` until it answers or a budget runs
    /// out. Never fails: problems end the run with a [`StopReason`], keeping the transcript
    /// so far. The session keeps what it evaluated (it is not reset, before or after).
    ///
    /// Needs a Tokio runtime with timers (tool time limits, the wall-time budget).
    pub async fn run(&self, session: &mut dyn ModelSession, task: &str) -> AgentRun {
        compose::work(self, session, task).await
    }

    /// Reports the end of `run` (its answer, if any, then why it stopped) and returns
    /// it: the last events of every run, whatever the strategy.
    fn finish(&self, mut run: AgentRun) -> AgentRun {
        run.answer = run.answer.map(|answer| plain_text(&answer));
        if let Some(answer) = &run.answer {
            self.emit(AgentEvent::Final {
                answer: answer.clone(),
            });
        }
        self.emit(AgentEvent::Stopped {
            reason: run.stop.clone(),
        });
        run
    }

    fn emit(&self, event: AgentEvent) {
        if let Some(handler) = &self.events {
            handler(&event);
        }
    }
}

enum PromptSource {
    Text(PromptKind, String),
    File(PromptKind, PathBuf),
    Dir(PathBuf),
}

/// Builds an [`Agent`]; every setting has a default (see [`AgentSettings`]).
pub struct AgentBuilder {
    format: ToolCallFormat,
    tools: ToolRegistry,
    settings: AgentSettings,
    prompt_sources: Vec<PromptSource>,
    events: Option<EventHandler>,
    thoughts: Arc<dyn ThoughtSpace>,
}

impl fmt::Debug for AgentBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentBuilder")
            .field("format", &self.format)
            .field("tools", &self.tools)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AgentBuilder {
    /// The tools the model may call (default none).
    pub fn tools(mut self, tools: ToolRegistry) -> Self {
        self.tools = tools;
        self
    }

    /// All budgets and switches at once.
    pub fn settings(mut self, settings: AgentSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The system prompt, whichever the agent uses (default: the built-in
    /// `agent_system.md`, or `code_system.md` when `python` takes fenced code).
    pub fn system_prompt(self, text: impl Into<String>) -> Self {
        let text = text.into();
        self.prompt(PromptKind::System, text.clone())
            .prompt(PromptKind::CodeSystem, text)
    }

    /// Replaces one prompt by `text`.
    pub fn prompt(mut self, kind: PromptKind, text: impl Into<String>) -> Self {
        self.prompt_sources
            .push(PromptSource::Text(kind, text.into()));
        self
    }

    /// Replaces one prompt by the contents of a file (read by [`AgentBuilder::build`]).
    pub fn prompt_file(mut self, kind: PromptKind, path: impl Into<PathBuf>) -> Self {
        self.prompt_sources
            .push(PromptSource::File(kind, path.into()));
        self
    }

    /// Replaces every prompt that has a file in `dir` (`agent_system.md`, `plan.md`, …;
    /// read by [`AgentBuilder::build`]).
    pub fn prompts_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.prompt_sources.push(PromptSource::Dir(dir.into()));
        self
    }

    /// See [`AgentSettings::max_tokens_per_step`].
    pub fn max_tokens_per_step(mut self, tokens: usize) -> Self {
        self.settings.max_tokens_per_step = tokens;
        self
    }

    /// See [`AgentSettings::sampling`].
    pub fn sampling(mut self, sampling: SamplingParams) -> Self {
        self.settings.sampling = sampling;
        self
    }

    /// See [`AgentSettings::max_steps`].
    pub fn max_steps(mut self, steps: usize) -> Self {
        self.settings.max_steps = steps;
        self
    }

    /// See [`AgentSettings::max_total_tokens`].
    pub fn max_total_tokens(mut self, tokens: usize) -> Self {
        self.settings.max_total_tokens = tokens;
        self
    }

    /// See [`AgentSettings::max_wall_time`].
    pub fn max_wall_time(mut self, limit: Duration) -> Self {
        self.settings.max_wall_time = Some(limit);
        self
    }

    /// See [`AgentSettings::max_identical_calls`].
    pub fn max_identical_calls(mut self, calls: usize) -> Self {
        self.settings.max_identical_calls = calls;
        self
    }

    /// See [`AgentSettings::tool_retries`] and [`AgentSettings::retry_delay`].
    pub fn tool_retries(mut self, retries: usize, delay: Duration) -> Self {
        self.settings.tool_retries = retries;
        self.settings.retry_delay = delay;
        self
    }

    /// See [`AgentSettings::max_tool_failures`].
    pub fn max_tool_failures(mut self, failures: usize) -> Self {
        self.settings.max_tool_failures = failures;
        self
    }

    /// See [`AgentSettings::max_calls_per_step`].
    pub fn max_calls_per_step(mut self, calls: u32) -> Self {
        self.settings.max_calls_per_step = calls;
        self
    }

    /// See [`AgentSettings::parallel_calls`].
    pub fn parallel_calls(mut self, parallel: bool) -> Self {
        self.settings.parallel_calls = parallel;
        self
    }

    /// See [`AgentSettings::max_result_chars`].
    pub fn max_result_chars(mut self, chars: usize) -> Self {
        self.settings.max_result_chars = chars;
        self
    }

    /// See [`AgentSettings::strategy`].
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.settings.strategy = strategy;
        self
    }

    /// What a thought of [`Strategy::Tree`] is (default [`FreeThoughts`]);
    /// the space's own propose and evaluate prompts replace the built-in ones (prompt
    /// files and texts given to the builder still override them).
    pub fn thoughts(mut self, space: Arc<dyn ThoughtSpace>) -> Self {
        self.thoughts = space;
        self
    }

    /// Sets [`AgentSettings::framing`].
    pub fn framing(mut self, framing: Framing) -> Self {
        self.settings.framing = framing;
        self
    }

    /// See [`AgentSettings::code_actions`].
    pub fn code_actions(mut self, actions: CodeActions) -> Self {
        self.settings.code_actions = actions;
        self
    }

    /// See [`AgentSettings::call_fit`].
    pub fn call_fit(mut self, fit: CallFit) -> Self {
        self.settings.call_fit = fit;
        self
    }

    /// See [`AgentSettings::grounding`].
    pub fn grounding(mut self, grounding: Grounding) -> Self {
        self.settings.grounding = grounding;
        self
    }

    /// See [`AgentSettings::prefetch`].
    pub fn prefetch(mut self, prefetch: Prefetch) -> Self {
        self.settings.prefetch = prefetch;
        self
    }

    /// See [`AgentSettings::recovery_temperature`].
    pub fn recovery_temperature(mut self, temperature: f32) -> Self {
        self.settings.recovery_temperature = temperature;
        self
    }

    /// Adds a call the agent makes before the first model step (see
    /// [`AgentSettings::initial_calls`]).
    pub fn initial_call(mut self, name: impl Into<String>, arguments: serde_json::Value) -> Self {
        self.settings
            .initial_calls
            .push(ToolCall::new(name, arguments));
        self
    }

    /// Calls `handler` with every event of every run, in order. It runs inline in the
    /// run's task, so keep it quick (or use [`AgentBuilder::event_channel`]).
    pub fn on_event(mut self, handler: impl Fn(&AgentEvent) + Send + Sync + 'static) -> Self {
        self.events = Some(Arc::new(handler));
        self
    }

    /// Sends every event of every run into `sender` (events are dropped once the receiver
    /// is gone).
    pub fn event_channel(self, sender: tokio::sync::mpsc::UnboundedSender<AgentEvent>) -> Self {
        self.on_event(move |event| {
            // A closed receiver means nobody is listening any more; the run goes on.
            let _ = sender.send(event.clone());
        })
    }

    /// Reads the prompt files, checks prompts and settings, and builds the agent.
    pub fn build(self) -> Result<Agent, AgentError> {
        let mut prompts = Prompts::default();
        for (kind, text) in self.thoughts.prompts() {
            prompts.set(kind, text);
        }
        for source in self.prompt_sources {
            match source {
                PromptSource::Text(kind, text) => prompts.set(kind, text),
                PromptSource::File(kind, path) => prompts.load_file(kind, &path)?,
                PromptSource::Dir(dir) => prompts.load_dir(&dir)?,
            }
        }
        prompts.validate()?;
        self.settings.validate()?;
        Ok(Agent {
            prompts,
            tools: self.tools,
            format: self.format,
            settings: self.settings,
            events: self.events,
            thoughts: self.thoughts,
        })
    }
}
