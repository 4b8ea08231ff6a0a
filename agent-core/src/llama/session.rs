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
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::branch::{token_logprob, Branch, Step};
use super::kv::tokenize;
use super::{backend, context_size, nonzero, Loaded};
use crate::error::RuntimeError;
use crate::generate::{
    Completion, FinishReason, GenerateRequest, Generation, GenerationEvent, GenerationSender,
    Usage,
};
use crate::logprob::{Score, MAX_TOP_LOGPROBS};
use crate::model::{
    physical_cores, BranchId, BranchUsage, Capabilities, KvUsage, ModelSession, SessionOptions,
};
use crate::respond::{Chat, ChatRequest};

/// A conversation state on a [`super::LlamaModel`], with KV-cache prefix reuse and
/// branches.
///
/// Each call queues a request on the session's worker thread; requests run one at a
/// time, in order. Dropping the session stops the worker.
pub struct LlamaSession {
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<thread::JoinHandle<()>>,
    loaded: Arc<Loaded>,
    n_ctx: u32,
    n_seq: u32,
}

impl std::fmt::Debug for LlamaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaSession")
            .field("n_ctx", &self.n_ctx)
            .field("n_seq", &self.n_seq)
            .finish_non_exhaustive()
    }
}

/// A reply to the caller of a job.
type Reply<T> = mpsc::Sender<Result<T, RuntimeError>>;

