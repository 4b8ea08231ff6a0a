//! Turning a file's bytes into documents: text, Markdown, HTML, PDF and JSON Lines.

use std::path::Path;

use scraper::{Html, Node};

use crate::chunk::{chunk_markdown, chunk_plain, TextChunk};
use crate::IngestOptions;

/// The formats the ingester understands, chosen by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
    Jsonl,
}

impl Format {
    /// The format of a path from its extension, `None` for unsupported files.
    pub(crate) fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "txt" | "text" | "log" | "rst" => Format::Text,
            "md" | "markdown" => Format::Markdown,
            "html" | "htm" => Format::Html,
            "pdf" => Format::Pdf,
            "jsonl" => Format::Jsonl,
            _ => return None,
        })
    }
}

/// One chunk ready for the index.
#[derive(Debug, Clone)]
pub(crate) struct ChunkRecord {
    pub source: String,
    pub title: String,
    pub text: String,
    pub line_start: u64,
    pub line_end: u64,
    pub byte_start: u64,
    pub byte_end: u64,
}

/// What extraction produced: chunks, and warnings that did not stop the file.
#[derive(Debug, Default)]
pub(crate) struct Extracted {
    pub chunks: Vec<ChunkRecord>,
    pub warnings: Vec<String>,
}

/// Extracts the chunks of one file. `Err` is the reason to skip the whole file.
pub(crate) fn extract(
    format: Format,
    key: &str,
    path: &Path,
    bytes: &[u8],
    options: &IngestOptions,
) -> Result<Extracted, String> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| key.to_string());
    match format {
        Format::Text | Format::Markdown => {
            let (text, bom) = decode_text(bytes)?;
            let mut out = Extracted::default();
            if format == Format::Markdown {
                let md = chunk_markdown(text, options.chunk_chars, options.overlap_chars);
                let doc_title = md.title.clone().unwrap_or(file_name);
                out.chunks = records(key, text, bom, &md.chunks, |c| {
                    section_title(&doc_title, c.section.as_deref())
                });
            } else {
                let chunks = chunk_plain(text, options.chunk_chars, options.overlap_chars);
                out.chunks = records(key, text, bom, &chunks, |_| file_name.clone());
            }
            Ok(out)
        }
        Format::Html => {
            let (html, _) = decode_text(bytes)?;
            let (title, text) = html_to_text(html);
            let title = title.unwrap_or(file_name);
            let chunks = chunk_plain(&text, options.chunk_chars, options.overlap_chars);
            Ok(Extracted {
                chunks: records(key, &text, 0, &chunks, |_| title.clone()),
                warnings: Vec::new(),
            })
        }
        Format::Pdf => {
            let (title, text) = pdf_text(bytes)?;
            let title = title.unwrap_or(file_name);
            let chunks = chunk_plain(&text, options.chunk_chars, options.overlap_chars);
            Ok(Extracted {
                chunks: records(key, &text, 0, &chunks, |_| title.clone()),
                warnings: Vec::new(),
            })
        }
        Format::Jsonl => {
            let (text, bom) = decode_text(bytes)?;
            jsonl(key, text, bom, &file_name, options)
        }
    }
}

/// A chunk title: the document title, then the section's heading path.
fn section_title(doc_title: &str, section: Option<&str>) -> String {
    match section {
        None => doc_title.to_string(),
        Some(s) if s == doc_title || s.starts_with(&format!("{doc_title} › ")) => s.to_string(),
        Some(s) => format!("{doc_title} › {s}"),
    }
}

fn records(
    key: &str,
    text: &str,
    base: usize,
    chunks: &[TextChunk],
    title: impl Fn(&TextChunk) -> String,
) -> Vec<ChunkRecord> {
    chunks
        .iter()
        .map(|c| ChunkRecord {
            source: key.to_string(),
            title: title(c),
            text: text[c.byte_start..c.byte_end].to_string(),
            line_start: c.line_start as u64,
            line_end: c.line_end as u64,
            byte_start: (base + c.byte_start) as u64,
            byte_end: (base + c.byte_end) as u64,
        })
        .collect()
}

/// Checks that bytes are text: UTF-8 without NUL bytes. Returns the text after any BOM
/// and the BOM's length.
fn decode_text(bytes: &[u8]) -> Result<(&str, usize), String> {
    if bytes.contains(&0) {
        return Err("binary file (contains NUL bytes)".to_string());
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        )
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => (rest, 3),
        None => (text, 0),
    })
}

/// Elements whose content is never text.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "head", "svg", "iframe", "object",
];
/// Elements that break lines around them.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "br",
    "hr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "tr",
    "table",
    "section",
    "article",
    "header",
    "footer",
    "nav",
    "aside",
    "main",
    "blockquote",
    "pre",
    "figure",
    "figcaption",
    "form",
    "title",
    "body",
    "html",
    "address",
    "details",
    "summary",
];

/// The `<title>` (or first `<h1>`) and the visible text of an HTML document, one block
/// element per line.
pub(crate) fn html_to_text(html: &str) -> (Option<String>, String) {
    let doc = Html::parse_document(html);
    let mut title = None;
    let mut first_h1 = None;
    for node in doc.tree.root().descendants() {
        if let Node::Element(e) = node.value() {
            let name = e.name();
            if name == "title" && title.is_none() || name == "h1" && first_h1.is_none() {
                let text: String = node
                    .descendants()
                    .filter_map(|n| n.value().as_text().map(|t| t.to_string()))
                    .collect();
                let text = collapse(&text);
                if !text.is_empty() {
                    if name == "title" {
                        title = Some(text);
                    } else {
                        first_h1 = Some(text);
                    }
                }
            }
        }
    }
    let mut out = HtmlText::default();
    out.walk(doc.tree.root());
    (title.or(first_h1), out.finish())
}

