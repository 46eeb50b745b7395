/*
 * PVH entry of the project's guests (examples/guests/pvh, unikernel):
 * QEMU (or Xen) jumps to pvh_start in 32-bit protected mode, paging off,
 * with %ebx pointing at the hvm_start_info. We identity-map the first
 * 4 GiB with 2 MiB pages (memory and the devices below 4 GiB: virtio-mmio,
 * the local APIC), enter long mode and call guest_main(start_info) on our
 * own stack.
 */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

	.section .note.pvh, "a", @note
	.p2align 2
	.long 2f - 1f		/* name size */
	.long 4f - 3f		/* descriptor size */
	.long XEN_ELFNOTE_PHYS32_ENTRY
1:	.asciz "Xen"
2:	.p2align 2
3:	.quad pvh_start		/* QEMU reads 8 bytes from an ELF64 note */
4:	.p2align 2

	.section .text.entry, "ax"
	.code32
	.globl pvh_start
pvh_start:
	cli
	cld
	movl %ebx, %esi			/* keep the start info */
	/* PML4[0] -> PDPT, PDPT[i] -> PD i (i < 4), and the four PDs map
	 * 2048 pages of 2 MiB: PD entry j = j * 2 MiB, present|rw|ps. */
	movl $pml4, %edi
	movl $pdpt, %eax
	orl $3, %eax
	movl %eax, (%edi)
	movl $pdpt, %edi
	movl $pd, %eax
	orl $3, %eax
	movl $4, %ecx
1:	movl %eax, (%edi)
	addl $4096, %eax
	addl $8, %edi
	loop 1b
	movl $pd, %edi
	movl $0x83, %eax
	xorl %edx, %edx
	movl $2048, %ecx
2:	movl %eax, (%edi)
	movl %edx, 4(%edi)
	addl $0x200000, %eax
	adcl $0, %edx
	addl $8, %edi
	loop 2b
	movl %cr4, %eax
	orl $0x20, %eax			/* PAE */
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx		/* EFER.LME */
	rdmsr
	orl $0x100, %eax
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax		/* PG | PE */
	movl %eax, %cr0
	lgdt gdt_desc
	ljmp $0x08, $long_mode

	.code64
long_mode:
	movl $0x10, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs
	leaq stack_top(%rip), %rsp
	movl %esi, %edi			/* guest_main(start_info) */
	call guest_main
3:	cli
	hlt
	jmp 3b

	.section .rodata
	.p2align 3
gdt:
	.quad 0
	.quad 0x00af9a000000ffff	/* 0x08: 64-bit code */
	.quad 0x00cf92000000ffff	/* 0x10: data */
gdt_desc:
	.word gdt_desc - gdt - 1
	.long gdt

	.section .bss
	.p2align 12
pml4:	.skip 4096
pdpt:	.skip 4096
pd:	.skip 4 * 4096
	.p2align 4
stack:	.skip 65536
stack_top:

	.section .note.GNU-stack, "", @progbits
