//! Page text: charset detection and HTML → readable text.
//!
//! The HTML walker keeps headings (as `#` lines), paragraphs, lists (`-` / `1.`),
//! tables (cells joined by `|`), preformatted blocks and link texts, and drops
//! scripts, styles, navigation, asides, forms controls, hidden elements and common
//! boilerplate (cookie banners, share bars, …). When the page marks its main content
//! (`<main>`, `role="main"`, a single `<article>`) and that holds most of the text,
//! only it is kept.

use encoding_rs::{Encoding, UTF_8};
use scraper::{ElementRef, Html, Node, Selector};

/// The readable content of an HTML page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageText {
    /// The page's `<title>` (or `og:title`, or first `<h1>`), whitespace-collapsed.
    pub title: Option<String>,
    /// The readable text, Markdown-like.
    pub text: String,
}

/// Chooses the encoding of a body: BOM, then the Content-Type `charset`, then (for
/// HTML and XML) a `<meta charset>` / `<?xml encoding?>` declaration near the start,
/// then UTF-8.
pub fn detect_encoding(body: &[u8], header_charset: Option<&str>) -> &'static Encoding {
    if let Some((encoding, _)) = Encoding::for_bom(body) {
        return encoding;
    }
    if let Some(encoding) = header_charset.and_then(|c| Encoding::for_label(c.trim().as_bytes())) {
        return encoding;
    }
    if let Some(encoding) = sniff_declared_charset(body) {
        return encoding;
    }
    UTF_8
}

/// Decodes a body to text with [`detect_encoding`]; malformed sequences become U+FFFD.
pub fn decode_body(body: &[u8], header_charset: Option<&str>) -> String {
    let encoding = detect_encoding(body, header_charset);
    let (text, _, _) = encoding.decode(body);
    text.into_owned()
}

/// Looks for `charset=` in `<meta>` tags and `encoding=` in an XML declaration within
/// the first 1024 bytes.
fn sniff_declared_charset(body: &[u8]) -> Option<&'static Encoding> {
    let head = &body[..body.len().min(1024)];
    let head: String = head
        .iter()
        .map(|&b| {
            if b.is_ascii() {
                b.to_ascii_lowercase() as char
            } else {
                ' '
            }
        })
        .collect();
    if let Some(rest) = head.trim_start().strip_prefix("<?xml") {
        let decl = rest.split("?>").next().unwrap_or("");
        if let Some(label) = attribute_value(decl, "encoding") {
            return Encoding::for_label(label.as_bytes()).map(html_compatible);
        }
    }
    let mut rest = head.as_str();
    while let Some(start) = rest.find("<meta") {
        let tag_rest = &rest[start + 5..];
        let tag = tag_rest.split('>').next().unwrap_or("");
        if let Some(label) = attribute_value(tag, "charset") {
            if let Some(encoding) = Encoding::for_label(label.as_bytes()) {
                return Some(html_compatible(encoding));
            }
        }
        rest = tag_rest;
    }
    None
}

