//! The run store on real files: layout, atomic writes, crash leftovers (temporary
//! files, torn trace lines), corrupt records, run-id validation and the run lock,
//! including a holder killed with SIGKILL in a child process.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use jielong_workflow::store::{
    rfc3339, ItemRecord, NewRun, RunId, RunRecord, RunState, RunStatus, RunStore, StepRecord,
    StepStatus, StoreError,
};
use serde_json::{json, Map, Value};

const CHILD_ENV: &str = "JIELONG_STORE_CHILD";
const CHILD_READY: &str = "JIELONG_STORE_CHILD_LOCKED";

fn new_run(name: &str) -> NewRun {
    let mut inputs = Map::new();
    inputs.insert("topic".into(), json!("tides"));
    inputs.insert("count".into(), json!(3));
    NewRun {
        workflow_name: name.to_string(),
        workflow_path: Some(PathBuf::from(format!("/flows/{name}.yaml"))),
        workflow_hash: "ab12".repeat(16),
        inputs,
    }
}

fn step(id: &str, output: Value) -> StepRecord {
    StepRecord {
        id: id.to_string(),
        status: StepStatus::Succeeded,
        output,
        started_at: "2026-11-29T10:15:02.000Z".into(),
        finished_at: "2026-11-29T10:15:03.500Z".into(),
        elapsed_ms: 1500,
        tool_calls: 2,
        tokens: Some(40),
        error: None,
    }
}

fn item(index: usize) -> ItemRecord {
    ItemRecord {
        index,
        output: json!({ "n": index }),
        elapsed_ms: 10 * index as u64,
        tool_calls: index,
    }
}

/// Trace events without the time the writer stamps on each (`ts_ms`), which lines
/// written by hand lack.
fn untimed(events: Vec<Value>) -> Vec<Value> {
    events
        .into_iter()
        .map(|mut event| {
            if let Value::Object(map) = &mut event {
                map.remove("ts_ms");
            }
            event
        })
        .collect()
}

/// Every file and directory under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if path.is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn temp_files(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_iter()
        .filter(|p| p.contains(".tmp-"))
        .collect()
}

#[test]
fn create_writes_the_layout_and_the_record() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::new(root.path().join("runs"));
    let run = store.create(new_run("essay")).unwrap();

    let id = run.id().as_str();
    assert_eq!(id.len(), 20, "{id}");
    assert!(
        id.bytes().enumerate().all(|(i, b)| if i == 8 || i == 15 {
            b == b'-'
        } else {
            b.is_ascii_hexdigit()
        }),
        "{id}"
    );
    assert_eq!(run.path(), store.root().join(id));
    assert_eq!(tree(run.path()), ["lock", "run.json", "steps"]);
    assert_eq!(
        std::fs::read_to_string(run.path().join("lock"))
            .unwrap()
            .trim(),
        std::process::id().to_string()
    );

    let record = run.record();
    assert_eq!(record.id, *run.id());
    assert_eq!(record.workflow_name, "essay");
    assert_eq!(
        record.workflow_path.as_deref(),
        Some(Path::new("/flows/essay.yaml"))
    );
    assert_eq!(record.workflow_hash, "ab12".repeat(16));
    assert_eq!(record.inputs["topic"], "tides");
    assert_eq!(record.status, RunStatus::Running);
    assert_eq!(record.attempts, 1);
    assert_eq!(record.started_at, record.updated_at);
    assert_eq!(
        (record.finished_at.as_deref(), record.error.as_deref()),
        (None, None)
    );
    // The id carries the start time to the second.
    let t = &record.started_at;
    let digits: String = t[..19].chars().filter(char::is_ascii_digit).collect();
    assert_eq!(&id[..15], format!("{}-{}", &digits[..8], &digits[8..]));
    assert!(t.ends_with('Z') && t.len() == 24, "{t}");

    // The file format: snake_case status, inputs in insertion order.
    let raw: Value =
        serde_json::from_slice(&std::fs::read(run.path().join("run.json")).unwrap()).unwrap();
    assert_eq!(raw["status"], "running");
    assert_eq!(raw["id"], id);
    let keys: Vec<&String> = raw["inputs"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["topic", "count"]);
}

