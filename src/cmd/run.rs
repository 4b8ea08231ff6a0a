//! `jielong run "TASK"`: the agent (model + tools) solves a task; progress goes to
//! stderr, the answer to stdout. `--tools none` answers without tools, streaming.

use std::io::Write;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use jielong::agent::{Agent, AgentSettings};
use jielong::agent::{AgentEvent, AgentRun, StopReason, Strategy, ThoughtOutcome, TraceWriter};
use jielong::tools::builtin::builtin_registry_with;
use jielong::FinishReason;

use crate::cli::{GlobalArgs, RunArgs};

/// The agent stopped without an answer (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("the agent stopped without an answer: {0}")]
pub struct NoAnswer(pub StopReason);

/// Runs `jielong run`.
pub async fn run(global: &GlobalArgs, args: RunArgs) -> anyhow::Result<()> {
    let request = super::request(global);
    request.validate()?;
    let tools: Vec<String> = args
        .tools
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty() && t != "none")
        .collect();
    let registry = builtin_registry_with(&tools, &super::tools::config(&args.tool_options))?;
    let framing = super::framing(&args.framing, "question", "answer")?;
    let file = args
        .settings
        .as_deref()
        .map(super::settings::SettingsFile::read)
        .transpose()?;
    let strategy = args.strategy()?;
    // A settings file's strategy counts unless --strategy is given.
    let chosen = match file.as_ref().map(|f| f.strategy()).transpose()?.flatten() {
        Some(strategy) if args.strategy.is_none() => Some(strategy),
        _ => args.strategy.is_some().then(|| strategy.clone()),
    };
    let model = super::load_model(global).await?;
    let mut session = model.open_session(&super::session_options(global))?;
    // Without tools, the default and the leaves are the model's own answer, streamed.
    let leaf = chosen.as_ref().map_or(true, Strategy::is_leaf);
    if registry.is_empty() && leaf {
        return plain_answer(global, session.as_mut(), &args, &framing).await;
    }

    let settings = AgentOptions {
        system: args.system.clone(),
        strategy,
        max_steps: args.max_steps,
        trace: args.trace.clone(),
        initial_calls: Vec::new(),
        code_actions: args.code_actions.into(),
        prompts: args.prompts.clone(),
        framing,
        thoughts: super::thoughts(&args.tree)?,
        settings: file,
    };
    let run = drive(
        global,
        model.as_ref(),
        session.as_mut(),
        registry,
        &settings,
        &args.task,
    )
    .await?;
    finish(run)
}

/// How `run` and `ask` set up their agent.
#[derive(Clone)]
pub struct AgentOptions {
    /// Replaces the system prompt.
    pub system: Option<String>,
    /// How the agent works the task.
    pub strategy: Strategy,
    /// The most model calls.
    pub max_steps: usize,
    /// Where to write the JSONL trace.
    pub trace: Option<std::path::PathBuf>,
    /// Calls the agent makes before the first step.
    pub initial_calls: Vec<jielong::ToolCall>,
    /// How the model writes code for `python`.
    pub code_actions: jielong::agent::CodeActions,
    /// A folder of prompt files replacing the built-in ones of the same name.
    pub prompts: Option<std::path::PathBuf>,
    /// Worked examples and the technique the task is worded with.
    pub framing: jielong::agent::Framing,
    /// What a thought of a tree-of-thoughts search is.
    pub thoughts: std::sync::Arc<dyn jielong::agent::ThoughtSpace>,
    /// A settings file over these options (flags given on the command line win).
    pub settings: Option<super::settings::SettingsFile>,
}

/// The agent `options` describe, on `model`'s call format, with `registry`'s tools;
/// every event goes to `on_event`.
pub fn build_agent(
    global: &GlobalArgs,
    model: &dyn jielong::LanguageModel,
    registry: jielong::chat::tool::ToolRegistry,
    options: &AgentOptions,
    on_event: impl Fn(&AgentEvent) + Send + Sync + 'static,
) -> anyhow::Result<Agent> {
    let mut builder = Agent::for_model(model)
        .tools(registry)
        .settings(agent_settings(global, options)?)
        .thoughts(options.thoughts.clone())
        .on_event(on_event);
    if let Some(dir) = &options.prompts {
        builder = builder.prompts_dir(dir.clone());
    }
    if let Some(system) = &options.system {
        builder = builder.system_prompt(system.clone());
    }
    Ok(builder.build()?)
}

/// The agent's settings: what the flags and `options` say, with the settings file's
/// keys over them and the flags given on the command line over those.
pub fn agent_settings(
    global: &GlobalArgs,
    options: &AgentOptions,
) -> anyhow::Result<AgentSettings> {
    let request = super::request(global);
    let settings = AgentSettings {
        max_steps: options.max_steps,
        max_tokens_per_step: global.max_tokens,
        sampling: request.sampling.clone(),
        strategy: options.strategy.clone(),
        code_actions: options.code_actions,
        framing: options.framing.clone(),
        initial_calls: options.initial_calls.clone(),
        ..AgentSettings::default()
    };
    match &options.settings {
        Some(file) => file.over(&settings, &global.given),
        None => Ok(settings),
    }
}

