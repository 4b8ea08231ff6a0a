//! `--settings FILE`: an agent's settings ([`AgentSettings`]) from YAML or JSON, for
//! `jielong run` and `jielong eval` — the same keys a workflow agent's `settings:`
//! takes. The file's keys go over what the flags say by default; a flag given on the
//! command line goes over the file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use jielong::agent::{AgentSettings, Strategy};
use serde_json::{Map, Value};

/// A settings file: the keys it gives.
#[derive(Debug, Clone)]
pub struct SettingsFile {
    path: PathBuf,
    keys: Map<String, Value>,
}

/// The settings key (and, for sampling, the key inside it) each command-line flag
/// sets.
const FLAG_KEYS: &[(&str, &[&str])] = &[
    ("max_steps", &["max_steps"]),
    ("max_tokens", &["max_tokens_per_step"]),
    ("strategy", &["strategy"]),
    ("samples", &["strategy"]),
    ("code_actions", &["code_actions"]),
    ("temperature", &["sampling", "temperature"]),
    ("top_k", &["sampling", "top_k"]),
    ("top_p", &["sampling", "top_p"]),
    ("min_p", &["sampling", "min_p"]),
    ("seed", &["sampling", "seed"]),
];

impl SettingsFile {
    /// Reads `path` (`.json` as JSON, anything else as YAML): a mapping whose keys are
    /// [`AgentSettings`]' own, checked now so a wrong key or value fails before the
    /// model loads.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the settings file {}", path.display()))?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let value: Value = if is_json {
            serde_json::from_str(&text).map_err(anyhow::Error::from)
        } else {
            serde_saphyr::from_str(&text).map_err(anyhow::Error::from)
        }
        .with_context(|| format!("the settings file {} is not valid", path.display()))?;
        let keys = match value {
            Value::Object(keys) => keys,
            Value::Null => Map::new(),
            other => anyhow::bail!(
                "the settings file {} must be a mapping of agent settings, not {}",
                path.display(),
                kind(&other)
            ),
        };
        let file = Self {
            path: path.to_path_buf(),
            keys,
        };
        file.over(&AgentSettings::default(), &[])?;
        Ok(file)
    }

    /// `base` (the settings the flags give) with this file's keys over it (a
    /// `sampling` mapping key by key), then the flags in `given` (given on the command
    /// line; clap's argument ids) over those. The framing is `base`'s.
    pub fn over(&self, base: &AgentSettings, given: &[String]) -> anyhow::Result<AgentSettings> {
        let flags = serde_json::to_value(base).context("cannot write the agent settings")?;
        let mut merged = flags.clone();
        for (key, value) in &self.keys {
            match (merged.get_mut(key), value) {
                (Some(Value::Object(inner)), Value::Object(over)) if key == "sampling" => {
                    inner.extend(over.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                _ => {
                    merged[key.as_str()] = value.clone();
                }
            }
        }
        for (flag, path) in FLAG_KEYS {
            if !given.iter().any(|g| g == flag) {
                continue;
            }
            if let Some(value) = pointer(&flags, path) {
                if let Some(slot) = pointer_mut(&mut merged, path) {
                    *slot = value.clone();
                }
            }
        }
        let mut settings: AgentSettings = serde_path_to_error::deserialize(merged)
            .with_context(|| format!("the settings file {}", self.path.display()))?;
        settings.framing = base.framing.clone();
        settings
            .validate()
            .with_context(|| format!("the settings file {}", self.path.display()))?;
        Ok(settings)
    }

    /// The strategy the file gives, if it gives one.
    pub fn strategy(&self) -> anyhow::Result<Option<Strategy>> {
        self.keys
            .get("strategy")
            .map(|value| {
                serde_json::from_value(value.clone())
                    .with_context(|| format!("the settings file {}: strategy", self.path.display()))
            })
            .transpose()
    }
}

fn pointer<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

fn pointer_mut<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, key| v.get_mut(key))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> anyhow::Result<SettingsFile> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, text)?;
        SettingsFile::read(&path)
    }

    #[test]
    fn the_file_goes_over_defaults_and_given_flags_over_the_file() {
        let settings = file(
            "max_steps: 3\nmax_wall_time: 90s\nsampling: {temperature: 0.7}\nstrategy: written\n",
        )
        .expect("a settings file");
        let base = AgentSettings {
            max_steps: 12,
            max_tokens_per_step: 256,
            ..AgentSettings::default()
        };
        let got = settings.over(&base, &[]).expect("settings");
        assert_eq!(got.max_steps, 3);
        assert_eq!(got.max_tokens_per_step, 256, "a key the file leaves out");
        assert_eq!(got.max_wall_time, Some(std::time::Duration::from_secs(90)));
        assert_eq!(got.sampling.temperature, 0.7);
        assert_eq!(
            got.sampling.top_k, base.sampling.top_k,
            "sampling key by key"
        );
        assert_eq!(got.strategy.to_string(), "written");
        let given = vec!["max_steps".to_string(), "temperature".to_string()];
        let got = settings.over(&base, &given).expect("settings");
        assert_eq!(got.max_steps, 12, "a flag given on the command line wins");
        assert_eq!(got.sampling.temperature, base.sampling.temperature);
        assert_eq!(got.max_wall_time, Some(std::time::Duration::from_secs(90)));
    }

    #[test]
    fn a_wrong_key_or_value_says_which() {
        let cases = [
            ("max_step: 3\n", "unknown field `max_step`"),
            ("max_steps: many\n", "max_steps"),
            ("max_steps: 0\n", "max_steps must be at least 1"),
            ("strategy: vote(written, nonsense)\n", "nonsense"),
            (
                "- 1\n- 2\n",
                "must be a mapping of agent settings, not a list",
            ),
            ("max_wall_time: soon\n", "invalid duration"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", file(text).expect_err(text));
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.contains("agent.yaml"), "{text:?}: {err}");
        }
    }
}
