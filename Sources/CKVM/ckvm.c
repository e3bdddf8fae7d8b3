// Definitions of the wrappers declared in include/ckvm.h (see the contract there).
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include "ckvm.h"

static inline int ckvm_ret(long r) { return r < 0 ? -errno : (int)r; }

int ckvm_get_api_version(int kvm) { return ckvm_ret(ioctl(kvm, KVM_GET_API_VERSION, 0)); }

int ckvm_create_vm(int kvm) { return ckvm_ret(ioctl(kvm, KVM_CREATE_VM, 0)); }

int ckvm_check_extension(int fd, long cap) { return ckvm_ret(ioctl(fd, KVM_CHECK_EXTENSION, cap)); }

int ckvm_get_vcpu_mmap_size(int kvm) { return ckvm_ret(ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0)); }

int ckvm_get_supported_cpuid(int kvm, struct kvm_cpuid2 *cpuid) { return ckvm_ret(ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid)); }

int ckvm_set_user_memory_region(int vm, uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size, uint64_t hva) {
    struct kvm_userspace_memory_region r = { .slot = slot, .flags = flags, .guest_phys_addr = gpa, .memory_size = size, .userspace_addr = hva };
    return ckvm_ret(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r));
}

int ckvm_create_vcpu(int vm, unsigned long id) { return ckvm_ret(ioctl(vm, KVM_CREATE_VCPU, id)); }

int ckvm_create_irqchip(int vm) { return ckvm_ret(ioctl(vm, KVM_CREATE_IRQCHIP, 0)); }

int ckvm_irq_line(int vm, uint32_t irq, uint32_t level) {
    struct kvm_irq_level l = { .irq = irq, .level = level };
    return ckvm_ret(ioctl(vm, KVM_IRQ_LINE, &l));
}

int ckvm_ioeventfd(int vm, uint64_t addr, uint32_t len, int fd, uint32_t flags, uint64_t datamatch) {
    struct kvm_ioeventfd e = { .datamatch = datamatch, .addr = addr, .len = len, .fd = fd, .flags = flags };
    return ckvm_ret(ioctl(vm, KVM_IOEVENTFD, &e));
}

uint32_t ckvm_ioeventfd_flag_datamatch(void) { return KVM_IOEVENTFD_FLAG_DATAMATCH; }

uint32_t ckvm_ioeventfd_flag_pio(void) { return KVM_IOEVENTFD_FLAG_PIO; }

uint32_t ckvm_ioeventfd_flag_deassign(void) { return KVM_IOEVENTFD_FLAG_DEASSIGN; }

uint32_t ckvm_irqfd_flag_deassign(void) { return KVM_IRQFD_FLAG_DEASSIGN; }

int ckvm_irqfd(int vm, int fd, uint32_t gsi, uint32_t flags) {
    struct kvm_irqfd f = { .fd = (uint32_t)fd, .gsi = gsi, .flags = flags };
    return ckvm_ret(ioctl(vm, KVM_IRQFD, &f));
}

int ckvm_set_gsi_routing(int vm, const struct ckvm_gsi_route *routes, uint32_t n) {
    if (n > 1024) return -EINVAL;
    struct kvm_irq_routing *t = calloc(1, sizeof(*t) + n * sizeof(struct kvm_irq_routing_entry));
    if (!t) return -ENOMEM;
    t->nr = n;
    for (uint32_t i = 0; i < n; i++) {
        struct kvm_irq_routing_entry *e = &t->entries[i];
        e->gsi = routes[i].gsi;
        if (routes[i].msi) {
            e->type = KVM_IRQ_ROUTING_MSI;
            e->u.msi.address_lo = (uint32_t)routes[i].address;
            e->u.msi.address_hi = (uint32_t)(routes[i].address >> 32);
            e->u.msi.data = routes[i].data;
        } else {
            e->type = KVM_IRQ_ROUTING_IRQCHIP;
            e->u.irqchip.irqchip = routes[i].chip;
            e->u.irqchip.pin = routes[i].pin;
        }
    }
    int r = ckvm_ret(ioctl(vm, KVM_SET_GSI_ROUTING, t));
    free(t);
    return r;
}

int ckvm_enable_cap(int fd, uint32_t cap, uint64_t arg0) {
    struct kvm_enable_cap c = { .cap = cap, .args = { arg0 } };
    return ckvm_ret(ioctl(fd, KVM_ENABLE_CAP, &c));
}

int ckvm_run(int vcpu) { return ckvm_ret(ioctl(vcpu, KVM_RUN, 0)); }

int ckvm_get_regs(int vcpu, struct kvm_regs *r) { return ckvm_ret(ioctl(vcpu, KVM_GET_REGS, r)); }

int ckvm_set_regs(int vcpu, const struct kvm_regs *r) { return ckvm_ret(ioctl(vcpu, KVM_SET_REGS, r)); }

int ckvm_get_sregs(int vcpu, struct kvm_sregs *s) { return ckvm_ret(ioctl(vcpu, KVM_GET_SREGS, s)); }

