//! A session: one llama.cpp context on a worker thread of its own.
//!
//! The worker owns the context (llama.cpp contexts borrow the model and must stay on
//! one thread) and serves requests in order. It keeps a [`SequenceCache`] of the tokens
//! its KV cache holds: a new prompt drops only the part of the cache after the longest
//! common prefix and evaluates only the rest.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::branch::{Branch, Step};
use super::kv::{tokenize, SequenceCache};
use super::{backend, context_size, nonzero, Loaded};
use crate::error::RuntimeError;
use crate::generate::{
    Completion, FinishReason, GenerateRequest, Generation, GenerationSender, Usage,
};
use crate::model::{physical_cores, ModelSession, SessionOptions};
use crate::template::ChatTemplate;

/// A conversation state on a [`super::LlamaModel`], with KV-cache prefix reuse.
///
/// Each call to [`LlamaSession::generate`] queues a request on the session's worker
/// thread; requests run one at a time, in order. Dropping the session stops the worker.
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
            .finish_non_exhaustive()
    }
}

enum Job {
    Generate {
        prompt: String,
        request: GenerateRequest,
        out: GenerationSender,
    },
    Parallel {
        prompt: String,
        requests: Vec<GenerateRequest>,
        reply: tokio::sync::oneshot::Sender<Result<Vec<Completion>, RuntimeError>>,
    },
    Reset(mpsc::Sender<()>),
    CachedTokens(mpsc::Sender<Vec<i32>>),
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
                    batch: LlamaBatch::new(n_batch as usize, 1),
                    n_batch: n_batch as usize,
                    n_ctx,
                    seq: SequenceCache::default(),
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

    /// Starts continuing `prompt` (raw text; special tokens such as `<|im_start|>` are
    /// parsed). The returned [`Generation`] streams the output.
    pub fn generate(
        &self,
        prompt: &str,
        request: &GenerateRequest,
    ) -> Result<Generation, RuntimeError> {
        request.validate()?;
        let (out, generation) = Generation::channel();
        self.send(Job::Generate {
            prompt: prompt.to_owned(),
            request: request.clone(),
            out,
        })?;
        Ok(generation)
    }

    /// Generates one continuation per request from one prompt, in parallel: the prompt
    /// is evaluated once (reusing the session's cache as [`generate`](Self::generate)
    /// does), then forked into one KV-cache sequence per request, and all sequences
    /// decode together in one batch per step. For self-consistency, best-of-N and tree
    /// search: give each request its own seed.
    ///
    /// Needs a session opened with `max_sequences > requests.len()` (sequence 0 keeps
    /// the prompt). The first completion's usage counts the prompt evaluation; the
    /// others report the whole prompt as cached (they share it).
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

    /// Forgets everything evaluated so far (the next prompt is evaluated in full).
    pub fn reset(&self) -> Result<(), RuntimeError> {
        let (tx, rx) = mpsc::channel();
        self.send(Job::Reset(tx))?;
        rx.recv().map_err(|_| RuntimeError::WorkerGone)
    }

    /// The token ids the KV cache holds now (after queued requests have run).
    pub fn cached_tokens(&self) -> Result<Vec<i32>, RuntimeError> {
        let (tx, rx) = mpsc::channel();
        self.send(Job::CachedTokens(tx))?;
        rx.recv().map_err(|_| RuntimeError::WorkerGone)
    }

