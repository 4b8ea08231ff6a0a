//! The Game of 24: use each of four numbers once, with `+ - * /` and brackets, to make
//! 24 (`4 9 10 13` → `(10 - 4) * (13 - 9)`).
//!
//! A solution is worked one step at a time — two of the numbers left replaced by their
//! result (`13 - 9 = 4 (left: 4 4 10)`) — which [`Numbers::apply`] checks exactly;
//! [`solve`] finds a solution by brute force (the ground truth), [`generate`] draws
//! solvable puzzles from a seed, and [`check`] finds a right expression in a
//! free-text answer.

use std::fmt;

use crate::Rational;

/// The number to make.
pub const TARGET: i64 = 24;

/// A step or an answer that does not follow the rules. Messages are one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Game24Error {
    /// The text holds no arithmetic to read.
    #[error("no arithmetic in `{0}`")]
    NoArithmetic(String),
    /// The text is not an expression.
    #[error("`{text}` is not an expression: {why}")]
    Syntax {
        /// The text.
        text: String,
        /// What is wrong.
        why: String,
    },
    /// A number is used that is not (or no longer) available.
    #[error("{number} is not among the numbers left ({left})")]
    NotAvailable {
        /// The number.
        number: Rational,
        /// The numbers left.
        left: String,
    },
    /// The result written is not what the arithmetic gives.
    #[error("{expression} is {actual}, not {written}")]
    WrongResult {
        /// The left-hand side.
        expression: String,
        /// Its value.
        actual: Rational,
        /// The value written after `=`.
        written: Rational,
    },
    /// A division by zero (or a number too large).
    #[error("{0} cannot be computed")]
    Undefined(String),
    /// A step must combine at least two numbers.
    #[error("`{0}` combines no numbers")]
    NothingCombined(String),
    /// No expression in an answer uses the numbers exactly once each and makes 24.
    #[error("no expression in the answer uses {numbers} once each and makes 24")]
    NoSolution {
        /// The puzzle's numbers.
        numbers: String,
    },
}

/// An arithmetic operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 4] = [Op::Add, Op::Sub, Op::Mul, Op::Div];

    /// `a op b`; `None` for a division by zero or on overflow.
    pub fn apply(self, a: Rational, b: Rational) -> Option<Rational> {
        match self {
            Op::Add => a.checked_add(b),
            Op::Sub => a.checked_sub(b),
            Op::Mul => a.checked_mul(b),
            Op::Div => a.checked_div(b),
        }
    }

    /// The sign it is written with.
    pub fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
            Op::Div => '/',
        }
    }
}

/// An expression over numbers.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Num(Rational),
    Bin(Op, Box<Expr>, Box<Expr>),
}

impl Expr {
    fn value(&self) -> Option<Rational> {
        match self {
            Expr::Num(n) => Some(*n),
            Expr::Bin(op, a, b) => op.apply(a.value()?, b.value()?),
        }
    }

    fn leaves(&self, out: &mut Vec<Rational>) {
        match self {
            Expr::Num(n) => out.push(*n),
            Expr::Bin(_, a, b) => {
                a.leaves(out);
                b.leaves(out);
            }
        }
    }

    /// The expression written out, each leaf by `leaf` (called in order), every
    /// operation but the outermost in brackets.
    fn write(&self, leaf: &mut dyn FnMut(Rational) -> String, outer: bool) -> String {
        match self {
            Expr::Num(n) => leaf(*n),
            Expr::Bin(op, a, b) => {
                let text = format!(
                    "{} {} {}",
                    a.write(leaf, false),
                    op.symbol(),
                    b.write(leaf, false)
                );
                if outer {
                    text
                } else {
                    format!("({text})")
                }
            }
        }
    }
}

/// The numbers of a puzzle still to be combined, each with the expression (over the
/// puzzle's own numbers) it stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct Numbers {
    left: Vec<(Rational, String)>,
}

impl Numbers {
    /// The start of a puzzle: `numbers`, none combined yet.
    pub fn new(numbers: &[i64]) -> Self {
        Self {
            left: numbers
                .iter()
                .map(|&n| (Rational::int(n), n.to_string()))
                .collect(),
        }
    }

