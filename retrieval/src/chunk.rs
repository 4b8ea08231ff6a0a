//! Splitting text into overlapping chunks.
//!
//! A chunk is a window of about `chunk_chars` characters; consecutive windows overlap by
//! about `overlap_chars`. Window ends snap back to a line break (or, failing that, to
//! whitespace) in the second half of the window, and window starts snap forward to the
//! start of a word, so no word is cut unless a single "word" is longer than half a
//! window. Markdown is first split into sections at headings — ATX (`#`…`######`) and
//! setext (a paragraph underlined with `===` or `---`), outside fenced code blocks and
//! front matter —; windows never cross a section boundary.
//!
//! Offsets are byte offsets into the text given; lines are 1-based.

/// One chunk: a byte range of the text with its line span and section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextChunk {
    /// The heading path of the Markdown section holding the chunk (`"Guide › Install"`),
    /// `None` for plain text and for text before the first heading.
    pub section: Option<String>,
    /// Byte offset of the chunk's first byte (leading whitespace is not part of a chunk).
    pub byte_start: usize,
    /// Byte offset just past the chunk's last byte (trailing whitespace excluded).
    pub byte_end: usize,
    /// 1-based line of the chunk's first byte.
    pub line_start: usize,
    /// 1-based line of the chunk's last byte.
    pub line_end: usize,
}

/// Chunks of a Markdown document and its title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkdownChunks {
    /// The text of the document's first heading, if it has one.
    pub title: Option<String>,
    /// The chunks, in document order.
    pub chunks: Vec<TextChunk>,
}

/// Maps byte offsets to 1-based line numbers.
struct LineIndex {
    newlines: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let newlines = text
            .bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'\n')
            .map(|(i, _)| i)
            .collect();
        LineIndex { newlines }
    }

    /// The line holding byte `byte`.
    fn line_of(&self, byte: usize) -> usize {
        self.newlines.partition_point(|&p| p < byte) + 1
    }
}

/// Splits plain text into overlapping windows.
///
/// `chunk_chars` is clamped to at least 1 and `overlap_chars` to at most half a window.
pub fn chunk_plain(text: &str, chunk_chars: usize, overlap_chars: usize) -> Vec<TextChunk> {
    let lines = LineIndex::new(text);
    windows(text, 0, text.len(), chunk_chars, overlap_chars)
        .into_iter()
        .map(|(s, e)| make_chunk(&lines, s, e, None))
        .collect()
}

/// Splits Markdown into sections at headings, then each section into windows.
///
/// Each chunk's `section` is the path of headings above it (outer to inner, joined with
/// `" › "`); the heading line itself is the start of its section's first chunk.
pub fn chunk_markdown(text: &str, chunk_chars: usize, overlap_chars: usize) -> MarkdownChunks {
    let lines = LineIndex::new(text);
    let headings = markdown_headings(text);
    let title = headings.first().map(|h| h.text.clone());
    let mut chunks = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let first = headings.first().map_or(text.len(), |h| h.start);
    for (s, e) in windows(text, 0, first, chunk_chars, overlap_chars) {
        chunks.push(make_chunk(&lines, s, e, None));
    }
    for (i, heading) in headings.iter().enumerate() {
        while stack
            .last()
            .is_some_and(|(level, _)| *level >= heading.level)
        {
            stack.pop();
        }
        stack.push((heading.level, heading.text.clone()));
        let path = stack
            .iter()
            .map(|(_, t)| t.as_str())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" › ");
        let section = (!path.is_empty()).then_some(path);
        let end = headings.get(i + 1).map_or(text.len(), |h| h.start);
        for (s, e) in windows(text, heading.start, end, chunk_chars, overlap_chars) {
            chunks.push(make_chunk(&lines, s, e, section.clone()));
        }
    }
    MarkdownChunks { title, chunks }
}

fn make_chunk(lines: &LineIndex, start: usize, end: usize, section: Option<String>) -> TextChunk {
    TextChunk {
        section,
        byte_start: start,
        byte_end: end,
        line_start: lines.line_of(start),
        line_end: lines.line_of(end.saturating_sub(1).max(start)),
    }
}

