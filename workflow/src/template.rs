//! Templates and expressions in workflow files: minijinja with strict undefined
//! variables, shared by validation (syntax, which names a template uses) and execution
//! (rendering against the run's values).
//!
//! A template sees `inputs.<name>`, `steps.<id>.output` and, inside a `for_each` step,
//! `item` and `index`. Besides minijinja's built-in filters there is `from_json`
//! (parse a step's JSON output) .

use std::collections::BTreeSet;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::{Map, Value};

/// A template or expression that failed to compile or to render.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// minijinja's description of the fault.
    pub message: String,
    /// The line inside the template (1-based), when known.
    pub line: Option<usize>,
}

impl From<minijinja::Error> for TemplateError {
    fn from(e: minijinja::Error) -> Self {
        let mut message = e.kind().to_string();
        if let Some(detail) = e.detail() {
            message = format!("{message}: {detail}");
        }
        TemplateError {
            message,
            line: e.line(),
        }
    }
}

/// A name a template reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reference {
    /// `inputs.<name>`.
    Input(String),
    /// `steps.<id>` (any attribute of it).
    Step(String),
    /// `inputs` or `steps` without a literal name after it (`steps[x]`): which one
    /// cannot be told before the run.
    Dynamic(String),
    /// `item` or `index` (only defined in `for_each` steps).
    Loop(String),
    /// Any other name (undefined: templates see only the names above).
    Other(String),
}

/// The values a template is rendered against.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scope {
    /// The run's inputs.
    pub inputs: Map<String, Value>,
    /// Finished steps: `{"<id>": {"output": …}}`.
    pub steps: Map<String, Value>,
    /// The current element of a `for_each` list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<Value>,
    /// The current element's position (from 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

/// The template engine of workflows.
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

impl Templates {
    /// The engine: strict undefined (a misspelt name is an error, not empty text),
    /// no auto-escaping, trailing newlines kept, and the `from_json` filter.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.add_filter("from_json", from_json);
        Templates { env }
    }

    /// Compiles a template and lists the names it reads.
    pub fn check_template(&self, source: &str) -> Result<BTreeSet<Reference>, TemplateError> {
        let template = self.env.template_from_str(source)?;
        Ok(self.classify(template.undeclared_variables(true)))
    }

    /// Compiles an expression (`{{ }}` around it allowed) and lists the names it reads.
    pub fn check_expression(&self, source: &str) -> Result<BTreeSet<Reference>, TemplateError> {
        let expression = self.env.compile_expression(strip_braces(source))?;
        Ok(self.classify(expression.undeclared_variables(true)))
    }

    /// Renders a template.
    pub fn render(&self, source: &str, scope: &Scope) -> Result<String, TemplateError> {
        Ok(self.env.render_str(source, scope)?)
    }

    /// Evaluates an expression to a JSON value.
    pub fn eval(&self, source: &str, scope: &Scope) -> Result<Value, TemplateError> {
        let expression = self.env.compile_expression(strip_braces(source))?;
        let value = expression.eval(scope)?;
        serde_json::to_value(&value).map_err(|e| TemplateError {
            message: format!("the expression's value is not data: {e}"),
            line: None,
        })
    }

    /// Evaluates a condition: minijinja truthiness (`false`, `none`, `0`, `""`, `[]`
    /// are false).
    pub fn condition(&self, source: &str, scope: &Scope) -> Result<bool, TemplateError> {
        let expression = self.env.compile_expression(strip_braces(source))?;
        Ok(expression.eval(scope)?.is_true())
    }
}

/// `expr`, `{{ expr }}` and `${{ expr }}` all mean the expression `expr`.
pub fn strip_braces(source: &str) -> &str {
    let trimmed = source.trim();
    let inner = trimmed.strip_prefix('$').unwrap_or(trimmed);
    match inner
        .strip_prefix("{{")
        .and_then(|rest| rest.strip_suffix("}}"))
    {
        Some(expr) if !expr.contains("{{") => expr.trim(),
        _ => trimmed,
    }
}

impl Templates {
    /// Sorts the names a template reads; the engine's globals (`range`, `dict`,
    /// `namespace`, …) are not references.
    fn classify(&self, names: std::collections::HashSet<String>) -> BTreeSet<Reference> {
        let globals: std::collections::HashSet<&str> =
            self.env.globals().map(|(name, _)| name).collect();
        classify(names)
            .into_iter()
            .filter(|r| !matches!(r, Reference::Other(name) if globals.contains(name.as_str())))
            .collect()
    }
}

fn classify(names: std::collections::HashSet<String>) -> BTreeSet<Reference> {
    names
        .into_iter()
        .map(|name| {
            let mut parts = name.splitn(3, '.');
            let head = parts.next().unwrap_or_default();
            match (head, parts.next()) {
                ("inputs", Some(input)) => Reference::Input(input.to_string()),
                ("steps", Some(step)) => Reference::Step(step.to_string()),
                ("inputs" | "steps", None) => Reference::Dynamic(head.to_string()),
                ("item" | "index", _) => Reference::Loop(head.to_string()),
                _ => Reference::Other(head.to_string()),
            }
        })
        .collect()
}

fn from_json(text: &str) -> Result<minijinja::Value, minijinja::Error> {
    let value: Value = serde_json::from_str(text.trim()).map_err(|e| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("from_json: not JSON ({e})"),
        )
    })?;
    Ok(minijinja::Value::from_serialize(&value))
}

impl Templates {
    /// A template's value: a template that is one `{{ expression }}` gives the
    /// expression's value (a list stays a list); any other template gives its text.
    pub fn value_of(&self, source: &str, scope: &Scope) -> Result<Value, TemplateError> {
        let trimmed = source.trim();
        let single = trimmed.starts_with("{{")
            && trimmed.ends_with("}}")
            && trimmed.matches("{{").count() == 1
            && !trimmed.contains("{%");
        if single {
            self.eval(trimmed, scope)
        } else {
            self.render(source, scope).map(Value::String)
        }
    }

    /// [`Templates::value_of`] over every string inside a JSON value.
    pub fn value_with_expressions(
        &self,
        value: &Value,
        scope: &Scope,
    ) -> Result<Value, TemplateError> {
        Ok(match value {
            Value::String(s) => self.value_of(s, scope)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.value_with_expressions(v, scope))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.value_with_expressions(v, scope)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => other.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globals_are_not_references() {
        let t = Templates::new();
        let refs = t
            .check_template(
                "{% for i in range(3) %}{{ i }}{% endfor %}{{ dict(a=1) }}{{ inputs.q }}",
            )
            .unwrap();
        assert_eq!(refs, BTreeSet::from([Reference::Input("q".into())]));
        let refs = t.check_expression("nope").unwrap();
        assert_eq!(refs, BTreeSet::from([Reference::Other("nope".into())]));
    }
}
