//! Checks on a parsed workflow that serde cannot make: references (agents, models,
//! tools, steps, inputs), templates, the step graph (no cycles), files on disk, value
//! ranges. Every fault is reported, each with its line, column and field, in file
//! order; a workflow without faults yields its [`Graph`].
//!
//! What a template may read: `inputs.<name>` for a declared input; `steps.<id>` for
//! another step (which the step then needs); `item` and `index` in the `input` and
//! `args` of a `for_each` step. `when` is evaluated once per step, before its
//! `for_each` runs, so it sees no `item`; `outputs` are rendered once all steps have
//! finished, so they may read any step, even as `steps[name]`. A step that reads
//! `steps[name]` must say which steps it needs in `needs`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use indexmap::IndexMap;
use jielong_tools::builtin::BUILTIN_TOOLS;
use serde_json::Value;
use serde_saphyr::Location;

use crate::catalog::Catalog;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::spec::{AgentSpec, InputType, Spanned, StepSpec, WorkflowSpec, SETTINGS_SHORTHANDS};
use crate::template::{Reference, TemplateError, Templates};

/// The steps as a graph: what each step needs, and an order to run them in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    /// Each step id, in file order, with the ids of the steps it needs: its `needs`
    /// and the steps its `input`, `args`, `when` and `for_each` read.
    pub needs: IndexMap<String, BTreeSet<String>>,
    /// Every step id, each after the steps it needs; among steps that could go next,
    /// file order.
    pub order: Vec<String>,
}

impl Graph {
    /// The steps that need `id` directly, in file order.
    pub fn dependents(&self, id: &str) -> Vec<&str> {
        self.needs
            .iter()
            .filter(|(_, needs)| needs.contains(id))
            .map(|(step, _)| step.as_str())
            .collect()
    }

    /// The steps that need `id` directly or through other steps, in [`Graph::order`]:
    /// those that cannot run when `id` fails.
    pub fn downstream(&self, id: &str) -> Vec<&str> {
        let mut reached: BTreeSet<&str> = BTreeSet::from([id]);
        let mut out = Vec::new();
        for step in &self.order {
            let needs_reached = self
                .needs
                .get(step)
                .is_some_and(|needs| needs.iter().any(|n| reached.contains(n.as_str())));
            if step != id && needs_reached {
                reached.insert(step);
                out.push(step.as_str());
            }
        }
        out
    }
}

/// Checks a parsed workflow. `file` names it in diagnostics; `base_dir` anchors the
/// relative paths in it (`system_file`, `rag_search.sources`).
///
/// Names of thought spaces are looked up in `catalog`, what the program offers.
///
/// Returns every fault found, sorted by line and column, or the step graph.
pub fn validate(
    spec: &WorkflowSpec,
    file: &str,
    base_dir: &Path,
    catalog: &Catalog,
) -> Result<Graph, Diagnostics> {
    let mut checker = Checker {
        spec,
        file,
        base_dir,
        catalog,
        templates: Templates::new(),
        diagnostics: Vec::new(),
        step_index: HashMap::new(),
        edges: vec![BTreeSet::new(); spec.steps.len()],
    };
    checker.check_top();
    checker.check_models();
    checker.check_tools();
    checker.check_agents();
    checker.check_inputs();
    checker.check_steps();
    checker.check_outputs();
    checker.check_cycles();
    if !checker.diagnostics.is_empty() {
        let mut diagnostics = checker.diagnostics;
        diagnostics.sort_by_key(|d| (d.line, d.column));
        return Err(Diagnostics(diagnostics));
    }
    Ok(checker.graph())
}

/// Where a template sits, which decides the names it may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// A step's `input` or a string in its `args`.
    Body,
    /// A step's `when`.
    When,
    /// A step's `for_each`.
    ForEach,
    /// One of the workflow's `outputs`.
    Output,
}

/// One template or expression to check.
struct Site<'s> {
    source: &'s str,
    location: Location,
    field: String,
    context: Context,
    expression: bool,
}

struct Checker<'a> {
    catalog: &'a Catalog,
    spec: &'a WorkflowSpec,
    file: &'a str,
    base_dir: &'a Path,
    templates: Templates,
    diagnostics: Vec<Diagnostic>,
    /// Step id → index of its first occurrence.
    step_index: HashMap<&'a str, usize>,
    /// Step index → indices of the steps it needs (self-edges left out).
    edges: Vec<BTreeSet<usize>>,
}

