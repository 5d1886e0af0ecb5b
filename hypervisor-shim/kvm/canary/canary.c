/* The canary guest: a bare-metal aarch64 program that checks a vCPU's PMU from the inside.
 *
 * Each vCPU, independently: reads PMCR_EL0.N (what the hypervisor lets it see), clears the PMU
 * state KVM leaves behind at reset, programs `counters` event counters (and the cycle counter)
 * with the events and periods the VMM asked for, sets up its GICv3 redistributor and CPU
 * interface (system registers ICC_*) for the PMU's PPI, then produces the planned wraps: SW_INCR
 * counters by writing PMSWINC_EL0 exactly wraps * period times, the others by running until
 * each has taken its wraps or the time budget is spent. The overflow handler accounts every
 * event and every wrap. The result goes back through MMIO exits (canary_protocol.h).
 *
 * Counting is exact by construction for SW_INCR: only the main loop increments, the handler
 * runs with interrupts masked, and each reload keeps the wrap grid (the next wrap is `period`
 * events after the previous one however late the interrupt came). For hardware events the few
 * events between the handler's read and its reload are not counted.
 *
 * Runs with the MMU off: all data accesses are Device-nGnRnE, hence -mstrict-align and no
 * atomics. All state is on the vCPU's own stack; TPIDR_EL1 points the handler at it. */
#include <stddef.h>
#include <stdint.h>

#include "canary_protocol.h"

#define READ_SYSREG(r) ({ uint64_t v_; __asm__ volatile("mrs %0, " #r : "=r"(v_)); v_; })
#define WRITE_SYSREG(r, v) __asm__ volatile("msr " #r ", %0" : : "r"((uint64_t)(v)))
#define ISB() __asm__ volatile("isb" : : : "memory")

/* PMCR_EL0 bits (PMU.md section 1). */
#define PMCR_E (1ull << 0)
#define PMCR_P (1ull << 1)
#define PMCR_C (1ull << 2)
#define PMCR_N(pmcr) (((pmcr) >> 11) & 0x1f)

#define PMCR_LC (1ull << 6)
#define COUNTER_MASK_32 0xffffffffull
#define COUNTER_MASK_64 0xffffffffffffffffull

struct counter_state {
  uint64_t start;      /* value written at the last (re)load */
  uint64_t period;
  uint64_t total;      /* events accounted up to the last (re)load */
  uint64_t interrupts;
  uint64_t coalesced;
  uint64_t wraps;      /* target */
  uint64_t mask;       /* overflow width: 32 bits, or 64 for the cycle counter when PMCR.LC */
};

struct canary {
  uint64_t vcpu;
  uint64_t mask;       /* counters programmed */
  uint64_t irq_mask;   /* counters sampling (interrupt enabled) */
  uint64_t spurious;
  uint64_t other;
  struct counter_state c[CANARY_MAX_COUNTERS];
};

/* --- the report device ---------------------------------------------------------------------- */

static inline void mmio_write64(uint64_t offset, uint64_t value) {
  *(volatile uint64_t*)(CANARY_MMIO_BASE + offset) = value;
}
static inline uint64_t mmio_read64(uint64_t offset) {
  return *(volatile uint64_t*)(CANARY_MMIO_BASE + offset);
}
#define PARAM(field) mmio_read64(CANARY_PARAMS + offsetof(struct canary_params, field))
#define PARAM_AT(field, i) \
  mmio_read64(CANARY_PARAMS + offsetof(struct canary_params, field) + 8u * (uint64_t)(i))
#define REPORT(field, v) mmio_write64(CANARY_REPORT + offsetof(struct canary_report, field), (v))
#define REPORT_COUNTER(i, field, v)                                               \
  mmio_write64(CANARY_REPORT + offsetof(struct canary_report, counter) +          \
                   (uint64_t)(i) * sizeof(struct canary_counter_report) +          \
                   offsetof(struct canary_counter_report, field), (v))

static void console(const char* s) {
  while (*s) *(volatile uint8_t*)(CANARY_MMIO_BASE + CANARY_CONSOLE) = (uint8_t)*s++;
}

static void done(uint64_t status) {
  mmio_write64(CANARY_DONE, status);
  for (;;) __asm__ volatile("wfi");
}

