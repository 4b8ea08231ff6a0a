//! `jielong workflow schema|validate|run`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use jielong::agent::{AgentEvent, TraceWriter};
use jielong::workflow::{
    store::{RunStatus, RunStore},
    RunObserver, RunOptions, Workflow, WorkflowError, WorkflowEvent,
};
use serde_json::{Map, Value};

use crate::cli::{GlobalArgs, RunsDir, WorkflowCommand, WorkflowRunArgs};
use crate::progress::BarProgress;

/// Runs `jielong workflow …`.
pub async fn workflow(global: &GlobalArgs, command: WorkflowCommand) -> anyhow::Result<()> {
    match command {
        WorkflowCommand::Schema => {
            let schema = jielong::workflow::parse::schema();
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(())
        }
        WorkflowCommand::Validate { files } => validate(&files),
        WorkflowCommand::Run(args) => run(global, args).await,
    }
}

/// Validates every file; all faults of all files are printed before failing.
fn validate(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut faults = 0;
    for file in files {
        match Workflow::from_file_in(file, &jielong::workflow_catalog()) {
            Ok(workflow) => eprintln!(
                "{}: ok ({} steps)",
                file.display(),
                workflow.spec().steps.len()
            ),
            Err(WorkflowError::Invalid(diagnostics)) => {
                faults += diagnostics.0.len();
                for d in &diagnostics.0 {
                    eprintln!("{d}");
                }
            }
            Err(e) => {
                faults += 1;
                eprintln!("{e}");
            }
        }
    }
    if faults > 0 {
        return Err(InvalidFiles(faults).into());
    }
    Ok(())
}

/// The run was stopped with Ctrl-C (exit code 130, like a shell).
#[derive(Debug, thiserror::Error)]
#[error("stopped; finished steps are kept: resume with --resume {0}")]
pub struct Interrupted(pub String);

/// `workflow validate` found faults (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0} fault(s) found")]
pub struct InvalidFiles(pub usize);

/// The run store `--runs` names (or the default one).
pub fn store(runs: &RunsDir) -> anyhow::Result<RunStore> {
    Ok(match &runs.dir {
        Some(dir) => RunStore::new(dir.clone()),
        None => RunStore::from_env()?,
    })
}

async fn run(global: &GlobalArgs, args: WorkflowRunArgs) -> anyhow::Result<()> {
    let workflow = Workflow::from_file_in(&args.file, &jielong::workflow_catalog())?;
    let runs = store(&args.runs)?;
    let mut options = RunOptions::new().store(runs.clone());
    for input in &args.inputs {
        let Some((name, value)) = input.split_once('=') else {
            return Err(WorkflowError::Input {
                name: input.clone(),
                message: "write --input NAME=VALUE".to_string(),
            }
            .into());
        };
        options = options.input(name.trim(), value);
    }
    options.resume = args.resume.clone();
    options.concurrency = args.concurrency.map(usize::from);
    let trace = match &args.trace {
        Some(path) => Some(TraceWriter::create(path)?),
        None => None,
    };
    let progress = Arc::new(Progress {
        verbose: global.verbose > 0,
        trace,
        run_id: Mutex::new(None),
        trace_failed: Default::default(),
    });
    options.observer = Some(progress.clone());
    let models = jielong::LocalModels::new()
        .with_default_model(global.model.clone())
        .with_session_options(super::session_options(global))
        .with_progress(Arc::new(BarProgress::new()));
    let mut running = Box::pin(workflow.run(&models, options));
    let finished = tokio::select! {
        report = &mut running => Some(report),
        _ = tokio::signal::ctrl_c() => None,
    };
    let report = match finished {
        Some(report) => report?,
        None => {
            // Dropping the run releases its lock; what finished is saved.
            drop(running);
            let id = progress.run_id.lock().ok().and_then(|id| id.clone());
            let Some(id) = id else {
                anyhow::bail!("stopped before the run started");
            };
            runs.open(&id)?
                .set_status(RunStatus::Stopped, Some("stopped by Ctrl-C".to_string()))?;
            return Err(Interrupted(id).into());
        }
    };
    eprintln!("run {} finished: {}", report.run_id, report.dir.display());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Object(report.outputs))?
        );
    } else {
        print_outputs(&report.outputs);
    }
    Ok(())
}

