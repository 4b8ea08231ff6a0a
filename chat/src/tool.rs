//! Tools: typed Rust functions the model can call.
//!
//! A [`Tool`] has a name, a description, an argument type whose JSON Schema (from
//! `schemars`) is what the model sees, and an async `call`. The agent loop works with
//! the object-safe [`DynTool`], which every `Tool` implements, and with tools defined at
//! run time from a JSON Schema ([`SchemaTool`], for YAML workflows and MCP).
//!
//! ```
//! use jielong_chat::tool::{Tool, ToolError, ToolRegistry};
//! use schemars::JsonSchema;
//! use serde::Deserialize;
//!
//! /// Adds two integers.
//! struct Add;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct AddArgs {
//!     /// The first addend.
//!     a: i64,
//!     /// The second addend.
//!     b: i64,
//! }
//!
//! impl Tool for Add {
//!     type Args = AddArgs;
//!     type Output = i64;
//!     fn name(&self) -> &str { "add" }
//!     fn description(&self) -> &str { "Add two integers." }
//!     async fn call(&self, args: AddArgs) -> Result<i64, ToolError> {
//!         args.a.checked_add(args.b).ok_or_else(|| ToolError::failed("overflow", false))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut tools = ToolRegistry::new();
//! tools.register(Add).unwrap();
//! let out = tools.call("add", serde_json::json!({"a": 2, "b": 40})).await.unwrap();
//! assert_eq!(out, serde_json::json!(42));
//! # });
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::{ToolCall, ToolSpec};

/// How a tool call failed. Fed back to the model as the tool's result, so each
/// message says what went wrong in words a model can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolError {
    /// The arguments do not match the tool's schema.
    #[error("invalid arguments: {detail}")]
    InvalidArguments {
        /// What is wrong, with the path of the offending field.
        detail: String,
    },
    /// The call took longer than its time limit.
    #[error("timed out after {seconds:.1} s")]
    Timeout {
        /// The limit that was exceeded.
        seconds: f64,
    },
    /// A policy forbids this call.
    #[error("permission denied: {detail}")]
    PermissionDenied {
        /// Which rule refused it.
        detail: String,
    },
    /// What the call asked for does not exist.
    #[error("not found: {detail}")]
    NotFound {
        /// What was missing.
        detail: String,
    },
    /// The tool ran and failed.
    #[error("failed: {message}")]
    Failed {
        /// What happened.
        message: String,
        /// Whether calling again (unchanged) may succeed.
        retryable: bool,
    },
    /// No tool has that name.
    #[error("no tool named `{name}`; available: {}", available.join(", "))]
    UnknownTool {
        /// The name the model used.
        name: String,
        /// The names it could have used.
        available: Vec<String>,
    },
}

impl ToolError {
    /// An [`InvalidArguments`](ToolError::InvalidArguments) error.
    pub fn invalid_arguments(detail: impl Into<String>) -> Self {
        Self::InvalidArguments {
            detail: detail.into(),
        }
    }

    /// A [`Failed`](ToolError::Failed) error.
    pub fn failed(message: impl Into<String>, retryable: bool) -> Self {
        Self::Failed {
            message: message.into(),
            retryable,
        }
    }

    /// A [`PermissionDenied`](ToolError::PermissionDenied) error.
    pub fn permission_denied(detail: impl Into<String>) -> Self {
        Self::PermissionDenied {
            detail: detail.into(),
        }
    }

    /// A [`NotFound`](ToolError::NotFound) error.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound {
            detail: detail.into(),
        }
    }

    /// Whether repeating the same call unchanged can help (a timeout or a transient
    /// failure). Invalid arguments, unknown tools, refusals and missing things need a
    /// different call.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::Failed { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// A short name of the kind of error (`invalid_arguments`, `timeout`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidArguments { .. } => "invalid_arguments",
            Self::Timeout { .. } => "timeout",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::NotFound { .. } => "not_found",
            Self::Failed { .. } => "failed",
            Self::UnknownTool { .. } => "unknown_tool",
        }
    }
}

