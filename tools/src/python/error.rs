//! Errors of the Python engine.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A kernel facility the sandbox is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SandboxFeature {
    /// User namespaces (`CLONE_NEWUSER`): the worker's ids and capabilities.
    UserNamespace,
    /// Mount namespaces plus the bind mounts and `pivot_root` of the minimal root.
    MountNamespace,
    /// PID namespaces: the worker is PID 1 and its death kills every descendant.
    PidNamespace,
    /// Network namespaces: no interfaces but a down loopback.
    NetworkNamespace,
    /// seccomp filters (system-call deny list).
    Seccomp,
    /// Landlock (file-system and TCP access rules). Optional: the mount namespace is
    /// the main file-system barrier.
    Landlock,
}

impl SandboxFeature {
    /// Every feature, required ones first.
    pub const ALL: [SandboxFeature; 6] = [
        SandboxFeature::UserNamespace,
        SandboxFeature::MountNamespace,
        SandboxFeature::PidNamespace,
        SandboxFeature::NetworkNamespace,
        SandboxFeature::Seccomp,
        SandboxFeature::Landlock,
    ];

    /// Whether the sandbox refuses to start without this feature (unless
    /// `allow_unsandboxed` is set). Only Landlock is optional.
    pub fn required(self) -> bool {
        !matches!(self, SandboxFeature::Landlock)
    }
}

impl fmt::Display for SandboxFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SandboxFeature::UserNamespace => "user namespaces",
            SandboxFeature::MountNamespace => "mount namespaces",
            SandboxFeature::PidNamespace => "PID namespaces",
            SandboxFeature::NetworkNamespace => "network namespaces",
            SandboxFeature::Seccomp => "seccomp",
            SandboxFeature::Landlock => "Landlock",
        })
    }
}

/// Which limit a call ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Wall-clock time per call.
    WallTime,
    /// CPU time per call.
    CpuTime,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::WallTime => "wall-time",
            LimitKind::CpuTime => "CPU-time",
        })
    }
}

/// Why the engine could not run a piece of code.
///
/// A Python exception raised by the code is *not* an error: it comes back as a
/// normal [`RunOutput`](super::RunOutput) with the traceback, so the model can fix
/// its code. Every message is one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PythonError {
    /// The code ran past a time limit. The worker was killed; the next call gets a
    /// fresh one (variables and files are gone).
    #[error(
        "the code exceeded the {kind} limit of {}; the Python worker was killed and \
         restarts on the next call, so all variables and files were lost",
        secs(*limit)
    )]
    Timeout {
        /// The limit hit.
        kind: LimitKind,
        /// Its value.
        limit: Duration,
    },
    /// The worker died (a segfault, `os._exit`, the kernel killing it...). The next
    /// call gets a fresh one.
    #[error(
        "the Python worker died ({detail}); it restarts on the next call, so all \
         variables and files were lost"
    )]
    Crashed {
        /// What is known about the death, one line.
        detail: String,
    },
    /// A required sandbox layer is not available and `allow_unsandboxed` is off.
    #[error(
        "the Python sandbox needs {feature}, which is unavailable ({reason}); refusing to \
         run unsandboxed (allow_unsandboxed is off)"
    )]
    SandboxUnavailable {
        /// The missing feature.
        feature: SandboxFeature,
        /// What failed, one line.
        reason: String,
    },
    /// The configured interpreter cannot be found or run.
    #[error("the Python interpreter {path:?} is not usable: {reason}")]
    Interpreter {
        /// The configured path or name.
        path: PathBuf,
        /// What failed, one line.
        reason: String,
    },
    /// Starting the worker failed for a reason other than a missing feature.
    #[error("could not start the Python worker while {stage}: {source}")]
    Spawn {
        /// The step that failed.
        stage: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The code is larger than the engine accepts.
    #[error("the code is {len} bytes, more than the limit of {limit} bytes")]
    CodeTooLarge {
        /// Size of the code.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The worker answered something that is not the protocol (the code may have
    /// written to the protocol channel). The worker was killed; the next call gets a
    /// fresh one.
    #[error(
        "the Python worker broke its protocol ({0}); it restarts on the next call, so \
         all variables and files were lost"
    )]
    Protocol(String),
}

impl PythonError {
    /// Whether calling [`run`](super::PythonSession::run) again can succeed: the
    /// session recovers by itself from timeouts, crashes and protocol errors (with a
    /// fresh worker), not from a missing sandbox, a bad interpreter or oversized code.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            PythonError::Timeout { .. } | PythonError::Crashed { .. } | PythonError::Protocol(_)
        )
    }

    /// Whether the worker was lost (its variables and files are gone).
    pub fn worker_lost(&self) -> bool {
        self.retryable()
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.2} s")
    }
}

/// Reduces `text` to one line of at most `max` characters.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, part) in text.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(part);
    }
    if out.chars().count() > max {
        let cut: String = out.chars().take(max).collect();
        format!("{cut}…")
    } else {
        out
    }
}
