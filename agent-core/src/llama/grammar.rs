//! Grammar-constrained tool calls for llama.cpp: a GBNF grammar built from the allowed
//! tools' JSON Schemas (llama.cpp's own schema converter), wrapped in the model's call
//! markers, applied lazily from the moment a call opens.

use llama_cpp_2::model::LlamaModel as RawModel;
use llama_cpp_2::sampling::LlamaSampler;
use serde_json::{json, Value};

use crate::error::RuntimeError;
use crate::generate::{ToolChoice, ToolConstraint};
use crate::tool_format::ToolCallFormat;

/// The rule the converted schema's `root` is renamed to.
const CALL_RULE: &str = "jielong-call";

/// The GBNF grammar of one reply's tool calls in `constraint.format`: one or more
/// blocks (Hermes/generic), one `<|python_tag|>` call (Llama 3) or one `[TOOL_CALLS]`
/// array (Mistral). Its root starts with the opening marker.
pub(crate) fn tool_call_gbnf(constraint: &ToolConstraint) -> Result<String, RuntimeError> {
    let args_key = constraint.format.arguments_key();
    let variants: Vec<Value> = constraint
        .tools
        .iter()
        .map(|tool| {
            json!({
                "type": "object",
                "properties": {
                    "name": {"const": tool.name},
                    args_key: arguments_schema(&tool.parameters),
                },
                "required": ["name", args_key],
                "additionalProperties": false,
            })
        })
        .collect();
    let schema = match variants.as_slice() {
        [one] => one.clone(),
        _ => json!({ "anyOf": variants }),
    };
    let converted = llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|e| {
        RuntimeError::InvalidRequest(format!(
            "cannot build a grammar from the tools' schemas ({}): {e}",
            constraint
                .tools
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let call_rules = rename_root(&converted);
    let open = gbnf_literal(constraint.format.open_marker());
    let root = match constraint.format {
        ToolCallFormat::Hermes | ToolCallFormat::Generic => {
            let close = gbnf_literal(constraint.format.close_marker().unwrap_or_default());
            let more = constraint.max_calls.max(1) - 1;
            format!(
                "root ::= jielong-block ( jielong-ws jielong-block ){{0,{more}}}\n\
                 jielong-block ::= {open} jielong-ws {CALL_RULE} jielong-ws {close}\n"
            )
        }
        ToolCallFormat::Llama3 => format!("root ::= {open} jielong-ws {CALL_RULE}\n"),
        ToolCallFormat::Mistral => format!(
            "root ::= {open} jielong-ws \"[\" jielong-ws {CALL_RULE} ( jielong-ws \",\" jielong-ws {CALL_RULE} )* jielong-ws \"]\"\n"
        ),
    };
    Ok(format!(
        "{root}jielong-ws ::= [ \\t\\n]{{0,4}}\n{call_rules}"
    ))
}

/// The grammar of a reply that is not a call ([`ToolChoice::None`]): up to two blank
/// characters, then text that does not open with a JSON array or code fence and holds
/// no `{` or `<` at all (so neither a call marker nor a JSON call can start anywhere).
const PROSE_GBNF: &str = "root ::= [ \\t\\n]{0,2} [^{\\[<` \\t\\n\\r] [^{<]*\n";

/// The sampler that enforces `constraint`: lazy (triggered by the opening marker, as a
/// token when it is one, else as text) for [`ToolChoice::Auto`], from the first token
/// for [`ToolChoice::Required`] and [`ToolChoice::None`].
pub(crate) fn tool_call_sampler(
    model: &RawModel,
    constraint: &ToolConstraint,
) -> Result<LlamaSampler, RuntimeError> {
    let refused = |e: llama_cpp_2::GrammarError| {
        RuntimeError::InvalidRequest(format!("llama.cpp refused the tool-call grammar: {e}"))
    };
    match constraint.choice {
        ToolChoice::None => LlamaSampler::grammar(model, PROSE_GBNF, "root").map_err(refused),
        ToolChoice::Required => {
            LlamaSampler::grammar(model, &tool_call_gbnf(constraint)?, "root").map_err(refused)
        }
        ToolChoice::Auto => {
            let open = constraint.format.open_marker();
            let tokens = model.vocab().tokenize(open.as_bytes(), false, true);
            let trigger_tokens = if tokens.len() == 1 {
                tokens
            } else {
                Vec::new()
            };
            let trigger_words: Vec<&str> = if trigger_tokens.is_empty() {
                vec![open]
            } else {
                Vec::new()
            };
            let gbnf = tool_call_gbnf(constraint)?;
            LlamaSampler::grammar_lazy(model, &gbnf, "root", trigger_words, &trigger_tokens)
                .map_err(refused)
        }
    }
}

/// A tool's parameter schema as the converter wants it: an object schema (an empty or
/// missing schema means "any object").
fn arguments_schema(parameters: &Value) -> Value {
    match parameters {
        Value::Object(map) if !map.is_empty() => {
            let mut map = map.clone();
            map.remove("$schema");
            Value::Object(map)
        }
        _ => json!({"type": "object"}),
    }
}

/// Renames the converter's `root` rule (and references to it) to [`CALL_RULE`].
fn rename_root(grammar: &str) -> String {
    grammar
        .lines()
        .map(|line| {
            let mut out = String::with_capacity(line.len() + 8);
            let mut in_string = false;
            let mut escaped = false;
            let mut word = String::new();
            let flush = |word: &mut String, out: &mut String| {
                if word == "root" {
                    out.push_str(CALL_RULE);
                } else {
                    out.push_str(word);
                }
                word.clear();
            };
            for c in line.chars() {
                if in_string {
                    out.push(c);
                    match c {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        '"' => in_string = false,
                        _ => {}
                    }
                    continue;
                }
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    word.push(c);
                    continue;
                }
                flush(&mut word, &mut out);
                if c == '"' {
                    in_string = true;
                }
                out.push(c);
            }
            flush(&mut word, &mut out);
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A GBNF string literal.
fn gbnf_literal(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_renamed_outside_strings_only() {
        let g = "root ::= \"{\" space root-x \"root\" root\nspace ::= \" \"?";
        assert_eq!(
            rename_root(g),
            "jielong-call ::= \"{\" space root-x \"root\" jielong-call\nspace ::= \" \"?\n"
        );
        assert_eq!(gbnf_literal("a\"b\\"), "\"a\\\"b\\\\\"");
    }
}
