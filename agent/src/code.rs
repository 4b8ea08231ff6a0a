//! Code the model writes in its reply: fenced ```` ```python ```` blocks (the
//! code-native action format), the numbers of an answer and of tool results (the
//! grounding check), and call-shaped blobs turned into code.

use std::ops::Range;

use jielong_chat::numbers::{number_spans, numbers};
use serde_json::Value;

/// A closed ```` ```python ```` block in a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CodeBlock {
    /// The code between the fences (without the final newline).
    pub(crate) code: String,
    /// Byte offset just past the closing fence's backticks.
    pub(crate) end: usize,
}

/// The languages whose fenced blocks run as Python.
fn is_python_tag(tag: &str) -> bool {
    matches!(
        tag.trim().to_ascii_lowercase().as_str(),
        "python" | "py" | "python3"
    )
}

/// The first ```` ```python ```` block of `text` that is closed (a line starting with
/// three backticks after it). Blocks in other languages are skipped whole. A closing
/// fence counts as soon as its backticks are there, so a streamed reply can be cut
/// right after it.
pub(crate) fn closed_python_block(text: &str) -> Option<CodeBlock> {
    let mut offset = 0;
    let mut open: Option<(bool, usize)> = None; // (python, code start)
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix("```") else {
            continue;
        };
        match open {
            None => {
                // An opening fence needs its whole line (the tag) to be known.
                if !line.ends_with('\n') {
                    return None;
                }
                open = Some((is_python_tag(rest), offset));
            }
            Some((python, code_start)) => {
                if python {
                    let fence = start + (line.len() - trimmed.len());
                    let code = text[code_start..start].trim_end_matches('\n').to_string();
                    return Some(CodeBlock {
                        code,
                        end: fence + 3,
                    });
                }
                // Only a bare fence closes a block in another language.
                if rest.trim().is_empty() {
                    open = None;
                }
            }
        }
    }
    None
}

/// Where the block after the last one of `text` would start: the text after the last
/// ```` ```output ```` block, which is what the model said after its last result.
pub(crate) fn after_last_output(text: &str) -> &str {
    match text.rfind("```output\n") {
        Some(at) => {
            let rest = &text[at + "```output\n".len()..];
            match rest.find("\n```") {
                Some(close) => &rest[close + 4..],
                None => "",
            }
        }
        None => text,
    }
}

/// Whether two numbers are the same result: equal within a relative 1e-6, or
/// `claimed` is `computed` rounded to as many decimals as `claimed` has (up to four).
pub(crate) fn same_number(claimed: f64, computed: f64) -> bool {
    if (claimed - computed).abs() <= 1e-6 * claimed.abs().max(1.0) {
        return true;
    }
    let Some(decimals) = (0..=4).find(|d| {
        let scaled = claimed * 10f64.powi(*d);
        (scaled - scaled.round()).abs() < 1e-6
    }) else {
        return false;
    };
    let scale = 10f64.powi(decimals);
    ((computed * scale).round() / scale - claimed).abs() <= 1e-9 * claimed.abs().max(1.0)
}

/// The grounding check: whether the numbers an answer states are backed by what the
/// tools returned. An answer without numbers is grounded (nothing to check); otherwise
/// one of its numbers must be a number of a tool result, or every one of them must
/// already be in the question (a restatement, not a computation).
pub(crate) fn is_grounded(answer: &str, question: &str, results: &[&str]) -> bool {
    let claimed = numbers(answer);
    if claimed.is_empty() {
        return true;
    }
    let computed: Vec<f64> = results.iter().flat_map(|r| numbers(r)).collect();
    if claimed
        .iter()
        .any(|c| computed.iter().any(|r| same_number(*c, *r)))
    {
        return true;
    }
    let given = numbers(question);
    claimed
        .iter()
        .all(|c| given.iter().any(|g| same_number(*c, *g)))
}

/// The answer with a check's result in it, when a check in code printed one number
/// (`result`) and the answer still states another: the one number of the answer the
/// question does not give becomes the result, rounded as the question asks ("By 1.4%"
/// and `14.910659272951316` for "… Round to 1 decimal place." give "By 14.9%"); with
/// no such number or several, the answer is the result alone. `None` when the result
/// is not one number.
pub(crate) fn carry_result(answer: &str, question: &str, result: &str) -> Option<String> {
    let [value] = numbers(result)[..] else {
        return None;
    };
    let shown = shown_number(value, question);
    let given = numbers(question);
    let own: Vec<Range<usize>> = number_spans(answer)
        .into_iter()
        .filter(|(_, n)| !given.iter().any(|g| same_number(*n, *g)))
        .map(|(span, _)| span)
        .collect();
    Some(match own.as_slice() {
        [span] => format!("{}{shown}{}", &answer[..span.start], &answer[span.end..]),
        _ => shown,
    })
}

