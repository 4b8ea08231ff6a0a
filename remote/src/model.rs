//! [`RemoteModel`] and [`RemoteSession`]: the [`LanguageModel`] / [`ModelSession`]
//! pair on an OpenAI-compatible server.

use std::sync::Arc;
use std::time::Instant;

use eventsource_stream::{EventStreamError, Eventsource};
use futures::StreamExt;
use jielong_chat::{
    BranchId, Capabilities, Chat, ChatRequest, Completion, FinishReason, Generation,
    GenerationSender, LanguageModel, ModelInfo, ModelSession, RemoteFault, RuntimeError,
    SessionOptions, ToolCallFormat,
};
use jielong_wire::ModelList;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use tokio::sync::oneshot;

use crate::config::RemoteConfig;
use crate::decode::Decoder;
use crate::http::{fault, root_cause, seconds, send, unless_cancelled};
use crate::wire::{context_length, one_line, request_body, served_context};

/// What a remote server can do for Jielong: chats with tools (checked after the fact,
/// the server decides how to decode), log-probabilities, one branch.
pub const REMOTE_CAPABILITIES: Capabilities = Capabilities {
    grammar: false,
    max_branches: 1,
    logprobs: true,
    scoring: false,
    raw_prompts: false,
};

/// What every request needs: the config and the HTTP client.
struct Shared {
    config: RemoteConfig,
    client: reqwest::Client,
}

