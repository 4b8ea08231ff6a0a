//! Running a workflow: the steps as a graph, independent ones concurrently (bounded),
//! each model serving one request at a time, every finished step (and `for_each`
//! element) persisted at once so a crashed run resumes where it was.
//!
//! The order of a run:
//! 1. inputs resolved, the run created (or reopened and checked for `--resume`);
//! 2. the models the agents use loaded, one session each (the model's queue);
//! 3. `rag_search` sources brought up to date in their index (incremental);
//! 4. steps started as soon as the steps they need have finished, at most
//!    `concurrency` at a time; a failed step stops new starts, the running ones finish;
//! 5. outputs rendered and saved.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use jielong_agent::{Agent, Framing, Shots, Wording};
use jielong_agent::{AgentEvent, AgentSettings};
use jielong_chat::tool::ToolRegistry;
use jielong_chat::{LanguageModel, ModelSession, SamplingParams};
use jielong_retrieval::{Index, IngestOptions};
use jielong_tools::builtin::{builtin_registry_with, BuiltinConfig};
use jielong_tools::python::PythonSandbox;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::error::WorkflowError;
use crate::runtime::{ModelProvider, RunObserver, RunOptions, RunReport, WorkflowEvent};
use crate::spec::{AgentSpec, StepAction, StepSpec};
use crate::store::{
    ItemRecord, NewRun, RunDir, RunStatus, RunStore, StepRecord, StepStatus, TraceWriter,
};
use crate::template::{Scope, Templates};
use crate::workflow::Workflow;

/// Steps running at once when the workflow does not say.
pub const DEFAULT_CONCURRENCY: usize = 2;
/// Model calls per agent run when the agent does not say: the library's default
/// ([`AgentSettings::DEFAULT_MAX_STEPS`]).
pub const DEFAULT_MAX_STEPS: usize = AgentSettings::DEFAULT_MAX_STEPS;

/// The key of the model agents use when the workflow has no `models` section.
const IMPLICIT_MODEL: &str = "";

impl Workflow {
    /// Runs the workflow (or resumes a run, with [`RunOptions::resume`]) to the end.
    ///
    /// Every finished step is saved in the run's directory before the next one that
    /// needs it starts; a run that fails or is killed keeps them, and resuming it runs
    /// only what is left. A step fails when its agent stops without an answer or its
    /// tool call fails; the run then fails with [`WorkflowError::StepFailed`].
    pub async fn run(
        &self,
        models: &dyn ModelProvider,
        options: RunOptions,
    ) -> Result<RunReport, WorkflowError> {
        let store = match &options.store {
            Some(store) => store.clone(),
            None => RunStore::from_env()?,
        };
        let mut dir = match &options.resume {
            None => {
                let inputs = self.resolve_inputs(&options.inputs)?;
                store.create(NewRun {
                    workflow_name: self.spec().name.clone(),
                    workflow_path: self.path().map(|p| p.to_path_buf()),
                    workflow_hash: self.hash(),
                    inputs,
                })?
            }
            Some(id) => {
                let mut dir = store.open(id)?;
                if dir.record().workflow_hash != self.hash() {
                    return Err(WorkflowError::Resume {
                        run: id.clone(),
                        message: format!(
                            "it was started from a different version of the workflow ({}); \
                             start a new run",
                            dir.record().workflow_path.as_ref().map_or_else(
                                || dir.record().workflow_name.clone(),
                                |p| p.display().to_string()
                            )
                        ),
                    });
                }
                if !options.inputs.is_empty() {
                    return Err(WorkflowError::Resume {
                        run: id.clone(),
                        message: "a resumed run keeps its inputs; give no --input".to_string(),
                    });
                }
                dir.begin_attempt()?;
                dir
            }
        };
        let result = self.execute(models, &options, &dir).await;
        let (status, error) = match &result {
            Ok(_) => (RunStatus::Succeeded, None),
            Err(e) => (RunStatus::Failed, Some(e.to_string())),
        };
        dir.set_status(status, error)?;
        result
    }

