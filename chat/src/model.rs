//! The language-model abstraction: what any backend (embedded llama.cpp, a remote
//! server, a scripted test model) offers the rest of Jielong.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::RuntimeError;
use crate::generate::{GenerateRequest, Generation};
use crate::logprob::Score;
use crate::respond::{Chat, ChatRequest};

/// What is known about a loaded model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// A display name (the GGUF's `general.name`, else the file name).
    pub name: String,
    /// The file it was loaded from, for local models.
    pub path: Option<PathBuf>,
    /// The architecture (`qwen2`, `llama`, …).
    pub architecture: String,
    /// The context length the model was trained with.
    pub context_length: u32,
    /// Number of parameters.
    pub parameters: u64,
    /// Size of the weights in bytes.
    pub size_bytes: u64,
    /// Whether the chat template came from the model file (`false`: the ChatML fallback).
    pub has_own_template: bool,
    /// How the model writes tool calls (detected from its vocabulary and template).
    pub tool_call_format: crate::tool_format::ToolCallFormat,
}

/// How a session's context is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// Context window in tokens; `None` picks the smaller of the model's trained
    /// length and [`SessionOptions::DEFAULT_CONTEXT`].
    pub context_size: Option<u32>,
    /// Threads for generation and prompt evaluation; `None` uses the physical cores.
    pub threads: Option<usize>,
    /// Largest number of prompt tokens evaluated in one batch.
    pub batch_size: u32,
    /// Branches (KV-cache sequences) the context can hold at once.
    pub max_sequences: u32,
    /// Where a backend that can keeps the KV state of opening prompts across
    /// processes, so the next process evaluates only what follows the part it shares
    /// with one kept there; `None` keeps nothing on disk.
    pub prompt_cache: Option<PromptCache>,
}

/// A folder of KV states of opening prompts, shared by the processes that use the same
/// model file with the same settings, bounded in size (the least recently used go
/// first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptCache {
    /// The folder (created when needed).
    pub dir: std::path::PathBuf,
    /// The most bytes the folder's states may take.
    pub max_bytes: u64,
    /// The most openings one session keeps: a session keeps the state of a prompt no
    /// kept state covers to half, up to this many times (default
    /// [`PromptCache::DEFAULT_OPENINGS`], a one-shot run's ways of answering; a server
    /// keeps one per distinct opening its clients send, such as each system prompt
    /// beyond what its slots hold).
    pub openings: usize,
}

impl PromptCache {
    /// The default bound: 256 MiB (about 27,000 tokens of a 0.5B model's KV state).
    pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
    /// The default of [`PromptCache::openings`]: a strategy's written and computed
    /// answers open differently, and a plan or a judge once more.
    pub const DEFAULT_OPENINGS: usize = 4;

    /// A cache in `dir` with the default bounds.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: Self::DEFAULT_MAX_BYTES,
            openings: Self::DEFAULT_OPENINGS,
        }
    }
}

impl SessionOptions {
    /// The default context window when none is given.
    pub const DEFAULT_CONTEXT: u32 = 8192;
    /// Branches a session can hold unless set otherwise (the KV cache is one pool of
    /// cells, so more sequences cost no memory).
    pub const DEFAULT_SEQUENCES: u32 = 8;
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            context_size: None,
            threads: None,
            batch_size: 512,
            max_sequences: Self::DEFAULT_SEQUENCES,
            prompt_cache: None,
        }
    }
}

/// The number of physical CPU cores: the thread count at which llama.cpp decodes
/// fastest on a CPU (hyper-threads only add contention).
pub fn physical_cores() -> usize {
    num_cpus::get_physical().max(1)
}

/// What a backend can do beyond answering a chat, so callers can choose a path or fall
/// back ([`LanguageModel::capabilities`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Tool calls are constrained to their schemas while decoding (else they are
    /// parsed and validated afterwards).
    pub grammar: bool,
    /// Several live branches in one session ([`ModelSession::fork`]), decoded in one
    /// batch ([`ModelSession::respond_batch`]); the most branches at once.
    pub max_branches: u32,
    /// Per-token log-probabilities of generated tokens.
    pub logprobs: bool,
    /// Teacher-forced scoring of a given continuation ([`ModelSession::score`]).
    pub scoring: bool,
    /// Continuing raw text ([`ModelSession::generate`]), not only chats.
    pub raw_prompts: bool,
}

