//! [`Workflow`]: a parsed and validated workflow file, ready to run.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::catalog::Catalog;
use crate::error::WorkflowError;
use crate::spec::{InputType, WorkflowSpec};
use crate::validate::Graph;

/// A workflow file that parsed and passed validation: every reference resolves, the
/// steps form a graph without cycles, every template compiles.
///
/// ```no_run
/// use jielong_workflow::{RunOptions, Workflow};
///
/// # async fn demo(models: &dyn jielong_workflow::ModelProvider) -> Result<(), Box<dyn std::error::Error>> {
/// let workflow = Workflow::from_file("examples/workflows/math.yaml")?;
/// let report = workflow
///     .run(models, RunOptions::new().input("question", "What is 2**20?"))
///     .await?;
/// println!("{}", report.outputs["answer"]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Workflow {
    spec: WorkflowSpec,
    graph: Graph,
    source: String,
    file: String,
    path: Option<PathBuf>,
    base_dir: PathBuf,
    catalog: Catalog,
}

impl Workflow {
    /// Reads, parses and validates a workflow file. Relative paths inside it (prompt
    /// files, indexes, sources, models) are taken from the file's folder.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Workflow, WorkflowError> {
        Self::from_file_in(path, &Catalog::default())
    }

    /// [`Workflow::from_file`] with the names `catalog` offers (thought spaces of the
    /// program's own).
    pub fn from_file_in(
        path: impl AsRef<Path>,
        catalog: &Catalog,
    ) -> Result<Workflow, WorkflowError> {
        let path = path.as_ref();
        let source = std::fs::read_to_string(path).map_err(|e| WorkflowError::Io {
            path: path.to_path_buf(),
            message: format!("cannot read the workflow: {e}"),
        })?;
        let base_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut workflow =
            Workflow::from_yaml_in(&source, &path.display().to_string(), &base_dir, catalog)?;
        workflow.path = Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
        Ok(workflow)
    }

    /// Parses and validates YAML text; `file` names it in errors, `base_dir` anchors
    /// its relative paths.
    pub fn from_yaml(source: &str, file: &str, base_dir: &Path) -> Result<Workflow, WorkflowError> {
        Self::from_yaml_in(source, file, base_dir, &Catalog::default())
    }

    /// [`Workflow::from_yaml`] with the names `catalog` offers.
    pub fn from_yaml_in(
        source: &str,
        file: &str,
        base_dir: &Path,
        catalog: &Catalog,
    ) -> Result<Workflow, WorkflowError> {
        let spec = crate::parse::parse(source, file)?;
        let graph = crate::validate::validate(&spec, file, base_dir, catalog)?;
        Ok(Workflow {
            catalog: catalog.clone(),
            spec,
            graph,
            source: source.to_string(),
            file: file.to_string(),
            path: None,
            base_dir: base_dir.to_path_buf(),
        })
    }

    /// What the program offers by name (the catalog the workflow was validated with).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The typed spec.
    pub fn spec(&self) -> &WorkflowSpec {
        &self.spec
    }

    /// The steps' dependencies and an order to run them in.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The file name used in messages.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The file's absolute path, when it was read from a file.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The folder relative paths are taken from.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// A path from the workflow file, anchored at its folder.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The SHA-256 of the YAML text: a run can only be resumed by the same workflow.
    pub fn hash(&self) -> String {
        jielong_util::sha256_hex(self.source.as_bytes())
    }

    /// The run's input values: `given` checked against the declared inputs (unknown
    /// names and missing required inputs are errors), converted to each input's type
    /// (text from the command line: `"3"` for a number, `"a,b"` or `["a","b"]` for a
    /// list), defaults filled in.
    pub fn resolve_inputs(
        &self,
        given: &Map<String, Value>,
    ) -> Result<Map<String, Value>, WorkflowError> {
        for name in given.keys() {
            if !self.spec.inputs.contains_key(name) {
                let declared: Vec<&str> = self.spec.inputs.keys().map(String::as_str).collect();
                return Err(WorkflowError::Input {
                    name: name.clone(),
                    message: if declared.is_empty() {
                        "the workflow declares no inputs".to_string()
                    } else {
                        format!(
                            "not an input of the workflow; inputs: {}",
                            declared.join(", ")
                        )
                    },
                });
            }
        }
        let mut values = Map::new();
        for (name, input) in &self.spec.inputs {
            let value = match (given.get(name), &input.default) {
                (Some(v), _) => convert(v, input.kind).map_err(|message| WorkflowError::Input {
                    name: name.clone(),
                    message,
                })?,
                (None, Some(default)) => default.value.clone(),
                (None, None) => {
                    return Err(WorkflowError::Input {
                        name: name.clone(),
                        message: format!(
                            "required (no default); give it with --input {name}=VALUE"
                        ),
                    })
                }
            };
            values.insert(name.clone(), value);
        }
        Ok(values)
    }
}

/// Converts a given value to an input type.
fn convert(value: &Value, kind: InputType) -> Result<Value, String> {
    let text = value.as_str();
    match kind {
        InputType::String => Ok(match value {
            Value::String(_) => value.clone(),
            other => Value::String(other.to_string()),
        }),
        InputType::Number => match (value, text) {
            (Value::Number(_), _) => Ok(value.clone()),
            (_, Some(t)) => t
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(|n| {
                    // Keep whole numbers integral: "3" stays 3, not 3.0.
                    t.trim()
                        .parse::<i64>()
                        .map_or(Value::Number(n), Value::from)
                })
                .ok_or_else(|| format!("expected a number, got {t:?}")),
            _ => Err(format!("expected a number, got {value}")),
        },
        InputType::Integer => match (value, text) {
            (Value::Number(n), _) if n.is_i64() || n.is_u64() => Ok(value.clone()),
            (_, Some(t)) => t
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("expected a whole number, got {t:?}")),
            _ => Err(format!("expected a whole number, got {value}")),
        },
        InputType::Boolean => match (value, text.map(|t| t.trim().to_ascii_lowercase())) {
            (Value::Bool(_), _) => Ok(value.clone()),
            (_, Some(t)) if ["true", "yes", "1", "on"].contains(&t.as_str()) => {
                Ok(Value::Bool(true))
            }
            (_, Some(t)) if ["false", "no", "0", "off"].contains(&t.as_str()) => {
                Ok(Value::Bool(false))
            }
            _ => Err(format!("expected true or false, got {value}")),
        },
        InputType::List => match (value, text) {
            (Value::Array(_), _) => Ok(value.clone()),
            (_, Some(t)) if t.trim_start().starts_with('[') => {
                match serde_json::from_str::<Value>(t) {
                    Ok(list @ Value::Array(_)) => Ok(list),
                    _ => Err(format!("expected a JSON list, got {t:?}")),
                }
            }
            (_, Some(t)) => Ok(Value::Array(
                t.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_string()))
                    .collect(),
            )),
            _ => Err(format!("expected a list, got {value}")),
        },
    }
}