    async fn execute(
        &self,
        models: &dyn ModelProvider,
        options: &RunOptions,
        dir: &RunDir,
    ) -> Result<RunReport, WorkflowError> {
        let run_id = dir.id().to_string();
        let events = Events {
            trace: dir.trace()?,
            observer: options.observer.clone(),
        };
        let inputs = dir.record().inputs.clone();

        // What earlier attempts finished.
        let mut done: Map<String, Value> = Map::new();
        let mut reused = Vec::new();
        for (id, record) in dir.steps()? {
            if matches!(record.status, StepStatus::Succeeded | StepStatus::Skipped)
                && self.graph().needs.contains_key(&id)
            {
                done.insert(id.clone(), record.output);
                reused.push(id);
            }
        }
        events.workflow(&WorkflowEvent::RunStarted {
            run: run_id.clone(),
            workflow: self.spec().name.clone(),
            attempt: dir.record().attempts,
            reused: reused.clone(),
        });

        let pending: Vec<&StepSpec> = self
            .spec()
            .steps
            .iter()
            .filter(|s| !done.contains_key(&s.id.value))
            .collect();
        let models = self.load_models(models, &pending).await?;
        let tools = self.tool_config(&pending, &events).await?;

        let executor = Executor {
            workflow: self,
            templates: Templates::new(),
            models,
            tools,
            dir,
            events,
            permits: Semaphore::new(
                options
                    .concurrency
                    .or(self.spec().concurrency)
                    .unwrap_or(DEFAULT_CONCURRENCY)
                    .max(1),
            ),
        };
        let mut scope = Scope {
            inputs,
            ..Scope::default()
        };
        for (id, output) in &done {
            scope.steps.insert(id.clone(), step_value(output));
        }
        let executed = executor.run_graph(&mut scope, &mut done, &run_id).await?;

        let mut outputs = Map::new();
        for (name, template) in &self.spec().outputs {
            let value = executor
                .templates
                .value_of(&template.value, &scope)
                .map_err(|e| WorkflowError::Output {
                    name: name.clone(),
                    message: e.to_string(),
                })?;
            outputs.insert(name.clone(), value);
        }
        dir.save_outputs(&outputs)?;
        executor.events.workflow(&WorkflowEvent::RunFinished {
            run: run_id.clone(),
            ok: true,
            outputs: outputs.clone(),
        });
        Ok(RunReport {
            run_id,
            dir: dir.path().to_path_buf(),
            outputs,
            steps: done,
            executed,
            reused,
        })
    }

    /// Loads each model the pending agent steps use and opens its session.
    async fn load_models(
        &self,
        provider: &dyn ModelProvider,
        pending: &[&StepSpec],
    ) -> Result<HashMap<String, LoadedModel>, WorkflowError> {
        let mut keys = BTreeSet::new();
        for step in pending {
            if let StepAction::Agent(agent) = step.action() {
                if let Some(spec) = self.spec().agents.get(&agent.value) {
                    keys.insert(self.model_key(spec));
                }
            }
        }
        let mut loaded = HashMap::new();
        for key in keys {
            let (reference, mut session_options, sampling) = match self.spec().models.get(&key) {
                Some(spec) => {
                    let reference = spec
                        .served_reference()
                        .unwrap_or_else(|| model_reference(self, &spec.model.value));
                    let mut options = provider.session_options();
                    if spec.ctx_size.is_some() {
                        options.context_size = spec.ctx_size;
                    }
                    if spec.threads.is_some() {
                        options.threads = spec.threads;
                    }
                    let mut sampling = SamplingParams::default();
                    if let Some(t) = spec.temperature {
                        sampling.temperature = t;
                    }
                    if let Some(k) = spec.top_k {
                        sampling.top_k = k;
                    }
                    if let Some(p) = spec.top_p {
                        sampling.top_p = p;
                    }
                    if let Some(p) = spec.min_p {
                        sampling.min_p = p;
                    }
                    if let Some(seed) = spec.seed {
                        sampling.seed = seed;
                    }
                    (reference, options, sampling)
                }
                None => (
                    provider.default_model(),
                    provider.session_options(),
                    SamplingParams::default(),
                ),
            };
            let name = if key == IMPLICIT_MODEL {
                reference.clone()
            } else {
                key.clone()
            };
            let model =
                provider
                    .load(&reference)
                    .await
                    .map_err(|message| WorkflowError::Model {
                        model: name.clone(),
                        message,
                    })?;
            // Several sequences are not needed: one request at a time per model.
            session_options.max_sequences = session_options.max_sequences.max(1);
            let session =
                model
                    .open_session(&session_options)
                    .map_err(|e| WorkflowError::Model {
                        model: name.clone(),
                        message: e.to_string(),
                    })?;
            loaded.insert(
                key,
                LoadedModel {
                    model,
                    session: tokio::sync::Mutex::new(session),
                    sampling,
                },
            );
        }
        Ok(loaded)
    }

