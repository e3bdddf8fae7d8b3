// Thin wrappers over the /dev/kvm ioctls for Swift.
//
// Contract: every function returns the ioctl's non-negative result or -errno, and holds
// no state or logic. Swift cannot import the _IO* request macros, which is the main reason
// this layer exists; the kvm_run accessors avoid relying on how anonymous unions import.
#pragma once
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <errno.h>
#include <stdint.h>
#include <stddef.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <linux/kvm.h>

static inline int ckvm_ret(long r) { return r < 0 ? -errno : (int)r; }

// MARK: system fd
static inline int ckvm_get_api_version(int kvm) { return ckvm_ret(ioctl(kvm, KVM_GET_API_VERSION, 0)); }
static inline int ckvm_create_vm(int kvm) { return ckvm_ret(ioctl(kvm, KVM_CREATE_VM, 0)); }
static inline int ckvm_check_extension(int fd, long cap) { return ckvm_ret(ioctl(fd, KVM_CHECK_EXTENSION, cap)); }
static inline int ckvm_get_vcpu_mmap_size(int kvm) { return ckvm_ret(ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0)); }
/// `cpuid` must have room for `cpuid->nent` entries.
static inline int ckvm_get_supported_cpuid(int kvm, struct kvm_cpuid2 *cpuid) { return ckvm_ret(ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid)); }

// MARK: VM fd
static inline int ckvm_set_user_memory_region(int vm, uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size, uint64_t hva) {
    struct kvm_userspace_memory_region r = { .slot = slot, .flags = flags, .guest_phys_addr = gpa, .memory_size = size, .userspace_addr = hva };
    return ckvm_ret(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r));
}
static inline int ckvm_create_vcpu(int vm, unsigned long id) { return ckvm_ret(ioctl(vm, KVM_CREATE_VCPU, id)); }
static inline int ckvm_create_irqchip(int vm) { return ckvm_ret(ioctl(vm, KVM_CREATE_IRQCHIP, 0)); }
static inline int ckvm_irq_line(int vm, uint32_t irq, uint32_t level) {
    struct kvm_irq_level l = { .irq = irq, .level = level };
    return ckvm_ret(ioctl(vm, KVM_IRQ_LINE, &l));
}
static inline int ckvm_ioeventfd(int vm, uint64_t addr, uint32_t len, int fd, uint32_t flags, uint64_t datamatch) {
    struct kvm_ioeventfd e = { .datamatch = datamatch, .addr = addr, .len = len, .fd = fd, .flags = flags };
    return ckvm_ret(ioctl(vm, KVM_IOEVENTFD, &e));
}
static inline int ckvm_irqfd(int vm, int fd, uint32_t gsi, uint32_t flags) {
    struct kvm_irqfd f = { .fd = (uint32_t)fd, .gsi = gsi, .flags = flags };
    return ckvm_ret(ioctl(vm, KVM_IRQFD, &f));
}
static inline int ckvm_enable_cap(int fd, uint32_t cap, uint64_t arg0) {
    struct kvm_enable_cap c = { .cap = cap, .args = { arg0 } };
    return ckvm_ret(ioctl(fd, KVM_ENABLE_CAP, &c));
}

