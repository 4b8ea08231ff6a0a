//! [`RunStore`]: where workflow runs persist their state, so a stopped or crashed run
//! resumes without redoing finished steps and past runs can be listed and shown.
//!
//! # Layout
//!
//! ```text
//! <root>/<RUN_ID>/run.json              RunRecord, rewritten atomically on status changes
//! <root>/<RUN_ID>/steps/<step>.json     StepRecord, written when a step finishes
//! <root>/<RUN_ID>/steps/<step>/<n>.json ItemRecord, one per finished for_each item
//! <root>/<RUN_ID>/trace.jsonl           append-only events, one JSON value per line
//! <root>/<RUN_ID>/outputs.json          the workflow's outputs, once it succeeded
//! <root>/<RUN_ID>/lock                  locked while a process runs the run
//! ```
//!
//! The root is `$JIELONG_RUNS`, else `<user data dir>/jielong/runs`
//! ([`RunStore::from_env`]).
//!
//! # Durability
//!
//! Every JSON file except the trace is written whole or not at all: the bytes go to a
//! temporary file `.<name>.tmp-<pid>-<n>` in the same directory, which is synced,
//! renamed over the target, and the directory synced. A crash (`kill -9`, power loss)
//! leaves either the old file or the new one, plus at worst a temporary file that every
//! reader ignores and [`RunStore::open`] removes. Because of that, a record file that
//! does not parse was not torn by a crash: it was damaged or edited. It is reported as
//! [`StoreError::Corrupt`] naming the file, never taken for "not finished", since
//! re-running a step can repeat its side effects; deleting the file re-runs the step.
//!
//! The trace is appended one event per `write` (a single `write_all` of `json\n`, no
//! user-space buffering; each event stamped with `ts_ms`, milliseconds since the UNIX
//! epoch, by the shared [`TraceWriter`]), so a killed process loses at most the event being written,
//! as a torn last line. Readers skip a torn last line; the next writer
//! ([`RunDir::trace`]) cuts it off before appending. The trace is not synced per
//! event: a power loss may lose its tail ([`TraceWriter::sync`] forces it).
//!
//! # Locking
//!
//! A process runs a run only while it holds an exclusive `flock` on `<run>/lock`
//! ([`RunStore::create`] and [`RunStore::open`] take it; dropping the [`RunDir`]
//! releases it). The kernel releases it when the process dies, so a killed run can be
//! reopened at once; a record that says `running` with nobody holding the lock is a
//! crashed run ([`RunState::Interrupted`]). The holder writes its pid into the lock
//! file, which only names the holder in [`StoreError::Busy`]. The lock belongs to the
//! open file description: another `open` in the same process conflicts too. Readers
//! ([`RunStore::list`], [`RunStore::inspect`]) test the lock by taking a shared lock
//! for an instant; a locker that meets such a probe retries for a few tens of
//! milliseconds before reporting [`StoreError::Busy`]. A probe retries the same way
//! before it reports a holder: a child being spawned by any thread of the holder's
//! process shares its descriptors until it execs, so a released lock can stay held
//! for that instant.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jielong_util::{is_temporary, sync_dir as sync_folder, write_atomic as write_whole, IoFailure};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Environment variable naming the root directory of the run store.
pub const ENV_RUNS_DIR: &str = "JIELONG_RUNS";

const RUN_FILE: &str = "run.json";
const STEPS_DIR: &str = "steps";
const TRACE_FILE: &str = "trace.jsonl";
const OUTPUTS_FILE: &str = "outputs.json";
const LOCK_FILE: &str = "lock";

/// How many times taking a run's lock is tried before reporting it busy (a reader's
/// probe holds it for an instant), and the pause between tries.
const LOCK_ATTEMPTS: u32 = 5;
const LOCK_RETRY: Duration = Duration::from_millis(10);
/// How many fresh run ids [`RunStore::create`] tries before giving up.
const CREATE_ATTEMPTS: u32 = 64;
/// The longest run id accepted.
const MAX_RUN_ID_LEN: usize = 64;
/// The longest step id usable as a file name (leaves room for the temporary-file
/// decoration within the usual 255-byte name limit).
const MAX_STEP_ID_LEN: usize = 128;