    /// The `models` key an agent uses ([`IMPLICIT_MODEL`] for the default model).
    fn model_key(&self, agent: &AgentSpec) -> String {
        match (&agent.model, self.spec().models.len()) {
            (Some(key), _) => key.value.clone(),
            (None, 1) => self
                .spec()
                .models
                .keys()
                .next()
                .cloned()
                .unwrap_or_default(),
            (None, _) => IMPLICIT_MODEL.to_string(),
        }
    }

    /// The built-in tools' configuration, with `rag_search` sources brought up to date
    /// when a pending step can search.
    async fn tool_config(
        &self,
        pending: &[&StepSpec],
        events: &Events,
    ) -> Result<BuiltinConfig, WorkflowError> {
        let spec = &self.spec().tools;
        let mut config = BuiltinConfig::default();
        if let Some(python) = &spec.python {
            let mut sandbox = PythonSandbox::default().allow_unsandboxed(python.unsandboxed);
            if let Some(timeout) = python.timeout {
                sandbox = sandbox.wall_time(timeout).cpu_time(timeout);
            }
            config.python = sandbox;
        }
        config.web_search = spec.web_search.clone();
        if let Some(fetch) = &spec.fetch_url {
            config.fetch_url = fetch.clone();
        }
        if let Some(rag) = &spec.rag_search {
            let index_dir = self.resolve_path(&rag.index.value);
            config.rag_index = Some(index_dir.clone());
            config.rag_passages = rag.passages;
            let searches = pending
                .iter()
                .any(|step| self.step_tools(step).iter().any(|t| t == "rag_search"));
            if searches && !rag.sources.is_empty() {
                let sources: Vec<_> = rag
                    .sources
                    .iter()
                    .map(|s| self.resolve_path(&s.value))
                    .collect();
                // Reading and indexing files blocks: off the async threads.
                let dir = index_dir.clone();
                let report = tokio::task::spawn_blocking(move || {
                    Index::open_or_create(&dir)?.ingest(
                        &sources,
                        &IngestOptions::default(),
                        &jielong_retrieval::NoProgress,
                    )
                })
                .await
                .map_err(|e| {
                    WorkflowError::ToolSetup(format!("rag_search: indexing stopped: {e}"))
                })?
                .map_err(|e| WorkflowError::ToolSetup(format!("rag_search: {e}")))?;
                events.workflow(&WorkflowEvent::IndexUpdated {
                    index: index_dir,
                    changed: report.added + report.updated,
                    unchanged: report.unchanged,
                });
            }
        }
        Ok(config)
    }

