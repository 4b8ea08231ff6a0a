//! `jielong eval needle DIR`: needle in a haystack on the context path. The model
//! reads a haystack of each length made of DIR's `.txt` files, with a needle sentence
//! at each depth, and is asked for it, plainly and with the answer started as "Here
//! is the most relevant sentence in the context:".
//!
//! The grid, the haystacks, grading, the cache and the SVG are `jielong_eval::needle`;
//! this module implements its [`Reader`] for the embedded model (its tokenizer, one
//! session whose KV cache carries from cell to cell), checks the lengths against the
//! context, and draws the progress bar and the summary.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use futures::future::BoxFuture;
use futures::FutureExt;
use indicatif::{ProgressBar, ProgressStyle};
use jielong::chat::{Chat, ChatRequest, Message};
use jielong::eval::needle::{parse_depths, parse_lengths, Cell, Prompt};
use jielong::eval::{
    Documents, Grid, GridObserver, GridReport, Needle, ReadError, Reader, Reply, Tokens, Variant,
};
use jielong::{LanguageModel, LlamaModel, ModelSession};
use serde_json::{json, Value};
use tokio::sync::Mutex as AsyncMutex;

use crate::cli::{GlobalArgs, NeedleArgs};

/// Runs `jielong eval needle`.
pub async fn needle(global: &GlobalArgs, args: NeedleArgs) -> anyhow::Result<()> {
    let lengths = parse_lengths(&args.lengths)?;
    let depths = parse_depths(&args.depths)?;
    let variants = Variant::parse_list(&args.variants)?;
    let needle = match &args.needle {
        Some(sentence) => Needle::new(
            sentence,
            args.question.as_deref().unwrap_or_default(),
            args.key.as_deref().unwrap_or_default(),
        )?,
        None => {
            let default = Needle::default();
            Needle::new(
                &default.sentence,
                args.question.as_deref().unwrap_or(&default.question),
                &args.key.clone().unwrap_or_else(|| default.keys.join(",")),
            )?
        }
    };
    anyhow::ensure!(args.answer_tokens > 0, "--answer-tokens must be above 0");
    let documents = Documents::load(&args.dir)?;
    let out = args.out.clone().unwrap_or_else(|| default_out(&args.dir));

    let model = super::load_local_model(global).await?;
    let options = super::session_options(global);
    let context = model.context_size_for(&options) as usize;
    check_lengths(&model, &lengths, &needle, context, args.answer_tokens)?;

    let grid = Grid::new(lengths, depths, variants, needle)?;
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the output folder {}", out.display()))?;
    let cache = out.join("cache.jsonl");
    if !args.resume && cache.exists() {
        std::fs::remove_file(&cache)
            .with_context(|| format!("cannot remove the old cache {}", cache.display()))?;
    }
    let session = model.open_session(&options)?;
    let request = ChatRequest {
        max_tokens: args.answer_tokens,
        ..super::chat_request(global)
    };
    let reader = ModelReader {
        name: global.model.clone(),
        model,
        session: AsyncMutex::new(session),
        request,
    };
    eprintln!(
        "needle in a haystack: {} documents from {}; lengths {}, depths {} %, variants {}; context {context} tokens",
        documents.texts.len(),
        args.dir.display(),
        args.lengths,
        args.depths,
        args.variants,
    );
    let cancel = super::eval::cancel_on_ctrl_c("eval needle");
    let grid = grid.cache(&cache).cancel(cancel);
    let bar = NeedleBar::new(global.verbose > 0);
    let started = Instant::now();
    let report = grid.run(&reader, &documents, &bar).await?;
    bar.done();
    let json_path = out.join("needle.json");
    let svg_path = out.join("needle.svg");
    report.write_json(&json_path)?;
    report.write_svg(&svg_path)?;
    println!("{report}");
    print_summary(&report, started.elapsed().as_secs_f64());
    println!("json: {}", json_path.display());
    println!("svg:  {}", svg_path.display());
    if report.interrupted {
        anyhow::bail!(
            "interrupted after {} of {} cells; `--resume` continues",
            report.cells.len(),
            report.size()
        );
    }
    Ok(())
}

/// `eval-out/needle.DIRNAME`.
fn default_out(dir: &Path) -> PathBuf {
    let name = std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "docs".into());
    PathBuf::from("eval-out").join(format!("needle.{name}"))
}

/// Every length, with the question, the chat template, the longer prefill and the
/// answer, must fit the session's context.
fn check_lengths(
    model: &LlamaModel,
    lengths: &[usize],
    needle: &Needle,
    context: usize,
    answer_tokens: usize,
) -> anyhow::Result<()> {
    let frame = Prompt::new("", &needle.question, Variant::Tip);
    let rendered = model.prompt_format().render(&chat(&frame))?;
    let frame_tokens = model.tokenize(&rendered).len();
    let trained = model.info().context_length as usize;
    for &length in lengths {
        let needed = length + frame_tokens + answer_tokens;
        if needed > context {
            let suggest = needed.next_power_of_two().min(trained.max(needed));
            let beyond = if needed > trained {
                format!("; the model was trained on {trained} tokens, so this length is beyond it")
            } else {
                format!(" (the model was trained on {trained})")
            };
            anyhow::bail!(
                "length {length} does not fit the context size of {context} tokens: with the question, the chat template and a {answer_tokens}-token answer it needs {needed}; raise it with --ctx-size {suggest}{beyond}"
            );
        }
    }
    Ok(())
}

