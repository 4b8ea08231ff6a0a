//! The built-in tools as [`Tool`]s for the agent: `python`, `web_search`, `fetch_url`.
//!
//! [`builtin_registry`] builds a [`ToolRegistry`] from tool names, the way the CLI's
//! `--tools python,web_search` and YAML workflows ask for them.

use std::path::PathBuf;
use std::sync::Arc;

use jielong_chat::tool::{Tool, ToolError, ToolKind, ToolRegistry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use jielong_retrieval::Index;

use crate::python::{PythonError, PythonSandbox, PythonSession};
use crate::rag::{RagSearchTool, DEFAULT_PASSAGES, DEFAULT_PASSAGE_CHARS};
use crate::web::{FetchConfig, Fetcher, SearchBackend, SearchQuery, WebError, WebSearchConfig};

/// The names [`builtin_registry`] knows.
pub const BUILTIN_TOOLS: [&str; 4] = ["python", "web_search", "fetch_url", "rag_search"];

/// Why the built-in tools could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BuiltinError {
    /// A name that is not a built-in tool.
    #[error("unknown tool `{0}`; built-in tools: python, web_search, fetch_url, rag_search")]
    Unknown(String),
    /// A tool's configuration is missing or invalid.
    #[error("cannot set up `{tool}`: {detail}")]
    Setup {
        /// The tool.
        tool: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Registering failed (a duplicate name).
    #[error(transparent)]
    Definition(#[from] jielong_chat::tool::ToolDefinitionError),
}

/// How the built-in tools are set up. [`Default`] gives each tool its default limits
/// and takes the `web_search` backend from the environment.
#[derive(Debug, Clone, Default)]
pub struct BuiltinConfig {
    /// The sandbox and limits of `python`.
    pub python: PythonSandbox,
    /// The backend of `web_search`; `None` reads it from the environment
    /// (`JIELONG_SEARXNG_URL`, or `BRAVE_SEARCH_API_KEY`).
    pub web_search: Option<WebSearchConfig>,
    /// Limits and the address policy of `fetch_url`.
    pub fetch_url: FetchConfig,
    /// The index `rag_search` searches (required for it).
    pub rag_index: Option<PathBuf>,
    /// Passages per `rag_search` call (default [`DEFAULT_PASSAGES`]).
    pub rag_passages: Option<usize>,
}

/// A registry with the named built-in tools, configured from the environment
/// (`web_search`: `JIELONG_SEARXNG_URL` or `BRAVE_SEARCH_API_KEY`).
pub fn builtin_registry(names: &[String]) -> Result<ToolRegistry, BuiltinError> {
    builtin_registry_with(names, &BuiltinConfig::default())
}

/// A registry with the named built-in tools, set up as `config` says.
pub fn builtin_registry_with(
    names: &[String],
    config: &BuiltinConfig,
) -> Result<ToolRegistry, BuiltinError> {
    let mut registry = ToolRegistry::new();
    for name in names {
        match name.as_str() {
            "python" => registry.register(PythonTool::new(config.python.clone()))?,
            "web_search" => {
                let configured = match &config.web_search {
                    Some(config) => Ok(config.clone()),
                    None => WebSearchConfig::from_env(),
                };
                let backend = configured.and_then(|config| config.build()).map_err(|e| {
                    BuiltinError::Setup {
                        tool: "web_search",
                        detail: e.to_string(),
                    }
                })?;
                registry.register(WebSearchTool::new(backend))?
            }
            "fetch_url" => {
                let fetcher =
                    Fetcher::new(config.fetch_url.clone()).map_err(|e| BuiltinError::Setup {
                        tool: "fetch_url",
                        detail: e.to_string(),
                    })?;
                registry.register(FetchUrlTool::new(fetcher))?
            }
            "rag_search" => {
                let dir = config
                    .rag_index
                    .as_ref()
                    .ok_or_else(|| BuiltinError::Setup {
                        tool: "rag_search",
                        detail: "no index given (the CLI's --index DIR)".into(),
                    })?;
                let index = Index::open(dir).map_err(|e| BuiltinError::Setup {
                    tool: "rag_search",
                    detail: e.to_string(),
                })?;
                registry.register(RagSearchTool::new(
                    Arc::new(index),
                    config.rag_passages.unwrap_or(DEFAULT_PASSAGES),
                    DEFAULT_PASSAGE_CHARS,
                ))?
            }
            other => return Err(BuiltinError::Unknown(other.to_string())),
        }
    }
    Ok(registry)
}

/// `python`: runs code in a sandboxed, persistent Python worker (one per tool value:
/// variables survive between calls, like a notebook). The worker starts on first use.
pub struct PythonTool {
    sandbox: PythonSandbox,
    session: Arc<Mutex<Option<PythonSession>>>,
}

impl PythonTool {
    /// A tool running code under `sandbox`'s limits.
    pub fn new(sandbox: PythonSandbox) -> Self {
        Self {
            sandbox,
            session: Arc::new(Mutex::new(None)),
        }
    }
}

/// Arguments of `python`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PythonArgs {
    /// Python code to run. State persists between calls; the value of a last bare
    /// expression is printed. Use print() for other results.
    pub code: String,
}

impl Tool for PythonTool {
    type Args = PythonArgs;
    type Output = String;

    fn name(&self) -> &str {
        "python"
    }

    fn description(&self) -> &str {
        "Run Python code and return what it prints (and the value of the last expression). Use it for arithmetic and any computation."
    }

    /// The agent's code actions come here.
    fn kind(&self) -> ToolKind {
        ToolKind::Interpreter {
            language: "python",
            argument: "code",
        }
    }

    /// A tool with a Python session of its own (same sandbox settings).
    fn isolated(&self) -> Option<Self> {
        Some(Self::new(self.sandbox.clone()))
    }

    async fn call(&self, args: PythonArgs) -> Result<String, ToolError> {
        let mut slot = self.session.lock().await;
        if slot.is_none() {
            *slot = Some(self.sandbox.start().await.map_err(python_error)?);
        }
        let Some(session) = slot.as_mut() else {
            return Err(ToolError::failed("the Python worker did not start", true));
        };
        let output = session.run(&args.code).await.map_err(python_error)?;
        if output.is_error() {
            // The same code raises again: a retry cannot help, a fix can. The traceback
            // goes back to the model with whatever the code printed first.
            let kind = output.error_type.as_deref().unwrap_or("an exception");
            return Err(ToolError::failed(
                format!("the code raised {kind}\n{}", output.to_text()),
                false,
            ));
        }
        Ok(output.to_text())
    }
}

fn python_error(e: PythonError) -> ToolError {
    match e {
        PythonError::SandboxUnavailable { .. } => ToolError::permission_denied(e.to_string()),
        // A timeout or crash would repeat with the same code: the model must change it.
        other => ToolError::failed(other.to_string(), false),
    }
}

/// `web_search`: a search backend (SearXNG, Brave) as a tool.
pub struct WebSearchTool {
    backend: Box<dyn SearchBackend>,
}

impl WebSearchTool {
    /// A tool searching with `backend`.
    pub fn new(backend: Box<dyn SearchBackend>) -> Self {
        Self { backend }
    }
}

/// Arguments of `web_search`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct WebSearchArgs {
    /// What to search for.
    pub query: String,
    /// How many results (1-10).
    pub max_results: Option<u8>,
}

