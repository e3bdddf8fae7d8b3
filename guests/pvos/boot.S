/* pvos boot: ELF notes, the two entries, GDT/TSS/IDT, trap stubs, exception fixups.
 * Everything here is platform-neutral; PVM specifics live in Platform.swift/platform.S. */

#include "percpu.h"

#define SEL_CODE 0x08
#define SEL_DATA 0x10
#define SEL_TSS  0x18
#define PTE_FLAGS 0x07          /* P RW U/S: PVM needs U/S=1 at every level */
#define PDE_2M    0x87          /* P RW U/S PS */
#define PDE_UC    0x18          /* PWT PCD for the MMIO GiB (3..4 GiB) */
#define STACK_SIZE 0x10000

/* ---- ELF notes: one PT_NOTE segment, 4-byte aligned ---- */
	.section .note.pvos, "a", @note
	.balign 4
	.long 4, 8, 18                 /* "Xen", XEN_ELFNOTE_PHYS32_ENTRY, u64 desc */
	.asciz "Xen"
	.quad pvos_entry32
	.balign 4
	.long 5, 8, 1                  /* "PVMM", entry64, u64 desc */
	.asciz "PVMM"
	.balign 4
	.quad pvos_entry64

/* Four consecutive 2 MiB PDEs from eax at edi (no stack here; unrolled because each
 * instruction is emulated until the VIF is registered). */
.macro FILL4_PDE
	mov %eax, (%edi)
	add $0x200000, %eax
	mov %eax, 8(%edi)
	add $0x200000, %eax
	mov %eax, 16(%edi)
	add $0x200000, %eax
	mov %eax, 24(%edi)
	add $0x200000, %eax
	add $32, %edi
.endm

/* ---- PVH entry: 32-bit protected mode, paging off, EBX = hvm_start_info ---- */
	.section .text.boot, "ax"
	.code32
	.globl pvos_entry32
pvos_entry32:
	rdtsc                          /* boot time: kept in esi:ebp until long mode */
	mov %eax, %ebp
	mov %edx, %esi
	cli
	cld
	lgdt gdt_ptr                   /* 32-bit lgdt reads limit + low 4 bytes of base */
	mov $SEL_DATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	/* Identity map 0..4 GiB with 2 MiB pages in the kernel's own tables. They are
	 * NOBITS, so the loader zero-filled them (ELF p_memsz semantics); zeroing them
	 * again would cost ~3 ms here, where every instruction is still emulated. */
	movl $(pvos_boot_pdpt + PTE_FLAGS), pvos_boot_pml4
	mov $pvos_boot_pdpt, %edi
	mov $(pvos_boot_pd + PTE_FLAGS), %eax
	mov $4, %ecx
1:	mov %eax, (%edi)
	add $8, %edi
	add $0x1000, %eax
	loop 1b
	mov $pvos_boot_pd, %edi
	mov $PDE_2M, %eax
	mov $(1536 / 4), %ecx
2:	FILL4_PDE
	loop 2b
	or $PDE_UC, %eax
	mov $(512 / 4), %ecx
3:	FILL4_PDE
	loop 3b
	mov $pvos_boot_pml4, %eax
	mov %eax, %cr3
	ENABLE_LONG_MODE
	ljmp $SEL_CODE, $1f
	.code64
1:	mov %ebx, %r15d                /* upper halves are undefined after the switch */
	mov %ebp, %r14d
	shl $32, %rsi
	or %rsi, %r14
	jmp common64

/* ---- pvmm entry: long mode, VMM identity map, RBX = RSI = start info ---- */
	.globl pvos_entry64
pvos_entry64:
	rdtsc
	shl $32, %rdx
	or %rdx, %rax
	mov %rax, %r14
	cld
	mov %rbx, %r15
	/* fall through */

/* Common 64-bit path. r15 = start info, r14 = boot TSC. Segment registers already
 * hold SEL_DATA-compatible flat descriptors; only TR and IDTR change. */