/// One generating request of a [`Job::Run`].
struct LaneJob {
    branch: BranchId,
    prompt: String,
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
        let (jobs, job_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let worker_loaded = loaded.clone();
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
                    ctx,
                    batch: LlamaBatch::new(n_batch as usize, n_seq as i32),
                    n_batch: n_batch as usize,
                    n_ctx,
                    n_seq,
                    cells: Cells::default(),
                };
                while let Ok(job) = job_rx.recv() {
                    worker.serve(job);
                }
            })
            .map_err(|e| RuntimeError::Backend(format!("cannot start a worker thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                jobs: Some(jobs),
                worker: Some(worker),
                loaded,
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
        let mut generations = self.run(vec![(branch, prompt.to_owned(), request.clone())])?;
        generations.pop().ok_or(RuntimeError::WorkerGone)
    }

    /// Continues several branches at once, each with its own prompt and request; all
    /// of them decode together, one batch per step. One [`Generation`] per job, in
    /// order; a branch may appear only once.
    pub fn run(
        &self,
        jobs: Vec<(BranchId, String, GenerateRequest)>,
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
        let mut texts = Vec::with_capacity(jobs.len());
        for (chat, request) in jobs {
            request.validate(chat)?;
            texts.push((
                chat.branch,
                format.render(chat)?,
                format.request(chat, request),
            ));
        }
        let generations = self.run(texts)?;
        Ok(generations
            .into_iter()
            .zip(jobs)
            .map(|(generation, (chat, request))| {
                let tools = request.callable(chat);
                generation.parsing(
                    format.calls,
                    (!tools.is_empty()).then(|| crate::respond::call_check(tools)),
                )
            })
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
    pub fn score(&self, context: &str, continuation: &str, top: u32) -> Result<Score, RuntimeError> {
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
        self.jobs
            .as_ref()
            .ok_or(RuntimeError::WorkerGone)?
            .send(job)
            .map_err(|_| RuntimeError::WorkerGone)
    }
}

impl Drop for LlamaSession {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop once its current job is done (a
        // running generation sees its Generation dropped and stops at the next token).
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
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

    fn score(&mut self, context: &str, continuation: &str, top: u32) -> Result<Score, RuntimeError> {
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

    fn reset(&mut self) -> Result<(), RuntimeError> {
        LlamaSession::reset(self)
    }

    fn context_size(&self) -> u32 {
        self.n_ctx
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

    fn copy(&mut self, from: BranchId, to: BranchId) {
        let seq = self.seqs.get(&from.0).cloned().unwrap_or_default();
        for cell in &seq.cells {
            *self.refs.entry(*cell).or_default() += 1;
        }
        self.truncate(to, 0);
        self.seqs.insert(to.0, seq);
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
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    n_ctx: u32,
    n_seq: u32,
    cells: Cells,
}

/// One generating branch in the decode loop.
struct Lane {
    branch: Branch,
    seq: BranchId,
    /// Where its logits are in the last evaluated batch.
    logits: i32,
    out: Option<GenerationSender>,
    finish: Option<FinishReason>,
    usage: Usage,
}

impl Worker<'_> {
    fn serve(&mut self, job: Job) {
        match job {
            Job::Run(lanes) => {
                let outs: Vec<GenerationSender> = lanes.iter().map(|l| l.out.clone()).collect();
                let jobs = lanes
                    .into_iter()
                    .map(|l| (l.branch, l.prompt, l.request, Some(l.out)))
                    .collect();
                match self.run(jobs) {
                    Ok(completions) => {
                        for (out, completion) in outs.iter().zip(completions) {
                            out.done(Ok(completion));
                        }
                    }
                    Err(error) => {
                        // After a failed evaluation the cache contents are uncertain.
                        self.clear();
                        let message = error.to_string();
                        let mut error = Some(error);
                        for out in &outs {
                            out.done(Err(error
                                .take()
                                .unwrap_or_else(|| RuntimeError::Decode(message.clone()))));
                        }
                    }
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
        let reused = self.evaluate(BranchId::MAIN, &tokens, Logits::None)?;
        let prompt_time = started.elapsed();
        let forks = self.fork(BranchId::MAIN, requests.len())?;
        let jobs = forks
            .iter()
            .zip(requests)
            .map(|(&branch, request)| (branch, prompt.to_owned(), request, None))
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
                usage.cached_tokens = reused;
                usage.evaluated_tokens = tokens.len() - reused;
                usage.prompt_time = prompt_time;
            } else {
                usage.cached_tokens = tokens.len();
                usage.evaluated_tokens = 0;
                usage.prompt_time = Duration::ZERO;
            }
        }
        Ok(completions)
    }

    /// The one decode loop: brings every lane's branch to its prompt (evaluating
    /// only what follows each branch's common prefix, the lanes' last prompt tokens
    /// in one batch), then samples every active lane and decodes their tokens
    /// together, one batch per step, until all have finished.
    fn run(
        &mut self,
        jobs: Vec<(BranchId, String, GenerateRequest, Option<GenerationSender>)>,
    ) -> Result<Vec<Completion>, RuntimeError> {
        let started = Instant::now();
        let mut lanes = Vec::with_capacity(jobs.len());
        let mut lasts = Vec::with_capacity(jobs.len());
        for (seq, prompt, request, out) in jobs {
            if seq != BranchId::MAIN && !self.cells.seqs.contains_key(&seq.0) {
                return Err(unknown_branch(seq));
            }
            let tokens = self.tokenize_prompt(&prompt)?;
            // All but the last prompt token now; the last ones go in one shared batch.
            let reused = self.evaluate(seq, &tokens, Logits::Hold)?;
            lasts.push((seq, tokens[tokens.len() - 1]));
            lanes.push(Lane {
                branch: Branch::new(&self.loaded.model, &request)?,
                seq,
                logits: 0,
                out,
                finish: None,
                usage: prompt_usage(tokens.len(), reused, Duration::ZERO),
            });
        }
        self.batch.clear();
        for (k, (seq, token)) in lasts.iter().enumerate() {
            let pos = self.cells.tokens(*seq).len() as i32;
            self.batch
                .add(*token, pos, &[seq.0 as i32], true)
                .map_err(decode_error)?;
            lanes[k].logits = k as i32;
        }
        self.decode()?;
        for (seq, token) in lasts {
            self.cells.push(seq, token);
        }
        let prompt_time = started.elapsed();
        for lane in &mut lanes {
            lane.usage.prompt_time = prompt_time;
        }
        let generating = Instant::now();
        let loaded = self.loaded;
        let model = &loaded.model;
        loop {
            let active = lanes.iter().filter(|l| l.finish.is_none()).count();
            if active == 0 {
                break;
            }
            let room = self.cells.used() + active < self.n_ctx as usize;
            let mut next = Vec::with_capacity(active);
            for (i, lane) in lanes.iter_mut().enumerate() {
                if lane.finish.is_some() {
                    continue;
                }
                if lane.out.as_ref().is_some_and(GenerationSender::is_cancelled) {
                    lane.branch.flush();
                    lane.finish = Some(FinishReason::Cancelled);
                    continue;
                }
                let token = lane.branch.sample(&self.ctx, lane.logits);
                let logprob = lane
                    .branch
                    .record_logprob(model, &self.ctx, lane.logits, token);
                let step = lane.branch.accept(model, token, room);
                let (text, finish) = match step {
                    Step::Finish(text, reason) => (text, Some(reason)),
                    Step::Continue(text) => (text, None),
                };
                if let Some(out) = &lane.out {
                    let mut gone = false;
                    if let Some(logprob) = logprob {
                        gone |= !out.send(GenerationEvent::Logprob(logprob));
                    }
                    if !text.is_empty() {
                        gone |= !out.text(text);
                    }
                    if gone && finish.is_none() {
                        lane.finish = Some(FinishReason::Cancelled);
                        continue;
                    }
                }
                match finish {
                    Some(reason) => lane.finish = Some(reason),
                    None => next.push((i, token)),
                }
            }
            if next.is_empty() {
                continue;
            }
            self.batch.clear();
            for (k, &(i, token)) in next.iter().enumerate() {
                let lane = &mut lanes[i];
                let pos = self.cells.tokens(lane.seq).len() as i32;
                self.batch
                    .add(token, pos, &[lane.seq.0 as i32], true)
                    .map_err(decode_error)?;
                lane.logits = k as i32;
            }
            self.decode()?;
            for &(i, token) in &next {
                self.cells.push(lanes[i].seq, token);
            }
        }
        let generation_time = generating.elapsed();
        Ok(lanes
            .into_iter()
            .map(|lane| {
                let mut usage = lane.usage;
                usage.generated_tokens = lane.branch.generated;
                usage.generation_time = generation_time;
                Completion {
                    text: lane.branch.text,
                    logprobs: lane.branch.logprob_log,
                    finish: lane.finish.unwrap_or(FinishReason::MaxTokens),
                    usage,
                    ..Completion::default()
                }
            })
            .collect())
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
        let mut at_logits = |logits: &[f32], position: usize| {
            if let Some(&next) = all.get(position + 1) {
                scored.push(token_logprob(model, logits, next, top));
            }
        };
        self.evaluate_with(
            BranchId::MAIN,
            &all[..all.len() - 1],
            first,
            &mut at_logits,
        )?;
        Ok(Score {
            tokens: scored,
            context_tokens: context_tokens.len(),
        })
    }

    fn tokenize_prompt(&self, prompt: &str) -> Result<Vec<LlamaToken>, RuntimeError> {
        let tokens = tokenize(&self.loaded.model, prompt);
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

    /// Brings `branch` to hold `tokens` (or, with [`Logits::Hold`], all of them but
    /// the last), evaluating only what follows the common prefix; returns how many
    /// tokens were reused.
    fn evaluate(
        &mut self,
        branch: BranchId,
        tokens: &[LlamaToken],
        logits: Logits,
    ) -> Result<usize, RuntimeError> {
        let target = match logits {
            Logits::Hold => &tokens[..tokens.len() - 1],
            Logits::None => tokens,
        };
        let reused = super::kv::common_prefix_len(self.cells.tokens(branch), target);
        self.evaluate_with(branch, target, usize::MAX, &mut |_, _| {})?;
        Ok(reused)
    }

    /// Brings `branch` to hold exactly `tokens`, evaluating only what follows the
    /// common prefix; `visit` gets the logits of every position from `logits_from` on
    /// that was evaluated.
    fn evaluate_with(
        &mut self,
        branch: BranchId,
        tokens: &[LlamaToken],
        logits_from: usize,
        visit: &mut dyn FnMut(&[f32], usize),
    ) -> Result<(), RuntimeError> {
        let held = self.cells.tokens(branch);
        let mut keep = super::kv::common_prefix_len(held, tokens).min(logits_from);
        if keep < held.len() {
            let removed = self
                .ctx
                .clear_kv_cache_seq(Some(branch.0), Some(keep as u32), None)
                .unwrap_or(false);
            if removed {
                self.cells.truncate(branch, keep);
            } else {
                // Some memory kinds (recurrent models) cannot drop a tail: start over.
                let _ = self.ctx.clear_kv_cache_seq(Some(branch.0), None, None);
                self.cells.truncate(branch, 0);
                keep = 0;
            }
        }
        let mut start = keep;
        for chunk in tokens[keep..].chunks(self.n_batch) {
            self.batch.clear();
            let mut wanted = Vec::new();
            for (i, token) in chunk.iter().enumerate() {
                let pos = start + i;
                let want = pos >= logits_from;
                if want {
                    wanted.push((self.batch.n_tokens(), pos));
                }
                self.batch
                    .add(*token, pos as i32, &[branch.0 as i32], want)
                    .map_err(decode_error)?;
            }
            self.decode()?;
            for &(index, pos) in &wanted {
                visit(self.ctx.get_logits_ith(index), pos);
            }
            for token in chunk {
                self.cells.push(branch, *token);
            }
            start += chunk.len();
        }
        Ok(())
    }

    fn decode(&mut self) -> Result<(), RuntimeError> {
        self.ctx.decode(&mut self.batch).map_err(decode_error)
    }
}

/// What [`Worker::evaluate`] leaves for the caller.
#[derive(Clone, Copy)]
enum Logits {
    /// Evaluate the whole prompt (no logits are read).
    None,
    /// Leave the last prompt token to the caller's batch, which reads its logits.
    Hold,
}

fn decode_error(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Decode(e.to_string())
}

fn unknown_branch(branch: BranchId) -> RuntimeError {
    RuntimeError::InvalidRequest(format!("branch {branch} does not exist (dropped or never forked)"))
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