impl<'a> Checker<'a> {
    fn push(&mut self, location: Location, field: impl Into<String>, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::at(self.file, &location, field, message));
    }

    /// Where the value at `path` is, when the file was indexed.
    /// Reports `file` (a path relative to the workflow file) when it is a folder or
    /// does not exist; `what` names it in the message.
    fn check_file(&mut self, file: &Spanned<std::path::PathBuf>, field: String, what: &str) {
        let resolved = resolve(self.base_dir, &file.value);
        if resolved.is_dir() {
            self.push(
                at(file),
                field,
                format!("{what} `{}` is a folder", file.value.display()),
            );
        } else if !resolved.is_file() {
            self.push(
                at(file),
                field,
                format!(
                    "{what} `{}` not found (looked for {})",
                    file.value.display(),
                    resolved.display()
                ),
            );
        }
    }

    fn value_at(&self, path: &str) -> Location {
        self.spec
            .source_map
            .value(path)
            .unwrap_or(Location::UNKNOWN)
    }

    /// Where the entry at `path` is named (its key).
    fn entry_at(&self, path: &str) -> Location {
        self.spec
            .source_map
            .entry(path)
            .unwrap_or(Location::UNKNOWN)
    }

    fn check_top(&mut self) {
        if self.spec.name.trim().is_empty() {
            self.push(
                self.value_at("name"),
                "name",
                "the workflow's name is empty",
            );
        }
        if self.spec.steps.is_empty() {
            self.push(
                self.value_at("steps"),
                "steps",
                "the workflow has no steps: add at least one",
            );
        }
        if self.spec.concurrency == Some(0) {
            self.push(
                self.value_at("concurrency"),
                "concurrency",
                "`concurrency` must be at least 1",
            );
        }
    }

    fn check_models(&mut self) {
        for (key, model) in &self.spec.models {
            let path = format!("models.{key}");
            if model.model.value.trim().is_empty() {
                self.push(
                    at(&model.model),
                    format!("{path}.model"),
                    "the model is empty",
                );
            }
            self.check_served(&path, model);
            if let Some(t) = model.temperature {
                if !t.is_finite() || t < 0.0 {
                    self.push(
                        self.value_at(&format!("{path}.temperature")),
                        format!("{path}.temperature"),
                        format!("`temperature` must be 0 or more, not {t}"),
                    );
                }
            }
            if let Some(p) = model.top_p {
                if !(p > 0.0 && p <= 1.0) {
                    self.push(
                        self.value_at(&format!("{path}.top_p")),
                        format!("{path}.top_p"),
                        format!("`top_p` must be more than 0 and at most 1, not {p}"),
                    );
                }
            }
            if let Some(p) = model.min_p {
                if !(0.0..=1.0).contains(&p) {
                    self.push(
                        self.value_at(&format!("{path}.min_p")),
                        format!("{path}.min_p"),
                        format!("`min_p` must be between 0 and 1, not {p}"),
                    );
                }
            }
        }
    }

    /// `base_url` and `api_key_env`: a served model's reference must be one the
    /// backend can read back (`openai:<base_url>#<model>;api_key_env=<VAR>`).
    fn check_served(&mut self, path: &str, model: &crate::spec::ModelSpec) {
        match &model.base_url {
            Some(url) => {
                let text = url.value.trim();
                let field = format!("{path}.base_url");
                if !(text.starts_with("http://") || text.starts_with("https://")) {
                    self.push(
                        at(url),
                        field,
                        format!(
                            "`base_url` must be an http:// or https:// URL, not `{}`",
                            url.value
                        ),
                    );
                } else if text != url.value
                    || text.contains(['#', ';'])
                    || text.contains(char::is_whitespace)
                {
                    self.push(at(url), field, "`base_url` may not hold spaces, `#` or `;`");
                }
                if model.model.value.contains(['#', ';']) {
                    self.push(
                        at(&model.model),
                        format!("{path}.model"),
                        "a served model's name may not hold `#` or `;`",
                    );
                }
            }
            None => {
                if let Some(var) = &model.api_key_env {
                    self.push(
                        at(var),
                        format!("{path}.api_key_env"),
                        "`api_key_env` is for a served model: give `base_url` too",
                    );
                }
            }
        }
        if let Some(var) = &model.api_key_env {
            let valid = var
                .value
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && var
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.push(
                    at(var),
                    format!("{path}.api_key_env"),
                    format!(
                        "`api_key_env` names an environment variable (letters, digits and \
                         `_`), not `{}`",
                        var.value
                    ),
                );
            }
        }
    }

    fn check_tools(&mut self) {
        let Some(rag) = &self.spec.tools.rag_search else {
            return;
        };
        for (i, source) in rag.sources.iter().enumerate() {
            let resolved = resolve(self.base_dir, &source.value);
            if !resolved.exists() {
                self.push(
                    at(source),
                    format!("tools.rag_search.sources[{i}]"),
                    format!(
                        "source `{}` not found (looked for {})",
                        source.value.display(),
                        resolved.display()
                    ),
                );
            }
        }
        if rag.passages == Some(0) {
            self.push(
                self.value_at("tools.rag_search.passages"),
                "tools.rag_search.passages",
                "`passages` must be at least 1",
            );
        }
    }

    fn check_agents(&mut self) {
        for (name, agent) in &self.spec.agents {
            let path = format!("agents.{name}");
            match &agent.model {
                Some(model) if !self.spec.models.contains_key(&model.value) => {
                    let message = if self.spec.models.is_empty() {
                        format!(
                            "no model `{}`: the workflow defines no `models` (an agent without \
                             `model` uses the default model)",
                            model.value
                        )
                    } else {
                        format!(
                            "no model `{}`; models: {}",
                            model.value,
                            list(self.spec.models.keys())
                        )
                    };
                    self.push(at(model), format!("{path}.model"), message);
                }
                None if self.spec.models.len() > 1 => {
                    self.push(
                        self.entry_at(&path),
                        path.clone(),
                        format!(
                            "agent `{name}` names no `model`, and there are several ({}): \
                             choose one with `model:`",
                            list(self.spec.models.keys())
                        ),
                    );
                }
                _ => {}
            }
            if let Some(system_file) = &agent.system_file {
                let field = format!("{path}.system_file");
                if agent.system.is_some() {
                    self.push(
                        at(system_file),
                        field.clone(),
                        "`system` and `system_file` both give the system prompt: keep one",
                    );
                }
                self.check_file(system_file, field, "system prompt file");
            }
            if let (Some(_), Some(file)) = (&agent.instruction, &agent.instruction_file) {
                self.push(
                    at(file),
                    format!("{path}.instruction_file"),
                    "`instruction` and `instruction_file` both give the instruction: keep one",
                );
            }
            if let Some(technique) = &agent.technique {
                if agent.instruction.is_some() || agent.instruction_file.is_some() {
                    self.push(
                        at(technique),
                        format!("{path}.technique"),
                        "`technique` and an instruction both word the task: keep one",
                    );
                }
            }
            if let Some(instruction) = &agent.instruction {
                if instruction.value.trim().is_empty() {
                    self.push(
                        at(instruction),
                        format!("{path}.instruction"),
                        "`instruction` is empty",
                    );
                }
            }
            if let Some(file) = &agent.instruction_file {
                self.check_file(file, format!("{path}.instruction_file"), "instruction file");
            }
            if let Some(few_shot) = &agent.few_shot {
                self.check_file(few_shot, format!("{path}.few_shot"), "few-shot file");
            } else if agent.shots.is_some() {
                let field = format!("{path}.shots");
                self.push(
                    self.value_at(&field),
                    field,
                    "`shots` needs `few_shot`, the file the examples come from",
                );
            }
            if agent.shots == Some(0) {
                let field = format!("{path}.shots");
                self.push(self.value_at(&field), field, "`shots` must be at least 1");
            }
            for (i, tool) in agent.tools.iter().enumerate() {
                self.check_tool_name(tool, &format!("{path}.tools[{i}]"));
            }
            if let Some(thoughts) = &agent.thoughts {
                if self.catalog.thought_spaces.get(&thoughts.value).is_none() {
                    let field = format!("{path}.thoughts");
                    self.push(
                        self.value_at(&field),
                        field,
                        format!(
                            "unknown thought space `{}` (expected {})",
                            thoughts.value,
                            self.catalog.thought_spaces.names().join(", ")
                        ),
                    );
                }
            }
            if agent.max_steps == Some(0) {
                let field = format!("{path}.max_steps");
                self.push(
                    self.value_at(&field),
                    field,
                    "`max_steps` must be at least 1",
                );
            }
            if agent.max_tokens == Some(0) {
                let field = format!("{path}.max_tokens");
                self.push(
                    self.value_at(&field),
                    field,
                    "`max_tokens` must be at least 1",
                );
            }
            self.check_settings(agent, &path);
        }
    }

    /// An agent's `settings:` block reads as `AgentSettings`, in range, and says
    /// nothing a shorthand key of the agent says too.
    fn check_settings(&mut self, agent: &AgentSpec, path: &str) {
        let Some(block) = &agent.settings else {
            return;
        };
        let field = format!("{path}.settings");
        if !block.value.is_object() {
            self.push(
                at(block),
                field,
                "`settings` must be a mapping of agent settings (`max_steps: 4`, `grounding: off`, …)",
            );
            return;
        }
        if let Err(message) = agent.settings() {
            self.push(at(block), field.clone(), message);
        }
        for (short, key) in SETTINGS_SHORTHANDS {
            if agent.gives(short) && agent.sets(key) {
                let at_key = format!("{field}.{key}");
                self.push(
                    self.entry_at(&at_key),
                    at_key,
                    format!("`{short}` and `settings.{key}` both set it: keep one"),
                );
            }
        }
    }

    /// A tool named by a step or an agent: built-in, and configured when it must be.
    fn check_tool_name(&mut self, tool: &Spanned<String>, field: &str) {
        if !BUILTIN_TOOLS.contains(&tool.value.as_str()) {
            let mut message = format!(
                "unknown tool `{}`; built-in tools: {}",
                tool.value,
                BUILTIN_TOOLS.join(", ")
            );
            if let Some(close) = crate::parse::closest(&tool.value, &BUILTIN_TOOLS) {
                message.push_str(&format!(" (did you mean `{close}`?)"));
            }
            self.push(at(tool), field, message);
        } else if tool.value == "rag_search" && self.spec.tools.rag_search.is_none() {
            self.push(
                at(tool),
                field,
                "`rag_search` needs an index: add `tools: {rag_search: {index: <folder>}}`",
            );
        }
    }

    fn check_inputs(&mut self) {
        for (name, input) in &self.spec.inputs {
            let Some(default) = &input.default else {
                continue;
            };
            let fits = match input.kind {
                InputType::String => default.value.is_string(),
                InputType::Number => default.value.is_number(),
                InputType::Integer => default.value.is_i64() || default.value.is_u64(),
                InputType::Boolean => default.value.is_boolean(),
                InputType::List => default.value.is_array(),
            };
            if !fits {
                self.push(
                    at(default),
                    format!("inputs.{name}.default"),
                    format!(
                        "the default is {}, but the input's type is {}",
                        describe(&default.value),
                        type_name(input.kind)
                    ),
                );
            }
        }
    }

    fn check_steps(&mut self) {
        let spec = self.spec;
        // Ids first: references may point forward.
        for (i, step) in spec.steps.iter().enumerate() {
            let id = step.id.value.as_str();
            if !valid_id(id) {
                self.push(
                    at(&step.id),
                    format!("steps[{i}].id"),
                    format!(
                        "invalid step id `{id}`: use letters, digits and `_`, starting with a \
                         letter"
                    ),
                );
            }
            if let Some(&first) = self.step_index.get(id) {
                let line = at(&spec.steps[first].id).line();
                self.push(
                    at(&step.id),
                    format!("steps[{i}].id"),
                    format!("duplicate step id `{id}` (first used on line {line})"),
                );
            } else {
                self.step_index.insert(id, i);
            }
        }
        for (i, step) in spec.steps.iter().enumerate() {
            self.check_action(i, step);
            self.check_needs(i, step);
            self.check_step_templates(i, step);
        }
    }

    /// `agent` or `tool`, and the fields each takes.
    fn check_action(&mut self, i: usize, step: &'a StepSpec) {
        let path = format!("steps[{i}]");
        let step_at = self.spec.source_map.value(&path).unwrap_or(at(&step.id));
        if let Some(agent) = &step.agent {
            if !self.spec.agents.contains_key(&agent.value) {
                let message = if self.spec.agents.is_empty() {
                    format!("no agent `{}`: no agents defined", agent.value)
                } else {
                    format!(
                        "no agent `{}`; agents: {}",
                        agent.value,
                        list(self.spec.agents.keys())
                    )
                };
                self.push(at(agent), format!("{path}.agent"), message);
            }
        }
        if let Some(tool) = &step.tool {
            self.check_tool_name(tool, &format!("{path}.tool"));
        }
        match (&step.agent, &step.tool) {
            (Some(_), Some(tool)) => self.push(
                at(tool),
                format!("{path}.tool"),
                "a step runs an agent or a tool, not both: keep `agent` or `tool`",
            ),
            (None, None) => self.push(
                step_at,
                path,
                "the step runs nothing: give it an `agent` (with `input`) or a `tool` (with `args`)",
            ),
            (Some(_), None) => {
                if let Some(args) = &step.args {
                    self.push(
                        at(args),
                        format!("{path}.args"),
                        "`args` is for tool steps; an agent step takes its task in `input`",
                    );
                }
                if step.input.is_none() {
                    self.push(
                        step_at,
                        format!("{path}.input"),
                        "an agent step needs `input`: the agent's task",
                    );
                }
            }
            (None, Some(_)) => {
                if let Some(input) = &step.input {
                    self.push(
                        at(input),
                        format!("{path}.input"),
                        "`input` is for agent steps; a tool step takes `args`",
                    );
                }
                match &step.args {
                    None => self.push(
                        step_at,
                        format!("{path}.args"),
                        "a tool step needs `args`: the tool's arguments, as a mapping",
                    ),
                    Some(args) if !args.value.is_object() => self.push(
                        at(args),
                        format!("{path}.args"),
                        format!(
                            "`args` must be a mapping of the tool's arguments, not {}",
                            describe(&args.value)
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
    }

    fn check_needs(&mut self, i: usize, step: &StepSpec) {
        for (j, need) in step.needs.iter().enumerate() {
            let field = format!("steps[{i}].needs[{j}]");
            if need.value == step.id.value {
                self.push(at(need), field, "a step cannot need itself");
            } else if let Some(&target) = self.step_index.get(need.value.as_str()) {
                self.edges[i].insert(target);
            } else {
                let message = self.no_step(&need.value);
                self.push(at(need), field, message);
            }
        }
    }

    fn no_step(&self, id: &str) -> String {
        let ids: Vec<&str> = self
            .spec
            .steps
            .iter()
            .map(|s| s.id.value.as_str())
            .collect();
        let mut message = format!("no step `{id}`; steps: {}", ids.join(", "));
        if let Some(close) = crate::parse::closest(id, &ids) {
            message.push_str(&format!(" (did you mean `{close}`?)"));
        }
        message
    }

    fn check_step_templates(&mut self, i: usize, step: &'a StepSpec) {
        let path = format!("steps[{i}]");
        let mut sites = Vec::new();
        if let Some(input) = &step.input {
            sites.push(Site {
                source: &input.value,
                location: at(input),
                field: format!("{path}.input"),
                context: Context::Body,
                expression: false,
            });
        }
        if let Some(args) = &step.args {
            self.collect_strings(&args.value, format!("{path}.args"), at(args), &mut sites);
        }
        if let Some(when) = &step.when {
            sites.push(Site {
                source: &when.value,
                location: at(when),
                field: format!("{path}.when"),
                context: Context::When,
                expression: true,
            });
        }
        if let Some(for_each) = &step.for_each {
            sites.push(Site {
                source: &for_each.value,
                location: at(for_each),
                field: format!("{path}.for_each"),
                context: Context::ForEach,
                expression: true,
            });
        }
        for site in sites {
            self.check_site(&site, Some((i, step)));
        }
    }

    /// The string leaves of `args`, each with its own path and, when indexed, place.
    fn collect_strings(
        &self,
        value: &'a Value,
        path: String,
        fallback: Location,
        sites: &mut Vec<Site<'a>>,
    ) {
        match value {
            Value::String(s) => {
                let location = self.spec.source_map.value(&path).unwrap_or(fallback);
                sites.push(Site {
                    source: s,
                    location,
                    field: path,
                    context: Context::Body,
                    expression: false,
                });
            }
            Value::Array(items) => {
                for (j, item) in items.iter().enumerate() {
                    self.collect_strings(item, format!("{path}[{j}]"), fallback, sites);
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    self.collect_strings(item, format!("{path}.{key}"), fallback, sites);
                }
            }
            _ => {}
        }
    }

    fn check_outputs(&mut self) {
        for (name, output) in &self.spec.outputs {
            let site = Site {
                source: &output.value,
                location: at(output),
                field: format!("outputs.{name}"),
                context: Context::Output,
                expression: false,
            };
            self.check_site(&site, None);
        }
    }

    /// Compiles a template or expression and checks the names it reads; a step's
    /// references to other steps become edges of the graph.
    fn check_site(&mut self, site: &Site<'_>, step: Option<(usize, &StepSpec)>) {
        let checked = if site.expression {
            self.templates.check_expression(site.source)
        } else {
            self.templates.check_template(site.source)
        };
        let references = match checked {
            Ok(references) => references,
            Err(e) => {
                let what = if site.expression {
                    "invalid expression"
                } else {
                    "invalid template"
                };
                let message = template_message(what, &e);
                self.push(site.location, site.field.clone(), message);
                return;
            }
        };
        for reference in references {
            if let Some(message) = self.check_reference(&reference, site.context, step) {
                self.push(site.location, site.field.clone(), message);
            }
        }
    }

    /// What is wrong with one name a template reads, if anything.
    fn check_reference(
        &mut self,
        reference: &Reference,
        context: Context,
        step: Option<(usize, &StepSpec)>,
    ) -> Option<String> {
        match reference {
            Reference::Input(name) => {
                if self.spec.inputs.contains_key(name) {
                    None
                } else if self.spec.inputs.is_empty() {
                    Some(format!(
                        "no input `{name}`: the workflow declares no inputs"
                    ))
                } else {
                    Some(format!(
                        "no input `{name}`; inputs: {}",
                        list(self.spec.inputs.keys())
                    ))
                }
            }
            Reference::Step(id) => {
                if let Some((i, own)) = step {
                    if *id == own.id.value {
                        return Some(format!("a step cannot read its own output (`steps.{id}`)"));
                    }
                    if let Some(&target) = self.step_index.get(id.as_str()) {
                        self.edges[i].insert(target);
                        return None;
                    }
                } else if self.step_index.contains_key(id.as_str()) {
                    return None;
                }
                Some(self.no_step(id))
            }
            Reference::Dynamic(name) => match (name.as_str(), step) {
                ("steps", Some((_, own))) if own.needs.is_empty() => Some(
                    "`steps` is read without a literal id (`steps[...]`), so the steps this \
                     one needs are unknown: write `steps.<id>` or list them in `needs`"
                        .to_string(),
                ),
                _ => None,
            },
            Reference::Loop(name) => {
                let for_each = step.is_some_and(|(_, s)| s.for_each.is_some());
                match context {
                    Context::Body if for_each => None,
                    Context::Body => Some(format!(
                        "`{name}` is only defined in a step with `for_each`"
                    )),
                    Context::When => Some(format!(
                        "`{name}` is not defined in `when`: it is evaluated once for the step, \
                         before any `for_each` run"
                    )),
                    Context::ForEach => Some(format!(
                        "`{name}` is not defined in `for_each` itself: it stands for each \
                         element of that list"
                    )),
                    Context::Output => Some(format!(
                        "`{name}` is only defined in a step with `for_each`, not in `outputs`"
                    )),
                }
            }
            Reference::Other(name) => {
                let mut message =
                    format!("unknown name `{name}`: templates see inputs, steps, item, index");
                if self.step_index.contains_key(name.as_str()) {
                    message.push_str(&format!(" (did you mean `steps.{name}.output`?)"));
                } else if self.spec.inputs.contains_key(name) {
                    message.push_str(&format!(" (did you mean `inputs.{name}`?)"));
                }
                Some(message)
            }
        }
    }

    /// One diagnostic per strongly connected group of steps that need each other.
    fn check_cycles(&mut self) {
        for component in strongly_connected(&self.edges) {
            let Some(&start) = component.iter().min() else {
                continue;
            };
            let Some(path) = shortest_cycle(&self.edges, &component, start) else {
                continue;
            };
            let names: Vec<&str> = path
                .iter()
                .map(|&k| self.spec.steps[k].id.value.as_str())
                .collect();
            let step = &self.spec.steps[start];
            self.push(
                at(&step.id),
                format!("steps[{start}].id"),
                format!(
                    "dependency cycle: {} (each step needs the next)",
                    names.join(" → ")
                ),
            );
        }
    }

    /// The graph of a workflow without faults.
    fn graph(&self) -> Graph {
        let steps = &self.spec.steps;
        let needs: IndexMap<String, BTreeSet<String>> = steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let needed = self.edges[i]
                    .iter()
                    .map(|&j| steps[j].id.value.clone())
                    .collect();
                (step.id.value.clone(), needed)
            })
            .collect();
        let mut placed = vec![false; steps.len()];
        let mut order = Vec::with_capacity(steps.len());
        while order.len() < steps.len() {
            let next =
                (0..steps.len()).find(|&i| !placed[i] && self.edges[i].iter().all(|&j| placed[j]));
            let Some(next) = next else {
                break; // A cycle; validation has reported it.
            };
            placed[next] = true;
            order.push(steps[next].id.value.clone());
        }
        Graph { needs, order }
    }
}

/// The use site of a value (for an alias, where `*name` is written).
fn at<T>(spanned: &Spanned<T>) -> Location {
    if spanned.referenced == Location::UNKNOWN {
        spanned.defined
    } else {
        spanned.referenced
    }
}

fn resolve(base_dir: &Path, path: &Path) -> std::path::PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// `^[A-Za-z][A-Za-z0-9_]*$`
fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn list<'s>(names: impl Iterator<Item = &'s String>) -> String {
    names.map(String::as_str).collect::<Vec<_>>().join(", ")
}

fn type_name(kind: InputType) -> &'static str {
    match kind {
        InputType::String => "string",
        InputType::Number => "number",
        InputType::Integer => "integer",
        InputType::Boolean => "boolean",
        InputType::List => "list",
    }
}

