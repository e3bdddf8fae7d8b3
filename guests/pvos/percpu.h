/* Per-CPU page layout shared by boot.S and smp.S; CPU in SMP.swift mirrors it. One 4 KiB
 * page per CPU so that no two CPUs write the same cache line from interrupt handlers. */
#define CPU_SELF     0x00    /* this page's address (irq_entry's sanity check) */
#define CPU_INDEX    0x08
#define CPU_APIC     0x10    /* x2APIC id (u32 compare in pvos_ap_entry64) */
#define CPU_TICKS    0x18    /* timer interrupts */
#define CPU_IRQS     0x20    /* other interrupts */
#define CPU_ONLINE   0x28
#define CPU_STACK    0x30    /* kernel stack top */
#define CPU_DEADLINE 0x38    /* TSC the one-shot timer is armed for; 0: none (irq_entry clears it) */
#define CPU_VIF      0x40    /* VIF page address; 0: cli/sti */
#define CPU_LOW      0x48    /* [low, high): all this CPU's stacks, to find it by RSP */
#define CPU_HIGH     0x50
#define CPU_REQUEST  0x60    /* mailbox: request != done means work is posted */
#define CPU_DONE     0x68
#define CPU_COMMAND  0x70
#define CPU_ARGUMENT 0x78
#define CPU_RESULT   0x80
#define CPU_GDTR     0x8E    /* limit; the base lands 8-aligned at 0x90 */
#define CPU_GDT      0xA0    /* null, code64, data, TSS (16 bytes) */
#define CPU_CLOCK    0xC0    /* pvclock_vcpu_time_info, 32 bytes */
#define CPU_TSS      0x100

#define IST_SIZE     0x4000
#define MAX_CPUS     64
#define VEC_TIMER    0x20
#define VEC_SPURIOUS 0xFF

/* 32-bit code with CR3 loaded: CR4 (PAE OSFXSR OSXMMEXCPT), EFER.LME, then CR0 (PG AM WP
 * NE ET MP PE); the next far jump enters long mode. The BSP's PVH path and the AP
 * trampoline share it. Clobbers eax, ecx, edx. */
#define ENABLE_LONG_MODE \
	mov $0x620, %eax; mov %eax, %cr4; \
	mov $0xC0000080, %ecx; rdmsr; or $0x100, %eax; wrmsr; \
	mov $0x80050033, %eax; mov %eax, %cr0
