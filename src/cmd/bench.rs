//! `jielong bench`: Jielong's generation path against a bare llama-cpp-2 loop on the
//! same build, model and threads; and a multi-turn chat with and without KV-cache
//! prefix reuse. Every figure is a ratio measured side by side in one run.
//! `--needle DIR` is a needle-in-a-haystack test of `jielong ask` instead, and
//! `--python` the Python tool's overhead.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use jielong::llama::{backend, common_prefix_len};
use jielong::{GenerateRequest, LlamaModel, Message, SessionOptions, Usage};
use llama_cpp_2::{
    context::params::LlamaContextParams, llama_batch::LlamaBatch, model::params::LlamaModelParams,
    model::LlamaModel as RawModel, sampling::LlamaSampler,
};
use serde::Serialize;

use crate::cli::{BenchArgs, GlobalArgs};

/// Prompt evaluation and decode speed of one path, in tokens per second.
#[derive(Debug, Clone, Copy, Serialize)]
struct Speed {
    prefill_tokens_per_s: f64,
    decode_tokens_per_s: f64,
}

/// Everything `jielong bench` measures.
#[derive(Debug, Serialize)]
struct Report {
    model: String,
    threads: usize,
    rounds: usize,
    prompt_tokens: usize,
    decode_tokens: usize,
    jielong: Speed,
    bare_llama_cpp: Speed,
    /// Jielong / bare: 1.0 means no overhead.
    prefill_ratio: f64,
    decode_ratio: f64,
    branches: BranchReport,
    chat: ChatReport,
}

/// Branches and log-probabilities on the same prompt (already in the cache), each a
/// median over the rounds.
#[derive(Debug, Serialize)]
struct BranchReport {
    branches: usize,
    tokens_per_branch: usize,
    /// Wall time of one generation.
    one_s: f64,
    /// The same generation `branches` times, one after another.
    sequential_s: f64,
    /// `branches` forks of the prompt decoded in one batch per step.
    batched_s: f64,
    /// batched / one (target <= 1.6).
    batched_over_one: f64,
    /// sequential / one (about `branches`).
    sequential_over_one: f64,
    /// Decode speed with 5 log-probability alternatives per token / without.
    logprobs_decode_ratio: f64,
    /// The same measurement on the bare llama-cpp-2 loop: the time of a step that
    /// decodes `branches` sequences in one batch over a one-sequence step (the floor
    /// this machine sets for `batched_over_one`).
    bare_batched_over_one: f64,
}

#[derive(Debug, Serialize)]
struct ChatReport {
    turns: usize,
    /// Tokens in the union of all turns' prompts (what must be evaluated at least once).
    distinct_prompt_tokens: usize,
    prompt_tokens_total: usize,
    evaluated_with_reuse: usize,
    evaluated_without_reuse: usize,
    /// Tokens generated over all turns (with reuse they are already in the cache when
    /// the next prompt repeats them).
    generated: usize,
    /// (evaluated_with_reuse + generated) / distinct_prompt_tokens: every token the
    /// model computed, against the least it could have (about 1.0 when nothing is
    /// computed twice).
    computed_over_distinct: f64,
    prompt_time_with_reuse_s: f64,
    prompt_time_without_reuse_s: f64,
    wall_with_reuse_s: f64,
    wall_without_reuse_s: f64,
    /// evaluated_with_reuse / distinct_prompt_tokens (target <= 1.1).
    evaluated_over_distinct: f64,
    /// wall_with_reuse / wall_without_reuse.
    wall_ratio: f64,
}

const ESSAY_TASK: &str = "Write a long, detailed essay about the history of the printing press, \
from woodblock printing in China to Gutenberg and the industrial presses of the nineteenth century.";

const BACKGROUND: &str = "Movable type was invented in China by Bi Sheng around 1040 using \
ceramic pieces; metal type appeared in Korea during the Goryeo dynasty, where the Jikji was \
printed in 1377. In Europe, Johannes Gutenberg combined an oil-based ink, a hand mould for \
casting type and a screw press adapted from wine making around 1450. ";

const CHAT_TURNS: [&str; 8] = [
    "Hi! I am planning a trip to Japan in spring. What cities should I visit?",
    "How many days would you spend in Kyoto?",
    "What food should I try there?",
    "Is the rail pass worth it for that route?",
    "Give me a packing list in five items.",
    "Summarise the plan in two sentences.",
    "What phrases in Japanese are useful?",
    "Thanks! Any last tip?",
];