#[test]
fn steps_items_status_and_outputs_survive_reopening() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::new(root.path());
    let mut run = store.create(new_run("essay")).unwrap();
    let id = run.id().clone();

    run.save_step(&step("outline", json!({ "points": ["a", "b"] })))
        .unwrap();
    run.save_item("draft", &item(0)).unwrap();
    run.save_item("draft", &item(2)).unwrap();
    run.set_status(RunStatus::Failed, Some("step `draft` failed".into()))
        .unwrap();
    let failed = run.record().clone();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(
        failed.finished_at.as_deref(),
        Some(failed.updated_at.as_str())
    );
    assert_eq!(failed.error.as_deref(), Some("step `draft` failed"));
    drop(run);

    let mut run = store.open(id.as_str()).unwrap();
    assert_eq!(run.record(), &failed);
    let steps = run.steps().unwrap();
    assert_eq!(steps.keys().collect::<Vec<_>>(), ["outline"]);
    assert_eq!(
        steps["outline"],
        step("outline", json!({ "points": ["a", "b"] }))
    );
    let items = run.items("draft").unwrap();
    assert_eq!(items, BTreeMap::from([(0, item(0)), (2, item(2))]));
    assert!(run.items("outline").unwrap().is_empty());
    assert_eq!(run.outputs().unwrap(), None);

    run.begin_attempt().unwrap();
    let resumed = run.record().clone();
    assert_eq!(resumed.attempts, 2);
    assert_eq!(resumed.status, RunStatus::Running);
    assert_eq!((resumed.finished_at, resumed.error), (None, None));
    assert_eq!(resumed.started_at, failed.started_at);

    run.save_item("draft", &item(1)).unwrap();
    let mut done = step("draft", json!(["x", "y", "z"]));
    done.tokens = None;
    run.save_step(&done).unwrap();
    let mut outputs = Map::new();
    outputs.insert("essay".into(), json!("The tides…"));
    outputs.insert("words".into(), json!(3));
    run.save_outputs(&outputs).unwrap();
    run.set_status(RunStatus::Succeeded, None).unwrap();
    assert_eq!(run.outputs().unwrap().as_ref(), Some(&outputs));
    drop(run);

    let view = store.inspect(id.as_str()).unwrap();
    assert_eq!(view.id, id);
    assert_eq!(view.state, RunState::Succeeded);
    assert_eq!(view.pid, None);
    assert_eq!(view.record.attempts, 2);
    assert_eq!(view.record.status, RunStatus::Succeeded);
    assert_eq!(view.record.error, None);
    assert!(view.record.finished_at.is_some());
    assert_eq!(view.steps.keys().collect::<Vec<_>>(), ["draft", "outline"]);
    assert_eq!(view.steps["draft"], done);
    assert_eq!(view.items, BTreeMap::from([("draft".to_string(), 3)]));
    assert_eq!(view.items_of("draft").unwrap().len(), 3);
    assert_eq!(view.outputs.as_ref(), Some(&outputs));
    let keys: Vec<&String> = view.outputs.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["essay", "words"]);
}

