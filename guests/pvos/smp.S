/* SMP: the real-mode AP trampoline (copied below 1 MiB), the 64-bit AP entry, and the
 * atomic / clock / benchmark helpers Swift calls. percpu.h has the per-CPU layout. */

#include "percpu.h"

#include "asm.h"

#define T(x) ((x) - ap_trampoline)

/* ---- AP trampoline: SIPI starts it in real mode at CS = page >> 4, IP = 0 ----
 * Position independent: pvos_install_trampoline patches the two absolute addresses.
 * No stack until the per-CPU one; each instruction is emulated until the VIF is on. */
	.section .rodata.trampoline, "a"
	.balign 16
	.code16
ap_trampoline:
	cli
	cld
	mov %cs, %ax
	mov %ax, %ds
	xor %ebx, %ebx
	mov %ax, %bx
	shl $4, %ebx                   /* linear base of this page, kept into 32-bit mode */
	lgdtl T(tr_gdtr)
	mov %cr0, %eax
	or $1, %al                     /* PE */
	mov %eax, %cr0
	ljmpl *T(tr_far32)
	.code32
tr_32:
	mov $0x10, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov T(tr_cr3)(%ebx), %eax      /* the BSP's tables: below 4 GiB, U/S=1 everywhere */
	mov %eax, %cr3
	ENABLE_LONG_MODE
	ljmpl *T(tr_far64)(%ebx)       /* straight into the kernel's 64-bit AP entry */
	.balign 8
tr_gdt:
	.quad 0
	.quad 0x00af9b000000ffff        /* 0x08 code64 (the kernel's selector) */
	.quad 0x00cf93000000ffff        /* 0x10 data */
	.quad 0x00cf9b000000ffff        /* 0x18 code32 */
tr_gdt_end:
	.balign 4
tr_gdtr:
	.word tr_gdt_end - tr_gdt - 1
	.long 0                        /* patched: base + T(tr_gdt) */
	.balign 4
tr_far32:
	.long 0                        /* patched: base + T(tr_32) */
	.word 0x18
	.balign 4
tr_far64:
	.long pvos_ap_entry64          /* the kernel lies below 4 GiB */
	.word 0x08
	.balign 4
tr_cr3:
	.long 0                        /* patched */
ap_trampoline_end:
	.code64

/* void pvos_install_trampoline(u64 page, u64 cr3) */
FUNC pvos_install_trampoline
	mov %rdi, %r8
	mov %rsi, %r9
	lea ap_trampoline(%rip), %rsi
	mov $(ap_trampoline_end - ap_trampoline), %ecx
	rep movsb
	lea T(tr_gdt)(%r8), %rax
	mov %eax, T(tr_gdtr)+2(%r8)
	lea T(tr_32)(%r8), %rax
	mov %eax, T(tr_far32)(%r8)
	mov %r9d, T(tr_cr3)(%r8)
	ret

/* ---- 64-bit AP entry (from the trampoline, trampoline GDT, no stack) ----
 * Finds its per-CPU page by x2APIC id, loads its GDT/TSS and the shared IDT, then runs
 * pvos_ap_main on its own stack (which registers the AP's own VIF page on PVM). */
FUNC pvos_ap_entry64
	mov $0x1b, %ecx                /* IA32_APIC_BASE: x2APIC on (EN stays set) */
	rdmsr
	or $0xc00, %eax
	wrmsr
	mov $0x802, %ecx               /* x2APIC id */
	rdmsr
	lea pvos_cpu_table(%rip), %rsi
	mov pvos_cpu_count(%rip), %rcx
1:	test %rcx, %rcx
	jz 9f
	mov (%rsi), %rdi
	cmp CPU_APIC(%rdi), %eax
	je 2f
	add $8, %rsi
	dec %rcx
	jmp 1b
2:	lgdt CPU_GDTR(%rdi)
	mov $0x18, %eax
	ltr %ax
	lidt pvos_idt_ptr(%rip)
	mov CPU_STACK(%rdi), %rsp
	call pvos_ap_main
9:	cli                            /* not in the table: park */
	hlt
	jmp 9b

/* void pvos_fill_tss(tss, ist_base, percpu) -> rax:rdx = the 16-byte TSS descriptor.
 * IST k = ist_base + k * IST_SIZE - 16; IST5 (interrupts) keeps the per-CPU page pointer
 * in its top slot so irq_entry finds it without an MSR. */
FUNC pvos_fill_tss
	mov %rdi, %r9
	mov %rdx, %r8
	xor %eax, %eax
	mov $104, %ecx
	rep stosb
	lea 36(%r9), %rcx
	mov %rsi, %rax
	mov $5, %edx
