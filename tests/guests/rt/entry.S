/* PVH entry, long-mode switch, AP trampoline, interrupt stubs.
 *
 * The boot CPU arrives at _start32 in 32-bit protected mode, paging off,
 * %ebx = physical address of struct hvm_start_info. It maps 0-4 GiB (1 GiB
 * pages when the CPU has them, else 2 MiB pages), enters long mode and calls
 * rt_main_bsp() (rt.c), which maps the rest of RAM and drops to CPL3.
 * Application processors come through the real-mode trampoline copied to
 * RT_TRAMPOLINE, then rt_ap_entry32, and share the same page tables. */
#include "rt.h"

/* XEN_ELFNOTE_PHYS32_ENTRY. The descriptor is 8 bytes, as in a 64-bit
 * vmlinux; the section stays 4-aligned so the descriptor sits right after
 * the 4-byte name whichever alignment a loader assumes. */
	.section .note.Xen, "a", @note
	.balign 4
	.long 2f - 1f
	.long 4f - 3f
	.long 18
1:	.asciz "Xen"
2:	.balign 4
3:	.quad _start32
4:	.balign 4

	.section .note.GNU-stack, "", @progbits

	.text
	.code32
	.globl _start32
_start32:
	cli
	cld
	movl %ebx, rt_start_info_pa
	movl $rt_kstack_top, %esp

	/* 1 GiB pages? CPUID 0x80000001 EDX bit 26 */
	movl $0x80000000, %eax
	cpuid
	cmpl $0x80000001, %eax
	jb 1f
	movl $0x80000001, %eax
	cpuid
	btl $26, %edx
	jnc 1f
	movl $1, rt_have_1g
1:
	/* clear the PML4 and the PDPT (adjacent pages) */
	movl $rt_pml4, %edi
	xorl %eax, %eax
	movl $2048, %ecx
	rep stosl
	movl $rt_pdpt + 7, rt_pml4      /* present, writable, user */

	cmpl $0, rt_have_1g
	je 2f
	movl $0x87, %eax                /* 4 x 1 GiB pages: P W U PS */
	movl $rt_pdpt, %edi
	movl $4, %ecx
3:	movl %eax, (%edi)
	addl $0x40000000, %eax
	addl $8, %edi
	loop 3b
	jmp 5f

2:	movl $rt_pd + 7, %eax           /* PDPT[0..3] -> 4 page directories */
	movl $rt_pdpt, %edi
	movl $4, %ecx
3:	movl %eax, (%edi)
	addl $4096, %eax
	addl $8, %edi
	loop 3b
	movl $0x87, %eax                /* 2048 x 2 MiB pages */
	movl $rt_pd, %edi
	movl $2048, %ecx
4:	movl %eax, (%edi)
	movl $0, 4(%edi)
	addl $0x200000, %eax
	addl $8, %edi
	loop 4b

5:	lgdt rt_gdt_ptr
	movl $RT_SEL_KDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	xorl %esi, %esi                 /* boot CPU */
	jmp long_mode

/* APs: from the trampoline, 32-bit protected mode, our GDT loaded. */
	.globl rt_ap_entry32
rt_ap_entry32:
	movl $RT_SEL_KDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movl $1, %esi                   /* application processor */

long_mode:
	movl %cr4, %eax
	orl $0x20, %eax                 /* PAE */
	movl %eax, %cr4
	movl $rt_pml4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx          /* EFER.LME */
	rdmsr
	orl $0x100, %eax
	wrmsr
	movl %cr0, %eax
	andl $0x9fffffff, %eax          /* caches on (CD, NW off) */
	orl $0x80000001, %eax           /* PG, PE */
	movl %eax, %cr0
	ljmp $RT_SEL_KCODE, $long64

	.code64
long64:
	movl $RT_SEL_KDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	xorl %eax, %eax
	movw %ax, %fs
	movw %ax, %gs
	testl %esi, %esi
	jnz 1f
	movq $rt_kstack_top, %rsp
	call rt_main_bsp
	jmp rt_halt

