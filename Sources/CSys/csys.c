// Definitions of the wrappers declared in include/csys.h (see the contract there).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
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

int64_t csys_recv_fds(int sock, void *buf, uint64_t len, int *fds, int max_fds, int *nfds) {
    union { char bytes[CMSG_SPACE(sizeof(int) * 4)]; struct cmsghdr align; } control;
    struct iovec iov = {buf, len};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.bytes;
    msg.msg_controllen = sizeof control.bytes;
    *nfds = 0;
    ssize_t n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int got[4];
        memcpy(got, CMSG_DATA(c), sizeof(int) * (size_t)(count > 4 ? 4 : count));
        for (int i = 0; i < count && i < 4; i++) {
            if (*nfds < max_fds) fds[(*nfds)++] = got[i];
            else close(got[i]);
        }
    }
    return n;
}

int64_t csys_send_fds(int sock, const void *buf, uint64_t len, const int *fds, int nfds) {
    union { char bytes[CMSG_SPACE(sizeof(int) * 4)]; struct cmsghdr align; } control;
    if (nfds < 0 || nfds > 4) return -EINVAL;
    struct iovec iov = {(void *)buf, len};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        memset(control.bytes, 0, sizeof control.bytes);
        msg.msg_control = control.bytes;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n;
    do { n = sendmsg(sock, &msg, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}
