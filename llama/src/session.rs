//! A session: one llama.cpp context on a worker thread of its own.
//!
//! The worker owns the context (llama.cpp contexts borrow the model and must stay on
//! one thread) and serves requests in order. The context holds several live
//! sequences — *branches* — in one unified pool of KV cells; a fork shares its
//! parent's cells. For each branch the worker keeps the tokens it holds ([`Cells`]): a new prompt on a branch drops only the part after the longest common
//! prefix and evaluates only the rest. One decode loop serves every request: each
//! generating branch is a lane, and all lanes decode together, one batch per step.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::branch::{token_logprob, Branch, Step};
use super::kv::tokenize;
use super::{backend, context_size, nonzero, Loaded};
use crate::warm::{self, PromptStore};
use jielong_chat::error::RuntimeError;
use jielong_chat::generate::{
    Completion, FinishReason, GenerateRequest, Generation, GenerationEvent, GenerationSender, Usage,
};
use jielong_chat::logprob::{Score, MAX_TOP_LOGPROBS};
use jielong_chat::model::{
    physical_cores, BranchId, BranchUsage, Capabilities, KvUsage, ModelSession, SessionOptions,
};
use jielong_chat::respond::{Chat, ChatRequest};
use jielong_chat::tool_format::ToolCallFormat;
use jielong_chat::{
    BranchReply, BranchedSession, ModelInfo, PreparedPrompt, ReplyFormat, ToolSpec, Unenforceable,
};

/// A conversation state on a [`super::LlamaModel`], with KV-cache prefix reuse and
/// branches.
///
/// Each call queues a request on the session's worker thread. Clones are handles on
/// the same session (one KV cache, one worker): replies on different branches from
/// several handles are decoded together. Dropping the last handle stops the worker.
#[derive(Clone)]
pub struct LlamaSession {
    shared: Arc<Shared>,
    loaded: Arc<Loaded>,
    /// What each branch holds, as the worker last published it.
    board: Arc<Board>,
    n_ctx: u32,
    n_seq: u32,
}

/// The worker behind every handle of a session.
struct Shared {
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<thread::JoinHandle<()>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop once its current job is done (a
        // running generation sees its Generation dropped and stops at the next token).
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl std::fmt::Debug for LlamaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaSession")
            .field("n_ctx", &self.n_ctx)
            .field("n_seq", &self.n_seq)
            .finish_non_exhaustive()
    }
}

/// The tokens each branch holds, published by the worker when a generation ends and
/// after forks, drops and resets, so a caller can read them without waiting for the
/// running batch ([`BranchedSession::holds`]).
#[derive(Default)]
struct Board(Mutex<std::collections::HashMap<u32, Vec<i32>>>);

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u32, Vec<i32>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A lane's prompt: text the worker tokenizes, or tokens prepared once by the caller
/// ([`BranchedSession::prepare`]).
enum LanePrompt {
    Text(String),
    Tokens(Vec<LlamaToken>),
}

impl From<&PreparedPrompt> for LanePrompt {
    fn from(prompt: &PreparedPrompt) -> Self {
        LanePrompt::Tokens(prompt.tokens.iter().map(|&t| LlamaToken(t)).collect())
    }
}

/// A reply to the caller of a job.
type Reply<T> = mpsc::Sender<Result<T, RuntimeError>>;

/// One generating request of a [`Job::Run`].
struct LaneJob {
    branch: BranchId,
    prompt: LanePrompt,
    request: GenerateRequest,
    out: GenerationSender,
}

enum Job {
    /// Generates on one or more branches, decoded together.
    Run(Vec<LaneJob>),
    /// Parallel samples from one prompt on temporary forks of the main branch.
    Parallel {
        prompt: String,
        requests: Vec<GenerateRequest>,
        reply: tokio::sync::oneshot::Sender<Result<Vec<Completion>, RuntimeError>>,
    },
    Fork {
        from: BranchId,
        n: usize,
        reply: Reply<Vec<BranchId>>,
    },
    DropBranch(BranchId, Reply<()>),
    Score {
        context: String,
        continuation: String,
        top: u32,
        reply: Reply<Score>,
    },
    Usage(Reply<KvUsage>),
    Reset(mpsc::Sender<()>),
    CachedTokens(BranchId, Reply<Vec<i32>>),
}

