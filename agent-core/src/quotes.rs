//! [`Quotes`]: where double-quoted strings are in text scanned a character at a time
//! (JSON strings, GBNF literals), so that what is inside them is left alone.

/// Tracks whether a stream of characters is inside a double-quoted string with
/// backslash escapes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotes {
    inside: bool,
    escaped: bool,
}

impl Quotes {
    /// Whether the last character fed left the stream inside a string.
    pub fn inside(&self) -> bool {
        self.inside
    }

    /// Feeds `c`; whether it belongs to a string (its content, or either quote).
    pub fn feed(&mut self, c: char) -> bool {
        if self.inside {
            match c {
                _ if self.escaped => self.escaped = false,
                '\\' => self.escaped = true,
                '"' => self.inside = false,
                _ => {}
            }
            true
        } else if c == '"' {
            self.inside = true;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_escapes_belong_to_the_string() {
        let text = r#"a "b\"c" d"#;
        let mut quotes = Quotes::default();
        let marks: String = text
            .chars()
            .map(|c| if quotes.feed(c) { 's' } else { '.' })
            .collect();
        assert_eq!(marks, "..ssssss..");
        assert!(!quotes.inside());
    }
}
