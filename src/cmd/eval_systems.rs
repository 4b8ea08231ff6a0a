//! The systems of `jielong eval --ask` and `jielong eval --workflow FILE`: `ask` over
//! an index, and a workflow run once per example with its inputs taken from the
//! example's fields.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use jielong::agent::AgentEvent;
use jielong::eval::{Example, Outcome, System, Tokens};
use jielong::retrieval::Index;
use jielong::workflow::{store::RunStore, ModelProvider, RunObserver, RunOptions, Workflow};
use jielong::LanguageModel;
use serde_json::{json, Value};

use super::ask::{answer, Answered, ASK_SYSTEM};
use super::eval::{stop_name, tokens};
use super::run::NoAnswer;
use crate::cli::{AskArgs, ComputeArg, EvalRunArgs, GlobalArgs, IndexDir};

/// `jielong ask` answering each example from an index (its prompt, its citations).
pub(super) struct AskSystem {
    pub(super) global: GlobalArgs,
    pub(super) model: Arc<dyn LanguageModel>,
    pub(super) index: Arc<Index>,
    pub(super) k: u8,
    pub(super) max_steps: usize,
}

impl System for AskSystem {
    fn name(&self) -> String {
        format!("ask:{}", self.global.model)
    }

    fn config(&self) -> Value {
        json!({
            "request": super::request(&self.global),
            "system": ASK_SYSTEM,
            "k": self.k,
            "max_steps": self.max_steps,
        })
    }

    fn answer<'a>(&'a self, example: &'a Example) -> BoxFuture<'a, Outcome> {
        async move {
            let args = AskArgs {
                question: example.input.clone(),
                index: IndexDir { dir: None },
                k: self.k,
                max_steps: self.max_steps,
                trace: None,
                compute: ComputeArg::Auto,
            };
            match answer(&self.global, self.model.as_ref(), self.index.clone(), &args).await {
                Ok(answered) => outcome_of(answered),
                Err(e) => {
                    let mut outcome = Outcome::failed(format!("{e:#}"));
                    if let Some(NoAnswer(stop)) = e.downcast_ref::<NoAnswer>() {
                        outcome.stop = stop_name(stop);
                    }
                    outcome
                }
            }
        }
        .boxed()
    }
}

fn outcome_of(answered: Answered) -> Outcome {
    let sources: Vec<Value> = answered
        .sources
        .iter()
        .map(|s| json!({"number": s.number, "location": s.location(), "title": s.title}))
        .collect();
    let mut outcome = Outcome::answered(answered.answer);
    outcome.tokens = tokens(&answered.usage);
    outcome.steps = answered.steps;
    outcome.tools = vec!["rag_search".to_string(); answered.tool_calls];
    outcome.detail = json!({ "sources": sources, "shown": answered.shown.len() });
    outcome
}

/// A workflow run once per example: each input it maps from a field of the example,
/// the answer one of its outputs. Runs are kept in the eval's output folder
/// (`workflow-runs/`), so each can be inspected with `jielong runs show`.
pub(super) struct WorkflowSystem {
    workflow: Workflow,
    file: PathBuf,
    /// (workflow input, dataset field); the input field's value is the example's
    /// input, any other field its record's value.
    map: Vec<(String, String)>,
    input_field: String,
    output: String,
    models: jielong::LocalModels,
    default_model: String,
    store: RunStore,
}