/// What a tool is to an agent beyond its name and schema: the agent finds the tool it
/// sends programs to by this, not by a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ToolKind {
    /// Called with JSON arguments like any tool; for a subject of its own, so a request
    /// that never names that subject is no call for it ([`crate::fit::tool_fits`]).
    #[default]
    Plain,
    /// Called with JSON arguments, on any subject (a web search, a page fetcher, a
    /// search over the user's documents): fits every request.
    General,
    /// Runs a program: the agent's code actions (fenced code it writes) go to it as
    /// the string argument `argument`.
    Interpreter {
        /// The language, as a code fence names it (`python`).
        language: &'static str,
        /// The argument the program goes in (`code`).
        argument: &'static str,
    },
}

/// The tool of a registry that runs programs ([`ToolRegistry::interpreter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// Its name, as the model calls it.
    pub name: String,
    /// The language it runs.
    pub language: &'static str,
    /// The argument a program goes in.
    pub argument: &'static str,
}

impl Interpreter {
    /// The call arguments that run `code`.
    pub fn arguments(&self, code: &str) -> Value {
        serde_json::json!({ self.argument: code })
    }
}

/// A tool with typed arguments and output.
///
/// The JSON Schema of `Args` (doc comments become descriptions) is what the model sees
/// and what constrained decoding enforces; `Output` is serialized to JSON for the model
/// (a `String` output is passed as plain text).
pub trait Tool: Send + Sync + 'static {
    /// The arguments, deserialized from the model's JSON.
    type Args: DeserializeOwned + JsonSchema + Send;
    /// The result.
    type Output: Serialize + Send;

    /// The name the model calls it by (`[a-zA-Z0-9_-]+`).
    fn name(&self) -> &str;

    /// What it does and when to use it, for the model.
    fn description(&self) -> &str;

    /// Runs the tool.
    fn call(
        &self,
        args: Self::Args,
    ) -> impl Future<Output = Result<Self::Output, ToolError>> + Send;

    /// The longest a call may take (`None`: the registry's default).
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// What the tool is (default: [`ToolKind::Plain`]).
    fn kind(&self) -> ToolKind {
        ToolKind::Plain
    }

    /// A copy of the tool with state of its own, for independent runs that must not
    /// see each other's state (the samples of self-consistency each get a Python
    /// session of their own). `None` (the default): the tool is stateless and shared.
    fn isolated(&self) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }

    /// The call an agent makes itself with the task before the model's first step
    /// (when the agent's `Prefetch` setting allows): a search tool
    /// searches the task, so a small model that would answer from memory starts from
    /// the passages. The value is the call's JSON arguments (they must fit `Args`).
    /// `None` (the default): the model decides when to call.
    fn prefetch(&self, task: &str) -> Option<Value> {
        let _ = task;
        None
    }
}

/// The object-safe form of a tool, with JSON in and out. Every [`Tool`] is one.
pub trait DynTool: Send + Sync {
    /// Name, description and argument schema.
    fn spec(&self) -> ToolSpec;

    /// Runs the tool on JSON arguments; arguments that do not fit the schema give
    /// [`ToolError::InvalidArguments`].
    fn call_json(&self, args: Value) -> BoxFuture<'_, Result<Value, ToolError>>;

    /// The longest a call may take (`None`: the registry's default).
    fn timeout(&self) -> Option<Duration>;

    /// What the tool is (see [`Tool::kind`]).
    fn kind(&self) -> ToolKind {
        ToolKind::Plain
    }

    /// A copy with state of its own (see [`Tool::isolated`]); `None`: share this one.
    fn isolated_dyn(&self) -> Option<Arc<dyn DynTool>> {
        None
    }