/// One search result as the model sees it.
#[derive(Debug, Serialize)]
pub struct WebSearchHit {
    /// Page title.
    pub title: String,
    /// Page address.
    pub url: String,
    /// Text snippet.
    pub snippet: String,
}

impl Tool for WebSearchTool {
    type Args = WebSearchArgs;
    type Output = Vec<WebSearchHit>;

    fn name(&self) -> &str {
        "web_search"
    }

    fn description(&self) -> &str {
        "Search the web; returns titles, URLs and snippets."
    }

    fn kind(&self) -> ToolKind {
        ToolKind::General
    }

    async fn call(&self, args: WebSearchArgs) -> Result<Vec<WebSearchHit>, ToolError> {
        let mut query = SearchQuery::new(args.query);
        query.max_results = Some(usize::from(args.max_results.unwrap_or(5).clamp(1, 10)));
        let results = self.backend.search(&query).await.map_err(web_error)?;
        Ok(results
            .into_iter()
            .map(|r| WebSearchHit {
                title: r.title,
                url: r.url,
                snippet: r.snippet,
            })
            .collect())
    }
}

/// `fetch_url`: a web page as readable text (private addresses refused).
pub struct FetchUrlTool {
    fetcher: Fetcher,
}

impl FetchUrlTool {
    /// A tool fetching with `fetcher`'s limits and address policy.
    pub fn new(fetcher: Fetcher) -> Self {
        Self { fetcher }
    }
}

/// Arguments of `fetch_url`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct FetchUrlArgs {
    /// The http(s) address of the page.
    pub url: String,
}

impl Tool for FetchUrlTool {
    type Args = FetchUrlArgs;
    type Output = String;

    fn name(&self) -> &str {
        "fetch_url"
    }

    fn description(&self) -> &str {
        "Fetch a web page and return its title and readable text."
    }

    fn kind(&self) -> ToolKind {
        ToolKind::General
    }

    async fn call(&self, args: FetchUrlArgs) -> Result<String, ToolError> {
        let page = self.fetcher.fetch(&args.url).await.map_err(web_error)?;
        let mut text = String::new();
        if let Some(title) = &page.title {
            text.push_str(title);
            text.push_str("\n\n");
        }
        text.push_str(&page.text);
        if page.truncated {
            text.push_str("\n[page truncated]");
        }
        Ok(text)
    }
}

fn web_error(e: WebError) -> ToolError {
    match e {
        WebError::Blocked { .. } => ToolError::permission_denied(e.to_string()),
        WebError::Timeout { .. } => ToolError::failed(e.to_string(), true),
        ref other => ToolError::failed(other.to_string(), other.retryable()),
    }
}
