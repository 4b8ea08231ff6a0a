//! What one call returns, and the decoding of the worker's response frames.

use std::time::Duration;

/// The result of running one cell: everything the code printed, the value of a
/// trailing expression and, if it raised, the traceback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutput {
    /// What was written to standard output (`print`, `sys.stdout`, and fd 1 of the
    /// worker and its subprocesses).
    pub stdout: String,
    /// What was written to standard error (warnings, `sys.stderr`, fd 2).
    pub stderr: String,
    /// Both streams interleaved in the order they were written, as a terminal would
    /// show them, ending with the truncation marker if output was cut.
    pub output: String,
    /// The `repr` of the cell's trailing expression, if there was one and it was not
    /// `None` (like a notebook: `12345*6789` gives `83810205`).
    pub value: Option<String>,
    /// The traceback if the code raised, trimmed to the user's frames.
    pub traceback: Option<String>,
    /// The exception's class name (`ZeroDivisionError`) if the code raised.
    pub error_type: Option<String>,
    /// Whether any output, the value or the traceback was cut to the output limit.
    pub truncated: bool,
    /// How many output bytes were dropped.
    pub omitted_bytes: u64,
    /// Wall time of the call, round trip.
    pub duration: Duration,
    /// What the worker did to make model-written code work or to explain its silence:
    /// a repair (a top-level `return` read as the value, a stray `}` dropped), or a
    /// hint when the code printed nothing (an uncalled function, no `print`).
    pub notes: Vec<String>,
}

impl RunOutput {
    /// Whether the code raised an exception.
    pub fn is_error(&self) -> bool {
        self.traceback.is_some()
    }

    /// The text to feed back to the model: output, then traceback, then value, then
    /// the notes in parentheses; `(no output)` when there is nothing.
    pub fn to_text(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if !self.output.is_empty() {
            parts.push(self.output.trim_end_matches('\n').to_owned());
        }
        if let Some(tb) = &self.traceback {
            parts.push(tb.trim_end_matches('\n').to_owned());
        }
        if let Some(v) = &self.value {
            parts.push(v.clone());
        }
        parts.extend(self.notes.iter().map(|n| format!("({n})")));
        if parts.is_empty() {
            "(no output)".to_owned()
        } else {
            parts.join("\n")
        }
    }
}

/// The most notes kept from one response (the worker sends at most a few).
const MAX_NOTES: usize = 4;

/// Marker appended where output was cut.
pub(crate) fn truncation_marker(omitted: u64) -> String {
    format!("…[output truncated: {omitted} more bytes]")
}

/// One field of a response frame.
pub(crate) struct Field<'a> {
    pub tag: u8,
    pub data: &'a [u8],
}

/// Splits a frame body into its tag-length-value fields.
pub(crate) fn fields(body: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if rest.len() < 5 {
            return Err("truncated field header".to_owned());
        }
        let tag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        rest = &rest[5..];
        if rest.len() < len {
            return Err("field longer than its frame".to_owned());
        }
        out.push(Field {
            tag,
            data: &rest[..len],
        });
        rest = &rest[len..];
    }
    Ok(out)
}

/// Decodes UTF-8, dropping an incomplete character at the end (where output was cut)
/// and replacing invalid bytes elsewhere.
pub(crate) fn decode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(e) if e.error_len().is_none() => {
            String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned()
        }
        Err(_) => {
            // Invalid in the middle; still drop a cut character at the end.
            let mut end = bytes.len();
            let start = end.saturating_sub(3);
            for i in (start..end).rev() {
                if bytes[i] & 0xC0 == 0xC0 {
                    if std::str::from_utf8(&bytes[i..]).is_err() {
                        end = i;
                    }
                    break;
                }
                if bytes[i] & 0x80 == 0 {
                    break;
                }
            }
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        }
    }
}