    /// The arguments of the call to make with `task` before the first step (see
    /// [`Tool::prefetch`]); `None`: none.
    fn prefetch_json(&self, task: &str) -> Option<Value> {
        let _ = task;
        None
    }
}

impl<T: Tool> DynTool for T {
    fn isolated_dyn(&self) -> Option<Arc<dyn DynTool>> {
        self.isolated()
            .map(|tool| Arc::new(tool) as Arc<dyn DynTool>)
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name().to_string(),
            description: self.description().to_string(),
            parameters: schema_of::<T::Args>(),
        }
    }

    fn call_json(&self, args: Value) -> BoxFuture<'_, Result<Value, ToolError>> {
        Box::pin(async move {
            let args: T::Args = serde_path_to_error::deserialize(args).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if path == "." {
                    ToolError::invalid_arguments(inner.to_string())
                } else {
                    ToolError::invalid_arguments(format!("at `{path}`: {inner}"))
                }
            })?;
            let output = self.call(args).await?;
            serde_json::to_value(output)
                .map_err(|e| ToolError::failed(format!("cannot serialize the result: {e}"), false))
        })
    }

    fn timeout(&self) -> Option<Duration> {
        Tool::timeout(self)
    }

    fn kind(&self) -> ToolKind {
        Tool::kind(self)
    }

    fn prefetch_json(&self, task: &str) -> Option<Value> {
        self.prefetch(task)
    }
}

/// The JSON Schema of a type, as models and grammars want it: subschemas inlined, no
/// `$schema` or `title` noise.
pub fn schema_of<T: JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    if let Value::Object(map) = &mut schema {
        map.remove("$schema");
        map.remove("title");
    }
    schema
}

type Handler = dyn Fn(Value) -> BoxFuture<'static, Result<Value, ToolError>> + Send + Sync;

/// A tool defined at run time by a JSON Schema and a handler (YAML workflows, MCP).
/// Arguments are validated against the schema before the handler sees them.
pub struct SchemaTool {
    spec: ToolSpec,
    validator: jsonschema::Validator,
    handler: Arc<Handler>,
    timeout: Option<Duration>,
    kind: ToolKind,
}

impl std::fmt::Debug for SchemaTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaTool")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl SchemaTool {
    /// A tool named `name` whose arguments follow `schema`; fails if the schema itself
    /// is not a valid JSON Schema.
    pub fn new<F, Fut>(
        name: impl Into<String>,
        description: impl Into<String>,
        schema: Value,
        handler: F,
    ) -> Result<Self, ToolDefinitionError>
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ToolError>> + Send + 'static,
    {
        let name = name.into();
        let validator =
            jsonschema::validator_for(&schema).map_err(|e| ToolDefinitionError::BadSchema {
                tool: name.clone(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            spec: ToolSpec {
                name,
                description: description.into(),
                parameters: schema,
            },
            validator,
            handler: Arc::new(move |args| Box::pin(handler(args))),
            timeout: None,
            kind: ToolKind::Plain,
        })
    }

    /// Sets the tool's time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Says what the tool is (an interpreter, say).
    pub fn with_kind(mut self, kind: ToolKind) -> Self {
        self.kind = kind;
        self
    }
}

impl DynTool for SchemaTool {
    fn spec(&self) -> ToolSpec {
        self.spec.clone()
    }

    fn call_json(&self, args: Value) -> BoxFuture<'_, Result<Value, ToolError>> {
        let problems: Vec<String> = self
            .validator
            .iter_errors(&args)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("at `{at}`: {e}")
                }
            })
            .collect();
        if !problems.is_empty() {
            return Box::pin(std::future::ready(Err(ToolError::invalid_arguments(
                problems.join("; "),
            ))));
        }
        (self.handler)(args)
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn kind(&self) -> ToolKind {
        self.kind
    }
}

