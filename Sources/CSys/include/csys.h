// Thin wrappers over Linux system calls Swift cannot reach cleanly: epoll (struct
// epoll_event is packed on x86-64) and spawning a child that dies with its parent.
//
// Contract, as in CKVM: each returns the call's non-negative result or -errno, and holds
// no state. Only fixed-width types in this header (libc headers in a module map clash
// with swift-system's CSystem).
#pragma once
#include <stdint.h>

// MARK: memfd
/// memfd_create(name, MFD_CLOEXEC): anonymous shared memory with an fd.
int csys_memfd(const char *name);

// MARK: epoll
/// Event bits, so Swift need not import <sys/epoll.h>.
uint32_t csys_epoll_in(void);
uint32_t csys_epoll_out(void);
uint32_t csys_epoll_err(void);
uint32_t csys_epoll_hup(void);

int csys_epoll_create(void);
/// EPOLL_CTL_ADD / MOD with `events` (level-triggered), data = fd.
int csys_epoll_add(int ep, int fd, uint32_t events);
int csys_epoll_modify(int ep, int fd, uint32_t events);
int csys_epoll_remove(int ep, int fd);
/// Waits; writes up to `max` (at most 64) ready fds and their event bits.
int csys_epoll_wait(int ep, int *fds, uint32_t *events, int max, int timeout_ms);

// MARK: processes
/// fork + execvp(argv[0], argv) with `keep_fd` (>= 0) dup'ed to fd `as_fd` in the
/// child, every other inherited fd above 2 closed, and SIGTERM sent to the child when the
/// calling thread exits (PR_SET_PDEATHSIG), so a helper such as passt never outlives the
/// VMM. Returns the child's pid or -errno (exec failure shows as exit status 127).
int csys_spawn(char *const argv[], int keep_fd, int as_fd);
/// waitpid(pid, &status, WNOHANG if !block): the pid, 0 if still running, or -errno.
int csys_waitpid(int pid, int *status, int block);

/// recvmsg(2) without waiting: up to `len` bytes into `buf` and the fds passed with them
/// (SCM_RIGHTS, close-on-exec), at most `max_fds` kept in `fds` (`*nfds`), any more closed.
/// The byte count, or -errno.
int64_t csys_recv_fds(int sock, void *buf, uint64_t len, int *fds, int max_fds, int *nfds);

/// sendmsg(2) of `len` bytes with `nfds` (0 to 4) fds passed along (SCM_RIGHTS). The byte
/// count, or -errno.
int64_t csys_send_fds(int sock, const void *buf, uint64_t len, const int *fds, int nfds);
