/* Assembler macros shared by the .S files. */

/* A function Swift calls: own section (--gc-sections drops unused ones), global. */
.macro FUNC name
	.section .text.\name, "ax"
	.globl \name
	.type \name, @function
\name:
.endm

/* `name()` returns the address of `sym`: how Swift reaches assembly-defined data (a
 * call, so Swift never caches the value across one). */
.macro ADDRESS_OF name, sym
FUNC \name
	lea \sym(%rip), %rax
	ret
.endm