impl Capabilities {
    /// A backend that answers chats and nothing more: no grammar, one branch, no
    /// log-probabilities, no scoring, no raw text.
    pub const CHAT_ONLY: Capabilities = Capabilities {
        grammar: false,
        max_branches: 1,
        logprobs: false,
        scoring: false,
        raw_prompts: false,
    };

    /// Whether the session can hold more than one branch.
    pub fn forks(&self) -> bool {
        self.max_branches > 1
    }
}

/// A branch of a session: one live sequence of the KV cache. Branches forked from one
/// another share their common prefix; [`BranchId::MAIN`] always exists.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
pub struct BranchId(pub u32);

impl BranchId {
    /// The branch every session starts with.
    pub const MAIN: BranchId = BranchId(0);
}

impl std::fmt::Display for BranchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a session's KV cache holds, per branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvUsage {
    /// The context window (cells) of the session.
    pub context: u32,
    /// Distinct cells in use: a prefix shared by forked branches counts once.
    pub cells: usize,
    /// The live branches, in id order.
    pub branches: Vec<BranchUsage>,
}

/// One branch in a [`KvUsage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BranchUsage {
    /// The branch.
    pub id: BranchId,
    /// Tokens the branch holds (its whole sequence).
    pub tokens: usize,
    /// Of those, tokens whose cells it shares with another live branch.
    pub shared: usize,
}

/// A language model that can open sessions.
pub trait LanguageModel: Send + Sync {
    /// What is known about the model.
    fn info(&self) -> &ModelInfo;

    /// What its sessions can do.
    fn capabilities(&self) -> Capabilities;

    /// Opens a session: a conversation state that keeps what it has evaluated.
    fn open_session(&self, options: &SessionOptions)
        -> Result<Box<dyn ModelSession>, RuntimeError>;
}

fn unsupported<T>(what: &str) -> Result<T, RuntimeError> {
    Err(RuntimeError::Unsupported(what.to_string()))
}

/// A conversation state on a model: messages in, a stream of text, tool calls and
/// (when asked) log-probabilities out. A session remembers what it has evaluated, so a
/// conversation that extends an earlier one only costs the new part.
///
/// Requests on one session run one after another, in the order they were made. The
/// optional parts (branches, scoring, raw text) answer
/// [`RuntimeError::Unsupported`] on backends whose [`Capabilities`] lack them.
pub trait ModelSession: Send {
    /// What this session can do.
    fn capabilities(&self) -> Capabilities;

    /// Starts the assistant's reply to `chat` on its branch: [`GenerationEvent`]s
    /// with prose as text, calls parsed (and schema-checked) as
    /// [`GenerationEvent::Call`]s.
    ///
    /// [`GenerationEvent`]: crate::GenerationEvent
    /// [`GenerationEvent::Call`]: crate::GenerationEvent::Call
    fn respond(&mut self, chat: &Chat, request: &ChatRequest) -> Result<Generation, RuntimeError>;

    /// Replies on several branches at once (each chat names its branch; one reply
    /// per branch), decoded together in one batch per step where the backend can.
    /// The default answers one at a time.
    fn respond_batch(
        &mut self,
        jobs: &[(Chat, ChatRequest)],
    ) -> Result<Vec<Generation>, RuntimeError> {
        jobs.iter()
            .map(|(chat, request)| self.respond(chat, request))
            .collect()
    }

    /// Continues raw text (special tokens allowed) on the main branch.
    fn generate(
        &mut self,
        prompt: &str,
        request: &GenerateRequest,
    ) -> Result<Generation, RuntimeError> {
        let _ = (prompt, request);
        unsupported("raw text generation")
    }

