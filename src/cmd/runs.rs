//! `jielong runs list|show`: workflow runs kept in the run store.

use jielong::workflow::store::{RunState, RunView, StepStatus};
use serde_json::{json, Value};

use super::workflow::{print_outputs, store, text_of};
use crate::cli::RunsCommand;

/// Runs `jielong runs …`.
pub fn runs(command: RunsCommand) -> anyhow::Result<()> {
    match command {
        RunsCommand::List { json, runs } => list(&store(&runs)?, json),
        RunsCommand::Show {
            id,
            trace,
            json,
            runs,
        } => {
            let view = store(&runs)?.inspect(&id)?;
            if trace {
                for event in view.read_trace()? {
                    println!("{event}");
                }
                Ok(())
            } else if json {
                println!("{}", serde_json::to_string_pretty(&view_json(&view))?);
                Ok(())
            } else {
                show(&view);
                Ok(())
            }
        }
    }
}

fn state_name(state: RunState) -> &'static str {
    match state {
        RunState::Running => "running",
        RunState::Interrupted => "interrupted",
        RunState::Succeeded => "succeeded",
        RunState::Failed => "failed",
        RunState::Stopped => "stopped",
        RunState::Unreadable => "unreadable",
    }
}

fn list(store: &jielong::workflow::store::RunStore, as_json: bool) -> anyhow::Result<()> {
    let runs = store.list()?;
    if as_json {
        for run in &runs {
            let line = match &run.record {
                Ok(record) => json!({
                    "id": run.id.as_str(),
                    "state": state_name(run.state),
                    "workflow": record.workflow_name,
                    "started_at": record.started_at,
                    "attempts": record.attempts,
                    "steps_done": run.steps_done,
                }),
                Err(error) => json!({
                    "id": run.id.as_str(),
                    "state": state_name(run.state),
                    "error": error,
                }),
            };
            println!("{line}");
        }
        return Ok(());
    }
    if runs.is_empty() {
        eprintln!("no runs in {}", store.root().display());
        return Ok(());
    }
    println!(
        "{:<22} {:<12} {:<20} {:>5}  STARTED",
        "RUN", "STATE", "WORKFLOW", "STEPS"
    );
    for run in &runs {
        match &run.record {
            Ok(record) => println!(
                "{:<22} {:<12} {:<20} {:>5}  {}",
                run.id.as_str(),
                state_name(run.state),
                record.workflow_name,
                run.steps_done,
                record.started_at
            ),
            Err(error) => println!(
                "{:<22} {:<12} {error}",
                run.id.as_str(),
                state_name(run.state)
            ),
        }
    }
    Ok(())
}

fn show(view: &RunView) {
    let record = &view.record;
    println!("run {}: {}", view.id.as_str(), record.workflow_name);
    if let Some(path) = &record.workflow_path {
        println!("workflow: {}", path.display());
    }
    println!(
        "state: {} (attempts: {}), started {}{}",
        state_name(view.state),
        record.attempts,
        record.started_at,
        record
            .finished_at
            .as_ref()
            .map(|f| format!(", finished {f}"))
            .unwrap_or_default()
    );
    if let Some(error) = &record.error {
        println!("error: {error}");
    }
    if !record.inputs.is_empty() {
        println!("inputs:");
        for (name, value) in &record.inputs {
            println!("  {name} = {}", text_of(value));
        }
    }
    println!("steps:");
    let mut steps: Vec<_> = view.steps.iter().collect();
    steps.sort_by(|a, b| a.1.started_at.cmp(&b.1.started_at));
    for (id, step) in steps {
        let mark = match step.status {
            StepStatus::Succeeded => "✓",
            StepStatus::Skipped => "↷",
            StepStatus::Failed => "✗",
        };
        let detail = match (&step.error, step.status) {
            (Some(error), _) => error.clone(),
            (None, StepStatus::Skipped) => "skipped".to_string(),
            (None, _) => super::run::one_line(&text_of(&step.output), 100),
        };
        println!(
            "  {mark} {id} ({:.1} s, {} tool calls): {detail}",
            step.elapsed_ms as f64 / 1000.0,
            step.tool_calls
        );
    }
    for (id, count) in &view.items {
        if !view.steps.contains_key(id) {
            println!("  … {id}: {count} items finished, step not finished");
        }
    }
    if let Some(outputs) = &view.outputs {
        println!("outputs:");
        print_outputs(outputs);
    }
}

fn view_json(view: &RunView) -> Value {
    json!({
        "id": view.id.as_str(),
        "state": state_name(view.state),
        "record": view.record,
        "steps": view.steps,
        "items": view.items,
        "outputs": view.outputs,
    })
}