fn parse_u64(data: &[u8]) -> u64 {
    std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Builds a [`RunOutput`] from a response frame's fields, enforcing `limit` again on
/// the host side (the frame comes from a process running untrusted code).
pub(crate) fn build(fields: &[Field<'_>], limit: usize, duration: Duration) -> RunOutput {
    let mut out = RunOutput {
        duration,
        ..RunOutput::default()
    };
    // Merge consecutive chunks of the same stream before decoding.
    let mut chunks: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut budget = limit;
    let mut omitted: u64 = 0;
    let mut value_total: Option<u64> = None;
    let mut value: Option<&[u8]> = None;
    for f in fields {
        match f.tag {
            b'O' | b'E' => {
                let take = f.data.len().min(budget);
                budget -= take;
                omitted += (f.data.len() - take) as u64;
                if take > 0 {
                    match chunks.last_mut() {
                        Some((tag, buf)) if *tag == f.tag => buf.extend_from_slice(&f.data[..take]),
                        _ => chunks.push((f.tag, f.data[..take].to_vec())),
                    }
                }
            }
            b'D' => omitted += parse_u64(f.data),
            b'V' => value = Some(f.data),
            b'v' => value_total = Some(parse_u64(f.data)),
            b'T' => {
                let text = if f.data.len() > limit + 128 {
                    let head = limit / 4;
                    let tail = limit - head;
                    let mut s = decode(&f.data[..head]);
                    s.push_str("\n...[traceback truncated]...\n");
                    s.push_str(&String::from_utf8_lossy(&f.data[f.data.len() - tail..]));
                    out.truncated = true;
                    s
                } else {
                    if f.data.windows(22).any(|w| w == b"[traceback truncated: ") {
                        out.truncated = true;
                    }
                    decode(f.data)
                };
                out.traceback = Some(text);
            }
            b'N' => out.error_type = Some(decode(&f.data[..f.data.len().min(200)])),
            b'H' if out.notes.len() < MAX_NOTES => {
                out.notes.push(decode(&f.data[..f.data.len().min(500)]))
            }
            _ => {}
        }
    }
    for (tag, bytes) in &chunks {
        let text = decode(bytes);
        out.output.push_str(&text);
        if *tag == b'O' {
            out.stdout.push_str(&text);
        } else {
            out.stderr.push_str(&text);
        }
    }
    if omitted > 0 {
        out.truncated = true;
        out.omitted_bytes = omitted;
        if !out.output.is_empty() && !out.output.ends_with('\n') {
            out.output.push('\n');
        }
        out.output.push_str(&truncation_marker(omitted));
    }
    if let Some(v) = value {
        let shown = &v[..v.len().min(limit)];
        let total = value_total.unwrap_or(v.len() as u64).max(v.len() as u64);
        let mut text = decode(shown);
        if total > shown.len() as u64 {
            out.truncated = true;
            text.push_str(&format!(
                "…[value truncated: {} more bytes]",
                total - shown.len() as u64
            ));
        }
        out.value = Some(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(parts: &[(u8, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        for (t, d) in parts {
            v.push(*t);
            v.extend_from_slice(&(d.len() as u32).to_be_bytes());
            v.extend_from_slice(d);
        }
        v
    }

    #[test]
    fn interleaves_and_truncates() {
        let body = frame(&[(b'O', b"a\n"), (b'E', b"b\n"), (b'O', b"c\n"), (b'D', b"7")]);
        let f = fields(&body).unwrap();
        let out = build(&f, 100, Duration::ZERO);
        assert_eq!(out.output, "a\nb\nc\n…[output truncated: 7 more bytes]");
        assert_eq!(out.stdout, "a\nc\n");
        assert_eq!(out.stderr, "b\n");
        assert!(out.truncated);
    }

    #[test]
    fn host_enforces_limit_and_cuts_characters_cleanly() {
        let body = frame(&[(b'O', "ééé".as_bytes())]);
        let f = fields(&body).unwrap();
        let out = build(&f, 3, Duration::ZERO);
        assert_eq!(out.stdout, "é");
        assert_eq!(out.omitted_bytes, 3);
    }

    #[test]
    fn rejects_bad_frames() {
        assert!(fields(&[b'O', 0, 0, 0, 9, b'x']).is_err());
        assert!(fields(&[b'O', 0]).is_err());
    }
}
