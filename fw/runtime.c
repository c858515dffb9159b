/* Runtime of the Ember control-core firmware: exit, debug output, default trap handler, and the
 * memory functions the compiler may call in a freestanding build. */
#include "ember.h"

volatile uint32_t ember_berr_count;

void ember_exit(uint32_t code) {
    __asm__ volatile("csrci mstatus, 0x8"); /* no interrupt after the end */
    ember_write32(EMBER_MBOX_BASE + EMBER_MBOX_DONE, code);
    for (;;) {
    }
}

void ember_putc(char c) {
    ember_write32(EMBER_MBOX_BASE + EMBER_MBOX_PUTC, (uint8_t)c);
}

void ember_puts(const char *s) {
    while (*s) {
        ember_putc(*s++);
    }
}

static void report(uint32_t a, uint32_t b, uint32_t c) {
    ember_write32(EMBER_MBOX_BASE + EMBER_MBOX_TRAP, a);
    ember_write32(EMBER_MBOX_BASE + EMBER_MBOX_TRAP, b);
    ember_write32(EMBER_MBOX_BASE + EMBER_MBOX_TRAP, c);
}

static uint32_t fatal_code(uint32_t mcause) {
    return EMBER_EXIT_TRAP | ((mcause & EMBER_MCAUSE_INTERRUPT) ? 0x100u : 0u) | (mcause & 0xFFu);
}

/* Reports each trap as three TRAP words:
 *   bus error (external line 0):  mcause, BERR_STATUS, BERR_ADDR
 *   anything else:                mcause, mepc, mtval
 * Resumes after a failed load or store (the load returned 0, the store was dropped); stops on a
 * failed fetch and on every other trap. */
__attribute__((weak)) uint32_t ember_trap(uint32_t mcause, uint32_t mepc, uint32_t mtval) {
    if (mcause == EMBER_MCAUSE_MEI) {
        uint32_t status = ember_sys_read(EMBER_SYS_BERR_STATUS);
        if (status & EMBER_BERR_PENDING) {
            uint32_t addr = ember_sys_read(EMBER_SYS_BERR_ADDR);
            ember_sys_write(EMBER_SYS_BERR_STATUS, EMBER_BERR_PENDING);
            report(mcause, status, addr);
            ember_berr_count = ember_berr_count + 1;
            if (EMBER_BERR_KIND(status) != EMBER_BERR_FETCH) {
                return mepc;
            }
            ember_exit(fatal_code(mcause));
        }
    }
    report(mcause, mepc, mtval);
    ember_exit(fatal_code(mcause));
}

void *memset(void *dest, int c, size_t n) {
    volatile uint8_t *d = dest; /* volatile: keep the compiler from calling memset here */
    while (n--) {
        *d++ = (uint8_t)c;
    }
    return dest;
}

void *memcpy(void *restrict dest, const void *restrict src, size_t n) {
    volatile uint8_t *d = dest;
    const uint8_t *s = src;
    while (n--) {
        *d++ = *s++;
    }
    return dest;
}

void *memmove(void *dest, const void *src, size_t n) {
    volatile uint8_t *d = dest;
    const uint8_t *s = src;
    if (d < s) {
        while (n--) {
            *d++ = *s++;
        }
    } else {
        d += n;
        s += n;
        while (n--) {
            *--d = *--s;
        }
    }
    return dest;
}

int memcmp(const void *a, const void *b, size_t n) {
    const uint8_t *x = a, *y = b;
    for (; n; n--, x++, y++) {
        if (*x != *y) {
            return *x - *y;
        }
    }
    return 0;
}
