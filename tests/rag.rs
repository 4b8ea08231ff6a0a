//! The local index from the command line: `jielong index add|search|stats|remove`, an
//! `index add` killed with SIGKILL and resumed, and `jielong ask` on the default model
//! finding a needle sentence in a folder of documents and citing the file it came from,
//! and computing with two figures it found.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{model_lock, model_path, text, QWEN};
use serde_json::Value;

fn jielong(args: &[&str], index: &Path) -> Output {
    common::command()
        .args(args)
        .arg("--index")
        .arg(index)
        .output()
        .expect("the binary runs")
}

/// The hits of `index search --json`: one JSON object per line of stdout.
fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// Filler prose on a theme, `paragraphs` paragraphs long, different per `seed`.
fn filler(theme: &str, seed: usize, paragraphs: usize) -> String {
    let subjects = [
        "The committee",
        "A visitor",
        "The old bridge",
        "Every spring the town",
        "The library",
    ];
    let verbs = [
        "considered",
        "described",
        "remembered",
        "rebuilt",
        "measured",
    ];
    let objects = [
        "the river banks",
        "the harvest festival",
        "the northern road",
        "the clock tower",
        "the market square",
    ];
    let mut out = String::new();
    for p in 0..paragraphs {
        for s in 0..5 {
            let k = seed * 7 + p * 5 + s;
            out.push_str(&format!(
                "{} {} {} while thinking about {theme}. ",
                subjects[k % 5],
                verbs[(k / 5) % 5],
                objects[(k / 25) % 5]
            ));
        }
        out.push_str("\n\n");
    }
    out
}

/// A folder of documents; the needle is in `notes/garden.md`.
/// A folder at a fixed path under the temporary directory, emptied when made and
/// removed when dropped (the model lock keeps two tests from sharing it).
struct FixedDir(std::path::PathBuf);

impl FixedDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for FixedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn corpus(dir: &Path) {
    let themes = [
        "history",
        "weather",
        "trade",
        "music",
        "architecture",
        "farming",
    ];
    for (i, theme) in themes.iter().enumerate() {
        std::fs::write(dir.join(format!("{theme}.txt")), filler(theme, i, 12)).unwrap();
    }
    std::fs::create_dir_all(dir.join("notes")).unwrap();
    let mut garden = String::from("# Garden notes\n\n");
    garden.push_str(&filler("gardening", 9, 4));
    garden.push_str("The secret ingredient of Grandma Liu's dumplings is star anise.\n\n");
    garden.push_str(&filler("gardening", 10, 4));
    std::fs::write(dir.join("notes/garden.md"), garden).unwrap();
}

