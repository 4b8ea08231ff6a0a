//! Reading a workflow file: YAML text to a [`WorkflowSpec`], with every fault the
//! parser finds reported as a [`Diagnostic`] (file, line, column, field path, one-line
//! message); and the JSON Schema of the format.
//!
//! serde stops at the first structural fault (invalid YAML, an unknown key, a wrong
//! type, a missing field), so a file that does not parse yields one diagnostic; the
//! checks that need the whole spec ([`crate::validate`]) report every fault at once.
//!
//! Workflow files are small, so the parser runs under tight limits: a few MiB of text,
//! a bounded number of nodes, aliases and alias expansions (no "billion laughs"), and a
//! bounded nesting depth.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_path_to_error::{Path, Segment, Track};
use serde_saphyr::{Budget, Error as YamlError, Location, MessageFormatter, Options, Spanned};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::spec::WorkflowSpec;

/// The largest workflow file accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 4 * 1024 * 1024;

/// `$id` of the JSON Schema returned by [`schema`].
pub const SCHEMA_ID: &str = "https://example.invalid/jielong/workflow.schema.json";

/// Parses a workflow file. `file` names it in diagnostics (`<string>` for text that
/// comes from nowhere in particular).
///
/// The spec's [`WorkflowSpec::source_map`] is filled, so later checks can point at
/// values that are not [`Spanned`].
pub fn parse(source: &str, file: &str) -> Result<WorkflowSpec, Diagnostics> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(Diagnostics(vec![Diagnostic {
            file: file.to_string(),
            line: 1,
            column: 1,
            field: String::new(),
            message: format!(
                "the file is too large for a workflow: {} bytes, at most {MAX_SOURCE_BYTES}",
                source.len()
            ),
        }]));
    }
    let mut failed_at: Option<Path> = None;
    let result = serde_saphyr::with_deserializer_from_str_with_options(source, options(), |de| {
        let mut track = Track::new();
        let spec =
            WorkflowSpec::deserialize(serde_path_to_error::Deserializer::new(de, &mut track));
        if spec.is_err() {
            failed_at = Some(track.path());
        }
        spec
    });
    match result {
        Ok(mut spec) => {
            spec.source_map = SourceMap::build(source);
            Ok(spec)
        }
        Err(err) => Err(Diagnostics(vec![diagnostic(
            &err,
            failed_at.as_ref(),
            source,
            file,
        )])),
    }
}

/// The JSON Schema (draft 2020-12) of workflow files, with `$id` [`SCHEMA_ID`] and a
/// title; editors use it for completion and checking.
pub fn schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(WorkflowSpec))
        .unwrap_or_else(|_| serde_json::Value::Object(serde_json::Map::new()));
    if let Some(object) = schema.as_object_mut() {
        // `$schema` first, then `$id` and the title, then the rest as derived.
        let rest = std::mem::take(object);
        if let Some(dialect) = rest.get("$schema") {
            object.insert("$schema".into(), dialect.clone());
        }
        object.insert("$id".into(), SCHEMA_ID.into());
        object.insert("title".into(), "Jielong workflow".into());
        for (key, value) in rest {
            if key != "$schema" && key != "title" {
                object.insert(key, value);
            }
        }
    }
    schema
}

/// Where the parts of a workflow file are: field paths (`steps[1].args.query`,
/// `agents.writer`) to the locations of their keys and values.
///
/// Filled by [`parse`]; empty for a spec built any other way (locations are then
/// unknown, 0:0).
#[derive(Clone, Default)]
pub struct SourceMap {
    places: HashMap<String, Place>,
}

/// Where one node of the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The key naming it, for a mapping entry.
    pub key: Option<Location>,
    /// The value (for a mapping or a list, where it starts).
    pub value: Location,
}

impl fmt::Debug for SourceMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceMap({} places)", self.places.len())
    }
}

impl SourceMap {
    /// Indexes a YAML text; best effort: a text that does not parse gives an empty map.
    pub fn build(source: &str) -> SourceMap {
        let mut map = SourceMap::default();
        let root = serde_saphyr::from_str_with_options::<Spanned<Node>>(source, options());
        if let Ok(root) = root {
            map.insert(String::new(), None, root);
        }
        map
    }

    fn insert(&mut self, path: String, key: Option<Location>, node: Spanned<Node>) {
        let value = node.referenced;
        match node.value {
            Node::Map(entries) => {
                for (k, v) in entries {
                    let child = if path.is_empty() {
                        k.value.clone()
                    } else {
                        format!("{path}.{}", k.value)
                    };
                    self.insert(child, Some(k.referenced), v);
                }
            }
            Node::Seq(items) => {
                for (i, v) in items.into_iter().enumerate() {
                    self.insert(format!("{path}[{i}]"), None, v);
                }
            }
            Node::Leaf => {}
        }
        self.places.insert(path, Place { key, value });
    }

