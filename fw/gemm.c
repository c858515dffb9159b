/* Ember GEMM firmware: runs the tiled GEMM plan of sim/host.py:plan_gemm on the command queues.
 *
 * The firmware issues exactly the command sequence that plan_gemm builds for the same job (same
 * block sizes, loop order, slots, semaphores, push order, words and command ids), so the host
 * driver (sim/host.py:HostDriver) and the firmware are interchangeable; sim/tb_top.py checks
 * this by recording every command that reaches the command processor.
 *
 * Job ABI (host -> firmware). sim/fwjob.py is the Python side of it (gemm_args, status codes).
 * ---------------------------------------------------------------------------------------------
 *   ARG0   job kind: 1 = GEMM (anything else: status BAD_JOB)
 *   ARG1   M          ARG2  K          ARG3  N          (each at least 1)
 *   ARG4   DRAM byte address of A, packed (sim/layout.py pack_a)
 *   ARG5   DRAM byte address of B, packed (pack_b)
 *   ARG6   DRAM byte address of the output-stage parameters (sim/host.py pack_params)
 *   ARG7   DRAM byte address of C, row-major M x N, INT32 (raw) or INT8 (requantised)
 *   ARG8   output stage, as GEMM argument word 3: raw [0] | zero_point [15:8] |
 *          act_min [23:16] | act_max [31:24]; bits 7:1 are ignored
 *   ARG9   id of the first command [15:0]; ids count up in push order (mod 2^16)
 *   ARG10  flags: bit 0 = write PERF_CLEAR at the start of the job
 *   ARG11  watchdog: cycles without any completion while the firmware waits before it gives up
 *          with status TIMEOUT; 0 = the default, 2^24
 *   ARG12..ARG15  reserved (0)
 * The host writes the ARGs and rings DOORBELL (only after FW_STATUS reads READY, see below).
 *
 * Result (firmware -> host): FW_STATUS = jobs << 8 | status, then FW_IRQ (IRQ_STATUS.FW).
 *   jobs    jobs finished since the firmware booted (failed ones included), 24 bits
 *   status  0x00 OK           all commands completed, no error held
 *           0x01 BAD_JOB      ARG0 is not a known job kind
 *           0x02 K_TOO_LARGE  K needs more than 65535 K chunks (sim/host.py:k_chunks)
 *           0x03 HW_ERROR     the command processor holds an error (ERR_CODE, ERR_ID,
 *                             ERR_QUEUE); the firmware stopped pushing. Recover with
 *                             CTRL.SOFT_RESET.
 *           0x04 BAD_ARGS     M, K or N is 0
 *           0x05 UNSUPPORTED  fewer than 8 scratchpad banks, R > bank depth, or a scratchpad
 *                             too large for 16-bit GEMM word addresses
 *           0x06 TIMEOUT      no completion for the watchdog's cycles (no error held)
 *           0x07 TRAP         the firmware trapped (a bug); it halts: pulse CTRL.CPU_RESET
 *           0x80 READY        written once at boot (jobs = 0): the host may ring DOORBELL
 *           0x81 BUSY         written when a job starts (jobs = the jobs finished before it)
 * The checks run in plan_gemm's order (BAD_ARGS, UNSUPPORTED banks, UNSUPPORTED R, K_TOO_LARGE)
 * and before anything is pushed or any semaphore is written.
 *
 * The plan (sim/host.py module docstring) in short
 * ------------------------------------------------
 * ns = banks / 4 slots per operand (2 with 8 banks: ping-pong), one bank each: A in banks
 * [0, ns), B in [ns, 2ns), C in [2ns, 3ns), parameters in [3ns, 4ns); job t's inner operand in
 * slot t % ns, outer block o's operand in slot o % ns, output block u's C in slot u % ns.
 * Blocks of mb x nb tiles; the operand with less DRAM traffic is the inner one (reloaded per
 * job). Semaphores 0 OPS_FREE = ns, 1 OPS_READY = 0, 2 C_FREE = ns, 3 C_READY = 0. Loads of a
 * job are, in plan_gemm's order, the
 * inner operand, the outer one if it changes, the parameters if B was loaded.
 * When ceil(K / L) steps exceed a bank, K is split into kc chunks (k_chunks): every output block
 * then takes kc jobs, one GEMM command each (the first adds the bias, the later ones accumulate
 * onto the partial sums in the C slot, the last requantises), blocks run j-fastest and every job
 * reloads both operands (2D loads: one row of the chunk's steps per tile) and the parameters.
 * Push order L(0), then per job t: G(t), L(t+1), and after the first job of output block u >= 1
 * the stores of block u-1; finally the stores of the last block.
 *
 * Pacing: like HostDriver, the firmware counts its pushes per queue and, before a push that would
 * leave more than QUEUE_DEPTH (8) commands queued or in flight, reads that queue's Q_COMPLETED,
 * and polls it only if the queue is really full. A job ends when every queue has completed every
 * command pushed (or an error is held, or the watchdog fires).
 *
 * Speed. The control core is the bottleneck: a load or GEMM command costs it nine MMIO writes
 * (two cycles each), and the data cache is write-through, so a store to DMEM costs a bus cycle
 * too. The plan stores a whole row of output tiles per command (multi-block stores), and the
 * stores of a block share their staging words: per store only CMD0, CMD2, CMD3 and CMD_PUSH
 * are written (CMD4/CMD5 when they change). Everything a job needs that does not depend on the
 * job is computed once, in plan(). Each kind of command writes every staging word it needs, so
 * nothing depends on what an earlier job or the host staged.
 *
 * DMEM use is constant: the command stream is generated on the fly, job by job.
 */

