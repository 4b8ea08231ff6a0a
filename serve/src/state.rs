//! The server's shared state: the one session (any [`BranchedSession`]), the slots and
//! the counters.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jielong_chat::fit::CallFit;
use jielong_chat::{
    BranchId, BranchedSession, CallMode, Chat, KvUsage, ModelInfo, PreparedPrompt, PromptCache,
    SamplingParams, SessionOptions,
};

use crate::error::{ApiError, ServeError};
use crate::metrics::Metrics;
use crate::slots::SlotPool;

/// How the server runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Requests generating at once (one slot each).
    pub parallel: usize,
    /// Requests waiting for a slot before new ones get 503.
    pub queue: usize,
    /// The largest `n` (choices per request).
    pub max_n: usize,
    /// The key clients must send as `Authorization: Bearer KEY` (`None`: no key).
    pub api_key: Option<String>,
    /// The model id `/v1/models` lists and responses name.
    pub model_id: String,
    /// Tokens generated when a request sets no limit.
    pub default_max_tokens: usize,
    /// Sampling settings for what a request leaves out (temperature, top-p, top-k,
    /// min-p; the seed is fresh per request unless given).
    pub sampling: SamplingParams,
    /// The largest request body in bytes (bigger ones get 413).
    pub body_limit: usize,
    /// How tool calls are held to their schemas: a grammar once a call opens
    /// ([`CallMode::Constrained`], the default) or only parsed and validated.
    pub calls: CallMode,
    /// Whether calls are fitted to the request: a tool the request does not name is
    /// declined, a request that names several items gets a call per item
    /// ([`CallFit::Fitted`]; default [`CallFit::AsWritten`]).
    pub fit: CallFit,
}

impl ServeConfig {
    /// Waiting requests unless set otherwise.
    pub const DEFAULT_QUEUE: usize = 64;
    /// Request body limit unless set otherwise (4 MiB).
    pub const DEFAULT_BODY_LIMIT: usize = 4 << 20;
    /// The openings a server's prompt cache keeps per process (one per distinct
    /// opening; the cache's size bound decides what stays).
    pub const OPENINGS: usize = 1024;

    /// The defaults for a model called `model_id`.
    pub fn new(model_id: impl Into<String>) -> Self {
        Self {
            parallel: 4,
            queue: Self::DEFAULT_QUEUE,
            max_n: 4,
            api_key: None,
            model_id: model_id.into(),
            default_max_tokens: 512,
            // OpenAI's defaults (temperature and top-p 1), with llama.cpp's server's
            // top-k and min-p.
            sampling: SamplingParams {
                temperature: 1.0,
                top_p: 1.0,
                ..SamplingParams::greedy()
            },
            body_limit: Self::DEFAULT_BODY_LIMIT,
            calls: CallMode::Constrained,
            fit: CallFit::AsWritten,
        }
    }

    /// The session options for these settings: `base` with one branch per slot, the
    /// (empty) main branch, and `max_n - 1` extra branches for `n`.
    /// A prompt cache, if `base` has one, keeps every distinct opening the clients
    /// send ([`ServeConfig::OPENINGS`]), bounded by its size: a system prompt whose
    /// slot went to another starts warm when it comes back.
    pub fn session_options(&self, base: &SessionOptions) -> SessionOptions {
        SessionOptions {
            max_sequences: u32::try_from(1 + self.parallel + self.max_n.saturating_sub(1))
                .unwrap_or(u32::MAX),
            prompt_cache: base.prompt_cache.clone().map(|cache| PromptCache {
                openings: Self::OPENINGS,
                ..cache
            }),
            ..base.clone()
        }
    }

    fn validate(&self) -> Result<(), ServeError> {
        if self.parallel == 0 {
            return Err(ServeError::Config("--parallel must be at least 1".into()));
        }
        if self.max_n == 0 {
            return Err(ServeError::Config(
                "the largest n must be at least 1".into(),
            ));
        }
        if self.api_key.as_deref().is_some_and(str::is_empty) {
            return Err(ServeError::Config("the API key must not be empty".into()));
        }
        Ok(())
    }
}

/// What every handler reads: cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct ServeState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The model behind the session (for `/v1/models`).
    pub(crate) info: ModelInfo,
    pub(crate) session: Arc<dyn BranchedSession>,
    pub(crate) config: ServeConfig,
    pub(crate) slots: Arc<SlotPool>,
    pub(crate) metrics: Metrics,
    /// Unix seconds the server started at (`created` of the model).
    pub(crate) created: u64,
    /// The KV cache as last seen while nothing was generating.
    pub(crate) kv: Mutex<Option<KvUsage>>,
}

impl std::fmt::Debug for ServeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeState")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl ServeState {
    /// Serves `session`, which must have room for the slots' branches (open it with
    /// [`ServeConfig::session_options`]): forks one branch per slot. Blocks while
    /// forking: call it from a blocking thread in async code.
    pub fn open(
        session: Arc<dyn BranchedSession>,
        config: ServeConfig,
    ) -> Result<Self, ServeError> {
        config.validate()?;
        // Slots are branches of their own; the main branch stays empty, so a slot is
        // renewed by forking it.
        let branches = session.fork(BranchId::MAIN, config.parallel)?;
        let slots = Arc::new(SlotPool::new(
            branches,
            config.queue,
            config.max_n.saturating_sub(1),
            session.context_size() as usize,
        ));
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let kv = session.kv_usage().ok();
        Ok(Self {
            inner: Arc::new(Inner {
                info: session.info(),
                session,
                config,
                slots,
                metrics: Metrics::default(),
                created,
                kv: Mutex::new(kv),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &ServeConfig {
        &self.inner.config
    }

    /// The session requests run on (another handle on it).
    pub fn session(&self) -> Arc<dyn BranchedSession> {
        self.inner.session.clone()
    }

    /// `chat`'s prompt, rendered and tokenized: once per request (and once per reply
    /// asked for on a changed chat), as `/metrics` counts.
    pub(crate) fn prepare(&self, chat: &Chat) -> Result<PreparedPrompt, ApiError> {
        self.inner.metrics.prepared.fetch_add(1, Ordering::Relaxed);
        Ok(self.inner.session.prepare(chat)?)
    }

    /// A raw prompt tokenized, counted like [`ServeState::prepare`].
    pub(crate) fn prepare_text(&self, text: &str) -> Result<PreparedPrompt, ApiError> {
        self.inner.metrics.prepared.fetch_add(1, Ordering::Relaxed);
        Ok(self.inner.session.prepare_text(text)?)
    }

    /// The KV cache's state: asked from the worker when nothing is generating (the
    /// question would otherwise wait for the running batch), else as last seen.
    pub async fn kv_usage(&self) -> Option<KvUsage> {
        if self.inner.metrics.in_flight.load(Ordering::Relaxed) == 0 {
            let session = self.session();
            if let Ok(Ok(kv)) = tokio::task::spawn_blocking(move || session.kv_usage()).await {
                *self.inner.kv.lock().unwrap_or_else(|p| p.into_inner()) = Some(kv);
            }
        }
        self.inner
            .kv
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Counts a request as in flight while it holds a slot; the last one to finish
/// refreshes the KV-cache figures.
pub(crate) struct InFlight {
    state: ServeState,
}

impl InFlight {
    pub(crate) fn new(state: &ServeState) -> Self {
        state
            .inner
            .metrics
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        Self {
            state: state.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let before = self
            .state
            .inner
            .metrics
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
        if before == 1 {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let state = self.state.clone();
                handle.spawn(async move {
                    let _ = state.kv_usage().await;
                });
            }
        }
    }
}

/// Unix seconds now.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