/// Everything that can go wrong reading or writing the run store.
///
/// Messages are one line and name the run, file or directory concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `JIELONG_RUNS` is unset and the user has no data directory.
    #[error("cannot find a directory for workflow runs: set {ENV_RUNS_DIR}")]
    NoDataDir,
    /// A run id (typically from the command line) is not one the store could have made.
    #[error("invalid run id `{id}`: {reason}")]
    InvalidRunId {
        /// The id as given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A step id cannot be used as a file name in a run directory.
    #[error("invalid step id `{step}` for a record in {}: {reason}", dir.display())]
    InvalidStepId {
        /// The step id as given.
        step: String,
        /// The run directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No run with this id exists under the root.
    #[error("no run `{id}` in {}", root.display())]
    NotFound {
        /// The id as given.
        id: String,
        /// The store's root.
        root: PathBuf,
    },
    /// Another process (or another [`RunDir`] in this one) holds the run's lock.
    #[error("run {id} is being run by another process ({}); lock file {}", Holder(*pid), lock.display())]
    Busy {
        /// The run.
        id: RunId,
        /// The holder's process id, when the lock file names it.
        pid: Option<u32>,
        /// The lock file.
        lock: PathBuf,
    },
    /// A record file exists but cannot be used (does not parse, or contradicts where it is).
    #[error("corrupt {}: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A line of a trace file, other than a torn last line, does not parse.
    #[error("corrupt trace {}:{line}: {detail}", path.display())]
    CorruptTrace {
        /// The trace file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// A file or directory could not be read, written or created.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done: "read", "write", "create", …
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A value could not be encoded as JSON (a map with non-string keys, a path that is
    /// not UTF-8).
    #[error("cannot encode JSON for {}: {source}", path.display())]
    Encode {
        /// The file it was meant for.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

/// Displays a lock holder's pid, or says it is unknown.
struct Holder(Option<u32>);

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "pid {pid}"),
            None => f.write_str("pid unknown"),
        }
    }
}

/// Turns an I/O error into [`StoreError::Io`] for `op` on `path`.
/// [`jielong_util::write_atomic`], failing as a [`StoreError`].
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    Ok(write_whole(path, bytes)?)
}

/// [`jielong_util::sync_dir`], failing as a [`StoreError`].
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    Ok(sync_folder(dir)?)
}

impl From<IoFailure> for StoreError {
    fn from(failure: IoFailure) -> Self {
        StoreError::Io {
            op: failure.action,
            path: failure.path,
            source: failure.source,
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A run's id: its directory name under the root, e.g. `20261129-101502-3fa9`.
///
/// Fresh ids are the UTC start time (to the second) and 4 random hex digits, so they
/// sort by time. A parsed id is non-empty, at most 64 characters of `0-9`, `a-z` and
/// `-`, and does not start with `-`: it can never name a path outside the root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    /// Checks `id` and wraps it.
    pub fn parse(id: &str) -> Result<Self, StoreError> {
        let reason = if id.is_empty() {
            Some("it is empty")
        } else if id.len() > MAX_RUN_ID_LEN {
            Some("it is longer than 64 characters")
        } else if !id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
        {
            Some("only 0-9, a-z and - are allowed")
        } else if id.starts_with('-') {
            Some("it starts with -")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(StoreError::InvalidRunId {
                id: id.to_string(),
                reason,
            }),
            None => Ok(RunId(id.to_string())),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fresh id for a run started at `at`; `salt` varies the random part.
    fn generate(at: SystemTime, salt: u32) -> RunId {
        let t = jielong_util::date::utc(at.max(UNIX_EPOCH));
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.write_u64(ID_COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u32(salt);
        let random = hasher.finish() as u16;
        RunId(format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}-{random:04x}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ))
    }

    /// The start time encoded in a generated id, as `YYYY-MM-DDTHH:MM:SS` (a prefix of
    /// the RFC 3339 times in records, so the two compare); `None` for other ids.
    fn time_prefix(&self) -> Option<String> {
        let b = self.0.as_bytes();
        let shaped =
            b.len() >= 15 && b[8] == b'-' && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
        shaped.then(|| {
            let s = &self.0;
            format!(
                "{}-{}-{}T{}:{}:{}",
                &s[0..4],
                &s[4..6],
                &s[6..8],
                &s[9..11],
                &s[11..13],
                &s[13..15]
            )
        })
    }
}

/// Varies the random part of ids made in the same instant.
static ID_COUNTER: AtomicU64 = AtomicU64::new(0);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RunId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for RunId {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunId::parse(s)
    }
}

impl TryFrom<String> for RunId {
    type Error = StoreError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        RunId::parse(&s)
    }
}

impl From<RunId> for String {
    fn from(id: RunId) -> String {
        id.0
    }
}

/// What a new run starts with ([`RunStore::create`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewRun {
    /// The workflow's name.
    pub workflow_name: String,
    /// The workflow file, when it came from one.
    pub workflow_path: Option<PathBuf>,
    /// A hex digest of the workflow's YAML source (computed by the caller), so a resume
    /// can tell whether the file changed.
    pub workflow_hash: String,
    /// The run's input values.
    pub inputs: Map<String, Value>,
}

