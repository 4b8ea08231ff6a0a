//! The workflow file as Rust types: what a YAML workflow may say, and nothing else
//! (`deny_unknown_fields` everywhere, so a misspelt key is an error, not a silent no-op).
//!
//! Values whose errors are reported after parsing (references, templates, paths) are
//! [`Spanned`], so a validation error can name the line and column they came from.
//! The JSON Schema printed by `jielong workflow schema` is derived from these types.
//!
//! ```yaml
//! name: math
//! inputs:
//!   question: {type: string, default: "What is 12345 * 6789?"}
//! agents:
//!   solver: {tools: [python], max_steps: 6, strategy: reflect(mixed)}
//! steps:
//!   - id: solve
//!     agent: solver
//!     input: "{{ inputs.question }}"
//! outputs:
//!   answer: "{{ steps.solve.output }}"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use jielong_agent::Technique;
use jielong_agent::{AgentSettings, Strategy};
use jielong_chat::SamplingParams;
use jielong_tools::web::{FetchConfig, WebSearchConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use serde_saphyr::{Location, Spanned};

/// A whole workflow file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// The workflow's name (shown in `jielong runs list`).
    pub name: String,
    /// What the workflow does.
    #[serde(default)]
    pub description: Option<String>,
    /// Models by key. Agents name one of these keys; with no `models` section, agents
    /// use the default model (`qwen2.5-coder-0.5b`, or the CLI's `--model`). An entry is
    /// a model reference (`small: qwen2.5-coder-0.5b`) or a mapping (see
    /// [`ModelSpec`]); with `base_url` it is a model on an OpenAI-compatible server.
    #[serde(default, deserialize_with = "model_entries")]
    #[schemars(with = "IndexMap<String, ModelEntrySchema>")]
    pub models: IndexMap<String, ModelSpec>,
    /// Configuration of the built-in tools. A tool needs an entry here only to change
    /// its defaults (`rag_search` needs one: its index).
    #[serde(default)]
    pub tools: ToolsSpec,
    /// Agents by key: a model, a system prompt, tools and budgets.
    #[serde(default)]
    pub agents: IndexMap<String, AgentSpec>,
    /// The workflow's inputs by name (`--input name=value`), typed, with defaults.
    #[serde(default)]
    pub inputs: IndexMap<String, InputSpec>,
    /// The steps. They run as a graph: a step starts once every step it needs (named in
    /// `needs` or used in its templates) has finished; independent steps run
    /// concurrently.
    pub steps: Vec<StepSpec>,
    /// The workflow's results by name: templates over `inputs` and `steps`.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, String>")]
    pub outputs: IndexMap<String, Spanned<String>>,
    /// Most steps running at once (default 2). Requests to one model are queued
    /// whatever this says: a local model serves one request at a time.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Where each part of the file is, for diagnostics about values that are not
    /// [`Spanned`] (filled by [`crate::parse::parse`]; empty otherwise).
    #[serde(skip)]
    #[schemars(skip)]
    pub source_map: crate::parse::SourceMap,
}

/// A model: which one, where it is served, and how to sample from it.
///
/// Written as a mapping, or as just the reference (`small: qwen2.5-coder-0.5b`, the
/// same as `small: {model: qwen2.5-coder-0.5b}`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A catalog name (`qwen2.5-coder-0.5b`), a path to a `.gguf` file (relative to
    /// the workflow file), or `hf:OWNER/REPO/FILE.gguf`; with `base_url`, the model's
    /// name on that server.
    #[schemars(with = "String")]
    pub model: Spanned<String>,
    /// The base URL of an OpenAI-compatible server (`http://127.0.0.1:8080/v1`) serving
    /// `model`; without it the model runs in-process.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub base_url: Option<Spanned<String>>,
    /// The environment variable holding the server's API key (with `base_url`; default:
    /// no key).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub api_key_env: Option<Spanned<String>>,
    /// Sampling temperature; 0 (the default) is greedy and deterministic.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Top-k filter when sampling.
    #[serde(default)]
    pub top_k: Option<u32>,
    /// Top-p (nucleus) filter when sampling.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Min-p filter when sampling.
    #[serde(default)]
    pub min_p: Option<f32>,
    /// Seed of the random draw.
    #[serde(default)]
    pub seed: Option<u32>,
    /// Context window in tokens (default: the model's, at most 8192).
    #[serde(default)]
    pub ctx_size: Option<u32>,
    /// llama.cpp threads (default: the physical cores).
    #[serde(default)]
    pub threads: Option<usize>,
}