/// A tool could not be defined or registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolDefinitionError {
    /// The name is empty or has characters other than letters, digits, `_` and `-`.
    #[error("invalid tool name `{0}`: use letters, digits, `_` and `-` only")]
    BadName(String),
    /// Two tools have the same name.
    #[error("a tool named `{0}` is already registered")]
    Duplicate(String),
    /// The argument schema is not a valid JSON Schema.
    #[error("the argument schema of `{tool}` is invalid: {detail}")]
    BadSchema {
        /// The tool.
        tool: String,
        /// What is wrong.
        detail: String,
    },
}

/// The tools an agent may call, by name.
#[derive(Clone)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Arc<dyn DynTool>>,
    default_timeout: Duration,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolRegistry")
            .field("tools", &self.names())
            .field("default_timeout", &self.default_timeout)
            .finish()
    }
}

impl Default for ToolRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl ToolRegistry {
    /// The time limit of a call when the tool sets none.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// No tools.
    pub fn new() -> Self {
        Self {
            tools: BTreeMap::new(),
            default_timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Sets the time limit for tools that set none.
    pub fn with_default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// The same tools, each stateful one replaced by a copy with state of its own
    /// ([`Tool::isolated`]): for runs that must not share, say, a Python session.
    pub fn isolated(&self) -> ToolRegistry {
        Self {
            tools: self
                .tools
                .iter()
                .map(|(name, tool)| {
                    (
                        name.clone(),
                        tool.isolated_dyn().unwrap_or_else(|| tool.clone()),
                    )
                })
                .collect(),
            default_timeout: self.default_timeout,
        }
    }

    /// Adds a tool: a typed [`Tool`] or any other [`DynTool`] such as a [`SchemaTool`].
    pub fn register<T: DynTool + 'static>(&mut self, tool: T) -> Result<(), ToolDefinitionError> {
        self.register_dyn(Arc::new(tool))
    }

    /// Adds a tool in its object-safe form.
    pub fn register_dyn(&mut self, tool: Arc<dyn DynTool>) -> Result<(), ToolDefinitionError> {
        let name = tool.spec().name;
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(ToolDefinitionError::BadName(name));
        }
        if self.tools.contains_key(&name) {
            return Err(ToolDefinitionError::Duplicate(name));
        }
        self.tools.insert(name, tool);
        Ok(())
    }

    /// The calls the tools want made with `task` before the first step
    /// ([`Tool::prefetch`]), in name order.
    pub fn prefetch_calls(&self, task: &str) -> Vec<ToolCall> {
        self.tools
            .iter()
            .filter_map(|(name, tool)| {
                let arguments = tool.prefetch_json(task)?;
                Some(ToolCall::new(name.clone(), arguments))
            })
            .collect()
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn DynTool>> {
        self.tools.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tools.keys().cloned().collect()
    }

    /// Every tool's spec, sorted by name (what the chat template lists).
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.values().map(|t| t.spec()).collect()
    }

    /// The first tool (by name) that runs programs, with its language and argument.
    pub fn interpreter(&self) -> Option<Interpreter> {
        self.tools
            .iter()
            .find_map(|(name, tool)| match tool.kind() {
                ToolKind::Interpreter { language, argument } => Some(Interpreter {
                    name: name.clone(),
                    language,
                    argument,
                }),
                ToolKind::Plain | ToolKind::General => None,
            })
    }

    /// Whether there are no tools.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// Calls the tool `name` with JSON arguments, within its time limit.
    pub async fn call(&self, name: &str, args: Value) -> Result<Value, ToolError> {
        let tool = self.tools.get(name).ok_or_else(|| ToolError::UnknownTool {
            name: name.to_string(),
            available: self.names(),
        })?;
        let limit = tool.timeout().unwrap_or(self.default_timeout);
        match tokio::time::timeout(limit, tool.call_json(args)).await {
            Ok(result) => result,
            Err(_) => Err(ToolError::Timeout {
                seconds: limit.as_secs_f64(),
            }),
        }
    }
}
