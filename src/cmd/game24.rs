//! `jielong game24`: solvable Game of 24 puzzles as JSONL.

use std::io::Write;

use anyhow::Context;
use jielong_puzzles::game24;

use crate::cli::Game24Args;

/// The task a puzzle is put as: the rules and the numbers (which
/// [`game24::Numbers::from_task`] reads back).
pub fn task(numbers: &[i64; 4]) -> String {
    let numbers: Vec<String> = numbers.iter().map(i64::to_string).collect();
    format!(
        "Use the numbers {} and basic arithmetic operations (+ - * /) to obtain 24. \
         Use each number exactly once; write the expression.",
        numbers.join(" ")
    )
}

/// Writes `args.count` puzzles to stdout, one JSON object per line.
pub fn write(args: &Game24Args) -> anyhow::Result<()> {
    let puzzles = game24::generate(args.puzzle_seed, args.count as usize);
    let mut out = std::io::stdout().lock();
    for (i, (numbers, solution)) in puzzles.iter().enumerate() {
        let line = serde_json::json!({
            "id": format!("game24-{}", i + 1),
            "input": task(numbers),
            "answer": numbers.iter().map(i64::to_string).collect::<Vec<_>>().join(" "),
            "solution": solution,
            "metric": "game24",
        });
        writeln!(out, "{line}").context("cannot write the puzzles")?;
    }
    Ok(())
}