#include <stdint.h>

#include "ember.h"
#include "ember_regs.h"

#define MMIO(off) (*(volatile uint32_t *)(EMBER_MMIO_BASE + (off)))

enum { KIND_GEMM = 1 };
enum { FLAG_PERF_CLEAR = 1u };
enum {
    ST_OK = 0x00,
    ST_BAD_JOB = 0x01,
    ST_K_TOO_LARGE = 0x02,
    ST_HW_ERROR = 0x03,
    ST_BAD_ARGS = 0x04,
    ST_UNSUPPORTED = 0x05,
    ST_TIMEOUT = 0x06,
    ST_TRAP = 0x07,
    ST_READY = 0x80,
    ST_BUSY = 0x81,
};
#define DEFAULT_WATCHDOG (1u << 24)

enum { SEM_OPS_FREE = 0, SEM_OPS_READY = 1, SEM_C_FREE = 2, SEM_C_READY = 3, SEM_NONE = 31 };
enum { Q_LOAD = 0, Q_STORE = 1, Q_GEMM = 2, N_QUEUES = 3 };
#define QUEUE_DEPTH 8u
#define NO_SEMS (SEM_NONE | SEM_NONE << 5) /* header word 1 of a DMA command */

/* What block_sizes/plan_gemm decided for the job, and values derived from it once per job. */
typedef struct {
    uint32_t M, N, R, C, W, S;
    uint32_t kc;                 /* K chunks per output block (1: no split) */
    uint32_t kq, kr;             /* S = kq·kc + kr: chunk k starts at step k·kq + k·kr / kc */
    uint32_t mt, nt, mb, nb, m_blocks, n_blocks, jobs;
    uint32_t inner_a;            /* 1: A is the inner operand (reloaded every job) */
    uint32_t e;                  /* bytes per C element */
    uint32_t a_addr, b_addr, p_addr, c_addr, out;
    uint32_t bank;               /* scratchpad words per bank (depth) */
    uint32_t ns;                 /* slots per operand: banks / 4, a power of two */
    uint32_t m_last, n_last;     /* tiles of the last block row / column */
    uint32_t a_blk, b_blk;       /* DRAM bytes of an A block (mb row tiles), a B block */
    uint32_t p_blk;              /* DRAM bytes of a block's parameters (3 words per tile) */
    uint32_t c_blk_row, c_blk_col; /* DRAM offset between C blocks down and across */
    uint32_t row_stride;         /* N·e: DRAM bytes per row of C */
    uint32_t row_step;           /* R·N·e: DRAM bytes per row of tiles */
    uint32_t tile_step;          /* C·e: DRAM bytes between tiles across */
    uint32_t sram_step;          /* R·W: scratchpad bytes per result tile */
    uint32_t rows_last;          /* rows of the matrix's last row of tiles */
    uint32_t bytes_last;         /* row bytes of its last column of tiles */
} plan_t;