/// A heading (ATX or setext): where it starts, its level and its text.
struct Heading {
    start: usize,
    level: usize,
    text: String,
}

/// What the lines before the current one left open, as far as headings care.
enum Block {
    /// Nothing: a blank line, a heading, a thematic break, a fence, indented code.
    None,
    /// A paragraph starting at byte `start`, with its trimmed lines so far: a setext
    /// underline turns it into a heading.
    Paragraph { start: usize, lines: Vec<String> },
    /// A list item or block quote, with its lazy continuation lines: an underline there
    /// is a thematic break (or text), never a heading of the document's outline.
    Container,
}

/// The headings of a Markdown text: ATX (`## Title`) and setext (`Title` over a line of
/// `=` or `-`), outside fenced code blocks and front matter. A setext heading starts at
/// the first line of its paragraph; a `---` line that follows no paragraph (after a
/// blank line, a heading, a list item, a quote) is a thematic break.
fn markdown_headings(text: &str) -> Vec<Heading> {
    let mut headings = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    let mut block = Block::None;
    let mut offset = front_matter_len(text);
    for line in text[offset..].split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let body = line.trim_end_matches(['\n', '\r']);
        if body.trim().is_empty() {
            block = Block::None;
            continue;
        }
        let indent = body.len() - body.trim_start_matches(' ').len();
        if indent > 3 {
            // Indented code, unless it continues a paragraph or a container.
            if let Block::Paragraph { lines, .. } = &mut block {
                lines.push(body.trim().to_string());
            }
            continue;
        }
        let body = &body[indent..];
        let fence_char = body.chars().next().filter(|c| *c == '`' || *c == '~');
        if let Some(c) = fence_char {
            let run = body.chars().take_while(|x| *x == c).count();
            if run >= 3 {
                match fence {
                    None => fence = Some((c, run)),
                    Some((open, len)) if open == c && run >= len => fence = None,
                    Some(_) => {}
                }
                block = Block::None;
                continue;
            }
        }
        if fence.is_some() {
            continue;
        }
        if let Some((level, heading)) = atx_heading(body) {
            headings.push(Heading {
                start,
                level,
                text: heading.to_string(),
            });
            block = Block::None;
            continue;
        }
        if let Some(level) = setext_underline(body) {
            if let Block::Paragraph { start, lines } = &block {
                headings.push(Heading {
                    start: *start,
                    level,
                    text: lines.join(" "),
                });
                block = Block::None;
                continue;
            }
            // Not under a paragraph: `---` is a thematic break, `===` is text.
        }
        if thematic_break(body) {
            block = Block::None;
            continue;
        }
        if body.starts_with('>') || list_item(body) {
            block = Block::Container;
            continue;
        }
        match &mut block {
            Block::Paragraph { lines, .. } => lines.push(body.trim().to_string()),
            Block::Container => {}
            Block::None => {
                block = Block::Paragraph {
                    start,
                    lines: vec![body.trim().to_string()],
                }
            }
        }
    }
    headings
}

/// The length of the YAML (`---`) or TOML (`+++`) front matter opening `text`, with its
/// closing line; 0 when there is none.
fn front_matter_len(text: &str) -> usize {
    let mut lines = text.split_inclusive('\n');
    let Some(first) = lines.next() else {
        return 0;
    };
    let marker = first.trim_end();
    if marker != "---" && marker != "+++" {
        return 0;
    }
    let mut len = first.len();
    for line in lines {
        len += line.len();
        let body = line.trim_end();
        if body == marker || (marker == "---" && body == "...") {
            return len;
        }
    }
    0
}