1:	movl $1, %eax                   /* AP: take a stack */
	lock xaddl %eax, rt_ap_next
	cmpl $RT_MAX_CPUS, %eax
	jae rt_halt
	incl %eax
	imull $RT_AP_STACK, %eax
	movq $rt_ap_stacks, %rsp
	addq %rax, %rsp
	call rt_main_ap

	.globl rt_halt
rt_halt:
	cli
	hlt
	jmp rt_halt

/* rt_enter_user(rip, rsp, rflags): iretq to CPL3. */
	.globl rt_enter_user
rt_enter_user:
	pushq $RT_SEL_UDATA | 3
	pushq %rsi
	pushq %rdx
	pushq $RT_SEL_UCODE | 3
	pushq %rdi
	iretq

/* Exception stubs, 16 bytes apart: push a dummy error code where the CPU
 * pushes none, then the vector. */
	.balign 16
	.globl rt_exc_stubs
rt_exc_stubs:
	.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.balign 16
	.if (\v == 8) || (\v >= 10 && \v <= 14) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
	.else
	pushq $0
	.endif
	pushq $\v
	jmp exc_common
	.endr

exc_common:
	pushq %rax
	pushq %rbx
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %rbp
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %rsp, %rdi
	call rt_exception
	jmp rt_halt

/* Interrupt stubs for vectors RT_IRQ_FIRST.., 16 bytes apart. */
	.balign 16
	.globl rt_irq_stubs
rt_irq_stubs:
	.rept RT_IRQ_COUNT
	.balign 16
	pushq $RT_IRQ_FIRST + (. - rt_irq_stubs) / 16
	jmp irq_common
	.endr

irq_common:
	pushq %rax
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	movq 72(%rsp), %rdi             /* vector */
	subq $8, %rsp                   /* 16-byte alignment for the call */
	call rt_irq
	addq $8, %rsp
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rdi
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rax
	addq $8, %rsp
	iretq

	.globl rt_spurious_stub
rt_spurious_stub:
	iretq

/* AP trampoline: copied to RT_TRAMPOLINE, entered in real mode at
 * RT_TRAMPOLINE>>4:0 by the start-up IPI. */
	.code16
	.globl rt_tramp_start, rt_tramp_end
rt_tramp_start:
	cli
	movw %cs, %ax
	movw %ax, %ds
	lgdtl tramp_gdt_ptr - rt_tramp_start
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl $RT_SEL_KCODE32, $rt_ap_entry32
	.balign 4
tramp_gdt_ptr:
	.word rt_gdt_end - rt_gdt - 1
	.long rt_gdt
rt_tramp_end:
	.code64

	.data
	.balign 16
	.globl rt_gdt
rt_gdt:
	.quad 0
	.quad 0x00af9a000000ffff        /* 0x08 kernel code, 64-bit */
	.quad 0x00cf92000000ffff        /* 0x10 kernel data */
	.quad 0x00cff2000000ffff        /* 0x18 user data */
	.quad 0x00affa000000ffff        /* 0x20 user code, 64-bit */
	.quad 0, 0                      /* 0x28 TSS, filled in by rt.c */
	.quad 0x00cf9a000000ffff        /* 0x38 kernel code, 32-bit */
rt_gdt_end:
	.balign 8
	.word 0, 0, 0
rt_gdt_ptr:                             /* 6 bytes in 32-bit mode, 10 in 64-bit */
	.word rt_gdt_end - rt_gdt - 1
	.quad rt_gdt

	.globl rt_ap_next
rt_ap_next:
	.long 0

	.bss
	.balign 4096
	.globl rt_pml4, rt_pdpt, rt_pd
rt_pml4:
	.skip 4096
rt_pdpt:
	.skip 4096
rt_pd:
	.skip 4096 * RT_PD_PAGES

	.balign 16
	.skip 16384
	.globl rt_kstack_top
rt_kstack_top:

	.balign 16
	.globl rt_ap_stacks
rt_ap_stacks:
	.skip RT_AP_STACK * RT_MAX_CPUS

	.balign 4
	.globl rt_start_info_pa, rt_have_1g
rt_start_info_pa:
	.long 0
rt_have_1g:
	.long 0
