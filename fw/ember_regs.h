/* Generated from hw/regmap.py by `python -m sim regmap --c`. Do not edit. */
#ifndef EMBER_REGS_H
#define EMBER_REGS_H

#define EMBER_MMIO_BASE 0x80000000u
#define EMBER_ID_VALUE 0x454d4252u

#define EMBER_ID 0x000u
#define EMBER_VERSION 0x004u
#define EMBER_HW_PE 0x008u
#define EMBER_HW_MEM 0x00cu
#define EMBER_CTRL 0x010u
#define EMBER_STATUS 0x014u
#define EMBER_DOORBELL 0x018u
#define EMBER_MAILBOX 0x01cu
#define EMBER_FW_STATUS 0x020u
#define EMBER_IRQ_STATUS 0x024u
#define EMBER_IRQ_ENABLE 0x028u
#define EMBER_FW_IRQ 0x02cu
#define EMBER_ERR_CODE 0x030u
#define EMBER_ERR_ID 0x034u
#define EMBER_ERR_QUEUE 0x038u
#define EMBER_CMD0 0x040u
#define EMBER_CMD1 0x044u
#define EMBER_CMD2 0x048u
#define EMBER_CMD3 0x04cu
#define EMBER_CMD4 0x050u
#define EMBER_CMD5 0x054u
#define EMBER_CMD6 0x058u
#define EMBER_CMD7 0x05cu
#define EMBER_CMD_PUSH 0x060u
#define EMBER_SEM0 0x080u
#define EMBER_SEM1 0x084u
#define EMBER_SEM2 0x088u
#define EMBER_SEM3 0x08cu
#define EMBER_SEM4 0x090u
#define EMBER_SEM5 0x094u
#define EMBER_SEM6 0x098u
#define EMBER_SEM7 0x09cu
#define EMBER_SEM8 0x0a0u
#define EMBER_SEM9 0x0a4u
#define EMBER_SEM10 0x0a8u
#define EMBER_SEM11 0x0acu
#define EMBER_SEM12 0x0b0u
#define EMBER_SEM13 0x0b4u
#define EMBER_SEM14 0x0b8u
#define EMBER_SEM15 0x0bcu
#define EMBER_Q_COMPLETED0 0x0c0u
#define EMBER_Q_COMPLETED1 0x0c4u
#define EMBER_Q_COMPLETED2 0x0c8u
#define EMBER_Q_COMPLETED3 0x0ccu
#define EMBER_Q_PENDING0 0x0d0u
#define EMBER_Q_PENDING1 0x0d4u
#define EMBER_Q_PENDING2 0x0d8u
#define EMBER_Q_PENDING3 0x0dcu
#define EMBER_ARG0 0x180u
#define EMBER_ARG1 0x184u
#define EMBER_ARG2 0x188u
#define EMBER_ARG3 0x18cu
#define EMBER_ARG4 0x190u
#define EMBER_ARG5 0x194u
#define EMBER_ARG6 0x198u
#define EMBER_ARG7 0x19cu
#define EMBER_ARG8 0x1a0u
#define EMBER_ARG9 0x1a4u
#define EMBER_ARG10 0x1a8u
#define EMBER_ARG11 0x1acu
#define EMBER_ARG12 0x1b0u
#define EMBER_ARG13 0x1b4u
#define EMBER_ARG14 0x1b8u
#define EMBER_ARG15 0x1bcu
#define EMBER_PERF_CYCLES 0x100u
#define EMBER_PERF_CYCLES_HI 0x104u
#define EMBER_PERF_CLEAR 0x108u
#define EMBER_PERF_GEMM_STEPS 0x10cu
#define EMBER_PERF_BUSY0 0x110u
#define EMBER_PERF_BUSY1 0x114u
#define EMBER_PERF_BUSY2 0x118u
#define EMBER_PERF_BUSY3 0x11cu
#define EMBER_PERF_WAIT0 0x120u
#define EMBER_PERF_WAIT1 0x124u
#define EMBER_PERF_WAIT2 0x128u
#define EMBER_PERF_WAIT3 0x12cu
#define EMBER_PERF_DMA_RD_BEATS 0x130u
#define EMBER_PERF_DMA_WR_BEATS 0x134u
#define EMBER_PERF_GEMM_STALL 0x138u
#define EMBER_EMBAG_ERR_BAG 0x140u
#define EMBER_EMBAG_ERR_POS 0x144u
#define EMBER_WATCHDOG 0x150u
#define EMBER_DRAM_RD_BASE 0x154u
#define EMBER_DRAM_RD_LIMIT 0x158u
#define EMBER_DRAM_WR_BASE 0x15cu
#define EMBER_DRAM_WR_LIMIT 0x160u

#define EMBER_OP_LOAD 1u
#define EMBER_OP_STORE 2u
#define EMBER_OP_GEMM 3u
#define EMBER_OP_EMBAG 4u

#define EMBER_REG(off) (*(volatile unsigned int *)(EMBER_MMIO_BASE + (off)))

#endif