/* Queue bookkeeping and job state. */
static uint32_t pushed[N_QUEUES];    /* commands pushed into each queue (absolute count) */
static uint32_t done[N_QUEUES];      /* Q_COMPLETED as last read */
static uint32_t next_id;             /* id of the next command */
static uint32_t failed;              /* non-zero: a status that ends the job; stop pushing */
static uint32_t watchdog;
static uint32_t jobs_done;

/* The firmware's staging registers CMD0..CMD7, and CMD_PUSH right after them. */
#define CMD ((volatile uint32_t *)(EMBER_MMIO_BASE + EMBER_CMD0))
#define CMD_PUSH_WORD ((EMBER_CMD_PUSH - EMBER_CMD0) / 4)
_Static_assert(EMBER_CMD_PUSH - EMBER_CMD0 == 32, "CMD_PUSH follows CMD7");

/* ceil(a / b) for a >= 1, with one division (the core's divider takes 33 cycles). */
static inline uint32_t cdiv(uint32_t a, uint32_t b) { return (a - 1) / b + 1; }
static inline uint32_t min_u(uint32_t a, uint32_t b) { return a < b ? a : b; }
static inline uint32_t now(void) { return ember_sys_read(EMBER_SYS_CYCLE_LO); }
static inline uint32_t q_completed(unsigned q) { return MMIO(EMBER_Q_COMPLETED0 + 4u * q); }

/* Wait until at most `most` commands of queue q are queued or in flight (updates done[q]).
 * Gives up, setting `failed`, on a held error or after `watchdog` cycles without a completion.
 * Returns done[q]. */
static __attribute__((noinline)) uint32_t wait_inflight(unsigned q, uint32_t most) {
    const uint32_t n = pushed[q];
    uint32_t d = q_completed(q);
    uint32_t since = now();
    while (n - d > most) {
        const uint32_t c = q_completed(q);
        if (c != d) {
            d = c;
            since = now();
        } else if (MMIO(EMBER_ERR_CODE) != 0) {
            failed = ST_HW_ERROR;
            break;
        } else if (now() - since > watchdog) {
            failed = ST_TIMEOUT;
            break;
        }
    }
    done[q] = d;
    return d;
}

/* Room for one more command in queue q: re-read Q_COMPLETED only when the count says the queue
 * may be full, and wait only if it is. Returns 0 if the job must stop (`failed`). */
static inline int room(unsigned q) {
    if (__builtin_expect(pushed[q] - done[q] >= QUEUE_DEPTH, 0)) {
        done[q] = q_completed(q);
        if (pushed[q] - done[q] >= QUEUE_DEPTH) {
            wait_inflight(q, QUEUE_DEPTH - 1);
        }
    }
    return !failed;
}

static inline uint32_t header(uint32_t opcode, uint32_t wait, uint32_t signal, uint32_t id) {
    return opcode | wait << 6 | signal << 11 | id << 16;
}