/// Runs an agent on `task`: progress on stderr, events to the trace file, the run's
/// figures with -v.
pub async fn drive(
    global: &GlobalArgs,
    model: &dyn jielong::LanguageModel,
    session: &mut dyn jielong::ModelSession,
    registry: jielong::chat::tool::ToolRegistry,
    options: &AgentOptions,
    task: &str,
) -> anyhow::Result<AgentRun> {
    let trace = match &options.trace {
        Some(path) => Some(TraceWriter::create(path)?),
        None => None,
    };
    let verbose = global.verbose > 0;
    // The first trace line that could not be written (the run goes on without it).
    let trace_failure = Arc::new(Mutex::new(None));
    let failure = trace_failure.clone();
    let agent = build_agent(global, model, registry, options, move |event| {
        show_progress(event, verbose);
        if let Some(trace) = &trace {
            if let Err(e) = trace.write(event) {
                if let Ok(mut first) = failure.lock() {
                    first.get_or_insert(e);
                }
            }
        }
    })?;
    let run = agent.run(session, task).await;
    if let Some(e) = trace_failure.lock().ok().and_then(|mut first| first.take()) {
        return Err(e).context("the trace is incomplete");
    }
    if verbose {
        eprintln!(
            "{} steps, {} tool calls, {:.1} s; {}",
            run.steps,
            run.tool_calls,
            run.elapsed.as_secs_f64(),
            super::usage_line(&run.usage)
        );
        if let Some(ratio) = run.evaluated_per_distinct() {
            eprintln!(
                "prompt tokens evaluated over the run: {} for {} distinct ({ratio:.2}x)",
                run.usage.evaluated_tokens, run.distinct_prompt_tokens
            );
        }
    }
    Ok(run)
}

/// Prints the answer, or fails with [`NoAnswer`] (printing a partial answer first);
/// an unverified answer says so on stderr.
pub fn finish(run: AgentRun) -> anyhow::Result<()> {
    if let (Some(why), Some(_)) = (&run.unverified, &run.answer) {
        eprintln!("[unverified: {why}; the answer below was written without a checked result]");
    }
    match (run.stop, run.answer) {
        (StopReason::Answered, Some(answer)) => {
            println!("{answer}");
            Ok(())
        }
        (stop, partial) => {
            if let Some(partial) = partial {
                println!("{partial}");
            }
            Err(NoAnswer(stop).into())
        }
    }
}