impl LlamaSession {
    pub(crate) fn open(
        loaded: Arc<Loaded>,
        options: &SessionOptions,
    ) -> Result<Self, RuntimeError> {
        let n_ctx = context_size(&loaded.info, options);
        let threads = options.threads.unwrap_or_else(physical_cores).max(1);
        let threads = i32::try_from(threads).unwrap_or(i32::MAX);
        let n_batch = options.batch_size.clamp(1, n_ctx);
        let n_seq = options.max_sequences.max(1);
        let store = options.prompt_cache.as_ref().and_then(|cache| {
            let path = loaded.info.path.as_deref()?;
            PromptStore::open(cache, path, "kv_unified")
        });
        let (jobs, job_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let worker_loaded = loaded.clone();
        let board = Arc::new(Board::default());
        let worker_board = board.clone();
        let worker = thread::Builder::new()
            .name("jielong-llama".into())
            .spawn(move || {
                let params = LlamaContextParams::default()
                    .with_n_ctx(nonzero(n_ctx))
                    .with_n_batch(n_batch)
                    .with_n_ubatch(n_batch)
                    .with_n_seq_max(n_seq)
                    // One cell pool for all sequences: a forked prefix is shared, not copied.
                    .with_kv_unified(true)
                    .with_n_threads(threads)
                    .with_n_threads_batch(threads);
                let backend = match backend() {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let ctx = match worker_loaded.model.new_context(backend, params) {
                    Ok(ctx) => ctx,
                    Err(e) => {
                        let _ = ready_tx.send(Err(RuntimeError::Context {
                            n_ctx,
                            reason: e.to_string(),
                        }));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut worker = Worker {
                    loaded: &worker_loaded,
                    jobs: job_rx,
                    pending: Default::default(),
                    ctx,
                    batch: LlamaBatch::new(n_batch as usize, n_seq as i32),
                    n_batch: n_batch as usize,
                    n_ctx,
                    n_seq,
                    cells: Cells::default(),
                    store,
                    kept: 0,
                    save: Vec::new(),
                    board: worker_board,
                };
                while let Some(job) = worker.next_job() {
                    worker.serve(job);
                }
            })
            .map_err(|e| RuntimeError::Backend(format!("cannot start a worker thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                shared: Arc::new(Shared {
                    jobs: Some(jobs),
                    worker: Some(worker),
                }),
                loaded,
                board,
                n_ctx,
                n_seq,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RuntimeError::WorkerGone),
        }
    }

    /// What this session can do.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            grammar: true,
            max_branches: self.n_seq,
            logprobs: true,
            scoring: true,
            raw_prompts: true,
        }
    }

    /// Starts continuing `prompt` (raw text; special tokens such as `<|im_start|>` are
    /// parsed) on the main branch. The returned [`Generation`] streams the output.
    pub fn generate(
        &self,
        prompt: &str,
        request: &GenerateRequest,
    ) -> Result<Generation, RuntimeError> {
        self.generate_on(BranchId::MAIN, prompt, request)
    }

    /// Continues `prompt` on `branch` (whose tokens are reused up to the common
    /// prefix, like the main branch's).
    pub fn generate_on(
        &self,
        branch: BranchId,
        prompt: &str,
        request: &GenerateRequest,
    ) -> Result<Generation, RuntimeError> {
        self.one_lane(branch, LanePrompt::Text(prompt.to_owned()), request)
    }

    /// One generation on `branch`.
    fn one_lane(
        &self,
        branch: BranchId,
        prompt: LanePrompt,
        request: &GenerateRequest,
    ) -> Result<Generation, RuntimeError> {
        let mut generations = self.run_lanes(vec![(branch, prompt, request.clone())])?;
        generations.pop().ok_or(RuntimeError::WorkerGone)
    }

    /// The tokens of `text` as this session evaluates them (special tokens parsed).
    fn prepared(&self, text: String) -> Result<PreparedPrompt, RuntimeError> {
        let tokens: Vec<i32> = tokenize(&self.loaded.model, &text)
            .into_iter()
            .map(|t| t.0)
            .collect();
        if tokens.is_empty() {
            return Err(RuntimeError::EmptyPrompt);
        }
        Ok(PreparedPrompt { text, tokens })
    }

    /// Continues several branches at once, each with its own prompt and request; all
    /// of them decode together, one batch per step. One [`Generation`] per job, in
    /// order; a branch may appear only once.
    pub fn run(
        &self,
        jobs: Vec<(BranchId, String, GenerateRequest)>,
    ) -> Result<Vec<Generation>, RuntimeError> {
        self.run_lanes(
            jobs.into_iter()
                .map(|(branch, prompt, request)| (branch, LanePrompt::Text(prompt), request))
                .collect(),
        )
    }

    fn run_lanes(
        &self,
        jobs: Vec<(BranchId, LanePrompt, GenerateRequest)>,
    ) -> Result<Vec<Generation>, RuntimeError> {
        if jobs.is_empty() {
            return Err(RuntimeError::InvalidRequest("nothing to generate".into()));
        }
        let mut lanes = Vec::with_capacity(jobs.len());
        let mut generations = Vec::with_capacity(jobs.len());
        for (i, (branch, prompt, request)) in jobs.into_iter().enumerate() {
            request.validate()?;
            if lanes.iter().any(|l: &LaneJob| l.branch == branch) {
                return Err(RuntimeError::InvalidRequest(format!(
                    "branch {branch} appears twice in one batch (job {})",
                    i + 1
                )));
            }
            let (out, generation) = Generation::channel();
            lanes.push(LaneJob {
                branch,
                prompt,
                request,
                out,
            });
            generations.push(generation);
        }
        self.send(Job::Run(lanes))?;
        Ok(generations)
    }

    /// Answers `chat` on its branch: the model's chat template, calls constrained by
    /// the grammar and parsed in the model's format.
    pub fn respond(&self, chat: &Chat, request: &ChatRequest) -> Result<Generation, RuntimeError> {
        self.loaded
            .prompt
            .respond(chat, request, |prompt, request| {
                self.generate_on(chat.branch, prompt, request)
            })
    }

    /// Answers several chats (each on its own branch) decoded in one batch per step.
    pub fn respond_batch(
        &self,
        jobs: &[(Chat, ChatRequest)],
    ) -> Result<Vec<Generation>, RuntimeError> {
        let format = &self.loaded.prompt;
        let mut lanes = Vec::with_capacity(jobs.len());
        for (chat, request) in jobs {
            lanes.push((
                chat.branch,
                LanePrompt::Text(format.render(chat)?),
                chat,
                request,
            ));
        }
        self.reply(lanes)
    }

    /// Replies on branches from rendered prompts: calls constrained by the grammar
    /// and parsed in the model's format, one batch per step.
    fn reply(
        &self,
        jobs: Vec<(BranchId, LanePrompt, &Chat, &ChatRequest)>,
    ) -> Result<Vec<Generation>, RuntimeError> {
        let format = &self.loaded.prompt;
        let mut checks = Vec::with_capacity(jobs.len());
        let mut lanes = Vec::with_capacity(jobs.len());
        for (branch, prompt, chat, request) in jobs {
            request.validate(chat)?;
            let tools = request.callable(chat);
            checks.push((!tools.is_empty()).then(|| jielong_chat::respond::call_check(tools)));
            lanes.push((branch, prompt, format.request(chat, request)));
        }
        let generations = self.run_lanes(lanes)?;
        Ok(generations
            .into_iter()
            .zip(checks)
            .map(|(generation, check)| generation.parsing(format.calls, check))
            .collect())
    }

    /// Generates one continuation per request from one prompt, in parallel: the prompt
    /// is evaluated once on the main branch (reusing its cache as
    /// [`generate`](Self::generate) does), forked into one temporary branch per
    /// request, and all of them decode together; the forks are dropped afterwards. For
    /// self-consistency and best-of-N: give each request its own seed.
    ///
    /// Needs a session opened with `max_sequences > requests.len()`. The first
    /// completion's usage counts the prompt evaluation; the others report the whole
    /// prompt as cached (they share it).
    pub fn generate_parallel(
        &self,
        prompt: &str,
        requests: &[GenerateRequest],
    ) -> Result<ParallelGeneration, RuntimeError> {
        if requests.is_empty() || requests.len() >= self.n_seq as usize {
            return Err(RuntimeError::InvalidRequest(format!(
                "{} parallel requests need a session with max_sequences of at least {} (this one has {})",
                requests.len(),
                requests.len() + 1,
                self.n_seq
            )));
        }
        for request in requests {
            request.validate()?;
        }
        let (reply, result) = tokio::sync::oneshot::channel();
        self.send(Job::Parallel {
            prompt: prompt.to_owned(),
            requests: requests.to_vec(),
            reply,
        })?;
        Ok(ParallelGeneration { result })
    }

    /// Forks `from` into `n` new branches holding the same tokens (their cells are
    /// shared, not copied).
    pub fn fork(&self, from: BranchId, n: usize) -> Result<Vec<BranchId>, RuntimeError> {
        self.ask(|reply| Job::Fork { from, n, reply })
    }

    /// Drops `branch` and the cells only it used; the main branch is emptied instead.
    pub fn drop_branch(&self, branch: BranchId) -> Result<(), RuntimeError> {
        self.ask(|reply| Job::DropBranch(branch, reply))
    }

    /// The log-probability of `continuation` after `context` (raw text), token by
    /// token, with `top` alternatives each. Runs on the main branch, reusing its cache.
    pub fn score(
        &self,
        context: &str,
        continuation: &str,
        top: u32,
    ) -> Result<Score, RuntimeError> {
        if top > MAX_TOP_LOGPROBS {
            return Err(RuntimeError::InvalidRequest(format!(
                "{top} alternatives asked; at most {MAX_TOP_LOGPROBS} are reported"
            )));
        }
        self.ask(|reply| Job::Score {
            context: context.to_owned(),
            continuation: continuation.to_owned(),
            top,
            reply,
        })
    }

    /// What the KV cache holds, per branch.
    pub fn kv_usage(&self) -> Result<KvUsage, RuntimeError> {
        self.ask(Job::Usage)
    }

    /// Forgets everything evaluated so far and drops every branch but the main one.
    pub fn reset(&self) -> Result<(), RuntimeError> {
        let (tx, rx) = mpsc::channel();
        self.send(Job::Reset(tx))?;
        rx.recv().map_err(|_| RuntimeError::WorkerGone)
    }

    /// The token ids the main branch holds now (after queued requests have run).
    pub fn cached_tokens(&self) -> Result<Vec<i32>, RuntimeError> {
        self.branch_tokens(BranchId::MAIN)
    }

    /// The token ids `branch` holds now.
    pub fn branch_tokens(&self, branch: BranchId) -> Result<Vec<i32>, RuntimeError> {
        self.ask(|reply| Job::CachedTokens(branch, reply))
    }

    /// The context window in tokens.
    pub fn context_size(&self) -> u32 {
        self.n_ctx
    }

    fn ask<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, RuntimeError> {
        let (tx, rx) = mpsc::channel();
        self.send(job(tx))?;
        rx.recv().map_err(|_| RuntimeError::WorkerGone)?
    }

    fn send(&self, job: Job) -> Result<(), RuntimeError> {
        self.shared
            .jobs
            .as_ref()
            .ok_or(RuntimeError::WorkerGone)?
            .send(job)
            .map_err(|_| RuntimeError::WorkerGone)
    }
}

impl ModelSession for LlamaSession {
    fn capabilities(&self) -> Capabilities {
        LlamaSession::capabilities(self)
    }

