//! Errors in a workflow file, each with its place: file, line, column and the field.

use std::fmt;

use serde_saphyr::Location;

/// One fault in a workflow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as the user named it (or `<string>` for YAML given as text).
    pub file: String,
    /// 1-based line; 0 when unknown.
    pub line: u32,
    /// 1-based column; 0 when unknown.
    pub column: u32,
    /// The field, as a path: `steps[2].agent`, `agents.writer.tools[0]`, `outputs.answer`.
    pub field: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl Diagnostic {
    /// A fault at a location taken from the parser.
    pub fn at(
        file: &str,
        location: &Location,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.to_string(),
            line: u32::try_from(location.line()).unwrap_or(0),
            column: u32::try_from(location.column()).unwrap_or(0),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every fault found in a workflow file (at least one), in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
