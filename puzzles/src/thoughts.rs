//! The Game of 24 as a thought space for the agent's Tree of Thoughts (feature
//! `agent`): every step a model proposes is checked exactly by [`crate::game24`].
//!
//! ```
//! use std::sync::Arc;
//! use jielong_agent::ThoughtSpaces;
//! use jielong_puzzles::thoughts::Game24;
//!
//! let spaces = ThoughtSpaces::new().with(Arc::new(Game24));
//! assert_eq!(spaces.names(), ["free", "game24"]);
//! ```

use jielong_agent::{PromptKind, Step, ThoughtSpace};

use crate::game24::{self, Numbers};

/// The Game of 24 ([`crate::game24`]): the task's numbers, one arithmetic
/// step per thought (`13 - 9 = 4 (left: 4 4 10)`), every line of a proposal a
/// thought, each checked exactly (numbers available, result right); solved when 24 is
/// the one number left, the answer being the expression over the puzzle's numbers.
/// The prompts (`prompts/game24/`) are the Tree of Thoughts paper's, with the
/// evaluator's label first so one token decides it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Game24;

impl Game24 {
    fn numbers(task: &str) -> Result<Numbers, String> {
        Numbers::from_task(task).ok_or_else(|| {
            "a Game of 24 task names the numbers to combine (`4 9 10 13`)".to_owned()
        })
    }
}

impl ThoughtSpace for Game24 {
    fn name(&self) -> &str {
        "game24"
    }

    fn root(&self, task: &str) -> Step {
        match Self::numbers(task) {
            Ok(numbers) => Step::Open {
                state: numbers.to_string(),
                key: numbers.key(),
            },
            Err(reason) => Step::Rejected { reason },
        }
    }

    fn step(&self, task: &str, steps: &[String], thought: &str) -> Step {
        let replayed = Self::numbers(task).and_then(|start| {
            steps
                .iter()
                .map(String::as_str)
                .chain([thought])
                .try_fold(start, |numbers, step| {
                    numbers.apply(step).map_err(|e| e.to_string())
                })
        });
        match replayed {
            Err(reason) => Step::Rejected { reason },
            Ok(numbers) => match numbers.solution() {
                Some(solution) => Step::Solved {
                    answer: format!("{solution} = {}", game24::TARGET),
                },
                None if numbers.len() == 1 => Step::Rejected {
                    reason: format!("it ends at {numbers}, not {}", game24::TARGET),
                },
                None => Step::Open {
                    state: numbers.to_string(),
                    key: numbers.key(),
                },
            },
        }
    }

    fn thoughts(&self, proposal: &str) -> Vec<String> {
        proposal
            .lines()
            .map(str::trim)
            .filter(|line| line.contains('='))
            .map(str::to_owned)
            .collect()
    }

    fn proposal_tokens(&self) -> usize {
        // About eight steps of `a op b = c (left: x y z)`.
        120
    }

    fn prompts(&self) -> Vec<(PromptKind, &'static str)> {
        vec![
            (
                PromptKind::Propose,
                include_str!("../../prompts/game24/propose.md"),
            ),
            (
                PromptKind::Evaluate,
                include_str!("../../prompts/game24/evaluate.md"),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn game24_replays_the_steps_and_knows_a_solution() {
        let space = Game24;
        let task = "4 9 10 13";
        assert!(matches!(
            space.root("no numbers here"),
            Step::Rejected { .. }
        ));
        let steps = vec!["13 - 9 = 4 (left: 4 4 10)".to_owned()];
        assert_eq!(
            space.step(task, &steps, "10 - 4 = 6 (left: 4 6)"),
            Step::Open {
                state: "4 6".into(),
                key: "4 6".into()
            }
        );
        let steps = vec![steps[0].clone(), "10 - 4 = 6 (left: 4 6)".to_owned()];
        assert_eq!(
            space.step(task, &steps, "4 * 6 = 24 (left: 24)"),
            Step::Solved {
                answer: "(13 - 9) * (10 - 4) = 24".into()
            }
        );
        assert!(matches!(
            space.step(task, &steps, "4 + 6 = 10 (left: 10)"),
            Step::Rejected { reason } if reason.contains("ends at 10")
        ));
        assert!(matches!(
            space.step(task, &steps, "9 + 6 = 15"),
            Step::Rejected { reason } if reason.contains("9 is not among")
        ));
        assert_eq!(
            space.thoughts(
                "Possible next steps:\n4 + 9 = 13 (left: 10 13 13)\n\n10 - 4 = 6 (left: 6 9 13)"
            ),
            vec!["4 + 9 = 13 (left: 10 13 13)", "10 - 4 = 6 (left: 6 9 13)"]
        );
    }
}
