/* Ember control-core firmware: memory map and MMIO helpers.
 *
 * The addresses mirror hw/cpu.py (module docstring); tests/test_cpu.py checks that they agree.
 *
 *   0x0000_0000  IMEM   code, .rodata, .data load image (16 KB by default)
 *   0x1000_0000  DMEM   .data, .bss, stack (8 KB by default)
 *   0x8000_0000  MMIO window, 256 MB: the command processor's registers
 *   0xF000_0000  core-local registers: bus-error record, cycle counter
 *
 * Addresses with bit 31 set (MMIO, core-local) are never cached; IMEM and DMEM may be (the default
 * VexRiscv variant has a write-through data cache).
 *
 * The mailbox
 * -----------
 * The last 4 KB page of the MMIO window (0x8FFF_F000) is reserved for a host-visible mailbox used
 * by self-tests and for reporting; the command processor must not decode it for anything else.
 *   +0x000 DATA  (W) append one result word
 *   +0x004 TRAP  (W) append one trap-report word (the runtime writes three per trap)
 *   +0x008 DONE  (W) the program finished; the value is its exit code (0 = success)
 *   +0x00C PUTC  (W) one character of debug text (bits 7:0)
 *   +0x010 ARG n (R) argument word n from the host, at +0x010 + 4 n
 */
#ifndef EMBER_H
#define EMBER_H

#include <stddef.h>
#include <stdint.h>

#define EMBER_IMEM_BASE 0x00000000u
#define EMBER_DMEM_BASE 0x10000000u
#define EMBER_SYS_BASE 0xF0000000u
#define EMBER_MMIO_BASE 0x80000000u
#define EMBER_MMIO_SIZE 0x10000000u

/* Core-local registers (offsets from EMBER_SYS_BASE). */
#define EMBER_SYS_BERR_STATUS 0x00u /* bit 0 pending (write 1: clear), bit 1 overflow, 3:2 kind */
#define EMBER_SYS_BERR_ADDR 0x04u   /* byte address of the recorded failed access */
#define EMBER_SYS_CYCLE_LO 0x08u
#define EMBER_SYS_CYCLE_HI 0x0Cu
#define EMBER_BERR_PENDING 0x1u
#define EMBER_BERR_OVERFLOW 0x2u
#define EMBER_BERR_KIND(status) (((status) >> 2) & 0x3u)
#define EMBER_BERR_FETCH 0u
#define EMBER_BERR_LOAD 1u
#define EMBER_BERR_STORE 2u

/* Mailbox (offsets from EMBER_MBOX_BASE). */
#define EMBER_MBOX_BASE (EMBER_MMIO_BASE + 0x0FFFF000u)
#define EMBER_MBOX_DATA 0x000u
#define EMBER_MBOX_TRAP 0x004u
#define EMBER_MBOX_DONE 0x008u
#define EMBER_MBOX_PUTC 0x00Cu
#define EMBER_MBOX_ARG(n) (0x010u + 4u * (uint32_t)(n))

/* mcause values the runtime handles, and the exit codes of a fatal trap. */
#define EMBER_MCAUSE_INTERRUPT 0x80000000u
#define EMBER_MCAUSE_MEI (EMBER_MCAUSE_INTERRUPT | 11u) /* machine external interrupt */
#define EMBER_EXIT_TRAP 0xBAD00000u                     /* | 0x100 if interrupt | cause code */

/* Plain 32/16/8-bit accesses at an absolute address. */
static inline void ember_write32(uint32_t addr, uint32_t value) {
    *(volatile uint32_t *)(uintptr_t)addr = value;
}
static inline uint32_t ember_read32(uint32_t addr) {
    return *(volatile uint32_t *)(uintptr_t)addr;
}
static inline void ember_write16(uint32_t addr, uint16_t value) {
    *(volatile uint16_t *)(uintptr_t)addr = value;
}
static inline void ember_write8(uint32_t addr, uint8_t value) {
    *(volatile uint8_t *)(uintptr_t)addr = value;
}

/* MMIO window (offsets from EMBER_MMIO_BASE) and core-local registers. */
static inline void ember_mmio_write(uint32_t offset, uint32_t value) {
    ember_write32(EMBER_MMIO_BASE + offset, value);
}
static inline uint32_t ember_mmio_read(uint32_t offset) {
    return ember_read32(EMBER_MMIO_BASE + offset);
}
static inline uint32_t ember_sys_read(uint32_t offset) {
    return ember_read32(EMBER_SYS_BASE + offset);
}
static inline void ember_sys_write(uint32_t offset, uint32_t value) {
    ember_write32(EMBER_SYS_BASE + offset, value);
}

/* Mailbox. */
static inline void ember_mbox_put(uint32_t value) {
    ember_write32(EMBER_MBOX_BASE + EMBER_MBOX_DATA, value);
}
static inline uint32_t ember_mbox_arg(unsigned n) {
    return ember_read32(EMBER_MBOX_BASE + EMBER_MBOX_ARG(n));
}

/* Cycles since the core left reset (64-bit, read consistently). */
static inline uint64_t ember_cycles(void) {
    uint32_t hi, lo;
    do {
        hi = ember_sys_read(EMBER_SYS_CYCLE_HI);
        lo = ember_sys_read(EMBER_SYS_CYCLE_LO);
    } while (hi != ember_sys_read(EMBER_SYS_CYCLE_HI));
    return ((uint64_t)hi << 32) | lo;
}

/* CSR access by name or number, e.g. ember_csr_read(mcause), ember_csr_write(0xBC0, 1). */
#define EMBER_STR_(x) #x
#define EMBER_STR(x) EMBER_STR_(x)
#define ember_csr_read(csr)                                                                  \
    ({                                                                                       \
        uint32_t ember_v_;                                                                   \
        __asm__ volatile("csrr %0, " EMBER_STR(csr) : "=r"(ember_v_));                       \
        ember_v_;                                                                            \
    })
#define ember_csr_write(csr, value) __asm__ volatile("csrw " EMBER_STR(csr) ", %0" ::"r"(value))

/* Runtime (fw/runtime.c). */
void ember_exit(uint32_t code) __attribute__((noreturn));
void ember_putc(char c);
void ember_puts(const char *s);
/* Bus errors handled so far (incremented by the default trap handler). */
extern volatile uint32_t ember_berr_count;
/* Trap handler called by crt0's ember_trap_entry; returns the address to resume at. Weak in the
 * runtime: the default one reports every trap to the mailbox, resumes after a failed load or store
 * and stops with EMBER_EXIT_TRAP | ... on anything else. */
uint32_t ember_trap(uint32_t mcause, uint32_t mepc, uint32_t mtval);

#endif /* EMBER_H */
