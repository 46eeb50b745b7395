/* What every benchmark here shares: a monotonic clock in ms, and sorting
 * samples for their percentiles. Header-only (static functions). */
#ifndef JITSU_BENCH_STATS_H
#define JITSU_BENCH_STATS_H

#include <stdlib.h>
#include <time.h>

static inline double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The (p) percentile of v[0..n), nearest rank (sorts it). */
static inline double pct(double *v, int n, double p) {
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  return v[(int)(p * (n - 1) + 0.5)];
}

#endif
