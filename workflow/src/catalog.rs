//! What the program that runs workflows offers them by name, beyond what the
//! workflow crate knows itself: thought spaces for `strategy: tree-of-thoughts`.
//! Validation looks names up here, so a workflow that names something the program
//! does not offer is refused before it runs, with the names it could use.

use jielong_agent::ThoughtSpaces;

/// The names a workflow may use that the running program provides.
///
/// `Catalog::default()` offers the agent's built-in `free` thought space; a program
/// adds its own (`jielong` adds the Game of 24):
///
/// ```
/// use jielong_workflow::Catalog;
/// let catalog = Catalog::default();
/// assert_eq!(catalog.thought_spaces.names(), ["free"]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// The thought spaces `thoughts:` may name.
    pub thought_spaces: ThoughtSpaces,
}

impl Catalog {
    /// This catalog with `spaces` as its thought spaces.
    pub fn with_thought_spaces(mut self, spaces: ThoughtSpaces) -> Self {
        self.thought_spaces = spaces;
        self
    }
}
