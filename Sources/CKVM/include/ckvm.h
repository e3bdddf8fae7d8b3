// Thin wrappers over the /dev/kvm ioctls for Swift.
//
// Contract: every function returns the ioctl's non-negative result or -errno, and holds
// no state or logic. Swift cannot import the _IO* request macros, which is the main reason
// this layer exists; the kvm_run accessors avoid relying on how anonymous unions import.
#pragma once
// Only <linux/kvm.h> and fixed-width types here: including libc headers in this module
// map would redefine libc types (fd_set, ...) that swift-system's CSystem module also
// defines, which breaks clean builds. The definitions live in ckvm.c.
#include <stdint.h>
#include <stddef.h>
#include <linux/kvm.h>



// MARK: system fd
int ckvm_get_api_version(int kvm);
int ckvm_create_vm(int kvm);
int ckvm_check_extension(int fd, long cap);
int ckvm_get_vcpu_mmap_size(int kvm);
/// `cpuid` must have room for `cpuid->nent` entries.
int ckvm_get_supported_cpuid(int kvm, struct kvm_cpuid2 *cpuid);

// MARK: VM fd
int ckvm_set_user_memory_region(int vm, uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size, uint64_t hva);
int ckvm_create_vcpu(int vm, unsigned long id);
int ckvm_create_irqchip(int vm);
int ckvm_irq_line(int vm, uint32_t irq, uint32_t level);
int ckvm_ioeventfd(int vm, uint64_t addr, uint32_t len, int fd, uint32_t flags, uint64_t datamatch);
uint32_t ckvm_ioeventfd_flag_datamatch(void);
uint32_t ckvm_ioeventfd_flag_pio(void);
uint32_t ckvm_ioeventfd_flag_deassign(void);
uint32_t ckvm_irqfd_flag_deassign(void);
int ckvm_irqfd(int vm, int fd, uint32_t gsi, uint32_t flags);
int ckvm_enable_cap(int fd, uint32_t cap, uint64_t arg0);
/// One GSI route for ckvm_set_gsi_routing: `msi` 0 routes `gsi` to pin `pin` of irqchip
/// `chip` (0 PIC master, 1 PIC slave, 2 IOAPIC); `msi` 1 makes it an MSI with
/// `address`/`data` (kvm_irq_routing_msi).
struct ckvm_gsi_route { uint32_t gsi, msi, chip, pin; uint64_t address; uint32_t data; };
/// KVM_SET_GSI_ROUTING: replaces the whole table with `routes[0..<n]` (n <= 1024).
int ckvm_set_gsi_routing(int vm, const struct ckvm_gsi_route *routes, uint32_t n);

// MARK: vCPU fd
int ckvm_run(int vcpu);
int ckvm_get_regs(int vcpu, struct kvm_regs *r);
int ckvm_set_regs(int vcpu, const struct kvm_regs *r);
int ckvm_get_sregs(int vcpu, struct kvm_sregs *s);
int ckvm_set_sregs(int vcpu, const struct kvm_sregs *s);
int ckvm_set_cpuid2(int vcpu, const struct kvm_cpuid2 *c);
int ckvm_get_tsc_khz(int vcpu);
/// Sets one MSR; returns the number set (1) or 0 when KVM refused it, or -errno.
int ckvm_set_msr(int vcpu, uint32_t index, uint64_t value);
int ckvm_get_msr(int vcpu, uint32_t index, uint64_t *value);
#define CKVM_MAX_MSRS 64
/// KVM_GET_MSRS / KVM_SET_MSRS of `n` (<= CKVM_MAX_MSRS) MSRs in one ioctl: KVM handles
/// them in order and stops at the first it does not know or refuses; returns how many it
/// handled (values[0..<r] read), or -errno.
int ckvm_get_msrs(int vcpu, const uint32_t *index, uint64_t *value, uint32_t n);
int ckvm_set_msrs(int vcpu, const uint32_t *index, const uint64_t *value, uint32_t n);

int ckvm_kvmclock_ctrl(int vcpu);
int ckvm_get_mp_state(int vcpu, uint32_t *state);
int ckvm_set_mp_state(int vcpu, uint32_t state);

/// The parts of a vCPU that a reset (and later a snapshot) saves and restores, beyond
/// the registers: the LAPIC page, pending events, the FPU/SSE state.
struct ckvm_vcpu_extra {
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_fpu fpu;
};
/// Swift keeps these as opaque bytes (imported, the structs' big arrays become tuples
/// that cost kilobytes of code to initialise and copy): `x` holds ckvm_vcpu_extra_size().
size_t ckvm_vcpu_extra_size(void);
int ckvm_get_vcpu_extra(int vcpu, void *x);
int ckvm_set_vcpu_extra(int vcpu, const void *x);

