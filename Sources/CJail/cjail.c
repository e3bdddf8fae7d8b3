#define _GNU_SOURCE
#include "cjail.h"
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int ret(int r) { return r < 0 ? -errno : 0; }

int cjail_unshare(void) {
    if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS) < 0) return -errno;
    if (sethostname("pvmm", 4) < 0) return -errno;
    return ret(mount(0, "/", 0, MS_REC | MS_PRIVATE, 0));
}

int cjail_mount_root(const char *root) {
    if (mkdir(root, 0755) < 0 && errno != EEXIST) return -errno;
    return ret(mount("pvmm-jail", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755"));
}

int cjail_bind(const char *source, const char *target, int is_dir, int readonly, int device) {
    if (is_dir) {
        if (mkdir(target, 0755) < 0 && errno != EEXIST) return -errno;
    } else {
        int fd = open(target, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0) return -errno;
        close(fd);
    }
    if (mount(source, target, 0, MS_BIND, 0) < 0) return -errno;
    // Bind mounts take their flags only on a remount.
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID | (device ? 0 : MS_NODEV) | (readonly ? MS_RDONLY : 0);
    return ret(mount(0, target, 0, flags, 0));
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

int cjail_close_from(int first) { return ret((int)syscall(SYS_close_range, first, ~0U, 0)); }

int cjail_drop(unsigned uid, unsigned gid) {
    if (setgroups(0, 0) < 0) return -errno;
    if (setresgid(gid, gid, gid) < 0) return -errno;
    return ret(setresuid(uid, uid, uid));
}

int cjail_no_new_privs(void) { return ret(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)); }
