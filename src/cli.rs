//! The command line: arguments and subcommands (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use jielong::agent::Technique;
use jielong::agent::{AgentSettings, Sample, Strategy, StrategyError};

/// Agents on local language models.
#[derive(Debug, Parser)]
#[command(name = "jielong", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Settings shared by every subcommand (accepted before or after it).
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Model: a catalog name (see `jielong models list`), a path to a .gguf file, or
    /// hf:OWNER/REPO/FILE.gguf.
    #[arg(
        long,
        short = 'm',
        global = true,
        env = "JIELONG_MODEL",
        default_value = "qwen2.5-coder-0.5b"
    )]
    pub model: String,
    /// Threads for llama.cpp (default: the physical cores).
    #[arg(long, short = 't', global = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Sampling temperature; 0 is greedy (deterministic).
    #[arg(long, global = true, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep the k most likely tokens when sampling (0: off).
    #[arg(long, global = true, default_value_t = 40)]
    pub top_k: u32,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, global = true, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens below this fraction of the best one's probability (0: off).
    #[arg(long, global = true, default_value_t = 0.05)]
    pub min_p: f32,
    /// Seed of the random draw when the temperature is above 0.
    #[arg(long, global = true, default_value_t = 0)]
    pub seed: u32,
    /// The most tokens to generate per answer.
    #[arg(long, global = true, default_value_t = 512)]
    pub max_tokens: usize,
    /// Context window in tokens (default: the model's, at most 8192).
    #[arg(long, global = true)]
    pub ctx_size: Option<u32>,
    /// Where the KV state of opening prompts is kept between runs, so the next run
    /// evaluates only what follows the part it shares (a folder, or `off`; default:
    /// the user's cache folder, `jielong/prompts`, at most 256 MiB).
    #[arg(
        long,
        global = true,
        value_name = "DIR|off",
        env = "JIELONG_PROMPT_CACHE"
    )]
    pub prompt_cache: Option<String>,
    /// Stop generating at this string (repeatable).
    #[arg(long = "stop", global = true)]
    pub stop: Vec<String>,
    /// More output on stderr: -v token and timing stats, -vv also llama.cpp's log.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The arguments given on the command line (clap's ids; not a flag): a settings
    /// file's keys give way to these.
    #[arg(skip)]
    pub given: Vec<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Solve a task with the agent (model + tools); the answer goes to stdout,
    /// progress to stderr.
    Run(Box<RunArgs>),
    /// Chat interactively; the conversation's KV cache is kept between turns.
    Chat(ChatArgs),
    /// Continue a prompt and show each token's log-probability, or score a given
    /// continuation (`--score TEXT`), for people reading what the model weighs.
    Generate(GenerateArgs),
    /// List, download and locate models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// List the built-in tools and their argument schemas.
    Tools,
    /// Run one tool by hand: `jielong tool python 'print(1+1)'`.
    Tool(ToolArgs),
    /// Build and query a local search index (for `rag_search` and `ask`).
    #[command(subcommand)]
    Index(IndexCommand),
    /// Answer a question from a local index, citing the passages used.
    Ask(AskArgs),
    /// YAML workflows: print their JSON Schema, validate files, run them.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Workflow runs: list them, show one (steps, outputs, trace).
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Measure Jielong's generation path against a bare llama.cpp loop, and prefix
    /// reuse in a multi-turn chat.
    Bench(BenchArgs),
    /// Evaluate the model or the agent on a JSONL dataset (accuracy with a 95%
    /// interval, latency, tokens, stop reasons); `eval compare A B` compares two runs.
    Eval(Box<EvalArgs>),
    /// Serve the model over an OpenAI-compatible HTTP API (chat and text
    /// completions, tools, streaming, log-probabilities, `n`, JSON output).
    Serve(ServeArgs),
    /// Search for a better instruction (APE/OPRO style): the model rewrites the
    /// starting instruction from its scores and failures, every variant is evaluated
    /// on the dataset (cached, resumable), the best is written as a prompt file.
    Optimize(Box<OptimizeArgs>),
    /// Write solvable Game of 24 puzzles as JSONL (`input`, `answer`: the numbers,
    /// `solution`: one found by brute force), for `eval --metric game24`.
    Game24(Game24Args),
}