common64:
	/* TSS: IST1 #DF, IST2 #PF, IST3 NMI/#MC, IST4 other exceptions, IST5 interrupts. */
	lea kernel_stack_top(%rip), %rsp
	lea pvos_tss(%rip), %rdi
	lea ist_stacks(%rip), %rsi
	lea pvos_cpu0(%rip), %rdx
	call pvos_fill_tss
	lea gdt(%rip), %rcx
	mov %rax, SEL_TSS(%rcx)
	mov %rdx, SEL_TSS+8(%rcx)
	lgdt gdt_ptr(%rip)
	mov $SEL_TSS, %eax
	ltr %ax
	/* IDT: gate v -> trap_stubs + 16*v, interrupt gate, DPL 0, IST5; then the
	 * exception vectors get their own IST. The stubs never cross a 64 KiB boundary
	 * (linker.ld checks), so gate v's low quad is gate 0's + 16*v. Few
	 * instructions: before the VIF exists each one is emulated (~1 us). */
	lea trap_stubs(%rip), %rax
	movzwl %ax, %edx
	or $(SEL_CODE << 16), %edx
	mov %rax, %r9
	shr $16, %r9
	shl $48, %r9
	or %r9, %rdx
	movabs $0x00008E0500000000, %r9
	or %r9, %rdx
	shr $32, %rax
	lea pvos_idt(%rip), %rdi
	mov $256, %ecx
5:	mov %rdx, (%rdi)
	mov %rax, 8(%rdi)
	add $16, %rdx
	add $16, %rdi
	loop 5b
	lea pvos_idt+4(%rip), %rdi
	lea ist_of_vector(%rip), %rsi
	mov $32, %ecx
6:	movsb                          /* IST byte of gate v */
	add $15, %rdi
	loop 6b
	lidt pvos_idt_ptr(%rip)
	/* Zero .bss, then run Swift on the kernel stack. */
	lea __bss_start(%rip), %rdi
	lea __bss_end(%rip), %rcx
	sub %rdi, %rcx
	xor %eax, %eax
	rep stosb
	mov %r14, pvos_boot_tsc(%rip)
	mov %r15, %rdi
	call pvos_main
7:	hlt
	jmp 7b

/* ---- Trap stubs: 256 x 16 bytes; each pushes (error, vector) uniformly ---- */
	.balign 16
	.globl trap_stubs, trap_stubs_end
trap_stubs:
	.set vec, 0
	.rept 256
	.balign 16
	.if vec == 8 || (vec >= 10 && vec <= 14) || vec == 17 || vec == 21 || vec == 29 || vec == 30
	.else
	push $0
	.endif
	push $vec
	jmp trap_common
	.set vec, vec + 1
	.endr
trap_stubs_end:

/* Stack: vector, error, rip, cs, rflags, rsp, ss. */
trap_common:
	cmpq $32, (%rsp)
	jae irq_entry
	push %rax
	push %rcx
	push %rdx
	mov 40(%rsp), %rax             /* faulting RIP */
	lea __fixup_start(%rip), %rcx
	lea __fixup_end(%rip), %rdx
1:	cmp %rdx, %rcx
	jae 3f
	cmp (%rcx), %rax
	je 2f
	add $16, %rcx
	jmp 1b
2:	mov 8(%rcx), %rax              /* expected fault: resume at the fixup address */
	mov %rax, 40(%rsp)
	pop %rdx
	pop %rcx
	pop %rax
	add $16, %rsp
	iretq
3:	pop %rdx
	pop %rcx
	pop %rax
	push %rax
	push %rbx
	push %rcx
	push %rdx
	push %rsi
	push %rdi
	push %rbp
	push %r8
	push %r9
	push %r10
	push %r11
	push %r12
	push %r13
	push %r14
	push %r15
	mov %rsp, %rdi                 /* frame: r15..rax, vector, error, rip, cs, rflags, rsp, ss */
	and $-16, %rsp
	call pvos_exception            /* never returns */
4:	hlt
	jmp 4b

/* Interrupts: count per CPU (the IST5 slot above the frame holds the per-CPU page),
 * EOI once the x2APIC is on. No Swift here, so no SSE state to preserve. */
irq_entry:
	push %rax
	push %rcx
	push %rdx
	lea pvos_idle_window(%rip), %rax   /* interrupted between VIF.if = 1 and hlt: */
	cmp %rax, 40(%rsp)                 /* resume after the hlt (pvos_vif_halt) */
	jb 7f
	lea pvos_idle_done(%rip), %rax
	cmp %rax, 40(%rsp)
	jae 7f
	mov %rax, 40(%rsp)