/* --- direct counter accessors (never PMSELR + PMXEV*: PMU.md invariant 13) --------------------- */

#define CASE_READ_CNT(n) case n: return READ_SYSREG(pmevcntr##n##_el0);
#define CASE_WRITE_CNT(n) case n: WRITE_SYSREG(pmevcntr##n##_el0, v); return;
#define CASE_WRITE_TYPE(n) case n: WRITE_SYSREG(pmevtyper##n##_el0, v); return;
#define ALL_COUNTERS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) \
  X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23) X(24) X(25) X(26) X(27)   \
  X(28) X(29) X(30)

static uint64_t read_counter(unsigned n) {
  switch (n) {
    ALL_COUNTERS(CASE_READ_CNT)
    case CANARY_CYCLE_COUNTER: return READ_SYSREG(pmccntr_el0);
  }
  return 0;
}
static void write_counter(unsigned n, uint64_t v) {
  switch (n) {
    ALL_COUNTERS(CASE_WRITE_CNT)
    case CANARY_CYCLE_COUNTER: WRITE_SYSREG(pmccntr_el0, v); return;
  }
}
static void write_type(unsigned n, uint64_t v) {
  switch (n) {
    ALL_COUNTERS(CASE_WRITE_TYPE)
    /* PMCCFILTR has the filter bits only; the event is CPU_CYCLES by definition. */
    case CANARY_CYCLE_COUNTER: WRITE_SYSREG(pmccfiltr_el0, v & ~0xffffull); return;
  }
}

/* --- GICv3 (Arm IHI 0069): distributor, this vCPU's redistributor, CPU interface -------------- */

static inline void mmio_write32(uint64_t addr, uint32_t v) { *(volatile uint32_t*)addr = v; }
static inline uint32_t mmio_read32(uint64_t addr) { return *(volatile uint32_t*)addr; }

#define GICD_CTLR 0x0000u
#define GICD_CTLR_RWP (1u << 31)
#define GICD_CTLR_ENABLE_G1 (1u << 1)  /* single security state (KVM's GIC has DS = 1) */
#define GICD_CTLR_ARE (1u << 4)
#define GICR_WAKER 0x0014u
#define GICR_SGI 0x10000u              /* SGI_base: the second 64 KiB frame */
#define GICR_IGROUPR0 (GICR_SGI + 0x0080u)
#define GICR_ISENABLER0 (GICR_SGI + 0x0100u)
#define GICR_ICPENDR0 (GICR_SGI + 0x0280u)
#define GICR_IPRIORITYR (GICR_SGI + 0x0400u)

static void gic_init(uint64_t vcpu) {
  /* The distributor enable gates PPIs too; writing the same value from every vCPU is harmless. */
  mmio_write32(CANARY_GICD_BASE + GICD_CTLR, GICD_CTLR_ARE | GICD_CTLR_ENABLE_G1);
  while (mmio_read32(CANARY_GICD_BASE + GICD_CTLR) & GICD_CTLR_RWP) {}
  const uint64_t rd = CANARY_GICR_BASE + vcpu * CANARY_GICR_STRIDE;
  /* Wake the redistributor: clear ProcessorSleep, wait for ChildrenAsleep to clear. */
  mmio_write32(rd + GICR_WAKER, mmio_read32(rd + GICR_WAKER) & ~(1u << 1));
  while (mmio_read32(rd + GICR_WAKER) & (1u << 2)) {}
  mmio_write32(rd + GICR_IGROUPR0, 0xffffffffu);  /* every SGI/PPI in group 1 */
  mmio_write32(rd + GICR_ICPENDR0, 0xffffffffu);  /* drop anything pending from before */
  volatile uint8_t* prio = (volatile uint8_t*)(rd + GICR_IPRIORITYR);
  prio[CANARY_PMU_INTID] = 0x80;                 /* above the priority mask below */
  mmio_write32(rd + GICR_ISENABLER0, 1u << CANARY_PMU_INTID);
  /* CPU interface through system registers (ICC_SRE_EL1.SRE is RAO on KVM's vGICv3). */
  WRITE_SYSREG(S3_0_C12_C12_5, READ_SYSREG(S3_0_C12_C12_5) | 1);  /* ICC_SRE_EL1.SRE */
  ISB();
  WRITE_SYSREG(S3_0_C4_C6_0, 0xff);  /* ICC_PMR_EL1: let every priority through */
  WRITE_SYSREG(S3_0_C12_C12_3, 0);   /* ICC_BPR1_EL1 */
  WRITE_SYSREG(S3_0_C12_C12_4, 0);   /* ICC_CTLR_EL1: EOImode 0, EOIR also deactivates */
  WRITE_SYSREG(S3_0_C12_C12_7, 1);   /* ICC_IGRPEN1_EL1 */
  ISB();
}

