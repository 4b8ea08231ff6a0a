//! `jielong eval DATA.jsonl`: a system (the plain model, or the agent with tools)
//! answers every example of a dataset; the answers are graded and reported.
//! `jielong eval compare A B` compares two runs example by example.
//!
//! The harness is `jielong_eval` (dataset, metrics, cache and resume, reports); this
//! module only implements its [`System`] for the CLI's model and agent and draws the
//! progress bar.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use futures::future::BoxFuture;
use futures::FutureExt;
use indicatif::{ProgressBar, ProgressStyle};
use jielong::agent::{AgentEvent, AgentRun, Strategy};
use jielong::chat::{Chat, Message};
use jielong::eval::{
    compare, load_jsonl, metric_for, mt_bench_turns, sample, Eval, Example, Fields, Metric,
    Observer, Outcome, Report, Row, Split, Summary, System, Tokens,
};
use jielong::retrieval::{Index, IngestOptions, NoProgress};
use jielong::tools::builtin::{builtin_registry_with, BuiltinConfig};
use jielong::{GenerateRequest, LanguageModel, ModelSession};
use serde_json::{json, Value};
use tokio::sync::Mutex as AsyncMutex;

use super::eval_systems::{AskSystem, Shared, WorkflowSystem};
use super::judge::Judge;
use super::run::{build_agent, AgentOptions};
use crate::cli::{EvalArgs, EvalCommand, EvalRunArgs, GlobalArgs};

/// Runs `jielong eval`.
pub async fn eval(global: &GlobalArgs, args: EvalArgs) -> anyhow::Result<()> {
    match args.command {
        Some(EvalCommand::Compare { a, b }) => compare_files(&a, &b),
        Some(EvalCommand::Pairwise(args)) => super::judge::pairwise(global, args).await,
        Some(EvalCommand::Needle(args)) => super::needle::needle(global, args).await,
        None => match args.run.data.clone() {
            Some(data) => run(global, args.run, &data).await,
            None => anyhow::bail!("jielong eval: give a dataset (DATA.jsonl) or `compare A B`"),
        },
    }
}

fn compare_files(a: &Path, b: &Path) -> anyhow::Result<()> {
    let rows_a = Report::read_rows(&rows_path(a))?;
    let rows_b = Report::read_rows(&rows_path(b))?;
    let name = |p: &Path| p.display().to_string();
    let comparison = compare(&name(a), &rows_a, &name(b), &rows_b);
    println!("{comparison}");
    Ok(())
}

/// A run directory stands for its `rows.jsonl`.
pub(super) fn rows_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("rows.jsonl")
    } else {
        path.to_path_buf()
    }
}

async fn run(global: &GlobalArgs, args: EvalRunArgs, data: &Path) -> anyhow::Result<()> {
    let examples = examples(&args, data, args.split.as_deref(), Subset::Sampled)?;
    let metrics = jielong::metrics();
    let metric = metrics.parse(&args.metric)?;
    let mut judged = matches!(metric, Metric::Judge);
    for example in &examples {
        judged |= matches!(
            metric_for(example, &metric, &metrics)?.as_ref(),
            Metric::Judge
        );
    }
    if judged {
        Judge::check(&args.judge)?;
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(data, &tool_names(&args.tools)));
    let framing = super::framing(&args.framing, &args.input_field, &args.answer_field)?;
    let evaluated = Evaluated::new(global, &args, &examples, &out).await?;
    let system = evaluated.system(framing);

    let cancel = cancel_on_ctrl_c("eval");
    let cache = out.join("cache.jsonl");
    if !args.resume && cache.exists() {
        std::fs::remove_file(&cache)
            .with_context(|| format!("cannot remove the old cache {}", cache.display()))?;
    }
    let eval = Eval::new(examples.clone(), metric)
        .metrics(metrics)
        .cache(&cache)
        .cancel(cancel);
    let bar = Bar::new(global.verbose > 0);
    let started = Instant::now();
    let mut report = eval.run(system.as_ref(), &bar).await?;
    bar.done();
    if judged && !report.interrupted {
        let judge = Judge::new(global, &args.judge, Some(evaluated.session())).await?;
        judge
            .grade(&mut report.rows, &examples, &out, args.resume.into())
            .await?;
        report.summary = Summary::from_rows(&report.rows);
    }
    report.write_rows(&out.join("rows.jsonl"))?;
    report.write_summary(&out.join("summary.json"))?;
    println!("{} on {}", report.system, data.display());
    println!("{}", report.summary);
    println!(
        "{} examples ({} from the cache) in {:.0} s; rows: {}",
        report.rows.len(),
        report.cached,
        started.elapsed().as_secs_f64(),
        out.join("rows.jsonl").display()
    );
    if report.interrupted {
        anyhow::bail!(
            "interrupted after {} of {} examples; `--resume` continues",
            report.rows.len(),
            report.total
        );
    }
    Ok(())
}

