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
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::kv::{tokenize, SequenceCache};
use super::{backend, context_size, nonzero, Loaded};
use crate::error::RuntimeError;
use crate::generate::{
    Completion, FinishReason, GenerateRequest, Generation, GenerationSender, SamplingParams, Usage,
};
use crate::model::{physical_cores, ModelSession, SessionOptions};
use crate::stop::StopMatcher;
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

/// The worker thread's state.
struct Worker<'m> {
    loaded: &'m Loaded,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    n_ctx: u32,
    seq: SequenceCache,
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
        let reused = self.evaluate_prompt(&tokens)?;
        let mut usage = Usage {
            prompt_tokens: tokens.len(),
            cached_tokens: reused,
            evaluated_tokens: tokens.len() - reused,
            prompt_time: started.elapsed(),
            ..Usage::default()
        };
        let generating = Instant::now();
        let (text, finish) = self.sample_loop(request, out, &mut usage)?;
        usage.generation_time = generating.elapsed();
        Ok(Completion {
            text,
            finish,
            usage,
        })
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

    fn sample_loop(
        &mut self,
        request: &GenerateRequest,
        out: &GenerationSender,
        usage: &mut Usage,
    ) -> Result<(String, FinishReason), RuntimeError> {
        let model = &self.loaded.model;
        let vocab = model.vocab();
        let mut sampler = build_sampler(&request.sampling);
        let mut stops = StopMatcher::new(&request.stop);
        let mut utf8 = encoding_rs::UTF_8.new_decoder();
        let mut piece_bytes = Vec::with_capacity(32);
        let mut text = String::new();
        let emit = |s: String, text: &mut String| -> bool {
            if s.is_empty() {
                return true;
            }
            text.push_str(&s);
            out.text(s)
        };
        let finish = loop {
            if out.is_cancelled() {
                break FinishReason::Cancelled;
            }
            let token = sampler.sample(&self.ctx, self.batch.n_tokens() - 1);
            if vocab.is_eog(token) {
                break FinishReason::EndOfText;
            }
            usage.generated_tokens += 1;
            piece_bytes.clear();
            vocab.token_to_piece_into(token, &mut piece_bytes, true, None);
            let mut piece = String::with_capacity(piece_bytes.len() + 4);
            let _ = utf8.decode_to_string(&piece_bytes, &mut piece, false);
            let scan = stops.push(&piece);
            if !emit(scan.emit, &mut text) {
                break FinishReason::Cancelled;
            }
            if let Some(stop) = scan.stopped {
                break FinishReason::StopString(stop);
            }
            if usage.generated_tokens >= request.max_tokens {
                break FinishReason::MaxTokens;
            }
            if self.seq.tokens.len() + 1 >= self.n_ctx as usize {
                break FinishReason::ContextFull;
            }
            // Evaluate the sampled token so the next one can be sampled.
            self.batch.clear();
            self.batch
                .add(token, self.seq.tokens.len() as i32, &[MAIN_SEQ], true)
                .map_err(|e| RuntimeError::Decode(e.to_string()))?;
            self.ctx
                .decode(&mut self.batch)
                .map_err(|e| RuntimeError::Decode(e.to_string()))?;
            self.seq.tokens.push(token);
        };
        if !matches!(finish, FinishReason::StopString(_)) {
            let mut rest = stops.flush();
            let _ = utf8.decode_to_string(&[], &mut rest, true);
            emit(rest, &mut text);
        }
        Ok((text, finish))
    }
}

/// The llama.cpp sampler chain for these settings.
fn build_sampler(params: &SamplingParams) -> LlamaSampler {
    if params.is_greedy() {
        return LlamaSampler::greedy();
    }
    let mut chain = Vec::with_capacity(5);
    if params.top_k > 0 {
        chain.push(LlamaSampler::top_k(
            i32::try_from(params.top_k).unwrap_or(i32::MAX),
        ));
    }
    if params.top_p < 1.0 {
        chain.push(LlamaSampler::top_p(params.top_p, 1));
    }
    if params.min_p > 0.0 {
        chain.push(LlamaSampler::min_p(params.min_p, 1));
    }
    chain.push(LlamaSampler::temp(params.temperature));
    chain.push(LlamaSampler::dist(params.seed));
    LlamaSampler::chain_simple(chain)
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<LlamaSession>();
    let _ = Duration::ZERO;
}