/// A declaration of UTF-16 inside an ASCII-compatible document means UTF-8 (HTML spec).
fn html_compatible(encoding: &'static Encoding) -> &'static Encoding {
    if encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE {
        UTF_8
    } else {
        encoding
    }
}

/// The value after `name=` (quoted or bare) in a lower-cased tag text.
fn attribute_value(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(name)?;
    let rest = tag[at + name.len()..].trim_start();
    let rest = rest.strip_prefix('=')?.trim_start();
    let rest = rest.trim_start_matches(['"', '\'']);
    let value: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        .collect();
    (!value.is_empty()).then_some(value)
}

/// Extracts the title and readable text of an HTML document.
pub fn html_to_text(html: &str) -> PageText {
    let document = Html::parse_document(html);
    let title = find_title(&document);
    let root = content_root(&document);
    let text = match root {
        Some(root) => render(root),
        None => String::new(),
    };
    PageText { title, text }
}

fn selector(css: &str) -> Option<Selector> {
    Selector::parse(css).ok()
}

fn find_title(document: &Html) -> Option<String> {
    let text_of = |css: &str| -> Option<String> {
        let sel = selector(css)?;
        let element = document.select(&sel).next()?;
        let text = crate::web::http::collapse_whitespace(&element.text().collect::<String>());
        (!text.is_empty()).then_some(text)
    };
    text_of("head > title, title")
        .or_else(|| {
            let sel = selector(r#"meta[property="og:title"]"#)?;
            let content = document.select(&sel).next()?.value().attr("content")?;
            let text = crate::web::http::collapse_whitespace(content);
            (!text.is_empty()).then_some(text)
        })
        .or_else(|| text_of("h1"))
}

/// The element whose text is rendered: the marked main content when it holds most of
/// the readable text, else `<body>` (or the document root).
fn content_root(document: &Html) -> Option<ElementRef<'_>> {
    let body = selector("body")
        .and_then(|sel| document.select(&sel).next())
        .unwrap_or_else(|| document.root_element());
    let body_len = readable_len(body);
    let candidates = ["main", "[role=main]", "article"];
    for css in candidates {
        let Some(sel) = selector(css) else { continue };
        let matches: Vec<ElementRef<'_>> = document.select(&sel).collect();
        if matches.len() != 1 {
            continue;
        }
        let candidate = matches[0];
        if is_dropped(candidate, false) {
            continue;
        }
        let len = readable_len(candidate);
        if len >= 200 && len * 2 >= body_len {
            return Some(candidate);
        }
    }
    Some(body)
}

/// Characters of text that [`render`] would keep.
fn readable_len(element: ElementRef<'_>) -> usize {
    render(element)
        .chars()
        .filter(|c| !c.is_whitespace())
        .count()
}

/// Whether an element is left out of the text (with its whole subtree).
/// `in_content` is true below `<main>`/`<article>`, where `<header>`/`<footer>` belong
/// to the content.
fn is_dropped(element: ElementRef<'_>, in_content: bool) -> bool {
    let e = element.value();
    match e.name() {
        "script" | "style" | "noscript" | "template" | "svg" | "math" | "iframe" | "object"
        | "embed" | "canvas" | "video" | "audio" | "nav" | "aside" | "button" | "select"
        | "input" | "textarea" | "option" | "dialog" | "head" | "title" | "meta" | "link"
        | "map" => return true,
        "header" | "footer" if !in_content => return true,
        _ => {}
    }
    if e.attr("hidden").is_some() || e.attr("aria-hidden") == Some("true") {
        return true;
    }
    if let Some(style) = e.attr("style") {
        let style: String = style
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        if style.contains("display:none") || style.contains("visibility:hidden") {
            return true;
        }
    }
    if let Some(role) = e.attr("role") {
        if matches!(
            role.to_ascii_lowercase().as_str(),
            "navigation"
                | "banner"
                | "contentinfo"
                | "complementary"
                | "search"
                | "dialog"
                | "alertdialog"
                | "menu"
                | "menubar"
        ) {
            return true;
        }
    }
    let id_and_classes = e
        .attr("id")
        .into_iter()
        .chain(e.attr("class"))
        .flat_map(|v| v.split_whitespace())
        .map(|token| token.to_ascii_lowercase());
    for token in id_and_classes {
        if is_boilerplate_token(&token) {
            return true;
        }
    }
    false
}

/// Class/id names of boilerplate blocks.
fn is_boilerplate_token(token: &str) -> bool {
    const EXACT: &[&str] = &[
        "nav",
        "navbar",
        "menu",
        "sidebar",
        "share",
        "sharing",
        "social",
        "related",
        "promo",
        "ad",
        "ads",
        "advert",
        "advertisement",
        "banner",
        "breadcrumb",
        "breadcrumbs",
        "comments",
        "newsletter",
        "popup",
        "modal",
        "toc-sidebar",
        "skip-link",
        "skiplink",
    ];
    const CONTAINS: &[&str] = &[
        "cookie",
        "consent",
        "gdpr",
        "sidebar",
        "breadcrumb",
        "newsletter",
        "advert",
        "skip-link",
        "share-",
        "social-",
        "related-",
        "-share",
        "navbar",
        "site-nav",
        "site-header",
        "site-footer",
    ];
    EXACT.contains(&token) || CONTAINS.iter().any(|needle| token.contains(needle))
}

/// Text output with paragraph/line bookkeeping.
struct Writer {
    out: String,
    pending_space: bool,
}

impl Writer {
    fn at_line_start(&self) -> bool {
        self.out.is_empty() || self.out.ends_with('\n')
    }

    /// Ends the current line (no-op at a line start).
    fn line_break(&mut self) {
        self.pending_space = false;
        if !self.at_line_start() {
            self.out.push('\n');
        }
    }

    /// Ends the current paragraph: makes sure an empty line follows.
    fn block_break(&mut self) {
        self.line_break();
        if !self.out.is_empty() && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
    }

    /// Appends flowing text: whitespace collapses, spaces never start a line.
    fn text(&mut self, text: &str) {
        if text.starts_with(char::is_whitespace) {
            self.pending_space = true;
        }
        let mut words = text.split_whitespace().peekable();
        while let Some(word) = words.next() {
            if self.pending_space && !self.at_line_start() && !self.out.ends_with(' ') {
                self.out.push(' ');
            }
            self.pending_space = false;
            self.out.push_str(word);
            if words.peek().is_some() {
                self.pending_space = true;
            }
        }
        if text.ends_with(char::is_whitespace) && !text.trim().is_empty() {
            self.pending_space = true;
        }
    }

    /// Appends text verbatim (inside `<pre>`).
    fn raw(&mut self, text: &str) {
        if self.pending_space && !self.at_line_start() {
            self.out.push(' ');
        }
        self.pending_space = false;
        self.out.push_str(text);
    }

    /// Starts a line with a prefix (list marker, heading marker, indentation).
    fn prefix(&mut self, prefix: &str) {
        self.line_break();
        self.out.push_str(prefix);
    }
}

/// Walk state.
#[derive(Clone, Copy)]
struct Context {
    in_content: bool,
    pre: bool,
    list_depth: usize,
}

/// Renders an element's readable text.
fn render(root: ElementRef<'_>) -> String {
    let mut writer = Writer {
        out: String::new(),
        pending_space: false,
    };
    let in_content = matches!(root.value().name(), "main" | "article")
        || root.value().attr("role") == Some("main");
    let context = Context {
        in_content,
        pre: false,
        list_depth: 0,
    };
    walk_children(root, context, &mut writer);
    finish(&writer.out)
}

fn walk_children(element: ElementRef<'_>, context: Context, writer: &mut Writer) {
    let mut ordinal = 0usize;
    let ordered = element.value().name() == "ol";
    let start = element
        .value()
        .attr("start")
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(1);
    for child in element.children() {
        match child.value() {
            Node::Text(text) => {
                if context.pre {
                    writer.raw(text);
                } else {
                    writer.text(text);
                }
            }
            Node::Element(_) => {
                let Some(child_element) = ElementRef::wrap(child) else {
                    continue;
                };
                if child_element.value().name() == "li" && context.list_depth > 0 {
                    if is_dropped(child_element, context.in_content) {
                        continue;
                    }
                    let indent = "  ".repeat(context.list_depth - 1);
                    let marker = if ordered {
                        let n = start + ordinal;
                        ordinal += 1;
                        format!("{indent}{n}. ")
                    } else {
                        format!("{indent}- ")
                    };
                    writer.prefix(&marker);
                    walk_children(child_element, context, writer);
                    writer.line_break();
                } else {
                    walk_element(child_element, context, writer);
                }
            }
            _ => {}
        }
    }
}

fn walk_element(element: ElementRef<'_>, context: Context, writer: &mut Writer) {
    if is_dropped(element, context.in_content) {
        return;
    }
    let name = element.value().name();
    match name {
        "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
            let level = name[1..].parse::<usize>().unwrap_or(1);
            writer.block_break();
            writer.out.push_str(&"#".repeat(level));
            writer.out.push(' ');
            walk_children(element, context, writer);
            writer.block_break();
        }
        "p" | "blockquote" | "figure" | "address" | "details" | "fieldset" | "hr" => {
            writer.block_break();
            walk_children(element, context, writer);
            writer.block_break();
        }
        "main" | "article" => {
            writer.block_break();
            let inner = Context {
                in_content: true,
                ..context
            };
            walk_children(element, inner, writer);
            writer.block_break();
        }
        "ul" | "ol" | "menu" | "dl" => {
            if context.list_depth == 0 {
                writer.block_break();
            } else {
                writer.line_break();
            }
            let inner = Context {
                list_depth: context.list_depth + 1,
                ..context
            };
            walk_children(element, inner, writer);
            if context.list_depth == 0 {
                writer.block_break();
            } else {
                writer.line_break();
            }
        }
        "pre" => {
            writer.block_break();
            writer.out.push_str("```\n");
            let inner = Context {
                pre: true,
                ..context
            };
            walk_children(element, inner, writer);
            writer.line_break();
            writer.out.push_str("```");
            writer.block_break();
        }
        "br" => {
            if context.pre {
                writer.raw("\n");
            } else {
                writer.pending_space = false;
                writer.out.push('\n');
            }
        }
        "table" => {
            writer.block_break();
            walk_children(element, context, writer);
            writer.block_break();
        }
        "tr" => {
            writer.line_break();
            walk_children(element, context, writer);
            writer.line_break();
        }
        "td" | "th" => {
            if !writer.at_line_start() {
                writer.out.push_str(" | ");
                writer.pending_space = false;
            }
            walk_children(element, context, writer);
        }
        "img" => {
            // An image link's only text is its alt text.
            let in_link = element
                .ancestors()
                .filter_map(ElementRef::wrap)
                .any(|a| a.value().name() == "a");
            if in_link {
                if let Some(alt) = element.value().attr("alt") {
                    writer.text(&format!(" {alt} "));
                }
            }
        }
        "div" | "section" | "header" | "footer" | "li" | "dt" | "dd" | "figcaption" | "summary"
        | "caption" | "form" | "center" | "thead" | "tbody" | "tfoot" | "legend" | "body"
        | "html" => {
            writer.line_break();
            walk_children(element, context, writer);
            writer.line_break();
        }
        _ => walk_children(element, context, writer),
    }
}