#define READ_ICC_IAR1() READ_SYSREG(S3_0_C12_C12_0)
#define WRITE_ICC_EOIR1(v) WRITE_SYSREG(S3_0_C12_C12_1, v)

/* --- overflow accounting ------------------------------------------------------------------------ */

/* Accounts the events since the last (re)load of counter n, whose current value is v, and
 * reloads it so that the next wrap is `period` events after the one just taken. A value of
 * `period` or more means further grid points passed while the flag was set: coalesced wraps. */
static void account_wrap(struct canary* s, unsigned n, uint64_t v) {
  struct counter_state* c = &s->c[n];
  v &= c->mask;  /* the overflow width, even with 64-bit storage (PMUv3p5) */
  c->total += (v - c->start) & c->mask;
  const uint64_t late = v / c->period;
  c->coalesced += late;
  const uint64_t reload = (v - (late + 1) * c->period) & c->mask;
  write_counter(n, reload);
  c->start = reload;
}

void canary_irq(uint64_t vector) {
  (void)vector;
  struct canary* s = (struct canary*)READ_SYSREG(tpidr_el1);
  const uint64_t iar = READ_ICC_IAR1();
  const uint64_t intid = iar & 0xffffff;
  if (intid >= 1020 && intid <= 1023) {
    s->spurious++;
    return;  /* no EOI for special INTIDs */
  }
  if (intid == CANARY_PMU_INTID) {
    const uint64_t ovs = READ_SYSREG(pmovsset_el0) & s->irq_mask;
    for (unsigned n = 0; n < CANARY_MAX_COUNTERS; n++) {
      if (!(ovs & (1ull << n))) continue;
      struct counter_state* c = &s->c[n];
      c->interrupts++;
      account_wrap(s, n, read_counter(n));
      if (c->interrupts + c->coalesced >= c->wraps) {
        /* Target reached: stop this counter so that it neither counts nor wraps again. */
        WRITE_SYSREG(pmcntenclr_el0, 1ull << n);
        WRITE_SYSREG(pmintenclr_el1, 1ull << n);
      }
    }
    WRITE_SYSREG(pmovsclr_el0, ovs);
    ISB();
  } else {
    s->other++;
  }
  WRITE_ICC_EOIR1(iar);
  ISB();
}

void canary_unexpected(uint64_t vector) {
  REPORT(magic, CANARY_MAGIC);
  REPORT(esr, READ_SYSREG(esr_el1));
  REPORT(elr, READ_SYSREG(elr_el1));
  REPORT(exception_vector, vector);
  console("canary: unexpected exception\n");
  done(CANARY_STATUS_EXCEPTION);
}

/* --- the run ------------------------------------------------------------------------------------- */

static uint64_t psci_version(void) {
  register uint64_t x0 __asm__("x0") = 0x84000000ull;  /* PSCI_VERSION (SMCCC, HVC conduit) */
  __asm__ volatile("hvc #0" : "+r"(x0) : : "x1", "x2", "x3", "memory");
  return x0;
}

