/* Bus-error test: failed loads and stores are reported by the runtime's trap handler and the
 * program continues; a failed instruction fetch is fatal.
 *
 * Outputs (mailbox DATA), for each failed data access in turn: the value a load returned (0) where
 * there is one, then 1 if the bus-error interrupt was taken within a bounded wait (else 0):
 *   1. load  from 0x3000_0000 (unmapped)
 *   2. store to   __imem_end (first byte past IMEM)
 *   3. load  from MMIO offset BUSERROR_MMIO_ERR, which the test bench answers with err
 *   4. store to   the same MMIO offset
 *   5. load  from core-local offset 0x10 (not a register)
 * then 0x600D before the last step:
 *   6. call 0x4000_0000 (unmapped): a fatal fetch error; the runtime stops with
 *      EMBER_EXIT_TRAP | ... and never returns here.
 * The TRAP words (three per trap) are checked by sim/tb_cpu.py.
 */
#include "ember.h"

#ifndef BUSERROR_MMIO_ERR
#define BUSERROR_MMIO_ERR 0x0FFFFFFCu /* last word of the mailbox page */
#endif

extern char __imem_end[];

static uint32_t seen_after(uint32_t before) {
    for (int i = 0; i < 1000; i++) {
        if (ember_berr_count != before) {
            return 1;
        }
    }
    return 0;
}

int main(void) {
    uint32_t before;

    before = ember_berr_count;
    ember_mbox_put(ember_read32(0x30000000u));
    ember_mbox_put(seen_after(before));

    before = ember_berr_count;
    ember_write32((uint32_t)(uintptr_t)__imem_end, 0x12345678u);
    ember_mbox_put(seen_after(before));

    before = ember_berr_count;
    ember_mbox_put(ember_mmio_read(BUSERROR_MMIO_ERR));
    ember_mbox_put(seen_after(before));

    before = ember_berr_count;
    ember_mmio_write(BUSERROR_MMIO_ERR, 0xCAFEu);
    ember_mbox_put(seen_after(before));

    before = ember_berr_count;
    ember_mbox_put(ember_sys_read(0x10u));
    ember_mbox_put(seen_after(before));

    ember_mbox_put(0x600Du);
    ((void (*)(void))0x40000000u)();
    return 1;
}
