//! The seam a server stands on: a session whose branches the caller manages itself
//! (one per slot, forks for extra choices), whose prompts are rendered and tokenized
//! once ([`PreparedPrompt`]) and whose branches report what they hold.
//!
//! [`ModelSession`](crate::ModelSession) is the agent's view: a conversation names its
//! branch and the backend renders it on every reply. A server needs more and less: it
//! renders a request once to choose a slot and check the context window, then hands
//! the same tokens to the backend; it picks the branch per call; and it asks which
//! tokens a branch holds without waiting for the running batch. The embedded llama.cpp
//! session implements both traits; `jielong-serve` is written against this one, so its
//! tests run on a scripted backend as well as on the real model.

use crate::error::RuntimeError;
use crate::generate::{GenerateRequest, Generation, ReplyFormat};
use crate::model::{BranchId, KvUsage, ModelInfo};
use crate::respond::{Chat, ChatRequest};
use crate::tool_format::ToolCallFormat;
use crate::ToolSpec;

/// A prompt ready for a backend: its text and its tokens, made once per request by
/// [`BranchedSession::prepare`] or [`BranchedSession::prepare_text`] and handed back
/// to [`BranchedSession::respond_on`] / [`BranchedSession::generate_on`] as it is.
///
/// Invariant: `tokens` is the backend's tokenization of `text` (special tokens
/// parsed), never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPrompt {
    /// The prompt as text.
    pub text: String,
    /// Its tokens, as the backend evaluates them.
    pub tokens: Vec<i32>,
}

impl PreparedPrompt {
    /// The prompt's length in tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the prompt has no tokens (a prepared prompt never has: see the
    /// invariant).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Checks the prompt against a context window of `n_ctx` tokens; the tokens left
    /// for the reply.
    pub fn room(&self, n_ctx: u32) -> Result<usize, RuntimeError> {
        if self.tokens.is_empty() {
            return Err(RuntimeError::EmptyPrompt);
        }
        if self.tokens.len() >= n_ctx as usize {
            return Err(RuntimeError::PromptTooLong {
                prompt_tokens: self.tokens.len(),
                n_ctx,
            });
        }
        Ok(n_ctx as usize - self.tokens.len())
    }
}

/// One reply of a [`BranchedSession::respond_on`] batch: `chat` answered on `branch`
/// from `prompt`, which [`BranchedSession::prepare`] made from that chat.
#[derive(Debug, Clone, Copy)]
pub struct BranchReply<'a> {
    /// Where the reply is generated (the branch's common prefix with the prompt is
    /// reused).
    pub branch: BranchId,
    /// The chat's prompt, prepared once.
    pub prompt: &'a PreparedPrompt,
    /// The chat (its tools decide which calls are parsed and checked).
    pub chat: &'a Chat,
    /// How to reply.
    pub request: &'a ChatRequest,
}

/// Why a schema cannot be held to by the backend's constrained decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unenforceable {
    /// Tool `index` (named `name`) has parameters the backend cannot constrain.
    #[error("the parameters of tool `{name}` cannot be enforced: {reason}")]
    Tool {
        /// The tool's place in the list checked.
        index: usize,
        /// Its name.
        name: String,
        /// The backend's reason.
        reason: String,
    },
    /// The reply format's schema cannot be constrained.
    #[error("the reply format's JSON Schema cannot be enforced: {reason}")]
    Format {
        /// The backend's reason.
        reason: String,
    },
}

/// A session with branches the caller manages, prompts prepared once, and branch
/// contents readable without waiting (see the module docs).
///
/// Contract:
/// - Calls may come from several threads; generations on different branches run
///   together where the backend can (one decode batch per step).
/// - [`BranchId::MAIN`] exists from the start; other branches come from
///   [`fork`](Self::fork) and live until [`drop_branch`](Self::drop_branch).
/// - [`holds`](Self::holds) never waits for a running generation: it answers what the
///   branch held when its last generation ended (published before that generation's
///   final event), or after its last fork or drop.
/// - The blocking calls (`fork`, `drop_branch`, `kv_usage`) may wait for the running
///   batch: call them from a blocking thread in async code.
pub trait BranchedSession: Send + Sync {
    /// The model behind the session.
    fn info(&self) -> ModelInfo;

    /// The context window in tokens (shared by all branches).
    fn context_size(&self) -> u32;

    /// The call syntax replies are parsed in.
    fn call_format(&self) -> ToolCallFormat;

    /// Renders `chat` for the assistant's reply and tokenizes it.
    fn prepare(&self, chat: &Chat) -> Result<PreparedPrompt, RuntimeError>;

    /// Tokenizes raw text (special tokens parsed).
    fn prepare_text(&self, text: &str) -> Result<PreparedPrompt, RuntimeError>;

    /// Checks that `tools` and `format` can be held to before a request starts, so a
    /// schema the backend cannot constrain is refused up front. The default accepts
    /// everything (a backend that only parses and validates calls).
    fn check_schemas(
        &self,
        tools: &[ToolSpec],
        format: Option<&ReplyFormat>,
    ) -> Result<(), Unenforceable> {
        let _ = (tools, format);
        Ok(())
    }

    /// Replies on several branches at once (each branch at most once), decoded
    /// together: one [`Generation`] per job, in order, with prose as text and calls
    /// parsed and schema-checked.
    fn respond_on(&self, jobs: &[BranchReply<'_>]) -> Result<Vec<Generation>, RuntimeError>;

    /// Continues a raw prompt on `branch`.
    fn generate_on(
        &self,
        branch: BranchId,
        prompt: &PreparedPrompt,
        request: &GenerateRequest,
    ) -> Result<Generation, RuntimeError>;

    /// Forks `from` into `n` new branches holding the same tokens; their ids.
    fn fork(&self, from: BranchId, n: usize) -> Result<Vec<BranchId>, RuntimeError>;

    /// Drops `branch` and what only it held ([`BranchId::MAIN`] is emptied).
    fn drop_branch(&self, branch: BranchId) -> Result<(), RuntimeError>;

    /// What the KV cache holds, per branch.
    fn kv_usage(&self) -> Result<KvUsage, RuntimeError>;

    /// The tokens `branch` holds, as last published (see the contract); empty for a
    /// branch that does not exist.
    fn holds(&self, branch: BranchId) -> Vec<i32>;
}

/// Length of the longest common prefix of two token sequences: what a branch holding
/// `a` reuses of a prompt `b`.
pub fn common_prefix_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix() {
        assert_eq!(common_prefix_len(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix_len::<i32>(&[], &[1]), 0);
        assert_eq!(common_prefix_len(&[1, 2], &[1, 2, 3]), 2);
    }

    #[test]
    fn room_is_what_the_window_leaves() {
        let prompt = PreparedPrompt {
            text: "abc".into(),
            tokens: vec![1, 2, 3],
        };
        assert_eq!(prompt.room(10).ok(), Some(7));
        assert!(matches!(
            prompt.room(3),
            Err(RuntimeError::PromptTooLong {
                prompt_tokens: 3,
                n_ctx: 3
            })
        ));
        let empty = PreparedPrompt {
            text: String::new(),
            tokens: Vec::new(),
        };
        assert!(matches!(empty.room(10), Err(RuntimeError::EmptyPrompt)));
    }
}