    /// The tools a step may call.
    fn step_tools(&self, step: &StepSpec) -> Vec<String> {
        match step.action() {
            StepAction::Agent(agent) => self
                .spec()
                .agents
                .get(&agent.value)
                .map(|a| a.tools.iter().map(|t| t.value.clone()).collect())
                .unwrap_or_default(),
            StepAction::Tool(tool) => vec![tool.value.clone()],
            StepAction::Missing => Vec::new(),
        }
    }
}

/// A model reference from the file: a relative `.gguf` path is anchored at the
/// workflow's folder; names and `hf:` references pass as they are.
fn model_reference(workflow: &Workflow, reference: &str) -> String {
    let path = std::path::Path::new(reference);
    if reference.ends_with(".gguf") && !reference.starts_with("hf:") && path.is_relative() {
        workflow.resolve_path(path).display().to_string()
    } else {
        reference.to_string()
    }
}

/// `steps.<id>` as templates see it.
fn step_value(output: &Value) -> Value {
    let mut map = Map::new();
    map.insert("output".to_string(), output.clone());
    Value::Object(map)
}

/// A loaded model and its one session: requests wait for the lock (the model queue).
struct LoadedModel {
    model: Arc<dyn LanguageModel>,
    session: tokio::sync::Mutex<Box<dyn ModelSession>>,
    sampling: SamplingParams,
}

/// Where events go: the run's trace file and the observer.
#[derive(Clone)]
struct Events {
    trace: TraceWriter,
    observer: Option<Arc<dyn RunObserver>>,
}

impl Events {
    /// Appends a trace line (the writer adds the time, `ts_ms`). A trace that cannot
    /// be written is warned about, never fatal to the run.
    fn record(&self, value: Option<Value>) {
        let Some(value) = value else { return };
        if let Err(e) = self.trace.write(&value) {
            tracing::warn!("cannot write the run's trace: {e}");
        }
    }

    fn workflow(&self, event: &WorkflowEvent) {
        self.record(serde_json::to_value(event).ok());
        if let Some(observer) = &self.observer {
            observer.workflow(event);
        }
    }

    fn agent(&self, step: &str, item: Option<usize>, event: &AgentEvent) {
        self.record(crate::runtime::agent_trace_line(step, item, event));
        if let Some(observer) = &self.observer {
            observer.agent(step, item, event);
        }
    }
}

/// What one run of a step (or of one `for_each` element) produced.
struct Outcome {
    output: Value,
    tool_calls: usize,
    tokens: Option<u64>,
}

/// Why a step failed.
struct StepError(String);

struct Executor<'a> {
    workflow: &'a Workflow,
    templates: Templates,
    models: HashMap<String, LoadedModel>,
    tools: BuiltinConfig,
    dir: &'a RunDir,
    events: Events,
    permits: Semaphore,
}