/// Runs `jielong bench`.
pub async fn bench(global: &GlobalArgs, args: BenchArgs) -> anyhow::Result<()> {
    if args.python {
        return python_bench(&args).await;
    }
    if let Some(dir) = &args.needle {
        return needle_bench(global, dir, args.json.as_deref()).await;
    }
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(args.decode_tokens > 1, "--decode-tokens must be at least 2");
    anyhow::ensure!(
        (1..=CHAT_TURNS.len()).contains(&args.turns),
        "--turns must be between 1 and {}",
        CHAT_TURNS.len()
    );
    let model = super::load_local_model(global).await?;
    let options = super::session_options(global);
    let threads = options
        .threads
        .unwrap_or_else(jielong::chat::physical_cores);
    let global = global.clone();
    let json = args.json.clone();
    let report =
        tokio::task::spawn_blocking(move || measure(&model, &options, threads, &global, &args))
            .await
            .context("the benchmark thread failed")??;
    print_report(&report);
    if let Some(path) = &json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn measure(
    model: &LlamaModel,
    options: &SessionOptions,
    threads: usize,
    global: &GlobalArgs,
    args: &BenchArgs,
) -> anyhow::Result<Report> {
    let user = format!("{}{ESSAY_TASK}", BACKGROUND.repeat(4));
    let prompt = model
        .chat_template()
        .render(&[Message::user(user)], &[], true)?;
    let prompt_tokens = model.tokenize(&prompt).len();
    let n_ctx = model.context_size_for(options);
    let session = model.session(options)?;
    let path = model
        .info()
        .path
        .clone()
        .context("the model has no file to load for the bare loop")?;
    let raw = RawModel::load_from_file(backend()?, &path, &LlamaModelParams::default())
        .with_context(|| format!("cannot load {} for the bare loop", path.display()))?;

    eprintln!(
        "bench: {} rounds, prompt {prompt_tokens} tokens, {} generated tokens, {threads} threads",
        args.rounds, args.decode_tokens
    );
    let request = GenerateRequest {
        max_tokens: args.decode_tokens,
        ..GenerateRequest::default()
    };
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    let mut generated = args.decode_tokens;
    for round in 0..args.rounds {
        // Alternate which path goes first, so neither always runs on a warmer machine.
        let bare_first = round % 2 == 1;
        if bare_first {
            bare.push(bare_lanes(
                &raw,
                threads,
                n_ctx,
                options.batch_size,
                &prompt,
                generated,
                1,
            )?);
        }
        session.reset()?;
        let done = session.generate(&prompt, &request)?.wait(|_| {})?;
        generated = done.usage.generated_tokens.max(2);
        ours.push(speed(&done.usage));
        if !bare_first {
            bare.push(bare_lanes(
                &raw,
                threads,
                n_ctx,
                options.batch_size,
                &prompt,
                generated,
                1,
            )?);
        }
        eprintln!(
            "  round {}: jielong {:.1}/{:.1} tok/s, bare {:.1}/{:.1} tok/s (prefill/decode)",
            round + 1,
            ours[round].prefill_tokens_per_s,
            ours[round].decode_tokens_per_s,
            bare[round].prefill_tokens_per_s,
            bare[round].decode_tokens_per_s
        );
    }
    let jielong = median_speed(&ours);
    let bare_llama_cpp = median_speed(&bare);
    let mut branches = branch_bench(&session, &prompt, args)?;
    let bare_steps = |lanes| -> anyhow::Result<f64> {
        let speeds = (0..args.rounds)
            .map(|_| bare_lanes(&raw, threads, n_ctx, options.batch_size, &prompt, 64, lanes))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(median(
            speeds.iter().map(|s| s.decode_tokens_per_s).collect(),
        ))
    };
    branches.bare_batched_over_one = bare_steps(1)? / bare_steps(branches.branches)?;
    drop(session);
    let chat = chat_reuse(model, options, global, args.turns)?;
    Ok(Report {
        model: model.info().name.clone(),
        threads,
        rounds: args.rounds,
        prompt_tokens,
        decode_tokens: generated,
        prefill_ratio: jielong.prefill_tokens_per_s / bare_llama_cpp.prefill_tokens_per_s,
        decode_ratio: jielong.decode_tokens_per_s / bare_llama_cpp.decode_tokens_per_s,
        jielong,
        bare_llama_cpp,
        branches,
        chat,
    })
}

/// Five branches (the default samples of self-consistency) in one batch against one
/// and five sequential generations, and
/// log-probabilities on against off, on `prompt` (kept in the cache, so only
/// decoding is timed).
fn branch_bench(
    session: &jielong::LlamaSession,
    prompt: &str,
    args: &BenchArgs,
) -> anyhow::Result<BranchReport> {
    const BRANCHES: usize = 5;
    let tokens = args.decode_tokens.min(64);
    let request = GenerateRequest {
        max_tokens: tokens,
        ..GenerateRequest::default()
    };
    let with_logprobs = GenerateRequest {
        logprobs: Some(5),
        ..request.clone()
    };
    let timed = |f: &dyn Fn() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let started = Instant::now();
        f()?;
        Ok(started.elapsed().as_secs_f64())
    };
    let generate = |request: &GenerateRequest| -> anyhow::Result<Usage> {
        Ok(session.generate(prompt, request)?.wait(|_| {})?.usage)
    };
    // Warm: the prompt is in the cache for every measurement.
    generate(&request)?;
    let (mut one, mut sequential, mut batched, mut logprob_ratio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        one.push(timed(&|| generate(&request).map(|_| ()))?);
        sequential.push(timed(&|| {
            for _ in 0..BRANCHES {
                generate(&request)?;
            }
            Ok(())
        })?);
        batched.push(timed(&|| {
            let done = session
                .generate_parallel(prompt, &vec![request.clone(); BRANCHES])?
                .wait()?;
            anyhow::ensure!(
                done.iter().all(|c| c.usage.generated_tokens == tokens),
                "a branch ended before {tokens} tokens"
            );
            Ok(())
        })?);
        let (off, on) = if round % 2 == 0 {
            let off = generate(&request)?;
            (off, generate(&with_logprobs)?)
        } else {
            let on = generate(&with_logprobs)?;
            (generate(&request)?, on)
        };
        let rate = |u: &Usage| u.generation_tokens_per_second().unwrap_or(0.0);
        logprob_ratio.push(rate(&on) / rate(&off).max(1e-9));
        eprintln!(
            "  branches round {}: one {:.2} s, {BRANCHES} sequential {:.2} s, {BRANCHES} batched {:.2} s; logprobs {:.3}x",
            round + 1,
            one[round],
            sequential[round],
            batched[round],
            logprob_ratio[round]
        );
    }
    let (one, sequential, batched) = (median(one), median(sequential), median(batched));
    Ok(BranchReport {
        branches: BRANCHES,
        tokens_per_branch: tokens,
        one_s: one,
        sequential_s: sequential,
        batched_s: batched,
        batched_over_one: batched / one,
        sequential_over_one: sequential / one,
        logprobs_decode_ratio: median(logprob_ratio),
        bare_batched_over_one: 0.0,
    })
}