/// `value` written as an answer gives it: rounded to the decimals the question asks for
/// ("to 2 decimal places", "to the nearest tenth", "nearest whole number"), else
/// without float noise (at most four decimals, no trailing zeros).
fn shown_number(value: f64, question: &str) -> String {
    let decimals = asked_decimals(question).unwrap_or(4);
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') && asked_decimals(question).is_none() {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    if text == "-0" {
        "0".to_string()
    } else {
        text
    }
}

/// The decimals a question asks its answer to be rounded to, if it says.
fn asked_decimals(question: &str) -> Option<usize> {
    let lower = question.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    for (at, word) in words.iter().enumerate() {
        if word.starts_with("decimal") && words.get(at + 1).is_some_and(|w| w.starts_with("place"))
        {
            let count = at.checked_sub(1).and_then(|before| match words[before] {
                "one" | "a" | "single" => Some(1),
                "two" => Some(2),
                "three" => Some(3),
                "four" => Some(4),
                digits => digits.parse().ok().filter(|d: &usize| *d <= 12),
            });
            if count.is_some() {
                return count;
            }
        }
        if *word == "nearest" {
            let next = words.get(at + 1).copied().unwrap_or("");
            let after = words.get(at + 2).copied().unwrap_or("");
            match (next, after) {
                ("tenth", _) => return Some(1),
                ("hundredth", _) | ("cent", _) => return Some(2),
                ("thousandth", _) => return Some(3),
                ("whole", _) | ("integer", _) | ("dollar", _) | ("unit", _) => return Some(0),
                _ => {}
            }
        }
    }
    None
}

/// Whether an answer talks about the program that found it ("The output of the
/// function `solution()` is 42.") instead of answering the question.
pub(crate) fn speaks_of_program(answer: &str) -> bool {
    let lower = answer.to_lowercase();
    [
        "solution(",
        "function",
        "the output",
        "the code",
        "program",
        "script",
        "python",
        "```",
    ]
    .iter()
    .any(|plumbing| lower.contains(plumbing))
}

/// Python code for a call-shaped blob a small model wrote instead of code: a `code`
/// (or `program`, `script`, `expression`) argument as it is, or `"name": expression`
/// pairs as assignments with the last one printed. `None` when nothing in it is code.
pub(crate) fn code_from_blob(blob: &str) -> Option<String> {
    let body = blob.trim();
    if let Ok(value) = serde_json::from_str::<Value>(body) {
        let call = value.get("function").unwrap_or(&value);
        let arguments = call
            .get("arguments")
            .or_else(|| call.get("parameters"))
            .unwrap_or(call);
        // Some models send the arguments as a JSON string.
        let arguments = match arguments {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
            other => other.clone(),
        };
        for key in ["code", "program", "script", "expression", "python"] {
            if let Some(code) = arguments.get(key).and_then(Value::as_str) {
                if !code.trim().is_empty() {
                    return Some(code.to_string());
                }
            }
        }
        if let Value::Object(map) = &arguments {
            let lines: Vec<String> = map
                .iter()
                .filter(|(key, _)| is_identifier(key))
                .filter_map(|(key, value)| match value {
                    Value::String(s) if looks_like_expression(s) => Some(format!("{key} = {s}")),
                    _ => None,
                })
                .collect();
            return finish_assignments(lines);
        }
        return None;
    }
    // Not JSON: `"key": 21 * 2` pairs whose values are expressions.
    let mut lines = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find('"') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('"') else { break };
        let key = &after[..close];
        let tail = after[close + 1..].trim_start();
        let Some(value) = tail.strip_prefix(':') else {
            rest = &after[close + 1..];
            continue;
        };
        let value = value.trim_start();
        if let Some(inner) = value.strip_prefix(['{', '[']) {
            // A nested object: its pairs are read in turn.
            rest = inner;
            continue;
        }
        let end = value.find([',', '}', '\n']).unwrap_or(value.len());
        let expression = value[..end].trim();
        if is_identifier(key)
            && !expression.starts_with(['"', '{', '['])
            && looks_like_expression(expression)
        {
            lines.push(format!("{key} = {expression}"));
        }
        rest = &value[end..];
    }
    finish_assignments(lines)
}

fn finish_assignments(lines: Vec<String>) -> Option<String> {
    let last = lines.last()?.split(" = ").next()?.to_string();
    let mut code = lines.join("\n");
    code.push_str(&format!("\nprint({last})"));
    Some(code)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(
            name,
            "name" | "arguments" | "parameters" | "function" | "tool"
        )
}