    /// Where the node at `path` is (`""` is the whole document).
    pub fn place(&self, path: &str) -> Option<Place> {
        self.places.get(path).copied()
    }

    /// Where the value at `path` starts.
    pub fn value(&self, path: &str) -> Option<Location> {
        self.place(path).map(|p| p.value)
    }

    /// Where the entry at `path` is named: its key, or for a list element its value.
    pub fn entry(&self, path: &str) -> Option<Location> {
        self.place(path).map(|p| p.key.unwrap_or(p.value))
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }
}

/// A YAML node without its scalar values: the shape [`SourceMap`] indexes.
enum Node {
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            let key = Spanned::new(key.value.0, key.referenced, key.defined);
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key as text (scalar keys only).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<KeyText, E> {
                Ok(KeyText(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".to_string()))
            }
        }
        // As text, the way `String` keys of the spec are read (`1.0:` is "1.0").
        deserializer.deserialize_string(KeyVisitor)
    }
}

/// Parser settings: no snippets (diagnostics are one line), YAML 1.2 booleans (only
/// `true` and `false`: `answer: no` is the text "no", not false), and limits sized for
/// workflow files.
fn options() -> Options {
    let mut budget = Budget::default();
    budget.max_events = 200_000;
    budget.max_nodes = 100_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_recorded_anchor_events = 100_000;
    budget.max_recorded_anchor_bytes = MAX_SOURCE_BYTES;
    budget.max_depth = 48;
    budget.max_total_scalar_bytes = 2 * MAX_SOURCE_BYTES;
    budget.max_merge_keys = 1_000;
    let mut options = Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = 100_000;
    options.alias_limits.max_replay_stack_depth = 16;
    options.alias_limits.max_alias_expansions_per_anchor = 1_000;
    options.with_snippet = false;
    options.strict_booleans = true;
    options
}

/// The diagnostic for a parser error.
fn diagnostic(err: &YamlError, path: Option<&Path>, source: &str, file: &str) -> Diagnostic {
    let inner = innermost(err);
    let mut location = err.location().unwrap_or(Location::UNKNOWN);
    let mut field = path.map(field_path).unwrap_or_default();
    let message = match inner {
        YamlError::SerdeUnknownField {
            field: name,
            expected,
            ..
        } => {
            // The path already ends with the unknown key.
            let mut message = format!("unknown field `{name}`");
            if expected.is_empty() {
                message.push_str(", no fields are expected here");
            } else {
                message.push_str(", expected one of ");
                message.push_str(&backticked(expected));
                if let Some(close) = closest(name, expected) {
                    message.push_str(&format!(" (did you mean `{close}`?)"));
                }
            }
            message
        }
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => format!(
            "unknown value `{variant}`, expected one of {}",
            backticked(expected)
        ),
        YamlError::SerdeMissingField { field: name, .. } => {
            // Point at the mapping that lacks the field, not at its last key.
            if let Some(place) = SourceMap::build(source).value(&field) {
                location = place;
            }
            field = join(&field, name);
            format!("missing field `{name}`")
        }
        YamlError::DuplicateMappingKey { key, .. } => {
            if let Some(key) = key {
                field = join(&field, key);
                format!("duplicate key `{key}`")
            } else {
                "duplicate key".to_string()
            }
        }
        YamlError::InvalidScalar { ty, location: at } => {
            let mut message = format!("expected {}", friendly_type(ty));
            if let Some(text) = source_text(source, at) {
                message.push_str(&format!(", found `{text}`"));
            }
            message
        }
        YamlError::Unexpected { expected, .. } => match *expected {
            // serde-saphyr says "string scalar" for numbers too.
            "string scalar" | "scalar" => found_instead("a single value", source, &location),
            "mapping start" => found_instead("a mapping (`key: value` lines)", source, &location),
            "sequence start" => found_instead("a list", source, &location),
            other => format!("expected {other}"),
        },
        YamlError::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => format!("expected {}, found {unexpected}", friendly_type(expected)),
        YamlError::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => format!(
            "invalid value {unexpected}, expected {}",
            friendly_type(expected)
        ),
        YamlError::Eof { .. } => {
            location = Location::UNKNOWN;
            "the file is empty: a workflow needs at least `name` and `steps`".to_string()
        }
        YamlError::MultipleDocuments { .. } => {
            "a workflow file holds one YAML document; this is a second one".to_string()
        }
        YamlError::ExternalMessage { .. } => {
            format!("invalid YAML: {}", user_message(inner))
        }
        _ => user_message(inner),
    };
    let (line, column) = if location == Location::UNKNOWN {
        (1, 1)
    } else {
        (location.line(), location.column())
    };
    Diagnostic {
        file: file.to_string(),
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
        field,
        message: one_line(&message),
    }
}

/// The error beneath alias and snippet wrappers.
fn innermost(mut err: &YamlError) -> &YamlError {
    loop {
        err = err.without_snippet();
        match err {
            YamlError::AliasError { error, .. } => err = error,
            _ => return err,
        }
    }
}