    fn respond(&mut self, chat: &Chat, request: &ChatRequest) -> Result<Generation, RuntimeError> {
        LlamaSession::respond(self, chat, request)
    }

    fn respond_batch(
        &mut self,
        jobs: &[(Chat, ChatRequest)],
    ) -> Result<Vec<Generation>, RuntimeError> {
        LlamaSession::respond_batch(self, jobs)
    }

    fn generate(
        &mut self,
        prompt: &str,
        request: &GenerateRequest,
    ) -> Result<Generation, RuntimeError> {
        LlamaSession::generate(self, prompt, request)
    }

    fn score(
        &mut self,
        context: &str,
        continuation: &str,
        top: u32,
    ) -> Result<Score, RuntimeError> {
        LlamaSession::score(self, context, continuation, top)
    }

    fn fork(&mut self, from: BranchId, n: usize) -> Result<Vec<BranchId>, RuntimeError> {
        LlamaSession::fork(self, from, n)
    }

    fn drop_branch(&mut self, branch: BranchId) -> Result<(), RuntimeError> {
        LlamaSession::drop_branch(self, branch)
    }

    fn kv_usage(&mut self) -> Result<KvUsage, RuntimeError> {
        LlamaSession::kv_usage(self)
    }

    fn share(&self) -> Result<Box<dyn ModelSession>, RuntimeError> {
        Ok(Box::new(self.clone()))
    }

    fn reset(&mut self) -> Result<(), RuntimeError> {
        LlamaSession::reset(self)
    }

    fn context_size(&self) -> u32 {
        self.n_ctx
    }
}

impl BranchedSession for LlamaSession {
    fn info(&self) -> ModelInfo {
        self.loaded.info.clone()
    }

    fn context_size(&self) -> u32 {
        self.n_ctx
    }

    fn call_format(&self) -> ToolCallFormat {
        self.loaded.prompt.calls
    }

    fn prepare(&self, chat: &Chat) -> Result<PreparedPrompt, RuntimeError> {
        self.prepared(self.loaded.prompt.render(chat)?)
    }

    fn prepare_text(&self, text: &str) -> Result<PreparedPrompt, RuntimeError> {
        self.prepared(text.to_owned())
    }

    fn check_schemas(
        &self,
        tools: &[ToolSpec],
        format: Option<&ReplyFormat>,
    ) -> Result<(), Unenforceable> {
        for (index, tool) in tools.iter().enumerate() {
            crate::grammar::check_tool_schema(self.loaded.prompt.calls, tool).map_err(|e| {
                Unenforceable::Tool {
                    index,
                    name: tool.name.clone(),
                    reason: format!("llama.cpp cannot turn the JSON Schema into a grammar ({e})"),
                }
            })?;
        }
        if let Some(format) = format {
            crate::grammar::check_json_schema(&format.schema()).map_err(|e| {
                Unenforceable::Format {
                    reason: format!("llama.cpp cannot turn it into a grammar ({e})"),
                }
            })?;
        }
        Ok(())
    }

    fn respond_on(&self, jobs: &[BranchReply<'_>]) -> Result<Vec<Generation>, RuntimeError> {
        self.reply(
            jobs.iter()
                .map(|job| (job.branch, job.prompt.into(), job.chat, job.request))
                .collect(),
        )
    }

    fn generate_on(
        &self,
        branch: BranchId,
        prompt: &PreparedPrompt,
        request: &GenerateRequest,
    ) -> Result<Generation, RuntimeError> {
        self.one_lane(branch, prompt.into(), request)
    }

    fn fork(&self, from: BranchId, n: usize) -> Result<Vec<BranchId>, RuntimeError> {
        LlamaSession::fork(self, from, n)
    }

    fn drop_branch(&self, branch: BranchId) -> Result<(), RuntimeError> {
        LlamaSession::drop_branch(self, branch)
    }

    fn kv_usage(&self) -> Result<KvUsage, RuntimeError> {
        LlamaSession::kv_usage(self)
    }

    fn holds(&self, branch: BranchId) -> Vec<i32> {
        self.board
            .lock()
            .get(&branch.0)
            .cloned()
            .unwrap_or_default()
    }
}

/// Parallel generations in progress (see [`LlamaSession::generate_parallel`]).
#[derive(Debug)]
pub struct ParallelGeneration {
    result: tokio::sync::oneshot::Receiver<Result<Vec<Completion>, RuntimeError>>,
}

impl ParallelGeneration {
    /// Blocks until every sequence has finished; completions come in request order.
    pub fn wait(self) -> Result<Vec<Completion>, RuntimeError> {
        self.result
            .blocking_recv()
            .map_err(|_| RuntimeError::WorkerGone)?
    }

