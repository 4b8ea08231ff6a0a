//! What a run needs from its host: models ([`ModelProvider`]), where runs are kept and
//! with which inputs ([`RunOptions`]), who watches ([`RunObserver`], [`WorkflowEvent`]),
//! and what it reports ([`RunReport`]).

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use jielong_agent::AgentEvent;
use jielong_chat::{LanguageModel, SessionOptions};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::store::{RunStore, StepStatus};

/// Loads the models a workflow names. The `jielong` facade implements it over the
/// model cache and llama.cpp (`jielong::LocalModels`); tests can hand out scripted
/// models.
pub trait ModelProvider: Send + Sync {
    /// Loads `reference` (a catalog name, a `.gguf` path or an `hf:` reference; a
    /// relative path is already anchored at the workflow's folder; a model served by
    /// an OpenAI-compatible server, a `models` entry with `base_url`, is
    /// `openai:<base_url>#<model>`, plus `;api_key_env=<VAR>` when it names a key). The
    /// error is one line saying what failed.
    fn load<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn LanguageModel>, String>>;

    /// The model agents use when the workflow has no `models` section.
    fn default_model(&self) -> String;

    /// Session settings for a model the workflow does not tune (threads, context).
    fn session_options(&self) -> SessionOptions {
        SessionOptions::default()
    }
}

/// How to run a workflow: inputs, a new run or a resumed one, where runs are kept.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Input values by name (converted to the declared types; see
    /// [`Workflow::resolve_inputs`](crate::Workflow::resolve_inputs)).
    pub inputs: Map<String, Value>,
    /// Continue this run instead of starting one: finished steps are not run again.
    pub resume: Option<String>,
    /// Where runs are kept (default: [`RunStore::from_env`]).
    pub store: Option<RunStore>,
    /// Receives progress events.
    pub observer: Option<Arc<dyn RunObserver>>,
    /// Overrides `concurrency` of the workflow.
    pub concurrency: Option<usize>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("inputs", &self.inputs)
            .field("resume", &self.resume)
            .field(
                "store",
                &self.store.as_ref().map(|s| s.root().to_path_buf()),
            )
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl RunOptions {
    /// A new run with no inputs given (defaults apply).
    pub fn new() -> Self {
        RunOptions::default()
    }

    /// Gives an input (text is converted to the input's type).
    pub fn input(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.inputs.insert(name.into(), value.into());
        self
    }

    /// Resumes the run `id`.
    pub fn resume(mut self, id: impl Into<String>) -> Self {
        self.resume = Some(id.into());
        self
    }

    /// Keeps runs under `store`.
    pub fn store(mut self, store: RunStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Runs at most `steps` steps at once (overrides the workflow's `concurrency`).
    pub fn concurrency(mut self, steps: usize) -> Self {
        self.concurrency = Some(steps);
        self
    }

    /// Sends progress to `observer`.
    pub fn observer(mut self, observer: Arc<dyn RunObserver>) -> Self {
        self.observer = Some(observer);
        self
    }
}

/// Watches a run. Called from the run's task; keep it quick.
pub trait RunObserver: Send + Sync {
    /// A step-level event.
    fn workflow(&self, _event: &WorkflowEvent) {}

    /// An event of an agent working on `step` (and its `for_each` `item`).
    fn agent(&self, _step: &str, _item: Option<usize>, _event: &AgentEvent) {}
}

/// What happens to a run and its steps. Written to the run's `trace.jsonl` (tagged
/// by `type`: `run_started`, `index_updated`, `workflow_step_started`,
/// `workflow_item_finished`, `workflow_step_finished`, `workflow_step_failed`,
/// `run_finished`), between the agents' own events (the format of `jielong run
/// --trace`, their own `step` number kept), which carry the workflow step's id in
/// `workflow_step` (and the `for_each` element in `item`). Every line also has `ts_ms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkflowEvent {
    /// The run (or an attempt of it) started.
    RunStarted {
        /// The run.
        run: String,
        /// The workflow's name.
        workflow: String,
        /// 1 for a new run, then one more per resume.
        attempt: u32,
        /// Steps finished in earlier attempts (not run again).
        reused: Vec<String>,
    },
    /// `rag_search` sources were brought up to date in the index.
    IndexUpdated {
        /// The index.
        index: PathBuf,
        /// Files added or changed.
        changed: usize,
        /// Files that were already current.
        unchanged: usize,
    },
    /// A step started.
    #[serde(rename = "workflow_step_started")]
    StepStarted {
        /// The step.
        step: String,
        /// `agent NAME` or `tool NAME`.
        action: String,
        /// Elements of its `for_each` list (`None` for a plain step).
        items: Option<usize>,
        /// `for_each` elements finished in earlier attempts.
        items_reused: usize,
    },
    /// One `for_each` element finished.
    #[serde(rename = "workflow_item_finished")]
    ItemFinished {
        /// The step.
        step: String,
        /// The element's position.
        item: usize,
        /// Its output.
        output: Value,
    },
    /// A step finished (succeeded, or skipped by `when`).
    #[serde(rename = "workflow_step_finished")]
    StepFinished {
        /// The step.
        step: String,
        /// Succeeded or skipped.
        status: StepStatus,
        /// Its output.
        output: Value,
        /// Time taken.
        elapsed_ms: u64,
    },
    /// A step failed.
    #[serde(rename = "workflow_step_failed")]
    StepFailed {
        /// The step.
        step: String,
        /// Why.
        error: String,
    },
    /// The run ended.
    RunFinished {
        /// The run.
        run: String,
        /// Whether every step succeeded.
        ok: bool,
        /// The outputs (when it succeeded).
        outputs: Map<String, Value>,
    },
}

/// The field of an agent's trace line that holds the workflow step's id.
pub const WORKFLOW_STEP_FIELD: &str = "workflow_step";

/// An agent's event as a trace line: its `jielong run --trace` JSON object (with the
/// agent's own `step` number, when the event has one) plus the workflow step's id in
/// [`WORKFLOW_STEP_FIELD`] and the `for_each` element in `item`.
pub fn agent_trace_line(step: &str, item: Option<usize>, event: &AgentEvent) -> Option<Value> {
    let mut value = serde_json::to_value(event).ok()?;
    if let Value::Object(map) = &mut value {
        map.insert(
            WORKFLOW_STEP_FIELD.to_string(),
            Value::String(step.to_string()),
        );
        if let Some(item) = item {
            map.insert("item".to_string(), Value::from(item));
        }
    }
    Some(value)
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run's id (for `jielong runs show` and `--resume`).
    pub run_id: String,
    /// The run's directory.
    pub dir: PathBuf,
    /// The rendered `outputs`.
    pub outputs: Map<String, Value>,
    /// Every step's output, by id.
    pub steps: Map<String, Value>,
    /// Steps run in this attempt.
    pub executed: Vec<String>,
    /// Steps taken from earlier attempts.
    pub reused: Vec<String>,
}