/// `jielong optimize DATA.jsonl`.
#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// What is evaluated, as for `jielong eval`: `--split` is the split searched on
    /// (default: all), `--instruction`, `--instruction-file` or `--technique` the
    /// starting instruction, `--out` the search's folder (default
    /// `optimize-out/DATASET`), `--resume` continues a search there.
    #[command(flatten)]
    pub eval: EvalRunArgs,
    /// A held-out split (`100:200`) the start and the best are also scored on;
    /// nothing is chosen on it. It must not share examples with `--split`.
    #[arg(long, value_name = "START:END")]
    pub holdout: Option<String>,
    /// Rounds of proposals after the starting instruction.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Variants the model proposes per round.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub proposals: u64,
    /// Wrong answers of the best variant shown in each round's meta-prompt.
    #[arg(long, default_value_t = 3)]
    pub failures: usize,
    /// The model that writes the variants: any `--model` reference (a larger GGUF, or
    /// a server `openai:URL#MODEL`); default: the model being evaluated.
    #[arg(long, value_name = "MODEL")]
    pub proposer: Option<String>,
    /// The temperature proposals are sampled at (each with its own seed, from the
    /// global `--seed`).
    #[arg(long, default_value_t = 1.0)]
    pub proposal_temperature: f32,
}

/// `jielong game24`.
#[derive(Debug, Args)]
pub struct Game24Args {
    /// How many puzzles (distinct, each solvable; at most 1362 exist).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1362))]
    pub count: u64,
    /// The seed they are drawn with (the same seed gives the same puzzles).
    #[arg(long, default_value_t = 1)]
    pub puzzle_seed: u64,
}

/// `jielong serve --calls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CallsArg {
    /// A grammar holds every call to its schema.
    Constrained,
    /// Free decoding; calls are parsed and validated.
    Validated,
}

impl From<CallsArg> for jielong::chat::CallMode {
    fn from(arg: CallsArg) -> Self {
        match arg {
            CallsArg::Constrained => jielong::chat::CallMode::Constrained,
            CallsArg::Validated => jielong::chat::CallMode::Validated,
        }
    }
}

/// `jielong serve --call-fit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CallFitArg {
    /// The calls as the model wrote them.
    AsWritten,
    /// A tool the request does not name is declined (the reply is text); a request
    /// that names several items is asked for one more call at a time while each adds
    /// an item of the request.
    Fitted,
}

impl From<CallFitArg> for jielong::chat::fit::CallFit {
    fn from(arg: CallFitArg) -> Self {
        match arg {
            CallFitArg::AsWritten => jielong::chat::fit::CallFit::AsWritten,
            CallFitArg::Fitted => jielong::chat::fit::CallFit::Fitted,
        }
    }
}

/// `jielong serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on (a host other than loopback needs an API key).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The port to listen on.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests generating at once, each on its own branch of the KV cache (they
    /// decode together, one batch per step).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: u32,
    /// Requests waiting for a free slot; more get 503 with Retry-After.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// The largest `n` (choices per chat request).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub max_n: u32,
    /// The key clients must send as `Authorization: Bearer KEY`.
    #[arg(long, env = "JIELONG_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// How tool calls are held to their schemas: `constrained` (a grammar from the
    /// moment a call opens) or `validated` (decoding left free; calls parsed and
    /// checked against their schemas, as a server without grammars does).
    #[arg(long, value_enum, default_value_t = CallsArg::Constrained)]
    pub calls: CallsArg,
    /// Whether calls are fitted to the request (`tool_choice: auto`): `fitted`
    /// declines a tool whose subject the request never names and asks for a call per
    /// item a request names; `as-written` (the default) sends the calls as the model
    /// wrote them.
    #[arg(long, value_enum, default_value_t = CallFitArg::AsWritten)]
    pub call_fit: CallFitArg,
}

/// `jielong generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The prompt: raw text the model continues (a user message with `--chat`).
    pub prompt: String,
    /// Show each generated token's log-probability with this many alternatives
    /// (0: the chosen token only).
    #[arg(long, value_name = "K")]
    pub logprobs: Option<u32>,
    /// Instead of generating, score TEXT as the continuation of the prompt: its total
    /// and per-token log-probability (alternatives with `--logprobs K`).
    #[arg(long, value_name = "TEXT")]
    pub score: Option<String>,
    /// Treat the prompt as a user message in the model's chat template (works on
    /// every backend; raw prompts and scoring need the embedded one).
    #[arg(long, conflicts_with = "score")]
    pub chat: bool,
    /// Print one JSON object instead of the human-readable view.
    #[arg(long)]
    pub json: bool,
}