    /// Waits (async) until every sequence has finished.
    pub async fn finish(self) -> Result<Vec<Completion>, RuntimeError> {
        self.result.await.map_err(|_| RuntimeError::WorkerGone)?
    }
}

/// The bookkeeping of the KV cells: which branches are live, the tokens each holds,
/// and which cells those tokens sit in (a fork's cells are its parent's until it
/// evaluates tokens of its own).
///
/// Invariant: for every live branch `b`, `seqs[b].tokens[i]` is the token whose keys
/// and values sit at position `i` of sequence `b` in llama.cpp's memory, in cell
/// `seqs[b].cells[i]`; `refs` counts, per cell, the live branches that use it.
#[derive(Default)]
struct Cells {
    seqs: BTreeMap<u32, Seq>,
    refs: std::collections::HashMap<u64, u32>,
    next: u64,
}

#[derive(Default, Clone)]
struct Seq {
    tokens: Vec<LlamaToken>,
    cells: Vec<u64>,
}

impl Cells {
    fn tokens(&self, branch: BranchId) -> &[LlamaToken] {
        self.seqs
            .get(&branch.0)
            .map_or(&[], |s| s.tokens.as_slice())
    }

    /// Records `token` evaluated at the end of `branch` in a new cell.
    fn push(&mut self, branch: BranchId, token: LlamaToken) {
        let cell = self.next;
        self.next += 1;
        *self.refs.entry(cell).or_default() += 1;
        let seq = self.seqs.entry(branch.0).or_default();
        seq.tokens.push(token);
        seq.cells.push(cell);
    }

    /// Forgets `branch`'s tokens from position `from` on.
    fn truncate(&mut self, branch: BranchId, from: usize) {
        let Some(seq) = self.seqs.get_mut(&branch.0) else {
            return;
        };
        for cell in seq.cells.drain(from.min(seq.cells.len())..) {
            release(&mut self.refs, cell);
        }
        seq.tokens.truncate(from);
    }

    /// Makes `to` a copy of `from` (llama.cpp's memory got the same sequence copy).
    fn copy(&mut self, from: BranchId, to: BranchId) {
        self.truncate(to, 0);
        let len = self.tokens(from).len();
        self.borrow(from, to, 0..len);
    }

    /// Appends `from`'s cells at `range` to `to`, which holds exactly `range.start`
    /// tokens (llama.cpp's memory got the same sequence copy).
    fn borrow(&mut self, from: BranchId, to: BranchId, range: std::ops::Range<usize>) {
        let Some(source) = self.seqs.get(&from.0) else {
            self.seqs.entry(to.0).or_default();
            return;
        };
        let tokens = source.tokens[range.clone()].to_vec();
        let cells = source.cells[range].to_vec();
        for cell in &cells {
            *self.refs.entry(*cell).or_default() += 1;
        }
        let seq = self.seqs.entry(to.0).or_default();
        seq.tokens.extend(tokens);
        seq.cells.extend(cells);
    }

    fn remove(&mut self, branch: BranchId) {
        self.truncate(branch, 0);
        if branch != BranchId::MAIN {
            self.seqs.remove(&branch.0);
        }
    }

    fn clear(&mut self) {
        self.seqs.clear();
        self.refs.clear();
    }

    /// Distinct cells in use.
    fn used(&self) -> usize {
        self.refs.len()
    }

    fn usage(&self, context: u32) -> KvUsage {
        KvUsage {
            context,
            cells: self.used(),
            branches: std::iter::once(0)
                .chain(self.seqs.keys().copied().filter(|&id| id != 0))
                .map(|id| {
                    let seq = self.seqs.get(&id);
                    BranchUsage {
                        id: BranchId(id),
                        tokens: seq.map_or(0, |s| s.cells.len()),
                        shared: seq.map_or(0, |s| {
                            s.cells
                                .iter()
                                .filter(|c| self.refs.get(c).copied().unwrap_or(0) > 1)
                                .count()
                        }),
                    }
                })
                .collect(),
        }
    }
}

fn release(refs: &mut std::collections::HashMap<u64, u32>, cell: u64) {
    if let Some(count) = refs.get_mut(&cell) {
        *count -= 1;
        if *count == 0 {
            refs.remove(&cell);
        }
    }
}

/// The worker thread's state.
struct Worker<'m> {
    loaded: &'m Loaded,
    /// Where requests come from; read between decode steps too.
    jobs: mpsc::Receiver<Job>,
    /// Requests taken off the channel during a decode loop that could not join it,
    /// in order.
    pending: std::collections::VecDeque<Job>,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    n_ctx: u32,
    n_seq: u32,
    cells: Cells,
    /// Where opening prompts' states are kept across processes, if anywhere.
    store: Option<PromptStore>,
    /// How many states this session has kept (at most [`PromptCache::openings`]).
    ///
    /// [`PromptCache::openings`]: jielong_chat::PromptCache::openings
    kept: usize,
    /// Branches whose prompt no kept state covered well: their states are kept when
    /// the decode loop ends (a strategy's ways of answering each open with their own
    /// prompt, so each is kept).
    save: Vec<BranchId>,
    /// Where branch contents are published ([`Board`]).
    board: Arc<Board>,
}

/// One generating request of the decode loop: its branch, prompt, request and
/// where the result goes.
type LaneSpec = (
    BranchId,
    LanePrompt,
    GenerateRequest,
    Option<GenerationSender>,
);

/// One generating branch in the decode loop.
struct Lane {
    branch: Branch,
    seq: BranchId,
    /// Where its logits are in the last evaluated batch.
    logits: i32,
    out: Option<GenerationSender>,
    finish: Option<FinishReason>,
    usage: Usage,
    /// Its place among the loop's results (lanes without a sender).
    slot: usize,
    /// When its generation started.
    generating: Instant,
}

impl Lane {
    /// Finishes the lane: the completion goes to its sender, or to its result slot.
    fn end(&mut self, finish: FinishReason, results: &mut [Option<Completion>]) {
        self.finish = Some(finish.clone());
        let mut usage = self.usage.clone();
        usage.generated_tokens = self.branch.generated;
        usage.loops_broken = self.branch.loops_broken();
        usage.generation_time = self.generating.elapsed();
        let completion = Completion {
            text: std::mem::take(&mut self.branch.text),
            logprobs: std::mem::take(&mut self.branch.logprob_log),
            finish,
            usage,
            ..Completion::default()
        };
        match &self.out {
            Some(out) => out.done(Ok(completion)),
            None => {
                if let Some(slot) = results.get_mut(self.slot) {
                    *slot = Some(completion);
                }
            }
        }
    }
}

/// Lanes prepared for the loop, with what remains to evaluate of their prompts.
#[derive(Default)]
struct Admitted {
    lanes: Vec<Lane>,
    /// Prompt tokens before each lane's last one.
    tails: Vec<(BranchId, LlamaToken)>,
    /// Each lane's last prompt token, in lane order.
    lasts: Vec<(BranchId, LlamaToken)>,
}

/// Ends every unfinished lane with `error` (on its sender); the error for the caller.
fn fail_lanes(lanes: &mut [Lane], waiting: &mut Vec<Lane>, error: RuntimeError) -> RuntimeError {
    let message = error.to_string();
    for lane in lanes.iter_mut().chain(waiting.iter_mut()) {
        if lane.finish.is_none() {
            lane.finish = Some(FinishReason::Cancelled);
            if let Some(out) = &lane.out {
                out.done(Err(RuntimeError::Decode(message.clone())));
            }
        }
    }
    waiting.clear();
    error
}

impl Worker<'_> {
    /// The next request: one kept back during a decode loop, else the channel's.
    fn next_job(&mut self) -> Option<Job> {
        self.pending.pop_front().or_else(|| self.jobs.recv().ok())
    }