/// Arithmetic over numbers and names: digits, operators, parentheses, an operator
/// somewhere (a bare number or word is a value, not a computation).
fn looks_like_expression(text: &str) -> bool {
    let text = text.trim();
    !text.is_empty()
        && text.chars().any(|c| c.is_ascii_digit())
        && text.chars().any(|c| "+-*/%".contains(c))
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c.is_whitespace() || "+-*/%().,_".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_blocks_are_found_once_closed() {
        let cases: [(&str, Option<&str>); 8] = [
            (
                "Let me compute.\n```python\nprint(1+1)\n```",
                Some("print(1+1)"),
            ),
            (
                "```python\nx = 2\nprint(x)\n```\nmore",
                Some("x = 2\nprint(x)"),
            ),
            ("```py\nprint(3)\n```", Some("print(3)")),
            ("```python\nprint(1+1)\n", None),
            ("```python", None),
            (
                "```json\n{\"a\": 1}\n```\n```python\nprint(2)\n```",
                Some("print(2)"),
            ),
            ("```text\nhi\n```", None),
            ("No code here.", None),
        ];
        for (text, want) in cases {
            let got = closed_python_block(text);
            assert_eq!(got.as_ref().map(|b| b.code.as_str()), want, "{text:?}");
            if let Some(block) = got {
                assert!(text[..block.end].ends_with("```"), "{text:?}");
            }
        }
        assert_eq!(
            after_last_output("```python\nx\n```\n```output\n4\n```\nThe answer is 4."),
            "\nThe answer is 4."
        );
        assert_eq!(after_last_output("Plain answer."), "Plain answer.");
    }

    #[test]
    fn a_checks_result_replaces_the_number_the_answer_made_up() {
        let cases: [(&str, &str, &str, Option<&str>); 8] = [
            (
                "By 1.4%",
                "By what percentage did revenue grow? Round to 1 decimal place.",
                "14.910659272951316",
                Some("By 14.9%"),
            ),
            (
                "Quillhaven was founded 1719 years after Marrowby.",
                "How many years after Marrowby was founded was Quillhaven founded?",
                "77\n",
                Some("Quillhaven was founded 77 years after Marrowby."),
            ),
            // Numbers the question gives stay; the one it does not is replaced.
            (
                "With 16 eggs she earns $20.",
                "Janet's ducks lay 16 eggs.",
                "18.0",
                Some("With 16 eggs she earns $18."),
            ),
            // Two made-up numbers: which one was meant is unclear, so the result alone.
            ("3 and 4", "q", "7", Some("7")),
            (
                "About 0.3 each",
                "q",
                "0.30000000000000004",
                Some("About 0.3 each"),
            ),
            (
                "It costs 10",
                "To the nearest cent, what is it?",
                "10.4951",
                Some("It costs 10.50"),
            ),
            ("It is -3 degrees", "q", "-2", Some("It is -2 degrees")),
            // A result that is not one number is not carried.
            ("It is 5.", "q", "[1, 2]", None),
        ];
        for (answer, question, result, want) in cases {
            assert_eq!(
                carry_result(answer, question, result).as_deref(),
                want,
                "{answer:?} / {result:?}"
            );
        }
    }

    #[test]
    fn grounding_accepts_computed_and_restated_numbers() {
        let cases = [
            (
                "She makes $18 every day.",
                "16 eggs, 3 eaten",
                &["18\n"][..],
                true,
            ),
            ("The total is 18.00", "q", &["18.0"][..], true),
            ("About 3.33 each", "q", &["3.3333333333333335"][..], true),
            ("It is 20.", "16 eggs", &["18"][..], false),
            ("It is 20.", "16 eggs", &[][..], false),
            ("Paris.", "capital?", &[][..], true),
            ("There are 16 eggs.", "Janet has 16 eggs", &[][..], true),
        ];
        for (answer, question, results, want) in cases {
            assert_eq!(
                is_grounded(answer, question, results),
                want,
                "{answer:?} {results:?}"
            );
        }
    }

    #[test]
    fn blobs_become_code() {
        let cases: [(&str, Option<&str>); 6] = [
            (
                r#"{"name": "python", "arguments": {"code": "print(2+2)"}}"#,
                Some("print(2+2)"),
            ),
            (
                r#"{"name": "calculate_age", "arguments": {"zack_age": 21 * 2}}"#,
                Some("zack_age = 21 * 2\nprint(zack_age)"),
            ),
            (
                r#"{"name": "calc", "arguments": {"total": "5000 * 1.05"}}"#,
                Some("total = 5000 * 1.05\nprint(total)"),
            ),
            (
                r#"{"name": "f", "arguments": "{\"code\": \"print(1)\"}"}"#,
                Some("print(1)"),
            ),
            (
                r#"{"name": "search", "arguments": {"query": "bridges"}}"#,
                None,
            ),
            (r#"{"name": "f", "arguments": {"x": 5}}"#, None),
        ];
        for (blob, want) in cases {
            assert_eq!(code_from_blob(blob).as_deref(), want, "{blob}");
        }
    }
}