/// The private runtime all HTTP work runs on, whoever calls (async code on any
/// runtime, or a plain thread): the connection pool lives on one runtime only.
struct Background {
    handle: tokio::runtime::Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Background {
    fn new() -> Result<Self, RuntimeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("jielong-remote")
            .enable_all()
            .build()
            .map_err(|e| {
                RuntimeError::Backend(format!("cannot start the remote client's runtime: {e}"))
            })?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // May run inside async code: do not block on the workers.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A model served by an OpenAI-compatible server (llama.cpp's `llama-server`, vLLM,
/// a hosted API): chats go to `POST {base}/chat/completions`, streamed.
///
/// Cheap to clone; clones share the client and its connections.
#[derive(Clone)]
pub struct RemoteModel {
    shared: Arc<Shared>,
    background: Arc<Background>,
    info: Arc<ModelInfo>,
    /// The context the server runs the model with (llama-server's `meta.n_ctx`).
    served_context: Option<u32>,
    available: Arc<Vec<String>>,
}

impl std::fmt::Debug for RemoteModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteModel")
            .field("config", &self.shared.config)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl RemoteModel {
    /// Connects: asks `GET {base}/models` and checks that the server serves the
    /// configured model. Faults: [`RemoteFault::Unreachable`] (nothing listens),
    /// [`RemoteFault::Unauthorized`] (401/403), [`RemoteFault::UnknownModel`] (404, or
    /// the model is not in the list; the message lists what is), [`RemoteFault::Timeout`].
    ///
    /// Works from any async runtime or executor: the requests run on the model's own
    /// background runtime.
    pub async fn connect(config: RemoteConfig) -> Result<RemoteModel, RuntimeError> {
        let background = Arc::new(Background::new()?);
        let shared = Arc::new(Shared {
            client: client(&config)?,
            config,
        });
        let task = background.handle().spawn(list_models(shared.clone()));
        let list = task.await.map_err(|_| RuntimeError::WorkerGone)??;
        let model = shared.config.model();
        let Some(entry) = list.data.iter().find(|m| m.id == model) else {
            let ids: Vec<&str> = list.data.iter().map(|m| m.id.as_str()).collect();
            return Err(fault(
                RemoteFault::UnknownModel,
                format!(
                    "{} does not serve model `{model}`; it serves: {}",
                    shared.config.url("models"),
                    if ids.is_empty() {
                        "nothing".to_string()
                    } else {
                        ids.iter()
                            .map(|id| format!("`{id}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            ));
        };
        let (parameters, size_bytes) = entry
            .meta
            .as_ref()
            .map(|m| (m.n_params.unwrap_or(0), m.size.unwrap_or(0)))
            .unwrap_or((0, 0));
        let info = ModelInfo {
            name: model.to_string(),
            path: None,
            architecture: "remote".into(),
            context_length: context_length(entry),
            parameters,
            size_bytes,
            has_own_template: true,
            tool_call_format: ToolCallFormat::Hermes,
        };
        let served_context = served_context(entry);
        let available = list.data.iter().map(|m| m.id.clone()).collect();
        Ok(RemoteModel {
            shared,
            background,
            info: Arc::new(info),
            served_context,
            available: Arc::new(available),
        })
    }

    /// The server and model this talks to.
    pub fn config(&self) -> &RemoteConfig {
        &self.shared.config
    }

    /// The model ids the server listed when connecting.
    pub fn available_models(&self) -> &[String] {
        &self.available
    }

    /// A session (the concrete type of [`LanguageModel::open_session`]).
    pub fn session(&self) -> RemoteSession {
        RemoteSession {
            model: self.clone(),
            previous: None,
        }
    }
}

impl LanguageModel for RemoteModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn capabilities(&self) -> Capabilities {
        REMOTE_CAPABILITIES
    }

    /// A session; the options are the server's business (its context, its threads)
    /// and are ignored.
    fn open_session(
        &self,
        _options: &SessionOptions,
    ) -> Result<Box<dyn ModelSession>, RuntimeError> {
        Ok(Box::new(self.session()))
    }
}

/// A conversation on a [`RemoteModel`]. The server keeps no state for it (its own
/// prompt cache reuses a shared prefix); requests on one session run one after
/// another, in order.
pub struct RemoteSession {
    model: RemoteModel,
    /// Ends when the last request made on this session has finished.
    previous: Option<oneshot::Receiver<()>>,
}

impl std::fmt::Debug for RemoteSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSession")
            .field("model", &self.model.info.name)
            .finish_non_exhaustive()
    }
}

impl ModelSession for RemoteSession {
    fn capabilities(&self) -> Capabilities {
        REMOTE_CAPABILITIES
    }

    /// Streams the reply from `POST {base}/chat/completions`. Returns at once; the
    /// request runs on the model's background runtime. Faults arrive as the final
    /// [`jielong_chat::GenerationEvent::Done`]`(Err(..))`.
    fn respond(&mut self, chat: &Chat, request: &ChatRequest) -> Result<Generation, RuntimeError> {
        if chat.branch != BranchId::MAIN {
            return Err(RuntimeError::Unsupported(format!(
                "branches (branch {} on a remote model)",
                chat.branch
            )));
        }
        request.validate(chat)?;
        let body = serde_json::to_vec(&request_body(
            self.model.shared.config.model(),
            chat,
            request,
        ))
        .map_err(|e| RuntimeError::InvalidRequest(format!("cannot encode the request: {e}")))?;
        let job = Job {
            shared: self.model.shared.clone(),
            body,
            prefill: chat.prefill.clone(),
            tools: request.callable(chat).to_vec(),
            max_calls: request.max_calls,
        };
        let (sender, generation) = Generation::channel();
        let (finished, next) = oneshot::channel();
        let previous = self.previous.replace(next);
        self.model.background.handle().spawn(async move {
            if let Some(previous) = previous {
                if unless_cancelled(Some(&sender), previous).await.is_none() {
                    sender.done(Ok(Completion::new(
                        "",
                        FinishReason::Cancelled,
                        Default::default(),
                    )));
                    return;
                }
            }
            let result = job.run(&sender).await;
            sender.done(result);
            drop(finished);
        });
        Ok(generation)
    }

    /// Nothing to forget: the server holds no conversation state.
    fn reset(&mut self) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// The context window the server runs the model with, else the model's trained
    /// length, as `/models` reported them (0: unknown).
    fn context_size(&self) -> u32 {
        self.model
            .served_context
            .unwrap_or(self.model.info.context_length)
    }
}

/// One streamed chat request.
struct Job {
    shared: Arc<Shared>,
    body: Vec<u8>,
    prefill: String,
    tools: Vec<jielong_chat::ToolSpec>,
    max_calls: u32,
}

impl Job {
    async fn run(self, sender: &GenerationSender) -> Result<Completion, RuntimeError> {
        let config = &self.shared.config;
        let url = config.url("chat/completions");
        let what = format!("POST {url}");
        let started = Instant::now();
        let make = || {
            self.shared
                .client
                .post(&url)
                .header(CONTENT_TYPE, "application/json")
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .body(self.body.clone())
        };
        let mut decoder =
            Decoder::new(&self.tools, self.max_calls, started).continuing(&self.prefill);
        let Some(response) = send(config, &what, &make, Some(sender)).await? else {
            return Ok(decoder.completion(Some(FinishReason::Cancelled)));
        };
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json {
            let body = tokio::time::timeout(config.timeouts().idle, response.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(fault(
                RemoteFault::Protocol,
                format!(
                    "{what}: expected an event stream, got JSON: {}",
                    one_line(&body, 200)
                ),
            ));
        }
        let idle = config.timeouts().idle;
        let mut events = response.bytes_stream().eventsource();
        loop {
            let next = tokio::time::timeout(idle, events.next());
            let Some(next) = unless_cancelled(Some(sender), next).await else {
                // Dropping the stream closes the connection: the server stops.
                return Ok(decoder.completion(Some(FinishReason::Cancelled)));
            };
            let event = match next {
                Err(_) => {
                    return Err(fault(
                        RemoteFault::Timeout,
                        format!(
                            "{what}: the stream was silent for {} (idle time-out)",
                            seconds(idle)
                        ),
                    ))
                }
                Ok(None) if decoder.is_complete() => break,
                Ok(None) => {
                    return Err(fault(
                        RemoteFault::Protocol,
                        format!(
                            "{what}: the stream ended before the reply did (no finish_reason, no [DONE])"
                        ),
                    ))
                }
                Ok(Some(Err(EventStreamError::Transport(e)))) => {
                    let kind = if e.is_timeout() {
                        RemoteFault::Timeout
                    } else {
                        RemoteFault::Protocol
                    };
                    return Err(fault(
                        kind,
                        format!("{what}: the stream was cut short: {}", root_cause(&e)),
                    ));
                }
                Ok(Some(Err(e))) => {
                    return Err(fault(
                        RemoteFault::Protocol,
                        format!("{what}: not a valid event stream: {e}"),
                    ))
                }
                Ok(Some(Ok(event))) => event,
            };
            let out = decoder
                .data(&event.data)
                .map_err(|f| fault(f.kind, format!("{what}: {}", f.reason)))?;
            for event in out {
                if !sender.send(event) {
                    return Ok(decoder.completion(Some(FinishReason::Cancelled)));
                }
            }
            if sender.is_cancelled() {
                return Ok(decoder.completion(Some(FinishReason::Cancelled)));
            }
            if decoder.is_done() {
                break;
            }
        }
        for event in decoder.end() {
            sender.send(event);
        }
        Ok(decoder.completion(None))
    }
}

/// The HTTP client: the connect time-out, the API key on every request.
fn client(config: &RemoteConfig) -> Result<reqwest::Client, RuntimeError> {
    let mut headers = HeaderMap::new();
    if let Some(key) = config.api_key() {
        let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            fault(
                RemoteFault::Unauthorized,
                "the API key is not a valid HTTP header value",
            )
        })?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .connect_timeout(config.timeouts().connect)
        .default_headers(headers)
        .user_agent(concat!("jielong/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            RuntimeError::Backend(format!("cannot build the HTTP client: {}", root_cause(&e)))
        })
}

/// `GET {base}/models`, parsed.
async fn list_models(shared: Arc<Shared>) -> Result<ModelList, RuntimeError> {
    let config = &shared.config;
    let url = config.url("models");
    let what = format!("GET {url}");
    let make = || shared.client.get(&url);
    let Some(response) = send(config, &what, &make, None).await? else {
        return Err(RuntimeError::WorkerGone);
    };
    let limit = config.timeouts().first_byte;
    let body = match tokio::time::timeout(limit, response.text()).await {
        Err(_) => {
            return Err(fault(
                RemoteFault::Timeout,
                format!(
                    "{what}: the model list did not arrive within {}",
                    seconds(limit)
                ),
            ))
        }
        Ok(Err(e)) => {
            return Err(fault(
                RemoteFault::Protocol,
                format!("{what}: the model list was cut short: {}", root_cause(&e)),
            ))
        }
        Ok(Ok(body)) => body,
    };
    serde_json::from_str(&body).map_err(|e| {
        fault(
            RemoteFault::Protocol,
            format!(
                "{what}: not an OpenAI model list ({e}): {}",
                one_line(&body, 120)
            ),
        )
    })
}