/// `jielong eval`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    /// `compare`.
    #[command(subcommand)]
    pub command: Option<EvalCommand>,
    /// Running a dataset.
    #[command(flatten)]
    pub run: EvalRunArgs,
}

/// `jielong eval compare`.
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Compare two runs (their folders or `rows.jsonl` files) example by example:
    /// which changed, and whether the difference is significant (exact McNemar test).
    Compare {
        /// The first run.
        a: PathBuf,
        /// The second run.
        b: PathBuf,
    },
    /// Compare two runs' answers with an LLM judge, each pair shown in both orders
    /// (a verdict that flips with the order is a tie; the share of flips is
    /// reported).
    Pairwise(PairwiseArgs),
    /// Needle in a haystack on the context path: a grid of context lengths × needle
    /// depths × prompt variants, read by the model itself (JSON and an SVG heatmap).
    Needle(NeedleArgs),
}

/// `jielong eval needle DIR`.
#[derive(Debug, Args)]
pub struct NeedleArgs {
    /// A folder of .txt documents, the haystack (read in sorted order, repeated if
    /// too short, cut at a sentence boundary).
    pub dir: PathBuf,
    /// Context lengths in tokens (the haystack with the needle), comma-separated;
    /// each must fit the context size (raise it with --ctx-size).
    #[arg(long, default_value = "1000,2000,4000,8000")]
    pub lengths: String,
    /// Needle depths in percent of the haystack (0: the start, 100: the end).
    #[arg(long, default_value = "0,25,50,75,100")]
    pub depths: String,
    /// The sentence to hide (default: the San Francisco sandwich); needs
    /// --question and --key.
    #[arg(long, requires_all = ["question", "key"])]
    pub needle: Option<String>,
    /// The question whose answer is the needle.
    #[arg(long)]
    pub question: Option<String>,
    /// Key phrases of the needle, comma-separated: an answer holding all of them
    /// is found, its score the share it holds (default: sandwich,dolores park).
    #[arg(long)]
    pub key: Option<String>,
    /// Prompt variants: `plain`, and `tip` (the answer starts with "Here is the
    /// most relevant sentence in the context:").
    #[arg(long, default_value = "plain,tip")]
    pub variants: String,
    /// The output folder: needle.json, needle.svg and the cache (default
    /// `eval-out/needle.DIRNAME`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue an interrupted grid: cells in the folder's cache are not run again.
    #[arg(long)]
    pub resume: bool,
    /// The most tokens of an answer (`--max-tokens` is not used here).
    #[arg(long, default_value_t = 64)]
    pub answer_tokens: usize,
}