/// Where a run stands, as recorded in `run.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started and not finished (or crashed: see [`RunState::Interrupted`]).
    Running,
    /// Every step finished and the outputs were written.
    Succeeded,
    /// A step or the workflow failed; [`RunRecord::error`] says why.
    Failed,
    /// Stopped on request (for example Ctrl-C) before it finished.
    Stopped,
}

impl RunStatus {
    /// Whether the run ended (anything but [`RunStatus::Running`]).
    pub fn is_terminal(self) -> bool {
        self != RunStatus::Running
    }
}

/// The contents of `run.json`: what a run is and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id (its directory name).
    pub id: RunId,
    /// The workflow's name.
    pub workflow_name: String,
    /// The workflow file, when it came from one.
    #[serde(default)]
    pub workflow_path: Option<PathBuf>,
    /// A hex digest of the workflow's YAML source.
    pub workflow_hash: String,
    /// The run's input values.
    #[serde(default)]
    pub inputs: Map<String, Value>,
    /// Where the run stands.
    pub status: RunStatus,
    /// When the run was created (RFC 3339, UTC, milliseconds).
    pub started_at: String,
    /// When the record last changed (RFC 3339, UTC, milliseconds).
    pub updated_at: String,
    /// When the run last ended (set with a terminal status, cleared by a resume).
    #[serde(default)]
    pub finished_at: Option<String>,
    /// How many times the run was started: 1 plus the number of resumes.
    pub attempts: u32,
    /// Why the run failed or stopped, when it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// The step ran and produced its output.
    Succeeded,
    /// The step's condition was false; it did not run.
    Skipped,
    /// The step ran and failed; [`StepRecord::error`] says why.
    Failed,
}

/// The record of a finished step: `steps/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's id (also the file name).
    pub id: String,
    /// How it ended.
    pub status: StepStatus,
    /// Its output (`null` when skipped or failed).
    #[serde(default)]
    pub output: Value,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// When it finished (RFC 3339, UTC).
    pub finished_at: String,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
    /// How many tool calls it made.
    #[serde(default)]
    pub tool_calls: usize,
    /// Tokens generated, when the step used a model.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// Why it failed, when it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// The record of one finished item of a `for_each` step: `steps/<step>/<index>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// The item's position in the list (also the file name).
    pub index: usize,
    /// Its output.
    #[serde(default)]
    pub output: Value,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
    /// How many tool calls it made.
    #[serde(default)]
    pub tool_calls: usize,
}

/// Where a run stands, from its record and its lock together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// A live process holds the run's lock (running it, resuming it, or creating it).
    Running,
    /// The record says running but no process holds the lock: the process crashed or
    /// was killed. It can be resumed.
    Interrupted,
    /// The run succeeded.
    Succeeded,
    /// The run failed.
    Failed,
    /// The run was stopped on request.
    Stopped,
    /// `run.json` is missing or corrupt and no process holds the lock.
    Unreadable,
}

impl RunState {
    /// The state of a run whose record says `status` (`None`: unreadable) and whose
    /// lock is or is not held.
    fn of(status: Option<RunStatus>, locked: bool) -> RunState {
        match (locked, status) {
            (true, _) => RunState::Running,
            (false, None) => RunState::Unreadable,
            (false, Some(RunStatus::Running)) => RunState::Interrupted,
            (false, Some(RunStatus::Succeeded)) => RunState::Succeeded,
            (false, Some(RunStatus::Failed)) => RunState::Failed,
            (false, Some(RunStatus::Stopped)) => RunState::Stopped,
        }
    }
}

/// One run as [`RunStore::list`] sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The run's id.
    pub id: RunId,
    /// Its directory.
    pub path: PathBuf,
    /// Its record, or why `run.json` could not be read (the error's message).
    pub record: Result<RunRecord, String>,
    /// Where it stands.
    pub state: RunState,
    /// The pid of the process holding its lock, when it is [`RunState::Running`] and
    /// the lock file names it.
    pub pid: Option<u32>,
    /// How many step records it has (finished steps, including skipped and failed ones).
    pub steps_done: usize,
}