    /// The start of the puzzle whose numbers are the whole numbers written in `text`
    /// ("Use 4 9 10 13 to make 24" → 4 9 10 13; a trailing `24` after "make" is the
    /// target, not a number), or `None` when it has fewer than two.
    pub fn from_task(text: &str) -> Option<Self> {
        let mut numbers = integers(text);
        let lower = text.to_lowercase();
        if numbers.len() > 2
            && numbers.last() == Some(&TARGET)
            && (lower.contains("make 24")
                || lower.contains("obtain 24")
                || lower.contains("get 24")
                || lower.contains("reach 24"))
        {
            numbers.pop();
        }
        (numbers.len() >= 2).then(|| Self::new(&numbers))
    }

    /// How many numbers are left.
    pub fn len(&self) -> usize {
        self.left.len()
    }

    /// Whether no number is left (never, for a puzzle).
    pub fn is_empty(&self) -> bool {
        self.left.is_empty()
    }

    /// The numbers left, sorted, as a key for states that are the same.
    pub fn key(&self) -> String {
        let mut values: Vec<Rational> = self.left.iter().map(|(v, _)| *v).collect();
        values.sort();
        join(&values)
    }

    /// The solution, when one number is left and it is 24: the expression over the
    /// puzzle's numbers (`(10 - 4) * (13 - 9)`).
    pub fn solution(&self) -> Option<&str> {
        match self.left.as_slice() {
            [(value, expr)] if *value == Rational::int(TARGET) => Some(expr),
            _ => None,
        }
    }

    /// The numbers left after `step`: an expression over some of them, optionally
    /// followed by `= result` and anything after it (`13 - 9 = 4 (left: 4 4 10)`). The
    /// numbers it uses are replaced by its value; a result written after `=` must be
    /// that value.
    pub fn apply(&self, step: &str) -> Result<Numbers, Game24Error> {
        let text = normalise(step);
        let mut parts = text.split('=');
        let lhs = parts.next().unwrap_or_default();
        // Words before a colon ("Next: 2 + 8"), emphasis and a list number ("1. ").
        let lhs = lhs.rsplit(':').next().unwrap_or_default().replace("**", "");
        let lhs = lhs.trim_start_matches(|c: char| c.is_whitespace() || "-*•".contains(c));
        let lhs = match lhs.split_once(['.', ')']) {
            Some((number, rest))
                if !number.is_empty()
                    && number.chars().all(|c| c.is_ascii_digit())
                    && rest.starts_with(' ') =>
            {
                rest
            }
            _ => lhs,
        };
        let lhs = lhs
            .trim_start_matches(|c: char| !(c.is_ascii_digit() || c == '(' || c == '.'))
            .trim();
        if lhs.is_empty() {
            return Err(Game24Error::NoArithmetic(step.trim().to_owned()));
        }
        let expr = parse(lhs)?;
        let value = expr
            .value()
            .ok_or_else(|| Game24Error::Undefined(lhs.to_owned()))?;
        if let Some(rhs) = parts.next() {
            if let Some(written) = leading_number(rhs) {
                if written != value {
                    return Err(Game24Error::WrongResult {
                        expression: lhs.to_owned(),
                        actual: value,
                        written,
                    });
                }
            }
        }
        let mut leaves = Vec::new();
        expr.leaves(&mut leaves);
        if leaves.len() < 2 {
            return Err(Game24Error::NothingCombined(lhs.to_owned()));
        }
        let mut left = self.left.clone();
        let mut used = Vec::with_capacity(leaves.len());
        for leaf in leaves {
            let Some(at) = left.iter().position(|(v, _)| *v == leaf) else {
                return Err(Game24Error::NotAvailable {
                    number: leaf,
                    left: self.to_string(),
                });
            };
            used.push(left.remove(at).1);
        }
        let mut used = used.into_iter();
        // A leaf that stands for a combination is bracketed where it is used.
        let mut leaf = |n: Rational| match used.next() {
            Some(e) if e.contains(' ') => format!("({e})"),
            Some(e) => e,
            None => n.to_string(),
        };
        let written = expr.write(&mut leaf, false);
        let written = strip_outer(&written);
        left.push((value, written));
        Ok(Numbers { left })
    }
}

impl fmt::Display for Numbers {
    /// The values left, in order (`4 4 10`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values: Vec<Rational> = self.left.iter().map(|(v, _)| *v).collect();
        f.write_str(&join(&values))
    }
}

