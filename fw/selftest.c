/* Self-test of the control core: exercises the ALU, M (or compiler-rt without it), loads and
 * stores of every width, .rodata in IMEM, .data/.bss set-up and MMIO, and reports results to the
 * mailbox. sim/tb_cpu.py recomputes every result in Python.
 *
 * Inputs:  mailbox ARG0 = n for fib(n), ARG1 = seed of the LCG.
 * Outputs (mailbox DATA, in order):
 *   fib(n); cycles spent in fib (from CYCLE_LO/HI);
 *   C = A·B (SELFTEST_M×SELFTEST_N int32, row-major) for LCG-filled A, B in [-1000, 1000];
 *   for each C[i][j]: C / d and C % d with an LCG divisor d in [-48, 48] \ {0} (C semantics);
 *   0xFFFFFFFF / (seed | 1) and 0xFFFFFFFF % (seed | 1) (unsigned);
 *   low and high words of a signed 32×32 product, of an unsigned one, of signed × unsigned;
 *   an INT8 dot product of 64 LCG bytes;
 *   CRC-32 of a .rodata string (zlib's);
 *   the sum of a .data array, then one of its words after an increment;
 *   the number of non-zero words in a .bss array (0: crt0 cleared it);
 *   two words assembled from byte and halfword stores;
 *   the pending external interrupt lines 1-31 (CSR 0xFC0), which the test bench drives on irq.
 * MMIO side effects: a byte store to MMIO offset 0x101 (0xAB) and a halfword store to 0x106
 * (0xBEEF), which the test bench checks land with the right byte enables.
 */
#include "ember.h"

#define SELFTEST_M 5
#define SELFTEST_K 6
#define SELFTEST_N 7
#define DOT_LEN 64

static uint32_t lcg_state;

static uint32_t lcg(void) {
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return lcg_state;
}

static int32_t lcg_range(int32_t lo, int32_t hi) { /* uniform-ish in [lo, hi] */
    return lo + (int32_t)(lcg() % (uint32_t)(hi - lo + 1));
}

__attribute__((noinline)) static uint32_t fib(uint32_t n) {
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

__attribute__((noinline)) static uint32_t crc32(const char *s) {
    uint32_t crc = 0xFFFFFFFFu;
    for (; *s; s++) {
        crc ^= (uint8_t)*s;
        for (int b = 0; b < 8; b++) {
            crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1u));
        }
    }
    return ~crc;
}

/* volatile and the empty asm below keep the compiler from evaluating these at compile time. */
static const char message[] = "Ember control core self-test";
static volatile uint32_t data_words[4] = {0x01234567u, 0x89ABCDEFu, 0xDEADBEEFu, 42u};
static volatile uint32_t bss_words[32];
static int32_t A[SELFTEST_M][SELFTEST_K], B[SELFTEST_K][SELFTEST_N], C[SELFTEST_M][SELFTEST_N];
static int8_t va[DOT_LEN], vb[DOT_LEN];
static volatile union {
    uint32_t w[2];
    uint16_t h[4];
    uint8_t b[8];
} lanes;

static void put64(uint64_t v) {
    ember_mbox_put((uint32_t)v);
    ember_mbox_put((uint32_t)(v >> 32));
}

int main(void) {
    uint32_t n = ember_mbox_arg(0);
    uint32_t seed = ember_mbox_arg(1);

    uint64_t t0 = ember_cycles();
    uint32_t f = fib(n);
    uint64_t t1 = ember_cycles();
    ember_mbox_put(f);
    ember_mbox_put((uint32_t)(t1 - t0));

    lcg_state = seed;
    for (int i = 0; i < SELFTEST_M; i++)
        for (int k = 0; k < SELFTEST_K; k++)
            A[i][k] = lcg_range(-1000, 1000);
    for (int k = 0; k < SELFTEST_K; k++)
        for (int j = 0; j < SELFTEST_N; j++)
            B[k][j] = lcg_range(-1000, 1000);
    for (int i = 0; i < SELFTEST_M; i++)
        for (int j = 0; j < SELFTEST_N; j++) {
            int32_t acc = 0;
            for (int k = 0; k < SELFTEST_K; k++)
                acc += A[i][k] * B[k][j];
            C[i][j] = acc;
        }
    for (int i = 0; i < SELFTEST_M; i++)
        for (int j = 0; j < SELFTEST_N; j++)
            ember_mbox_put((uint32_t)C[i][j]);
    for (int i = 0; i < SELFTEST_M; i++)
        for (int j = 0; j < SELFTEST_N; j++) {
            int32_t d = lcg_range(-48, 47);
            if (d >= 0)
                d += 1; /* [-48, -1] ∪ [1, 48] */
            ember_mbox_put((uint32_t)(C[i][j] / d));
            ember_mbox_put((uint32_t)(C[i][j] % d));
        }
    ember_mbox_put(0xFFFFFFFFu / (seed | 1u));
    ember_mbox_put(0xFFFFFFFFu % (seed | 1u));

    int32_t x = (int32_t)lcg(), y = (int32_t)lcg();
    put64((uint64_t)((int64_t)x * (int64_t)y));
    put64((uint64_t)(uint32_t)x * (uint32_t)y);
    put64((uint64_t)((int64_t)x * (int64_t)(uint32_t)y));

    for (int i = 0; i < DOT_LEN; i++) {
        va[i] = (int8_t)lcg();
        vb[i] = (int8_t)(lcg() >> 8);
    }
    int32_t dot = 0;
    for (int i = 0; i < DOT_LEN; i++)
        dot += va[i] * vb[i];
    ember_mbox_put((uint32_t)dot);

    const char *text = message;
    __asm__ volatile("" : "+r"(text)); /* an opaque pointer: the loads happen, from .rodata */
    ember_mbox_put(crc32(text));

    ember_mbox_put(data_words[0] + data_words[1] + data_words[2] + data_words[3]);
    data_words[3] += 1;
    ember_mbox_put(data_words[3]);

    uint32_t nonzero = 0;
    for (int i = 0; i < 32; i++)
        nonzero += bss_words[i] != 0;
    ember_mbox_put(nonzero);

    lanes.w[0] = 0;
    lanes.w[1] = 0;
    lanes.b[0] = 0x11;
    lanes.b[3] = 0x44;
    lanes.h[1] |= 0x0033;
    lanes.b[1] = 0x22;
    lanes.h[2] = 0x6655;
    lanes.b[7] = 0x88;
    lanes.b[6] = (uint8_t)(lanes.b[5] + 0x11);
    ember_mbox_put(lanes.w[0]);
    ember_mbox_put(lanes.w[1]);

    /* The irq input reaches the core: lines 1-31 unmasked, interrupts off, read the pending ones
     * (CSR 0xFC0 = externalInterruptArray & mask). */
    __asm__ volatile("csrci mstatus, 0x8");
    ember_csr_write(0xBC0, 0xFFFFFFFEu);
    ember_mbox_put(ember_csr_read(0xFC0));
    ember_csr_write(0xBC0, 1u);
    __asm__ volatile("csrsi mstatus, 0x8");

    ember_write8(EMBER_MMIO_BASE + 0x101u, 0xAB);
    ember_write16(EMBER_MMIO_BASE + 0x106u, 0xBEEF);
    return 0;
}