/// "a string", "the number 3.5", … for messages about a value's type.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => {
            let shown: String = s.chars().take(40).collect();
            let more = if s.chars().count() > 40 { "…" } else { "" };
            format!("a string ({shown:?}{more})")
        }
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a mapping".to_string(),
    }
}

/// "invalid template: syntax error: …", with the template's own line when it has
/// several.
fn template_message(what: &str, e: &TemplateError) -> String {
    let mut message = format!("{what}: {}", e.message);
    if let Some(line) = e.line.filter(|&l| l > 1) {
        message.push_str(&format!(" (line {line} of the template)"));
    }
    message
}

/// Tarjan's strongly connected components with more than one step, each sorted.
fn strongly_connected(edges: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    struct State<'e> {
        edges: &'e [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in s.edges[v].iter() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort_unstable();
                s.out.push(component);
            }
        }
    }
    let n = edges.len();
    let mut state = State {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if state.index[v].is_none() {
            visit(&mut state, v);
        }
    }
    state.out.sort();
    state.out
}

/// The shortest path `start → … → start` inside a component (breadth first, lower
/// indices first).
fn shortest_cycle(
    edges: &[BTreeSet<usize>],
    component: &[usize],
    start: usize,
) -> Option<Vec<usize>> {
    let inside = |k: usize| component.binary_search(&k).is_ok();
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &edges[v] {
            if !inside(w) {
                continue;
            }
            if w == start {
                // Walk back from `v` to `start`, then read it forwards.
                let mut path = vec![v];
                let mut k = v;
                while k != start {
                    k = parent[&k];
                    path.push(k);
                }
                path.reverse();
                path.push(start);
                return Some(path);
            }
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid_id("a"));
        assert!(valid_id("Step_2"));
        assert!(!valid_id("2a"));
        assert!(!valid_id("_a"));
        assert!(!valid_id("a-b"));
        assert!(!valid_id(""));
    }

    #[test]
    fn cycles() {
        // 0 → 1 → 2 → 0, 3 → 3 is not an edge kind we keep, 4 alone.
        let edges = vec![
            BTreeSet::from([1]),
            BTreeSet::from([2]),
            BTreeSet::from([0]),
            BTreeSet::new(),
            BTreeSet::from([0]),
        ];
        let components = strongly_connected(&edges);
        assert_eq!(components, vec![vec![0, 1, 2]]);
        assert_eq!(
            shortest_cycle(&edges, &components[0], 0),
            Some(vec![0, 1, 2, 0])
        );
    }
}
