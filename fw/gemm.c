/* Ember GEMM firmware: tiles an M×K×N INT8 GEMM onto the DMA and GEMM engine queues.
 *
 * Job (host → firmware, in the ARG registers; the host rings DOORBELL to start it):
 *   ARG0  job kind: 1 = GEMM
 *   ARG1  M          ARG2  K          ARG3  N
 *   ARG4  DRAM address of A, packed in panels (sim/layout.py pack_a: one bus word per step)
 *   ARG5  DRAM address of B, packed (pack_b)
 *   ARG6  DRAM address of the output parameters: 3 bus words per column tile
 *         (bias, multiplier, shift; hw/gemm.py)
 *   ARG7  DRAM address of C, row-major M×N, INT8 (requantised) or INT32 (raw)
 *   ARG8  raw [0] | zero_point [15:8] | act_min [23:16] | act_max [31:24]
 * Result (firmware → host): FW_STATUS = (jobs finished << 8) | status, status 0 = ok,
 * 1 = bad job kind, 2 = K too large for a scratchpad bank, 3 = hardware error (see ERR_*);
 * then FW_IRQ.
 *
 * Schedule. Blocks of mb row tiles × nb column tiles with the whole K:
 *   bank 0/1  A block (mb·S words), ping-pong per block;
 *   bank 2/3  B block (nb·S words) and its parameters (3·nb words), ping-pong per column block;
 *   bank 4/5  results (mb·nb·R words, one row per word), ping-pong per block.
 * Semaphores (hw/cmdproc.py), per ping-pong buffer b:
 *   load A(t)    waits A_FREE[b],                 signals A_FULL[b]
 *   compute(t)   waits A_FULL[b] and C_FREE[b],   signals A_FREE[b] and C_FULL[b]
 *   store C(t)   the block's first store waits C_FULL[b], its last signals C_FREE[b]
 * so the load of block t+1 and the stores of block t-1 overlap the compute of block t. A column
 * block's B (and parameters) is loaded before its first A block; the DMA completes loads in
 * order, so A_FULL of that block also means B is in place. Before B of column block jb+1 may
 * overwrite the buffer of column block jb-1, the firmware waits for the computes that use it.
 */

#include <stdint.h>

#include "ember_regs.h"

#define REG(name) EMBER_REG(EMBER_##name)

enum { SEM_A_FREE = 0, SEM_A_FULL = 2, SEM_C_FREE = 4, SEM_C_FULL = 6, SEM_NONE = 31 };
enum { Q_LOAD = 0, Q_STORE = 1, Q_GEMM = 2 };
enum { ST_OK = 0, ST_BAD_JOB = 1, ST_K_TOO_LARGE = 2, ST_HW_ERROR = 3 };

static uint32_t next_id;