/// The chat of a prompt: system, user, and the prefill if any.
fn chat(prompt: &Prompt) -> Chat {
    let chat = Chat::new(vec![
        Message::system(prompt.system.clone()),
        Message::user(prompt.user.clone()),
    ]);
    if prompt.prefill.is_empty() {
        chat
    } else {
        chat.with_prefill(prompt.prefill.clone())
    }
}

/// The embedded model as the grid's reader: its tokenizer counts, one session
/// answers (so the KV cache carries from one cell to the next).
struct ModelReader {
    name: String,
    model: LlamaModel,
    session: AsyncMutex<Box<dyn ModelSession>>,
    request: ChatRequest,
}

impl Reader for ModelReader {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn config(&self) -> Value {
        let info = self.model.info();
        json!({
            "model": info.name,
            "bytes": info.size_bytes,
            "request": self.request,
        })
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.model.tokenize(text).len()
    }

    fn answer<'a>(&'a self, prompt: &'a Prompt) -> BoxFuture<'a, Result<Reply, ReadError>> {
        async move {
            let mut session = self.session.lock().await;
            let generation = session.respond(&chat(prompt), &self.request)?;
            let completion = generation.finish(|_| {}).await?;
            let usage = &completion.usage;
            Ok(Reply {
                text: completion.text,
                tokens: Tokens {
                    prompt: usage.prompt_tokens,
                    cached: usage.cached_tokens,
                    evaluated: usage.evaluated_tokens,
                    generated: usage.generated_tokens,
                },
            })
        }
        .boxed()
    }
}

/// The progress bar: its length is the tokens of the cells to run (so the ETA
/// weighs a long cell more), its message the cell running and what was found.
struct NeedleBar {
    bar: ProgressBar,
    state: Mutex<BarState>,
    verbose: bool,
}

#[derive(Default)]
struct BarState {
    done: usize,
    total: usize,
    found: usize,
}

impl NeedleBar {
    fn new(verbose: bool) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {msg} [{elapsed_precise} < {eta_precise}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self {
            bar,
            state: Mutex::new(BarState::default()),
            verbose,
        }
    }

    fn done(&self) {
        self.bar.finish_and_clear();
    }

    fn println(&self, line: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line.as_ref());
        }
    }

    fn message(&self, running: Option<String>) {
        if let Ok(state) = self.state.lock() {
            let running = running.map(|r| format!(" · {r}")).unwrap_or_default();
            self.bar.set_message(format!(
                "{}/{} cells, {} found{running}",
                state.done, state.total, state.found
            ));
        }
    }
}

impl GridObserver for NeedleBar {
    fn started(&self, todo: &[(usize, f64, Variant)], cached: usize) {
        if let Ok(mut state) = self.state.lock() {
            state.total = todo.len();
        }
        self.bar
            .set_length(todo.iter().map(|(l, _, _)| *l as u64).sum());
        self.bar.set_position(0);
        if cached > 0 {
            self.println(format!("{cached} cells from the cache"));
        }
        self.message(None);
    }

    fn cell_started(&self, length: usize, depth: f64, variant: Variant) {
        self.message(Some(format!("{length} tokens, {depth}%, {variant}")));
    }

    fn finished(&self, cell: &Cell) {
        if let Ok(mut state) = self.state.lock() {
            state.done += 1;
            state.found += usize::from(cell.found);
        }
        self.bar.inc(cell.length as u64);
        self.message(None);
        if self.verbose || cell.error.is_some() {
            let mark = if cell.found { "✓" } else { "✗" };
            let answer = match &cell.error {
                Some(e) => format!("error: {e}"),
                None => super::run::one_line(&cell.answer, 100),
            };
            self.println(format!(
                "{mark} {} tokens ({} read, {} cached), {}% (at {:.1}%), {} [{:.1} s] {answer}",
                cell.length,
                cell.tokens.prompt,
                cell.tokens.cached,
                cell.depth,
                cell.placed_depth,
                cell.variant,
                cell.seconds,
            ));
        }
    }

    fn warning(&self, message: &str) {
        self.println(format!("jielong eval needle: warning: {message}"));
    }
}

/// Per variant: found, and seconds per cell by length; the whole run's time.
fn print_summary(report: &GridReport, seconds: f64) {
    for &variant in &report.variants {
        let (found, total) = report.found(Some(variant));
        let per_length: Vec<String> = report
            .lengths
            .iter()
            .filter_map(|&length| {
                let cells: Vec<&Cell> = report
                    .cells
                    .iter()
                    .filter(|c| c.variant == variant && c.length == length)
                    .collect();
                (!cells.is_empty()).then(|| {
                    let mean = cells.iter().map(|c| c.seconds).sum::<f64>() / cells.len() as f64;
                    format!("{length}: {mean:.1}")
                })
            })
            .collect();
        println!(
            "{variant}: {found}/{total} found; seconds per cell by length: {}",
            per_length.join(", ")
        );
    }
    println!(
        "{} cells ({} from the cache) in {seconds:.0} s",
        report.cells.len(),
        report.cached
    );
}
