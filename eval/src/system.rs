//! [`System`]: what is evaluated (a plain model, an agent, `ask`, a workflow), and
//! the [`Outcome`] it reports for one example.

use std::ops::{Add, AddAssign};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dataset::Example;

/// Token counts of one example (or, summed, of a run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tokens {
    /// Prompt tokens (`cached + evaluated`).
    pub prompt: usize,
    /// Prompt tokens found in the KV cache.
    pub cached: usize,
    /// Prompt tokens evaluated.
    pub evaluated: usize,
    /// Tokens generated.
    pub generated: usize,
}

impl AddAssign for Tokens {
    fn add_assign(&mut self, other: Tokens) {
        self.prompt += other.prompt;
        self.cached += other.cached;
        self.evaluated += other.evaluated;
        self.generated += other.generated;
    }
}

impl Add for Tokens {
    type Output = Tokens;

    fn add(mut self, other: Tokens) -> Tokens {
        self += other;
        self
    }
}

/// What a system did with one example. A failure is an `error` here, never a
/// panic: the evaluation records it and goes on.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// The final answer, `None` when the system gave none.
    pub answer: Option<String>,
    /// What went wrong, if anything (one line).
    #[serde(default)]
    pub error: Option<String>,
    /// Why it stopped: `answered`, `max_steps`, `error`, …
    pub stop: String,
    /// Tokens used.
    #[serde(default)]
    pub tokens: Tokens,
    /// Tools called, by name, in order.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Steps taken (model calls for an agent; 1 for a plain model).
    #[serde(default)]
    pub steps: usize,
    /// Wall-clock seconds. A system may set it (e.g. to exclude queueing); when it is
    /// left at 0, [`Eval`](crate::Eval) fills in the time the example's future took.
    #[serde(default)]
    pub seconds: f64,
    /// Anything else worth keeping, e.g. the trace.
    #[serde(default)]
    pub detail: Value,
}

impl Outcome {
    /// An outcome with `answer`, stopped as `answered`, one step.
    pub fn answered(answer: impl Into<String>) -> Outcome {
        Outcome {
            answer: Some(answer.into()),
            stop: "answered".into(),
            steps: 1,
            ..Outcome::default()
        }
    }

    /// An outcome without an answer because of `error`, stopped as `error`.
    pub fn failed(error: impl Into<String>) -> Outcome {
        Outcome {
            error: Some(error.into()),
            stop: "error".into(),
            ..Outcome::default()
        }
    }
}

/// Something that answers examples. Implementations live with whatever they wrap
/// (the CLI implements a plain model, an agent, `ask` and a workflow); this crate
/// knows none of them.
pub trait System: Send + Sync {
    /// The name reports and caches carry, e.g. `agent:qwen2.5-1.5b`.
    fn name(&self) -> String;

    /// What, beside the name, makes two runs comparable (model file, sampling,
    /// prompts, tools, budgets). A cache is reused only by a system with the same
    /// name and configuration. Default: `null`.
    fn config(&self) -> Value {
        Value::Null
    }

    /// Answers one example. Failures go into [`Outcome::error`].
    fn answer<'a>(&'a self, example: &'a Example) -> BoxFuture<'a, Outcome>;
}
