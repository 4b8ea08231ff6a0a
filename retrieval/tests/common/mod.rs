//! Helpers shared by the retrieval tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jielong_retrieval::{Hit, Index, IngestOptions, IngestProgress, IngestReport, SearchRequest};

/// Records every progress call.
#[derive(Default)]
pub struct Recorder {
    pub warnings: Mutex<Vec<(PathBuf, String)>>,
    pub started: Mutex<Option<(usize, u64)>>,
    pub done: Mutex<Vec<PathBuf>>,
}

impl IngestProgress for Recorder {
    fn start(&self, files: usize, bytes: u64) {
        *self.started.lock().unwrap() = Some((files, bytes));
    }
    fn file_done(&self, path: &Path, _bytes: u64) {
        self.done.lock().unwrap().push(path.to_path_buf());
    }
    fn warn(&self, path: &Path, message: &str) {
        self.warnings
            .lock()
            .unwrap()
            .push((path.to_path_buf(), message.to_string()));
    }
}

impl Recorder {
    /// The warning recorded for a file whose name is `name`, if any.
    pub fn warning_for(&self, name: &str) -> Option<String> {
        self.warnings
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| p.file_name().is_some_and(|n| n == name))
            .map(|(_, m)| m.clone())
    }
}

/// Writes `files` (relative path, content) under `root`.
pub fn write_files(root: &Path, files: &[(&str, &[u8])]) {
    for (rel, content) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// Ingests `paths` with default options and a recorder.
pub fn ingest<P: AsRef<Path>>(
    index: &Index,
    paths: impl IntoIterator<Item = P>,
) -> (IngestReport, Recorder) {
    ingest_with(index, paths, &IngestOptions::default())
}

/// Ingests `paths` with `options` and a recorder.
pub fn ingest_with<P: AsRef<Path>>(
    index: &Index,
    paths: impl IntoIterator<Item = P>,
    options: &IngestOptions,
) -> (IngestReport, Recorder) {
    let paths: Vec<PathBuf> = paths
        .into_iter()
        .map(|p| p.as_ref().to_path_buf())
        .collect();
    let recorder = Recorder::default();
    let report = index.ingest(&paths, options, &recorder).unwrap();
    (report, recorder)
}

/// The hits for `query` (up to 1000).
pub fn search(index: &Index, query: &str) -> Vec<Hit> {
    index.search(&SearchRequest::new(query, 1000)).unwrap()
}

/// The canonical path of `path` as the index stores it.
pub fn key(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A minimal one-page PDF whose text layer holds `lines` (none: a PDF without text).
pub fn pdf(lines: &[&str]) -> Vec<u8> {
    pdf_titled(lines, None)
}

/// [`pdf`] with a `/Title` in the document information dictionary (as a UTF-16 text
/// string when it is not ASCII).
pub fn pdf_titled(lines: &[&str], title: Option<&str>) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{dictionary, Document, Object, Stream};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
    });
    let resources_id = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
    });
    let mut operations = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        operations.push(Operation::new("BT", vec![]));
        operations.push(Operation::new("Tf", vec!["F1".into(), 12.into()]));
        operations.push(Operation::new(
            "Td",
            vec![72.into(), (720 - 20 * i as i64).into()],
        ));
        operations.push(Operation::new("Tj", vec![Object::string_literal(*line)]));
        operations.push(Operation::new("ET", vec![]));
    }
    let content = Content { operations };
    let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page",
        "Parent" => pages_id,
        "Contents" => content_id,
    });
    let pages = dictionary! {
        "Type" => "Pages",
        "Kids" => vec![page_id.into()],
        "Count" => 1,
        "Resources" => resources_id,
        "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
    };
    doc.objects.insert(pages_id, Object::Dictionary(pages));
    let catalog_id = doc.add_object(dictionary! {
        "Type" => "Catalog",
        "Pages" => pages_id,
    });
    doc.trailer.set("Root", catalog_id);
    if let Some(title) = title {
        let info_id = doc.add_object(dictionary! {
            "Title" => lopdf::text_string(title),
            "Producer" => Object::string_literal("jielong tests"),
        });
        doc.trailer.set("Info", info_id);
    }
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}