impl ModelSpec {
    /// The entry that is only a reference.
    pub fn reference(model: Spanned<String>) -> Self {
        ModelSpec {
            model,
            base_url: None,
            api_key_env: None,
            temperature: None,
            top_k: None,
            top_p: None,
            min_p: None,
            seed: None,
            ctx_size: None,
            threads: None,
        }
    }

    /// The reference of a served model (`base_url` set):
    /// `openai:<base_url>#<model>`, plus `;api_key_env=<VAR>` when a key is named.
    /// `None` for a model that runs in-process (its reference is `model`).
    pub fn served_reference(&self) -> Option<String> {
        let base_url = self.base_url.as_ref()?;
        let mut reference = format!("openai:{}#{}", base_url.value, self.model.value);
        if let Some(var) = &self.api_key_env {
            reference.push_str(";api_key_env=");
            reference.push_str(&var.value);
        }
        Some(reference)
    }
}

/// A `models` entry as written: a reference, or the mapping.
enum ModelEntry {
    Reference(String),
    Full(Box<ModelSpec>),
}

impl<'de> Deserialize<'de> for ModelEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;

        impl<'de> serde::de::Visitor<'de> for EntryVisitor {
            type Value = ModelEntry;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a model reference or a mapping with `model`")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ModelEntry, E> {
                Ok(ModelEntry::Reference(v.to_string()))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<ModelEntry, E> {
                Ok(ModelEntry::Reference(v))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ModelEntry, A::Error> {
                let spec =
                    ModelSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(ModelEntry::Full(Box::new(spec)))
            }
        }

        deserializer.deserialize_any(EntryVisitor)
    }
}

/// `models`: each entry a reference or a mapping, kept with where it was written.
fn model_entries<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<IndexMap<String, ModelSpec>, D::Error> {
    let entries = IndexMap::<String, Spanned<ModelEntry>>::deserialize(deserializer)?;
    Ok(entries
        .into_iter()
        .map(|(key, entry)| {
            let spec = match entry.value {
                ModelEntry::Reference(text) => {
                    ModelSpec::reference(Spanned::new(text, entry.referenced, entry.defined))
                }
                ModelEntry::Full(spec) => *spec,
            };
            (key, spec)
        })
        .collect())
}

/// The JSON Schema of a `models` entry: a reference, or a [`ModelSpec`] mapping.
struct ModelEntrySchema;

impl JsonSchema for ModelEntrySchema {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ModelEntry".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let spec = generator.subschema_for::<ModelSpec>();
        schemars::json_schema!({
            "description": "A model reference (catalog name, .gguf path, hf: reference), or a mapping.",
            "anyOf": [{"type": "string"}, spec]
        })
    }
}

/// The built-in tools' configuration; a key per tool.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolsSpec {
    /// `python`: the sandboxed interpreter.
    #[serde(default)]
    pub python: Option<PythonToolSpec>,
    /// `web_search`: the search backend (SearXNG or Brave).
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub web_search: Option<WebSearchConfig>,
    /// `fetch_url`: limits and the hosts it may reach.
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub fetch_url: Option<FetchConfig>,
    /// `rag_search`: the index it searches.
    #[serde(default)]
    pub rag_search: Option<RagToolSpec>,
}

/// `python` settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PythonToolSpec {
    /// Wall-time limit of one call: seconds, or `"30s"`, `"500ms"`, `"2m"`.
    #[serde(default, with = "jielong_util::duration::option")]
    #[schemars(with = "Option<jielong_util::duration::Schema>")]
    pub timeout: Option<Duration>,
    /// Run without the sandbox on a host that cannot create its namespaces.
    #[serde(default)]
    pub unsandboxed: bool,
}

/// `rag_search` settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RagToolSpec {
    /// The index directory (relative to the workflow file).
    #[schemars(with = "String")]
    pub index: Spanned<PathBuf>,
    /// Files and folders added to the index (incrementally) before the run starts,
    /// relative to the workflow file.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub sources: Vec<Spanned<PathBuf>>,
    /// Passages per search (default 3).
    #[serde(default)]
    pub passages: Option<usize>,
}