/// Which of `--sample` and `--limit` apply to a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subset {
    /// Both (the split that is evaluated, or searched on).
    Sampled,
    /// Neither (a held-out split is taken whole).
    Whole,
}

/// The examples of `data` the options select: `split` of them, then (for
/// [`Subset::Sampled`]) `--sample` and `--limit`.
pub(super) fn examples(
    args: &EvalRunArgs,
    data: &Path,
    split: Option<&str>,
    subset: Subset,
) -> anyhow::Result<Vec<Example>> {
    let fields = Fields {
        input: args.input_field.clone(),
        answer: args.answer_field.clone(),
        id: Some(args.id_field.clone()),
    };
    let mut examples = load_jsonl(data, &fields)?;
    if let Some(split) = split {
        examples = Split::parse(split)?.apply(&examples).to_vec();
    }
    if subset == Subset::Sampled {
        if let Some(n) = args.sample {
            examples = sample(&examples, n, args.sample_seed);
        }
        if let Some(limit) = args.limit {
            examples.truncate(limit);
        }
    }
    anyhow::ensure!(
        !examples.is_empty(),
        "{}: no examples to run{}",
        data.display(),
        split
            .map(|s| format!(" in the split {s}"))
            .unwrap_or_default()
    );
    Ok(examples)
}

/// What the options evaluate, but for the wording: the plain model, or the agent with
/// its tools, on one session (kept across examples and systems, so the system prompt
/// stays in the KV cache).
pub(super) struct Evaluated {
    global: GlobalArgs,
    model: Arc<dyn LanguageModel>,
    session: Arc<AsyncMutex<Box<dyn ModelSession>>>,
    system_prompt: Option<String>,
    answerer: Answerer,
    /// Passages per search with `--ask`.
    ask_k: u8,
    /// Model calls per example (agent, `--ask`).
    max_steps: usize,
}

/// What answers each example.
enum Answerer {
    /// The model on its own.
    Plain,
    /// The agent with tools and a strategy.
    Agent(Box<AgentSystemSetup>),
    /// `jielong ask` over an index.
    Ask(Arc<Index>),
    /// A workflow, once per example.
    Workflow(Arc<WorkflowSystem>),
}

/// The agent's part of [`Evaluated`].
struct AgentSystemSetup {
    name: String,
    tools: Vec<String>,
    config: BuiltinConfig,
    options: AgentOptions,
}