    /// The context window in tokens.
    pub fn context_size(&self) -> u32 {
        self.n_ctx
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
    fn generate(
        &mut self,
        prompt: &str,
        request: &GenerateRequest,
    ) -> Result<Generation, RuntimeError> {
        LlamaSession::generate(self, prompt, request)
    }

    fn chat_template(&self) -> &ChatTemplate {
        &self.loaded.template
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

/// The worker thread's state.
struct Worker<'m> {
    loaded: &'m Loaded,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    n_ctx: u32,
    seq: SequenceCache,
}

/// One forked sequence of a parallel generation.
struct Fork {
    branch: Branch,
    /// Its sequence id in the KV cache.
    seq: i32,
    /// The position its next token goes to.
    pos: i32,
    /// Where its logits are in the last evaluated batch.
    logits: i32,
    finish: Option<FinishReason>,
}

/// Sequence id of the main conversation in the KV cache.
const MAIN_SEQ: i32 = 0;

impl Worker<'_> {
    fn serve(&mut self, job: Job) {
        match job {
            Job::Generate {
                prompt,
                request,
                out,
            } => {
                let result = self.generate(&prompt, &request, &out);
                if result.is_err() {
                    // After a failed evaluation the cache contents are uncertain.
                    self.clear();
                }
                out.done(result);
            }
            Job::Parallel {
                prompt,
                requests,
                reply,
            } => {
                let result = self.generate_parallel(&prompt, &requests);
                self.drop_forks(requests.len());
                if result.is_err() {
                    self.clear();
                }
                let _ = reply.send(result);
            }
            Job::Reset(reply) => {
                self.clear();
                let _ = reply.send(());
            }
            Job::CachedTokens(reply) => {
                let _ = reply.send(self.seq.tokens.iter().map(|t| t.0).collect());
            }
        }
    }

    fn clear(&mut self) {
        self.ctx.clear_kv_cache();
        self.seq.tokens.clear();
    }

    fn generate(
        &mut self,
        prompt: &str,
        request: &GenerateRequest,
        out: &GenerationSender,
    ) -> Result<Completion, RuntimeError> {
        let started = Instant::now();
        let tokens = self.tokenize_prompt(prompt)?;
        let reused = self.evaluate_prompt(&tokens)?;
        let mut usage = prompt_usage(tokens.len(), reused, started.elapsed());
        let generating = Instant::now();
        let mut branch = Branch::new(&self.loaded.model, request)?;
        let model = &self.loaded.model;
        let finish = loop {
            if out.is_cancelled() {
                branch.flush();
                break FinishReason::Cancelled;
            }
            let token = branch.sample(&self.ctx, self.batch.n_tokens() - 1);
            let room = self.seq.tokens.len() + 1 < self.n_ctx as usize;
            match branch.accept(model, token, room) {
                Step::Finish(text, reason) => {
                    if !text.is_empty() {
                        out.text(text);
                    }
                    break reason;
                }
                Step::Continue(text) => {
                    if !text.is_empty() && !out.text(text) {
                        break FinishReason::Cancelled;
                    }
                }
            }
            // Evaluate the sampled token so the next one can be sampled.
            self.batch.clear();
            let pos = self.seq.tokens.len() as i32;
            self.batch
                .add(token, pos, &[MAIN_SEQ], true)
                .map_err(|e| RuntimeError::Decode(e.to_string()))?;
            self.ctx
                .decode(&mut self.batch)
                .map_err(|e| RuntimeError::Decode(e.to_string()))?;
            self.seq.tokens.push(token);
        };
        usage.generated_tokens = branch.generated;
        usage.generation_time = generating.elapsed();
        Ok(Completion {
            text: branch.text,
            finish,
            usage,
        })
    }

    /// Forks the evaluated prompt into one sequence per request (sequence `i + 1` for
    /// request `i`) and decodes them together, one batch per step. Sequence 0 keeps the
    /// prompt; the caller drops the forks afterwards.
    fn generate_parallel(
        &mut self,
        prompt: &str,
        requests: &[GenerateRequest],
    ) -> Result<Vec<Completion>, RuntimeError> {
        let started = Instant::now();
        let tokens = self.tokenize_prompt(prompt)?;
        let reused = self.evaluate_prompt(&tokens)?;
        let prompt_time = started.elapsed();
        let generating = Instant::now();
        let mut forks = Vec::with_capacity(requests.len());
        for (i, request) in requests.iter().enumerate() {
            let seq = i as i32 + 1;
            self.ctx
                .copy_kv_cache_seq(MAIN_SEQ, seq, None, None)
                .map_err(|e| RuntimeError::Decode(e.to_string()))?;
            forks.push(Fork {
                branch: Branch::new(&self.loaded.model, request)?,
                seq,
                pos: tokens.len() as i32,
                logits: self.batch.n_tokens() - 1,
                finish: None,
            });
        }
        // Cells in use: the shared prompt plus every fork's evaluated tokens.
        let mut used = tokens.len();
        let model = &self.loaded.model;
        loop {
            let active = forks.iter().filter(|f| f.finish.is_none()).count();
            if active == 0 {
                break;
            }
            let room = used + active < self.n_ctx as usize;
            let mut next = Vec::with_capacity(active);
            for (i, fork) in forks.iter_mut().enumerate() {
                if fork.finish.is_some() {
                    continue;
                }
                let token = fork.branch.sample(&self.ctx, fork.logits);
                match fork.branch.accept(model, token, room) {
                    Step::Finish(_, reason) => fork.finish = Some(reason),
                    Step::Continue(_) => next.push((i, token)),
                }
            }
            if next.is_empty() {
                continue;
            }
            self.batch.clear();
            for (k, &(i, token)) in next.iter().enumerate() {
                let fork = &mut forks[i];
                self.batch
                    .add(token, fork.pos, &[fork.seq], true)
                    .map_err(|e| RuntimeError::Decode(e.to_string()))?;
                fork.pos += 1;
                fork.logits = k as i32;
            }
            self.ctx
                .decode(&mut self.batch)
                .map_err(|e| RuntimeError::Decode(e.to_string()))?;
            used += next.len();
        }
        let generation_time = generating.elapsed();
        Ok(forks
            .into_iter()
            .enumerate()
            .map(|(i, fork)| {
                let mut usage = if i == 0 {
                    prompt_usage(tokens.len(), reused, prompt_time)
                } else {
                    prompt_usage(tokens.len(), tokens.len(), Duration::ZERO)
                };
                usage.generated_tokens = fork.branch.generated;
                usage.generation_time = generation_time;
                Completion {
                    text: fork.branch.text,
                    finish: fork.finish.unwrap_or(FinishReason::MaxTokens),
                    usage,
                }
            })
            .collect())
    }

    /// Removes forked sequences `1..=n` from the KV cache.
    fn drop_forks(&mut self, n: usize) {
        for seq in 1..=n as u32 {
            let _ = self.ctx.clear_kv_cache_seq(Some(seq), None, None);
        }
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

    /// Brings the KV cache to hold exactly `tokens`, evaluating only what follows the
    /// common prefix; returns how many tokens were reused. Afterwards the logits of the
    /// last prompt token are at index `batch.n_tokens() - 1`.
    fn evaluate_prompt(&mut self, tokens: &[LlamaToken]) -> Result<usize, RuntimeError> {
        let mut reused = self.seq.reusable(tokens);
        if reused < self.seq.tokens.len() {
            let removed = self
                .ctx
                .clear_kv_cache_seq(Some(MAIN_SEQ as u32), Some(reused as u32), None)
                .unwrap_or(false);
            if removed {
                self.seq.tokens.truncate(reused);
            } else {
                // Some memory kinds (recurrent models) cannot drop a tail: start over.
                self.clear();
                reused = 0;
            }
        }
        for chunk in tokens[reused..].chunks(self.n_batch) {
            self.batch.clear();
            let last = chunk.len() - 1;
            for (i, token) in chunk.iter().enumerate() {
                let pos = self.seq.tokens.len() + i;
                self.batch
                    .add(*token, pos as i32, &[MAIN_SEQ], i == last)
                    .map_err(|e| RuntimeError::Decode(e.to_string()))?;
            }
            self.ctx
                .decode(&mut self.batch)
                .map_err(|e| RuntimeError::Decode(e.to_string()))?;
            self.seq.tokens.extend_from_slice(chunk);
        }
        Ok(reused)
    }
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
