// Thin wrappers over liburing (Debian's liburing-dev) for the virtio-blk backend.
//
// Contract, as CKVM's: every function returns a non-negative value or -errno and holds
// no logic. Only fixed-width types here: libc headers in this module map would clash
// with swift-system's CSystem module (see ckvm.h). The ring is opaque to Swift; iovec
// arrays are passed as `const void *` (struct iovec, which Swift's Glibc defines).
#pragma once
#include <stdint.h>

typedef struct curing_ring curing_ring;

/// A ring with `entries` submission slots (completion queue twice that). `*out` is set
/// on success; free it with curing_destroy.
int curing_create(uint32_t entries, curing_ring **out);
void curing_destroy(curing_ring *ring);
/// The kernel signals `eventfd` for every completion posted.
int curing_register_eventfd(curing_ring *ring, int eventfd);

/// Queue a readv (`write` 0) or writev of `count` iovecs at `offset` (not yet
/// submitted). -EBUSY when the submission queue is full (submit first).
int curing_prep_rw(curing_ring *ring, int write, int fd, const void *iovecs, uint32_t count, uint64_t offset, uint64_t tag);
/// fdatasync that starts only after every request submitted before it has completed,
/// and before any submitted after it starts (IOSQE_IO_DRAIN).
int curing_prep_fdatasync_drained(curing_ring *ring, int fd, uint64_t tag);

/// preadv2 / pwritev2 with RWF_NOWAIT: bytes moved, or -EAGAIN when that would block
/// (data not in the page cache), -EOPNOTSUPP where the file system cannot tell.
long curing_preadv_nowait(int fd, const void *iovecs, uint32_t count, uint64_t offset);
long curing_pwritev_nowait(int fd, const void *iovecs, uint32_t count, uint64_t offset);

/// Submits what was queued: the number submitted.
int curing_submit(curing_ring *ring);
/// One completion if there is one: 1 (tag and result set, the entry consumed), 0 none.
int curing_peek(curing_ring *ring, uint64_t *tag, int32_t *result);
/// Waits for one completion: 1 (tag and result set, the entry consumed) or -errno.
int curing_wait(curing_ring *ring, uint64_t *tag, int32_t *result);