fn speed(usage: &Usage) -> Speed {
    Speed {
        prefill_tokens_per_s: usage.prompt_tokens_per_second().unwrap_or(0.0),
        decode_tokens_per_s: usage.generation_tokens_per_second().unwrap_or(0.0),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn median_speed(speeds: &[Speed]) -> Speed {
    Speed {
        prefill_tokens_per_s: median(speeds.iter().map(|s| s.prefill_tokens_per_s).collect()),
        decode_tokens_per_s: median(speeds.iter().map(|s| s.decode_tokens_per_s).collect()),
    }
}

/// The reference: llama-cpp-2 driven directly, the way its own examples do, with the
/// same context settings and the same amount of work as Jielong's path (tokenize and
/// evaluate the prompt; then sample `n_gen` tokens greedily, evaluating all but the last).
/// With `lanes` > 1 the prompt is forked into that many sequences, each decoding its
/// own greedy token, all in one batch per step (decode speed then counts steps).
fn bare_lanes(
    raw: &RawModel,
    threads: usize,
    n_ctx: u32,
    n_batch: u32,
    prompt: &str,
    n_gen: usize,
    lanes: usize,
) -> anyhow::Result<Speed> {
    let threads = i32::try_from(threads).unwrap_or(i32::MAX);
    let n_batch = n_batch.min(n_ctx);
    let params = LlamaContextParams::default()
        .with_n_ctx(std::num::NonZeroU32::new(n_ctx))
        .with_n_batch(n_batch)
        .with_n_ubatch(n_batch)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_n_seq_max(lanes.max(1) as u32)
        .with_kv_unified(true);
    let mut ctx = raw.new_context(backend()?, params)?;
    let mut batch = LlamaBatch::new(n_batch as usize, lanes.max(1) as i32);

    let started = Instant::now();
    let tokens = raw.vocab().tokenize(prompt.as_bytes(), false, true);
    let mut pos = 0i32;
    for chunk in tokens.chunks(n_batch as usize) {
        batch.clear();
        for (i, token) in chunk.iter().enumerate() {
            batch.add(*token, pos, &[0], i + 1 == chunk.len())?;
            pos += 1;
        }
        ctx.decode(&mut batch)?;
    }
    let prefill = started.elapsed();

    for seq in 1..lanes {
        ctx.copy_kv_cache_seq(0, seq as i32, None, None)?;
    }
    let mut samplers: Vec<LlamaSampler> =
        (0..lanes.max(1)).map(|_| LlamaSampler::greedy()).collect();
    let mut logits: Vec<i32> = vec![batch.n_tokens() - 1; lanes.max(1)];
    let started = Instant::now();
    for i in 0..n_gen {
        let tokens: Vec<_> = samplers
            .iter_mut()
            .zip(&logits)
            .map(|(sampler, &index)| sampler.sample(&ctx, index))
            .collect();
        if i + 1 == n_gen {
            break;
        }
        batch.clear();
        for (seq, token) in tokens.into_iter().enumerate() {
            batch.add(token, pos, &[seq as i32], true)?;
            logits[seq] = seq as i32;
        }
        pos += 1;
        ctx.decode(&mut batch)?;
    }
    let decode = started.elapsed();
    Ok(Speed {
        prefill_tokens_per_s: per_second(tokens.len(), prefill),
        decode_tokens_per_s: per_second(n_gen, decode),
    })
}

fn per_second(tokens: usize, time: Duration) -> f64 {
    tokens as f64 / time.as_secs_f64().max(1e-9)
}

/// A scripted chat, once on one session (prefix reuse) and once with the cache reset
/// before every turn, replaying the same prompts.
fn chat_reuse(
    model: &LlamaModel,
    options: &SessionOptions,
    global: &GlobalArgs,
    turns: usize,
) -> anyhow::Result<ChatReport> {
    let request = GenerateRequest {
        max_tokens: global.max_tokens.min(64),
        ..GenerateRequest::default()
    };
    let session = model.session(options)?;
    let mut messages = Vec::new();
    let mut prompts = Vec::new();
    let mut with_reuse = Usage::default();
    let started = Instant::now();
    for turn in CHAT_TURNS.iter().take(turns) {
        messages.push(Message::user(*turn));
        let prompt = model.chat_template().render(&messages, &[], true)?;
        let done = session.generate(&prompt, &request)?.wait(|_| {})?;
        with_reuse.accumulate(&done.usage);
        messages.push(Message::assistant(done.text));
        prompts.push(prompt);
    }
    let wall_with = started.elapsed();

    let mut without_reuse = Usage::default();
    let started = Instant::now();
    for prompt in &prompts {
        session.reset()?;
        let done = session.generate(prompt, &request)?.wait(|_| {})?;
        without_reuse.accumulate(&done.usage);
    }
    let wall_without = started.elapsed();

    let tokenized: Vec<Vec<i32>> = prompts.iter().map(|p| model.tokenize(p)).collect();
    let distinct = distinct_tokens(&tokenized);
    Ok(ChatReport {
        turns,
        distinct_prompt_tokens: distinct,
        prompt_tokens_total: with_reuse.prompt_tokens,
        evaluated_with_reuse: with_reuse.evaluated_tokens,
        evaluated_without_reuse: without_reuse.evaluated_tokens,
        generated: with_reuse.generated_tokens,
        computed_over_distinct: (with_reuse.evaluated_tokens + with_reuse.generated_tokens) as f64
            / distinct.max(1) as f64,
        prompt_time_with_reuse_s: with_reuse.prompt_time.as_secs_f64(),
        prompt_time_without_reuse_s: without_reuse.prompt_time.as_secs_f64(),
        wall_with_reuse_s: wall_with.as_secs_f64(),
        wall_without_reuse_s: wall_without.as_secs_f64(),
        evaluated_over_distinct: with_reuse.evaluated_tokens as f64 / distinct.max(1) as f64,
        wall_ratio: wall_with.as_secs_f64() / wall_without.as_secs_f64().max(1e-9),
    })
}

/// Tokens in the union of the sequences seen as a prefix tree: each sequence adds what
/// follows its longest common prefix with any earlier one.
fn distinct_tokens(sequences: &[Vec<i32>]) -> usize {
    sequences
        .iter()
        .enumerate()
        .map(|(i, seq)| {
            let shared = sequences[..i]
                .iter()
                .map(|earlier| common_prefix_len(earlier, seq))
                .max()
                .unwrap_or(0);
            seq.len() - shared
        })
        .sum()
}

fn print_report(r: &Report) {
    println!(
        "model {} on {} threads, median of {} rounds",
        r.model, r.threads, r.rounds
    );
    println!();
    println!(
        "generation path ({} prompt tokens, {} generated)",
        r.prompt_tokens, r.decode_tokens
    );
    println!(
        "  {:<16} {:>14} {:>14}",
        "", "prefill tok/s", "decode tok/s"
    );
    println!(
        "  {:<16} {:>14.1} {:>14.1}",
        "jielong", r.jielong.prefill_tokens_per_s, r.jielong.decode_tokens_per_s
    );
    println!(
        "  {:<16} {:>14.1} {:>14.1}",
        "bare llama-cpp-2",
        r.bare_llama_cpp.prefill_tokens_per_s,
        r.bare_llama_cpp.decode_tokens_per_s
    );
    println!(
        "  {:<16} {:>13.3}x {:>13.3}x",
        "ratio", r.prefill_ratio, r.decode_ratio
    );
    let b = &r.branches;
    println!();
    println!(
        "branches ({} tokens each, prompt cached)",
        b.tokens_per_branch
    );
    println!("  one generation             {:>8.2} s", b.one_s);
    println!(
        "  {} sequential               {:>8.2} s  ({:.2}x one)",
        b.branches, b.sequential_s, b.sequential_over_one
    );
    println!(
        "  {} branches, one batch      {:>8.2} s  ({:.2}x one; target <= 1.6x)",
        b.branches, b.batched_s, b.batched_over_one
    );
    println!(
        "  bare llama-cpp-2: a {}-sequence step takes {:.2}x a 1-sequence step",
        b.branches, b.bare_batched_over_one
    );
    println!(
        "  log-probabilities (top 5)  {:>8.3}x decode speed (target >= 0.9x)",
        b.logprobs_decode_ratio
    );
    let c = &r.chat;
    println!();
    println!(
        "{}-turn chat, prefix reuse on vs off (same prompts)",
        c.turns
    );
    println!(
        "  distinct prompt tokens     {:>8}",
        c.distinct_prompt_tokens
    );
    println!("  prompt tokens, all turns   {:>8}", c.prompt_tokens_total);
    println!(
        "  evaluated with reuse       {:>8}  ({:.3}x distinct)",
        c.evaluated_with_reuse, c.evaluated_over_distinct
    );
    println!(
        "  evaluated without reuse    {:>8}",
        c.evaluated_without_reuse
    );
    println!(
        "  evaluated + generated      {:>8}  ({:.3}x distinct)",
        c.evaluated_with_reuse + c.generated,
        c.computed_over_distinct
    );
    println!(
        "  prompt time with / without {:>7.2}s / {:.2}s  ({:.3}x)",
        c.prompt_time_with_reuse_s,
        c.prompt_time_without_reuse_s,
        c.prompt_time_with_reuse_s / c.prompt_time_without_reuse_s.max(1e-9)
    );
    println!(
        "  wall time with / without   {:>7.2}s / {:.2}s  ({:.3}x)",
        c.wall_with_reuse_s, c.wall_without_reuse_s, c.wall_ratio
    );
}

/// `jielong bench --python`: the Python tool's overhead, as ratios to a bare interpreter.
async fn python_bench(args: &BenchArgs) -> anyhow::Result<()> {
    let sandbox = jielong::tools::python::PythonSandbox::new();
    let report = jielong::tools::python::bench_overhead(&sandbox, 200, 20 * args.rounds.max(1))
        .await
        .context("the Python benchmark failed")?;
    println!("{report}");
    if let Some(path) = &args.json {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let json = serde_json::json!({
            "layers": report.layers.to_string(),
            "per_call_median_ms": ms(report.per_call_median),
            "per_call_p90_ms": ms(report.per_call_p90),
            "cold_start_median_ms": ms(report.cold_start_median),
            "bare_python_median_ms": ms(report.bare_python_median),
            "cold_start_ratio": report.cold_start_ratio(),
            "cold_start_cpu_ratio": report.cold_start_cpu_ratio(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The sentence hidden in the haystack.
const NEEDLE: &str = "The best thing to do in San Francisco is eat a sandwich and sit in \
Dolores Park on a sunny day.";
/// The question whose answer is the needle.
const NEEDLE_QUESTION: &str = "What is the best thing to do in San Francisco?";
/// Where the needle goes, as fractions of the file's lines.
const NEEDLE_DEPTHS: [f64; 5] = [0.1, 0.25, 0.5, 0.75, 0.9];
/// Text files the needle can go into (the formats whose lines are the file's lines).
const NEEDLE_EXTENSIONS: [&str; 6] = ["txt", "text", "md", "markdown", "rst", "log"];

/// One depth of the needle bench.
#[derive(Debug, Serialize)]
struct NeedleResult {
    /// Where the needle is, as a fraction of the file's lines.
    depth: f64,
    /// Its line in the file, from 1.
    line: usize,
    /// The answer mentions "sandwich" or "Dolores Park".
    found: bool,
    /// A source of the answer is the needle's file.
    cited_file: bool,
    /// A source of the answer is the needle's file at lines that hold the needle.
    cited_line: bool,
    /// A search showed the model the passage holding the needle.
    retrieved: bool,
    /// Seconds to index the folder.
    index_s: f64,
    /// Seconds to answer.
    answer_s: f64,
    /// The answer (empty when the agent stopped without one).
    answer: String,
    /// The sources listed under it, as `file:lines` relative to the haystack.
    sources: Vec<String>,
    /// Why there is no answer, when there is none.
    error: Option<String>,
}

/// Everything `jielong bench --needle` measures.
#[derive(Debug, Serialize)]
struct NeedleReport {
    model: String,
    haystack: PathBuf,
    documents: usize,
    bytes: u64,
    /// The file holding the needle, relative to the haystack.
    needle_file: PathBuf,
    needle_file_lines: usize,
    needle: &'static str,
    question: &'static str,
    depths: Vec<NeedleResult>,
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("jielong-needle-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The regular files under `dir` (hidden entries skipped), relative to it, sorted.
fn haystack_files(dir: &Path) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let at = dir.join(&rel);
        let entries =
            std::fs::read_dir(&at).with_context(|| format!("cannot list {}", at.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", at.display()))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = rel.join(entry.file_name());
            let meta = std::fs::metadata(entry.path())
                .with_context(|| format!("cannot read {}", entry.path().display()))?;
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                out.push((path, meta.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The file the needle goes into: the largest text file (by bytes; the first by path
/// among equals), preferring `.txt`.
fn needle_file(files: &[(PathBuf, u64)]) -> Option<PathBuf> {
    let ext = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default()
    };
    let largest = |pick: &dyn Fn(&str) -> bool| {
        files
            .iter()
            .filter(|(p, _)| pick(&ext(p)))
            .fold(None::<&(PathBuf, u64)>, |best, f| match best {
                Some(b) if b.1 >= f.1 => Some(b),
                _ => Some(f),
            })
            .map(|(p, _)| p.clone())
    };
    largest(&|e| e == "txt").or_else(|| largest(&|e| NEEDLE_EXTENSIONS.contains(&e)))
}

/// `text` with `needle` as a line of its own before line `at` (0-based; at the end when
/// `at` is past the last line).
fn insert_line(text: &str, at: usize, needle: &str) -> String {
    let mut out = String::with_capacity(text.len() + needle.len() + 2);
    let mut inserted = false;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i == at {
            out.push_str(needle);
            out.push('\n');
            inserted = true;
        }
        out.push_str(line);
    }
    if !inserted {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(needle);
        out.push('\n');
    }
    out
}

/// Copies the haystack into `docs` with the needle in `needle_file` before line `at`
/// (0-based), then indexes it into `index`.
fn build_haystack(
    source: &Path,
    files: &[(PathBuf, u64)],
    needle_file: &Path,
    at: usize,
    docs: &Path,
    index: &Path,
) -> anyhow::Result<jielong::retrieval::Index> {
    for (rel, _) in files {
        let from = source.join(rel);
        let to = docs.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        // Read and write rather than copy: the source may be read-only.
        let bytes =
            std::fs::read(&from).with_context(|| format!("cannot read {}", from.display()))?;
        let bytes = if rel == needle_file {
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8 text", from.display()))?;
            insert_line(&text, at, NEEDLE).into_bytes()
        } else {
            bytes
        };
        std::fs::write(&to, bytes).with_context(|| format!("cannot write {}", to.display()))?;
    }
    let index = jielong::retrieval::Index::open_or_create(index)?;
    index.ingest(
        &[docs.to_path_buf()],
        &jielong::retrieval::IngestOptions::default(),
        &jielong::retrieval::NoProgress,
    )?;
    Ok(index)
}

/// `jielong bench --needle DIR`: for each depth, a copy of DIR with the needle in one
/// file, a fresh index of it, and `jielong ask` on the question; whether the answer has
/// the needle's content and cites its file and line.
async fn needle_bench(
    global: &GlobalArgs,
    source: &Path,
    json: Option<&Path>,
) -> anyhow::Result<()> {
    let files = haystack_files(source)?;
    let needle_rel = needle_file(&files).with_context(|| {
        format!(
            "{}: no text file ({}) to hide the needle in",
            source.display(),
            NEEDLE_EXTENSIONS.join(", ")
        )
    })?;
    let original = std::fs::read_to_string(source.join(&needle_rel))
        .with_context(|| format!("cannot read {}", source.join(&needle_rel).display()))?;
    let lines = original.split_inclusive('\n').count();
    let bytes: u64 = files.iter().map(|(_, n)| n).sum();
    let model = super::load_local_model(global).await?;
    println!(
        "needle in a haystack: {} files ({:.2} MB) from {}; the needle goes into {} ({lines} lines); model {}",
        files.len(),
        bytes as f64 / 1e6,
        source.display(),
        needle_rel.display(),
        model.info().name
    );
    println!("  needle:   {NEEDLE}");
    println!("  question: {NEEDLE_QUESTION}");

    let work = TempDir::new()?;
    let mut results = Vec::new();
    for (n, depth) in NEEDLE_DEPTHS.iter().enumerate() {
        let at = ((lines as f64 * depth).round() as usize).min(lines);
        let docs = work.0.join(format!("depth{n}")).join("docs");
        let index_dir = work.0.join(format!("depth{n}")).join("index");
        let started = Instant::now();
        let index = {
            let (source, files, rel) = (source.to_path_buf(), files.clone(), needle_rel.clone());
            let (docs, index_dir) = (docs.clone(), index_dir.clone());
            tokio::task::spawn_blocking(move || {
                build_haystack(&source, &files, &rel, at, &docs, &index_dir)
            })
            .await
            .context("the indexing task failed")??
        };
        let index_s = started.elapsed().as_secs_f64();
        let needle_path = std::fs::canonicalize(docs.join(&needle_rel))
            .with_context(|| format!("cannot find {}", docs.join(&needle_rel).display()))?;
        let needle_line = at + 1;
        // Sources are shown relative to the copy of the haystack.
        let docs_prefix = format!(
            "{}/",
            std::fs::canonicalize(&docs)
                .with_context(|| format!("cannot find {}", docs.display()))?
                .display()
        );
        eprintln!(
            "[depth {:.0}%: the needle is line {needle_line} of {}]",
            depth * 100.0,
            needle_rel.display()
        );
        let args = crate::cli::AskArgs {
            question: NEEDLE_QUESTION.to_string(),
            index: crate::cli::IndexDir {
                dir: Some(index_dir.clone()),
            },
            // The defaults of `jielong ask`.
            k: 3,
            max_steps: jielong::agent::AgentSettings::DEFAULT_MAX_STEPS,
            trace: None,
            compute: crate::cli::ComputeArg::Auto,
        };
        let started = Instant::now();
        let answered = super::ask::answer(global, &model, Arc::new(index), &args).await;
        let answer_s = started.elapsed().as_secs_f64();
        let in_file = |c: &jielong::tools::rag::Citation| Path::new(&c.source) == needle_path;
        let covers = |c: &jielong::tools::rag::Citation| {
            in_file(c) && (c.line_start..=c.line_end).contains(&(needle_line as u64))
        };
        let result = match answered {
            Ok(a) => {
                let lower = a.answer.to_lowercase();
                NeedleResult {
                    depth: *depth,
                    line: needle_line,
                    found: lower.contains("sandwich") || lower.contains("dolores park"),
                    cited_file: a.sources.iter().any(in_file),
                    cited_line: a.sources.iter().any(covers),
                    retrieved: a.shown.iter().any(covers),
                    index_s,
                    answer_s,
                    sources: a
                        .sources
                        .iter()
                        .map(|c| {
                            let location = c.location();
                            location
                                .strip_prefix(&docs_prefix)
                                .map_or(location.clone(), str::to_string)
                        })
                        .collect(),
                    answer: a.answer,
                    error: None,
                }
            }
            Err(e) => NeedleResult {
                depth: *depth,
                line: needle_line,
                found: false,
                cited_file: false,
                cited_line: false,
                retrieved: false,
                index_s,
                answer_s,
                answer: String::new(),
                sources: Vec::new(),
                error: Some(format!("{e:#}")),
            },
        };
        results.push(result);
    }
    let report = NeedleReport {
        model: model.info().name.clone(),
        haystack: source.to_path_buf(),
        documents: files.len(),
        bytes,
        needle_file: needle_rel,
        needle_file_lines: lines,
        needle: NEEDLE,
        question: NEEDLE_QUESTION,
        depths: results,
    };
    print_needle_report(&report);
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn print_needle_report(r: &NeedleReport) {
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!();
    println!(
        "  {:>5} {:>6}  {:<6} {:<10} {:<10} {:<9} {:>8} {:>8}",
        "depth", "line", "answer", "cites file", "cites line", "retrieved", "index s", "answer s"
    );
    for d in &r.depths {
        println!(
            "  {:>4.0}% {:>6}  {:<6} {:<10} {:<10} {:<9} {:>8.2} {:>8.1}",
            d.depth * 100.0,
            d.line,
            yes(d.found),
            yes(d.cited_file),
            yes(d.cited_line),
            yes(d.retrieved),
            d.index_s,
            d.answer_s
        );
    }
    println!();
    for d in &r.depths {
        let answer = match &d.error {
            Some(e) => format!("(no answer: {e})"),
            None => one_line(&d.answer, 160),
        };
        println!("  {:>4.0}%: {answer}", d.depth * 100.0);
        if !d.sources.is_empty() {
            println!("         sources: {}", d.sources.join(", "));
        }
    }
    let n = r.depths.len();
    let count = |f: fn(&NeedleResult) -> bool| r.depths.iter().filter(|d| f(d)).count();
    let mean = r.depths.iter().map(|d| d.answer_s).sum::<f64>() / n.max(1) as f64;
    println!();
    println!(
        "summary: answer found at {}/{n} depths, needle file cited at {}/{n}, needle line cited at {}/{n}, needle retrieved at {}/{n}; {mean:.1} s per answer",
        count(|d| d.found),
        count(|d| d.cited_file),
        count(|d| d.cited_line),
        count(|d| d.retrieved),
    );
}

/// `text` on one line, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &flat[..end]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::{distinct_tokens, insert_line, needle_file};
    use std::path::PathBuf;

    #[test]
    fn the_needle_goes_in_the_largest_text_file_at_its_line() {
        assert_eq!(insert_line("a\nb\nc\n", 1, "N"), "a\nN\nb\nc\n");
        assert_eq!(insert_line("a\nb", 0, "N"), "N\na\nb");
        assert_eq!(insert_line("a\nb", 2, "N"), "a\nb\nN\n");
        assert_eq!(insert_line("", 0, "N"), "N\n");
        let files = |list: &[(&str, u64)]| -> Vec<(PathBuf, u64)> {
            list.iter().map(|(p, n)| (PathBuf::from(p), *n)).collect()
        };
        let pick = |list: &[(&str, u64)]| needle_file(&files(list));
        assert_eq!(
            pick(&[("a.txt", 5), ("b.md", 90), ("c.txt", 7), ("d.txt", 7)]),
            Some(PathBuf::from("c.txt"))
        );
        assert_eq!(
            pick(&[("a.pdf", 500), ("b.md", 90), ("c.rst", 100)]),
            Some(PathBuf::from("c.rst"))
        );
        assert_eq!(pick(&[("a.pdf", 500)]), None);
    }

    #[test]
    fn distinct_counts_the_prefix_tree() {
        assert_eq!(
            distinct_tokens(&[vec![1, 2, 3], vec![1, 2, 3, 4, 5], vec![1, 2, 9]]),
            6
        );
        assert_eq!(distinct_tokens(&[]), 0);
    }
}
