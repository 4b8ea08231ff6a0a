//! [`PythonSession`]: one persistent worker, restarted after timeouts and crashes.

use std::fmt;
use std::sync::Arc;

use super::error::{PythonError, SandboxFeature};
use super::interp::{self, Interpreter};
use super::layout::{self, SessionDir};
use super::output::RunOutput;
use super::spawn::{self, Plan};
use super::worker::{KillHandle, Limits, Worker};
use super::PythonSandbox;

/// The largest cell accepted, in bytes.
pub const MAX_CODE_BYTES: usize = 1 << 20;

/// Which protections a session's worker runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLayers {
    /// Running without the sandbox (`allow_unsandboxed` and a required feature was
    /// missing). Only the resource limits, no_new_privs, the process group and the
    /// seccomp filter (when available) apply.
    pub unsandboxed: bool,
    /// User, mount, PID, network, IPC, UTS and cgroup namespaces with the minimal
    /// read-only root.
    pub namespaces: bool,
    /// A private `/proc` for the PID namespace is mounted.
    pub proc: bool,
    /// The seccomp deny list is installed.
    pub seccomp: bool,
    /// The Landlock ABI version applied, if any.
    pub landlock_abi: Option<u32>,
    /// Resource limits and `PR_SET_NO_NEW_PRIVS` (always on).
    pub rlimits: bool,
    /// Degraded layers, one line each.
    pub warnings: Vec<String>,
}

impl fmt::Display for SandboxLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unsandboxed {
            f.write_str("UNSANDBOXED")?;
        } else {
            f.write_str("namespaces (user, mount, pid, net, ipc, uts, cgroup)")?;
            if self.proc {
                f.write_str(", private /proc")?;
            }
        }
        if self.seccomp {
            f.write_str(", seccomp")?;
        }
        if let Some(abi) = self.landlock_abi {
            write!(f, ", Landlock ABI {abi}")?;
        }
        f.write_str(", rlimits, no_new_privs")
    }
}

/// A notebook-like Python session: one worker process kept alive between calls, so
/// variables persist. Dropping the session kills the worker and everything it
/// started, and removes its directories.
pub struct PythonSession {
    config: Arc<PythonSandbox>,
    plan: Arc<Plan>,
    group: bool,
    worker: Option<Worker>,
    layers: SandboxLayers,
    restarts: u64,
    interpreter: Arc<Interpreter>,
    // Declared last: removed after the worker is dead (unsandboxed scratch only).
    _dir: Option<SessionDir>,
}

impl fmt::Debug for PythonSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PythonSession")
            .field("interpreter", &self.interpreter.exe)
            .field("layers", &self.layers)
            .field("worker_pid", &self.worker_pid())
            .field("restarts", &self.restarts)
            .finish()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PythonError> + Send + 'static,
) -> Result<T, PythonError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PythonError::Crashed {
            detail: format!("an engine task failed: {e}"),
        })?
}

/// Kills a worker whose call was abandoned.
struct CancelGuard(Option<KillHandle>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.kill();
        }
    }
}

/// What a launch found out about the layers.
struct LaunchInfo {
    warnings: Vec<String>,
    landlock: bool,
    proc: bool,
}

/// Starts a worker from `plan` (its runner becomes ready while the first call is
/// sent). Blocking.
fn launch(plan: &Arc<Plan>, group: bool) -> Result<(Worker, LaunchInfo), PythonError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let job_plan = plan.clone();
    spawn::submit(Box::new(move || {
        let _ = tx.send(spawn::spawn(&job_plan));
    }))?;
    let spawned = rx.recv().map_err(|_| PythonError::Crashed {
        detail: "the spawner thread dropped the request".to_owned(),
    })??;
    let info = LaunchInfo {
        warnings: spawned.warnings.clone(),
        landlock: spawned.landlock,
        proc: spawned.proc,
    };
    Ok((Worker::new(spawned, group), info))
}

/// Everything [`PythonSession::start`] does off the async runtime.
struct Started {
    interpreter: Arc<Interpreter>,
    dir: Option<SessionDir>,
    plan: Arc<Plan>,
    worker: Worker,
    info: LaunchInfo,
    landlock_abi: Option<u32>,
    unsandboxed: bool,
}

fn start_blocking(config: &PythonSandbox) -> Result<Started, PythonError> {
    let interpreter = interp::resolve(&config.python)?;
    let sandboxed = layout::check_features(config).and_then(|features| {
        let plan = Arc::new(layout::sandboxed_plan(config, &interpreter, &features)?);
        let (worker, info) = launch(&plan, false)?;
        Ok((plan, worker, info, features.landlock_abi))
    });
    let (plan, worker, info, landlock_abi, dir) = match sandboxed {
        Ok((plan, worker, info, abi)) => (plan, worker, info, abi, None),
        Err(e @ PythonError::SandboxUnavailable { .. }) if config.allow_unsandboxed => {
            tracing::warn!(error = %e, "running python WITHOUT the sandbox (allow_unsandboxed)");
            let dir = SessionDir::create().map_err(|source| PythonError::Spawn {
                stage: "creating the session directory",
                source,
            })?;
            let plan = Arc::new(layout::unsandboxed_plan(config, &interpreter, &dir.path)?);
            let (worker, info) = launch(&plan, true)?;
            (plan, worker, info, None, Some(dir))
        }
        Err(e) => return Err(e),
    };
    Ok(Started {
        interpreter,
        unsandboxed: dir.is_some(),
        dir,
        plan,
        worker,
        info,
        landlock_abi,
    })
}