7:	mov 80(%rsp), %rcx
	mov 24(%rsp), %eax
	cmp $VEC_SPURIOUS, %eax
	je 3f                          /* spurious: no EOI */
	cmp %rcx, CPU_SELF(%rcx)       /* sanity: a per-CPU page points at itself */
	jne 2f
	cmp $VEC_TIMER, %eax
	jne 1f
	incq CPU_TICKS(%rcx)
	movq $0, CPU_DEADLINE(%rcx)    /* one-shot: nothing armed any more */
	jmp 2f
1:	incq CPU_IRQS(%rcx)
	cmp pvos_irq_probe_vector(%rip), %rax  /* pvmm's latency probe: stamp the TSC */
	jne 8f
	rdtsc
	shl $32, %rdx
	or %rdx, %rax
	mov %rax, pvos_irq_probe_tsc(%rip)
	lock incq pvos_irq_probe_count(%rip)
	jmp 2f
8:	cmp pvos_power_button_vector(%rip), %rax  /* pvmm's power button (Power.swift) */
	jne 5f
	movq $1, pvos_power_button(%rip)
	jmp 2f
5:	mov 24(%rsp), %eax
	sub $0x30, %eax                /* an IOAPIC input with a virtio device on it? */
	cmp $48, %eax
	jae 2f
	lea pvos_virtio_irq_base(%rip), %rdx
	mov (%rdx,%rax,8), %rdx
	test %rdx, %rdx
	jz 2f
	mov $1, %ecx                   /* pvmm: the irqfd edge needs no ACK; skip both exits */
	cmpb $0, pvos_virtio_lazy_ack(%rip)
	jne 6f
	mov 0x60(%rdx), %ecx           /* InterruptStatus (an exit) */
	test %ecx, %ecx
	jz 2f
	mov %ecx, 0x64(%rdx)           /* InterruptACK: QEMU's line is a level */
6:	lea pvos_virtio_irq_status(%rip), %rdx
	lock or %ecx, (%rdx,%rax,4)
2:	cmpb $0, pvos_apic_on(%rip)
	je 3f
	mov $0x80b, %ecx
	xor %eax, %eax
	xor %edx, %edx
	wrmsr
3:	pop %rdx
	pop %rcx
	pop %rax
	add $16, %rsp
	iretq

	.section .rodata.boot, "a"
ist_of_vector:                  /* IST index for vectors 0..31 */
	.byte 4, 4, 3, 4, 4, 4, 4, 4, 1, 4, 4, 4, 4, 4, 2, 4
	.byte 4, 4, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4

	.section .data.boot, "aw"
	.balign 16
gdt:
	.quad 0
	.quad 0x00af9b000000ffff        /* 0x08 code64 */
	.quad 0x00cf93000000ffff        /* 0x10 data (flat, also valid in 32-bit mode) */
	.quad 0, 0                      /* 0x18 TSS, filled at boot */
gdt_end:
	.balign 8
	.word 0
gdt_ptr:
	.word gdt_end - gdt - 1
	.quad gdt
	.word 0, 0, 0
	.globl pvos_idt_ptr
pvos_idt_ptr:
	.word 256 * 16 - 1
	.quad pvos_idt

	.section .bss.boot, "aw", @nobits
	.balign 8
	.globl pvos_boot_tsc, pvos_apic_on
pvos_boot_tsc:	.quad 0
pvos_apic_on:	.quad 0                 /* set once the x2APIC takes EOIs */

/* Not zeroed by the kernel: stacks and tables written in full before use, and the
 * boot page tables, which rely on the loader's zero fill of NOBITS memory. */
	.section .noinit, "aw", @nobits
	.balign 4096
pvos_boot_pml4:	.skip 4096
pvos_boot_pdpt:	.skip 4096
pvos_boot_pd:	.skip 4 * 4096
pvos_idt:	.skip 4096
	.globl pvos_vif_page
pvos_vif_page:	.skip 4096
pvos_tss:	.skip 4096
	.globl ist_stacks, kernel_stack_top
ist_stacks:	.skip 5 * IST_SIZE
kernel_stack:	.skip STACK_SIZE
kernel_stack_top:
