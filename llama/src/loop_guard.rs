//! A guard against greedy loops inside structured output.
//!
//! A small model decoding a tool call or a JSON reply under a grammar can fall into a
//! cycle the grammar allows forever: an array that gets the same items again and
//! again (`"cumin seeds", "cumin seeds", "salt", "cumin seeds", …`) until the token
//! budget cuts the call and nothing usable is left. The guard watches the tokens of
//! such output (their ids, and their text for the JSON structure) and steps in twice:
//!
//! 1. It finds the token that would make the output end in a loop: a cycle of
//!    tokens repeated [`LoopGuard::COPIES`] times back to back, over at least
//!    [`LoopGuard::MIN_RUN`] tokens.
//! 2. It then ends the JSON value the loop went round in: the innermost array,
//!    object or string that held the whole loop. Until that value is closed it
//!    refuses tokens that start another member of it (a `,` at its level) or, for a
//!    string, every token that does not end it; the member being written is
//!    finished first. Refusing the loop's next token alone would only send the model
//!    round a longer cycle. A loop outside any value (whole calls repeated) has its
//!    next token refused.
//!
//! The decoder takes the best token the grammar allows and the guard does not refuse;
//! when the grammar allows nothing else, the grammar wins (a schema's required member
//! is still written). Short repeats that are meant are left alone: the digits of
//! `1000000`, a zero matrix, the same keys in the objects of an array are shorter
//! than [`LoopGuard::MIN_RUN`] tokens or fewer than three copies.

use jielong_chat::quotes::Nesting;

/// Watches the tokens of one structured output and says which next token to refuse.
#[derive(Debug, Clone, Default)]
pub struct LoopGuard {
    tokens: Vec<i32>,
    /// Per token, the lowest [`Nesting::level`] its characters reached.
    lowest: Vec<u32>,
    /// The JSON nesting after the last token.
    nesting: Nesting,
    /// The level of the value being closed after a loop, until it is.
    closing: Option<u32>,
    /// Loops found so far.
    loops: usize,
}

impl LoopGuard {
    /// Back-to-back copies of a cycle that make a loop.
    pub const COPIES: usize = 3;
    /// The fewest tokens a loop spans (a short cycle needs more copies).
    pub const MIN_RUN: usize = 24;
    /// The longest cycle looked for, in tokens.
    pub const MAX_PERIOD: usize = 48;

    /// A guard that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a token of the output and its text.
    pub fn push(&mut self, token: i32, piece: &str) {
        let mut lowest = self.nesting.level();
        for c in piece.chars() {
            self.nesting.feed(c);
            lowest = lowest.min(self.nesting.level());
        }
        self.tokens.push(token);
        self.lowest.push(lowest);
        if self
            .closing
            .is_some_and(|level| self.nesting.level() < level)
        {
            self.closing = None;
        }
    }

    /// Tokens recorded so far.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// How many loops were found (each refused or closed once).
    pub fn loops(&self) -> usize {
        self.loops
    }

    /// Whether the value a loop went round in is being closed.
    pub fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// Whether to refuse `token` (text `piece`) as the next token. A token that
    /// closes a loop starts the closing of the value the loop went round in and is
    /// judged by it (so are later tokens); outside any value it is refused.
    pub fn refuses(&mut self, token: i32, piece: &str) -> bool {
        if let Some(level) = self.closing {
            return self.nesting.continues(piece, level);
        }
        let Some(run) = self.loop_run(token) else {
            return false;
        };
        self.loops += 1;
        // The value that held the whole loop; at the top level (between calls) there
        // is none to close.
        let start = self.tokens.len() + 1 - run;
        let level = self.lowest[start..]
            .iter()
            .copied()
            .min()
            .unwrap_or(0)
            .min(self.nesting.level());
        if level == 0 {
            return true;
        }
        // The token itself is judged as the closing goes: the member it is in is
        // finished (not cut off in the middle), the next one refused.
        self.closing = Some(level);
        self.nesting.continues(piece, level)
    }

