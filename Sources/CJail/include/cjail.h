// The jail's system calls (namespaces, mounts, pivot_root, credentials, fds), for
// Sources/Sandbox/Jail.swift. Each returns 0 or -errno, as CKVM's wrappers do.
#ifndef CJAIL_H
#define CJAIL_H

/// New mount, ipc and uts namespaces for the calling process (single-threaded), with
/// every mount private so nothing propagates back to the host.
int cjail_unshare(void);

/// A tmpfs at `root` (created if missing, mode 0755), size-limited.
int cjail_mount_root(const char *root);

/// Bind-mounts `source` at `target` (a file or directory created for it), read-only
/// with `readonly`, and never with setuid bits or device nodes but for `device`.
int cjail_bind(const char *source, const char *target, int is_dir, int readonly, int device);

/// pivot_root into `root`, the old root detached; the working directory becomes "/".
int cjail_pivot(const char *root);

/// Closes every fd from `first` up (close_range(2)).
int cjail_close_from(int first);

/// Drops to `uid`/`gid` for good (setgroups to none, setresgid, setresuid).
int cjail_drop(unsigned uid, unsigned gid);

/// no_new_privs (also set by the seccomp filter; the jail wants it without one too).
int cjail_no_new_privs(void);
#endif