/// Everything stored about one run, read without taking its lock ([`RunStore::inspect`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    /// The run's id.
    pub id: RunId,
    /// Its directory.
    pub path: PathBuf,
    /// Its record.
    pub record: RunRecord,
    /// Where it stands.
    pub state: RunState,
    /// The pid of the process holding its lock, when it is [`RunState::Running`] and
    /// the lock file names it.
    pub pid: Option<u32>,
    /// The finished steps, by id.
    pub steps: BTreeMap<String, StepRecord>,
    /// How many finished items each `for_each` step has, by step id (also for steps
    /// that did not finish).
    pub items: BTreeMap<String, usize>,
    /// The workflow's outputs, once it succeeded.
    pub outputs: Option<Map<String, Value>>,
}

impl RunView {
    /// The run's trace events (see [`RunDir::read_trace`]).
    pub fn read_trace(&self) -> Result<Vec<Value>, StoreError> {
        read_trace(&self.path.join(TRACE_FILE))
    }

    /// The finished items of `step`, by index.
    pub fn items_of(&self, step: &str) -> Result<BTreeMap<usize, ItemRecord>, StoreError> {
        RunFiles::new(&self.path).items(step)
    }
}

/// The run store: a root directory holding one directory per run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStore {
    root: PathBuf,
}