/// The in-kernel PIC (chips 0, 1) and IOAPIC (chip 2).
struct ckvm_irqchips { struct kvm_irqchip chip[3]; };
/// `c` holds ckvm_irqchips_size() bytes, as above.
size_t ckvm_irqchips_size(void);
int ckvm_get_irqchips(int vm, void *c);
int ckvm_set_irqchips(int vm, const void *c);

/// What a snapshot saves beyond `ckvm_vcpu_extra`: the XSAVE area (AVX and later state
/// the legacy FPU struct lacks) and XCR0. `has_xsave`/`has_xcrs` are 0 when KVM refused
/// the ioctl (the restore then sets only what was saved).
struct ckvm_vcpu_xstate {
    struct kvm_xsave xsave;
    struct kvm_xcrs xcrs;
    uint32_t has_xsave;
    uint32_t has_xcrs;
};
/// As bytes (see ckvm_vcpu_extra_size): `x` holds ckvm_vcpu_xstate_size().
size_t ckvm_vcpu_xstate_size(void);
int ckvm_get_vcpu_xstate(int vcpu, void *x);
/// Sets XCRS before XSAVE (the area is checked against XCR0).
int ckvm_set_vcpu_xstate(int vcpu, const void *x);

/// KVM_GET_CLOCK / KVM_SET_CLOCK (the VM's kvmclock base).
int ckvm_get_clock(int vm, struct kvm_clock_data *c);
int ckvm_set_clock(int vm, const struct kvm_clock_data *c);

// MARK: kvm_run accessors (the mmapped page shared with the kernel)
uint32_t ckvm_run_exit_reason(const struct kvm_run *r);
void ckvm_run_set_immediate_exit(struct kvm_run *r, uint8_t v);
uint8_t ckvm_run_io_direction(const struct kvm_run *r);
uint8_t ckvm_run_io_size(const struct kvm_run *r);
uint16_t ckvm_run_io_port(const struct kvm_run *r);
uint32_t ckvm_run_io_count(const struct kvm_run *r);
uint64_t ckvm_run_io_data_offset(const struct kvm_run *r);
uint64_t ckvm_run_mmio_addr(const struct kvm_run *r);
uint8_t *ckvm_run_mmio_data(struct kvm_run *r);
uint32_t ckvm_run_mmio_len(const struct kvm_run *r);
uint8_t ckvm_run_mmio_is_write(const struct kvm_run *r);
uint32_t ckvm_run_internal_suberror(const struct kvm_run *r);
uint32_t ckvm_run_internal_ndata(const struct kvm_run *r);
uint64_t ckvm_run_internal_data(const struct kvm_run *r, uint32_t i);
uint64_t ckvm_run_fail_entry_reason(const struct kvm_run *r);
uint32_t ckvm_run_system_event_type(const struct kvm_run *r);
uint32_t ckvm_run_ex_exception(const struct kvm_run *r);
uint32_t ckvm_run_ex_error_code(const struct kvm_run *r);

/// KVM_CAP_SYNC_REGS: ask KVM to copy registers into kvm_run on every exit, so reading
/// them costs no ioctl.
void ckvm_run_set_valid_regs(struct kvm_run *r, uint64_t mask);
uint64_t ckvm_run_valid_regs(const struct kvm_run *r);
uint64_t ckvm_sync_mask_all(void);
struct kvm_regs ckvm_run_sync_regs(const struct kvm_run *r);
struct kvm_sregs ckvm_run_sync_sregs(const struct kvm_run *r);

// MARK: eventfd (for ioeventfd/irqfd and vCPU wake-ups)
int ckvm_eventfd_nonblock(void);

// MARK: threads
/// mallopt(M_ARENA_MAX, 1): all threads share one malloc arena (fewer resident pages).
int ckvm_single_malloc_arena(void);
int ckvm_set_thread_name(const char *name);

// MARK: signals used to kick a vCPU thread out of KVM_RUN
int ckvm_kick_signal(void);
/// The TSC, for benchmarks that compare host and guest timestamps (on this PVM host the
/// guest's rdtsc reads the same counter).
uint64_t ckvm_rdtsc(void);
/// Unblocks the kick signal in the calling thread: a parent (a test runner, a shell) may
/// have it blocked, and a blocked kick never interrupts a vCPU halted in the kernel.
int ckvm_unblock_kick_signal(void);