    fn serve(&mut self, job: Job) {
        match job {
            Job::Run(lanes) => {
                let jobs = lanes
                    .into_iter()
                    .map(|l| (l.branch, l.prompt, l.request, Some(l.out)))
                    .collect();
                if self.run(jobs).is_err() {
                    // After a failed evaluation the cache contents are uncertain (every
                    // lane has had its error).
                    self.clear();
                }
            }
            Job::Parallel {
                prompt,
                requests,
                reply,
            } => {
                let result = self.parallel(&prompt, requests);
                if result.is_err() {
                    self.clear();
                }
                self.publish(BranchId::MAIN);
                let _ = reply.send(result);
            }
            Job::Fork { from, n, reply } => {
                let _ = reply.send(self.fork(from, n));
            }
            Job::DropBranch(branch, reply) => {
                let _ = reply.send(self.drop_branch(branch));
            }
            Job::Score {
                context,
                continuation,
                top,
                reply,
            } => {
                let result = self.score(&context, &continuation, top as usize);
                if result.is_err() {
                    self.clear();
                }
                self.publish(BranchId::MAIN);
                let _ = reply.send(result);
            }
            Job::Usage(reply) => {
                let _ = reply.send(Ok(self.cells.usage(self.n_ctx)));
            }
            Job::Reset(reply) => {
                self.clear();
                let _ = reply.send(());
            }
            Job::CachedTokens(branch, reply) => {
                let result = if branch == BranchId::MAIN || self.cells.seqs.contains_key(&branch.0)
                {
                    Ok(self.cells.tokens(branch).iter().map(|t| t.0).collect())
                } else {
                    Err(unknown_branch(branch))
                };
                let _ = reply.send(result);
            }
        }
    }

    fn clear(&mut self) {
        self.ctx.clear_kv_cache();
        self.cells.clear();
        self.board.lock().clear();
    }

    /// Publishes what `branch` holds now (a branch that is gone is taken off the
    /// board).
    fn publish(&self, branch: BranchId) {
        let mut board = self.board.lock();
        if branch == BranchId::MAIN || self.cells.seqs.contains_key(&branch.0) {
            let tokens = self.cells.tokens(branch).iter().map(|t| t.0).collect();
            board.insert(branch.0, tokens);
        } else {
            board.remove(&branch.0);
        }
    }

    fn fork(&mut self, from: BranchId, n: usize) -> Result<Vec<BranchId>, RuntimeError> {
        if from != BranchId::MAIN && !self.cells.seqs.contains_key(&from.0) {
            return Err(unknown_branch(from));
        }
        let free: Vec<u32> = (1..self.n_seq)
            .filter(|id| !self.cells.seqs.contains_key(id))
            .take(n)
            .collect();
        if free.len() < n {
            return Err(RuntimeError::InvalidRequest(format!(
                "cannot fork {n} branches: {} of {} are free (open the session with a larger max_sequences)",
                free.len(),
                self.n_seq - 1
            )));
        }
        let mut ids = Vec::with_capacity(n);
        for id in free {
            let to = BranchId(id);
            self.ctx
                .copy_kv_cache_seq(from.0 as i32, id as i32, None, None)
                .map_err(|e| RuntimeError::Decode(e.to_string()))?;
            self.cells.copy(from, to);
            self.publish(to);
            ids.push(to);
        }
        Ok(ids)
    }

    fn drop_branch(&mut self, branch: BranchId) -> Result<(), RuntimeError> {
        if branch != BranchId::MAIN && !self.cells.seqs.contains_key(&branch.0) {
            return Err(unknown_branch(branch));
        }
        let _ = self.ctx.clear_kv_cache_seq(Some(branch.0), None, None);
        self.cells.remove(branch);
        self.publish(branch);
        Ok(())
    }

    /// Parallel samples: the prompt on the main branch, forked per request, decoded
    /// together; the forks are dropped afterwards.
    fn parallel(
        &mut self,
        prompt: &str,
        requests: Vec<GenerateRequest>,
    ) -> Result<Vec<Completion>, RuntimeError> {
        let started = Instant::now();
        let tokens = self.tokenize_prompt(prompt)?;
        let reused = self.keep_prefix(BranchId::MAIN, &tokens, tokens.len());
        let entries: Vec<_> = tokens[reused..]
            .iter()
            .map(|&t| (BranchId::MAIN, t))
            .collect();
        self.feed(&entries, &|_| false, &mut |_, _, _| {})?;
        let prompt_time = started.elapsed();
        let forks = self.fork(BranchId::MAIN, requests.len())?;
        let jobs: Vec<LaneSpec> = forks
            .iter()
            .zip(requests)
            .map(|(&branch, request)| (branch, LanePrompt::Tokens(tokens.clone()), request, None))
            .collect();
        let result = self.run(jobs);
        for branch in forks {
            let _ = self.drop_branch(branch);
        }
        let mut completions = result?;
        for (i, completion) in completions.iter_mut().enumerate() {
            let usage = &mut completion.usage;
            usage.prompt_tokens = tokens.len();
            if i == 0 {
                // The last prompt token is always evaluated (for its logits).
                let cached = reused.min(tokens.len() - 1);
                usage.cached_tokens = cached;
                usage.evaluated_tokens = tokens.len() - cached;
                usage.prompt_time = prompt_time;
            } else {
                usage.cached_tokens = tokens.len();
                usage.evaluated_tokens = 0;
                usage.prompt_time = Duration::ZERO;
            }
        }
        Ok(completions)
    }

