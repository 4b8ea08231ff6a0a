//! Puzzles with exact checkers, for search strategies and their evaluation.
//!
//! - [`game24`]: the Game of 24 — combine four numbers with `+ - * /` (each number
//!   once) into 24. Exact rational arithmetic, one step of a solution
//!   ([`game24::Numbers::apply`]), a brute-force [`game24::solve`]r for ground truth, a
//!   seeded [`game24::generate`]or of solvable puzzles and [`game24::check`], which
//!   finds a valid expression in a free-text answer.
//! - [`thoughts`] (feature `agent`): the Game of 24 as a thought space for the
//!   agent's Tree of Thoughts, each step checked by [`game24`].
//! - [`metric`] (feature `eval`): the Game of 24 as an evaluation metric, `game24`.

pub mod game24;
#[cfg(feature = "eval")]
pub mod metric;
mod rational;
#[cfg(feature = "agent")]
pub mod thoughts;

pub use rational::Rational;