/// `jielong eval DATA.jsonl`.
#[derive(Debug, Args)]
pub struct EvalRunArgs {
    /// The dataset: JSON lines with an input and an expected answer per line
    /// (GSM8K's `#### N` answers are understood).
    pub data: Option<PathBuf>,
    /// Tools of the agent, comma-separated; `none`: the plain model answers. A row's
    /// own `tools` list takes precedence.
    #[arg(long, value_delimiter = ',', default_value = "none")]
    pub tools: Vec<String>,
    /// The field holding the input.
    #[arg(long, default_value = "question")]
    pub input_field: String,
    /// The field holding the expected answer.
    #[arg(long, default_value = "answer")]
    pub answer_field: String,
    /// The field holding an example's id (else its line number).
    #[arg(long, default_value = "id")]
    pub id_field: String,
    /// How answers are graded: `numeric` (the last number, 1e-6 relative), `exact`,
    /// `contains`, `regex:PATTERN`, `game24`, or `judge` (an LLM judge rates each
    /// answer, see --rubric); a row's own `metric` field takes precedence.
    #[arg(long, default_value = "numeric")]
    pub metric: String,
    /// Only these examples, by position: `100:` (from the 101st), `:100`, `50:150`.
    #[arg(long, value_name = "START:END")]
    pub split: Option<String>,
    /// A random subset of this many examples (in dataset order; after --split).
    #[arg(long)]
    pub sample: Option<usize>,
    /// The seed of --sample.
    #[arg(long, default_value_t = 0)]
    pub sample_seed: u64,
    /// Only the first N examples (after --split and --sample).
    #[arg(long)]
    pub limit: Option<usize>,
    /// The output folder: rows.jsonl, summary.json and the cache (default
    /// `eval-out/DATASET.SYSTEM`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run: examples in the folder's cache are not run again.
    #[arg(long)]
    pub resume: bool,
    /// Index these documents (into the output folder) for `rag_search`.
    #[arg(long, value_name = "DIR")]
    pub sources: Option<PathBuf>,
    /// A system prompt (the agent's default: prompts/agent_system.md).
    #[arg(long)]
    pub system: Option<String>,
    /// The most model calls per example (agent).
    #[arg(long, default_value_t = AgentSettings::DEFAULT_MAX_STEPS)]
    pub max_steps: usize,
    /// How the agent writes code for `python` (see `jielong run --help`).
    #[arg(long, value_enum, default_value_t = CodeActionsArg::Fenced)]
    pub code_actions: CodeActionsArg,
    /// How the agent works each example (default `direct`; see `jielong run --help`).
    #[arg(long, value_name = "STRATEGY", value_parser = strategy_text)]
    pub strategy: Option<String>,
    /// The `n` of `--strategy` presets that sample (see `jielong run --help`).
    #[arg(long, default_value_t = Sample::DEFAULT_N)]
    pub samples: usize,
    /// A folder of prompt files replacing the built-in prompts of the same name.
    #[arg(long, value_name = "DIR")]
    pub prompts: Option<PathBuf>,
    /// The agent's settings from a YAML or JSON file, as `jielong run --settings`
    /// reads them (recorded in the run's configuration, so `--resume` notices a change).
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// How the tools are set up.
    #[command(flatten)]
    pub tool_options: ToolOptions,
    /// How each input is put to the model (worked examples are read with
    /// `--input-field` and `--answer-field`).
    #[command(flatten)]
    pub framing: FramingArgs,
    /// What a thought of `--strategy tree` is.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Answer through `jielong ask` (its prompt, citations and checks) over
    /// `--index DIR` or the documents of `--sources DIR`.
    #[arg(long, conflicts_with_all = ["workflow", "strategy"])]
    pub ask: bool,
    /// Passages per search with `--ask`.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub ask_k: u8,
    /// Answer by running this workflow once per example (its inputs from the
    /// example's fields, see --map; its answer from --output).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["strategy"])]
    pub workflow: Option<PathBuf>,
    /// A workflow input from a dataset field, `INPUT=FIELD` (repeatable). Default:
    /// the workflow's one input without a default takes the input field.
    #[arg(long = "map", value_name = "INPUT=FIELD", requires = "workflow")]
    pub map: Vec<String>,
    /// The workflow output that is the answer (default: its only output).
    #[arg(long, value_name = "NAME", requires = "workflow")]
    pub output: Option<String>,
    /// How `--metric judge` judges.
    #[command(flatten)]
    pub judge: JudgeArgs,
}

/// The LLM judge (`--metric judge`, `eval pairwise`).
#[derive(Debug, Args, Clone)]
pub struct JudgeArgs {
    /// The judge model (a catalog name, a GGUF path or `openai:URL#MODEL`; default:
    /// `--model`).
    #[arg(long, value_name = "MODEL")]
    pub judge_model: Option<String>,
    /// The judge prompt by name; `auto` picks by kind, turns and whether the example
    /// has a reference (built-in: single, single-ref, pair, pair-ref and their
    /// `-multi-turn` forms).
    #[arg(long, value_name = "NAME", default_value = "auto")]
    pub judge_prompt: String,
    /// Judge prompts in MT-Bench's `judge_prompts.jsonl` format (default: Jielong's
    /// own, prompts/judge_prompts.jsonl).
    #[arg(long, value_name = "FILE")]
    pub judge_prompts: Option<PathBuf>,
    /// The rubric the judge grades by (default: prompts/rubrics/default.md); a
    /// prompt without `{rubric}` gets it after its system message.
    #[arg(long, value_name = "FILE")]
    pub rubric: Option<PathBuf>,
    /// The lowest rating (of 10) that counts as right.
    #[arg(long, default_value_t = 7.0)]
    pub pass_score: f64,
    /// Tokens the judge may write per verdict.
    #[arg(long, default_value_t = 384)]
    pub judge_max_tokens: usize,
}

/// `jielong eval pairwise A B`.
#[derive(Debug, Args)]
pub struct PairwiseArgs {
    /// The first run (its folder or `rows.jsonl`): Assistant A when shown first.
    pub a: PathBuf,
    /// The second run.
    pub b: PathBuf,
    /// The dataset both ran on, for reference answers beyond the first (MT-Bench's
    /// `reference` lists).
    #[arg(long, value_name = "DATA.jsonl")]
    pub data: Option<PathBuf>,
    /// The field holding the input (with --data).
    #[arg(long, default_value = "question")]
    pub input_field: String,
    /// The field holding the expected answer (with --data).
    #[arg(long, default_value = "answer")]
    pub answer_field: String,
    /// The output folder: pairs.jsonl, pairwise.json and the judge's caches
    /// (default `eval-out/pairwise.A-vs-B`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Reuse the judge's cached verdicts in the output folder.
    #[arg(long)]
    pub resume: bool,
    /// How the judge judges.
    #[command(flatten)]
    pub judge: JudgeArgs,
}