/// An agent: the planner loop on a model with tools.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// A key of `models`; default: the only model, or the default model.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub model: Option<Spanned<String>>,
    /// The system prompt, inline (default: `prompts/agent_system.md`).
    #[serde(default)]
    pub system: Option<String>,
    /// The system prompt from a file, relative to the workflow file.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub system_file: Option<Spanned<PathBuf>>,
    /// Built-in tools the agent may call: `python`, `web_search`, `fetch_url`,
    /// `rag_search`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub tools: Vec<Spanned<String>>,
    /// How the agent works its task (default `direct`): the text form of
    /// `jielong run --strategy` (`reflect(vote(written, direct, n=5))`, `mixed`, …) or
    /// the nested form (`{sample: {of: [written, direct], n: 5, pick: vote}}`,
    /// `{plan: {then: direct, subtasks: 3}}`, `{reflect: {around: …, rounds: 1}}`,
    /// `{fallback: {first: direct, then: written}}`, `{tree: {breadth: 3, beam: 3,
    /// depth: 4}}`).
    #[serde(default)]
    #[schemars(with = "Option<Strategy>")]
    pub strategy: Option<Spanned<Strategy>>,
    /// What a thought of a `tree` strategy is: `free` (the default; a line per step)
    /// or `game24` (checked arithmetic steps; the task names the numbers).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub thoughts: Option<Spanned<String>>,
    /// How the task is worded: `plain` (the default), `cot`, `explain`,
    /// `deep-breath`, `emotion`, `premises` (the files of `prompts/techniques/`).
    #[serde(default)]
    #[schemars(with = "Option<Technique>")]
    pub technique: Option<Spanned<Technique>>,
    /// An instruction of one's own in place of `technique`: put after the task (a
    /// blank line between), or around it where it says `{task}` (for example the
    /// `best.md` that `jielong optimize` writes).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub instruction: Option<Spanned<String>>,
    /// The instruction from a file, relative to the workflow file.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub instruction_file: Option<Spanned<PathBuf>>,
    /// Worked examples shown before the task: a JSONL file (`question` and `answer`
    /// per line), relative to the workflow file.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub few_shot: Option<Spanned<PathBuf>>,
    /// How many of the few-shot file's first examples are shown (default 4).
    #[serde(default)]
    pub shots: Option<usize>,
    /// Most model calls per run of the agent (default 12, the library's).
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Most tokens generated per model call (default 512).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Most tokens generated over a run of the agent.
    #[serde(default)]
    pub max_total_tokens: Option<usize>,
    /// Wall-time limit of one run of the agent: seconds, or `"90s"`, `"5m"`.
    #[serde(default, with = "jielong_util::duration::option")]
    #[schemars(with = "Option<jielong_util::duration::Schema>")]
    pub max_time: Option<Duration>,
    /// The agent's settings, every budget and switch by name (`AgentSettings`, the
    /// keys `jielong run --settings FILE` reads: `max_identical_calls`,
    /// `tool_retries`, `grounding`, `call_fit`, `sampling`, …). `strategy`,
    /// `max_steps`, `max_tokens`, `max_total_tokens` and `max_time` above are
    /// shorthands for keys of it; saying one both ways is an error. A `sampling`
    /// here goes over the model's.
    #[serde(default)]
    #[schemars(with = "Option<AgentSettings>")]
    pub settings: Option<Spanned<Value>>,
}

/// The keys of [`AgentSpec`] that are shorthands for [`AgentSettings`] keys.
pub const SETTINGS_SHORTHANDS: &[(&str, &str)] = &[
    ("strategy", "strategy"),
    ("max_steps", "max_steps"),
    ("max_tokens", "max_tokens_per_step"),
    ("max_total_tokens", "max_total_tokens"),
    ("max_time", "max_wall_time"),
];

impl AgentSpec {
    /// The `settings:` block read as [`AgentSettings`] (the defaults for the keys it
    /// leaves out; all defaults without one). Validation has checked it.
    pub fn settings(&self) -> Result<AgentSettings, String> {
        match &self.settings {
            None => Ok(AgentSettings::default()),
            Some(block) => {
                let settings: AgentSettings = serde_path_to_error::deserialize(block.value.clone())
                    .map_err(|e| e.to_string())?;
                settings.validate().map_err(|e| e.to_string())?;
                Ok(settings)
            }
        }
    }