    /// The length of the loop `token` would close, if any: a cycle of `p` tokens
    /// (`p` up to [`Self::MAX_PERIOD`]) repeated over the last `max(COPIES * p,
    /// MIN_RUN)` tokens.
    fn loop_run(&self, token: i32) -> Option<usize> {
        let n = self.tokens.len() + 1;
        let at = |i: usize| {
            if i + 1 == n {
                token
            } else {
                self.tokens[i]
            }
        };
        (1..=Self::MAX_PERIOD).find_map(|period| {
            let run = (Self::COPIES * period).max(Self::MIN_RUN);
            // The last `run` tokens repeat with this period when each equals the one
            // `period` before it; the candidate first, which settles most at once.
            (run <= n && (n - run + period..n).rev().all(|i| at(i) == at(i - period)))
                .then_some(run)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `tokens` to a guard (each recorded whatever it says) and returns the
    /// first position it would have refused.
    fn first_refused(tokens: &str) -> Option<usize> {
        let mut guard = LoopGuard::new();
        let mut refused = None;
        for (i, c) in tokens.chars().enumerate() {
            if refused.is_none() && guard.refuses(c as i32, &c.to_string()) {
                refused = Some(i);
            }
            guard.push(c as i32, &c.to_string());
        }
        refused
    }

    fn check(tokens: &str, want: Option<usize>) {
        assert_eq!(first_refused(tokens), want, "{tokens:?}");
    }

    #[test]
    fn loops_are_refused_where_they_close() {
        // A one-token cycle: the 24th copy.
        check(&"0".repeat(30), Some(23));
        // A 7-token item over and over: three copies are 21 tokens, a loop 24.
        check(&"[cumin,".repeat(6), Some(23));
        // A 10-token cycle: the third copy's last token.
        check(&format!("x{}", "abcdefghi,".repeat(4)), Some(30));
        // Two items alternating are one cycle; the loop closes at the `,` that would
        // start another item of the array.
        check(&format!("[{}", "sugar,salt,".repeat(4)), Some(33));
        // When it closes inside an item, the item is finished and the `,` refused.
        check(&format!("[{}", &"sugar,salt,".repeat(4)[1..]), Some(38));
    }

    #[test]
    fn repeats_that_are_meant_are_left_alone() {
        // Digits, a zero matrix, the same keys in a list of objects, a cycle longer
        // than the guard looks for.
        check("1000000000", None);
        check("[[0,0,0],[0,0,0],[0,0,0]]", None);
        check("[{n:a,q:1},{n:b,q:2},{n:c,q:3},{n:d,q:4}]", None);
        let long: String = (0..60).map(|i| char::from(b'A' + (i % 50) as u8)).collect();
        check(&long.repeat(3), None);
        // Two copies of a long cycle, then something else.
        check(&format!("{0}{0}end", "abcdefghijklmnop"), None);
    }

    /// A guard fed `opening`, then `items` round and round (each a token) until it
    /// refuses one.
    fn looped(opening: &str, items: &[&str]) -> LoopGuard {
        let mut guard = LoopGuard::new();
        guard.push(0, opening);
        for (i, item) in items.iter().cycle().enumerate().take(200) {
            let token = 1 + (i % items.len()) as i32;
            if guard.refuses(token, item) {
                return guard;
            }
            guard.push(token, item);
        }
        panic!("no loop found in {items:?}");
    }

    #[test]
    fn the_value_a_loop_went_round_in_is_closed() {
        // An array of strings: no further item, but the item and the array may end.
        let mut guard = looped(r#"{"a": ["#, &[r#""x", "#, r#""yy", "#]);
        assert!(guard.is_closing());
        assert!(guard.refuses(9, r#""x", "#));
        assert!(guard.refuses(9, ","));
        assert!(!guard.refuses(9, r#""z"]"#));
        assert!(!guard.refuses(9, r#""z""#));
        guard.push(9, r#""z""#);
        assert!(guard.refuses(9, ", "));
        assert!(!guard.refuses(9, "]"));
        guard.push(9, "]");
        // Closed: the object around it goes on as the model wants.
        assert!(!guard.is_closing());
        assert_eq!(guard.loops(), 1);
        assert!(!guard.refuses(9, r#", "b": 1}"#));

        // A string that repeats itself: only a token that ends it.
        let mut guard = looped(r#"{"a": ""#, &["la "]);
        assert!(guard.refuses(9, "la "));
        assert!(guard.refuses(9, ","));
        assert!(!guard.refuses(9, r#"la""#));
        assert!(!guard.refuses(9, r#""}"#));

        // A loop of whole objects ends the array, not an object.
        let mut guard = looped(r#"{"a": ["#, &[r#"{"b": 1}, "#]);
        assert!(guard.refuses(9, r#"{"b": 2}, "#));
        assert!(!guard.refuses(9, r#"{"b": 2}]"#));
        assert!(!guard.refuses(9, r#"{"b": 2, "c": 3"#));

        // Whole calls repeated at the top level: the looping token is refused, and
        // there is no value to close.
        let mut guard = looped("", &["<call>", r#"{"a": 1}"#, "</call>\n"]);
        assert!(!guard.is_closing());
        assert!(!guard.refuses(9, "<call>"));
    }
}