#[test]
fn list_is_newest_first_with_states_and_step_counts() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::new(root.path().join("runs"));
    assert!(
        store.list().unwrap().is_empty(),
        "a missing root has no runs"
    );

    let mut ids = Vec::new();
    for (i, status) in [RunStatus::Succeeded, RunStatus::Failed, RunStatus::Stopped]
        .into_iter()
        .enumerate()
    {
        let mut run = store.create(new_run(&format!("flow{i}"))).unwrap();
        for s in 0..i {
            run.save_step(&step(&format!("s{s}"), json!(s))).unwrap();
        }
        run.set_status(status, None).unwrap();
        ids.push(run.id().clone());
        // Start times have millisecond resolution.
        std::thread::sleep(Duration::from_millis(3));
    }
    let live = store.create(new_run("live")).unwrap();
    ids.push(live.id().clone());
    // Entries that are not runs are ignored.
    std::fs::write(store.root().join("notes.txt"), "hi").unwrap();
    std::fs::create_dir(store.root().join("Not-A-Run")).unwrap();
    std::fs::create_dir(store.root().join(".hidden")).unwrap();

    let listed = store.list().unwrap();
    let listed_ids: Vec<&RunId> = listed.iter().map(|r| &r.id).collect();
    let newest_first: Vec<&RunId> = ids.iter().rev().collect();
    assert_eq!(listed_ids, newest_first);
    let states: Vec<RunState> = listed.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [
            RunState::Running,
            RunState::Stopped,
            RunState::Failed,
            RunState::Succeeded
        ]
    );
    let steps: Vec<usize> = listed.iter().map(|r| r.steps_done).collect();
    assert_eq!(steps, [0, 2, 1, 0]);
    assert_eq!(listed[0].pid, Some(std::process::id()));
    assert!(listed[1..].iter().all(|r| r.pid.is_none()));
    assert_eq!(listed[3].record.as_ref().unwrap().workflow_name, "flow0");
    assert_eq!(listed[0].path, store.root().join(ids[3].as_str()));

    // The holder goes away without a final status: a crashed run.
    drop(live);
    let listed = store.list().unwrap();
    assert_eq!(listed[0].state, RunState::Interrupted);
    assert_eq!(listed[0].pid, None);
}

#[test]
fn run_ids_are_unique_under_concurrent_creation() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::new(root.path());
    let ids: Vec<RunId> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..40)
                        .map(|_| store.create(new_run("many")).unwrap().id().clone())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let unique: std::collections::BTreeSet<&RunId> = ids.iter().collect();
    assert_eq!(unique.len(), 160);
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 160);
    assert!(listed.iter().all(|r| r.state == RunState::Interrupted));
}

#[test]
fn atomic_writes_leave_no_temporary_files() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::new(root.path());
    let mut run = store.create(new_run("essay")).unwrap();
    for i in 0..5 {
        run.save_step(&step("again", json!(i))).unwrap();
        run.set_status(RunStatus::Running, None).unwrap();
    }
    // Items of one step written from several threads at once.
    std::thread::scope(|scope| {
        for t in 0..8 {
            let run = &run;
            scope.spawn(move || {
                for i in 0..10 {
                    run.save_item("map", &item(t * 10 + i)).unwrap();
                }
            });
        }
    });
    run.save_outputs(&Map::new()).unwrap();
    run.set_status(RunStatus::Succeeded, None).unwrap();

    assert_eq!(temp_files(run.path()), Vec::<String>::new());
    assert_eq!(run.steps().unwrap()["again"].output, json!(4));
    let items = run.items("map").unwrap();
    assert_eq!(items.len(), 80);
    assert!(items.iter().all(|(i, rec)| *rec == item(*i)));
    assert_eq!(run.outputs().unwrap(), Some(Map::new()));
}

