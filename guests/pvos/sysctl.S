/* pvmm's system-control requests (Power.swift, docs/boot.md "Talking to pvmm"):
 * irq_entry sets pvos_power_button when the power-button vector arrives, so the shell
 * sees it without an exit; the panic report is what the exception handler hands pvmm. */
	.section .bss.sysctl, "aw", @nobits
	.balign 64
	.globl pvos_power_button, pvos_power_button_vector, pvos_panic_report
pvos_power_button:	.quad 0
pvos_power_button_vector:	.quad 0      /* 0: not routed */
pvos_panic_report:	.skip 32         /* vector, error code, rip, cr2 (PanicReport) */

	.section .text.sysctl, "ax"
	.globl pvos_power_button_addr, pvos_power_button_vector_addr, pvos_panic_report_addr
pvos_power_button_addr:
	lea pvos_power_button(%rip), %rax
	ret
pvos_power_button_vector_addr:
	lea pvos_power_button_vector(%rip), %rax
	ret
pvos_panic_report_addr:
	lea pvos_panic_report(%rip), %rax
	ret