impl Executor<'_> {
    /// Runs the pending steps in dependency order; returns the ids it ran.
    async fn run_graph(
        &self,
        scope: &mut Scope,
        done: &mut Map<String, Value>,
        run_id: &str,
    ) -> Result<Vec<String>, WorkflowError> {
        let graph = self.workflow.graph();
        let steps: HashMap<&str, &StepSpec> = self
            .workflow
            .spec()
            .steps
            .iter()
            .map(|s| (s.id.value.as_str(), s))
            .collect();
        let mut started: BTreeSet<String> = done.keys().cloned().collect();
        let mut executed = Vec::new();
        let mut running = FuturesUnordered::new();
        let mut failure: Option<(String, String)> = None;
        loop {
            if failure.is_none() {
                for id in &graph.order {
                    if started.contains(id) {
                        continue;
                    }
                    let ready = graph
                        .needs
                        .get(id)
                        .is_none_or(|needs| needs.iter().all(|n| done.contains_key(n)));
                    let Some(step) = steps.get(id.as_str()) else {
                        continue;
                    };
                    if ready {
                        started.insert(id.clone());
                        let snapshot = scope.clone();
                        running.push(async move {
                            let result = self.run_step(step, snapshot).await;
                            (step.id.value.clone(), result)
                        });
                    }
                }
            }
            let Some((id, result)) = running.next().await else {
                break;
            };
            match result {
                Ok(output) => {
                    scope.steps.insert(id.clone(), step_value(&output));
                    done.insert(id.clone(), output);
                    executed.push(id);
                }
                Err(StepError(message)) => {
                    if failure.is_none() {
                        failure = Some((id, message));
                    }
                }
            }
        }
        if let Some((step, message)) = failure {
            self.events.workflow(&WorkflowEvent::RunFinished {
                run: run_id.to_string(),
                ok: false,
                outputs: Map::new(),
            });
            return Err(WorkflowError::StepFailed {
                run: run_id.to_string(),
                step,
                message,
            });
        }
        Ok(executed)
    }

    /// Runs one step to its persisted record.
    async fn run_step(&self, step: &StepSpec, scope: Scope) -> Result<Value, StepError> {
        let id = step.id.value.as_str();
        let started_at = crate::store::now_rfc3339();
        let clock = Instant::now();
        let result = self.step_outcome(step, &scope).await;
        let elapsed_ms = clock.elapsed().as_millis() as u64;
        let (record, returned) = match result {
            Ok((status, outcome)) => (
                StepRecord {
                    id: id.to_string(),
                    status,
                    output: outcome.output.clone(),
                    started_at,
                    finished_at: crate::store::now_rfc3339(),
                    elapsed_ms,
                    tool_calls: outcome.tool_calls,
                    tokens: outcome.tokens,
                    error: None,
                },
                Ok((status, outcome.output)),
            ),
            Err(StepError(message)) => (
                StepRecord {
                    id: id.to_string(),
                    status: StepStatus::Failed,
                    output: Value::Null,
                    started_at,
                    finished_at: crate::store::now_rfc3339(),
                    elapsed_ms,
                    tool_calls: 0,
                    tokens: None,
                    error: Some(message.clone()),
                },
                Err(StepError(message)),
            ),
        };
        if let Err(e) = self.dir.save_step(&record) {
            return Err(StepError(format!("cannot save the step's result: {e}")));
        }
        match returned {
            Ok((status, output)) => {
                self.events.workflow(&WorkflowEvent::StepFinished {
                    step: id.to_string(),
                    status,
                    output: output.clone(),
                    elapsed_ms,
                });
                Ok(output)
            }
            Err(StepError(message)) => {
                self.events.workflow(&WorkflowEvent::StepFailed {
                    step: id.to_string(),
                    error: message.clone(),
                });
                Err(StepError(message))
            }
        }
    }

    async fn step_outcome(
        &self,
        step: &StepSpec,
        scope: &Scope,
    ) -> Result<(StepStatus, Outcome), StepError> {
        let id = step.id.value.as_str();
        if let Some(when) = &step.when {
            let run = self
                .templates
                .condition(&when.value, scope)
                .map_err(|e| StepError(format!("`when`: {e}")))?;
            if !run {
                return Ok((
                    StepStatus::Skipped,
                    Outcome {
                        output: Value::Null,
                        tool_calls: 0,
                        tokens: None,
                    },
                ));
            }
        }
        let action = match step.action() {
            StepAction::Agent(a) => format!("agent {}", a.value),
            StepAction::Tool(t) => format!("tool {}", t.value),
            StepAction::Missing => return Err(StepError("no agent or tool".to_string())),
        };
        let Some(for_each) = &step.for_each else {
            self.events.workflow(&WorkflowEvent::StepStarted {
                step: id.to_string(),
                action,
                items: None,
                items_reused: 0,
            });
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| StepError("the run was closed".into()))?;
            return self
                .run_unit(step, scope, None)
                .await
                .map(|o| (StepStatus::Succeeded, o));
        };

        let list = self
            .templates
            .eval(&for_each.value, scope)
            .map_err(|e| StepError(format!("`for_each`: {e}")))?;
        let Value::Array(items) = list else {
            return Err(StepError(format!(
                "`for_each` must give a list; it gave {list}"
            )));
        };
        let earlier = self
            .dir
            .items(id)
            .map_err(|e| StepError(format!("cannot read the step's finished elements: {e}")))?;
        let earlier: HashMap<usize, ItemRecord> = earlier
            .into_iter()
            .filter(|(i, _)| *i < items.len())
            .collect();
        self.events.workflow(&WorkflowEvent::StepStarted {
            step: id.to_string(),
            action,
            items: Some(items.len()),
            items_reused: earlier.len(),
        });
        let mut outputs = vec![Value::Null; items.len()];
        let mut tool_calls = 0;
        let mut tokens = 0u64;
        let mut running = FuturesUnordered::new();
        for (index, item) in items.iter().enumerate() {
            if let Some(record) = earlier.get(&index) {
                outputs[index] = record.output.clone();
                tool_calls += record.tool_calls;
                continue;
            }
            let mut item_scope = scope.clone();
            item_scope.item = Some(item.clone());
            item_scope.index = Some(index);
            running.push(async move {
                let Ok(_permit) = self.permits.acquire().await else {
                    return (index, Err(StepError("the run was closed".into())));
                };
                let clock = Instant::now();
                let outcome = match self.run_unit(step, &item_scope, Some(index)).await {
                    Ok(outcome) => outcome,
                    Err(e) => return (index, Err(e)),
                };
                // Saved before the permit goes: a kill after this point keeps it.
                let record = ItemRecord {
                    index,
                    output: outcome.output.clone(),
                    elapsed_ms: clock.elapsed().as_millis() as u64,
                    tool_calls: outcome.tool_calls,
                };
                if let Err(e) = self.dir.save_item(id, &record) {
                    return (
                        index,
                        Err(StepError(format!("cannot save element {index}: {e}"))),
                    );
                }
                (index, Ok(outcome))
            });
        }
        let mut failure = None;
        while let Some((index, result)) = running.next().await {
            match result {
                Ok(outcome) => {
                    self.events.workflow(&WorkflowEvent::ItemFinished {
                        step: id.to_string(),
                        item: index,
                        output: outcome.output.clone(),
                    });
                    tool_calls += outcome.tool_calls;
                    tokens += outcome.tokens.unwrap_or(0);
                    outputs[index] = outcome.output;
                }
                Err(StepError(message)) => {
                    failure.get_or_insert(format!("element {index}: {message}"));
                }
            }
        }
        if let Some(message) = failure {
            return Err(StepError(message));
        }
        Ok((
            StepStatus::Succeeded,
            Outcome {
                output: Value::Array(outputs),
                tool_calls,
                tokens: Some(tokens),
            },
        ))
    }

    /// One agent run or tool call.
    async fn run_unit(
        &self,
        step: &StepSpec,
        scope: &Scope,
        item: Option<usize>,
    ) -> Result<Outcome, StepError> {
        match step.action() {
            StepAction::Agent(agent) => self.run_agent(step, &agent.value, scope, item).await,
            StepAction::Tool(tool) => self.run_tool(step, &tool.value, scope).await,
            StepAction::Missing => Err(StepError("no agent or tool".to_string())),
        }
    }

    async fn run_tool(
        &self,
        step: &StepSpec,
        tool: &str,
        scope: &Scope,
    ) -> Result<Outcome, StepError> {
        let args = match &step.args {
            Some(args) => self
                .templates
                .value_with_expressions(&args.value, scope)
                .map_err(|e| StepError(format!("`args`: {e}")))?,
            None => Value::Object(Map::new()),
        };
        let registry = builtin_registry_with(&[tool.to_string()], &self.tools)
            .map_err(|e| StepError(e.to_string()))?;
        let output = registry
            .call(tool, args)
            .await
            .map_err(|e| StepError(format!("{tool}: {e}")))?;
        Ok(Outcome {
            output,
            tool_calls: 1,
            tokens: None,
        })
    }

    async fn run_agent(
        &self,
        step: &StepSpec,
        agent_key: &str,
        scope: &Scope,
        item: Option<usize>,
    ) -> Result<Outcome, StepError> {
        let id = step.id.value.clone();
        let spec = self
            .workflow
            .spec()
            .agents
            .get(agent_key)
            .ok_or_else(|| StepError(format!("no agent `{agent_key}`")))?;
        let task = match &step.input {
            Some(input) => self
                .templates
                .render(&input.value, scope)
                .map_err(|e| StepError(format!("`input`: {e}")))?,
            None => return Err(StepError("an agent step needs `input`".to_string())),
        };
        let tools: Vec<String> = spec.tools.iter().map(|t| t.value.clone()).collect();
        let registry: ToolRegistry =
            builtin_registry_with(&tools, &self.tools).map_err(|e| StepError(e.to_string()))?;
        let key = self.workflow.model_key(spec);
        let loaded = self
            .models
            .get(&key)
            .ok_or_else(|| StepError(format!("model `{key}` is not loaded")))?;
        let system = match (&spec.system, &spec.system_file) {
            (Some(text), _) => Some(text.clone()),
            (None, Some(file)) => {
                let path = self.workflow.resolve_path(&file.value);
                Some(std::fs::read_to_string(&path).map_err(|e| {
                    StepError(format!(
                        "cannot read the system prompt {}: {e}",
                        path.display()
                    ))
                })?)
            }
            (None, None) => None,
        };
        let shots = match &spec.few_shot {
            Some(file) => {
                let path = self.workflow.resolve_path(&file.value);
                Shots::from_jsonl(&path, "question", "answer", spec.shots.unwrap_or(4))
                    .map_err(|e| StepError(e.to_string()))?
            }
            None => Shots::default(),
        };
        let wording = match (&spec.instruction, &spec.instruction_file) {
            (Some(text), _) => Wording::Instruction(text.value.clone()),
            (None, Some(file)) => {
                let path = self.workflow.resolve_path(&file.value);
                Wording::Instruction(std::fs::read_to_string(&path).map_err(|e| {
                    StepError(format!(
                        "cannot read the instruction {}: {e}",
                        path.display()
                    ))
                })?)
            }
            (None, None) => spec
                .technique
                .as_ref()
                .map(|t| t.value)
                .unwrap_or_default()
                .into(),
        };
        let framing = Framing { wording, shots };
        let events = self.events.clone();
        let event_step = id.clone();
        let mut settings = spec.agent_settings(&loaded.sampling).map_err(StepError)?;
        settings.framing = framing;
        let mut builder = Agent::for_model(loaded.model.as_ref())
            .tools(registry)
            .settings(settings)
            .on_event(move |event| events.agent(&event_step, item, event));
        if let Some(space) = spec
            .thoughts
            .as_ref()
            .and_then(|t| self.workflow.catalog().thought_spaces.get(&t.value))
        {
            builder = builder.thoughts(space);
        }
        if let Some(system) = system {
            builder = builder.system_prompt(system);
        }
        let agent = builder.build().map_err(|e| StepError(e.to_string()))?;
        // The model's queue: one agent at a time per model.
        let mut session = loaded.session.lock().await;
        let run = agent.run(session.as_mut(), &task).await;
        drop(session);
        let tokens = Some((run.usage.evaluated_tokens + run.usage.generated_tokens) as u64);
        match (run.stop.is_answered(), run.answer) {
            (true, Some(answer)) => Ok(Outcome {
                output: Value::String(answer),
                tool_calls: run.tool_calls,
                tokens,
            }),
            (_, _) => Err(StepError(format!(
                "the agent stopped without an answer: {}",
                run.stop
            ))),
        }
    }
}
