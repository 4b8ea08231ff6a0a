//! Grammar-constrained tool calls for llama.cpp: a GBNF grammar built from the allowed
//! tools' JSON Schemas (llama.cpp's own schema converter), wrapped in the model's call
//! markers, applied lazily from the moment a call opens.

use llama_cpp_2::model::LlamaModel as RawModel;
use llama_cpp_2::sampling::LlamaSampler;
use serde_json::{json, Value};

use jielong_chat::chat::ToolSpec;
use jielong_chat::error::RuntimeError;
use jielong_chat::generate::{ReplyFormat, ToolChoice, ToolConstraint};
use jielong_chat::quotes::Quotes;
use jielong_chat::tool_format::ToolCallFormat;

/// The rule the converted schema's `root` is renamed to.
const CALL_RULE: &str = "jielong-call";

/// The GBNF grammar of one reply's tool calls in `constraint.format`: one or more
/// blocks (Hermes/generic), one `<|python_tag|>` call (Llama 3) or one `[TOOL_CALLS]`
/// array (Mistral). Its root starts with the opening marker.
pub(crate) fn tool_call_gbnf(constraint: &ToolConstraint) -> Result<String, RuntimeError> {
    let variants: Vec<Value> = constraint
        .tools
        .iter()
        .map(|tool| call_schema(constraint.format, tool))
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
/// characters, then text that does not open with a JSON object or array or a code
/// fence (a bare call) and never contains the call marker `open`. Any other
/// character — `<`, `{`, brackets — is free, so an answer can say `x < 3` or show a
/// dict.
///
/// The marker is excluded character by character: after a prefix of it, the next
/// character either continues the prefix, restarts it (the first character again)
/// or leaves it. This needs the marker's first character not to recur inside it
/// (true of every call marker); otherwise that character is refused outright.
pub(crate) fn prose_gbnf(open: &str) -> String {
    let chars: Vec<char> = open.chars().collect();
    let class = |c: &[char]| -> String {
        c.iter()
            .map(|&c| match c {
                '\\' | ']' | '[' | '^' | '-' => format!("\\{c}"),
                '\n' => "\\n".into(),
                '\t' => "\\t".into(),
                '\r' => "\\r".into(),
                c => c.to_string(),
            })
            .collect()
    };
    let lit = |c: char| gbnf_literal(&c.to_string());
    let Some(&first) = chars.first() else {
        return "root ::= [ \\t\\n]{0,2} [^{\\[` \\t\\n\\r] [^\\x00]*\n".into();
    };
    let recurs = chars[1..].contains(&first);
    let mut g = format!(
        "root ::= [ \\t\\n]{{0,2}} jielong-first jielong-text\n\
         jielong-first ::= [^{{\\[` \\t\\n\\r{}]{}\n\
         jielong-text ::= ( [^{}]{} )*\n",
        class(&[first]),
        if recurs {
            String::new()
        } else {
            // The marker's first character, then the state after it.
            format!(" | {} jielong-m1", lit(first))
        },
        class(&[first]),
        if recurs {
            String::new()
        } else {
            // The marker's first character, then the state after it.
            format!(" | {} jielong-m1", lit(first))
        },
    );
    if !recurs {
        // jielong-m<i>: the first i characters of the marker were just written.
        let n = chars.len();
        for (i, &next) in chars.iter().enumerate().skip(1) {
            let leave = format!("[^{}]", class(&[next, first]));
            let mut alternatives = vec![leave, format!("{} jielong-m1", lit(first))];
            if i + 1 < n {
                alternatives.push(format!("{} jielong-m{}", lit(next), i + 1));
            }
            g.push_str(&format!("jielong-m{i} ::= {}\n", alternatives.join(" | ")));
        }
        if n == 1 {
            // A one-character marker: that character never appears.
            g = format!(
                "root ::= [ \\t\\n]{{0,2}} [^{{\\[` \\t\\n\\r{0}] [^{0}]*\n",
                class(&[first])
            );
        }
    }
    g
}

/// The sampler that enforces `constraint`: lazy (triggered by the opening marker, as a
/// token when it is one, else as text) for [`ToolChoice::Auto`], from the first token
/// for [`ToolChoice::Required`] and [`ToolChoice::None`].
///
/// With a reply format ([`ToolConstraint::reply`]) the grammar applies from the first
/// token: the reply is JSON of that shape, or (for [`ToolChoice::Auto`] with tools)
/// the reply is that or calls; [`ToolChoice::Required`] still means calls only.
pub(crate) fn tool_call_sampler(
    model: &RawModel,
    constraint: &ToolConstraint,
) -> Result<LlamaSampler, RuntimeError> {
    let refused = |e: llama_cpp_2::GrammarError| {
        RuntimeError::InvalidRequest(format!("llama.cpp refused the tool-call grammar: {e}"))
    };
    if let Some(reply) = &constraint.reply {
        let reply_rules = reply_gbnf(reply)?;
        let gbnf = match constraint.choice {
            ToolChoice::Required if !constraint.tools.is_empty() => tool_call_gbnf(constraint)?,
            ToolChoice::Auto if !constraint.tools.is_empty() => {
                // The calls' grammar has the root; the reply's rules are prefixed.
                let calls =
                    tool_call_gbnf(constraint)?.replacen("root ::= ", "jielong-calls ::= ", 1);
                format!("root ::= {REPLY_RULE} | jielong-calls\n{calls}{reply_rules}")
            }
            _ => format!("root ::= {REPLY_RULE}\n{reply_rules}"),
        };
        return LlamaSampler::grammar(model, &gbnf, "root").map_err(refused);
    }
    match constraint.choice {
        ToolChoice::None => {
            LlamaSampler::grammar(model, &prose_gbnf(constraint.format.open_marker()), "root")
                .map_err(refused)
        }
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

/// The rule a reply format's converted schema starts with.
const REPLY_RULE: &str = "jr-root";

/// The GBNF rules of a reply in `format` (llama.cpp's schema converter), every rule
/// name prefixed with `jr-` so they can sit beside the calls' rules; the start rule
/// is [`REPLY_RULE`].
pub(crate) fn reply_gbnf(format: &ReplyFormat) -> Result<String, RuntimeError> {
    let schema = format.schema();
    if !schema.is_object() && !schema.is_boolean() {
        return Err(RuntimeError::InvalidRequest(
            "the response format's JSON Schema must be an object".into(),
        ));
    }
    let converted = llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|e| {
        RuntimeError::InvalidRequest(format!(
            "cannot build a grammar from the response format's JSON Schema: {e}"
        ))
    })?;
    Ok(prefix_rules(&converted, "jr-"))
}

/// Prefixes every rule name in `grammar` (outside string literals, character
/// classes and `{m,n}` repetitions) with `prefix`.
fn prefix_rules(grammar: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(grammar.len() * 2);
    let mut chars = grammar.chars();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if !word.is_empty() {
            out.push_str(prefix);
            out.push_str(word);
            word.clear();
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' | '[' | '{' => {
                flush(&mut word, &mut out);
                let close = match c {
                    '"' => '"',
                    '[' => ']',
                    _ => '}',
                };
                out.push(c);
                while let Some(d) = chars.next() {
                    out.push(d);
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            out.push(e);
                        }
                    } else if d == close {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => word.push(c),
            c => {
                flush(&mut word, &mut out);
                out.push(c);
            }
        }
    }
    flush(&mut word, &mut out);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The JSON Schema of one call of `tool` in `format`: `{"name": <the tool>,
/// <arguments key>: <its parameters>}`.
fn call_schema(format: ToolCallFormat, tool: &ToolSpec) -> Value {
    let args_key = format.arguments_key();
    json!({
        "type": "object",
        "properties": {
            "name": {"const": tool.name},
            args_key: arguments_schema(&tool.parameters),
        },
        "required": ["name", args_key],
        "additionalProperties": false,
    })
}

/// Whether calls of `tool` in `format` can be held to its schema: `Err` with
/// llama.cpp's reason when its converter refuses the schema. For callers that want to
/// refuse such a tool before any request is made (a server's 400).
pub fn check_tool_schema(format: ToolCallFormat, tool: &ToolSpec) -> Result<(), String> {
    check_json_schema(&call_schema(format, tool))
}

/// Whether llama.cpp's converter turns `schema` into a grammar (`Err`: why not).
pub fn check_json_schema(schema: &Value) -> Result<(), String> {
    llama_cpp_2::json_schema_to_grammar(&schema.to_string())
        .map(|_| ())
        .map_err(|e| e.to_string())
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
            let mut quotes = Quotes::default();
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
                let opening = !quotes.inside();
                if quotes.feed(c) {
                    if opening {
                        flush(&mut word, &mut out);
                    }
                    out.push(c);
                    continue;
                }
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    word.push(c);
                    continue;
                }
                flush(&mut word, &mut out);
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

    #[test]
    fn prose_grammar_excludes_the_marker_only() {
        let g = prose_gbnf("<tool_call>");
        assert!(
            g.contains("jielong-m1 ::= [^t<] | \"<\" jielong-m1 | \"t\" jielong-m2"),
            "{g}"
        );
        assert!(
            g.contains("jielong-m10 ::= [^><] | \"<\" jielong-m1\n"),
            "{g}"
        );
        assert!(
            g.contains("jielong-text ::= ( [^<] | \"<\" jielong-m1 )*"),
            "{g}"
        );
        assert!(
            g.contains("jielong-first ::= [^{\\[` \\t\\n\\r<] | \"<\" jielong-m1\n"),
            "{g}"
        );
    }

    #[test]
    fn reply_rules_are_prefixed_outside_literals_and_classes() {
        let g = "root ::= \"{\" space [a-z\\]] x-y{1,15} \"root\"\nspace ::= \" \"?";
        assert_eq!(
            prefix_rules(g, "jr-"),
            "jr-root ::= \"{\" jr-space [a-z\\]] jr-x-y{1,15} \"root\"\njr-space ::= \" \"?\n"
        );
        let rules = reply_gbnf(&ReplyFormat::JsonObject).expect("converts");
        assert!(
            rules.starts_with("jr-") || rules.contains("jr-root ::="),
            "{rules}"
        );
        assert!(reply_gbnf(&ReplyFormat::JsonSchema(serde_json::json!("nope"))).is_err());
    }
}
