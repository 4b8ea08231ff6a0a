//! Stop strings over streamed text.
//!
//! Text arrives piece by piece (one token at a time); a stop string may straddle
//! pieces. [`StopMatcher`] emits text as early as it can while holding back any tail
//! that could still grow into a stop string, so a stop string never leaks into the
//! output, even partially.

/// Watches streamed text for the first occurrence of any stop string.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

/// What feeding one piece of text produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopScan {
    /// Text that is safe to emit now.
    pub emit: String,
    /// The stop string that matched, if one did; everything after it is discarded.
    pub stopped: Option<String>,
}

impl StopMatcher {
    /// A matcher for these stop strings (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Feeds the next piece of text.
    pub fn push(&mut self, piece: &str) -> StopScan {
        if self.stops.is_empty() {
            return StopScan {
                emit: piece.to_owned(),
                stopped: None,
            };
        }
        self.pending.push_str(piece);
        // The earliest match wins; at equal positions the longer stop string.
        let earliest = self
            .stops
            .iter()
            .filter_map(|stop| self.pending.find(stop.as_str()).map(|at| (at, stop)))
            .min_by_key(|(at, stop)| (*at, std::cmp::Reverse(stop.len())));
        if let Some((at, stop)) = earliest {
            let stop = stop.clone();
            let emit = self.pending[..at].to_owned();
            self.pending.clear();
            return StopScan {
                emit,
                stopped: Some(stop),
            };
        }
        let hold = self.longest_partial_suffix();
        let cut = self.pending.len() - hold;
        let emit = self.pending[..cut].to_owned();
        self.pending.drain(..cut);
        StopScan {
            emit,
            stopped: None,
        }
    }

    /// Ends the stream: whatever was held back is plain text after all.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length in bytes of the longest suffix of `pending` that is a proper prefix of a
    /// stop string (always on a character boundary).
    fn longest_partial_suffix(&self) -> usize {
        let text = self.pending.as_str();
        text.char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &text[i..];
                self.stops
                    .iter()
                    .any(|stop| stop.len() > tail.len() && stop.starts_with(tail))
            })
            .map_or(0, |i| text.len() - i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` and returns the text emitted and the stop string hit.
    fn check(stops: &[&str], pieces: &[&str], want_text: &str, want_stop: Option<&str>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        let mut stopped = None;
        for piece in pieces {
            let scan = m.push(piece);
            out.push_str(&scan.emit);
            if scan.stopped.is_some() {
                stopped = scan.stopped;
                break;
            }
        }
        if stopped.is_none() {
            out.push_str(&m.flush());
        }
        assert_eq!(out, want_text, "stops {stops:?} pieces {pieces:?}");
        assert_eq!(
            stopped.as_deref(),
            want_stop,
            "stops {stops:?} pieces {pieces:?}"
        );
    }

    #[test]
    fn stop_strings() {
        check(&[], &["a", "b"], "ab", None);
        check(&["END"], &["hello ", "EN", "D more"], "hello ", Some("END"));
        check(&["END"], &["hello EN", "x"], "hello ENx", None);
        check(&["END"], &["E", "N"], "EN", None);
        check(&["\n\n"], &["a\n", "\nb"], "a", Some("\n\n"));
        check(&["ab", "b"], &["xab"], "x", Some("ab"));
        check(&["bc", "abcd"], &["xabc"], "xa", Some("bc"));
        check(&["é!"], &["caf", "é", "!"], "caf", Some("é!"));
        check(
            &["Observation:"],
            &["Obs", "erv", "ation: 4"],
            "",
            Some("Observation:"),
        );
    }

    #[test]
    fn holds_back_only_possible_prefixes() {
        let mut m = StopMatcher::new(&["</s>".to_string()]);
        assert_eq!(m.push("a <").emit, "a ");
        assert_eq!(m.push("b").emit, "<b");
        assert_eq!(m.push("中<").emit, "中");
        assert_eq!(m.flush(), "<");
    }
}
