//! A final answer as a terminal shows it well: the LaTeX small models wrap answers in
//! (`\(\boxed{1229}\)`, `12345 \times 6789`) becomes plain text (`1229`,
//! `12345 × 6789`). Text without LaTeX is left as it is.

/// `answer` without LaTeX math markup: `\boxed{x}`, `\text{x}` and `\mathrm{x}` become
/// `x`, `\frac{a}{b}` becomes `a/b`, the math delimiters `\( \) \[ \] $$` go, common
/// operators become their signs (`\times` ×, `\cdot` ·, `\div` ÷, `\pm` ±, `\le` ≤,
/// `\ge` ≥, `\neq` ≠, `\approx` ≈), `\%` and `\$` lose their backslash, and spaces
/// are tidied. A `$` that is a currency sign (followed by a digit) stays.
pub fn plain_text(answer: &str) -> String {
    if !answer.contains('\\') && !answer.contains('$') {
        return answer.to_string();
    }
    let mut text = unwrap_commands(answer);
    for (from, to) in [
        ("\\(", ""),
        ("\\)", ""),
        ("\\[", ""),
        ("\\]", ""),
        ("$$", ""),
        ("\\left", ""),
        ("\\right", ""),
        ("\\times", "×"),
        ("\\cdot", "·"),
        ("\\div", "÷"),
        ("\\pm", "±"),
        ("\\leq", "≤"),
        ("\\geq", "≥"),
        ("\\le", "≤"),
        ("\\ge", "≥"),
        ("\\neq", "≠"),
        ("\\approx", "≈"),
        ("\\%", "%"),
        ("\\$", "$"),
        ("\\,", " "),
        ("\\;", " "),
        ("\\!", ""),
        ("\\quad", " "),
    ] {
        text = text.replace(from, to);
    }
    // Inline `$…$` math (not a currency sign, which a digit follows).
    let text = strip_inline_dollars(&text);
    let lines: Vec<String> = text
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let tidy = lines.join("\n");
    tidy.replace(" .", ".")
        .replace(" ,", ",")
        .trim()
        .to_string()
}

/// Replaces `\boxed{…}`, `\text{…}`, `\mathrm{…}`, `\textbf{…}`, `\mathbf{…}` by
/// their content and `\frac{a}{b}` / `\dfrac{a}{b}` by `a/b`, innermost first.
fn unwrap_commands(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let name_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let name = &after[..name_len];
        let tail = &after[name_len..];
        let one = ["boxed", "text", "mathrm", "textbf", "mathbf", "mbox"];
        let two = ["frac", "dfrac", "tfrac"];
        if one.contains(&name) {
            if let Some((inner, next)) = braced(tail) {
                out.push_str(&unwrap_commands(inner));
                rest = next;
                continue;
            }
        } else if two.contains(&name) {
            if let Some((top, next)) = braced(tail) {
                if let Some((bottom, next)) = braced(next) {
                    out.push_str(&unwrap_commands(top));
                    out.push('/');
                    out.push_str(&unwrap_commands(bottom));
                    rest = next;
                    continue;
                }
            }
        }
        out.push('\\');
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The content of the `{…}` group `text` starts with (spaces before it allowed) and
/// what follows it; `None` if it does not start with a balanced group.
fn braced(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    let body = text.strip_prefix('{')?;
    let mut depth = 1usize;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&body[..i], &body[i + 1..]));
                }
            }
            _ => {}
        }
    }
    None
}

/// Removes `$` signs that open or close inline math; one followed by a digit is a
/// currency sign and stays (unless it closes an open math span).
fn strip_inline_dollars(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut open = false;
    for (i, &c) in chars.iter().enumerate() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let next = chars.get(i + 1).copied();
        if open {
            open = false;
        } else if next.is_some_and(|n| n.is_ascii_digit() || n.is_whitespace()) || next.is_none() {
            out.push(c);
        } else {
            open = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::plain_text;

    fn check(answer: &str, shown: &str) {
        assert_eq!(plain_text(answer), shown, "{answer:?}");
    }

    #[test]
    fn latex_answers_become_plain_text() {
        check(
            "The number of prime numbers below 10000 is \\(\\boxed{1229}\\).",
            "The number of prime numbers below 10000 is 1229.",
        );
        check(
            "\\[ 12345 \\times 6789 = 83810205 \\]",
            "12345 × 6789 = 83810205",
        );
        check("\\boxed{\\frac{3}{4}}", "3/4");
        check("\\(\\boxed{18}\\) dollars", "18 dollars");
        check("$x = 5$", "x = 5");
        check("It costs $18.", "It costs $18.");
        check("It costs \\$18.", "It costs $18.");
        check("50\\% of them", "50% of them");
        check("\\text{Canberra}", "Canberra");
        check("Canberra", "Canberra");
        check("a\\b", "a\\b");
        check("\\left( 2 \\le 3 \\right)", "( 2 ≤ 3 )");
        check("\\boxed{unclosed", "\\boxed{unclosed");
        check("line one\n\\(x\\)\nline three", "line one\nx\nline three");
    }
}
