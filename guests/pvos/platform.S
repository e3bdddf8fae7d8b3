/* Instruction helpers for Swift (System V ABI). Faulting probes register an
 * entry in .fixup: {faulting RIP, resume RIP}; trap_common consults it. */

	.text
	.code64

#include "asm.h"

.macro FIXUP fault, resume
	.pushsection .fixup, "a"
	.quad \fault, \resume
	.popsection
.endm

FUNC pvos_inb
	mov %edi, %edx
	in %dx, %al
	movzbl %al, %eax
	ret

FUNC pvos_outb
	mov %edi, %edx
	mov %esi, %eax
	out %al, %dx
	ret

FUNC pvos_inl
	mov %edi, %edx
	in %dx, %eax
	ret

FUNC pvos_outl
	mov %edi, %edx
	mov %esi, %eax
	out %eax, %dx
	ret

/* int pvos_rdmsr_safe(u32 msr, u64 *value): 1 if read, 0 if it raised #GP. */
FUNC pvos_rdmsr_safe
	mov %edi, %ecx
1:	rdmsr
	shl $32, %rdx
	or %rdx, %rax
	mov %rax, (%rsi)
	mov $1, %eax
	ret
2:	xor %eax, %eax
	ret
	FIXUP 1b, 2b

/* int pvos_wrmsr_safe(u32 msr, u64 value) */
FUNC pvos_wrmsr_safe
	mov %edi, %ecx
	mov %rsi, %rax
	mov %rsi, %rdx
	shr $32, %rdx
1:	wrmsr
	mov $1, %eax
	ret
2:	xor %eax, %eax
	ret
	FIXUP 1b, 2b

/* void pvos_cpuid(u32 leaf, u32 subleaf, u32 out[4]) */
FUNC pvos_cpuid
	push %rbx
	mov %edi, %eax
	mov %esi, %ecx
	mov %rdx, %r8
	cpuid
	mov %eax, (%r8)
	mov %ebx, 4(%r8)
	mov %ecx, 8(%r8)
	mov %edx, 12(%r8)
	pop %rbx
	ret

FUNC pvos_rdtsc
	rdtsc
	shl $32, %rdx
	or %rdx, %rax
	ret

FUNC pvos_read_cr2
	mov %cr2, %rax
	ret

FUNC pvos_hlt
	hlt
	ret

/* PVM idle: set VIF.if (rdi = VIF page), then halt unless an interrupt is pending
 * (`out 0x80` delivers it). An interrupt that lands after VIF.if is set but before the
 * hlt executes would return into the hlt and sleep until the next interrupt, which a
 * tickless kernel may never get: irq_entry moves a saved RIP in
 * [pvos_idle_window, pvos_idle_done) to pvos_idle_done, so that hlt is skipped. */
FUNC pvos_vif_halt
	movb $1, (%rdi)                /* VIF.if (PVM.vifIF = 0) */
	.globl pvos_idle_window
pvos_idle_window:
	cmpb $0, 1(%rdi)               /* VIF.pending (PVM.vifPending = 1) */
	jne 1f
	hlt
	.globl pvos_idle_done
pvos_idle_done:
	ret
1:	outb %al, $0x80
	ret

FUNC pvos_pause
	pause
	ret

FUNC pvos_cli
	cli
	ret

FUNC pvos_sti
	sti
	ret

/* Volatile accesses the optimizer must not drop or merge. */
FUNC pvos_write8
	mov %sil, (%rdi)
	ret

FUNC pvos_read64
	mov (%rdi), %rax
	ret

ADDRESS_OF pvos_vif_page_addr, pvos_vif_page

FUNC pvos_boot_tsc_value
	mov pvos_boot_tsc(%rip), %rax
	ret

/* [start, end) of the loaded image including stacks and tables. */
ADDRESS_OF pvos_image_start, __kernel_start

ADDRESS_OF pvos_image_end, __kernel_end

/* The C memory primitives Embedded Swift links against. */
FUNC memset
	mov %rdi, %r8
	mov %esi, %eax
	mov %rdx, %rcx
	rep stosb
	mov %r8, %rax
	ret

FUNC memcpy
	mov %rdi, %rax
	mov %rdx, %rcx
	rep movsb
	ret

FUNC memmove
	mov %rdi, %rax
	mov %rdx, %rcx
	cmp %rsi, %rdi
	jbe 1f
	lea -1(%rdi, %rdx), %rdi       /* overlapping forward move: copy backwards */
	lea -1(%rsi, %rdx), %rsi
	std
	rep movsb
	cld
	ret
1:	rep movsb
	ret

FUNC memcmp
	xor %eax, %eax
	test %rdx, %rdx
	jz 2f
1:	movzbl (%rdi), %eax
	movzbl (%rsi), %ecx
	sub %ecx, %eax
	jnz 2f
	inc %rdi
	inc %rsi
	dec %rdx
	jnz 1b
2:	ret

/* Static table for the page allocator's free ranges (needed before any heap). */
ADDRESS_OF pvos_range_table, range_table
	.section .bss.ranges, "aw", @nobits
	.balign 16
range_table:
	.skip 64 * 16

/* free(): Swift reserves the symbol name, so forward to the Swift heap. */
FUNC free
	jmp pvos_free

/* u8 pvos_checksum(addr, len): byte sum. A plain loop: compiled Swift vectorises it,
 * and PVM's instruction emulator (no VIF yet, `novif`) has no SSE arithmetic. */
FUNC pvos_checksum
	xor %eax, %eax
	test %rsi, %rsi
	jz 2f
1:	add (%rdi), %al
	inc %rdi
	dec %rsi
	jnz 1b
2:	ret

/* void pvos_invlpg(u64 address); a fault (a host that refuses it) is ignored. */
FUNC pvos_invlpg
1:	invlpg (%rdi)
2:	ret
	FIXUP 1b, 2b

/* Volatile 16-bit ring accesses, a full fence (store -> load ordering for the
 * virtqueue notify/interrupt decisions) and an atomic fetch-and-clear. */
FUNC pvos_read16
	movzwl (%rdi), %eax
	ret

FUNC pvos_write16
	mov %si, (%rdi)
	ret

FUNC pvos_mfence
	lock orq $0, (%rsp)
	ret

FUNC pvos_xchg32
	mov %esi, %eax
	xchg %eax, (%rdi)
	ret

/* virtio interrupts: irq_entry reads InterruptStatus of the device on GSI g (MMIO base
 * in pvos_virtio_irq_base[g], 0 = none), writes it to InterruptACK and ORs it into
 * pvos_virtio_irq_status[g] for the driver, which fetches and clears it. */
ADDRESS_OF pvos_virtio_irq_base_addr, pvos_virtio_irq_base

ADDRESS_OF pvos_virtio_irq_status_addr, pvos_virtio_irq_status
/* Set under pvmm (docs/devices.md): its interrupts are irqfd edges that do not depend on
 * InterruptStatus, so irq_entry skips the read and the ACK (two ~20 us exits). */
ADDRESS_OF pvos_virtio_lazy_ack_addr, pvos_virtio_lazy_ack
	.section .bss.virtio, "aw", @nobits
	.globl pvos_virtio_lazy_ack
pvos_virtio_lazy_ack:	.byte 0
	.balign 16
	.globl pvos_virtio_irq_base, pvos_virtio_irq_status
pvos_virtio_irq_base:	.skip 48 * 8
pvos_virtio_irq_status:	.skip 48 * 4
