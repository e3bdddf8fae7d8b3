/* State of pvmm's interrupt-latency probe (IRQBench.swift): irq_entry stamps the TSC
 * here when the probe's vector arrives. Accessors are calls so Swift re-reads them. */
	.section .bss.irqprobe, "aw", @nobits
	.balign 64
	.globl pvos_irq_probe_tsc, pvos_irq_probe_count, pvos_irq_probe_vector, pvos_irq_probe_mailbox
pvos_irq_probe_tsc:	.quad 0
pvos_irq_probe_count:	.quad 0
pvos_irq_probe_vector:	.quad 0      /* 0: no probe */
pvos_irq_probe_mailbox:	.quad 0      /* pvmm writes its TSC here before the irqfd */

	.section .text.irqprobe, "ax"
	.globl pvos_irq_probe_state
/* u64 pvos_irq_probe_state(u64 which): 0 tsc, 1 count, 3 mailbox value, 4 mailbox address */
pvos_irq_probe_state:
	cmp $4, %rdi
	je 1f
	lea pvos_irq_probe_tsc(%rip), %rax
	mov (%rax,%rdi,8), %rax
	ret
1:	lea pvos_irq_probe_mailbox(%rip), %rax
	ret

	.globl pvos_irq_probe_arm
/* void pvos_irq_probe_arm(u64 vector) */
pvos_irq_probe_arm:
	mov %rdi, pvos_irq_probe_vector(%rip)
	ret
