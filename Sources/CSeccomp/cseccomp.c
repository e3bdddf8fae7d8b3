#define _GNU_SOURCE
#include <fcntl.h>
#include "cseccomp.h"
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <ucontext.h>
#include <unistd.h>
#include <sched.h>

const unsigned long cseccomp_KVM_RUN = KVM_RUN, cseccomp_KVM_GET_REGS = KVM_GET_REGS,
    cseccomp_KVM_SET_REGS = KVM_SET_REGS, cseccomp_KVM_GET_SREGS = KVM_GET_SREGS,
    cseccomp_KVM_SET_SREGS = KVM_SET_SREGS, cseccomp_KVM_IRQ_LINE = KVM_IRQ_LINE,
    cseccomp_KVM_GET_MSRS = KVM_GET_MSRS, cseccomp_KVM_SET_MSRS = KVM_SET_MSRS,
    cseccomp_KVM_GET_MP_STATE = KVM_GET_MP_STATE, cseccomp_KVM_SET_MP_STATE = KVM_SET_MP_STATE,
    cseccomp_KVM_KVMCLOCK_CTRL = KVM_KVMCLOCK_CTRL, cseccomp_KVM_GET_LAPIC = KVM_GET_LAPIC,
    cseccomp_KVM_SET_LAPIC = KVM_SET_LAPIC, cseccomp_KVM_GET_IRQCHIP = KVM_GET_IRQCHIP,
    cseccomp_KVM_SET_IRQCHIP = KVM_SET_IRQCHIP, cseccomp_KVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS,
    cseccomp_KVM_SET_VCPU_EVENTS = KVM_SET_VCPU_EVENTS, cseccomp_KVM_GET_FPU = KVM_GET_FPU,
    cseccomp_KVM_SET_FPU = KVM_SET_FPU, cseccomp_KVM_GET_XSAVE = KVM_GET_XSAVE,
    cseccomp_KVM_SET_XSAVE = KVM_SET_XSAVE, cseccomp_KVM_GET_XCRS = KVM_GET_XCRS, cseccomp_KVM_SET_XCRS = KVM_SET_XCRS,
    cseccomp_KVM_GET_CLOCK = KVM_GET_CLOCK, cseccomp_KVM_IOEVENTFD = KVM_IOEVENTFD,
    cseccomp_KVM_SET_CLOCK = KVM_SET_CLOCK, cseccomp_KVM_SET_SIGNAL_MASK = KVM_SET_SIGNAL_MASK,
    cseccomp_TCGETS = TCGETS, cseccomp_TCSETS = TCSETS, cseccomp_TCSETSW = TCSETSW,
    cseccomp_TCSETSF = TCSETSF, cseccomp_TIOCGWINSZ = TIOCGWINSZ, cseccomp_FIONREAD = FIONREAD,
    cseccomp_FIONBIO = FIONBIO, cseccomp_TUNSETOFFLOAD = TUNSETOFFLOAD, cseccomp_TUNSETVNETHDRSZ = TUNSETVNETHDRSZ;
const uint64_t cseccomp_PROT_EXEC = PROT_EXEC, cseccomp_CLONE_THREAD = CLONE_THREAD, cseccomp_O_CREAT_EXCL = O_CREAT | O_EXCL;


// The calls on the hot paths (every exit, every request) are checked first, and the rest
// is a binary tree rather than a list: every system call of every thread runs through
// the process filter and its role's filter.
static int tune(scmp_filter_ctx ctx) {
    static const char *hot[] = {"ioctl", "read", "write", "io_uring_enter", "futex", "epoll_wait", "epoll_pwait",
                                "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2", "poll", "ppoll"};
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    for (unsigned i = 0; rc == 0 && i < sizeof hot / sizeof hot[0]; i++)
        rc = seccomp_syscall_priority(ctx, seccomp_syscall_resolve_name(hot[i]), (uint8_t)(255 - i));
    return rc;
}

int cseccomp_syscall_number(const char *name) {
    int nr = seccomp_syscall_resolve_name(name);
    return nr == __NR_SCMP_ERROR ? -1 : nr;
}

/// A filter context holding the rows (and clone3 -> ENOSYS), or NULL with *rc set.
static scmp_filter_ctx build(int on_violation, const cseccomp_rule *rules, int count, int *bad_row, int *rc) {
    scmp_filter_ctx ctx = seccomp_init(on_violation == CSECCOMP_LOG ? SCMP_ACT_LOG : SCMP_ACT_TRAP);
    if (!ctx) { *rc = -ENOMEM; return 0; }
    *rc = tune(ctx);
    // ENOSYS, not the violation action: glibc's pthread_create then uses clone(2).
    if (*rc == 0) *rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    for (int i = 0; *rc == 0 && i < count; i++) {
        int nr = seccomp_syscall_resolve_name(rules[i].name);
        if (nr == __NR_SCMP_ERROR) *rc = -EINVAL;
        else if (rules[i].compare == CSECCOMP_ARG_MASKED_EQ)
            *rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                                   SCMP_CMP(rules[i].arg_index, SCMP_CMP_MASKED_EQ, rules[i].mask, rules[i].value));
        else
            *rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        if (*rc != 0 && bad_row) *bad_row = i;
    }
    if (*rc != 0) { seccomp_release(ctx); return 0; }
    return ctx;
}

#define CSECCOMP_SLOTS 8
static struct sock_fprog compiled[CSECCOMP_SLOTS];