static uint32_t q_pending(int q) { return EMBER_REG(EMBER_Q_PENDING0 + 4u * q); }
static uint32_t q_completed(int q) { return EMBER_REG(EMBER_Q_COMPLETED0 + 4u * q); }
static uint32_t cdiv(uint32_t a, uint32_t b) { return (a + b - 1) / b; }
static uint32_t min_u(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* Push one command; waits for room in its queue first, so a queue never overflows. */
static void push(int q, uint32_t opcode, uint32_t wait, uint32_t signal, uint32_t wait2,
                 uint32_t signal2, const uint32_t args[6]) {
    while (q_pending(q) >= 8 && REG(ERR_CODE) == 0) {
    }
    uint32_t id = next_id++ & 0xFFFFu;
    REG(CMD0) = opcode | wait << 6 | signal << 11 | id << 16;
    REG(CMD1) = wait2 | signal2 << 5;
    volatile uint32_t *cmd = &EMBER_REG(EMBER_CMD2);
    for (int i = 0; i < 6; i++)
        cmd[i] = args[i];
    REG(CMD_PUSH) = 1;
}

static void dma(int q, uint32_t dram, uint32_t sram, uint32_t rows, uint32_t row_bytes,
                uint32_t dram_stride, uint32_t sram_stride, uint32_t wait, uint32_t signal) {
    const uint32_t args[6] = {dram, sram, rows, row_bytes, dram_stride, sram_stride};
    push(q, q == Q_LOAD ? EMBER_OP_LOAD : EMBER_OP_STORE, wait, signal, SEM_NONE, SEM_NONE, args);
}

static uint32_t run_gemm(void) {
    const uint32_t hw_pe = REG(HW_PE), hw_mem = REG(HW_MEM);
    const uint32_t R = hw_pe & 0xFF, C = (hw_pe >> 8) & 0xFF, L = hw_pe >> 16;
    const uint32_t W = hw_mem & 0xFF, depth = 1u << ((hw_mem >> 16) & 0xFF);
    const uint32_t M = REG(ARG1), K = REG(ARG2), N = REG(ARG3);
    const uint32_t a_dram = REG(ARG4), b_dram = REG(ARG5), p_dram = REG(ARG6);
    const uint32_t c_dram = REG(ARG7), out = REG(ARG8);
    const uint32_t eb = (out & 1) ? 4 : 1;                 /* bytes per result element */
    const uint32_t S = K ? cdiv(K, L) : 1;                 /* array steps per tile */
    const uint32_t mt = cdiv(M, R), nt = cdiv(N, C);
    if (S + 3 > depth)
        return ST_K_TOO_LARGE;

    /* Block sizes: as many tiles as the banks hold. */
    const uint32_t nb = min_u(nt, depth / (S + 3));
    const uint32_t mb = min_u(mt, min_u(depth / S, depth / (nb * R)));
    const uint32_t bank = depth * W;                        /* bytes per bank */

    for (int b = 0; b < 2; b++) {
        EMBER_REG(EMBER_SEM0 + 4u * (SEM_A_FREE + b)) = 1;
        EMBER_REG(EMBER_SEM0 + 4u * (SEM_A_FULL + b)) = 0;
        EMBER_REG(EMBER_SEM0 + 4u * (SEM_C_FREE + b)) = 1;
        EMBER_REG(EMBER_SEM0 + 4u * (SEM_C_FULL + b)) = 0;
    }
    const uint32_t gemm_done0 = q_completed(Q_GEMM);
    uint32_t computes = 0, t = 0;
    uint32_t computes_before[2] = {0, 0};                  /* per B buffer: computes to wait for */

    for (uint32_t jb = 0, cb_idx = 0; jb < nt; jb += nb, cb_idx++) {
        const uint32_t nbk = min_u(nb, nt - jb);
        const uint32_t bb = cb_idx & 1;
        /* B buffer bb was last used by column block cb_idx-2: wait for its computes. */
        while (q_completed(Q_GEMM) - gemm_done0 < computes_before[bb] && REG(ERR_CODE) == 0) {
        }
        const uint32_t b_sram = (2 + bb) * bank;
        dma(Q_LOAD, b_dram + jb * S * W, b_sram, 1, nbk * S * W, 0, 0, SEM_NONE, SEM_NONE);
        dma(Q_LOAD, p_dram + jb * 3 * W, b_sram + nbk * S * W, 1, nbk * 3 * W, 0, 0,
            SEM_NONE, SEM_NONE);

        for (uint32_t ib = 0; ib < mt; ib += mb, t++) {
            const uint32_t mbk = min_u(mb, mt - ib);
            const uint32_t ab = t & 1, cbuf = t & 1;
            const uint32_t a_word = ab * depth, c_word = (4 + cbuf) * depth;
            const uint32_t b_word = (2 + bb) * depth;
            dma(Q_LOAD, a_dram + ib * S * W, a_word * W, 1, mbk * S * W, 0, 0,
                SEM_A_FREE + ab, SEM_A_FULL + ab);
            const uint32_t gargs[6] = {
                a_word | b_word << 16,
                c_word | (b_word + nbk * S) << 16,
                S | mbk << 16 | nbk << 24,
                out, 0, 0,
            };
            push(Q_GEMM, EMBER_OP_GEMM, SEM_A_FULL + ab, SEM_A_FREE + ab, SEM_C_FREE + cbuf,
                 SEM_C_FULL + cbuf, gargs);
            computes++;
            /* Stores: one 2D store per output tile, clipped at the matrix edges. */
            const uint32_t tiles = mbk * nbk;
            for (uint32_t k = 0; k < tiles; k++) {
                const uint32_t i = ib + k / nbk, j = jb + k % nbk;
                const uint32_t rows = min_u(R, M - i * R), cols = min_u(C, N - j * C);
                dma(Q_STORE, c_dram + (i * R * N + j * C) * eb, (c_word + k * R) * W, rows,
                    cols * eb, N * eb, W, k == 0 ? SEM_C_FULL + cbuf : SEM_NONE,
                    k == tiles - 1 ? SEM_C_FREE + cbuf : SEM_NONE);
            }
        }
        computes_before[bb] = computes;
    }
    /* Wait for everything to drain (or for an error). */
    while ((q_pending(Q_LOAD) | q_pending(Q_STORE) | q_pending(Q_GEMM)) && REG(ERR_CODE) == 0) {
    }
    return REG(ERR_CODE) ? ST_HW_ERROR : ST_OK;
}

int main(void) {
    uint32_t seen = REG(DOORBELL), jobs = 0;
    REG(FW_STATUS) = 0;
    for (;;) {
        while (REG(DOORBELL) == seen) {
        }
        seen++;
        uint32_t status = REG(ARG0) == 1 ? run_gemm() : ST_BAD_JOB;
        jobs++;
        REG(FW_STATUS) = jobs << 8 | status;
        REG(FW_IRQ) = 1;
    }
}