impl RunStore {
    /// A store at `root` (created when the first run is). Reads no environment variable.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunStore { root: root.into() }
    }

    /// The store at `$JIELONG_RUNS` when set and non-empty, else at
    /// [`RunStore::default_root`]. Fails only when neither exists.
    pub fn from_env() -> Result<Self, StoreError> {
        match std::env::var_os(ENV_RUNS_DIR).filter(|v| !v.is_empty()) {
            Some(dir) => Ok(RunStore::new(dir)),
            None => Self::default_root()
                .map(RunStore::new)
                .ok_or(StoreError::NoDataDir),
        }
    }

    /// The user's default root: `<data dir>/jielong/runs` (on Linux
    /// `$XDG_DATA_HOME/jielong/runs` or `~/.local/share/jielong/runs`).
    pub fn default_root() -> Option<PathBuf> {
        dirs::data_dir().map(|d| d.join("jielong").join("runs"))
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of run `id` (whether or not it exists).
    pub fn run_path(&self, id: &RunId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// Creates a run: a fresh unique id, its directory, `run.json` (status running,
    /// attempt 1), and holds its lock until the returned [`RunDir`] is dropped.
    pub fn create(&self, new: NewRun) -> Result<RunDir, StoreError> {
        fs::create_dir_all(&self.root).map_err(io_err("create", &self.root))?;
        let mut made = None;
        for salt in 0..CREATE_ATTEMPTS {
            let now = SystemTime::now();
            let id = RunId::generate(now, salt);
            let dir = self.run_path(&id);
            match fs::create_dir(&dir) {
                Ok(()) => {
                    made = Some((id, dir, now));
                    break;
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("create", &dir)(e)),
            }
        }
        let Some((id, dir, now)) = made else {
            return Err(StoreError::Io {
                op: "find a free run id in",
                path: self.root.clone(),
                source: io::Error::new(ErrorKind::AlreadyExists, "every id tried was taken"),
            });
        };
        let result = (|| {
            sync_dir(&self.root)?;
            let lock = lock_run(&dir, &id)?;
            let steps = dir.join(STEPS_DIR);
            fs::create_dir(&steps).map_err(io_err("create", &steps))?;
            let started_at = rfc3339(now);
            let record = RunRecord {
                id: id.clone(),
                workflow_name: new.workflow_name,
                workflow_path: new.workflow_path,
                workflow_hash: new.workflow_hash,
                inputs: new.inputs,
                status: RunStatus::Running,
                started_at: started_at.clone(),
                updated_at: started_at,
                finished_at: None,
                attempts: 1,
                error: None,
            };
            let files = RunFiles::new(&dir);
            files.write_record(&record)?;
            Ok(RunDir {
                id: id.clone(),
                files,
                record,
                trace: Mutex::new(None),
                _lock: lock,
            })
        })();
        if result.is_err() {
            // A directory without its record would be listed as unreadable forever.
            let _ = fs::remove_dir_all(&dir);
        }
        result
    }

    /// Opens run `id` to resume it: takes its lock ([`StoreError::Busy`] when another
    /// process holds it), reads `run.json` and removes temporary files a crash left.
    /// Changes nothing else: [`RunDir::begin_attempt`] marks the resume.
    pub fn open(&self, id: &str) -> Result<RunDir, StoreError> {
        let (id, dir) = self.existing(id)?;
        let lock = lock_run(&dir, &id)?;
        let files = RunFiles::new(&dir);
        let record = files.read_record(&id)?;
        files.remove_temp_files();
        Ok(RunDir {
            id,
            files,
            record,
            trace: Mutex::new(None),
            _lock: lock,
        })
    }

    /// Reads everything stored about run `id` without taking its lock (for showing a
    /// run, possibly while another process runs it). Fails when the run does not exist
    /// or one of its record files is corrupt, naming the file.
    pub fn inspect(&self, id: &str) -> Result<RunView, StoreError> {
        let (id, dir) = self.existing(id)?;
        let files = RunFiles::new(&dir);
        let record = files.read_record(&id)?;
        let pid = probe_lock(&dir)?;
        Ok(RunView {
            state: RunState::of(Some(record.status), pid.is_some()),
            pid: pid.flatten(),
            steps: files.steps()?,
            items: files.item_counts()?,
            outputs: files.outputs()?,
            record,
            path: dir,
            id,
        })
    }

    /// Every run under the root, newest first (by start time, then id). Runs whose
    /// `run.json` cannot be read are listed with the error instead of a record (sorted
    /// by the time in their id); only a failure to read the root itself is an error. A
    /// root that does not exist yet holds no runs. Entries whose names are not run ids
    /// are ignored.
    pub fn list(&self) -> Result<Vec<RunSummary>, StoreError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &self.root)(e)),
        };
        let mut runs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("read", &self.root))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| RunId::parse(n).ok())
            else {
                continue;
            };
            let dir = entry.path();
            if !fs::metadata(&dir).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let files = RunFiles::new(&dir);
            let record = files.read_record(&id).map_err(|e| e.to_string());
            // A probe that fails says nothing about a holder; the listing goes on.
            let pid = probe_lock(&dir).unwrap_or(None);
            runs.push(RunSummary {
                state: RunState::of(record.as_ref().ok().map(|r| r.status), pid.is_some()),
                pid: pid.flatten(),
                steps_done: files.count_steps(),
                record,
                path: dir,
                id,
            });
        }
        let key = |run: &RunSummary| {
            (
                run.id.time_prefix().unwrap_or_default(),
                run.record
                    .as_ref()
                    .map(|r| r.started_at.clone())
                    .unwrap_or_default(),
                run.id.clone(),
            )
        };
        runs.sort_by_cached_key(|run| std::cmp::Reverse(key(run)));
        Ok(runs)
    }

    /// Checks `id` and that its directory exists.
    fn existing(&self, id: &str) -> Result<(RunId, PathBuf), StoreError> {
        let id = RunId::parse(id)?;
        let dir = self.run_path(&id);
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => Ok((id, dir)),
            Ok(_) => Err(StoreError::NotFound {
                id: id.0,
                root: self.root.clone(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StoreError::NotFound {
                id: id.0,
                root: self.root.clone(),
            }),
            Err(e) => Err(io_err("read", &dir)(e)),
        }
    }
}

/// An open run: created by [`RunStore::create`] or reopened by [`RunStore::open`].
/// Holds the run's lock until dropped.
#[derive(Debug)]
pub struct RunDir {
    id: RunId,
    files: RunFiles,
    record: RunRecord,
    /// The shared trace writer, made on first use.
    trace: Mutex<Option<TraceWriter>>,
    /// The locked lock file; closing it releases the lock.
    _lock: File,
}

impl RunDir {
    /// The run's id.
    pub fn id(&self) -> &RunId {
        &self.id
    }

    /// The run's directory.
    pub fn path(&self) -> &Path {
        &self.files.dir
    }

    /// The run's record as last written.
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// Sets the run's status and error and rewrites `run.json` atomically. A terminal
    /// status sets `finished_at`, [`RunStatus::Running`] clears it. On failure the
    /// record is unchanged.
    pub fn set_status(
        &mut self,
        status: RunStatus,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let mut next = self.record.clone();
        let now = now_rfc3339();
        next.status = status;
        next.error = error;
        next.finished_at = status.is_terminal().then(|| now.clone());
        next.updated_at = now;
        self.files.write_record(&next)?;
        self.record = next;
        Ok(())
    }