// MARK: vCPU fd
static inline int ckvm_run(int vcpu) { return ckvm_ret(ioctl(vcpu, KVM_RUN, 0)); }
static inline int ckvm_get_regs(int vcpu, struct kvm_regs *r) { return ckvm_ret(ioctl(vcpu, KVM_GET_REGS, r)); }
static inline int ckvm_set_regs(int vcpu, const struct kvm_regs *r) { return ckvm_ret(ioctl(vcpu, KVM_SET_REGS, r)); }
static inline int ckvm_get_sregs(int vcpu, struct kvm_sregs *s) { return ckvm_ret(ioctl(vcpu, KVM_GET_SREGS, s)); }
static inline int ckvm_set_sregs(int vcpu, const struct kvm_sregs *s) { return ckvm_ret(ioctl(vcpu, KVM_SET_SREGS, s)); }
static inline int ckvm_set_cpuid2(int vcpu, const struct kvm_cpuid2 *c) { return ckvm_ret(ioctl(vcpu, KVM_SET_CPUID2, c)); }
static inline int ckvm_get_tsc_khz(int vcpu) { return ckvm_ret(ioctl(vcpu, KVM_GET_TSC_KHZ, 0)); }
/// Sets one MSR; returns the number set (1) or 0 when KVM refused it, or -errno.
static inline int ckvm_set_msr(int vcpu, uint32_t index, uint64_t value) {
    struct { struct kvm_msrs h; struct kvm_msr_entry e; } m = { .h = { .nmsrs = 1 }, .e = { .index = index, .data = value } };
    return ckvm_ret(ioctl(vcpu, KVM_SET_MSRS, &m));
}
static inline int ckvm_get_msr(int vcpu, uint32_t index, uint64_t *value) {
    struct { struct kvm_msrs h; struct kvm_msr_entry e; } m = { .h = { .nmsrs = 1 }, .e = { .index = index } };
    int r = ckvm_ret(ioctl(vcpu, KVM_GET_MSRS, &m));
    *value = m.e.data;
    return r;
}

// MARK: kvm_run accessors (the mmapped page shared with the kernel)
static inline uint32_t ckvm_run_exit_reason(const struct kvm_run *r) { return r->exit_reason; }
static inline void ckvm_run_set_immediate_exit(struct kvm_run *r, uint8_t v) { __atomic_store_n(&r->immediate_exit, v, __ATOMIC_SEQ_CST); }
static inline uint8_t ckvm_run_io_direction(const struct kvm_run *r) { return r->io.direction; }
static inline uint8_t ckvm_run_io_size(const struct kvm_run *r) { return r->io.size; }
static inline uint16_t ckvm_run_io_port(const struct kvm_run *r) { return r->io.port; }
static inline uint32_t ckvm_run_io_count(const struct kvm_run *r) { return r->io.count; }
static inline uint64_t ckvm_run_io_data_offset(const struct kvm_run *r) { return r->io.data_offset; }
static inline uint64_t ckvm_run_mmio_addr(const struct kvm_run *r) { return r->mmio.phys_addr; }
static inline uint8_t *ckvm_run_mmio_data(struct kvm_run *r) { return r->mmio.data; }
static inline uint32_t ckvm_run_mmio_len(const struct kvm_run *r) { return r->mmio.len; }
static inline uint8_t ckvm_run_mmio_is_write(const struct kvm_run *r) { return r->mmio.is_write; }
static inline uint32_t ckvm_run_internal_suberror(const struct kvm_run *r) { return r->internal.suberror; }
static inline uint32_t ckvm_run_internal_ndata(const struct kvm_run *r) { return r->internal.ndata; }
static inline uint64_t ckvm_run_internal_data(const struct kvm_run *r, uint32_t i) { return i < 16 ? r->internal.data[i] : 0; }
static inline uint64_t ckvm_run_fail_entry_reason(const struct kvm_run *r) { return r->fail_entry.hardware_entry_failure_reason; }
static inline uint32_t ckvm_run_system_event_type(const struct kvm_run *r) { return r->system_event.type; }
static inline uint32_t ckvm_run_ex_exception(const struct kvm_run *r) { return r->ex.exception; }
static inline uint32_t ckvm_run_ex_error_code(const struct kvm_run *r) { return r->ex.error_code; }

// MARK: eventfd (for ioeventfd/irqfd and vCPU wake-ups)
static inline int ckvm_eventfd_nonblock(void) { int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); return fd < 0 ? -errno : fd; }

// MARK: threads
static inline int ckvm_set_thread_name(const char *name) { return -pthread_setname_np(pthread_self(), name); }

// MARK: signals used to kick a vCPU thread out of KVM_RUN
static inline int ckvm_kick_signal(void) { return SIGRTMIN + 1; }