/* Stage all eight words and push them into queue q (after room(q)). */
static inline void push8(unsigned q, uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3,
                         uint32_t w4, uint32_t w5, uint32_t w6, uint32_t w7) {
    volatile uint32_t *const cmd = CMD;
    cmd[0] = w0, cmd[1] = w1, cmd[2] = w2, cmd[3] = w3;
    cmd[4] = w4, cmd[5] = w5, cmd[6] = w6, cmd[7] = w7;
    cmd[CMD_PUSH_WORD] = 1;
    pushed[q]++;
    next_id = (next_id + 1) & 0xFFFFu;
}

/* One load of the plan: 1D, one row of `bytes` bytes. */
static inline void push_load(uint32_t wait, uint32_t signal, uint32_t dram, uint32_t sram,
                             uint32_t bytes) {
    if (room(Q_LOAD)) {
        push8(Q_LOAD, header(EMBER_OP_LOAD, wait, signal, next_id), NO_SEMS, dram, sram, 1,
              bytes, 0, 0);
    }
}

/* The stores of output block u = (i, j), as plan_gemm orders them: per row of tiles, one
 * multi-block store of its full tiles (word 2 = rows | (blocks - 1) << 16: the tiles follow one
 * another in the scratchpad, R words each, and sit C·e bytes apart in DRAM), then one store of
 * its last tile if that is clipped at N; a row of tiles clipped at M goes one tile per store.
 * The first store waits on C_READY, the last signals C_FREE. */
/* One store: the caller staged CMD1, CMD6 and CMD7 (the same for every store of a block);
 * CMD4 and CMD5 are written only when they change (*s4, *s5: what they hold). */
static inline void push_store(uint32_t wait, uint32_t signal, uint32_t dram, uint32_t sram,
                              uint32_t word2, uint32_t bytes, uint32_t *s4, uint32_t *s5) {
    volatile uint32_t *const cmd = CMD;
    if (!room(Q_STORE)) {
        return;
    }
    cmd[0] = header(EMBER_OP_STORE, wait, signal, next_id);
    cmd[2] = dram;
    cmd[3] = sram;
    if (word2 != *s4) {
        cmd[4] = *s4 = word2;
    }
    if (bytes != *s5) {
        cmd[5] = *s5 = bytes;
    }
    cmd[CMD_PUSH_WORD] = 1;
    pushed[Q_STORE]++;
    next_id = (next_id + 1) & 0xFFFFu;
}

static __attribute__((noinline)) void emit_stores(const plan_t *p, uint32_t u, uint32_t i,
                                                  uint32_t j) {
    const uint32_t last_i = i == p->m_blocks - 1, last_j = j == p->n_blocks - 1;
    const uint32_t m_here = last_i ? p->m_last : p->mb;
    const uint32_t n_here = last_j ? p->n_last : p->nb;
    const uint32_t bytes_full = p->tile_step;
    const uint32_t bytes_last = last_j ? p->bytes_last : bytes_full; /* the row's last tile */
    const uint32_t full = bytes_last == bytes_full ? n_here : n_here - 1;
    const uint32_t tile_step = p->tile_step, sram_step = p->sram_step;
    /* The previous piece, pushed once the next one is known (the last signals C_FREE); no
     * divisions and no memory traffic: the core's divider takes 33 cycles, DMEM is
     * write-through. */
    uint32_t dram = 0, sram = 0, word2 = 0, bytes = 0, have = 0, wait = SEM_C_READY;
    uint32_t s4 = 0, s5 = 0;          /* CMD4/CMD5 as staged (0: never a store's value) */
    volatile uint32_t *const cmd = CMD;
    cmd[1] = NO_SEMS;
    cmd[6] = p->row_stride;
    cmd[7] = p->W;
    uint32_t dram_row = p->c_addr + i * p->c_blk_row + j * p->c_blk_col;
    uint32_t sram_row = (2 * p->ns + (u & (p->ns - 1))) * p->bank * p->W;
#define PIECE(jl_, tiles_, rows_, bytes_)                                                      \
    do {                                                                                       \
        if (have) {                                                                            \
            push_store(wait, SEM_NONE, dram, sram, word2, bytes, &s4, &s5);                   \
            wait = SEM_NONE;                                                                   \
        }                                                                                      \
        dram = dram_row + (jl_) * tile_step;                                                   \
        sram = sram_row + (jl_) * sram_step;                                                   \
        word2 = (rows_) | ((tiles_) - 1) << 16;                                                \
        bytes = (bytes_);                                                                      \
        have = 1;                                                                              \
    } while (0)
    for (uint32_t il = 0; il < m_here && !failed; il++) {
        const uint32_t rows = last_i && il == m_here - 1 ? p->rows_last : p->R;
        if (rows < p->R) {
            for (uint32_t jl = 0; jl < full; jl++) {
                PIECE(jl, 1, rows, bytes_full);
            }
        } else if (full) {
            PIECE(0, full, rows, bytes_full);
        }
        if (full < n_here) {
            PIECE(n_here - 1, 1, rows, bytes_last);
        }
        dram_row += p->row_step;
        sram_row += n_here * sram_step;
    }
#undef PIECE
    push_store(wait, SEM_C_FREE, dram, sram, word2, bytes, &s4, &s5);
}