    /// The one decode loop. Every lane's branch is brought to its prompt (only what
    /// follows each branch's common prefix is evaluated; the lanes' last prompt
    /// tokens land in the final batch), then every active lane samples and all their
    /// tokens decode together, one batch per step, until all have finished.
    ///
    /// `Run` jobs that arrive meanwhile join the loop (continuous batching): their
    /// prompts are evaluated in the same batches as the active lanes' next tokens, so
    /// concurrent requests on different branches — several agents sharing one model,
    /// parallel samples — share every decode step. A job that touches a branch being
    /// generated on (and every job after it) waits until the loop ends.
    ///
    /// Lanes with a sender get their result as soon as they finish; the completions
    /// of the first jobs without one are returned in order.
    fn run(&mut self, jobs: Vec<LaneSpec>) -> Result<Vec<Completion>, RuntimeError> {
        let mut lanes: Vec<Lane> = Vec::new();
        let mut results: Vec<Option<Completion>> = vec![None; jobs.len()];
        let mut admitted = self.admit(jobs, 0, &lanes)?;
        let loaded = self.loaded;
        let model = &loaded.model;
        loop {
            let active = lanes.iter().filter(|l| l.finish.is_none()).count();
            if active == 0 && admitted.lanes.is_empty() {
                break;
            }
            let incoming = admitted.tails.len() + admitted.lasts.len();
            let room = self.cells.used() + active + incoming < self.n_ctx as usize;
            let mut next = Vec::with_capacity(active);
            for (i, lane) in lanes.iter_mut().enumerate() {
                if lane.finish.is_some() {
                    continue;
                }
                if lane
                    .out
                    .as_ref()
                    .is_some_and(GenerationSender::is_cancelled)
                {
                    lane.branch.flush();
                    self.publish(lane.seq);
                    lane.end(FinishReason::Cancelled, &mut results);
                    continue;
                }
                let token = lane.branch.sample(model, &self.ctx, lane.logits);
                let logprob = lane
                    .branch
                    .record_logprob(model, &self.ctx, lane.logits, token);
                let (text, finish) = match lane.branch.accept(model, token, room) {
                    Step::Finish(text, reason) => (text, Some(reason)),
                    Step::Continue(text) => (text, None),
                };
                let mut gone = false;
                if let Some(out) = &lane.out {
                    if let Some(logprob) = logprob {
                        gone |= !out.send(GenerationEvent::Logprob(logprob));
                    }
                    if !text.is_empty() {
                        gone |= !out.text(text);
                    }
                }
                match finish {
                    Some(reason) => {
                        self.publish(lane.seq);
                        lane.end(reason, &mut results);
                    }
                    None if gone => {
                        self.publish(lane.seq);
                        lane.end(FinishReason::Cancelled, &mut results);
                    }
                    None => next.push((i, token)),
                }
            }
            // New prompts' tails, the active lanes' tokens, then the new last tokens:
            // everything whose logits are read is in the final batch.
            let mut entries = std::mem::take(&mut admitted.tails);
            let first_wanted = entries.len();
            entries.extend(next.iter().map(|&(i, token)| (lanes[i].seq, token)));
            entries.extend(admitted.lasts.iter().copied());
            if entries.is_empty() {
                continue;
            }
            if entries.len() - first_wanted > self.n_batch {
                let error = RuntimeError::InvalidRequest(format!(
                    "{} branches decoding at once need a batch size of at least that (this session has {})",
                    entries.len() - first_wanted,
                    self.n_batch
                ));
                return Err(fail_lanes(&mut lanes, &mut admitted.lanes, error));
            }
            let started = Instant::now();
            let mut indices = vec![0; entries.len() - first_wanted];
            let fed = self.feed(&entries, &|i| i >= first_wanted, &mut |i, index, _| {
                indices[i - first_wanted] = index;
            });
            if let Err(error) = fed {
                return Err(fail_lanes(&mut lanes, &mut admitted.lanes, error));
            }
            let prompt_time = started.elapsed();
            for (k, &(i, _)) in next.iter().enumerate() {
                lanes[i].logits = indices[k];
            }
            for (k, mut lane) in admitted.lanes.drain(..).enumerate() {
                lane.logits = indices[next.len() + k];
                lane.usage.prompt_time = prompt_time;
                lane.generating = Instant::now();
                lanes.push(lane);
            }
            admitted.lasts.clear();
            // Requests that came in meanwhile join at the next step.
            let offset = results.len();
            let incoming = self.incoming(&lanes);
            if !incoming.is_empty() {
                results.extend(incoming.iter().map(|_| None));
                match self.admit(incoming, offset, &lanes) {
                    Ok(more) => admitted = more,
                    Err(error) => return Err(fail_lanes(&mut lanes, &mut Vec::new(), error)),
                }
            }
        }
        self.keep_state();
        Ok(results.into_iter().flatten().collect())
    }

