// Process-supervision syscalls Swift cannot call directly (syscall(2) is variadic) or
// whose headers would clash with other modules' libc types. Only fixed-width types here;
// every function returns a value or -errno. (epoll is CSys's.)
#pragma once
#include <stdint.h>

/// pidfd_open(2), close-on-exec: an fd that polls readable when `pid` has exited; works
/// for processes that are not our children (VMMs re-adopted after a daemon restart).
int csupervise_pidfd_open(int32_t pid);
/// waitid(P_PIDFD, fd, ..., WEXITED | WNOHANG) for a child: its wait status in the
/// waitpid(2) encoding in *status; returns 1 when reaped, 0 when still running, -errno.
int csupervise_reap_pidfd(int pidfd, int *status);
/// pipe2(fds, O_CLOEXEC).
int csupervise_pipe_cloexec(int fds[2]);