    /// Marks a resume: one more attempt, status running, no error, no finish time.
    pub fn begin_attempt(&mut self) -> Result<(), StoreError> {
        let mut next = self.record.clone();
        next.attempts = next.attempts.saturating_add(1);
        next.status = RunStatus::Running;
        next.error = None;
        next.finished_at = None;
        next.updated_at = now_rfc3339();
        self.files.write_record(&next)?;
        self.record = next;
        Ok(())
    }

    /// Writes `steps/<id>.json` atomically, replacing an earlier record of the step
    /// (a failed step that ran again). Fails for a step id that is not a usable file
    /// name.
    pub fn save_step(&self, step: &StepRecord) -> Result<(), StoreError> {
        let path = self.files.step_file(&step.id)?;
        write_json_atomic(&path, step)
    }

    /// The recorded steps, by id: every step that finished (succeeded, skipped or
    /// failed). A record that does not parse, or names another step, is an error naming
    /// the file; temporary files left by a crash are ignored.
    pub fn steps(&self) -> Result<BTreeMap<String, StepRecord>, StoreError> {
        self.files.steps()
    }

    /// Writes `steps/<step>/<index>.json` atomically.
    pub fn save_item(&self, step: &str, item: &ItemRecord) -> Result<(), StoreError> {
        let dir = self.files.items_dir(step)?;
        match fs::create_dir(&dir) {
            Ok(()) => sync_dir(&self.files.dir.join(STEPS_DIR))?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", &dir)(e)),
        }
        write_json_atomic(&dir.join(format!("{}.json", item.index)), item)
    }

    /// The finished items of `step`, by index; empty when none finished. Errors as for
    /// [`RunDir::steps`].
    pub fn items(&self, step: &str) -> Result<BTreeMap<usize, ItemRecord>, StoreError> {
        self.files.items(step)
    }

    /// Writes `outputs.json` atomically.
    pub fn save_outputs(&self, outputs: &Map<String, Value>) -> Result<(), StoreError> {
        write_json_atomic(&self.files.dir.join(OUTPUTS_FILE), outputs)
    }

    /// The saved outputs, if any.
    pub fn outputs(&self) -> Result<Option<Map<String, Value>>, StoreError> {
        self.files.outputs()
    }

    /// The writer appending to `trace.jsonl`. The first call opens the file, first
    /// cutting off a torn last line a crash left (or terminating it, when it is a
    /// whole JSON value that only lacks its newline); later calls return clones of the
    /// same writer.
    pub fn trace(&self) -> Result<TraceWriter, StoreError> {
        let mut slot = self.trace.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(writer) = slot.as_ref() {
            return Ok(writer.clone());
        }
        let writer = open_trace(self.files.dir.join(TRACE_FILE))?;
        *slot = Some(writer.clone());
        Ok(writer)
    }

    /// The trace's events in order. A torn last line (a crash mid-write) is skipped; a
    /// line elsewhere that does not parse is [`StoreError::CorruptTrace`] naming
    /// `file:line`. No trace yet: no events.
    pub fn read_trace(&self) -> Result<Vec<Value>, StoreError> {
        read_trace(&self.files.dir.join(TRACE_FILE))
    }
}

/// Appends events to a run's `trace.jsonl`: the one trace writer of Jielong (each line
/// stamped with `ts_ms`; see [`jielong_agent::TraceWriter`]).
pub use jielong_agent::TraceWriter;

/// Opens a run's trace for appending, after repairing a torn last line.
fn open_trace(path: PathBuf) -> Result<TraceWriter, StoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    repair_torn_tail(&mut file, &path)?;
    Ok(TraceWriter::from_file(path, file))
}

pub use jielong_util::date::{now_rfc3339, rfc3339};

/// The files of one run directory, for both [`RunDir`] and [`RunStore::inspect`].
#[derive(Debug, Clone)]
struct RunFiles {
    dir: PathBuf,
}

impl RunFiles {
    fn new(dir: &Path) -> Self {
        RunFiles {
            dir: dir.to_path_buf(),
        }
    }