/* Brings the PMU to a known state: KVM does not reset the guest's PMU registers to zero. */
static void pmu_clear(uint64_t n_counters) {
  WRITE_SYSREG(pmcr_el0, 0);  /* E = 0 first: nothing counts or interrupts while we clear */
  ISB();
  WRITE_SYSREG(pmcntenclr_el0, 0xffffffffull);
  WRITE_SYSREG(pmintenclr_el1, 0xffffffffull);
  WRITE_SYSREG(pmovsclr_el0, 0xffffffffull);
  WRITE_SYSREG(pmuserenr_el0, 0);
  WRITE_SYSREG(pmselr_el0, 0);
  for (unsigned n = 0; n < n_counters && n < CANARY_CYCLE_COUNTER; n++) {
    write_type(n, 0);
    write_counter(n, 0);
  }
  write_type(CANARY_CYCLE_COUNTER, 0);
  WRITE_SYSREG(pmcr_el0, PMCR_P | PMCR_C);  /* reset every counter; E stays 0 */
  ISB();
}

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static int all_reached(const struct canary* s) {
  /* The overflow handler updates the counts behind the compiler's back: read them afresh. */
  __asm__ volatile("" : : : "memory");
  for (unsigned n = 0; n < CANARY_MAX_COUNTERS; n++) {
    const struct counter_state* c = &s->c[n];
    if ((s->irq_mask & (1ull << n)) && c->interrupts + c->coalesced < c->wraps) return 0;
  }
  return 1;
}

/* Work that retires instructions and takes cycles; the result is kept so it is not optimised
 * away. */
static uint64_t busy(uint64_t seed) {
  for (unsigned i = 0; i < 1000; i++) seed = seed * 6364136223846793005ull + 1442695040888963407ull;
  return seed;
}