#[test]
fn leftover_temporary_files_are_ignored_and_removed_on_open() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::new(root.path());
    let run = store.create(new_run("essay")).unwrap();
    let id = run.id().clone();
    run.save_step(&step("a", json!("done"))).unwrap();
    run.save_item("map", &item(0)).unwrap();
    let dir = run.path().to_path_buf();
    drop(run);

    // What a crash between "write temp" and "rename" leaves: torn and whole temps.
    let leftovers = [
        dir.join(".run.json.tmp-99999-0"),
        dir.join("steps/.b.json.tmp-99999-1"),
        dir.join("steps/.a.json.tmp-99999-2"),
        dir.join("steps/map/.1.json.tmp-99999-3"),
        dir.join(".outputs.json.tmp-99999-4"),
    ];
    for path in &leftovers {
        std::fs::write(path, "{\"id\": \"b\", \"status\": \"succ").unwrap();
    }

    let view = store.inspect(id.as_str()).unwrap();
    assert_eq!(view.steps.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(view.items, BTreeMap::from([("map".to_string(), 1)]));
    assert_eq!(view.outputs, None);
    assert_eq!(view.record.status, RunStatus::Running);
    assert_eq!(view.state, RunState::Interrupted);
    let listed = store.list().unwrap();
    assert_eq!((listed.len(), listed[0].steps_done), (1, 1));
    assert!(listed[0].record.is_ok());

    let run = store.open(id.as_str()).unwrap();
    assert_eq!(temp_files(&dir), Vec::<String>::new());
    assert_eq!(run.steps().unwrap().keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(run.items("map").unwrap().keys().collect::<Vec<_>>(), [&0]);
}

#[test]
fn a_torn_last_trace_line_is_skipped_then_cut_off_by_the_next_writer() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::new(root.path());
    let run = store.create(new_run("essay")).unwrap();
    let id = run.id().clone();
    assert!(run.read_trace().unwrap().is_empty(), "no trace yet");
    let trace = run.trace().unwrap();
    for i in 0..3 {
        trace.write(&json!({ "type": "step", "n": i })).unwrap();
    }
    let path = trace.path().to_path_buf();
    assert_eq!(path, run.path().join("trace.jsonl"));
    drop(trace);
    drop(run);

    // A kill mid-write: half an event, no newline.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(br#"{"type":"step","n":3,"te"#).unwrap();
    drop(file);

    let expected: Vec<Value> = (0..3).map(|i| json!({ "type": "step", "n": i })).collect();
    assert_eq!(
        untimed(store.inspect(id.as_str()).unwrap().read_trace().unwrap()),
        expected
    );

    let run = store.open(id.as_str()).unwrap();
    assert_eq!(untimed(run.read_trace().unwrap()), expected);
    let trace = run.trace().unwrap();
    trace.write(&json!({ "type": "resume" })).unwrap();
    trace.sync().unwrap();
    let mut expected = expected;
    expected.push(json!({ "type": "resume" }));
    assert_eq!(untimed(run.read_trace().unwrap()), expected);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("{\"type\":\"resume\",\"ts_ms\":")),
        "{text}"
    );
    assert!(text.ends_with("}\n"), "{text}");
    drop(trace);
    drop(run);

    // A whole event that only lost its newline is kept, and terminated before appending.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(br#"{"type":"whole"}"#).unwrap();
    drop(file);
    let run = store.open(id.as_str()).unwrap();
    expected.push(json!({ "type": "whole" }));
    assert_eq!(untimed(run.read_trace().unwrap()), expected);
    run.trace()
        .unwrap()
        .write(&json!({ "type": "after" }))
        .unwrap();
    expected.push(json!({ "type": "after" }));
    assert_eq!(untimed(run.read_trace().unwrap()), expected);
}

