#define _GNU_SOURCE
#include "curing.h"
#include <errno.h>
#include <sys/uio.h>
#include <liburing.h>
#include <stdlib.h>

struct curing_ring { struct io_uring ring; };

int curing_create(uint32_t entries, curing_ring **out) {
    curing_ring *r = calloc(1, sizeof *r);
    if (!r) return -ENOMEM;
    int rc = io_uring_queue_init(entries, &r->ring, 0);
    if (rc < 0) { free(r); return rc; }
    *out = r;
    return 0;
}

void curing_destroy(curing_ring *r) {
    io_uring_queue_exit(&r->ring);
    free(r);
}

int curing_register_eventfd(curing_ring *r, int fd) { return io_uring_register_eventfd(&r->ring, fd); }

int curing_prep_rw(curing_ring *r, int write, int fd, const void *iov, uint32_t n, uint64_t off, uint64_t tag) {
    struct io_uring_sqe *s = io_uring_get_sqe(&r->ring);
    if (!s) return -EBUSY;
    if (write) io_uring_prep_writev(s, fd, iov, n, off); else io_uring_prep_readv(s, fd, iov, n, off);
    io_uring_sqe_set_data64(s, tag);
    return 0;
}

int curing_prep_fdatasync_drained(curing_ring *r, int fd, uint64_t tag) {
    struct io_uring_sqe *s = io_uring_get_sqe(&r->ring);
    if (!s) return -EBUSY;
    io_uring_prep_fsync(s, fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(s, tag);
    io_uring_sqe_set_flags(s, IOSQE_IO_DRAIN);
    return 0;
}

int curing_submit(curing_ring *r) { return io_uring_submit(&r->ring); }

int curing_peek(curing_ring *r, uint64_t *tag, int32_t *res) {
    struct io_uring_cqe *c;
    if (io_uring_peek_cqe(&r->ring, &c) != 0 || !c) return 0;
    *tag = io_uring_cqe_get_data64(c);
    *res = c->res;
    io_uring_cqe_seen(&r->ring, c);
    return 1;
}

int curing_wait(curing_ring *r, uint64_t *tag, int32_t *res) {
    struct io_uring_cqe *c;
    int rc;
    do { rc = io_uring_wait_cqe(&r->ring, &c); } while (rc == -EINTR);
    if (rc < 0) return rc;
    *tag = io_uring_cqe_get_data64(c);
    *res = c->res;
    io_uring_cqe_seen(&r->ring, c);
    return 1;
}

long curing_preadv_nowait(int fd, const void *iov, uint32_t n, uint64_t off) {
    ssize_t r;
    do { r = preadv2(fd, iov, (int)n, (off_t)off, RWF_NOWAIT); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

long curing_pwritev_nowait(int fd, const void *iov, uint32_t n, uint64_t off) {
    ssize_t r;
    do { r = pwritev2(fd, iov, (int)n, (off_t)off, RWF_NOWAIT); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}
