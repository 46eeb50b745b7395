/* Per-vm metrics. Allocated when a vm first changes state, so that the
 * thousands of vms that never run cost nothing here. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define RING 256

static const double bounds[JITSU_LATENCY_BUCKETS - 1] = {
    0.5, 1,    2,    5,    10,    20,    50,    100,   200,
    500, 1000, 2000, 5000, 10000, 20000, 30000, 60000,
};

typedef struct hist {
  uint64_t buckets[JITSU_LATENCY_BUCKETS];
  uint64_t count;
  double sum_ms;
  uint32_t ring_us[RING]; /* the last samples, in microseconds */
  unsigned ring_n, ring_pos;
} hist;

struct jitsu__metrics {
  uint64_t ready_failures, timeouts, crashes;
  uint64_t state_ms[JITSU_STATE_COUNT];
  hist cold, resume;
};

const double *jitsu_latency_bounds(void) {
  return bounds;
}

static jitsu__metrics *metrics_of(jitsu_vm *vm) {
  if (vm->metrics == NULL) {
    vm->metrics = calloc(1, sizeof(*vm->metrics));
    if (vm->metrics != NULL)
      vm->metrics->state_ms[JITSU_STATE_STOPPED] = 0;
  }
  return vm->metrics;
}

void jitsu__metrics_free(jitsu_vm *vm) {
  free(vm->metrics);
  vm->metrics = NULL;
}

void jitsu__metrics_state(jitsu_vm *vm, jitsu_state old, uint64_t ms) {
  jitsu__metrics *m = metrics_of(vm);
  if (m != NULL)
    m->state_ms[old] += ms;
}

static void hist_add(hist *h, uint64_t ns) {
  double ms = (double)ns / 1e6;
  size_t b = 0;
  while (b < JITSU_LATENCY_BUCKETS - 1 && ms > bounds[b])
    b++;
  h->buckets[b]++;
  h->count++;
  h->sum_ms += ms;
  uint64_t us = ns / 1000;
  h->ring_us[h->ring_pos] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
  h->ring_pos = (h->ring_pos + 1) % RING;
  if (h->ring_n < RING)
    h->ring_n++;
}

void jitsu__metrics_event(jitsu_vm *vm, jitsu__metric_event ev, uint64_t ns) {
  jitsu__metrics *m = metrics_of(vm);
  if (m == NULL)
    return;
  switch (ev) {
  case JITSU__M_COLD_START:
    hist_add(&m->cold, ns);
    break;
  case JITSU__M_RESUME:
    hist_add(&m->resume, ns);
    break;
  case JITSU__M_READY_TIMEOUT:
    m->timeouts++;
    m->ready_failures++;
    break;
  case JITSU__M_READY_FAILURE:
    m->ready_failures++;
    break;
  case JITSU__M_CRASH:
    m->crashes++;
    break;
  }
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

static void latency_get(const hist *h, jitsu_latency *out) {
  memset(out, 0, sizeof(*out));
  out->count = h->count;
  out->sum_ms = h->sum_ms;
  memcpy(out->buckets, h->buckets, sizeof(out->buckets));
  if (h->ring_n == 0)
    return;
  uint32_t sorted[RING];
  memcpy(sorted, h->ring_us, h->ring_n * sizeof(uint32_t));
  qsort(sorted, h->ring_n, sizeof(uint32_t), cmp_u32);
  /* Nearest rank: the smallest sample with at least p of them at or below. */
  double ps[3] = {0.50, 0.90, 0.99};
  double *outs[3] = {&out->p50_ms, &out->p90_ms, &out->p99_ms};
  for (int i = 0; i < 3; i++) {
    size_t rank = (size_t)(ps[i] * h->ring_n + 0.999999);
    if (rank < 1)
      rank = 1;
    *outs[i] = sorted[rank - 1] / 1000.0;
  }
}

int jitsu_vm_metrics_get(const jitsu_vm *vm, jitsu_vm_metrics *out) {
  if (out->version != JITSU_VM_METRICS_VERSION)
    return -EINVAL;
  memset(out, 0, sizeof(*out));
  out->version = JITSU_VM_METRICS_VERSION;
  out->summons = vm->summons_total;
  out->cold_starts = vm->spawns;
  out->resumes = vm->resumes;
  const jitsu__metrics *m = vm->metrics;
  if (m != NULL) {
    out->ready_failures = m->ready_failures;
    out->timeouts = m->timeouts;
    out->crashes = m->crashes;
    memcpy(out->state_ms, m->state_ms, sizeof(out->state_ms));
    latency_get(&m->cold, &out->cold_start);
    latency_get(&m->resume, &out->resume);
  }
  out->state_ms[vm->state] += uv_now(vm->ctx->loop) - vm->state_since_ms;
  return 0;
}
