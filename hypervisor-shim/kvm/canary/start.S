// Entry and exception vectors of the canary guest (EL1, MMU off, no FP: -mgeneral-regs-only).
// The VMM sets PC = _start, x0 = vCPU index, SP_EL1 = this vCPU's stack top, PSTATE = EL1h
// with DAIF masked (canary_protocol.h).
    .section .text.start, "ax"
    .global _start
_start:
    adr     x1, canary_vectors
    msr     vbar_el1, x1
    isb
    bl      canary_main
1:  wfi
    b       1b

// Saves the registers the AAPCS64 lets a C function clobber, calls \handler with x0 = \arg.
.macro SAVE_AND_CALL handler, arg
    sub     sp, sp, #176
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x29, [sp, #144]
    str     x30, [sp, #160]
    mov     x0, #\arg
    bl      \handler
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x29, [sp, #144]
    ldr     x30, [sp, #160]
    add     sp, sp, #176
    eret
.endm

// VBAR_EL1 needs 2 KiB alignment; each entry is 128 bytes (Arm ARM D1.10.2).
.macro VECTOR handler, arg
    .balign 128
    SAVE_AND_CALL \handler, \arg
.endm

    .section .text.vectors, "ax"
    .balign 2048
canary_vectors:
    VECTOR canary_unexpected, 0x000   // current EL, SP0: sync
    VECTOR canary_unexpected, 0x080   //                  IRQ
    VECTOR canary_unexpected, 0x100   //                  FIQ
    VECTOR canary_unexpected, 0x180   //                  SError
    VECTOR canary_unexpected, 0x200   // current EL, SPx: sync
    VECTOR canary_irq,        0x280   //                  IRQ: the PMU overflow interrupt
    VECTOR canary_unexpected, 0x300   //                  FIQ
    VECTOR canary_unexpected, 0x380   //                  SError
    VECTOR canary_unexpected, 0x400   // lower EL (never used)
    VECTOR canary_unexpected, 0x480
    VECTOR canary_unexpected, 0x500
    VECTOR canary_unexpected, 0x580
    VECTOR canary_unexpected, 0x600
    VECTOR canary_unexpected, 0x680
    VECTOR canary_unexpected, 0x700
    VECTOR canary_unexpected, 0x780