/// serde-saphyr's user-facing text for an error, without location.
fn user_message(err: &YamlError) -> String {
    serde_saphyr::UserMessageFormatter
        .format_message(err)
        .into_owned()
}

/// Control characters escaped, line breaks joined: diagnostics are one line.
fn one_line(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, line) in message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push_str("; ");
        }
        for c in line.chars() {
            if c.is_control() {
                out.extend(c.escape_debug());
            } else {
                out.push(c);
            }
        }
    }
    out
}

/// `a`, `b`, `c`.
fn backticked(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The expected name nearest to a misspelt one (edit distance at most 2), if any.
pub(crate) fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, c)| *d <= 2 && *d < c.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// Rust type names as the user knows them.
fn friendly_type(ty: &str) -> Cow<'_, str> {
    match ty {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".into(),
        "f32" | "f64" | "floating point" => "a number".into(),
        "bool" | "boolean" | "a boolean" => "`true` or `false`".into(),
        "a string" | "string" => "text".into(),
        other => other.into(),
    }
}

/// "expected X, found Y", Y read from the source at `location`: a list, a mapping or
/// the scalar's text.
fn found_instead(expected: &str, source: &str, location: &Location) -> String {
    let rest = location
        .span()
        .byte_offset()
        .and_then(|at| source.get(usize::try_from(at).ok()?..))
        .unwrap_or_default();
    let block_item = rest.starts_with("- ") || rest.starts_with("-\n");
    let found = match rest.chars().next() {
        Some('[') => Some("a list".to_string()),
        Some('-') if block_item => Some("a list".to_string()),
        Some('{') => Some("a mapping".to_string()),
        _ => source_text(source, location).map(|text| format!("`{text}`")),
    };
    match found {
        Some(found) if !expected.contains(found.as_str()) => {
            format!("expected {expected}, found {found}")
        }
        _ => format!("expected {expected}"),
    }
}

/// The source text of a scalar at `location`, when short and on one line.
fn source_text<'a>(source: &'a str, location: &Location) -> Option<&'a str> {
    let span = location.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    let text = source.get(start..start.checked_add(len)?)?.trim();
    (!text.is_empty() && text.len() <= 60 && !text.contains('\n')).then_some(text)
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// The positions in [`WorkflowSpec`] that hold a [`Spanned`] value: serde-saphyr
/// deserializes those as a small struct whose `value` field shows up in error paths,
/// and that segment is dropped. `*` is any key or index.
const SPANNED_AT: &[&[&str]] = &[
    &["steps", "*", "id"],
    &["steps", "*", "agent"],
    &["steps", "*", "tool"],
    &["steps", "*", "input"],
    &["steps", "*", "args"],
    &["steps", "*", "needs", "*"],
    &["steps", "*", "when"],
    &["steps", "*", "for_each"],
    &["outputs", "*"],
    &["models", "*"],
    &["models", "*", "model"],
    &["models", "*", "base_url"],
    &["models", "*", "api_key_env"],
    &["agents", "*", "strategy"],
    &["agents", "*", "model"],
    &["agents", "*", "system_file"],
    &["agents", "*", "technique"],
    &["agents", "*", "instruction"],
    &["agents", "*", "instruction_file"],
    &["agents", "*", "few_shot"],
    &["agents", "*", "tools", "*"],
    &["inputs", "*", "default"],
    &["tools", "rag_search", "index"],
    &["tools", "rag_search", "sources", "*"],
];

/// `steps[1].agent` from serde_path_to_error's path, without serde-saphyr's
/// `Spanned` internals and unknown trailing segments.
fn field_path(path: &Path) -> String {
    let mut segments = path.iter().peekable();
    let mut kept: Vec<String> = Vec::new();
    while let Some(segment) = segments.next() {
        kept.push(match segment {
            Segment::Seq { index } => format!("[{index}]"),
            Segment::Map { key } => key.clone(),
            Segment::Enum { variant } => variant.clone(),
            Segment::Unknown => "?".to_string(),
        });
        if spanned_prefix(&kept) {
            if let Some(Segment::Map { key }) = segments.peek() {
                if key == "value" {
                    segments.next();
                }
            }
        }
    }
    while kept.last().is_some_and(|s| s == "?") {
        kept.pop();
    }
    let mut out = String::new();
    for segment in kept {
        if !segment.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(&segment);
    }
    out
}

/// Whether a path ends at one of the [`SPANNED_AT`] positions.
fn spanned_prefix(path: &[String]) -> bool {
    SPANNED_AT.iter().any(|pattern| {
        pattern.len() == path.len() && pattern.iter().zip(path).all(|(p, s)| *p == "*" || p == s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("moddel", "model"), 1);
        assert_eq!(closest("moddel", &["model", "system"]), Some("model"));
        assert_eq!(closest("xyz", &["model", "system"]), None);
    }
}