impl Evaluated {
    /// Loads the model and sets up the tools (indexing `--sources` into `out/index`).
    pub(super) async fn new(
        global: &GlobalArgs,
        args: &EvalRunArgs,
        examples: &[Example],
        out: &Path,
    ) -> anyhow::Result<Evaluated> {
        let tools = tool_names(&args.tools);
        // Read before the model loads, so a wrong key fails at once.
        let settings = args
            .settings
            .as_deref()
            .map(super::settings::SettingsFile::read)
            .transpose()?;
        let needs_index = tools.iter().any(|t| t == "rag_search")
            || examples
                .iter()
                .any(|e| row_tools(e).is_some_and(|t| t.iter().any(|t| t == "rag_search")));
        std::fs::create_dir_all(out)
            .with_context(|| format!("cannot create the output folder {}", out.display()))?;
        let workflow = match &args.workflow {
            Some(file) => Some(WorkflowSystem::check(global, args, file, examples, out)?),
            None => None,
        };
        let mut config = super::tools::config(&args.tool_options);
        if let Some(sources) = &args.sources {
            let dir = out.join("index");
            let report = ingest(sources, &dir).await?;
            eprintln!("index {}: {report}", dir.display());
            config.rag_index = Some(dir);
        }
        if (needs_index || args.ask) && config.rag_index.is_none() {
            anyhow::bail!("rag_search needs an index: give --sources DIR or --index DIR");
        }
        let ask_index = match (&config.rag_index, args.ask) {
            (Some(dir), true) => Some(Arc::new(Index::open(dir).with_context(|| {
                format!(
                    "--ask: cannot open the index {} (build it with `jielong index add`, or give --sources DIR)",
                    dir.display()
                )
            })?)),
            _ => None,
        };
        // One loaded model, shared with the workflow's agents when they use `--model`.
        let model = match &workflow {
            Some(workflow) => workflow.default_model().await?,
            None => super::load_model(global).await?,
        };
        let session = model.open_session(&super::session_options(global))?;
        // A settings file's strategy counts unless --strategy is given.
        let strategy = match settings
            .as_ref()
            .map(|f| f.strategy())
            .transpose()?
            .flatten()
        {
            Some(strategy) if args.strategy.is_none() => strategy,
            _ => Strategy::parse(args.strategy.as_deref().unwrap_or("direct"), args.samples)?,
        };
        let plain =
            tools.is_empty() && strategy == Strategy::Direct && !all_rows_have_tools(examples);
        let answerer = if let Some(workflow) = workflow {
            Answerer::Workflow(Arc::new(workflow))
        } else if let Some(index) = ask_index {
            Answerer::Ask(index)
        } else if plain {
            Answerer::Plain
        } else {
            Answerer::Agent(Box::new(AgentSystemSetup {
                name: match strategy {
                    Strategy::Tree(_) => {
                        format!("tot:{}:{}", global.model, args.tree.thoughts)
                    }
                    _ => format!("agent:{}:{}", global.model, tools.join("+")),
                },
                tools,
                config,
                options: AgentOptions {
                    system: args.system.clone(),
                    strategy,
                    max_steps: args.max_steps,
                    trace: None,
                    initial_calls: Vec::new(),
                    code_actions: args.code_actions.into(),
                    prompts: args.prompts.clone(),
                    framing: Default::default(),
                    thoughts: super::thoughts(&args.tree)?,
                    settings,
                },
            }))
        };
        Ok(Evaluated {
            global: global.clone(),
            model,
            session: Arc::new(AsyncMutex::new(session)),
            system_prompt: args.system.clone(),
            answerer,
            ask_k: args.ask_k,
            max_steps: args.max_steps,
        })
    }

    /// The system that puts each input to the model with `framing`.
    pub(super) fn system(&self, framing: jielong::agent::Framing) -> Box<dyn System> {
        match &self.answerer {
            Answerer::Workflow(workflow) => Box::new(Shared(workflow.clone())),
            Answerer::Ask(index) => Box::new(AskSystem {
                global: self.global.clone(),
                model: self.model.clone(),
                index: index.clone(),
                k: self.ask_k,
                max_steps: self.max_steps,
            }),
            Answerer::Plain => Box::new(PlainModel {
                name: format!("plain:{}", self.global.model),
                session: self.session.clone(),
                request: super::request(&self.global),
                system: self.system_prompt.clone(),
                framing,
            }),
            Answerer::Agent(setup) => Box::new(AgentSystem {
                name: setup.name.clone(),
                global: self.global.clone(),
                model: self.model.clone(),
                session: self.session.clone(),
                tools: setup.tools.clone(),
                config: setup.config.clone(),
                options: AgentOptions {
                    framing,
                    ..setup.options.clone()
                },
            }),
        }
    }

