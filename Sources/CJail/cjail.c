#define _GNU_SOURCE
#include "cjail.h"
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int ret(int r) { return r < 0 ? -errno : 0; }

int cjail_unshare(void) {
    // A net namespace too: the VMM needs no network of its own (taps and passt are
    // opened or started before, and their fds keep working from any namespace).
    if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET) < 0) return -errno;
    if (sethostname("pvmm", 4) < 0) return -errno;
    return ret(mount(0, "/", 0, MS_REC | MS_PRIVATE, 0));
}

int cjail_mount_root(const char *root) {
    return ret(mount("pvmm-jail", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755"));
}

int cjail_clone_tree(const char *source) {
    int fd = open_tree(AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int cjail_attach_tree(int tree, const char *target, int is_dir, int readonly, int device) {
    if (is_dir) {
        if (mkdir(target, 0755) < 0 && errno != EEXIST) return -errno;
    } else {
        int fd = open(target, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0) return -errno;
        close(fd);
    }
    struct mount_attr attr = {0};
    attr.attr_set = MOUNT_ATTR_NOSUID | (device ? 0 : MOUNT_ATTR_NODEV) | (readonly ? MOUNT_ATTR_RDONLY : 0);
    if (mount_setattr(tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) return -errno;
    return ret(move_mount(tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH));
}

int cjail_pivot(const char *root) {
    if (chdir(root) < 0) return -errno;
    if (mkdir(".old-root", 0700) < 0 && errno != EEXIST) return -errno;
    if (syscall(SYS_pivot_root, ".", ".old-root") < 0) return -errno;
    if (chdir("/") < 0) return -errno;
    if (umount2("/.old-root", MNT_DETACH) < 0) return -errno;
    if (rmdir("/.old-root") < 0) return -errno;
    // Nothing more is created: the root becomes read-only.
    return ret(mount(0, "/", 0, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=64k,mode=0755"));
}

static int ascending(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

int cjail_close_except(const int *keep, int count) {
    int sorted[64];
    if (count < 0 || count > 64) return -EINVAL;
    memcpy(sorted, keep, sizeof(int) * (size_t)count);
    qsort(sorted, (size_t)count, sizeof(int), ascending);
    unsigned first = 3;
    for (int i = 0; i < count; i++) {
        if (sorted[i] < (int)first) continue;
        if ((unsigned)sorted[i] > first && syscall(SYS_close_range, first, (unsigned)sorted[i] - 1, 0) < 0) return -errno;
        first = (unsigned)sorted[i] + 1;
    }
    return ret((int)syscall(SYS_close_range, first, ~0U, 0));
}

/// The child's end of the go pipe: hung up once the supervisor is gone.
static int supervisor_fd = -1;

int cjail_fork(int *go) {
    // The pid namespace applies to children only: the VMM is the first process in it
    // (its pid 1), and the caller stays outside to supervise it.
    if (unshare(CLONE_NEWPID) < 0) return -errno;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return -errno;
    pid_t pid = fork();
    if (pid < 0) { int e = errno; close(p[0]); close(p[1]); return -e; }
    if (pid == 0) {
        close(p[1]);
        // Dies with its supervisor (a SIGKILL to it included). Before the go byte: if the
        // supervisor is already gone, the read sees end-of-file.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char byte = 0;
        ssize_t n;
        do { n = read(p[0], &byte, 1); } while (n < 0 && errno == EINTR);
        if (n != 1) _exit(1);
        // Kept: the supervisor holds the other end for its life (cjail_rearm_death_signal).
        supervisor_fd = p[0];
        return 0;
    }
    close(p[0]);
    *go = p[1];
    return pid;
}

int cjail_go(int go) {
    char byte = 1;
    return write(go, &byte, 1) == 1 ? 0 : -errno;
}

int cjail_rearm_death_signal(void) {
    // A change of credentials clears the parent-death signal: set it again, then make
    // sure the supervisor did not die in between (its end of the pipe would be closed).
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) return -errno;
    if (supervisor_fd < 0) return 0;
    struct pollfd p = {supervisor_fd, POLLIN, 0};
    int gone = poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR));
    close(supervisor_fd);
    supervisor_fd = -1;
    return gone ? -ESRCH : 0;
}

/// Whether `pid` catches `sig` (SigCgt in /proc/PID/status): a pid namespace's first
/// process ignores every signal it does not catch, even from outside, but SIGKILL.
static int catches(pid_t pid, int sig) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *line = strstr(buf, "SigCgt:");
    if (!line) return 0;
    unsigned long long mask = strtoull(line + 7, 0, 16);
    return (int)((mask >> (sig - 1)) & 1);
}

int cjail_supervise(pid_t child, int *status, int *translated) {
    sigset_t set;
    sigemptyset(&set);
    int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};
    for (unsigned i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) sigaddset(&set, forwarded[i]);
    sigaddset(&set, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &set, 0) < 0) return -errno;
    // An inherited SIG_IGN would reap the VMM behind waitpid's back.
    struct sigaction dfl = {0};
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &dfl, 0);
    *translated = 0;
    // comm "pvmm-jail": the VMM (still "pvmm-vmm") is the one process of that name.
    prctl(PR_SET_NAME, "pvmm-jail", 0, 0, 0);
    for (;;) {
        pid_t r = waitpid(child, status, WNOHANG);
        if (r == child) return 0;
        if (r < 0 && errno != EINTR) return -errno;
        siginfo_t info;
        int sig = sigwaitinfo(&set, &info);
        if (sig < 0 || sig == SIGCHLD) continue;
        // The VMM handles it (--no-stdio: a stop): pass it on. Otherwise it would have
        // died of it outside a pid namespace: kill it, and die of `sig` afterwards.
        if (catches(child, sig)) kill(child, sig);
        else {
            *translated = sig;
            kill(child, SIGKILL);
        }
    }
}

int cjail_write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    int e = errno;
    close(fd);
    return n == (ssize_t)len ? 0 : (n < 0 ? -e : -EIO);
}

long cjail_read_file(const char *path, char *buf, long capacity) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    long total = 0;
    while (total < capacity) {
        ssize_t n = read(fd, buf + total, (size_t)(capacity - total));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { int e = errno; close(fd); return -e; }
        if (n == 0) break;
        total += n;
    }
    close(fd);
    return total;
}

int cjail_drop(unsigned uid, unsigned gid) {
    if (setgroups(0, 0) < 0) return -errno;
    if (setresgid(gid, gid, gid) < 0) return -errno;
    return ret(setresuid(uid, uid, uid));
}

int cjail_no_new_privs(void) { return ret(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)); }