    /// `branch` holds the first `held` of `tokens` (what live branches could lend,
    /// less than half): loads in their place the kept state sharing a longer prefix
    /// with `tokens` (at most `limit`), cut to that prefix; returns how many tokens the
    /// branch then holds. When no kept state covers at least half of `tokens`, marks
    /// the branch for [`Worker::keep_state`].
    fn warm(
        &mut self,
        branch: BranchId,
        tokens: &[LlamaToken],
        limit: usize,
        held: usize,
    ) -> usize {
        let model = &self.loaded.model;
        // A recurrent state cannot be cut back to a shared prefix.
        if model.is_recurrent() || model.is_hybrid() {
            return held;
        }
        let Some(store) = &self.store else {
            return held;
        };
        let found = store.find(tokens, limit);
        let covered = found.as_ref().map_or(0, |f| f.shared).max(held);
        if covered * 2 < tokens.len()
            && tokens.len() >= warm::MIN_TOKENS
            && self.kept + self.save.len() < store.openings()
            && !self.save.contains(&branch)
        {
            self.save.push(branch);
        }
        let Some(found) = found.filter(|f| f.shared > held) else {
            return held;
        };
        // The kept state replaces what the branch held (a shorter prefix).
        let _ = self.ctx.clear_kv_cache_seq(Some(branch.0), None, None);
        self.cells.truncate(branch, 0);
        let loaded = self
            .ctx
            .state_seq_load_file(&found.path, branch.0 as i32, found.tokens.len());
        if !matches!(&loaded, Ok((read, _)) if *read == found.tokens) {
            tracing::warn!(path = %found.path.display(), "prompt cache: llama.cpp refused a kept state; dropped");
            let _ = self.ctx.clear_kv_cache_seq(Some(branch.0), None, None);
            store.forget(&found);
            return 0;
        }
        for &token in &found.tokens {
            self.cells.push(branch, token);
        }
        if found.shared < found.tokens.len() {
            let cut = self
                .ctx
                .clear_kv_cache_seq(Some(branch.0), Some(found.shared as u32), None)
                .unwrap_or(false);
            if !cut {
                let _ = self.ctx.clear_kv_cache_seq(Some(branch.0), None, None);
                self.cells.truncate(branch, 0);
                return 0;
            }
            self.cells.truncate(branch, found.shared);
        }
        tracing::debug!(tokens = found.shared, "prompt cache: started warm");
        found.shared
    }

    /// Keeps the states of the branches [`Worker::warm`] marked.
    fn keep_state(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        for branch in std::mem::take(&mut self.save) {
            let tokens = self.cells.tokens(branch).to_vec();
            if tokens.len() < warm::MIN_TOKENS {
                continue;
            }
            self.kept += 1;
            let ctx = &self.ctx;
            let kept = store.keep(&tokens, |path| {
                ctx.state_seq_save_file(path, branch.0 as i32, &tokens)
                    .map(|_| ())
                    .map_err(|e| format!("{}: {e}", path.display()))
            });
            match kept {
                Ok(()) => tracing::debug!(tokens = tokens.len(), "prompt cache: kept an opening"),
                Err(error) => tracing::warn!(%error, "prompt cache: cannot keep an opening"),
            }
        }
    }

    /// Prepares lanes for `jobs` (numbered from `offset` for the results): their
    /// branches are cut to the common prefix, and what remains to evaluate is listed.
    /// A job whose prompt is refused fails on its own sender (a job without one fails
    /// the call).
    fn admit(
        &mut self,
        jobs: Vec<LaneSpec>,
        offset: usize,
        active: &[Lane],
    ) -> Result<Admitted, RuntimeError> {
        let mut admitted = Admitted::default();
        for (k, (seq, prompt, request, out)) in jobs.into_iter().enumerate() {
            // The grammar first: a request it refuses fails alone, before its branch
            // is touched.
            let prepared = Branch::new(&self.loaded.model, &request).and_then(|branch| {
                self.prepare(seq, &prompt, &request, active)
                    .map(|(tokens, reused)| (branch, tokens, reused))
            });
            match prepared {
                Ok((branch, tokens, reused)) => {
                    let last = tokens.len() - 1;
                    admitted
                        .tails
                        .extend(tokens[reused..last].iter().map(|&t| (seq, t)));
                    admitted.lasts.push((seq, tokens[last]));
                    admitted.lanes.push(Lane {
                        branch,
                        seq,
                        logits: 0,
                        out,
                        finish: None,
                        usage: prompt_usage(tokens.len(), reused, Duration::ZERO),
                        slot: offset + k,
                        generating: Instant::now(),
                    });
                }
                Err(error) => match out {
                    Some(out) => out.done(Err(error)),
                    None => return Err(error),
                },
            }
        }
        Ok(admitted)
    }

    /// Checks and tokenizes one lane's prompt and cuts its branch to the common
    /// prefix; the tokens and how many are reused.
    fn prepare(
        &mut self,
        seq: BranchId,
        prompt: &LanePrompt,
        request: &GenerateRequest,
        active: &[Lane],
    ) -> Result<(Vec<LlamaToken>, usize), RuntimeError> {
        if seq != BranchId::MAIN && !self.cells.seqs.contains_key(&seq.0) {
            return Err(unknown_branch(seq));
        }
        if active.iter().any(|l| l.seq == seq && l.finish.is_none()) {
            return Err(RuntimeError::InvalidRequest(format!(
                "branch {seq} is already generating"
            )));
        }
        request.validate()?;
        let tokens = match prompt {
            LanePrompt::Text(text) => self.tokenize_prompt(text)?,
            LanePrompt::Tokens(tokens) => self.check_prompt(tokens.clone())?,
        };
        // At least the last prompt token is evaluated again (its logits are needed).
        let mut reused = self.keep_prefix(seq, &tokens, tokens.len() - 1);
        if reused * 2 < tokens.len() {
            reused = self.warm(seq, &tokens, tokens.len() - 1, reused);
        }
        Ok((tokens, reused))
    }

    /// `Run` jobs waiting on the channel that can join the loop now; anything else
    /// (and everything after it) is kept for later, in order.
    fn incoming(&mut self, lanes: &[Lane]) -> Vec<LaneSpec> {
        let mut joining = Vec::new();
        if !self.pending.is_empty() {
            return joining;
        }
        while let Ok(job) = self.jobs.try_recv() {
            let busy =
                |branch: BranchId| lanes.iter().any(|l| l.seq == branch && l.finish.is_none());
            match job {
                Job::Run(specs)
                    if self.pending.is_empty() && !specs.iter().any(|l| busy(l.branch)) && {
                        let mut seen: Vec<BranchId> = specs.iter().map(|l| l.branch).collect();
                        seen.sort();
                        seen.windows(2).all(|w| w[0] != w[1])
                    } =>
                {
                    joining.extend(
                        specs
                            .into_iter()
                            .map(|l| (l.branch, l.prompt, l.request, Some(l.out))),
                    );
                }
                other => self.pending.push_back(other),
            }
        }
        joining
    }