/// The level and text of an ATX heading line (indentation removed).
fn atx_heading(body: &str) -> Option<(usize, &str)> {
    let level = body.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &body[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let mut heading = rest.trim();
    let closing = heading.trim_end_matches('#');
    if closing.is_empty() || closing.ends_with([' ', '\t']) {
        heading = closing.trim_end();
    }
    Some((level, heading))
}

/// The level of a setext underline (indentation removed): 1 for `=`, 2 for `-`.
fn setext_underline(body: &str) -> Option<usize> {
    let run = body.trim_end_matches([' ', '\t']);
    let level = match run.chars().next()? {
        '=' => 1,
        '-' => 2,
        _ => return None,
    };
    let c = if level == 1 { '=' } else { '-' };
    run.chars().all(|x| x == c).then_some(level)
}

/// Whether a line (indentation removed) is a thematic break: three or more `-`, `*` or
/// `_`, the same, with only spaces or tabs between them.
fn thematic_break(body: &str) -> bool {
    let Some(c) = body.chars().next().filter(|c| matches!(c, '-' | '*' | '_')) else {
        return false;
    };
    let mut count = 0;
    for x in body.chars() {
        if x == c {
            count += 1;
        } else if x != ' ' && x != '\t' {
            return false;
        }
    }
    count >= 3
}

/// Whether a line (indentation removed) opens a list item: `-`, `*` or `+`, or 1 to 9
/// digits and `.` or `)`, then a space, a tab or the end of the line.
fn list_item(body: &str) -> bool {
    let after = if body.starts_with(['-', '*', '+']) {
        &body[1..]
    } else {
        let digits = body.chars().take_while(char::is_ascii_digit).count();
        if !(1..=9).contains(&digits) {
            return false;
        }
        match body[digits..].strip_prefix(['.', ')']) {
            Some(rest) => rest,
            None => return false,
        }
    };
    after.is_empty() || after.starts_with([' ', '\t'])
}

/// Byte ranges of the windows covering `text[lo..hi]`, trimmed of whitespace.
fn windows(
    text: &str,
    lo: usize,
    hi: usize,
    chunk_chars: usize,
    overlap_chars: usize,
) -> Vec<(usize, usize)> {
    let chunk_chars = chunk_chars.max(1);
    let overlap_chars = overlap_chars.min(chunk_chars / 2);
    let mut out = Vec::new();
    let mut start = lo;
    loop {
        start = skip_whitespace(text, start, hi);
        if start >= hi {
            break;
        }
        let hard_end = advance_chars(text, start, chunk_chars, hi);
        let end = if hard_end >= hi {
            hi
        } else {
            let min_end = advance_chars(text, start, chunk_chars.div_ceil(2), hi);
            snap_back(text, min_end, hard_end)
        };
        let trimmed_end = start + text[start..end].trim_end().len();
        if trimmed_end > start {
            out.push((start, trimmed_end));
        }
        if end >= hi {
            break;
        }
        let back = retreat_chars(text, end, overlap_chars, start);
        let next = snap_forward(text, back, end);
        start = if next > start { next } else { end };
    }
    out
}

fn skip_whitespace(text: &str, from: usize, hi: usize) -> usize {
    text[from..hi]
        .char_indices()
        .find(|(_, c)| !c.is_whitespace())
        .map_or(hi, |(i, _)| from + i)
}

/// The byte offset `n` characters after `from`, at most `hi`.
fn advance_chars(text: &str, from: usize, n: usize, hi: usize) -> usize {
    text[from..hi]
        .char_indices()
        .nth(n)
        .map_or(hi, |(i, _)| from + i)
}

/// The byte offset `n` characters before `from`, at least `lo`.
fn retreat_chars(text: &str, from: usize, n: usize, lo: usize) -> usize {
    if n == 0 {
        return from;
    }
    text[lo..from]
        .char_indices()
        .rev()
        .nth(n - 1)
        .map_or(lo, |(i, _)| lo + i)
}

/// The best window end in `(min_end, hard_end]`: after the last line break, else after
/// the last whitespace, else `hard_end`.
fn snap_back(text: &str, min_end: usize, hard_end: usize) -> usize {
    let region = &text[min_end..hard_end];
    if let Some(i) = region.rfind('\n') {
        return min_end + i + 1;
    }
    region
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
        .map_or(hard_end, |(i, c)| min_end + i + c.len_utf8())
}

/// The start of the first word beginning in `[from, end)`, or `from` when none does.
fn snap_forward(text: &str, from: usize, end: usize) -> usize {
    let at_word_start = text[..from]
        .chars()
        .next_back()
        .map_or(true, char::is_whitespace);
    if at_word_start {
        return from;
    }
    text[from..end]
        .char_indices()
        .find(|(_, c)| c.is_whitespace())
        .map_or(from, |(i, c)| from + i + c.len_utf8())
}