void canary_main(uint64_t vcpu) {
  struct canary state;
  for (size_t i = 0; i < sizeof(state); i++) ((volatile uint8_t*)&state)[i] = 0;
  struct canary* s = &state;
  s->vcpu = vcpu;
  WRITE_SYSREG(tpidr_el1, (uint64_t)s);

  /* Reported first, before anything can go wrong, so even a failed run says what it saw. */
  const uint64_t pmcr = READ_SYSREG(pmcr_el0);
  const uint64_t dfr0 = READ_SYSREG(id_aa64dfr0_el1);
  REPORT(magic, CANARY_MAGIC);
  REPORT(pmcr, pmcr);
  REPORT(pmcr_n, PMCR_N(pmcr));
  REPORT(dfr0, dfr0);
  REPORT(psci_version, psci_version());
  REPORT(cntfrq, READ_SYSREG(cntfrq_el0));

  if (PARAM(magic) != CANARY_MAGIC || PARAM(version) != CANARY_VERSION) done(CANARY_STATUS_BAD_PARAMS);
  const uint64_t pmuver = (dfr0 >> 8) & 0xf;
  if (pmuver == 0 || pmuver == 0xf) done(CANARY_STATUS_NO_PMU);

  const uint64_t seen = PMCR_N(pmcr);
  /* Programs what was asked, but never a counter the guest cannot see (that would be
   * CONSTRAINED UNPREDICTABLE); the VMM compares pmcr_n with what it asked for. */
  const uint64_t counters = min_u64(PARAM(counters), seen);
  const uint64_t wraps = PARAM(wraps);
  pmu_clear(seen);
  gic_init(vcpu);
  /* PMCR_EL0.LC is RES1 where AArch32 is not implemented (KVM 6.1 enforces it): then the cycle
   * counter overflows at 64 bits whatever we write. Ask rather than assume. */
  WRITE_SYSREG(pmcr_el0, 0);
  ISB();
  const uint64_t lc = READ_SYSREG(pmcr_el0) & PMCR_LC;
  REPORT(cycle_width, lc ? 64 : 32);

  for (unsigned n = 0; n < CANARY_MAX_COUNTERS; n++) {
    const int cycle = n == CANARY_CYCLE_COUNTER;
    if (!(n < counters || (cycle && PARAM(use_cycle)))) continue;
    struct counter_state* c = &s->c[n];
    const uint64_t event = cycle ? CANARY_EVENT_CPU_CYCLES : (PARAM_AT(event, n) & 0xffff);
    c->mask = cycle && lc ? COUNTER_MASK_64 : COUNTER_MASK_32;
    c->period = PARAM_AT(period, n) & COUNTER_MASK_32;
    s->mask |= 1ull << n;
    /* Filter bits 0: count at EL0 and EL1, nothing at EL2 (NSH = 0, PMU.md invariant 5). */
    write_type(n, event);
    if (c->period != 0) {
      c->wraps = wraps;
      s->irq_mask |= 1ull << n;
      c->start = (0 - c->period) & c->mask;  /* wraps after `period` events */
    }
    write_counter(n, c->start);
    REPORT_COUNTER(n, programmed, 1);
    REPORT_COUNTER(n, event, event);
    REPORT_COUNTER(n, period, c->period);
    REPORT_COUNTER(n, wraps_planned, c->wraps);
  }
  WRITE_SYSREG(pmovsclr_el0, 0xffffffffull);
  WRITE_SYSREG(pmintenset_el1, s->irq_mask);
  WRITE_SYSREG(pmcntenset_el0, s->mask);
  WRITE_SYSREG(pmcr_el0, PMCR_E | lc);  /* LP = 0: event counters overflow at 32 bits */
  ISB();

  const uint64_t freq = READ_SYSREG(cntfrq_el0);
  const uint64_t t0 = READ_SYSREG(cntvct_el0);
  const uint64_t budget = PARAM(timeout_us) * (freq / 1000000ull ? freq / 1000000ull : 1);
  __asm__ volatile("msr daifclr, #2" : : : "memory");  /* IRQs on */

  /* SW_INCR counters: exactly wraps * period increments each, in one loop. */
  uint64_t swinc_mask = 0, swinc_rounds = 0;
  for (unsigned n = 0; n < counters; n++) {
    if ((s->mask & (1ull << n)) && PARAM_AT(event, n) == CANARY_EVENT_SW_INCR) {
      swinc_mask |= 1ull << n;
      const uint64_t rounds = s->c[n].period != 0 ? wraps * s->c[n].period : wraps;
      if (rounds > swinc_rounds) swinc_rounds = rounds;
    }
  }
  for (uint64_t i = 0; i < swinc_rounds; i++) {
    uint64_t bits = 0;
    for (unsigned n = 0; n < counters; n++) {
      if (!(swinc_mask & (1ull << n))) continue;
      const uint64_t rounds = s->c[n].period != 0 ? wraps * s->c[n].period : wraps;
      if (i < rounds) bits |= 1ull << n;
    }
    WRITE_SYSREG(pmswinc_el0, bits);
  }

  /* Hardware events: run until every sampling counter reached its wraps, or out of time. */
  uint64_t sink = vcpu;
  int timed_out = 0;
  while (!all_reached(s)) {
    if (READ_SYSREG(cntvct_el0) - t0 > budget) {
      timed_out = 1;
      break;
    }
    sink = busy(sink);
  }
  /* Stop counting, but leave interrupts on for the grace period so that one in flight arrives
   * (the line needs PMCR.E, so E stays set). */
  WRITE_SYSREG(pmcntenclr_el0, 0xffffffffull);
  ISB();
  const uint64_t grace = PARAM(grace_us) * (freq / 1000000ull ? freq / 1000000ull : 1);
  const uint64_t g0 = READ_SYSREG(cntvct_el0);
  while (READ_SYSREG(cntvct_el0) - g0 < grace && !all_reached(s)) {}
  __asm__ volatile("msr daifset, #2" : : : "memory");  /* IRQs off */
  const uint64_t flags = READ_SYSREG(pmovsset_el0);
  REPORT(elapsed_ticks, READ_SYSREG(cntvct_el0) - t0);

  for (unsigned n = 0; n < CANARY_MAX_COUNTERS; n++) {
    if (!(s->mask & (1ull << n))) continue;
    struct counter_state* c = &s->c[n];
    const uint64_t v = read_counter(n) & c->mask;
    c->total += (v - c->start) & c->mask;
    REPORT_COUNTER(n, count, c->total);
    REPORT_COUNTER(n, interrupts, c->interrupts);
    REPORT_COUNTER(n, coalesced, c->coalesced);
    REPORT_COUNTER(n, flag_at_end, (flags >> n) & 1);
  }
  WRITE_SYSREG(pmcr_el0, 0);
  REPORT(spurious_irqs, s->spurious);
  REPORT(other_irqs, s->other);
  REPORT(busy_sink, sink & 1);  /* keeps the busy work observable */
  done(timed_out ? CANARY_STATUS_TIMEOUT : CANARY_STATUS_OK);
}