fn join(values: &[Rational]) -> String {
    values
        .iter()
        .map(Rational::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn strip_outer(text: &str) -> String {
    match text.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
        Some(inner) if parse(inner).is_ok() => inner.to_owned(),
        _ => text.to_owned(),
    }
}

/// The whole numbers written in `text`, in order.
fn integers(text: &str) -> Vec<i64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Writes the signs models use (`×`, `÷`, `−`, `\times`, `x` between numbers) as
/// `* / -`.
fn normalise(text: &str) -> String {
    let text = text
        .replace("\\times", "*")
        .replace("\\cdot", "*")
        .replace("\\div", "/")
        .replace(['×', '·', '⋅'], "*")
        .replace('÷', "/")
        .replace(['−', '–'], "-")
        .replace("\\left", "")
        .replace("\\right", "");
    // `x` or `X` as a times sign: between a number or bracket and another.
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == 'x' || c == 'X' {
            let before = chars[..i].iter().rev().find(|c| !c.is_whitespace());
            let after = chars[i + 1..].iter().find(|c| !c.is_whitespace());
            let operand_before = before.is_some_and(|c| c.is_ascii_digit() || *c == ')');
            let operand_after = after.is_some_and(|c| c.is_ascii_digit() || *c == '(');
            if operand_before && operand_after {
                out.push('*');
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The number at the start of `text` (after spaces), if any.
fn leading_number(text: &str) -> Option<Rational> {
    let text = text.trim_start();
    let end = text
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || *c == '/' || *c == '-'))
        .map_or(text.len(), |(i, _)| i);
    let token = text[..end].trim_end_matches(['.', '/']);
    if token.is_empty() || token == "-" {
        return None;
    }
    parse(token).ok()?.value()
}

/// A parser of `+ - * /`, brackets, whole and decimal numbers.
struct Parser<'a> {
    chars: Vec<char>,
    at: usize,
    text: &'a str,
}

fn parse(text: &str) -> Result<Expr, Game24Error> {
    let mut parser = Parser {
        chars: text.chars().filter(|c| !c.is_whitespace()).collect(),
        at: 0,
        text,
    };
    let expr = parser.sum()?;
    if parser.at < parser.chars.len() {
        return Err(parser.error(format!("unexpected `{}`", parser.chars[parser.at])));
    }
    Ok(expr)
}

impl Parser<'_> {
    fn error(&self, why: String) -> Game24Error {
        Game24Error::Syntax {
            text: self.text.trim().to_owned(),
            why,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn sum(&mut self) -> Result<Expr, Game24Error> {
        let mut expr = self.product()?;
        while let Some(c @ ('+' | '-')) = self.peek() {
            self.at += 1;
            let op = if c == '+' { Op::Add } else { Op::Sub };
            expr = Expr::Bin(op, Box::new(expr), Box::new(self.product()?));
        }
        Ok(expr)
    }

    fn product(&mut self) -> Result<Expr, Game24Error> {
        let mut expr = self.atom()?;
        while let Some(c @ ('*' | '/')) = self.peek() {
            self.at += 1;
            let op = if c == '*' { Op::Mul } else { Op::Div };
            expr = Expr::Bin(op, Box::new(expr), Box::new(self.atom()?));
        }
        Ok(expr)
    }

    fn atom(&mut self) -> Result<Expr, Game24Error> {
        match self.peek() {
            Some('(' | '[') => {
                self.at += 1;
                let expr = self.sum()?;
                match self.peek() {
                    Some(')' | ']') => {
                        self.at += 1;
                        Ok(expr)
                    }
                    _ => Err(self.error("a bracket is not closed".into())),
                }
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.at;
                while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
                    self.at += 1;
                }
                let token: String = self.chars[start..self.at].iter().collect();
                decimal(&token)
                    .map(Expr::Num)
                    .ok_or_else(|| self.error(format!("`{token}` is not a number")))
            }
            Some(c) => Err(self.error(format!("unexpected `{c}`"))),
            None => Err(self.error("it ends too early".into())),
        }
    }
}

/// `12` or `0.75` as an exact fraction.
fn decimal(token: &str) -> Option<Rational> {
    let (whole, fraction) = token.split_once('.').unwrap_or((token, ""));
    if whole.is_empty() || fraction.contains('.') || fraction.len() > 6 {
        return None;
    }
    let scale = 10i64.checked_pow(fraction.len() as u32)?;
    let digits: i64 = format!("{whole}{fraction}").parse().ok()?;
    Rational::new(digits, scale)
}

/// A solution of the puzzle (`numbers` once each, `+ - * /`, makes 24), found by
/// trying every way of combining them, or `None` when there is none.
pub fn solve(numbers: &[i64]) -> Option<String> {
    fn search(left: &[(Rational, String)]) -> Option<String> {
        if let [(value, expr)] = left {
            return (*value == Rational::int(TARGET)).then(|| expr.clone());
        }
        for i in 0..left.len() {
            for j in 0..left.len() {
                if i == j {
                    continue;
                }
                let rest: Vec<_> = left
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| *k != i && *k != j)
                    .map(|(_, n)| n.clone())
                    .collect();
                for op in Op::ALL {
                    // `+` and `*` commute: one order is enough.
                    if matches!(op, Op::Add | Op::Mul) && i > j {
                        continue;
                    }
                    let Some(value) = op.apply(left[i].0, left[j].0) else {
                        continue;
                    };
                    let mut next = rest.clone();
                    let expr = if next.is_empty() {
                        format!("{} {} {}", left[i].1, op.symbol(), left[j].1)
                    } else {
                        format!("({} {} {})", left[i].1, op.symbol(), left[j].1)
                    };
                    next.push((value, expr));
                    if let Some(found) = search(&next) {
                        return Some(found);
                    }
                }
            }
        }
        None
    }
    if numbers.is_empty() {
        return None;
    }
    search(&Numbers::new(numbers).left)
}

