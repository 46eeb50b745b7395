/* What every benchmark here shares: a monotonic clock in ms, sorting
 * samples for their percentiles, and printing them. Header-only. */
#ifndef JITSU_BENCH_STATS_H
#define JITSU_BENCH_STATS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Print "what: n units, p50, p99, max" of the latencies v[0..n) (ms;
 * sorts them). */
static inline void report_latencies(const char *what, const char *unit,
                                    double *v, int n) {
  if (n == 0) {
    printf("  %-34s no answers\n", what);
    return;
  }
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  printf("  %-34s %5d %-8s p50 %6.3f ms  p99 %6.3f ms  max %6.3f ms\n", what, n,
         unit, v[(n - 1) / 2], v[(int)(0.99 * (n - 1) + 0.5)], v[n - 1]);
}

/* A field of /proc/self/status in KiB ("VmRSS:", "VmHWM:"), or -1. */
static inline long proc_status_kib(const char *field) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  while (f != NULL && fgets(line, sizeof(line), f) != NULL)
    if (strncmp(line, field, strlen(field)) == 0)
      v = atol(line + strlen(field));
  if (f != NULL)
    fclose(f);
  return v;
}

#endif