/* Job t of the plan: output block (i, j), K chunk k, in the plan's loop order. */
typedef struct {
    uint32_t t, i, j, k;
} job_t;

/* The slots of job q (plan_gemm step 4); the outer block's index is j when A is the inner
 * operand (jobs = [(i, j) for j ... for i ...]), i when B is; with K chunks both are inner. */
#define A_SLOT(p, q) ((!(p)->inner_a && (p)->kc == 1 ? (q)->i : (q)->t) & ((p)->ns - 1))
#define B_SLOT(p, q) (((p)->inner_a ? (q)->j : (q)->t) & ((p)->ns - 1))

/* First step of K chunk k: k·S // kc (kq, kr: S = kq·kc + kr; k·kr < kc² < 2^32). */
static inline uint32_t chunk_start(const plan_t *p, uint32_t k) {
    return k * p->kq + (p->kc == 1 ? 0 : k * p->kr / p->kc);
}

/* A 2D load of the plan (K chunks): `rows` rows of `bytes` bytes, `dstride` bytes apart in
 * DRAM and packed in the scratchpad. */
static inline void push_load2(uint32_t wait, uint32_t signal, uint32_t dram, uint32_t sram,
                              uint32_t rows, uint32_t bytes, uint32_t dstride) {
    if (room(Q_LOAD)) {
        push8(Q_LOAD, header(EMBER_OP_LOAD, wait, signal, next_id), NO_SEMS, dram, sram, rows,
              bytes, dstride, bytes);
    }
}

/* The loads of job q: the inner operand, the outer one if it changes (the first job of an outer
 * block), the parameters if B is loaded. The first waits on OPS_FREE, the last signals
 * OPS_READY. With K chunks: A and B (2D, the chunk's steps of each tile), then the parameters. */