    /// The log-probability of `continuation` right after `context` (raw text),
    /// teacher-forced, with `top` alternatives per token.
    fn score(
        &mut self,
        context: &str,
        continuation: &str,
        top: u32,
    ) -> Result<Score, RuntimeError> {
        let _ = (context, continuation, top);
        unsupported("scoring")
    }

    /// Forks `from` into `n` new branches that share its tokens; their ids.
    fn fork(&mut self, from: BranchId, n: usize) -> Result<Vec<BranchId>, RuntimeError> {
        let _ = (from, n);
        unsupported("branches")
    }

    /// Drops a branch and the cells only it used ([`BranchId::MAIN`] is emptied, not
    /// dropped).
    fn drop_branch(&mut self, branch: BranchId) -> Result<(), RuntimeError> {
        let _ = branch;
        unsupported("branches")
    }

    /// What the KV cache holds, per branch.
    fn kv_usage(&mut self) -> Result<KvUsage, RuntimeError> {
        unsupported("KV-cache accounting")
    }

    /// Another handle on this session: the same KV cache and branches. Requests from
    /// every handle run on the one backend; on the embedded one, replies on different
    /// branches are decoded together (several agents sharing one model, each on its
    /// own branch — see [`OnBranch`]).
    fn share(&self) -> Result<Box<dyn ModelSession>, RuntimeError> {
        unsupported("shared sessions")
    }

    /// Forgets everything evaluated so far, on every branch.
    fn reset(&mut self) -> Result<(), RuntimeError>;

    /// The context window in tokens.
    fn context_size(&self) -> u32;
}

/// A session handle whose chats all go to one branch: an agent (or anything that
/// talks to [`BranchId::MAIN`]) runs on a forked branch unchanged.
pub struct OnBranch {
    inner: Box<dyn ModelSession>,
    branch: BranchId,
}

impl OnBranch {
    /// `inner`'s chats, on `branch`.
    pub fn new(inner: Box<dyn ModelSession>, branch: BranchId) -> Self {
        Self { inner, branch }
    }

    /// The branch this handle talks to.
    pub fn branch(&self) -> BranchId {
        self.branch
    }

    fn moved(&self, chat: &Chat) -> Chat {
        Chat {
            branch: self.branch,
            ..chat.clone()
        }
    }
}

impl ModelSession for OnBranch {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn respond(&mut self, chat: &Chat, request: &ChatRequest) -> Result<Generation, RuntimeError> {
        let chat = self.moved(chat);
        self.inner.respond(&chat, request)
    }

    fn respond_batch(
        &mut self,
        jobs: &[(Chat, ChatRequest)],
    ) -> Result<Vec<Generation>, RuntimeError> {
        let jobs: Vec<(Chat, ChatRequest)> = jobs
            .iter()
            .map(|(chat, request)| (self.moved(chat), request.clone()))
            .collect();
        self.inner.respond_batch(&jobs)
    }

    fn fork(&mut self, from: BranchId, n: usize) -> Result<Vec<BranchId>, RuntimeError> {
        self.inner.fork(from, n)
    }

    fn drop_branch(&mut self, branch: BranchId) -> Result<(), RuntimeError> {
        self.inner.drop_branch(branch)
    }

    fn kv_usage(&mut self) -> Result<KvUsage, RuntimeError> {
        self.inner.kv_usage()
    }

    fn share(&self) -> Result<Box<dyn ModelSession>, RuntimeError> {
        Ok(Box::new(OnBranch::new(self.inner.share()?, self.branch)))
    }

    /// Empties this handle's branch (the rest of the session is left alone).
    fn reset(&mut self) -> Result<(), RuntimeError> {
        if self.branch == BranchId::MAIN {
            self.inner.reset()
        } else {
            self.inner.drop_branch(self.branch)?;
            let forked = self.inner.fork(BranchId::MAIN, 1)?;
            self.branch = forked.first().copied().unwrap_or(self.branch);
            Ok(())
        }
    }

    fn context_size(&self) -> u32 {
        self.inner.context_size()
    }
}