    /// The agent's settings: the `settings:` block, the shorthand keys over it, and
    /// `sampling` (the model's) where the block gives none. The framing is left to
    /// the caller (it reads files).
    pub fn agent_settings(&self, sampling: &SamplingParams) -> Result<AgentSettings, String> {
        let mut settings = self.settings()?;
        if !self.sets("sampling") {
            settings.sampling = sampling.clone();
        }
        if let Some(steps) = self.max_steps {
            settings.max_steps = steps;
        }
        if let Some(tokens) = self.max_tokens {
            settings.max_tokens_per_step = tokens;
        }
        if self.strategy.is_some() {
            settings.strategy = self.strategy();
        }
        if let Some(tokens) = self.max_total_tokens {
            settings.max_total_tokens = tokens;
        }
        if let Some(limit) = self.max_time {
            settings.max_wall_time = Some(limit);
        }
        Ok(settings)
    }

    /// Whether shorthand key `short` (one of [`SETTINGS_SHORTHANDS`]) is given.
    pub fn gives(&self, short: &str) -> bool {
        match short {
            "strategy" => self.strategy.is_some(),
            "max_steps" => self.max_steps.is_some(),
            "max_tokens" => self.max_tokens.is_some(),
            "max_total_tokens" => self.max_total_tokens.is_some(),
            "max_time" => self.max_time.is_some(),
            _ => false,
        }
    }

    /// Whether the `settings:` block gives `key`.
    pub fn sets(&self, key: &str) -> bool {
        self.settings
            .as_ref()
            .is_some_and(|block| block.value.get(key).is_some())
    }

    /// The strategy the agent runs (default `direct`).
    pub fn strategy(&self) -> Strategy {
        self.strategy
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default()
    }
}

/// The type of an input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    /// Text (the default).
    #[default]
    String,
    /// A number (integer or decimal).
    Number,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A list; from the command line, a JSON array or comma-separated text.
    List,
}

/// An input of the workflow.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The type; `--input` values are converted to it.
    #[serde(rename = "type", default)]
    pub kind: InputType,
    /// The value when none is given; an input without a default is required.
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub default: Option<Spanned<Value>>,
    /// What the input is for.
    #[serde(default)]
    pub description: Option<String>,
}

/// A step: an agent working on a task, or one tool call.
///
/// Templates (`input`, string values in `args`, `outputs`) are minijinja over
/// `inputs`, `steps.<id>.output` and, in a `for_each` step, `item` and `index`.
/// `when` and `for_each` are minijinja expressions (`inputs.n > 3`,
/// `inputs.questions`), with or without `{{ }}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// The step's id: letters, digits and `_`, starting with a letter.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// The agent (a key of `agents`) that works on `input`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub agent: Option<Spanned<String>>,
    /// The built-in tool called once with `args`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub tool: Option<Spanned<String>>,
    /// The agent's task (a template). Agent steps only.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub input: Option<Spanned<String>>,
    /// The tool's arguments; string values are templates. Tool steps only.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub args: Option<Spanned<Value>>,
    /// Steps that must finish first, besides those the templates use.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub needs: Vec<Spanned<String>>,
    /// Run the step only when this expression is true; otherwise it is skipped and its
    /// output is `none`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub when: Option<Spanned<String>>,
    /// Run the step once per element of this expression's list (`item`, `index`); its
    /// output is the list of the runs' outputs.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub for_each: Option<Spanned<String>>,
    /// What the step does (shown in progress).
    #[serde(default)]
    pub description: Option<String>,
}

impl StepSpec {
    /// What the step runs.
    pub fn action(&self) -> StepAction<'_> {
        match (&self.agent, &self.tool) {
            (Some(agent), _) => StepAction::Agent(agent),
            (None, Some(tool)) => StepAction::Tool(tool),
            (None, None) => StepAction::Missing,
        }
    }
}

/// What a step runs (validation guarantees exactly one of `agent` and `tool`).
#[derive(Debug, Clone, Copy)]
pub enum StepAction<'a> {
    /// An agent by key.
    Agent(&'a Spanned<String>),
    /// A built-in tool by name.
    Tool(&'a Spanned<String>),
    /// Neither (invalid).
    Missing,
}