static inline void emit_loads(const plan_t *p, const job_t *q) {
    const uint32_t i = q->i, j = q->j;
    const uint32_t W = p->W, bank = p->bank * W;  /* bank: scratchpad bytes per bank */
    const uint32_t last_i = i == p->m_blocks - 1, last_j = j == p->n_blocks - 1;
    const uint32_t SW = p->S * W;
    const uint32_t m_here = last_i ? p->m_last : p->mb;
    const uint32_t a_dram = p->a_addr + i * p->a_blk;
    const uint32_t a_sram = A_SLOT(p, q) * bank;
    const uint32_t b_slot = B_SLOT(p, q), n_here = last_j ? p->n_last : p->nb;
    const uint32_t b_dram = p->b_addr + j * p->b_blk, b_sram = (p->ns + b_slot) * bank;
    if (p->kc > 1) {
        const uint32_t k0 = chunk_start(p, q->k);
        const uint32_t bytes = (chunk_start(p, q->k + 1) - k0) * W;
        push_load2(SEM_OPS_FREE, SEM_NONE, a_dram + k0 * W, a_sram, m_here, bytes, SW);
        push_load2(SEM_NONE, SEM_NONE, b_dram + k0 * W, b_sram, n_here, bytes, SW);
    } else if (p->inner_a) {
        const uint32_t new_b = i == 0;            /* the first job of a column block */
        push_load(SEM_OPS_FREE, new_b ? SEM_NONE : SEM_OPS_READY, a_dram, a_sram, m_here * SW);
        if (!new_b) {
            return;
        }
        push_load(SEM_NONE, SEM_NONE, b_dram, b_sram, n_here * SW);
    } else {
        const uint32_t new_a = j == 0;            /* the first job of a row block */
        push_load(SEM_OPS_FREE, SEM_NONE, b_dram, b_sram, n_here * SW);
        if (new_a) {
            push_load(SEM_NONE, SEM_NONE, a_dram, a_sram, m_here * SW);
        }
    }
    push_load(SEM_NONE, SEM_OPS_READY, p->p_addr + j * p->p_blk, (3 * p->ns + b_slot) * bank,
              3 * n_here * W);
}

/* The GEMM command of job q, output block u: waits OPS_READY, signals OPS_FREE; the block's
 * first chunk waits C_FREE, its last signals C_READY. Chunks after the first accumulate (acc),
 * all but the last stay raw. */
static inline void emit_gemm(const plan_t *p, const job_t *q, uint32_t u) {
    const uint32_t bank = p->bank, b_slot = B_SLOT(p, q), ns = p->ns;
    const uint32_t m_here = q->i == p->m_blocks - 1 ? p->m_last : p->mb;
    const uint32_t n_here = q->j == p->n_blocks - 1 ? p->n_last : p->nb;
    const uint32_t first = q->k == 0, last = q->k == p->kc - 1;
    const uint32_t steps = chunk_start(p, q->k + 1) - chunk_start(p, q->k);
    if (room(Q_GEMM)) {
        push8(Q_GEMM, header(EMBER_OP_GEMM, SEM_OPS_READY, SEM_OPS_FREE, next_id),
              (first ? SEM_C_FREE : SEM_NONE) | (last ? SEM_C_READY : SEM_NONE) << 5,
              A_SLOT(p, q) * bank | ((ns + b_slot) * bank) << 16,
              (2 * ns + (u & (ns - 1))) * bank | ((3 * ns + b_slot) * bank) << 16,
              steps | m_here << 16 | n_here << 24,
              p->out | (last ? 0 : 1) | (first ? 0 : 2), 0, 0);
    }
}

/* The block after (i, j), in the plan's loop order (j fastest unless A is the inner operand). */
static inline void advance(const plan_t *p, uint32_t *i, uint32_t *j) {
    if (p->inner_a) {
        if (++*i == p->m_blocks) {
            *i = 0;
            ++*j;
        }
    } else if (++*j == p->n_blocks) {
        *j = 0;
        ++*i;
    }
}

/* The job after q. */
static inline void next_job(const plan_t *p, job_t *q) {
    q->t++;
    if (++q->k == p->kc) {
        q->k = 0;
        advance(p, &q->i, &q->j);
    }
}

/* Push every command of the plan: L(0), then for each job t: G(t), L(t+1), and the stores of
 * block u-1 after the first job of block u; finally the stores of the last block. Stops early
 * if `failed` is set. */