/// One output: its text; several: `name: text` lines.
pub fn print_outputs(outputs: &Map<String, Value>) {
    if outputs.len() == 1 {
        if let Some(value) = outputs.values().next() {
            println!("{}", text_of(value));
        }
        return;
    }
    for (name, value) in outputs {
        println!("{name}: {}", text_of(value));
    }
}

/// A value as text: strings as they are, other values as JSON.
pub fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".to_string(),
        other => other.to_string(),
    }
}

/// Progress on stderr, and the events to `--trace`.
struct Progress {
    verbose: bool,
    trace: Option<TraceWriter>,
    /// The run's id, once it started (to mark it stopped on Ctrl-C).
    run_id: Mutex<Option<String>>,
    /// Whether a `--trace` line could not be written.
    trace_failed: std::sync::atomic::AtomicBool,
}

impl Progress {
    /// Copies a trace line to `--trace` (stamped with `ts_ms` like the run's own
    /// `trace.jsonl`); a line that cannot be written is warned about once.
    fn write_trace(&self, value: Value) {
        if let Some(trace) = &self.trace {
            if let Err(e) = trace.write(&value) {
                if !self
                    .trace_failed
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    eprintln!("jielong: warning: {e}");
                }
            }
        }
    }
}

impl RunObserver for Progress {
    fn workflow(&self, event: &WorkflowEvent) {
        if let Ok(value) = serde_json::to_value(event) {
            self.write_trace(value);
        }
        match event {
            WorkflowEvent::RunStarted {
                run,
                workflow,
                attempt,
                reused,
            } => {
                if let Ok(mut id) = self.run_id.lock() {
                    *id = Some(run.clone());
                }
                eprintln!("run {run}: {workflow} (attempt {attempt})");
                for step in reused {
                    eprintln!("= {step}: finished earlier, not run again");
                }
            }
            WorkflowEvent::IndexUpdated {
                index,
                changed,
                unchanged,
            } => eprintln!(
                "index {}: {changed} files added or changed, {unchanged} unchanged",
                index.display()
            ),
            WorkflowEvent::StepStarted {
                step,
                action,
                items,
                items_reused,
            } => match items {
                Some(n) if *items_reused > 0 => {
                    eprintln!("▶ {step}: {action} over {n} items ({items_reused} finished earlier)")
                }
                Some(n) => eprintln!("▶ {step}: {action} over {n} items"),
                None => eprintln!("▶ {step}: {action}"),
            },
            WorkflowEvent::ItemFinished { step, item, output } => eprintln!(
                "  {step}[{item}] → {}",
                super::run::one_line(&text_of(output), 120)
            ),
            WorkflowEvent::StepFinished {
                step,
                status,
                output,
                elapsed_ms,
            } => match status {
                jielong::workflow::store::StepStatus::Skipped => {
                    eprintln!("↷ {step}: skipped (`when` was false)")
                }
                _ => eprintln!(
                    "✓ {step} ({:.1} s): {}",
                    *elapsed_ms as f64 / 1000.0,
                    super::run::one_line(&text_of(output), 120)
                ),
            },
            WorkflowEvent::StepFailed { step, error } => eprintln!("✗ {step}: {error}"),
            WorkflowEvent::RunFinished { .. } => {}
        }
    }

    fn agent(&self, step: &str, item: Option<usize>, event: &AgentEvent) {
        if let Some(value) = jielong::workflow::runtime::agent_trace_line(step, item, event) {
            self.write_trace(value);
        }
        super::run::show_progress(event, self.verbose);
    }
}
