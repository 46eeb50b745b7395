/* libjitsu: per-vm metrics (counters, latency histograms, state times). */
#ifndef JITSU_METRICS_H
#define JITSU_METRICS_H

#include "vm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Latency buckets: upper bounds in ms of all but the last, which is +Inf. */
#define JITSU_LATENCY_BUCKETS 18

/* The (JITSU_LATENCY_BUCKETS - 1) finite upper bounds, in ms, ascending. */
JITSU_EXTERN const double *jitsu_latency_bounds(void);

typedef struct jitsu_latency {
  uint64_t count;                /* samples since the vm was defined */
  double sum_ms;                 /* their sum */
  double p50_ms, p90_ms, p99_ms; /* over the last 256 samples; 0 if none */
  uint64_t buckets[JITSU_LATENCY_BUCKETS]; /* per bucket, not cumulative */
} jitsu_latency;

#define JITSU_VM_METRICS_VERSION 1
typedef struct jitsu_vm_metrics {
  unsigned version; /* set by the caller: JITSU_VM_METRICS_VERSION */
  uint64_t summons;
  uint64_t cold_starts;
  uint64_t resumes;
  uint64_t ready_failures; /* starts that never became ready */
  uint64_t timeouts;       /* of those, readiness time-outs */
  uint64_t crashes;        /* guests that failed after being ready */
  uint64_t state_ms[JITSU_STATE_COUNT]; /* time spent in each state */
  jitsu_latency cold_start;             /* summon to ready of a cold start */
  jitsu_latency resume;                 /* summon to ready of a resume */
} jitsu_vm_metrics;

/* Fill (m) for (vm); state_ms includes the time in the current state. */
JITSU_EXTERN int jitsu_vm_metrics_get(const jitsu_vm *vm, jitsu_vm_metrics *m);

#ifdef __cplusplus
}
#endif
#endif