static __attribute__((noinline)) void run_jobs(const plan_t *p) {
    const uint32_t T = p->jobs;
    job_t g = {0, 0, 0, 0}, l = {0, 0, 0, 0};   /* the next GEMM's job, the next loads' job */
    uint32_t si = 0, sj = 0, u = 0;             /* the next block to store */
    emit_loads(p, &l);
    next_job(p, &l);
    for (uint32_t t = 0; t < T && !failed; t++) {
        const uint32_t first = g.k == 0;
        emit_gemm(p, &g, u + (first && t > 0));
        next_job(p, &g);
        if (t + 1 < T) {
            emit_loads(p, &l);
            next_job(p, &l);
        }
        if (first && t > 0) {
            emit_stores(p, u, si, sj);
            u++;
            advance(p, &si, &sj);
        }
    }
    if (!failed) {
        emit_stores(p, u, si, sj);
    }
}

/* sim/host.py:block_sizes and the loop-order choice of plan_gemm, and the derived values;
 * returns a status. */
static __attribute__((noinline, minsize)) uint32_t plan(plan_t *p, uint32_t M, uint32_t K,
                                                         uint32_t N, uint32_t raw) {
    const uint32_t hw_pe = MMIO(EMBER_HW_PE), hw_mem = MMIO(EMBER_HW_MEM);
    const uint32_t R = hw_pe & 0xFF, C = (hw_pe >> 8) & 0xFF, L = hw_pe >> 16;
    const uint32_t W = hw_mem & 0xFF, log2_banks = (hw_mem >> 8) & 0xFF;
    const uint32_t depth = 1u << ((hw_mem >> 16) & 0xFF);
    if (M == 0 || K == 0 || N == 0) {
        return ST_BAD_ARGS;
    }
    if (log2_banks < 3) {
        return ST_UNSUPPORTED;
    }
    const uint32_t mt = cdiv(M, R), S = cdiv(K, L), nt = cdiv(N, C);
    /* k_chunks: one chunk while S fits a bank, else chunks of at most depth / 4 steps. */
    const uint32_t kc = S <= depth ? 1 : cdiv(S, depth / 4 ? depth / 4 : 1);
    const uint32_t Sc = cdiv(S, kc);
    const uint32_t ns = 1u << (log2_banks - 2);   /* slots per operand: banks / 4 */
    if (R > depth || 4 * ns * depth > 0x10000u) {
        return ST_UNSUPPORTED;
    }
    if (kc > 0xFFFFu) {
        return ST_K_TOO_LARGE;
    }
    uint32_t mb = min_u(min_u(mt, depth / Sc), 255);
    uint32_t nb = min_u(min_u(min_u(nt, depth / Sc), depth / 3), 255);
    while (mb * nb * R > depth) {
        if (mb > nb) {
            mb--;
        } else {
            nb--;
        }
    }
    mb = cdiv(mt, cdiv(mt, mb));               /* balance: equal blocks, edge ones smaller */
    nb = cdiv(nt, cdiv(nt, nb));
    const uint32_t m_blocks = cdiv(mt, mb), n_blocks = cdiv(nt, nb);
    /* DRAM words of each loop order (A inner on a tie); 64-bit, as Python's are exact. */
    const uint64_t a_inner = (uint64_t)n_blocks * mt * S + (uint64_t)nt * (S + 3);
    const uint64_t b_inner = (uint64_t)m_blocks * nt * (S + 3) + (uint64_t)mt * S;
    const uint32_t e = raw ? 4 : 1;
    p->M = M, p->N = N, p->R = R, p->C = C, p->W = W, p->S = S;
    p->mt = mt, p->nt = nt, p->mb = mb, p->nb = nb;
    p->m_blocks = m_blocks, p->n_blocks = n_blocks, p->jobs = m_blocks * n_blocks * kc;
    p->kc = kc, p->kq = S / kc, p->kr = S % kc;
    p->inner_a = kc == 1 && a_inner <= b_inner;
    p->e = e;
    p->bank = depth;
    p->ns = ns;
    p->m_last = mt - (m_blocks - 1) * mb;
    p->n_last = nt - (n_blocks - 1) * nb;
    p->a_blk = mb * S * W;
    p->b_blk = nb * S * W;
    p->p_blk = 3 * nb * W;
    p->row_stride = N * e;
    p->row_step = R * N * e;
    p->c_blk_row = mb * R * N * e;
    p->c_blk_col = nb * C * e;
    p->tile_step = C * e;
    p->sram_step = R * W;
    p->rows_last = M - (mt - 1) * R;
    p->bytes_last = (N - (nt - 1) * C) * e;
    return ST_OK;
}

