// seccomp filters through libseccomp (Debian's libseccomp-dev), for Sources/Sandbox.
// The policy (which system calls, why) lives in Sandbox/SyscallTable.swift; this shim
// only turns its rows into a loaded BPF filter and reports a violation. Each call returns
// 0 or -errno, as CKVM's wrappers do.
#ifndef CSECCOMP_H
#define CSECCOMP_H
#include <stdint.h>

/// How a rule compares one argument: none, equal under a mask (arg & mask == value).
enum { CSECCOMP_ARG_NONE = 0, CSECCOMP_ARG_MASKED_EQ = 1 };

/// One allowlist row: `name` is allowed when (arg_index's argument & mask) == value, or
/// always with CSECCOMP_ARG_NONE. Several rows for one name are OR-ed.
typedef struct {
    const char *name;
    int compare;
    unsigned arg_index;
    uint64_t mask;
    uint64_t value;
} cseccomp_rule;

/// What a call outside the allowlist gets.
enum {
    /// SIGSYS to the thread (SECCOMP_RET_TRAP): the handler names the call and the thread,
    /// then the process dies of SIGSYS.
    CSECCOMP_TRAP = 0,
    /// Allowed but logged by the kernel (SECCOMP_RET_LOG): for developing new code paths.
    CSECCOMP_LOG = 1,
};

/// Compiles a filter into `slot` (0-7) without loading it: the role filters and the
/// process filter are built once (Seccomp.compileAll), then applied with
/// `cseccomp_apply` (a thread's role) or `cseccomp_apply_process` (all threads).
/// `clone3` gets ENOSYS so libc falls back to clone(2), whose flags a filter can check.
/// Returns -EINVAL naming nothing when a row's name is unknown: `bad_row` gets its index.
int cseccomp_compile(int slot, int on_violation, const cseccomp_rule *rules, int count, int *bad_row);

/// Loads the filter compiled into `slot` on the calling thread (one seccomp(2) call).
int cseccomp_apply(int slot);

/// Loads the filter compiled into `slot` on every thread (SECCOMP_FILTER_FLAG_TSYNC),
/// setting no_new_privs first, as an unprivileged filter needs. -EAGAIN when a thread
/// could not take it.
int cseccomp_apply_process(int slot);

/// Installs the SIGSYS handler that writes "pvmm: seccomp: thread T made forbidden
/// system call NAME (NR)" to stderr and re-raises SIGSYS with the default action. Also
/// resolves every system call name up front (the handler may not allocate).
int cseccomp_install_reporter(void);

/// The name the reporter gives the calling thread (its first 15 bytes are kept).
void cseccomp_set_thread_label(const char *label);

/// The number of a system call on this architecture, or -1.
int cseccomp_syscall_number(const char *name);

// ioctl request numbers the table allows (macros Swift cannot import).
extern const unsigned long cseccomp_KVM_RUN, cseccomp_KVM_GET_REGS, cseccomp_KVM_SET_REGS,
    cseccomp_KVM_GET_SREGS, cseccomp_KVM_SET_SREGS, cseccomp_KVM_IRQ_LINE, cseccomp_KVM_GET_MSRS,
    cseccomp_KVM_SET_MSRS, cseccomp_KVM_GET_MP_STATE, cseccomp_KVM_SET_MP_STATE, cseccomp_KVM_KVMCLOCK_CTRL,
    cseccomp_KVM_GET_LAPIC, cseccomp_KVM_SET_LAPIC, cseccomp_KVM_GET_IRQCHIP, cseccomp_KVM_SET_IRQCHIP,
    cseccomp_KVM_GET_VCPU_EVENTS, cseccomp_KVM_SET_VCPU_EVENTS, cseccomp_KVM_GET_FPU, cseccomp_KVM_SET_FPU,
    cseccomp_KVM_GET_XSAVE, cseccomp_KVM_SET_XSAVE, cseccomp_KVM_GET_XCRS, cseccomp_KVM_SET_XCRS,
    cseccomp_KVM_GET_CLOCK, cseccomp_KVM_SET_CLOCK, cseccomp_KVM_IOEVENTFD,
    cseccomp_KVM_SET_SIGNAL_MASK, cseccomp_TCGETS, cseccomp_TCSETS, cseccomp_TCSETSW, cseccomp_TCSETSF,
    cseccomp_TIOCGWINSZ, cseccomp_FIONREAD, cseccomp_FIONBIO, cseccomp_TUNSETOFFLOAD, cseccomp_TUNSETVNETHDRSZ;
extern const uint64_t cseccomp_PROT_EXEC, cseccomp_CLONE_THREAD, cseccomp_O_CREAT_EXCL;

/// Test builds only (Tests call it through pvmm-vmm's debug trigger): makes the system
/// call `name` with harmless arguments, so a filter must stop it.
long cseccomp_attempt(const char *name);

/// Dies of `sig` on the calling thread: its default action, unblocked, raised
/// (async-signal-safe). Returns if the process ignores it (a pid namespace's first
/// process does, for a signal it sends itself).
void cseccomp_die_of(int sig);
#endif