/// How many distinct puzzles of four numbers from 1 to 13 have a solution.
pub const SOLVABLE: usize = 1362;

/// `count` distinct solvable puzzles of four numbers from 1 to 13 (at most
/// [`SOLVABLE`]), in an order drawn from `seed` (the same seed gives the same
/// puzzles), each sorted, with a solution from [`solve`].
pub fn generate(seed: u64, count: usize) -> Vec<([i64; 4], String)> {
    let mut all = Vec::with_capacity(SOLVABLE);
    for a in 1..=13 {
        for b in a..=13 {
            for c in b..=13 {
                for d in c..=13 {
                    let numbers = [a, b, c, d];
                    if let Some(solution) = solve(&numbers) {
                        all.push((numbers, solution));
                    }
                }
            }
        }
    }
    // A Fisher-Yates shuffle driven by splitmix64.
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..all.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        all.swap(i, j);
    }
    all.truncate(count);
    all
}

/// The expression in `answer` that uses each of `numbers` exactly once and makes 24
/// (the first found, scanning each stretch of arithmetic and each side of its `=`
/// signs), or why there is none.
pub fn check(numbers: &[i64], answer: &str) -> Result<String, Game24Error> {
    let mut want: Vec<Rational> = numbers.iter().map(|&n| Rational::int(n)).collect();
    want.sort();
    let text = normalise(answer);
    let arithmetic = |c: char| c.is_ascii_digit() || " +-*/().[]=".contains(c);
    for stretch in text.split(|c: char| !arithmetic(c)) {
        for piece in stretch.split('=') {
            let piece = piece.trim();
            if piece.is_empty() {
                continue;
            }
            let Ok(expr) = parse(piece) else { continue };
            let mut leaves = Vec::new();
            expr.leaves(&mut leaves);
            leaves.sort();
            if leaves == want && expr.value() == Some(Rational::int(TARGET)) {
                return Ok(piece.to_owned());
            }
        }
    }
    Err(Game24Error::NoSolution {
        numbers: join(&want),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_step(left: &[i64], step: &str, expected: Result<&str, &str>) {
        let got = Numbers::new(left).apply(step);
        match (got, expected) {
            (Ok(numbers), Ok(want)) => assert_eq!(numbers.to_string(), want, "{step}"),
            (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{step}: {e}"),
            (got, want) => panic!("{step}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn steps_are_checked_exactly() {
        check_step(&[4, 9, 10, 13], "13 - 9 = 4 (left: 4 4 10)", Ok("4 10 4"));
        check_step(&[4, 9, 10, 13], "13 − 9 = 4", Ok("4 10 4"));
        check_step(
            &[4, 9, 10, 13],
            "10 × 4 = 40 (left: 9 13 40)",
            Ok("9 13 40"),
        );
        check_step(&[2, 3], "2 / 3 = 0.6667", Err("is 2/3, not"));
        check_step(&[2, 3, 8], "8 / 3 = 8/3", Ok("2 8/3"));
        check_step(&[4, 9, 10, 13], "13 + 9 = 23", Err("13 + 9 is 22, not 23"));
        check_step(
            &[4, 9, 10, 13],
            "5 + 9 = 14",
            Err("5 is not among the numbers left"),
        );
        check_step(&[4, 4, 10], "4 + 4 + 4 = 12", Err("not among"));
        check_step(&[4, 4, 10], "(10 - 4) * 4 = 24", Ok("24"));
        check_step(&[4, 9], "Let's think", Err("no arithmetic"));
        check_step(&[2, 8, 14], "- **1. 2 + 8 = 10**", Ok("14 10"));
        check_step(&[2, 8, 14], "2) Next: 14 - 8 = 6", Ok("2 6"));
        check_step(&[4, 9], "4 = 4", Err("combines no numbers"));
        check_step(&[0, 4, 4], "4 / (4 - 4) = 1", Err("cannot be computed"));
    }

    #[test]
    fn a_solution_is_written_over_the_puzzles_numbers() {
        let start = Numbers::new(&[4, 9, 10, 13]);
        let end = start
            .apply("13 - 9 = 4 (left: 4 4 10)")
            .and_then(|n| n.apply("10 - 4 = 6 (left: 4 6)"))
            .and_then(|n| n.apply("4 * 6 = 24 (left: 24)"))
            .unwrap();
        let solution = end.solution().unwrap();
        assert_eq!(solution, "(13 - 9) * (10 - 4)");
        assert_eq!(check(&[4, 9, 10, 13], solution).unwrap(), solution);
        assert_eq!(start.solution(), None);
    }

    #[test]
    fn the_solver_finds_solutions_and_knows_unsolvable_puzzles() {
        for numbers in [[4, 9, 10, 13], [1, 1, 4, 6], [3, 3, 8, 8], [1, 5, 5, 5]] {
            let solution = solve(&numbers).unwrap();
            check(&numbers, &solution).unwrap();
        }
        assert_eq!(solve(&[1, 1, 1, 1]), None);
        assert_eq!(solve(&[13, 13, 13, 13]), None);
    }

    #[test]
    fn generated_puzzles_are_distinct_solvable_and_repeatable() {
        let puzzles = generate(7, 30);
        assert_eq!(puzzles.len(), 30);
        assert_eq!(puzzles, generate(7, 30));
        assert_ne!(puzzles, generate(8, 30));
        assert_eq!(generate(1, usize::MAX).len(), SOLVABLE);
        for (i, (numbers, solution)) in puzzles.iter().enumerate() {
            check(numbers, solution).unwrap();
            assert!(!puzzles[..i].iter().any(|(p, _)| p == numbers));
        }
    }

    #[test]
    fn answers_are_checked_wherever_the_expression_is() {
        let numbers = [4, 9, 10, 13];
        for answer in [
            "(10 - 4) * (13 - 9) = 24",
            "The answer is: (13 − 9) × (10 − 4) = 24.",
            "Steps:\n13 - 9 = 4\n10 - 4 = 6\n4 * 6 = 24\nAnswer: (13 - 9) * (10 - 4) = 24",
            "$$(10 - 4) \\times (13 - 9) = 24$$",
        ] {
            assert!(check(&numbers, answer).is_ok(), "{answer}");
        }
        for answer in [
            "13 - 9 = 4, 10 - 4 = 6, 4 * 6 = 24",
            "(10 + 4) + 13 - 9 = 18",
            "4 * 6 = 24",
            "It cannot be done.",
            "(10 - 4) * (13 - 9 = 24",
        ] {
            assert!(check(&numbers, answer).is_err(), "{answer}");
        }
    }

    #[test]
    fn the_numbers_of_a_task() {
        let n = Numbers::from_task("Use 4 9 10 13 to make 24.").unwrap();
        assert_eq!(n.to_string(), "4 9 10 13");
        assert_eq!(Numbers::from_task("4 9 10 24").unwrap().len(), 4);
        assert_eq!(Numbers::from_task("no numbers"), None);
    }
}
