// Definitions of the wrappers declared in include/csys.h (see the contract there).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "csys.h"

int csys_memfd(const char *name) { int fd = memfd_create(name, MFD_CLOEXEC); return fd < 0 ? -errno : fd; }

uint32_t csys_epoll_in(void) { return EPOLLIN; }
uint32_t csys_epoll_out(void) { return EPOLLOUT; }
uint32_t csys_epoll_err(void) { return EPOLLERR; }
uint32_t csys_epoll_hup(void) { return EPOLLHUP | EPOLLRDHUP; }

int csys_epoll_create(void) { int e = epoll_create1(EPOLL_CLOEXEC); return e < 0 ? -errno : e; }

static int ctl(int ep, int op, int fd, uint32_t events) {
    struct epoll_event ev = { .events = events, .data = { .fd = fd } };
    return epoll_ctl(ep, op, fd, &ev) < 0 ? -errno : 0;
}

int csys_epoll_add(int ep, int fd, uint32_t events) { return ctl(ep, EPOLL_CTL_ADD, fd, events); }
int csys_epoll_modify(int ep, int fd, uint32_t events) { return ctl(ep, EPOLL_CTL_MOD, fd, events); }
int csys_epoll_remove(int ep, int fd) { return ctl(ep, EPOLL_CTL_DEL, fd, 0); }

int csys_epoll_wait(int ep, int *fds, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event ev[64];
    if (max > 64) max = 64;
    int n = epoll_wait(ep, ev, max, timeout_ms);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) { fds[i] = ev[i].data.fd; events[i] = ev[i].events; }
    return n;
}

int csys_spawn(char *const argv[], int keep_fd, int as_fd) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return -errno;
    if (pid > 0) return pid;
    // Child: only async-signal-safe calls until exec.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);  // the parent died before prctl
    if (keep_fd >= 0 && keep_fd != as_fd) {
        if (dup2(keep_fd, as_fd) < 0) _exit(127);
    } else if (keep_fd >= 0) {
        fcntl(as_fd, F_SETFD, 0);  // dup2 would have cleared FD_CLOEXEC; do it by hand
    }
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536) max = 65536;
    for (int fd = 3; fd < max; fd++) if (fd != as_fd) close(fd);
    execvp(argv[0], argv);
    _exit(127);
}

int csys_waitpid(int pid, int *status, int block) {
    int r = waitpid(pid, status, block ? 0 : WNOHANG);
    return r < 0 ? -errno : r;
}
