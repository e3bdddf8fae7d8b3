// The jail's system calls (namespaces, mounts, pivot_root, credentials, fds), for
// Sources/Sandbox/Jail.swift. Each returns 0 or -errno, as CKVM's wrappers do.
#ifndef CJAIL_H
#define CJAIL_H
#include <sys/types.h>

/// New mount, ipc, uts and net namespaces for the calling process (single-threaded), with
/// every mount private so nothing propagates back to the host.
int cjail_unshare(void);

/// A tmpfs at `root` (an existing directory: the mount is in the caller's own mount
/// namespace, so nothing is created on the host), size-limited.
int cjail_mount_root(const char *root);

/// A detached copy of the mount at `source` (open_tree(2) OPEN_TREE_CLONE): a bind
/// mount taken before the jail's root hides the path. Returns its fd or -errno.
int cjail_clone_tree(const char *source);

/// Attaches `tree` (from cjail_clone_tree) at `target` (a file or directory created for
/// it), read-only with `readonly`, never with setuid bits, and with device nodes only for
/// `device`. Closes nothing: the caller closes `tree`.
int cjail_attach_tree(int tree, const char *target, int is_dir, int readonly, int device);

/// pivot_root into `root`, the old root detached; the working directory becomes "/".
int cjail_pivot(const char *root);

/// Closes every fd from 3 up but the `count` in `keep` (close_range(2) over the gaps).
int cjail_close_except(const int *keep, int count);

/// A new pid namespace and the VMM forked as its first process. Returns 0 in the child
/// once the parent calls cjail_go (the child dies with the parent: PR_SET_PDEATHSIG), the
/// child's pid in the parent with `*go` set, or -errno.
int cjail_fork(int *go);

/// Lets the child of cjail_fork go on. The supervisor keeps `go` open while it lives.
int cjail_go(int go);

/// In the child, after it changed uid/gid (which clears PR_SET_PDEATHSIG): sets it again;
/// -ESRCH if the supervisor is already gone.
int cjail_rearm_death_signal(void);

/// Waits for `child` to end, passing SIGTERM, SIGINT, SIGHUP and SIGQUIT on: as they are
/// when the child catches them, as SIGKILL otherwise (the first process of a pid
/// namespace ignores what it does not catch), with `*translated` set to the signal.
/// `*status` is the waitpid status. Returns 0 or -errno.
int cjail_supervise(pid_t child, int *status, int *translated);

/// Writes `text` to an existing file (a cgroup control file). 0 or -errno.
int cjail_write_file(const char *path, const char *text);

/// Reads up to `capacity` bytes of `path`; the count or -errno.
long cjail_read_file(const char *path, char *buf, long capacity);

/// Drops to `uid`/`gid` for good (setgroups to none, setresgid, setresuid).
int cjail_drop(unsigned uid, unsigned gid);

/// no_new_privs (also set by the seccomp filter; the jail wants it without one too).
int cjail_no_new_privs(void);
#endif