    /// Teacher-forced log-probabilities of `continuation` after `context` on the main
    /// branch, which then holds both (so scoring several continuations of one context
    /// evaluates the context once).
    fn score(
        &mut self,
        context: &str,
        continuation: &str,
        top: usize,
    ) -> Result<Score, RuntimeError> {
        let context_tokens = self.tokenize_prompt(context)?;
        let vocab = self.loaded.model.vocab();
        let continuation_tokens = vocab.tokenize(continuation.as_bytes(), false, false);
        if continuation_tokens.is_empty() {
            return Err(RuntimeError::InvalidRequest(
                "the continuation to score is empty".into(),
            ));
        }
        let mut all = context_tokens.clone();
        all.extend_from_slice(&continuation_tokens);
        if all.len() >= self.n_ctx as usize {
            return Err(RuntimeError::PromptTooLong {
                prompt_tokens: all.len(),
                n_ctx: self.n_ctx,
            });
        }
        // Logits are needed from the last context token on.
        let first = context_tokens.len() - 1;
        let mut scored = Vec::with_capacity(continuation_tokens.len());
        let loaded = self.loaded;
        let model = &loaded.model;
        let inputs = &all[..all.len() - 1];
        let keep = self.keep_prefix(BranchId::MAIN, inputs, first);
        let entries: Vec<_> = inputs[keep..]
            .iter()
            .map(|&t| (BranchId::MAIN, t))
            .collect();
        self.feed(&entries, &|i| keep + i >= first, &mut |i, _, logits| {
            if let Some(&next) = all.get(keep + i + 1) {
                scored.push(token_logprob(model, logits, next, top));
            }
        })?;
        Ok(Score {
            tokens: scored,
            context_tokens: context_tokens.len(),
        })
    }

    fn tokenize_prompt(&self, prompt: &str) -> Result<Vec<LlamaToken>, RuntimeError> {
        self.check_prompt(tokenize(&self.loaded.model, prompt))
    }

    /// A prompt's tokens checked against the context window.
    fn check_prompt(&self, tokens: Vec<LlamaToken>) -> Result<Vec<LlamaToken>, RuntimeError> {
        if tokens.is_empty() {
            return Err(RuntimeError::EmptyPrompt);
        }
        if tokens.len() >= self.n_ctx as usize {
            return Err(RuntimeError::PromptTooLong {
                prompt_tokens: tokens.len(),
                n_ctx: self.n_ctx,
            });
        }
        Ok(tokens)
    }

    /// Drops what `branch` holds after its common prefix with `tokens` (at most
    /// `limit` tokens are kept), then borrows a longer prefix from another branch
    /// when one has it; returns how many tokens of `tokens` the branch holds.
    fn keep_prefix(&mut self, branch: BranchId, tokens: &[LlamaToken], limit: usize) -> usize {
        let held = self.cells.tokens(branch);
        let keep = super::kv::common_prefix_len(held, tokens).min(limit);
        if keep == held.len() {
            return self.borrow_prefix(branch, tokens, keep, limit);
        }
        let removed = self
            .ctx
            .clear_kv_cache_seq(Some(branch.0), Some(keep as u32), None)
            .unwrap_or(false);
        if removed {
            self.cells.truncate(branch, keep);
            self.borrow_prefix(branch, tokens, keep, limit)
        } else {
            // Some memory kinds (recurrent models) cannot drop a tail: start over.
            let _ = self.ctx.clear_kv_cache_seq(Some(branch.0), None, None);
            self.cells.truncate(branch, 0);
            0
        }
    }

    /// Extends `branch`, which holds the first `keep` of `tokens`, with the cells of
    /// the other branch sharing the longest prefix of `tokens` (at most `limit`), so a
    /// prompt another request already evaluated (a common system prompt, a
    /// conversation that moved to another branch) is not evaluated again. The cells
    /// are shared, not copied; returns how many tokens `branch` now holds.
    fn borrow_prefix(
        &mut self,
        branch: BranchId,
        tokens: &[LlamaToken],
        keep: usize,
        limit: usize,
    ) -> usize {
        let model = &self.loaded.model;
        // Nothing left to borrow; a recurrent state is one per sequence, not one per
        // position.
        if keep >= limit || model.is_recurrent() || model.is_hybrid() {
            return keep;
        }
        let donor = self
            .cells
            .seqs
            .iter()
            .filter(|(&id, _)| id != branch.0)
            .map(|(&id, seq)| {
                (
                    id,
                    super::kv::common_prefix_len(&seq.tokens, tokens).min(limit),
                )
            })
            .max_by_key(|&(id, len)| (len, std::cmp::Reverse(id)));
        let Some((donor, len)) = donor.filter(|&(_, len)| len > keep) else {
            return keep;
        };
        let copied = self.ctx.copy_kv_cache_seq(
            donor as i32,
            branch.0 as i32,
            u32::try_from(keep).ok(),
            u32::try_from(len).ok(),
        );
        if copied.is_err() {
            return keep;
        }
        self.cells.borrow(BranchId(donor), branch, keep..len);
        len
    }

    /// Evaluates `entries` (each appended to its branch) in batches of at most
    /// `n_batch`, aligned to the end so the last batch holds the last `n_batch`
    /// entries. `visit(i, index, logits)` gets the logits of every entry `i` that
    /// `want`s them, right after its batch (`index`: its place in that batch).
    fn feed(
        &mut self,
        entries: &[(BranchId, LlamaToken)],
        want: &dyn Fn(usize) -> bool,
        visit: &mut dyn FnMut(usize, i32, &[f32]),
    ) -> Result<(), RuntimeError> {
        let mut start = 0;
        let first = entries.len() % self.n_batch;
        while start < entries.len() {
            let size = if start == 0 && first > 0 {
                first
            } else {
                self.n_batch
            };
            let chunk = &entries[start..start + size];
            self.batch.clear();
            let mut wanted = Vec::new();
            for (k, &(branch, token)) in chunk.iter().enumerate() {
                let i = start + k;
                let logits = want(i);
                if logits {
                    wanted.push((i, k as i32));
                }
                let pos = self.cells.tokens(branch).len() as i32;
                self.batch
                    .add(token, pos, &[branch.0 as i32], logits)
                    .map_err(decode_error)?;
                self.cells.push(branch, token);
            }
            self.decode()?;
            for (i, index) in wanted {
                visit(i, index, self.ctx.get_logits_ith(index));
            }
            start += size;
        }
        Ok(())
    }

    fn decode(&mut self) -> Result<(), RuntimeError> {
        self.ctx.decode(&mut self.batch).map_err(decode_error)
    }
}

fn decode_error(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Decode(e.to_string())
}

fn unknown_branch(branch: BranchId) -> RuntimeError {
    RuntimeError::InvalidRequest(format!(
        "branch {branch} does not exist (dropped or never forked)"
    ))
}

/// Usage of a call whose prompt had `prompt` tokens, `reused` of them from the cache.
fn prompt_usage(prompt: usize, reused: usize, prompt_time: Duration) -> Usage {
    Usage {
        prompt_tokens: prompt,
        cached_tokens: reused,
        evaluated_tokens: prompt - reused,
        prompt_time,
        ..Usage::default()
    }
}