int ckvm_set_sregs(int vcpu, const struct kvm_sregs *s) { return ckvm_ret(ioctl(vcpu, KVM_SET_SREGS, s)); }

int ckvm_set_cpuid2(int vcpu, const struct kvm_cpuid2 *c) { return ckvm_ret(ioctl(vcpu, KVM_SET_CPUID2, c)); }

int ckvm_get_tsc_khz(int vcpu) { return ckvm_ret(ioctl(vcpu, KVM_GET_TSC_KHZ, 0)); }

int ckvm_set_msr(int vcpu, uint32_t index, uint64_t value) {
    struct { struct kvm_msrs h; struct kvm_msr_entry e; } m = { .h = { .nmsrs = 1 }, .e = { .index = index, .data = value } };
    return ckvm_ret(ioctl(vcpu, KVM_SET_MSRS, &m));
}

int ckvm_get_msr(int vcpu, uint32_t index, uint64_t *value) {
    struct { struct kvm_msrs h; struct kvm_msr_entry e; } m = { .h = { .nmsrs = 1 }, .e = { .index = index } };
    int r = ckvm_ret(ioctl(vcpu, KVM_GET_MSRS, &m));
    *value = m.e.data;
    return r;
}

int ckvm_get_msrs(int vcpu, const uint32_t *index, uint64_t *value, uint32_t n) {
    struct { struct kvm_msrs h; struct kvm_msr_entry e[CKVM_MAX_MSRS]; } m;
    if (n > CKVM_MAX_MSRS) return -EINVAL;
    memset(&m, 0, sizeof m);
    m.h.nmsrs = n;
    for (uint32_t i = 0; i < n; i++) m.e[i].index = index[i];
    int r = ckvm_ret(ioctl(vcpu, KVM_GET_MSRS, &m));
    for (int i = 0; i < r; i++) value[i] = m.e[i].data;
    return r;
}

int ckvm_set_msrs(int vcpu, const uint32_t *index, const uint64_t *value, uint32_t n) {
    struct { struct kvm_msrs h; struct kvm_msr_entry e[CKVM_MAX_MSRS]; } m;
    if (n > CKVM_MAX_MSRS) return -EINVAL;
    memset(&m, 0, sizeof m);
    m.h.nmsrs = n;
    for (uint32_t i = 0; i < n; i++) { m.e[i].index = index[i]; m.e[i].data = value[i]; }
    return ckvm_ret(ioctl(vcpu, KVM_SET_MSRS, &m));
}

int ckvm_kvmclock_ctrl(int vcpu) { return ckvm_ret(ioctl(vcpu, KVM_KVMCLOCK_CTRL, 0)); }

int ckvm_get_mp_state(int vcpu, uint32_t *state) {
    struct kvm_mp_state m = { 0 };
    int r = ckvm_ret(ioctl(vcpu, KVM_GET_MP_STATE, &m));
    *state = m.mp_state;
    return r;
}

int ckvm_set_mp_state(int vcpu, uint32_t state) {
    struct kvm_mp_state m = { .mp_state = state };
    return ckvm_ret(ioctl(vcpu, KVM_SET_MP_STATE, &m));
}

size_t ckvm_vcpu_extra_size(void) { return sizeof(struct ckvm_vcpu_extra); }

int ckvm_get_vcpu_extra(int vcpu, void *p) {
    struct ckvm_vcpu_extra *x = p;
    int r = ckvm_ret(ioctl(vcpu, KVM_GET_LAPIC, &x->lapic));
    if (r >= 0) r = ckvm_ret(ioctl(vcpu, KVM_GET_VCPU_EVENTS, &x->events));
    if (r >= 0) r = ckvm_ret(ioctl(vcpu, KVM_GET_FPU, &x->fpu));
    return r;
}

int ckvm_set_vcpu_extra(int vcpu, const void *p) {
    const struct ckvm_vcpu_extra *x = p;
    int r = ckvm_ret(ioctl(vcpu, KVM_SET_LAPIC, &x->lapic));
    if (r >= 0) r = ckvm_ret(ioctl(vcpu, KVM_SET_VCPU_EVENTS, &x->events));
    if (r >= 0) r = ckvm_ret(ioctl(vcpu, KVM_SET_FPU, &x->fpu));
    return r;
}

size_t ckvm_vcpu_xstate_size(void) { return sizeof(struct ckvm_vcpu_xstate); }

int ckvm_get_vcpu_xstate(int vcpu, void *p) {
    struct ckvm_vcpu_xstate *x = p;
    memset(x, 0, sizeof *x);
    x->has_xsave = ioctl(vcpu, KVM_GET_XSAVE, &x->xsave) == 0;
    x->has_xcrs = ioctl(vcpu, KVM_GET_XCRS, &x->xcrs) == 0;
    return 0;
}

