/* Start-up code of the Ember control core (VexRiscv, RV32I[M], machine mode only).
 *
 * _start (the boot address, IMEM_BASE = 0):
 *   1. sp = __stack_top (top of DMEM), mtvec = ember_trap_entry (direct mode);
 *   2. copy .data from its load image in IMEM to DMEM, clear .bss;
 *   3. enable the bus-error interrupt (external line 0: CSR 0xBC0 mask, mie.MEIE, mstatus.MIE);
 *   4. call main(), then ember_exit(main's return value), which reports it and never returns.
 *
 * ember_trap_entry saves the caller-saved registers, calls the C handler
 *   uint32_t ember_trap(uint32_t mcause, uint32_t mepc, uint32_t mtval)
 * (fw/runtime.c; weak, a program may replace it), writes its result to mepc and returns (mret).
 */

    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    la      sp, __stack_top
    la      t0, ember_trap_entry
    csrw    mtvec, t0

    la      a0, __data_load
    la      a1, __data_start
    la      a2, __data_end
1:  bgeu    a1, a2, 2f
    lw      t0, 0(a0)
    sw      t0, 0(a1)
    addi    a0, a0, 4
    addi    a1, a1, 4
    j       1b
2:
    la      a1, __bss_start
    la      a2, __bss_end
3:  bgeu    a1, a2, 4f
    sw      zero, 0(a1)
    addi    a1, a1, 4
    j       3b
4:
    li      t0, 1
    csrw    0xBC0, t0               /* externalInterruptArray mask: line 0, bus errors */
    li      t0, 0x800
    csrs    mie, t0                 /* MEIE */
    csrsi   mstatus, 0x8            /* MIE */

    li      a0, 0
    li      a1, 0
    call    main
    call    ember_exit
5:  j       5b
    .size _start, . - _start

    .section .text.ember_trap_entry, "ax", @progbits
    .globl ember_trap_entry
    .type ember_trap_entry, @function
    .balign 4
ember_trap_entry:
    addi    sp, sp, -64
    sw      ra,  0(sp)
    sw      t0,  4(sp)
    sw      t1,  8(sp)
    sw      t2, 12(sp)
    sw      a0, 16(sp)
    sw      a1, 20(sp)
    sw      a2, 24(sp)
    sw      a3, 28(sp)
    sw      a4, 32(sp)
    sw      a5, 36(sp)
    sw      a6, 40(sp)
    sw      a7, 44(sp)
    sw      t3, 48(sp)
    sw      t4, 52(sp)
    sw      t5, 56(sp)
    sw      t6, 60(sp)
    csrr    a0, mcause
    csrr    a1, mepc
    csrr    a2, mtval
    call    ember_trap
    csrw    mepc, a0
    lw      ra,  0(sp)
    lw      t0,  4(sp)
    lw      t1,  8(sp)
    lw      t2, 12(sp)
    lw      a0, 16(sp)
    lw      a1, 20(sp)
    lw      a2, 24(sp)
    lw      a3, 28(sp)
    lw      a4, 32(sp)
    lw      a5, 36(sp)
    lw      a6, 40(sp)
    lw      a7, 44(sp)
    lw      t3, 48(sp)
    lw      t4, 52(sp)
    lw      t5, 56(sp)
    lw      t6, 60(sp)
    addi    sp, sp, 64
    mret
    .size ember_trap_entry, . - ember_trap_entry
