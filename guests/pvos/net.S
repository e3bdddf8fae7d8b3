/* Byte-wide device-config reads for virtio-net (§4.2.2.2: 8-bit fields such as the
 * MAC take 8-bit accesses). Assembly so the compiler cannot merge or elide them. */
	.text
	.code64
	.section .text.pvos_read8, "ax"
	.globl pvos_read8
	.type pvos_read8, @function
pvos_read8:
	movzbl (%rdi), %eax
	ret