/// Where workflow runs are kept (`workflow run`, `runs …`).
#[derive(Debug, Args, Clone)]
pub struct RunsDir {
    /// The runs directory (default: `JIELONG_RUNS`, else the `jielong/runs` folder of
    /// the user's data directory).
    #[arg(long = "runs", value_name = "DIR", env = "JIELONG_RUNS")]
    pub dir: Option<PathBuf>,
}

/// `jielong workflow …`.
#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Print the JSON Schema of workflow files (for editors: completion and checks).
    Schema,
    /// Check workflow files without running anything: every fault with file, line,
    /// column and field.
    Validate {
        /// Workflow files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run a workflow (or resume a run); progress per step on stderr, the outputs on
    /// stdout.
    Run(WorkflowRunArgs),
}

/// `jielong workflow run`.
#[derive(Debug, Args)]
pub struct WorkflowRunArgs {
    /// The workflow file.
    pub file: PathBuf,
    /// An input value, `NAME=VALUE` (repeatable); lists as `a,b,c` or a JSON array.
    #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,
    /// Continue this run: steps it finished are not run again.
    #[arg(long, value_name = "RUN_ID")]
    pub resume: Option<String>,
    /// Most steps at once (default: the workflow's `concurrency`, else 2).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
    /// Print the outputs as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write the run's events to this file as JSON lines (the run directory keeps
    /// them in `trace.jsonl` either way).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Where runs are kept.
    #[command(flatten)]
    pub runs: RunsDir,
}

/// `jielong runs …`.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first: id, workflow, state, steps done, start time.
    List {
        /// One JSON object per run.
        #[arg(long)]
        json: bool,
        /// Where runs are kept.
        #[command(flatten)]
        runs: RunsDir,
    },
    /// Show a run: inputs, each step's status and output, the outputs.
    Show {
        /// The run's id.
        id: String,
        /// Print the run's trace (JSON lines) instead.
        #[arg(long)]
        trace: bool,
        /// The whole record as one JSON object.
        #[arg(long)]
        json: bool,
        /// Where runs are kept.
        #[command(flatten)]
        runs: RunsDir,
    },
}

/// Where the index lives (`index …`, `ask`).
#[derive(Debug, Args)]
pub struct IndexDir {
    /// The index directory (default: `JIELONG_INDEX`, else the `jielong/index` folder
    /// of the user's data directory).
    #[arg(long = "index", value_name = "DIR", env = "JIELONG_INDEX")]
    pub dir: Option<PathBuf>,
}

/// `jielong index …`.
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Add files and folders (text, Markdown, HTML, PDF, JSON lines); files already
    /// indexed and unchanged are skipped, changed ones replaced, deleted ones removed.
    Add {
        /// Files and folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The field of a JSON-lines record that holds its text.
        #[arg(long, default_value = "text")]
        jsonl_field: String,
        /// The index.
        #[command(flatten)]
        index: IndexDir,
    },
    /// Search the index.
    Search {
        /// The query.
        query: String,
        /// How many hits.
        #[arg(short = 'k', long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
        k: u16,
        /// Only sources under this path.
        #[arg(long, value_name = "PREFIX")]
        path: Option<String>,
        /// One JSON object per hit (source, lines, score, text), for scripts.
        #[arg(long)]
        json: bool,
        /// The index.
        #[command(flatten)]
        index: IndexDir,
    },
    /// Files, chunks and size of the index.
    Stats {
        /// The index.
        #[command(flatten)]
        index: IndexDir,
    },
    /// Remove a file, or everything under a folder, from the index.
    Remove {
        /// The file or folder (as it was added).
        path: PathBuf,
        /// The index.
        #[command(flatten)]
        index: IndexDir,
    },
}