int cseccomp_compile(int slot, int on_violation, const cseccomp_rule *rules, int count, int *bad_row) {
    if (slot < 0 || slot >= CSECCOMP_SLOTS) return -EINVAL;
    int rc;
    scmp_filter_ctx ctx = build(on_violation, rules, count, bad_row, &rc);
    if (!ctx) return rc;
    int fd = memfd_create("pvmm-seccomp", MFD_CLOEXEC);
    if (fd < 0) rc = -errno;
    if (rc == 0) rc = seccomp_export_bpf(ctx, fd);
    seccomp_release(ctx);
    if (rc == 0) {
        off_t size = lseek(fd, 0, SEEK_END);
        struct sock_filter *prog = size > 0 ? malloc((size_t)size) : 0;
        if (!prog || pread(fd, prog, (size_t)size, 0) != size) {
            free(prog);
            rc = -EIO;
        } else {
            free(compiled[slot].filter);
            compiled[slot].filter = prog;
            compiled[slot].len = (unsigned short)(size / sizeof(struct sock_filter));
        }
    }
    if (fd >= 0) close(fd);
    return rc;
}

int cseccomp_apply(int slot) {
    if (slot < 0 || slot >= CSECCOMP_SLOTS || !compiled[slot].filter) return -EINVAL;
    // no_new_privs is inherited from the main thread, which set it with the process filter.
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &compiled[slot]) == 0 ? 0 : -errno;
}

// Names resolved before any filter, so the handler only indexes an array.
int cseccomp_apply_process(int slot) {
    if (slot < 0 || slot >= CSECCOMP_SLOTS || !compiled[slot].filter) return -EINVAL;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -errno;
    long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &compiled[slot]);
    if (r < 0) return -errno;
    return r == 0 ? 0 : -EAGAIN;  /* r > 0: a thread that could not take the filter */
}

#define CSECCOMP_MAX_NR 512
static const char *names[CSECCOMP_MAX_NR];
static __thread char thread_label[16] = "main";

void cseccomp_set_thread_label(const char *label) {
    strncpy(thread_label, label, sizeof thread_label - 1);
    thread_label[sizeof thread_label - 1] = 0;
}

static size_t put(char *buf, size_t at, size_t cap, const char *s) {
    while (*s && at < cap) buf[at++] = *s++;
    return at;
}

void cseccomp_die_of(int sig) {
    // Async-signal-safe calls only: the SIGSYS handler ends with this.
    struct sigaction dfl = {0};
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    pthread_sigmask(SIG_UNBLOCK, &set, 0);
    syscall(SYS_tgkill, getpid(), gettid(), sig);
}

static void report(int sig, siginfo_t *info, void *uctx) {
    char line[160];
    char digits[12];
    int nr = info->si_syscall, n = nr < 0 ? 0 : nr, d = 0;
    do { digits[d++] = (char)('0' + n % 10); n /= 10; } while (n && d < 11);
    char number[12];
    for (int i = 0; i < d; i++) number[i] = digits[d - 1 - i];
    number[d] = 0;
    const char *name = nr >= 0 && nr < CSECCOMP_MAX_NR && names[nr] ? names[nr] : "unknown";
    size_t at = 0, cap = sizeof line - 1;
    at = put(line, at, cap, "pvmm: seccomp: thread ");
    at = put(line, at, cap, thread_label);
    at = put(line, at, cap, " made forbidden system call ");
    at = put(line, at, cap, name);
    at = put(line, at, cap, " (");
    at = put(line, at, cap, number);
    at = put(line, at, cap, ")");
    if (nr == SYS_ioctl) {
        // Which request: the table allows ioctl by request number.
        unsigned long request = (unsigned long)((ucontext_t *)uctx)->uc_mcontext.gregs[REG_RSI];
        char hex[19] = "0x";
        int h = 2;
        for (int shift = 28; shift >= 0; shift -= 4) hex[h++] = "0123456789abcdef"[(request >> shift) & 15];
        hex[h] = 0;
        at = put(line, at, cap, " request ");
        at = put(line, at, cap, hex);
    }
    at = put(line, at, cap, "; the VMM stops\n");
    ssize_t ignored = write(2, line, at);
    (void)ignored;
    // Die of the signal itself, so the parent sees SIGSYS: default action, unblocked.
    cseccomp_die_of(sig);
    // Still here: the VMM is the first process of a pid namespace (--jail), which ignores
    // a signal it sends itself with the default action. The kernel's own SIGSYS for a
    // forbidden call is forced, and with the default action it kills even that process.
    syscall(SYS_ptrace, 0, 0, 0, 0);
    _exit(128 + sig);
}

int cseccomp_install_reporter(void) {
    for (int nr = 0; nr < CSECCOMP_MAX_NR; nr++) {
        if (!names[nr]) names[nr] = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
    }
    struct sigaction sa = {0};
    sa.sa_sigaction = report;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGSYS, &sa, 0) == 0 ? 0 : -errno;
}

long cseccomp_attempt(const char *name) {
    if (strcmp(name, "execve") == 0) {
        char *argv[] = {"/bin/true", 0};
        return execve("/bin/true", argv, 0);
    }
    if (strcmp(name, "socket") == 0) return syscall(SYS_socket, 1 /* AF_UNIX */, 1 /* SOCK_STREAM */, 0);
    if (strcmp(name, "openat") == 0) return syscall(SYS_openat, -100 /* AT_FDCWD */, "/etc/passwd", 0);
    if (strcmp(name, "creat") == 0) {
        // What the snapshot writer may do (a new file, O_CREAT|O_EXCL), on another thread.
        char path[64];
        snprintf(path, sizeof path, "/tmp/pvmm-seccomp-creat-%d", (int)getpid());
        return syscall(SYS_openat, -100 /* AT_FDCWD */, path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    if (strcmp(name, "ptrace") == 0) return syscall(SYS_ptrace, 0, 0, 0, 0);
    return -EINVAL;
}