    /// The session the systems answer on (for whatever else must use the model).
    pub(super) fn session(&self) -> Arc<AsyncMutex<Box<dyn ModelSession>>> {
        self.session.clone()
    }
}

/// A flag Ctrl-C sets (the run then stops after the current example, saying so as
/// `jielong COMMAND`); a second Ctrl-C quits at once.
pub(super) fn cancel_on_ctrl_c(command: &'static str) -> Arc<AtomicBool> {
    let cancel = Arc::new(AtomicBool::new(false));
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "\njielong {command}: stopping after the current example (Ctrl-C again to quit)"
            );
            on_signal.store(true, Ordering::SeqCst);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    cancel
}

/// Whether every example names its own tools (then the agent runs even with
/// `--tools none`).
fn all_rows_have_tools(examples: &[Example]) -> bool {
    examples
        .iter()
        .all(|e| row_tools(e).is_some_and(|t| !t.is_empty()))
}

fn tool_names(tools: &[String]) -> Vec<String> {
    tools
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty() && t != "none")
        .collect()
}

/// The tools a dataset row asks for (`"tools": ["rag_search", "python"]`).
fn row_tools(example: &Example) -> Option<Vec<String>> {
    let list = example.record.get("tools")?.as_array()?;
    Some(
        list.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
    )
}

fn default_out(data: &Path, tools: &[String]) -> PathBuf {
    let stem = data
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let system = if tools.is_empty() {
        "plain".to_string()
    } else {
        tools.join("+")
    };
    PathBuf::from("eval-out").join(format!("{stem}.{system}"))
}

async fn ingest(sources: &Path, dir: &Path) -> anyhow::Result<String> {
    anyhow::ensure!(
        sources.exists(),
        "{}: no such file or folder",
        sources.display()
    );
    let (sources, dir) = (sources.to_path_buf(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let index = Index::open_or_create(&dir)?;
        let report = index.ingest(&[sources], &IngestOptions::default(), &NoProgress)?;
        Ok(format!(
            "{} added, {} updated, {} unchanged, {} chunks",
            report.added, report.updated, report.unchanged, report.chunks
        ))
    })
    .await
    .context("the index task failed")?
}

/// The model answering on its own: the input as the user's message. An MT-Bench
/// question with several `turns` is one conversation: each turn is answered after
/// the ones before it, the last answer is the example's, and every turn is kept in
/// the outcome's `detail.turns` (`[{"question", "answer"}]`, what a judge reads).
pub(super) struct PlainModel {
    name: String,
    session: Arc<AsyncMutex<Box<dyn ModelSession>>>,
    request: GenerateRequest,
    system: Option<String>,
    framing: jielong::agent::Framing,
}

impl PlainModel {
    /// The model behind `session`, named `name`, answering with `request` after the
    /// system message `system`.
    pub(super) fn new(
        name: String,
        session: Arc<AsyncMutex<Box<dyn ModelSession>>>,
        request: GenerateRequest,
        system: Option<String>,
    ) -> PlainModel {
        PlainModel {
            name,
            session,
            request,
            system,
            framing: Default::default(),
        }
    }
}

impl System for PlainModel {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn config(&self) -> Value {
        json!({
            "request": self.request,
            "system": self.system,
            "technique": super::wording_config(&self.framing.wording),
            "shots": self.framing.shots,
        })
    }