    /// Reads `run.json`, which must exist and be the record of run `id`.
    fn read_record(&self, id: &RunId) -> Result<RunRecord, StoreError> {
        let path = self.dir.join(RUN_FILE);
        let record: RunRecord = read_json(&path)?.ok_or_else(|| StoreError::Corrupt {
            path: path.clone(),
            detail: "the file is missing".to_string(),
        })?;
        if record.id != *id {
            return Err(StoreError::Corrupt {
                path,
                detail: format!("it records run {}, not {id}", record.id),
            });
        }
        Ok(record)
    }

    fn write_record(&self, record: &RunRecord) -> Result<(), StoreError> {
        write_json_atomic(&self.dir.join(RUN_FILE), record)
    }

    fn step_file(&self, step: &str) -> Result<PathBuf, StoreError> {
        self.check_step_id(step)?;
        Ok(self.dir.join(STEPS_DIR).join(format!("{step}.json")))
    }

    fn items_dir(&self, step: &str) -> Result<PathBuf, StoreError> {
        self.check_step_id(step)?;
        Ok(self.dir.join(STEPS_DIR).join(step))
    }

    /// Refuses step ids that could escape `steps/`, hide among temporary files, or
    /// exceed file-name limits.
    fn check_step_id(&self, step: &str) -> Result<(), StoreError> {
        let reason = if step.is_empty() {
            Some("it is empty")
        } else if step.len() > MAX_STEP_ID_LEN {
            Some("it is longer than 128 bytes")
        } else if step.starts_with('.') {
            Some("it starts with .")
        } else if step.contains(['/', '\\', '\0']) {
            Some("it contains /, \\ or NUL")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(StoreError::InvalidStepId {
                step: step.to_string(),
                dir: self.dir.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }

    fn steps(&self) -> Result<BTreeMap<String, StepRecord>, StoreError> {
        let mut steps = BTreeMap::new();
        for (name, path) in record_files(&self.dir.join(STEPS_DIR))? {
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            let Some(record) = read_json::<StepRecord>(&path)? else {
                continue; // removed since listed
            };
            if record.id != stem {
                return Err(StoreError::Corrupt {
                    path,
                    detail: format!("it records step `{}`", record.id),
                });
            }
            steps.insert(record.id.clone(), record);
        }
        Ok(steps)
    }

    fn count_steps(&self) -> usize {
        record_files(&self.dir.join(STEPS_DIR)).map_or(0, |files| {
            files.iter().filter(|(n, _)| n.ends_with(".json")).count()
        })
    }

    fn items(&self, step: &str) -> Result<BTreeMap<usize, ItemRecord>, StoreError> {
        let mut items = BTreeMap::new();
        for (index, path) in item_files(&self.items_dir(step)?)? {
            let Some(record) = read_json::<ItemRecord>(&path)? else {
                continue;
            };
            if record.index != index {
                return Err(StoreError::Corrupt {
                    path,
                    detail: format!("it records item {}", record.index),
                });
            }
            items.insert(index, record);
        }
        Ok(items)
    }

    /// How many item files each step directory holds.
    fn item_counts(&self) -> Result<BTreeMap<String, usize>, StoreError> {
        let steps = self.dir.join(STEPS_DIR);
        let entries = match fs::read_dir(&steps) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(io_err("read", &steps)(e)),
        };
        let mut counts = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(io_err("read", &steps))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if name.starts_with('.') || !is_dir {
                continue;
            }
            counts.insert(name, item_files(&entry.path())?.len());
        }
        Ok(counts)
    }

    fn outputs(&self) -> Result<Option<Map<String, Value>>, StoreError> {
        read_json(&self.dir.join(OUTPUTS_FILE))
    }

    /// Best effort: removes the temporary files of interrupted atomic writes. Only
    /// called while holding the run's lock, so no writer is using them.
    fn remove_temp_files(&self) {
        let steps = self.dir.join(STEPS_DIR);
        let mut dirs = vec![self.dir.clone(), steps.clone()];
        if let Ok(entries) = fs::read_dir(&steps) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        for dir in dirs {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let is_file = entry.file_type().is_ok_and(|t| t.is_file());
                if is_file && entry.file_name().to_str().is_some_and(is_temporary) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// The regular files in `dir` whose names are UTF-8 and do not start with `.` (which
/// excludes temporary files), as (name, path); none when `dir` does not exist.
fn record_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("read", dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        files.push((name, entry.path()));
    }
    Ok(files)
}

/// The item files `<n>.json` in `dir` (canonical decimal `n`), as (n, path).
fn item_files(dir: &Path) -> Result<Vec<(usize, PathBuf)>, StoreError> {
    Ok(record_files(dir)?
        .into_iter()
        .filter_map(|(name, path)| {
            let index: usize = name.strip_suffix(".json")?.parse().ok()?;
            (format!("{index}.json") == name).then_some((index, path))
        })
        .collect())
}

/// Reads and parses a JSON file; `None` when it does not exist.
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
}

/// Writes `value` as pretty JSON to `path`, atomically.
fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Takes the exclusive lock of run `id` in `dir` and records this process's pid in the
/// lock file; [`StoreError::Busy`] when another holder keeps it through a few retries.
fn lock_run(dir: &Path, id: &RunId) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open", &path))?;
    for attempt in 1..=LOCK_ATTEMPTS {
        match file.try_lock() {
            Ok(()) => {
                // Only names the holder in `Busy` errors: stale content is harmless.
                let pid = format!("{}\n", std::process::id());
                file.set_len(0)
                    .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
                    .map_err(io_err("write", &path))?;
                return Ok(file);
            }
            Err(TryLockError::WouldBlock) if attempt < LOCK_ATTEMPTS => {
                std::thread::sleep(LOCK_RETRY)
            }
            Err(TryLockError::WouldBlock) => break,
            Err(TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
    }
    Err(StoreError::Busy {
        id: id.clone(),
        pid: read_pid(&path),
        lock: path,
    })
}

/// Whether a process holds the lock of the run in `dir`: `None` when not, else
/// `Some(pid)` (the pid when the lock file names it). Takes a shared lock for an
/// instant, retrying as [`lock_run`] does before it reports a holder; never creates
/// the lock file.
fn probe_lock(dir: &Path) -> Result<Option<Option<u32>>, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", &path)(e)),
    };
    for attempt in 1..=LOCK_ATTEMPTS {
        match file.try_lock_shared() {
            Ok(()) => return Ok(None), // released when `file` closes
            Err(TryLockError::WouldBlock) if attempt < LOCK_ATTEMPTS => {
                std::thread::sleep(LOCK_RETRY)
            }
            Err(TryLockError::WouldBlock) => break,
            Err(TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
    }
    Ok(Some(read_pid(&path)))
}

/// The pid written in a lock file, if it holds one.
fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads a trace file: every complete line, plus a last line without its newline when
/// it is a whole JSON value ([`whole_value`]); a torn last line is skipped, and so are
/// blank lines.
fn read_trace(path: &Path) -> Result<Vec<Value>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let mut events = Vec::new();
    for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let event = serde_json::from_slice(line).map_err(|e| StoreError::CorruptTrace {
            path: path.to_path_buf(),
            line: i + 1,
            detail: e.to_string(),
        })?;
        events.push(event);
    }
    if let Some(event) = whole_value(&bytes[complete..]) {
        events.push(event);
    }
    Ok(events)
}

/// A last line without its newline, when it is a whole JSON value rather than a torn
/// one. A number could be a torn longer number, so it counts as torn.
fn whole_value(line: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(line).ok()?;
    (!value.is_number()).then_some(value)
}

/// Before appending to a trace: when the file does not end with a newline (a crash
/// mid-write), either terminates the last line (when it is whole JSON) or cuts it off,
/// so the next event starts on a line of its own.
fn repair_torn_tail(file: &mut File, path: &Path) -> Result<(), StoreError> {
    const CHUNK: u64 = 64 << 10;
    let len = file.metadata().map_err(io_err("read", path))?.len();
    let mut end = len;
    let mut tail = Vec::new(); // the bytes after the last newline, in order
    let last_newline = loop {
        if end == 0 {
            break None;
        }
        let start = end.saturating_sub(CHUNK);
        let mut chunk = vec![0; (end - start) as usize];
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(&mut chunk))
            .map_err(io_err("read", path))?;
        if let Some(p) = chunk.iter().rposition(|&b| b == b'\n') {
            chunk.drain(..=p);
            chunk.append(&mut tail);
            tail = chunk;
            break Some(start + p as u64);
        }
        chunk.append(&mut tail);
        tail = chunk;
        end = start;
    };
    if tail.is_empty() {
        return Ok(());
    }
    if whole_value(&tail).is_some() {
        file.write_all(b"\n").map_err(io_err("append to", path))?;
    } else {
        let keep = last_newline.map_or(0, |p| p + 1);
        file.set_len(keep).map_err(io_err("truncate", path))?;
    }
    file.sync_data().map_err(io_err("sync", path))
}