/// Accumulates visible text with line breaks at block boundaries.
#[derive(Default)]
struct HtmlText {
    out: String,
    pending_space: bool,
    in_pre: usize,
}

impl HtmlText {
    fn walk(&mut self, node: ego_tree::NodeRef<'_, Node>) {
        match node.value() {
            Node::Text(t) => self.text(t),
            Node::Element(e) => {
                let name = e.name();
                if SKIPPED.contains(&name) {
                    return;
                }
                let block = BLOCKS.contains(&name);
                if block {
                    self.newline();
                }
                if name == "pre" {
                    self.in_pre += 1;
                }
                for child in node.children() {
                    self.walk(child);
                }
                if name == "pre" {
                    self.in_pre -= 1;
                }
                if block {
                    self.newline();
                } else if matches!(name, "td" | "th") {
                    self.pending_space = true;
                }
            }
            Node::Document | Node::Fragment => {
                for child in node.children() {
                    self.walk(child);
                }
            }
            _ => {}
        }
    }

    fn text(&mut self, t: &str) {
        if self.in_pre > 0 {
            self.out.push_str(t);
            return;
        }
        if t.starts_with(char::is_whitespace) {
            self.pending_space = true;
        }
        for word in t.split_whitespace() {
            if self.pending_space && !self.out.is_empty() && !self.out.ends_with('\n') {
                self.out.push(' ');
            }
            self.out.push_str(word);
            self.pending_space = true;
        }
        self.pending_space = t.ends_with(char::is_whitespace) || t.trim().is_empty();
    }

    fn newline(&mut self) {
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
        self.pending_space = false;
    }

    fn finish(self) -> String {
        self.out.trim().to_string()
    }
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The title (from the document information dictionary) and the text layer of a PDF, or
/// the reason it has no text.
fn pdf_text(bytes: &[u8]) -> Result<(Option<String>, String), String> {
    // pdf-extract can panic on malformed files; a broken PDF must not stop the ingest.
    let result = std::panic::catch_unwind(|| {
        let mut doc = pdf_extract::Document::load_mem(bytes)?;
        if doc.is_encrypted() {
            // What pdf-extract does: an empty user password opens most "protected" PDFs.
            doc.decrypt("")?;
        }
        let title = pdf_title(&doc);
        let mut text = String::new();
        pdf_extract::output_doc(&doc, &mut pdf_extract::PlainTextOutput::new(&mut text))?;
        Ok::<_, pdf_extract::OutputError>((title, text))
    });
    let (title, text) = match result {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("PDF could not be read: {e}")),
        Err(_) => return Err("PDF could not be read: the parser failed".to_string()),
    };
    let text = text.replace('\r', "\n");
    if text.trim().is_empty() {
        return Err("PDF has no text layer".to_string());
    }
    Ok((title, text))
}

/// The `/Title` of a PDF's document information dictionary, when it says something.
fn pdf_title(doc: &pdf_extract::Document) -> Option<String> {
    let info = doc.trailer.get(b"Info").ok()?;
    let (_, info) = doc.dereference(info).ok()?;
    let title = info.as_dict().ok()?.get(b"Title").ok()?;
    let (_, title) = doc.dereference(title).ok()?;
    let title = pdf_extract::decode_text_string(title).ok()?;
    let title = title
        .chars()
        .filter(|c| *c != '\u{feff}')
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>();
    let title = collapse(&title);
    (!title.is_empty()).then_some(title)
}

/// One document per line of a JSON Lines file.
fn jsonl(
    key: &str,
    text: &str,
    bom: usize,
    file_name: &str,
    options: &IngestOptions,
) -> Result<Extracted, String> {
    let mut out = Extracted::default();
    let mut bad = 0usize;
    let mut first_bad = None;
    let mut offset = bom;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let line_no = i as u64 + 1;
        let start = offset;
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                bad += 1;
                first_bad.get_or_insert_with(|| format!("line {line_no}: {e}"));
                continue;
            }
        };
        let Some(body) = value
            .get(&options.jsonl_text_field)
            .and_then(|v| v.as_str())
        else {
            bad += 1;
            first_bad.get_or_insert_with(|| {
                format!(
                    "line {line_no}: no string field {:?}",
                    options.jsonl_text_field
                )
            });
            continue;
        };
        let title = value
            .get(&options.jsonl_title_field)
            .and_then(|v| v.as_str())
            .filter(|t| !t.trim().is_empty())
            .unwrap_or(file_name)
            .to_string();
        let id = ["_id", "id"].iter().find_map(|f| match value.get(*f) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        });
        let source = match id {
            Some(id) => format!("{key}#{id}"),
            None => key.to_string(),
        };
        let end = start + line.len();
        let chunks = chunk_plain(body, options.chunk_chars, options.overlap_chars);
        if chunks.is_empty() && !title.trim().is_empty() && title != file_name {
            // A record with a title and no body is still findable by its title.
            out.chunks.push(ChunkRecord {
                source: source.clone(),
                title: title.clone(),
                text: String::new(),
                line_start: line_no,
                line_end: line_no,
                byte_start: start as u64,
                byte_end: end as u64,
            });
        }
        for c in chunks {
            out.chunks.push(ChunkRecord {
                source: source.clone(),
                title: title.clone(),
                text: body[c.byte_start..c.byte_end].to_string(),
                line_start: line_no,
                line_end: line_no,
                byte_start: start as u64,
                byte_end: end as u64,
            });
        }
    }
    if bad > 0 {
        let first = first_bad.unwrap_or_default();
        out.warnings.push(format!(
            "{bad} JSON Lines record(s) skipped (first: {first})"
        ));
    }
    Ok(out)
}