#[test]
fn a_corrupt_trace_line_before_the_last_is_an_error_naming_file_and_line() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::new(root.path());
    let run = store.create(new_run("essay")).unwrap();
    let path = run.path().join("trace.jsonl");
    std::fs::write(&path, "{\"a\":1}\n\n{\"a\":2\n{\"a\":3}\n").unwrap();
    let err = run.read_trace().unwrap_err();
    match &err {
        StoreError::CorruptTrace { path: p, line, .. } => assert_eq!((p, *line), (&path, 3)),
        other => panic!("expected CorruptTrace, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&format!("{}:3: ", path.display())),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn trace_writers_on_many_threads_write_whole_lines() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::new(root.path());
    let run = store.create(new_run("essay")).unwrap();
    let trace = run.trace().unwrap();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let trace = trace.clone();
            scope.spawn(move || {
                for n in 0..50 {
                    let padding = "x".repeat(n * 37 % 3000);
                    trace
                        .write(&json!({ "t": t, "n": n, "pad": padding }))
                        .unwrap();
                }
            });
        }
    });
    // A second call shares the writer.
    run.trace().unwrap().write(&json!({ "t": "end" })).unwrap();
    let events = run.read_trace().unwrap();
    assert_eq!(events.len(), 401);
    // The writer stamps every line with the time it was written.
    assert!(events
        .iter()
        .all(|e| e["ts_ms"].as_u64().is_some_and(|ms| ms > 0)));
    let events = untimed(events);
    assert_eq!(events[400], json!({ "t": "end" }));
    for t in 0..8 {
        let ns: Vec<u64> = events
            .iter()
            .filter(|e| e["t"] == t)
            .map(|e| e["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, (0..50).collect::<Vec<u64>>(), "thread {t}");
    }
}

#[test]
fn a_corrupt_run_record_is_listed_with_its_error_and_refused_by_open() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::new(root.path());
    // Unreadable runs sort by the second in their id, before readable runs of the
    // same second: the older run is the corrupt one, so the order holds either way.
    let bad = store.create(new_run("bad")).unwrap().id().clone();
    std::thread::sleep(Duration::from_millis(3));
    let good = store.create(new_run("good")).unwrap().id().clone();
    let run_json = store.run_path(&bad).join("run.json");
    std::fs::write(&run_json, "{ \"id\": ").unwrap();

    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!((&listed[0].id, &listed[1].id), (&good, &bad));
    let error = listed[1].record.as_ref().unwrap_err();
    assert!(
        error.starts_with(&format!("corrupt {}: ", run_json.display())),
        "{error}"
    );
    assert_eq!(listed[1].state, RunState::Unreadable);
    assert_eq!(listed[0].state, RunState::Interrupted);

    for result in [
        store.open(bad.as_str()).map(|_| ()),
        store.inspect(bad.as_str()).map(|_| ()),
    ] {
        match result {
            Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, run_json),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    // A failed open does not keep the lock.
    assert_eq!(store.list().unwrap()[1].state, RunState::Unreadable);

    // A missing record, and a record of another run.
    std::fs::remove_file(&run_json).unwrap();
    let err = store.open(bad.as_str()).map(|_| ()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("corrupt {}: the file is missing", run_json.display())
    );
    let good_json = store.run_path(&good).join("run.json");
    std::fs::copy(&good_json, &run_json).unwrap();
    let err = store.open(bad.as_str()).map(|_| ()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "corrupt {}: it records run {good}, not {bad}",
            run_json.display()
        )
    );
    assert!(store.open(good.as_str()).is_ok());
}

#[test]
fn corrupt_step_and_item_records_are_errors_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::new(root.path());
    let run = store.create(new_run("essay")).unwrap();
    run.save_step(&step("ok", json!(1))).unwrap();

    let bad = run.path().join("steps/bad.json");
    std::fs::write(&bad, "").unwrap();
    match run.steps() {
        Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, bad),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(store.inspect(run.id().as_str()).is_err());
    // A record under another step's name.
    std::fs::write(&bad, serde_json::to_vec(&step("ok", json!(1))).unwrap()).unwrap();
    let err = run.steps().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("corrupt {}: it records step `ok`", bad.display())
    );
    std::fs::remove_file(&bad).unwrap();
    assert_eq!(run.steps().unwrap().len(), 1);

    run.save_item("map", &item(0)).unwrap();
    let wrong = run.path().join("steps/map/1.json");
    std::fs::write(&wrong, serde_json::to_vec(&item(0)).unwrap()).unwrap();
    let err = run.items("map").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("corrupt {}: it records item 0", wrong.display())
    );
    // Names that are not canonical item files are not items.
    std::fs::remove_file(&wrong).unwrap();
    std::fs::write(run.path().join("steps/map/01.json"), "junk").unwrap();
    std::fs::write(run.path().join("steps/map/notes.txt"), "junk").unwrap();
    assert_eq!(run.items("map").unwrap().keys().collect::<Vec<_>>(), [&0]);
}