/// `jielong ask`.
#[derive(Debug, Args)]
pub struct AskArgs {
    /// The question.
    pub question: String,
    /// The index.
    #[command(flatten)]
    pub index: IndexDir,
    /// Passages per search.
    #[arg(short = 'k', long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub k: u8,
    /// The most model calls.
    #[arg(long, default_value_t = AgentSettings::DEFAULT_MAX_STEPS)]
    pub max_steps: usize,
    /// Write every event of the run to this file as JSON lines.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Whether the figures the passages give are computed with: `auto` offers the
    /// sandboxed `python` tool for a question with numbers or a computation in it (a
    /// sum, a difference, a percentage), and an answer's number no program computed
    /// goes back for a check in code; `off` answers from the passages alone.
    #[arg(long, value_enum, default_value_t = ComputeArg::Auto)]
    pub compute: ComputeArg,
}

/// `ask --compute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ComputeArg {
    /// Python for a question that computes.
    Auto,
    /// Passages only.
    Off,
}

/// `jielong run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The task or question.
    pub task: String,
    /// A system prompt (default: prompts/agent_system.md).
    #[arg(long)]
    pub system: Option<String>,
    /// Tools the agent may call, comma-separated (`python`, `web_search`, `fetch_url`,
    /// `rag_search`); `none` answers directly, streaming.
    #[arg(long, value_delimiter = ',', default_value = "python")]
    pub tools: Vec<String>,
    /// How the tools are set up.
    #[command(flatten)]
    pub tool_options: ToolOptions,
    /// How the task is put to the model.
    #[command(flatten)]
    pub framing: FramingArgs,
    /// What a thought of `--strategy tree` is.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// How the agent works the task (default `route(adaptive(written, direct, n=3),
    /// written)`: a question with numbers or counting in it is answered in writing and
    /// by the tools at once, and a third answer is drawn only when the two differ (ties
    /// go to a computed answer); the
    /// answer no program backs is marked unverified; any other question gets a written
    /// answer). Leaves:
    /// `direct` (the tools), `written` (no tools). Compositions: `plan(S)` (subtasks,
    /// each by S, then a synthesis), `reflect(S)` (S's draft criticised and revised),
    /// `vote(S, T, …, n=N)` / `judge(…)` / `adaptive(…)` (N runs of S, T, … in turn,
    /// the answer voted, judged by the model, or drawn only while they disagree),
    /// `sample(…, pick=check)` (each answer checked by the other way of answering),
    /// `fallback(S, T)`, `route(S, T)` (S for tasks that need the tools, T for the
    /// rest), `tree(breadth=3, beam=3, depth=4)` (Tree of Thoughts over
    /// `--thoughts`). Presets: `self-consistency`, `best-of-n`, `mixed` (vote of
    /// written and direct), `plan+reflect`, `tree-of-thoughts`.
    #[arg(long, value_name = "STRATEGY", value_parser = strategy_text)]
    pub strategy: Option<String>,
    /// The most model calls in the run.
    #[arg(long, default_value_t = AgentSettings::DEFAULT_MAX_STEPS)]
    pub max_steps: usize,
    /// Write every event of the run to this file as JSON lines.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// How the model writes code for `python`: `fenced` (```python blocks in its
    /// reply, run as soon as they close, the output shown in an ```output block) or
    /// `tool-call` (JSON in the model's call tokens).
    #[arg(long, value_enum, default_value_t = CodeActionsArg::Fenced)]
    pub code_actions: CodeActionsArg,
    /// The `n` of `--strategy` presets that sample (`self-consistency`, `best-of-n`,
    /// `mixed`) and of sampling forms that do not give one (1 to 16).
    #[arg(long, default_value_t = Sample::DEFAULT_N)]
    pub samples: usize,
    /// A folder of prompt files (`agent_system.md`, `code_task.md`, … as in
    /// `prompts/`) replacing the built-in prompts of the same name.
    #[arg(long, value_name = "DIR")]
    pub prompts: Option<PathBuf>,
    /// The agent's settings from a YAML or JSON file: any key of `AgentSettings`
    /// (`max_steps`, `max_total_tokens`, `max_wall_time: 90s`, `strategy`, `sampling`,
    /// `grounding`, `call_fit`, …; `jielong workflow schema` lists them under
    /// `AgentSettings`). Its keys go over the flags' defaults; flags given on the
    /// command line go over the file.
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
}

/// What `jielong run` does without `--strategy`: for a question that needs the tools,
/// a written answer and the tools' answer at once, a third (written, sampled) only when
/// they differ, the vote's answer (ties go to a computed one) marked unverified when no
/// program gave it; a written answer for any other question. Chosen on GSM8K dev
/// 100:150 (held out): 16/50 against the plain model's 14/50 and the tools' alone
/// 13/50, at a median 44 s against 8 s (README, Strategies).
pub const DEFAULT_RUN_STRATEGY: &str = "route(adaptive(written, direct, n=3), written)";

