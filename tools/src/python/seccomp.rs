//! The seccomp deny list, as a classic BPF program built on the host and installed
//! in the worker just before `execve`.
//!
//! A deny list (rather than an allow list) keeps arbitrary Python and C extensions
//! working; the namespaces and Landlock do the confining, this removes kernel attack
//! surface and the calls that could undo the other layers. It is written by hand
//! because a deny list must also refuse the x32 system-call numbers (same audit
//! architecture, `nr | 0x4000_0000`), which would otherwise bypass every number
//! comparison.

use libc::{c_long, sock_filter};

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;

fn ret_errno(errno: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
}

// Offsets into `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LO: u32 = 16;
const OFF_ARG1_LO: u32 = 24;

const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// System calls refused with `EPERM`: debugging other processes, (un)mounting and
/// namespace games, kernel keyrings, eBPF, perf, userfaultfd, io_uring (its
/// operations escape seccomp), module and kexec loading, and host-wide settings.
const DENIED: &[c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount_setattr,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_syslog,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_vhangup,
    libc::SYS_fanotify_init,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_modify_ldt,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
];

struct Builder {
    prog: Vec<sock_filter>,
}

impl Builder {
    fn stmt(&mut self, code: u16, k: u32) {
        self.prog.push(sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        });
    }

    fn jump(&mut self, code: u16, k: u32, jt: u8, jf: u8) {
        self.prog.push(sock_filter { code, jt, jf, k });
    }

    /// `if nr == nr { <body> }`, where `body` (at most 255 instructions) always
    /// returns.
    fn on_syscall(&mut self, nr: c_long, body: &[sock_filter]) {
        self.jump(BPF_JEQ_K, nr as u32, 0, body.len() as u8);
        self.prog.extend_from_slice(body);
        if body.iter().any(|i| i.code == BPF_LD_W_ABS) {
            // The body clobbered the accumulator: reload the number.
            self.stmt(BPF_LD_W_ABS, OFF_NR);
        }
    }
}

fn ins(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Builds the filter program. Returns `None` on architectures it does not cover.
pub(crate) fn filter() -> Option<Vec<sock_filter>> {
    let arch = if cfg!(target_arch = "x86_64") {
        AUDIT_ARCH_X86_64
    } else if cfg!(target_arch = "aarch64") {
        AUDIT_ARCH_AARCH64
    } else {
        return None;
    };
    let mut b = Builder { prog: Vec::new() };
    // Foreign architecture (e.g. int 0x80 on x86_64): kill.
    b.stmt(BPF_LD_W_ABS, OFF_ARCH);
    b.jump(BPF_JEQ_K, arch, 1, 0);
    b.stmt(BPF_RET_K, RET_KILL_PROCESS);
    b.stmt(BPF_LD_W_ABS, OFF_NR);
    if cfg!(target_arch = "x86_64") {
        b.jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1);
        b.stmt(BPF_RET_K, ret_errno(libc::ENOSYS));
    }
    // Fast path for the most frequent calls (read, write, open, close, stat
    // family, poll, lseek, mmap, mprotect, munmap, brk, signals: 0..=15 on x86_64;
    // openat, newfstatat, futex, getdents64, pread64, fcntl).
    if cfg!(target_arch = "x86_64") {
        b.jump(BPF_JGE_K, 16, 1, 0);
        b.stmt(BPF_RET_K, RET_ALLOW);
    }
    for nr in [
        libc::SYS_openat,
        libc::SYS_newfstatat,
        libc::SYS_futex,
        libc::SYS_getdents64,
        libc::SYS_pread64,
        libc::SYS_fcntl,
    ] {
        b.jump(BPF_JEQ_K, nr as u32, 0, 1);
        b.stmt(BPF_RET_K, RET_ALLOW);
    }
    let eperm = ins(BPF_RET_K, ret_errno(libc::EPERM), 0, 0);
    for &nr in DENIED {
        b.on_syscall(nr, &[eperm]);
    }
    // clone3 passes its flags in memory, out of the filter's sight: ENOSYS makes libc
    // fall back to clone, whose flags are checked below.
    b.on_syscall(
        libc::SYS_clone3,
        &[ins(BPF_RET_K, ret_errno(libc::ENOSYS), 0, 0)],
    );
    // clone: no new namespaces (threads and plain forks are fine).
    b.on_syscall(
        libc::SYS_clone,
        &[
            ins(BPF_LD_W_ABS, OFF_ARG0_LO, 0, 0),
            ins(BPF_JSET_K, NAMESPACE_FLAGS, 0, 1),
            eperm,
            ins(BPF_RET_K, RET_ALLOW, 0, 0),
        ],
    );
    // socket / socketpair: AF_UNIX only (no network at all, no netlink, no packet).
    for nr in [libc::SYS_socket, libc::SYS_socketpair] {
        b.on_syscall(
            nr,
            &[
                ins(BPF_LD_W_ABS, OFF_ARG0_LO, 0, 0),
                ins(BPF_JEQ_K, libc::AF_UNIX as u32, 0, 1),
                ins(BPF_RET_K, RET_ALLOW, 0, 0),
                ins(BPF_RET_K, ret_errno(libc::EAFNOSUPPORT), 0, 0),
            ],
        );
    }
    // ioctl: no faking terminal input.
    b.on_syscall(
        libc::SYS_ioctl,
        &[
            ins(BPF_LD_W_ABS, OFF_ARG1_LO, 0, 0),
            ins(BPF_JEQ_K, libc::TIOCSTI as u32, 1, 0),
            ins(BPF_JEQ_K, libc::TIOCLINUX as u32, 0, 1),
            eperm,
            ins(BPF_RET_K, RET_ALLOW, 0, 0),
        ],
    );
    // personality: queries and the default only (no ASLR switch-off).
    b.on_syscall(
        libc::SYS_personality,
        &[
            ins(BPF_LD_W_ABS, OFF_ARG0_LO, 0, 0),
            ins(BPF_JEQ_K, 0xFFFF_FFFF, 2, 0),
            ins(BPF_JEQ_K, 0, 1, 0),
            eperm,
            ins(BPF_RET_K, RET_ALLOW, 0, 0),
        ],
    );
    b.stmt(BPF_RET_K, RET_ALLOW);
    Some(b.prog)
}

/// Whether the kernel supports seccomp filters (`PR_GET_SECCOMP` answers).
pub(crate) fn available() -> bool {
    // SAFETY: PR_GET_SECCOMP reads the calling thread's mode; no memory is passed.
    let r = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    r >= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_stay_inside_the_program() {
        let prog = filter().expect("supported arch");
        assert!(prog.len() < 4096);
        for (i, f) in prog.iter().enumerate() {
            if f.code & 0x07 == libc::BPF_JMP as u16 {
                assert!(i + 1 + (f.jt as usize) < prog.len());
                assert!(i + 1 + (f.jf as usize) < prog.len());
            }
        }
        assert_eq!(prog.last().map(|f| f.k), Some(RET_ALLOW));
    }
}