static __attribute__((noinline)) uint32_t run_gemm(void) {
    plan_t p;
    const uint32_t out = MMIO(EMBER_ARG8) & 0xFFFFFF01u;
    const uint32_t status = plan(&p, MMIO(EMBER_ARG1), MMIO(EMBER_ARG2), MMIO(EMBER_ARG3),
                                 out & 1);
    if (status != ST_OK) {
        return status;
    }
    p.a_addr = MMIO(EMBER_ARG4);
    p.b_addr = MMIO(EMBER_ARG5);
    p.p_addr = MMIO(EMBER_ARG6);
    p.c_addr = MMIO(EMBER_ARG7);
    p.out = out;
    next_id = MMIO(EMBER_ARG9) & 0xFFFFu;
    const uint32_t flags = MMIO(EMBER_ARG10);
    watchdog = MMIO(EMBER_ARG11);
    if (watchdog == 0) {
        watchdog = DEFAULT_WATCHDOG;
    }
    failed = ST_OK;

    /* Queue bookkeeping: pushed = queued + completed (read in that order, so that a completion
     * between the two reads can only make the count larger, never let a queue overflow). */
    for (unsigned q = 0; q < N_QUEUES; q++) {
        const uint32_t pending = MMIO(EMBER_Q_PENDING0 + 4u * q);
        done[q] = q_completed(q);
        pushed[q] = done[q] + pending;
    }
    if (flags & FLAG_PERF_CLEAR) {
        MMIO(EMBER_PERF_CLEAR) = 1;
    }
    MMIO(EMBER_SEM0 + 4u * SEM_OPS_FREE) = p.ns;
    MMIO(EMBER_SEM0 + 4u * SEM_OPS_READY) = 0;
    MMIO(EMBER_SEM0 + 4u * SEM_C_FREE) = p.ns;
    MMIO(EMBER_SEM0 + 4u * SEM_C_READY) = 0;

    run_jobs(&p);

    /* The end: every command completed, or an error held, or the watchdog. */
    for (unsigned q = 0; q < N_QUEUES && !failed; q++) {
        wait_inflight(q, 0);
    }
    if (failed) {
        return failed;
    }
    return MMIO(EMBER_ERR_CODE) != 0 ? ST_HW_ERROR : ST_OK;
}

static void report(uint32_t status) {
    MMIO(EMBER_FW_STATUS) = jobs_done << 8 | status;
    MMIO(EMBER_FW_IRQ) = 1;
}

/* Replaces the runtime's handler, which reports to the testbench mailbox (absent on the chip):
 * any trap, bus errors included, is a firmware bug here. Report TRAP and halt. */
__attribute__((minsize)) uint32_t ember_trap(uint32_t mcause, uint32_t mepc, uint32_t mtval) {
    (void)mcause, (void)mepc, (void)mtval;
    __asm__ volatile("csrci mstatus, 0x8");
    jobs_done++;
    report(ST_TRAP);
    for (;;) {
    }
}

__attribute__((minsize)) int main(void) {
    uint32_t seen = MMIO(EMBER_DOORBELL);
    jobs_done = 0;
    MMIO(EMBER_FW_STATUS) = ST_READY;
    for (;;) {
        while (MMIO(EMBER_DOORBELL) == seen) {
        }
        seen++;
        MMIO(EMBER_FW_STATUS) = jobs_done << 8 | ST_BUSY;
        const uint32_t status = MMIO(EMBER_ARG0) == KIND_GEMM ? run_gemm() : ST_BAD_JOB;
        jobs_done++;
        report(status);
    }
}