#[test]
fn index_commands_add_search_stats_and_remove() {
    let docs = tempfile::tempdir().unwrap();
    let index = tempfile::tempdir().unwrap();
    let index = index.path().join("idx");
    corpus(docs.path());
    let docs_arg = docs.path().to_str().unwrap();

    let out = jielong(&["index", "add", docs_arg], &index);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("7 added"),
        "{}",
        text(&out.stderr)
    );

    // Adding again skips what did not change.
    let out = jielong(&["index", "add", docs_arg], &index);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("7 unchanged"),
        "{}",
        text(&out.stderr)
    );

    let out = jielong(
        &[
            "index",
            "search",
            "Grandma Liu dumplings",
            "-k",
            "3",
            "--json",
        ],
        &index,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let hits = json_lines(&out);
    assert!(!hits.is_empty());
    let top = &hits[0];
    assert!(
        top["source"].as_str().unwrap().ends_with("notes/garden.md"),
        "{top}"
    );
    assert!(
        top["text"].as_str().unwrap().contains("star anise"),
        "{top}"
    );
    let (start, end) = (
        top["line_start"].as_u64().unwrap(),
        top["line_end"].as_u64().unwrap(),
    );
    let needle_line = std::fs::read_to_string(docs.path().join("notes/garden.md"))
        .unwrap()
        .lines()
        .position(|l| l.contains("star anise"))
        .unwrap() as u64
        + 1;
    assert!(
        (start..=end).contains(&needle_line),
        "{start}-{end} vs {needle_line}"
    );
    assert!(top["score"].as_f64().unwrap() > 0.0);

    let out = jielong(&["index", "stats"], &index);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("files  7"),
        "{}",
        text(&out.stdout)
    );

    let garden = docs.path().join("notes/garden.md");
    let out = jielong(&["index", "remove", garden.to_str().unwrap()], &index);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = jielong(&["index", "search", "star anise", "--json"], &index);
    assert!(out.status.success());
    assert!(
        !text(&out.stdout).contains("garden.md"),
        "{}",
        text(&out.stdout)
    );

    // A folder that is not an index: a one-line error, nothing written into it.
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), "mine").unwrap();
    let out = jielong(&["index", "stats"], foreign.path());
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim().lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    let names: Vec<_> = std::fs::read_dir(foreign.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

/// Files in the folder of the kill test: about 80 MB, more than twice the index's
/// commit size (32 MB), so the first commit lands well before the end.
const KILL_FILES: usize = 6000;

/// The marker word that opens file `i` of the kill test.
fn marker(i: usize) -> String {
    format!("zq{i}marker")
}

/// File `i` of the kill test (relative path, text): its marker, then about 13 kB of
/// filler whose words no other marker matches. Files sort by name in order of `i`.
fn kill_file(i: usize) -> (String, String) {
    const WORDS: [&str; 12] = [
        "river", "harvest", "bridge", "tower", "market", "library", "spring", "road", "clock",
        "square", "festival", "banks",
    ];
    let mut text = format!("{} opens this file.\n", marker(i));
    let mut n = i as u64 + 1;
    while text.len() < 13_000 {
        for w in 0..10 {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let word = WORDS[(n >> 60) as usize % WORDS.len()];
            text.push_str(&format!("{word}{}", (n >> 40) % 1000));
            text.push(if w == 9 { '\n' } else { ' ' });
        }
    }
    (format!("part{:02}/f{i:05}.txt", i / 500), text)
}

/// `jielong index stats`: (files, chunks).
fn index_stats(index: &Path) -> (usize, usize) {
    let out = jielong(&["index", "stats"], index);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let field = |name: &str| -> usize {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
    };
    (field("files"), field("chunks"))
}

/// Whether an ingest has committed to the index in `dir` (tantivy's meta.json carries
/// the manifest as its payload from the first commit on).
fn committed(dir: &Path) -> bool {
    std::fs::read(dir.join("meta.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|meta| meta["payload"].is_string())
}

#[test]
fn index_add_killed_mid_way_resumes_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    for i in 0..KILL_FILES {
        let (rel, body) = kill_file(i);
        let path = docs.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let docs_arg = docs.to_str().unwrap();
    let index = dir.path().join("idx");
    let fresh = dir.path().join("fresh");
    let add = |index: &Path| {
        common::command()
            .args(["index", "add", docs_arg, "--index"])
            .arg(index)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs")
    };
    let started = Instant::now();
    let mut child = add(&index);
    // The reference: the same folder indexed in one go, in parallel with the rest.
    let reference = add(&fresh);

    // Kill -9 once a commit has landed, while the ingest is still running.
    let deadline = started + Duration::from_secs(180);
    while !committed(&index) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "`index add` ended ({status}) before its first commit was seen: the folder is \
                 too small for this machine, raise KILL_FILES"
            );
        }
        assert!(Instant::now() < deadline, "no commit in 180 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "`index add` finished before the kill: raise KILL_FILES"
    );
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "not killed: {status}");
    let (at_kill, _) = index_stats(&index);
    eprintln!(
        "killed after {:.1} s with {at_kill} of {KILL_FILES} files committed",
        started.elapsed().as_secs_f64()
    );
    assert!(
        0 < at_kill && at_kill < KILL_FILES,
        "{at_kill} files committed at the kill"
    );

    // The same command again completes the work.
    let out = jielong(&["index", "add", docs_arg], &index);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let expected = format!(
        "{} added, 0 updated, {at_kill} unchanged, 0 removed, 0 skipped",
        KILL_FILES - at_kill
    );
    assert!(stderr.contains(&expected), "{stderr}\nexpected: {expected}");

    let out = reference.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (files, chunks) = index_stats(&index);
    let (fresh_files, fresh_chunks) = index_stats(&fresh);
    assert_eq!(fresh_files, KILL_FILES);
    assert_eq!((files, chunks), (KILL_FILES, fresh_chunks));

    // Every marker sampled is found once, in its file: spread over the folder, around
    // the last commit before the kill, and the last files.
    let mut sample: Vec<usize> = (0..40).map(|k| k * KILL_FILES / 40).collect();
    sample.extend(at_kill.saturating_sub(3)..(at_kill + 3).min(KILL_FILES));
    sample.extend(KILL_FILES - 4..KILL_FILES);
    sample.sort_unstable();
    sample.dedup();
    assert!(sample.len() >= 48, "{sample:?}");
    for i in sample {
        let out = jielong(
            &["index", "search", &marker(i), "--json", "-k", "5"],
            &index,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let hits = json_lines(&out);
        assert_eq!(hits.len(), 1, "{}: {hits:?}", marker(i));
        let source = hits[0]["source"].as_str().unwrap();
        assert!(
            source.ends_with(&format!("/f{i:05}.txt")),
            "{}: {source}",
            marker(i)
        );
    }
    eprintln!("kill test done in {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn ask_finds_a_needle_cites_its_file_and_computes_with_found_figures() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    // A fixed folder: the passages the model reads name their file, so a random
    // folder name would change the prompt (and the greedy answer) from run to run.
    let docs = FixedDir::new("jielong-test-ask-docs");
    let index = tempfile::tempdir().unwrap();
    corpus(docs.path());
    let mut towns = String::from(
        "# Towns of the Orrin coast

",
    );
    towns.push_str(&filler("the coast", 11, 2));
    towns.push_str(
        "Marrowby was founded in 1642 by fishermen from the north.

",
    );
    towns.push_str(&filler("the coast", 12, 2));
    towns.push_str(
        "Quillhaven was founded in 1719, when the salt works opened.

",
    );
    towns.push_str(&filler("the coast", 13, 2));
    std::fs::write(docs.path().join("notes/towns.md"), towns).unwrap();
    let out = jielong(
        &["index", "add", docs.path().to_str().unwrap()],
        index.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Search, then compute: the two years are in the passages, the difference is not.
    let scratch = tempfile::tempdir().unwrap();
    let trace = scratch.path().join("trace.jsonl");
    let out = jielong(
        &[
            "ask",
            "How many years after Marrowby was founded was Quillhaven founded?",
            "--trace",
            trace.to_str().unwrap(),
        ],
        index.path(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, text(&out.stderr));
    let (answer, sources) = stdout
        .split_once("\nSources:\n")
        .unwrap_or_else(|| panic!("a source list: {stdout}\n{}", text(&out.stderr)));
    assert!(answer.contains("77"), "{stdout}\n{}", text(&out.stderr));
    assert!(sources.contains("notes/towns.md:"), "{stdout}");
    let computed = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .any(|e| {
            e["type"] == "tool_result"
                && e["name"] == "python"
                && e["content"].as_str().is_some_and(|c| c.contains("77"))
        });
    assert!(computed, "python computed it: {stdout}");

    let out = jielong(
        &[
            "ask",
            "What is the secret ingredient of Grandma Liu's dumplings?",
        ],
        index.path(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, text(&out.stderr));
    let (answer, sources) = stdout.split_once("\nSources:\n").expect("a source list");
    assert!(answer.to_lowercase().contains("star anise"), "{stdout}");
    // The answer cites a passage, and the first source is the needle's file.
    assert!(
        answer.contains("[1]") || answer.contains("[2]") || answer.contains("[3]"),
        "{stdout}"
    );
    let first = sources.lines().next().unwrap_or_default();
    assert!(first.contains("notes/garden.md:"), "{stdout}");
}