#[test]
fn run_ids_are_validated_so_they_cannot_escape_the_root() {
    for bad in [
        "../x", "a/b", "", "..", ".", "UPPER", "-x", "a b", "a\0b", "run.json",
    ] {
        match RunId::parse(bad) {
            Err(StoreError::InvalidRunId { id, .. }) => assert_eq!(id, bad),
            other => panic!("{bad:?} accepted: {other:?}"),
        }
    }
    assert!(RunId::parse(&"a".repeat(65)).is_err());
    assert!(RunId::parse(&"a".repeat(64)).is_ok());
    let id: RunId = "20261129-101502-3fa9".parse().unwrap();
    assert_eq!(id.to_string(), "20261129-101502-3fa9");

    let root = tempfile::tempdir().unwrap();
    let runs = root.path().join("runs");
    let store = RunStore::new(&runs);
    std::fs::create_dir_all(root.path().join("x")).unwrap();
    std::fs::write(root.path().join("x/run.json"), "{}").unwrap();
    let err = store.open("../x").map(|_| ()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid run id `../x`: only 0-9, a-z and - are allowed"
    );
    assert!(matches!(
        store.inspect("a/b"),
        Err(StoreError::InvalidRunId { .. })
    ));
    assert!(matches!(
        store.open(""),
        Err(StoreError::InvalidRunId { .. })
    ));
    assert!(!root.path().join("x/lock").exists());

    let err = store.open("20261129-101502-3fa9").map(|_| ()).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }));
    assert_eq!(
        err.to_string(),
        format!("no run `20261129-101502-3fa9` in {}", runs.display())
    );
    assert!(matches!(
        store.inspect("20261129-101502-3fa9"),
        Err(StoreError::NotFound { .. })
    ));

    // A record naming an invalid id does not parse.
    let raw = json!({
        "id": "../x", "workflow_name": "w", "workflow_hash": "h", "status": "running",
        "started_at": "t", "updated_at": "t", "attempts": 1
    });
    assert!(serde_json::from_value::<RunRecord>(raw).is_err());
}

#[test]
fn step_ids_that_are_not_file_names_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::new(root.path().join("runs"));
    let run = store.create(new_run("essay")).unwrap();
    for bad in ["../evil", "a/b", "", ".hidden", "..", "a\\b"] {
        let err = run.save_step(&step(bad, json!(null))).unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidStepId { step, .. } if step == bad),
            "{bad:?}: {err:?}"
        );
        assert!(run.save_item(bad, &item(0)).is_err(), "{bad:?}");
        assert!(run.items(bad).is_err(), "{bad:?}");
    }
    assert!(run.save_step(&step(&"s".repeat(129), json!(null))).is_err());
    assert_eq!(
        tree(root.path())
            .iter()
            .filter(|p| p.contains("evil"))
            .count(),
        0
    );
    assert_eq!(tree(&run.path().join("steps")), Vec::<String>::new());
    run.save_step(&step("solve_1", json!(null))).unwrap();
    run.save_step(&step(&"s".repeat(128), json!(null))).unwrap();
    assert_eq!(run.steps().unwrap().len(), 2);
}

#[test]
fn a_second_open_in_the_same_process_is_busy_until_the_holder_is_dropped() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::new(root.path());
    let run = store.create(new_run("essay")).unwrap();
    let id = run.id().clone();

    let err = store.open(id.as_str()).map(|_| ()).unwrap_err();
    let me = std::process::id();
    match &err {
        StoreError::Busy {
            id: busy,
            pid,
            lock,
        } => {
            assert_eq!((busy, *pid), (&id, Some(me)));
            assert_eq!(lock, &run.path().join("lock"));
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with(&format!(
            "run {id} is being run by another process (pid {me})"
        )),
        "{err}"
    );
    let view = store.inspect(id.as_str()).unwrap();
    assert_eq!((view.state, view.pid), (RunState::Running, Some(me)));
    // Readers do not disturb the holder.
    run.save_step(&step("a", json!(1))).unwrap();

    drop(run);
    let view = store.inspect(id.as_str()).unwrap();
    assert_eq!((view.state, view.pid), (RunState::Interrupted, None));
    let mut reopened = store.open(id.as_str()).unwrap();
    reopened.begin_attempt().unwrap();
    assert_eq!(reopened.record().attempts, 2);
    assert!(matches!(
        store.open(id.as_str()),
        Err(StoreError::Busy { .. })
    ));
}