impl PythonSession {
    /// Starts a session: resolves the interpreter, builds the sandbox and starts the
    /// worker (the interpreter finishes starting while the first call is sent).
    /// Fails closed with
    /// [`PythonError::SandboxUnavailable`] when a required layer is missing, unless
    /// `allow_unsandboxed` is set.
    pub async fn start(config: PythonSandbox) -> Result<PythonSession, PythonError> {
        let config = Arc::new(config);
        let c = config.clone();
        let Started {
            interpreter,
            dir,
            plan,
            worker,
            info,
            landlock_abi,
            unsandboxed,
        } = blocking(move || start_blocking(&c)).await?;
        for w in &info.warnings {
            tracing::warn!(warning = %w, "python sandbox layer degraded");
        }
        if landlock_abi.is_none() && !unsandboxed {
            tracing::warn!(
                "Landlock is unavailable; the mount namespace alone confines the file system"
            );
        }
        let layers = SandboxLayers {
            unsandboxed,
            namespaces: !unsandboxed,
            proc: !unsandboxed && info.proc,
            seccomp: plan.seccomp.is_some(),
            landlock_abi: if info.landlock { landlock_abi } else { None },
            rlimits: true,
            warnings: info.warnings,
        };
        Ok(PythonSession {
            config,
            plan,
            group: unsandboxed,
            worker: Some(worker),
            layers,
            restarts: 0,
            interpreter,
            _dir: dir,
        })
    }

    /// Runs `code` in the session's namespace. A trailing expression's `repr` comes
    /// back as [`RunOutput::value`]; an exception in the code is a normal output
    /// with a traceback. Errors mean the engine could not run it (time limits, a
    /// dead worker): then the next call starts a fresh worker.
    pub async fn run(&mut self, code: &str) -> Result<RunOutput, PythonError> {
        if code.len() > MAX_CODE_BYTES {
            return Err(PythonError::CodeTooLarge {
                len: code.len(),
                limit: MAX_CODE_BYTES,
            });
        }
        let mut worker = match self.worker.take() {
            Some(w) => w,
            None => {
                let (plan, group) = (self.plan.clone(), self.group);
                let w = blocking(move || launch(&plan, group).map(|(w, _)| w)).await?;
                self.restarts += 1;
                w
            }
        };
        let limits = Limits {
            wall: self.config.wall_time,
            cpu: self.config.cpu_time,
            output: self.config.max_output,
            startup: self.config.startup_timeout,
        };
        let code = code.to_owned();
        // If this future is dropped mid-call, kill the worker now rather than let it
        // run to the time limit.
        let mut cancel = CancelGuard(Some(worker.kill_handle()));
        let (worker, result) = tokio::task::spawn_blocking(move || {
            let r = worker.run(&code, &limits);
            (worker, r)
        })
        .await
        .map_err(|e| PythonError::Crashed {
            detail: format!("an engine task failed: {e}"),
        })?;
        cancel.0 = None;
        match &result {
            Err(e) if e.worker_lost() => drop(worker),
            _ => self.worker = Some(worker),
        }
        result
    }

    /// Throws the worker away (all variables); the next call starts a fresh one.
    pub fn reset(&mut self) {
        self.worker = None;
    }

    /// The protections this session's workers run under.
    pub fn layers(&self) -> &SandboxLayers {
        &self.layers
    }

    /// How many times the worker was replaced after a timeout or crash.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// The host process id of the live worker, if one is running.
    pub fn worker_pid(&self) -> Option<u32> {
        self.worker.as_ref().map(Worker::pid)
    }

    /// The interpreter the worker runs (resolved from the configured name).
    pub fn interpreter(&self) -> &std::path::Path {
        &self.interpreter.exe
    }

    /// The interpreter's version, `major.minor.micro`.
    pub fn python_version(&self) -> &str {
        &self.interpreter.version
    }

    /// The configuration this session was started with.
    pub fn config(&self) -> &PythonSandbox {
        &self.config
    }

    /// Whether `feature` was given up for this session (unsandboxed fallback or a
    /// degraded optional layer).
    pub fn lacks(&self, feature: SandboxFeature) -> bool {
        match feature {
            SandboxFeature::Landlock => self.layers.landlock_abi.is_none(),
            SandboxFeature::Seccomp => !self.layers.seccomp,
            _ => self.layers.unsandboxed,
        }
    }
}
