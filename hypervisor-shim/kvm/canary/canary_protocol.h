/* The contract between the canary guest (canary.c, bare-metal aarch64) and the VMM that runs it
 * (hypervisor-shim/kvm). Plain C so that both sides include the same file.
 *
 * Everything travels through MMIO exits, never through guest RAM: the canary runs with its MMU
 * off (all its accesses are Device or Non-cacheable), so a VMM reading guest RAM through its own
 * cacheable mapping could see stale lines. An MMIO access exits to the VMM with the value in the
 * exit itself, which needs no cache maintenance on either side.
 *
 *   guest reads  CANARY_MMIO_BASE + CANARY_PARAMS  + offsetof(struct canary_params, f)  -> f
 *   guest writes CANARY_MMIO_BASE + CANARY_REPORT  + offsetof(struct canary_report, f)  <- f
 *   guest writes CANARY_MMIO_BASE + CANARY_CONSOLE                                      <- 1 byte
 *   guest writes CANARY_MMIO_BASE + CANARY_DONE                                         <- status
 * Every params/report access is a 64-bit access to an 8-byte aligned offset. After DONE the VMM
 * stops running the vCPU. Registers at entry (set by the VMM): PC = CANARY_RAM_BASE, x0 = vCPU
 * index, SP_EL1 = top of that vCPU's stack, PSTATE = EL1h with DAIF masked. */
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_CANARY_CANARY_PROTOCOL_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_CANARY_CANARY_PROTOCOL_H_

#include <stdint.h>

/* Guest physical memory map (the same as QEMU's virt machine where it matters). */
#define CANARY_GICD_BASE 0x08000000ull  /* GICv3 distributor, 64 KiB */
#define CANARY_GICR_BASE 0x080A0000ull  /* GICv3 redistributors, 128 KiB per vCPU */
#define CANARY_GICR_STRIDE 0x20000ull
#define CANARY_MMIO_BASE 0x3F000000ull  /* the report device below, 64 KiB */
#define CANARY_MMIO_SIZE 0x10000ull
#define CANARY_RAM_BASE 0x40000000ull   /* the image is loaded here and entered at its start */
#define CANARY_STACK_BYTES 0x4000ull    /* per vCPU, at the top of RAM */

/* Offsets inside the report device. */
#define CANARY_PARAMS 0x0000u
#define CANARY_REPORT 0x1000u
#define CANARY_CONSOLE 0x3000u
#define CANARY_DONE 0x3008u

#define CANARY_MAGIC 0x46504D5543414E31ull /* "FPMUCAN1" */
#define CANARY_VERSION 1u

/* Counter indices as in the PMU bitmaps: 0..30 event counters, 31 the cycle counter. */
#define CANARY_MAX_COUNTERS 32u
#define CANARY_CYCLE_COUNTER 31u
/* PMU overflow interrupt (PPI) the VMM configures with KVM_ARM_VCPU_PMU_V3_IRQ. */
#define CANARY_PMU_INTID 23u
/* Event SW_INCR: counts writes of its bit to PMSWINC_EL0, the one event a guest makes exact. */
#define CANARY_EVENT_SW_INCR 0x00u
#define CANARY_EVENT_CPU_CYCLES 0x11u

/* What the VMM asks for; read by every vCPU. */
struct canary_params {
  uint64_t magic;          /* CANARY_MAGIC */
  uint64_t version;        /* CANARY_VERSION */
  uint64_t counters;       /* event counters to program: h. The guest also reports PMCR.N. */
  uint64_t use_cycle;      /* also program the cycle counter (counter 31) */
  uint64_t wraps;          /* overflows to produce per sampling counter */
  uint64_t timeout_us;     /* guest-time budget for the workload (generic timer) */
  uint64_t grace_us;       /* time to wait for in-flight interrupts after the workload */
  uint64_t event[CANARY_MAX_COUNTERS];  /* per counter: event number (31: ignored, CPU_CYCLES) */
  uint64_t period[CANARY_MAX_COUNTERS]; /* per counter: events between overflows; 0 = counting only */
};

/* What one counter saw. */
struct canary_counter_report {
  uint64_t programmed;   /* 1 if the canary programmed this counter */
  uint64_t event;        /* event number programmed */
  uint64_t period;       /* events between overflows (0: counting only) */
  uint64_t count;        /* events counted in total (exact for SW_INCR) */
  uint64_t interrupts;   /* overflow interrupts taken for this counter */
  uint64_t coalesced;    /* extra wraps found when an interrupt came more than a period late */
  uint64_t flag_at_end;  /* PMOVSSET bit still set after the grace period (no interrupt came) */
  uint64_t wraps_planned;/* wraps the canary set out to produce (params.wraps, 0 if counting) */
};

/* What one vCPU saw; written field by field, then CANARY_DONE. */
struct canary_report {
  uint64_t magic;          /* CANARY_MAGIC: the report was written */
  uint64_t status;         /* enum canary_status */
  uint64_t pmcr;           /* PMCR_EL0 as first read, before the canary touched it */
  uint64_t pmcr_n;         /* PMCR_EL0.N: event counters the guest sees */
  uint64_t dfr0;           /* ID_AA64DFR0_EL1 (PMUVer in bits 11:8) */
  uint64_t psci_version;   /* PSCI_VERSION's answer (major << 16 | minor) */
  uint64_t spurious_irqs;  /* ICC_IAR1 returned 1023 */
  uint64_t other_irqs;     /* interrupts other than the PMU's */
  uint64_t elapsed_ticks;  /* generic timer ticks from programming to the end of the grace */
  uint64_t cntfrq;         /* CNTFRQ_EL0 */
  uint64_t esr;            /* unexpected exception: ESR_EL1 */
  uint64_t elr;            /* unexpected exception: ELR_EL1 */
  uint64_t exception_vector; /* unexpected exception: vector offset */
  uint64_t busy_sink;        /* keeps the busy loop observable */
  uint64_t cycle_width;      /* 32, or 64 where PMCR_EL0.LC is RES1 */
  uint64_t reserved;
  struct canary_counter_report counter[CANARY_MAX_COUNTERS];
};

enum canary_status {
  CANARY_STATUS_NONE = 0,            /* no report: the vCPU never wrote one */
  CANARY_STATUS_OK = 1,              /* ran to the end */
  CANARY_STATUS_BAD_PARAMS = 2,      /* magic or version mismatch */
  CANARY_STATUS_NO_PMU = 3,          /* ID_AA64DFR0_EL1.PMUVer says no PMUv3 */
  CANARY_STATUS_TIMEOUT = 4,         /* the workload did not reach its wraps within timeout_us */
  CANARY_STATUS_EXCEPTION = 5,       /* an unexpected exception (esr/elr say which) */
};

#endif /* FLEETPMU_HYPERVISOR_SHIM_KVM_CANARY_CANARY_PROTOCOL_H_ */