impl RunArgs {
    /// The strategy `--strategy` and `--samples` choose.
    pub fn strategy(&self) -> Result<Strategy, StrategyError> {
        Strategy::parse(
            self.strategy.as_deref().unwrap_or(DEFAULT_RUN_STRATEGY),
            self.samples,
        )
    }
}

/// Checks `--strategy` text (the `n` it takes from `--samples` is checked later).
fn strategy_text(text: &str) -> Result<String, StrategyError> {
    Strategy::parse(text, Sample::DEFAULT_N)?;
    Ok(text.to_string())
}

/// `--code-actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CodeActionsArg {
    /// ```python blocks in the reply.
    Fenced,
    /// JSON tool calls.
    ToolCall,
}

impl From<CodeActionsArg> for jielong::agent::CodeActions {
    fn from(arg: CodeActionsArg) -> Self {
        match arg {
            CodeActionsArg::Fenced => Self::Fenced,
            CodeActionsArg::ToolCall => Self::ToolCall,
        }
    }
}

/// `jielong tool`.
#[derive(Debug, Args)]
pub struct ToolArgs {
    /// The tool's name.
    pub name: String,
    /// Its input: for `python` the code; otherwise the JSON arguments.
    pub input: String,
    /// How the tool is set up.
    #[command(flatten)]
    pub tool_options: ToolOptions,
}

/// How a task is put to the model (`run`, `eval`): a prompt technique and worked
/// examples.
#[derive(Debug, Args)]
pub struct FramingArgs {
    /// How the task is worded: `plain` (as it is), `cot` ("Let's think step by
    /// step."), `explain` (explain the way first), `deep-breath` ("Take a deep
    /// breath …"), `emotion` ("This is very important to my career."), `premises`
    /// (list the stated facts first); the files of `prompts/techniques/`.
    #[arg(long, value_name = "TECHNIQUE", default_value_t = Technique::Plain,
          value_parser = clap::value_parser!(Technique))]
    pub technique: Technique,
    /// An instruction of one's own instead of a technique: put after the task (a
    /// blank line between), or around it where it says `{task}`.
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["technique", "instruction_file"])]
    pub instruction: Option<String>,
    /// The instruction from a file (for example the `best.md` of `jielong optimize`).
    #[arg(long, value_name = "FILE", conflicts_with = "technique")]
    pub instruction_file: Option<PathBuf>,
    /// Worked examples shown before the task, as earlier turns: a JSONL file with a
    /// question and an answer per line (`question` and `answer`; GSM8K's worked
    /// solutions are understood).
    #[arg(long, value_name = "FILE")]
    pub few_shot: Option<PathBuf>,
    /// How many of the few-shot file's first examples are shown.
    #[arg(long, value_name = "N", default_value_t = 4, requires = "few_shot")]
    pub shots: usize,
}

/// The names `--thoughts` takes: those of [`jielong::thought_spaces`] (a test checks
/// that the two agree).
pub const THOUGHT_SPACE_NAMES: [&str; 2] = ["free", "game24"];

/// What a thought of `--strategy tree(…)` is (`run`, `eval`).
#[derive(Debug, Args)]
pub struct TreeArgs {
    /// What a thought is: `free` (a line per step, solved by a line saying "the
    /// answer is"; any task) or `game24` (one checked arithmetic step per line,
    /// solved when 24 is left; the task names the four numbers), each with its own
    /// propose and evaluate prompts.
    #[arg(long, value_name = "SPACE", default_value = "free",
          value_parser = clap::builder::PossibleValuesParser::new(THOUGHT_SPACE_NAMES))]
    pub thoughts: String,
}

/// Settings of the built-in tools (`run`, `tool`).
#[derive(Debug, Args)]
pub struct ToolOptions {
    /// `web_search` through this SearXNG instance (default: `JIELONG_SEARXNG_URL`, else
    /// Brave Search with `BRAVE_SEARCH_API_KEY`).
    #[arg(long, value_name = "URL")]
    pub searxng_url: Option<String>,
    /// Let `fetch_url` reach this host even on a private or loopback address
    /// (repeatable; for intranets and tests).
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_hosts: Vec<String>,
    /// Wall-time limit of one `python` call, in seconds.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub python_timeout: Option<u64>,
    /// Run `python` without its namespaces where this host cannot create them (the
    /// code then sees the host's files). By default such a host refuses to run code.
    #[arg(long)]
    pub python_unsandboxed: bool,
    /// The index `rag_search` searches.
    #[command(flatten)]
    pub index: IndexDir,
}

