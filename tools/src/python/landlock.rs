//! Landlock, through its three system calls (no allocation: the rules are applied in
//! the forked child between `clone` and `execve`).

use std::ffi::CString;

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;

/// File-system access rights (`LANDLOCK_ACCESS_FS_*`) used by name; ABI 1 handles
/// bits 0 to 12.
pub(crate) mod fs {
    pub const EXECUTE: u64 = 1 << 0;
    pub const WRITE_FILE: u64 = 1 << 1;
    pub const READ_FILE: u64 = 1 << 2;
    pub const READ_DIR: u64 = 1 << 3;
    pub const MAKE_CHAR: u64 = 1 << 6;
    pub const MAKE_BLOCK: u64 = 1 << 11;
    pub const REFER: u64 = 1 << 13;
    pub const TRUNCATE: u64 = 1 << 14;
    pub const IOCTL_DEV: u64 = 1 << 15;
}

const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI version of the running kernel, `None` when Landlock is not
/// built in or not enabled.
pub(crate) fn abi() -> Option<u32> {
    // SAFETY: the version query takes no attribute pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    (r > 0).then_some(r as u32)
}

/// What the worker may touch, prepared on the host.
pub(crate) struct Plan {
    abi: u32,
    handled_fs: u64,
    handled_net: u64,
    scoped: u64,
    rules: Vec<(CString, u64)>,
}

/// How a path is exposed.
#[derive(Clone, Copy)]
pub(crate) enum Access {
    /// Read and execute (system directories).
    ReadExec,
    /// Everything but device creation (scratch and /tmp).
    ReadWrite,
    /// Read and write an existing file (device nodes like /dev/null).
    Device,
}

impl Plan {
    /// Plans rules for `paths` (paths as seen inside the sandbox) on ABI `abi`.
    pub(crate) fn new(abi: u32, paths: &[(&str, Access)]) -> Option<Plan> {
        let mut handled_fs = (1u64 << 13) - 1; // ABI 1: EXECUTE..MAKE_SYM
        if abi >= 2 {
            handled_fs |= fs::REFER;
        }
        if abi >= 3 {
            handled_fs |= fs::TRUNCATE;
        }
        if abi >= 5 {
            handled_fs |= fs::IOCTL_DEV;
        }
        let handled_net = if abi >= 4 {
            NET_BIND_TCP | NET_CONNECT_TCP
        } else {
            0
        };
        let scoped = if abi >= 6 {
            SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        } else {
            0
        };
        let mut rules = Vec::new();
        for (path, access) in paths {
            let allowed = match access {
                Access::ReadExec => fs::EXECUTE | fs::READ_FILE | fs::READ_DIR,
                Access::ReadWrite => handled_fs & !(fs::MAKE_CHAR | fs::MAKE_BLOCK),
                Access::Device => fs::READ_FILE | fs::WRITE_FILE | fs::TRUNCATE | fs::IOCTL_DEV,
            } & handled_fs;
            rules.push((CString::new(*path).ok()?, allowed));
        }
        Some(Plan {
            abi,
            handled_fs,
            handled_net,
            scoped,
            rules,
        })
    }

    /// Restricts the calling thread (and its future children). Must run after
    /// `PR_SET_NO_NEW_PRIVS`. Returns the errno of the failing step.
    ///
    /// # Safety
    /// Async-signal-safe: only system calls, no allocation. Meant for the forked
    /// child.
    pub(crate) unsafe fn apply(&self) -> Result<(), i32> {
        let attr = RulesetAttr {
            handled_access_fs: self.handled_fs,
            handled_access_net: self.handled_net,
            scoped: self.scoped,
        };
        let size = match self.abi {
            1..=3 => 8usize,
            4 | 5 => 16,
            _ => 24,
        };
        let ruleset = libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            size,
            0u32,
        );
        if ruleset < 0 {
            return Err(errno());
        }
        let ruleset = ruleset as libc::c_int;
        for (path, allowed) in &self.rules {
            let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            if fd < 0 {
                // A path that does not exist needs no rule.
                continue;
            }
            let rule = PathBeneathAttr {
                allowed_access: *allowed,
                parent_fd: fd,
            };
            let r = libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset,
                RULE_PATH_BENEATH,
                &rule as *const PathBeneathAttr,
                0u32,
            );
            let e = errno();
            libc::close(fd);
            if r < 0 {
                libc::close(ruleset);
                return Err(e);
            }
        }
        let r = libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32);
        let e = errno();
        libc::close(ruleset);
        if r < 0 {
            return Err(e);
        }
        Ok(())
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