int ckvm_set_vcpu_xstate(int vcpu, const void *p) {
    const struct ckvm_vcpu_xstate *x = p;
    int r = 0;
    if (x->has_xcrs) r = ckvm_ret(ioctl(vcpu, KVM_SET_XCRS, &x->xcrs));
    if (r >= 0 && x->has_xsave) r = ckvm_ret(ioctl(vcpu, KVM_SET_XSAVE, &x->xsave));
    return r;
}

int ckvm_get_clock(int vm, struct kvm_clock_data *c) {
    memset(c, 0, sizeof *c);
    return ckvm_ret(ioctl(vm, KVM_GET_CLOCK, c));
}

int ckvm_set_clock(int vm, const struct kvm_clock_data *c) { return ckvm_ret(ioctl(vm, KVM_SET_CLOCK, c)); }

size_t ckvm_irqchips_size(void) { return sizeof(struct ckvm_irqchips); }

int ckvm_get_irqchips(int vm, void *p) {
    struct ckvm_irqchips *c = p;
    for (int i = 0; i < 3; i++) {
        c->chip[i].chip_id = i;
        int r = ckvm_ret(ioctl(vm, KVM_GET_IRQCHIP, &c->chip[i]));
        if (r < 0) return r;
    }
    return 0;
}

int ckvm_set_irqchips(int vm, const void *p) {
    const struct ckvm_irqchips *c = p;
    for (int i = 0; i < 3; i++) {
        int r = ckvm_ret(ioctl(vm, KVM_SET_IRQCHIP, &c->chip[i]));
        if (r < 0) return r;
    }
    return 0;
}

uint32_t ckvm_run_exit_reason(const struct kvm_run *r) { return r->exit_reason; }

void ckvm_run_set_immediate_exit(struct kvm_run *r, uint8_t v) { __atomic_store_n(&r->immediate_exit, v, __ATOMIC_SEQ_CST); }

uint8_t ckvm_run_io_direction(const struct kvm_run *r) { return r->io.direction; }

uint8_t ckvm_run_io_size(const struct kvm_run *r) { return r->io.size; }

uint16_t ckvm_run_io_port(const struct kvm_run *r) { return r->io.port; }

uint32_t ckvm_run_io_count(const struct kvm_run *r) { return r->io.count; }

uint64_t ckvm_run_io_data_offset(const struct kvm_run *r) { return r->io.data_offset; }

uint64_t ckvm_run_mmio_addr(const struct kvm_run *r) { return r->mmio.phys_addr; }

uint8_t *ckvm_run_mmio_data(struct kvm_run *r) { return r->mmio.data; }

uint32_t ckvm_run_mmio_len(const struct kvm_run *r) { return r->mmio.len; }

uint8_t ckvm_run_mmio_is_write(const struct kvm_run *r) { return r->mmio.is_write; }

uint32_t ckvm_run_internal_suberror(const struct kvm_run *r) { return r->internal.suberror; }

uint32_t ckvm_run_internal_ndata(const struct kvm_run *r) { return r->internal.ndata; }

uint64_t ckvm_run_internal_data(const struct kvm_run *r, uint32_t i) { return i < 16 ? r->internal.data[i] : 0; }

uint64_t ckvm_run_fail_entry_reason(const struct kvm_run *r) { return r->fail_entry.hardware_entry_failure_reason; }

uint32_t ckvm_run_system_event_type(const struct kvm_run *r) { return r->system_event.type; }

uint32_t ckvm_run_ex_exception(const struct kvm_run *r) { return r->ex.exception; }

uint32_t ckvm_run_ex_error_code(const struct kvm_run *r) { return r->ex.error_code; }

void ckvm_run_set_valid_regs(struct kvm_run *r, uint64_t mask) { r->kvm_valid_regs = mask; }

uint64_t ckvm_run_valid_regs(const struct kvm_run *r) { return r->kvm_valid_regs; }

uint64_t ckvm_sync_mask_all(void) { return KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS; }

struct kvm_regs ckvm_run_sync_regs(const struct kvm_run *r) { return r->s.regs.regs; }

struct kvm_sregs ckvm_run_sync_sregs(const struct kvm_run *r) { return r->s.regs.sregs; }

int ckvm_eventfd_nonblock(void) { int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); return fd < 0 ? -errno : fd; }

int ckvm_set_thread_name(const char *name) {
    char n[16];  /* Linux keeps 15 bytes and refuses longer names: truncate */
    size_t i = 0;
    for (; i < 15 && name[i]; i++) n[i] = name[i];
    n[i] = 0;
    return -pthread_setname_np(pthread_self(), n);
}

int ckvm_kick_signal(void) { return SIGRTMIN + 1; }

int ckvm_unblock_kick_signal(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, ckvm_kick_signal());
    return -pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

uint64_t ckvm_rdtsc(void) { return __builtin_ia32_rdtsc(); }

int ckvm_single_malloc_arena(void) { return mallopt(M_ARENA_MAX, 1) ? 0 : -EINVAL; }
