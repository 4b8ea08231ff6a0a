//! [`Quotes`]: where double-quoted strings are in text scanned a character at a time
//! (JSON strings, GBNF literals), so that what is inside them is left alone; [`Nesting`]:
//! that and how deep in JSON arrays and objects the text is.

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

/// Where a stream of JSON text is, a character at a time: how many arrays and objects
/// are open, and whether it is inside a string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Nesting {
    quotes: Quotes,
    depth: u32,
}

impl Nesting {
    /// Feeds `c`; whether it belongs to a string (as [`Quotes::feed`]).
    pub fn feed(&mut self, c: char) -> bool {
        if self.quotes.feed(c) {
            return true;
        }
        match c {
            '{' | '[' => self.depth += 1,
            '}' | ']' => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        false
    }

    /// Arrays and objects open (outside strings).
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Whether the text fed so far ends inside a string.
    pub fn in_string(&self) -> bool {
        self.quotes.inside()
    }

    /// Twice the depth, one more inside a string: a string sits one level inside the
    /// array or object that holds it.
    pub fn level(&self) -> u32 {
        2 * self.depth + u32::from(self.quotes.inside())
    }

    /// Whether `piece` goes on with the value at `level` instead of closing it: it
    /// starts another member (a `,` at that level), or, for a string, does not end it.
    pub fn continues(&self, piece: &str, level: u32) -> bool {
        let mut after = *self;
        for c in piece.chars() {
            after.feed(c);
            if after.level() < level {
                return false;
            }
            if c == ',' && after.level() == level {
                return true;
            }
        }
        level % 2 == 1
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