1:	add $IST_SIZE, %rax
	lea -16(%rax), %rdi
	mov %rdi, (%rcx)
	add $8, %rcx
	dec %edx
	jnz 1b
	mov %r8, (%rdi)                /* IST5 slot */
	movw $104, 102(%r9)            /* I/O bitmap base beyond the limit: none */
	mov %r9, %rax                  /* descriptor from the base */
	mov %rax, %rcx
	and $0xffffff, %ecx
	shl $16, %rcx
	mov %rax, %rdx
	shr $24, %rdx
	shl $56, %rdx
	or %rdx, %rcx
	movabs $0x0000890000000067, %rdx
	or %rcx, %rdx
	shr $32, %rax
	xchg %rax, %rdx                /* rax = low quad, rdx = high quad */
	ret

/* void pvos_setup_ap_tables(percpu, ist_base): TSS, GDT (kernel's + own TSS), GDTR. */
FUNC pvos_setup_ap_tables
	push %rdi
	lea CPU_TSS(%rdi), %rdi
	pop %rdx
	push %rdx
	call pvos_fill_tss
	pop %rdi
	lea CPU_GDT(%rdi), %rcx
	movq $0, (%rcx)
	movabs $0x00af9b000000ffff, %r8
	mov %r8, 8(%rcx)
	movabs $0x00cf93000000ffff, %r8
	mov %r8, 16(%rcx)
	mov %rax, 24(%rcx)
	mov %rdx, 32(%rcx)
	movw $39, CPU_GDTR(%rdi)
	mov %rcx, CPU_GDTR+2(%rdi)
	ret

/* ---- helpers ---- */

/* int pvos_try_lock(u64 *word, u64 value): 1 if *word was 0 and now holds value. */
FUNC pvos_try_lock
	xor %eax, %eax
	lock cmpxchg %rsi, (%rdi)
	sete %al
	movzbl %al, %eax
	ret

FUNC pvos_write64
	mov %rsi, (%rdi)
	ret

FUNC pvos_read32
	mov (%rdi), %eax
	ret

FUNC pvos_write32
	mov %esi, (%rdi)
	ret

FUNC pvos_rsp
	lea 8(%rsp), %rax
	ret

FUNC pvos_read_cr3
	mov %cr3, %rax
	ret

/* hlt with interrupts enabled and no window between (sti's one-instruction shadow). */
FUNC pvos_sti_hlt
	sti
	hlt
	ret

/* u64 pvos_pvclock_ns(const pvclock_vcpu_time_info *): system_time + scaled TSC delta,
 * retried while the host updates it (odd or changed version). */
FUNC pvos_pvclock_ns
1:	mov (%rdi), %r8d
	test $1, %r8d
	jnz 2f
	mov 8(%rdi), %r9               /* tsc_timestamp */
	mov 16(%rdi), %r10             /* system_time */
	mov 24(%rdi), %r11d            /* tsc_to_system_mul */
	movsbl 28(%rdi), %ecx          /* tsc_shift */
	lfence
	rdtsc
	cmp (%rdi), %r8d
	jne 2f
	shl $32, %rdx
	or %rdx, %rax
	sub %r9, %rax
	test %ecx, %ecx
	js 3f
	shl %cl, %rax
	jmp 4f
3:	neg %ecx
	shr %cl, %rax
4:	mul %r11                       /* (delta * mul) >> 32 */
	shrd $32, %rdx, %rax
	add %r10, %rax
	ret
2:	pause
	jmp 1b

/* u64 pvos_bench_loop(u64 n): n dependent multiply-adds (an LCG); returns the value. */
FUNC pvos_bench_loop
	mov $1, %eax
	movabs $6364136223846793005, %rsi
	movabs $1442695040888963407, %rdx
	test %rdi, %rdi
	jz 2f
1:	imul %rsi, %rax
	add %rdx, %rax
	dec %rdi
	jnz 1b
2:	ret

ADDRESS_OF pvos_cpu_table_addr, pvos_cpu_table

/* The BSP's stacks (IST then kernel): [low, high) identifies it by RSP. */
ADDRESS_OF pvos_bsp_stacks_low, ist_stacks

ADDRESS_OF pvos_bsp_stacks_high, kernel_stack_top

ADDRESS_OF pvos_apic_on_addr, pvos_apic_on

ADDRESS_OF pvos_console_lock_addr, console_lock

ADDRESS_OF pvos_cpu0_addr, pvos_cpu0

	.section .bss.cpus, "aw", @nobits
	.balign 4096
	.globl pvos_cpu0, pvos_cpu_table, pvos_cpu_count
pvos_cpu0:	.skip 4096             /* the BSP's per-CPU page */
pvos_cpu_table:	.skip 8 * MAX_CPUS
pvos_cpu_count:	.quad 0
console_lock:	.quad 0