/// `jielong chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// A system prompt (default: the model template's own).
    #[arg(long)]
    pub system: Option<String>,
}

/// `jielong models …`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// The catalog: names, sizes, and whether each is downloaded.
    List,
    /// Download (or assemble) a model into the cache and verify its checksum.
    Pull {
        /// Catalog name or hf: reference (default: --model).
        name: Option<String>,
    },
    /// Print the path of a model's file (pulling it first unless --no-pull).
    Path {
        /// Catalog name, path or hf: reference (default: --model).
        name: Option<String>,
        /// Print where it would be, without downloading.
        #[arg(long)]
        no_pull: bool,
    },
}

/// `jielong bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Tokens to generate per decode measurement.
    #[arg(long, default_value_t = 128)]
    pub decode_tokens: usize,
    /// Rounds of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Turns of the multi-turn chat measurement.
    #[arg(long, default_value_t = 6)]
    pub turns: usize,
    /// Write the results as JSON to this file as well.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Measure the sandboxed Python tool instead: per-call overhead of the persistent
    /// worker and its cold start against a bare `python3 -I -S -c pass`.
    #[arg(long)]
    pub python: bool,
    /// Needle in a haystack: copy the documents of DIR to a temp folder, hide a needle
    /// sentence in one file at several depths, index them and check that `jielong ask`
    /// finds it and cites that file.
    #[arg(long, value_name = "DIR", conflicts_with = "python")]
    pub needle: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["jielong", "run", "TASK"].iter().chain(args))?;
        match cli.command {
            Command::Run(args) => Ok(*args),
            other => panic!("not `run`: {other:?}"),
        }
    }

    #[test]
    fn run_maps_its_flags_to_a_strategy() {
        for (flags, strategy) in [
            // `written` is route's own fallback, so the canonical form leaves it out.
            (&[][..], "route(adaptive(written, direct, n=3))"),
            (&["--strategy", "direct"], "direct"),
            (&["--strategy", "plan"], "plan"),
            (&["--strategy", "reflect"], "reflect"),
            (&["--strategy", "plan+reflect"], "reflect(plan)"),
            (&["--strategy=plan+reflect"], "reflect(plan)"),
            (
                &["--strategy", "mixed", "--samples", "3"],
                "vote(written, direct, n=3)",
            ),
            (
                &["--strategy", "vote(plan)", "--samples", "4"],
                "vote(plan, n=4)",
            ),
            (
                &["--strategy", "vote(plan, n=2)", "--samples", "4"],
                "vote(plan, n=2)",
            ),
        ] {
            let args = run_args(flags).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
            let parsed = args.strategy().unwrap_or_else(|e| panic!("{flags:?}: {e}"));
            assert_eq!(parsed.to_string(), strategy, "{flags:?}");
        }
        let err = run_args(&["--strategy", "bogus"]).unwrap_err().to_string();
        assert!(
            err.contains("unknown strategy `bogus`; strategies: direct, written, plan"),
            "{err}"
        );
        // The old switches are gone.
        assert!(run_args(&["--plan"]).is_err());
        let args =
            run_args(&["--strategy", "mixed", "--samples", "40"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(args.strategy().is_err());
    }

    #[test]
    fn every_agent_command_takes_the_librarys_step_budget_by_default() {
        let args = run_args(&[]).unwrap();
        assert_eq!(args.max_steps, AgentSettings::DEFAULT_MAX_STEPS);
        assert_eq!(args.max_steps, AgentSettings::default().max_steps);
        let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap().command;
        match parse(&["jielong", "ask", "Q"]) {
            Command::Ask(args) => assert_eq!(args.max_steps, AgentSettings::DEFAULT_MAX_STEPS),
            other => panic!("not `ask`: {other:?}"),
        }
        match parse(&["jielong", "eval", "data.jsonl"]) {
            Command::Eval(args) => {
                assert_eq!(args.run.max_steps, AgentSettings::DEFAULT_MAX_STEPS)
            }
            other => panic!("not `eval`: {other:?}"),
        }
    }

    #[test]
    fn thoughts_takes_the_names_of_the_offered_spaces() {
        assert_eq!(jielong::thought_spaces().names(), THOUGHT_SPACE_NAMES);
    }
}