/// Trims line ends, drops empty list/heading markers and squeezes blank lines.
fn finish(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0usize;
    let mut in_fence = false;
    for line in text.lines() {
        let line = if in_fence { line } else { line.trim_end() };
        if line == "```" {
            in_fence = !in_fence;
        }
        let marker_only = !in_fence
            && (line.trim() == "-"
                || line.trim().chars().all(|c| c == '#') && !line.trim().is_empty()
                || line.trim().trim_end_matches('.').parse::<usize>().is_ok()
                    && line.trim().ends_with('.'));
        if line.trim().is_empty() || marker_only {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_headings_tables() {
        let page = html_to_text(
            "<html><head><title> T </title></head><body><h2>Head</h2><p>One <b>two</b>\n three.</p>\
             <ul><li>a</li><li>b<ul><li>c</li></ul></li></ul><ol start=3><li>x</li><li>y</li></ol>\
             <table><tr><th>k</th><th>v</th></tr><tr><td>1</td><td>2</td></tr></table>\
             <pre>let x = 1;\n  y</pre></body></html>",
        );
        assert_eq!(page.title.as_deref(), Some("T"));
        assert_eq!(
            page.text,
            "## Head\n\nOne two three.\n\n- a\n- b\n  - c\n\n3. x\n4. y\n\nk | v\n1 | 2\n\n```\nlet x = 1;\n  y\n```"
        );
    }

    #[test]
    fn meta_charset_is_sniffed() {
        let body = b"<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=Shift_JIS\">";
        assert_eq!(detect_encoding(body, None), encoding_rs::SHIFT_JIS);
        assert_eq!(
            detect_encoding(b"<meta charset='iso-8859-1'>", None),
            encoding_rs::WINDOWS_1252
        );
        assert_eq!(
            detect_encoding(b"<?xml version=\"1.0\" encoding=\"ISO-8859-2\"?>", None),
            encoding_rs::ISO_8859_2
        );
        assert_eq!(
            detect_encoding(b"plain", Some("koi8-r")),
            encoding_rs::KOI8_R
        );
        assert_eq!(detect_encoding(b"plain", None), UTF_8);
    }
}