/// The child's side of the SIGKILL test: opens the run, says so, and waits to be killed.
/// Runs only when the parent re-executes this binary.
#[test]
fn holder_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (root, id) = spec.split_once('\n').unwrap();
    let mut run = RunStore::new(root).open(id).unwrap();
    run.begin_attempt().unwrap();
    run.trace()
        .unwrap()
        .write(&json!({ "type": "child" }))
        .unwrap();
    println!("{CHILD_READY}");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(120));
    panic!("the child was not killed");
}

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_holder_killed_with_sigkill_leaves_an_interrupted_run_that_reopens() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::new(root.path());
    let mut run = store.create(new_run("essay")).unwrap();
    run.save_step(&step("a", json!(1))).unwrap();
    run.set_status(RunStatus::Stopped, Some("stopped".into()))
        .unwrap();
    let id = run.id().clone();
    drop(run);

    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["holder_child", "--exact", "--test-threads=1", "--nocapture"])
            .env(CHILD_ENV, format!("{}\n{id}", root.path().display()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    // The harness prints "test holder_child ... " before the test's own output.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.any(|line| line.is_ok_and(|l| l.contains(CHILD_READY)));
    assert!(ready, "the child ended without taking the lock");

    let listed = store.list().unwrap();
    assert_eq!(
        (listed[0].state, listed[0].pid),
        (RunState::Running, Some(child.id()))
    );
    assert_eq!(listed[0].record.as_ref().unwrap().attempts, 2);
    match store.open(id.as_str()) {
        Err(StoreError::Busy { pid, .. }) => assert_eq!(pid, Some(child.id())),
        other => panic!("expected Busy, got {:?}", other.map(|r| r.id().clone())),
    }

    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));

    let listed = store.list().unwrap();
    assert_eq!(
        (listed[0].state, listed[0].pid),
        (RunState::Interrupted, None)
    );
    assert_eq!(listed[0].steps_done, 1);
    let mut run = store.open(id.as_str()).unwrap();
    assert_eq!(run.record().status, RunStatus::Running);
    assert_eq!(
        untimed(run.read_trace().unwrap()),
        [json!({ "type": "child" })]
    );
    run.begin_attempt().unwrap();
    assert_eq!(run.record().attempts, 3);
}

#[test]
fn times_are_rfc3339_utc_with_milliseconds() {
    let at = |secs: u64, millis: u64| {
        rfc3339(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
    };
    assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00.000Z");
    assert_eq!(at(951_868_799, 999), "2000-02-29T23:59:59.999Z");
    assert_eq!(at(1_000_000_000, 123), "2001-09-09T01:46:40.123Z");
    assert_eq!(at(1_709_164_800, 5), "2024-02-29T00:00:00.005Z");
    assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
    assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000Z");
    assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
    assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59.000Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH - Duration::from_secs(10)),
        "1970-01-01T00:00:00.000Z"
    );
}

#[test]
fn from_env_prefers_jielong_runs() {
    // The only test that touches the environment.
    std::env::set_var("JIELONG_RUNS", "/somewhere/runs");
    assert_eq!(
        RunStore::from_env().unwrap().root(),
        Path::new("/somewhere/runs")
    );
    std::env::set_var("JIELONG_RUNS", "");
    let fallback = RunStore::from_env().map(|s| s.root().to_path_buf()).ok();
    assert_eq!(fallback, RunStore::default_root());
    std::env::remove_var("JIELONG_RUNS");
    if let Some(root) = RunStore::default_root() {
        assert!(root.ends_with("jielong/runs"), "{}", root.display());
    }
}