/// One line of progress per event on stderr (tokens only with -v).
pub(crate) fn show_progress(event: &AgentEvent, verbose: bool) {
    match event {
        AgentEvent::StepStarted { step, phase } if verbose => eprintln!("[step {step}: {phase:?}]"),
        AgentEvent::ToolCall { call, .. } => {
            eprintln!(
                "→ {}({})",
                call.name,
                one_line(&call.arguments.to_string(), 160)
            )
        }
        AgentEvent::ToolResult {
            name, ok, content, ..
        } => {
            let mark = if *ok { "←" } else { "✗" };
            eprintln!("{mark} {name}: {}", one_line(content, 160));
        }
        AgentEvent::ConstrainedRetry { tool, .. } if verbose => {
            eprintln!(
                "[the call to {tool} was not in the model's format: regenerating it constrained]"
            )
        }
        AgentEvent::AnswerRetry { .. } if verbose => {
            eprintln!("[the model asked for a result it already has: regenerating as an answer]")
        }
        AgentEvent::MalformedCall { error, .. } => eprintln!("✗ malformed call: {error}"),
        AgentEvent::BlobConverted { blob, .. } => eprintln!(
            "[the reply was a call-shaped blob, not a call: running it as Python] {}",
            one_line(blob, 120)
        ),
        AgentEvent::CallShapedAnswer { .. } => {
            eprintln!("[the reply was call-shaped, not an answer: asking again]")
        }
        AgentEvent::Declined { tools, .. } => eprintln!(
            "[the question names nothing {} is for: answering without it]",
            tools.join(", ")
        ),
        AgentEvent::Ungrounded { answer, .. } => eprintln!(
            "[no tool result backs the answer \"{}\": asking for a check]",
            one_line(answer, 80)
        ),
        AgentEvent::CheckKept { answer, kept, .. } => eprintln!(
            "[the check's program gives another number than \"{}\": keeping \"{}\"]",
            one_line(answer, 60),
            one_line(kept, 60)
        ),
        AgentEvent::Resampled {
            temperature,
            seed,
            reason,
            ..
        } => {
            eprintln!("[{reason}: the next step samples (temperature {temperature}, seed {seed})]")
        }
        AgentEvent::Truncated { .. } => {
            eprintln!("[the reply was cut by --max-tokens: asking for the answer]")
        }
        AgentEvent::Plan { subtasks } => {
            eprintln!("plan:");
            for (i, s) in subtasks.iter().enumerate() {
                eprintln!("  {}. {s}", i + 1);
            }
        }
        AgentEvent::Subtask {
            index,
            count,
            subtask,
        } => eprintln!("[subtask {index}/{count}] {subtask}"),
        AgentEvent::Critique { round, verdict } if verdict.ok => {
            eprintln!("[critique {round}] the draft stands")
        }
        AgentEvent::Critique { round, verdict } => {
            eprintln!(
                "[critique {round}] fault: {}",
                one_line(&verdict.problem, 160)
            )
        }
        // A sample's calls and results always (a vote's computed answer shows where it
        // came from), the rest of its progress only with -v (samples interleave).
        AgentEvent::Sample { sample, event } => match **event {
            AgentEvent::ToolCall { .. } | AgentEvent::ToolResult { .. } => {
                eprint!("[sample {sample}] ");
                show_progress(event, verbose);
            }
            _ if verbose => show_progress(event, verbose),
            _ => {}
        },
        // A part of a composed run runs alone: its progress shows as the run's own.
        AgentEvent::Part { event, .. } => show_progress(event, verbose),
        AgentEvent::FellBack { reason, then } => {
            eprintln!(
                "[no answer ({}): answering by {then} instead, unverified]",
                one_line(&reason.to_string(), 120)
            )
        }
        AgentEvent::SampleAnswer {
            sample,
            answer,
            vote,
            stop,
        } => match (answer, vote) {
            (Some(answer), Some(vote)) => eprintln!(
                "[sample {sample}] {} (votes for {vote})",
                one_line(answer, 100)
            ),
            _ => eprintln!("[sample {sample}] no answer ({stop})"),
        },
        AgentEvent::Tally {
            votes,
            abstained,
            tie,
            winner,
        } => {
            let votes: Vec<String> = votes.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            eprintln!(
                "[vote] {}{}{}",
                votes.join(", "),
                if *abstained > 0 {
                    format!("; {abstained} without an answer")
                } else {
                    String::new()
                },
                match (tie, winner) {
                    (true, Some(winner)) => format!(
                        " (a tie, decided for \"{}\": an answer a program computed goes first, \
                         else the first to appear)",
                        one_line(winner, 60)
                    ),
                    _ => String::new(),
                }
            );
        }
        AgentEvent::Judged {
            first,
            second,
            preference,
        } => match preference {
            Some(p) => eprintln!("[judge] sample {first} before {second}: {p:.2} for {first}"),
            None => eprintln!("[judge] sample {first} before {second}: no choice"),
        },
        AgentEvent::Ranking {
            candidates, error, ..
        } => {
            let ranked: Vec<String> = candidates
                .iter()
                .map(|(key, votes, score)| format!("{key} ({votes} votes): {score:.2}"))
                .collect();
            eprintln!("[rank] {}", ranked.join(", "));
            if let Some(error) = error {
                eprintln!("[rank] the judge stopped: {error}");
            }
        }
        AgentEvent::Thought {
            id,
            parent,
            depth,
            text,
            outcome,
        } => {
            let what = match outcome {
                ThoughtOutcome::Open { state } => format!("-> {}", one_line(state, 60)),
                ThoughtOutcome::Solved { answer } => format!("solved: {answer}"),
                ThoughtOutcome::Rejected { reason } => format!("rejected: {reason}"),
                ThoughtOutcome::Repeated => "a state seen before".to_owned(),
            };
            eprintln!(
                "[tree {depth}] #{id} (from #{parent}) {} {what}",
                one_line(text, 60)
            );
        }
        AgentEvent::Valued { id, value } => eprintln!("[value] #{id}: {value:.2}"),
        AgentEvent::Beam {
            depth,
            kept,
            dropped,
        } => {
            let kept: Vec<String> = kept.iter().map(|id| format!("#{id}")).collect();
            eprintln!("[beam {depth}] kept {}; dropped {dropped}", kept.join(" "));
        }
        _ => {}
    }
}

pub(crate) fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

/// `--tools none`: the model answers directly, streaming to stdout.
async fn plain_answer(
    global: &GlobalArgs,
    session: &mut dyn jielong::ModelSession,
    args: &RunArgs,
    framing: &jielong::agent::Framing,
) -> anyhow::Result<()> {
    let request = super::chat_request(global);
    let messages = framing.messages(args.system.as_deref(), &args.task);
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let completion = session
        .respond(&jielong::chat::Chat::new(messages), &request)?
        .finish(|piece| {
            if write_error.is_none() {
                if let Err(e) = stdout
                    .write_all(piece.as_bytes())
                    .and_then(|()| stdout.flush())
                {
                    write_error = Some(e);
                }
            }
        })
        .await?;
    if let Some(e) = write_error {
        return Err(e).context("cannot write the answer to stdout");
    }
    writeln!(stdout).context("cannot write the answer to stdout")?;
    if global.verbose > 0 {
        eprintln!("{}", super::usage_line(&completion.usage));
    }
    if completion.finish == FinishReason::MaxTokens {
        eprintln!(
            "jielong: note: the answer was cut at --max-tokens {}",
            request.max_tokens
        );
    }
    Ok(())
}