    fn answer<'a>(&'a self, example: &'a Example) -> BoxFuture<'a, Outcome> {
        async move {
            let mut messages = self
                .framing
                .messages(self.system.as_deref(), &example.input);
            let later_turns: Vec<String> = mt_bench_turns(&example.record)
                .map(|turns| turns[1..].iter().map(|t| t.to_string()).collect())
                .unwrap_or_default();
            let request = jielong::chat::ChatRequest {
                max_tokens: self.request.max_tokens,
                sampling: self.request.sampling.clone(),
                stop: self.request.stop.clone(),
                ..Default::default()
            };
            let mut session = self.session.lock().await;
            let mut outcome = Outcome::answered("");
            let mut turns = Vec::new();
            let mut questions = std::iter::once(example.input.clone()).chain(later_turns);
            let mut question = questions.next();
            while let Some(asked) = question.take() {
                let completion = match session.respond(&Chat::new(messages.clone()), &request) {
                    Ok(generation) => generation.finish(|_| {}).await,
                    Err(e) => Err(e),
                };
                let completion = match completion {
                    Ok(completion) => completion,
                    Err(e) => return Outcome::failed(e.to_string()),
                };
                let answer = completion.text.trim().to_string();
                outcome.stop = finish_name(&completion.finish);
                outcome.tokens += tokens(&completion.usage);
                messages.push(Message::assistant(answer.clone()));
                turns.push(json!({"question": asked, "answer": answer}));
                outcome.answer = Some(answer);
                question = questions.next();
                if let Some(next) = &question {
                    messages.push(Message::user(next.clone()));
                }
            }
            outcome.steps = turns.len();
            if turns.len() > 1 {
                outcome.detail = json!({ "turns": turns });
            }
            outcome
        }
        .boxed()
    }
}

pub(super) fn finish_name(finish: &jielong::FinishReason) -> String {
    match finish {
        jielong::FinishReason::EndOfText | jielong::FinishReason::StopString(_) => "answered",
        jielong::FinishReason::MaxTokens => "max_tokens",
        jielong::FinishReason::ContextFull => "context_full",
        jielong::FinishReason::Cancelled => "cancelled",
    }
    .to_string()
}

pub(super) fn tokens(usage: &jielong::Usage) -> Tokens {
    Tokens {
        prompt: usage.prompt_tokens,
        cached: usage.cached_tokens,
        evaluated: usage.evaluated_tokens,
        generated: usage.generated_tokens,
    }
}

/// The agent with tools (the dataset row's `tools`, else `--tools`), a fresh tool set
/// (and Python worker) per example, on one session kept across examples (the system
/// prompt stays in the KV cache).
struct AgentSystem {
    name: String,
    global: GlobalArgs,
    model: Arc<dyn LanguageModel>,
    session: Arc<AsyncMutex<Box<dyn ModelSession>>>,
    tools: Vec<String>,
    config: BuiltinConfig,
    options: AgentOptions,
}

impl System for AgentSystem {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn config(&self) -> Value {
        let mut config = json!({
            "request": super::request(&self.global),
            "system": self.options.system,
            "max_steps": self.options.max_steps,
            "code_actions": self.options.code_actions,
            "strategy": self.options.strategy,
            "technique": super::wording_config(&self.options.framing.wording),
            "shots": self.options.framing.shots,
            "prompts": prompt_texts(self.options.prompts.as_deref()),
        });
        // Only tree searches have a thought space (other configurations keep their
        // caches).
        if self.options.strategy.searches_trees() {
            config["thoughts"] = json!(self.options.thoughts.name());
        }
        // A settings file's effect (other configurations keep their caches).
        if self.options.settings.is_some() {
            config["settings"] = match super::run::agent_settings(&self.global, &self.options) {
                Ok(settings) => json!(settings),
                Err(e) => json!(format!("{e:#}")),
            };
        }
        config
    }

    fn answer<'a>(&'a self, example: &'a Example) -> BoxFuture<'a, Outcome> {
        async move {
            let tools = row_tools(example).unwrap_or_else(|| self.tools.clone());
            let registry = match builtin_registry_with(&tools, &self.config) {
                Ok(registry) => registry,
                Err(e) => return Outcome::failed(e.to_string()),
            };
            let events = Arc::new(Mutex::new(Vec::new()));
            let sink = events.clone();
            let agent = match build_agent(
                &self.global,
                self.model.as_ref(),
                registry,
                &self.options,
                move |event| {
                    if keep_event(event) {
                        if let Ok(mut events) = sink.lock() {
                            events.push(event.clone());
                        }
                    }
                },
            ) {
                Ok(agent) => agent,
                Err(e) => return Outcome::failed(format!("{e:#}")),
            };
            let mut session = self.session.lock().await;
            let run = agent.run(session.as_mut(), &example.input).await;
            let events = events.lock().map(|e| e.clone()).unwrap_or_default();
            outcome_of(run, events)
        }
        .boxed()
    }
}