impl WorkflowSystem {
    /// Reads and checks the workflow against the options and the examples (every
    /// mapped field present), before any model loads.
    pub(super) fn check(
        global: &GlobalArgs,
        args: &EvalRunArgs,
        file: &Path,
        examples: &[Example],
        out: &Path,
    ) -> anyhow::Result<WorkflowSystem> {
        let workflow = Workflow::from_file_in(file, &jielong::workflow_catalog())?;
        let spec = workflow.spec();
        let mut map = Vec::new();
        for entry in &args.map {
            let Some((input, field)) = entry.split_once('=') else {
                anyhow::bail!("--map {entry}: write INPUT=FIELD");
            };
            let (input, field) = (input.trim(), field.trim());
            anyhow::ensure!(
                spec.inputs.contains_key(input),
                "--map {entry}: {} has no input `{input}` (it has: {})",
                file.display(),
                names(spec.inputs.keys())
            );
            map.push((input.to_string(), field.to_string()));
        }
        let required: Vec<&String> = spec
            .inputs
            .iter()
            .filter(|(_, i)| i.default.is_none())
            .map(|(name, _)| name)
            .collect();
        if map.is_empty() {
            // The input field feeds the one input without a default, or the only input.
            let candidates: Vec<&String> = if required.is_empty() {
                spec.inputs.keys().collect()
            } else {
                required.clone()
            };
            match candidates.as_slice() {
                [one] => map.push(((*one).clone(), args.input_field.clone())),
                [] => anyhow::bail!(
                    "{} has no inputs: every example would run the same workflow",
                    file.display()
                ),
                many => anyhow::bail!(
                    "{} has several inputs ({}): say which field feeds each with --map INPUT=FIELD",
                    file.display(),
                    names(many.iter().copied())
                ),
            }
        }
        if let Some(missing) = required
            .iter()
            .find(|r| !map.iter().any(|(input, _)| input == r.as_str()))
        {
            anyhow::bail!(
                "{}: the input `{missing}` has no default and no --map",
                file.display()
            );
        }
        for example in examples {
            for (_, field) in &map {
                anyhow::ensure!(
                    *field == args.input_field || example.record.contains_key(field),
                    "example `{}` has no field `{field}` (for --map)",
                    example.id
                );
            }
        }
        let output = match &args.output {
            Some(name) => {
                anyhow::ensure!(
                    spec.outputs.contains_key(name),
                    "--output {name}: {} has no output `{name}` (it has: {})",
                    file.display(),
                    names(spec.outputs.keys())
                );
                name.clone()
            }
            None => match spec.outputs.keys().collect::<Vec<_>>().as_slice() {
                [one] => (*one).clone(),
                [] => anyhow::bail!("{} has no outputs to grade", file.display()),
                many => anyhow::bail!(
                    "{} has several outputs ({}): choose the answer with --output NAME",
                    file.display(),
                    names(many.iter().copied())
                ),
            },
        };
        let models = jielong::LocalModels::new()
            .with_default_model(global.model.clone())
            .with_session_options(super::session_options(global))
            .with_progress(Arc::new(crate::progress::BarProgress::new()));
        Ok(WorkflowSystem {
            workflow,
            file: file.to_path_buf(),
            map,
            input_field: args.input_field.clone(),
            output,
            models,
            default_model: global.model.clone(),
            store: RunStore::new(out.join("workflow-runs")),
        })
    }

    /// The model the workflow's agents use when it names none (`--model`), loaded
    /// once and shared with the rest of the eval.
    pub(super) async fn default_model(&self) -> anyhow::Result<Arc<dyn LanguageModel>> {
        self.models
            .load(&self.default_model)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.default_model))
    }
}

fn names<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = items.map(String::as_str).collect();
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    }
}

/// What a workflow run's agents used: tokens, tools called in order, model steps.
#[derive(Default)]
struct Tally(Mutex<(Tokens, Vec<String>, usize)>);

impl RunObserver for Tally {
    fn agent(&self, _step: &str, _item: Option<usize>, event: &AgentEvent) {
        let Ok(mut tally) = self.0.lock() else { return };
        match event {
            AgentEvent::StepFinished { usage, .. } => {
                tally.0 += tokens(usage);
                tally.2 += 1;
            }
            AgentEvent::ToolCall { call, .. } => tally.1.push(call.name.clone()),
            _ => {}
        }
    }
}

/// A system shared by reference (the one workflow system of an eval).
pub(super) struct Shared<S>(pub(super) Arc<S>);

impl<S: System> System for Shared<S> {
    fn name(&self) -> String {
        self.0.name()
    }

    fn config(&self) -> Value {
        self.0.config()
    }

    fn answer<'a>(&'a self, example: &'a Example) -> BoxFuture<'a, Outcome> {
        self.0.answer(example)
    }
}

impl System for WorkflowSystem {
    fn name(&self) -> String {
        format!("workflow:{}", self.workflow.spec().name)
    }

    fn config(&self) -> Value {
        json!({
            "file": self.file,
            "hash": self.workflow.hash(),
            "map": self.map,
            "output": self.output,
            "model": self.default_model,
        })
    }

    fn answer<'a>(&'a self, example: &'a Example) -> BoxFuture<'a, Outcome> {
        async move {
            let tally = Arc::new(Tally::default());
            let mut options = RunOptions::new()
                .store(self.store.clone())
                .observer(tally.clone());
            for (input, field) in &self.map {
                let value = if *field == self.input_field {
                    Value::String(example.input.clone())
                } else {
                    example.record.get(field).cloned().unwrap_or(Value::Null)
                };
                options = options.input(input.clone(), value);
            }
            let report = match self.workflow.run(&self.models, options).await {
                Ok(report) => report,
                Err(e) => return Outcome::failed(e.to_string()),
            };
            let mut outcome = match report.outputs.get(&self.output) {
                Some(value) => Outcome::answered(super::workflow::text_of(value)),
                None => Outcome::failed(format!("the run gave no output `{}`", self.output)),
            };
            if let Ok(tally) = tally.0.lock() {
                outcome.tokens = tally.0;
                outcome.tools = tally.1.clone();
                outcome.steps = tally.2;
            }
            outcome.detail = json!({
                "run": report.run_id,
                "outputs": report.outputs,
            });
            outcome
        }
        .boxed()
    }
}