/// The texts of a prompt folder's files (so a cache is not reused across prompts).
fn prompt_texts(dir: Option<&Path>) -> Value {
    let Some(dir) = dir else { return Value::Null };
    let mut texts = serde_json::Map::new();
    for kind in jielong::agent::PromptKind::ALL {
        if let Ok(text) = std::fs::read_to_string(dir.join(kind.file_name())) {
            texts.insert(kind.file_name().to_string(), Value::String(text));
        }
    }
    Value::Object(texts)
}

/// The events a row keeps (not every token), inside samples and parts too.
fn keep_event(event: &AgentEvent) -> bool {
    match event {
        AgentEvent::Sample { event, .. } | AgentEvent::Part { event, .. } => keep_event(event),
        AgentEvent::Token { .. }
        | AgentEvent::StepStarted { .. }
        | AgentEvent::StepFinished { .. } => false,
        _ => true,
    }
}

/// A stop reason's name as its trace writes it (`answered`, `max_steps`, …).
pub(super) fn stop_name(stop: &jielong::agent::StopReason) -> String {
    match serde_json::to_value(stop) {
        Ok(Value::Object(map)) => map
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string(),
        _ => "unknown".to_string(),
    }
}

fn outcome_of(run: AgentRun, events: Vec<AgentEvent>) -> Outcome {
    let tools = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolCall { call, .. } => Some(call.name.clone()),
            _ => None,
        })
        .collect();
    let stop = stop_name(&run.stop);
    Outcome {
        answer: if run.stop.is_answered() {
            run.answer
        } else {
            None
        },
        error: (!run.stop.is_answered()).then(|| run.stop.to_string()),
        stop,
        tokens: tokens(&run.usage),
        tools,
        steps: run.steps,
        seconds: run.elapsed.as_secs_f64(),
        detail: json!({ "events": events }),
    }
}

/// A progress bar with an ETA and the accuracy so far (of the current run: each
/// `started` begins a new count).
pub(super) struct Bar {
    bar: ProgressBar,
    right: Mutex<(usize, usize)>,
    verbose: bool,
}

impl Bar {
    pub(super) fn new(verbose: bool) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self {
            bar,
            right: Mutex::new((0, 0)),
            verbose,
        }
    }

    pub(super) fn done(&self) {
        self.bar.finish_and_clear();
    }

    /// Prints a line above the bar (to stderr as it is when the bar is hidden, as it
    /// is when stderr is not a terminal).
    pub(super) fn println(&self, line: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line.as_ref());
        }
    }
}

impl Observer for Bar {
    fn started(&self, total: usize, cached: usize) {
        if let Ok(mut right) = self.right.lock() {
            *right = (0, 0);
        }
        self.bar.set_message("");
        self.bar.set_length(total as u64);
        self.bar.set_position(cached as u64);
        if cached > 0 {
            self.println(format!("{cached} of {total} examples from the cache"));
        }
    }

    fn finished(&self, row: &Row, done: usize, _total: usize) {
        if let Ok(mut right) = self.right.lock() {
            if let Some(correct) = row.correct {
                right.1 += 1;
                right.0 += usize::from(correct);
            }
            let (ok, graded) = *right;
            if graded > 0 {
                self.bar.set_message(format!(
                    "{ok}/{graded} right ({:.1}%)",
                    100.0 * ok as f64 / graded as f64
                ));
            }
        }
        if self.verbose {
            let mark = match row.correct {
                Some(true) => "✓",
                Some(false) => "✗",
                None => "·",
            };
            let answer = row.outcome.answer.as_deref().unwrap_or("(no answer)");
            self.println(format!(
                "{mark} {} [{:.1} s, {}] {}",
                row.id,
                row.outcome.seconds,
                row.outcome.stop,
                super::run::one_line(answer, 100)
            ));
        }
        self.bar.set_position(done as u64);
    }

    fn warning(&self, message: &str) {
        self.println(format!("jielong eval: warning: {message}"));
    }
}
