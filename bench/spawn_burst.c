/*
 * spawn_burst: an embedder that defines N process guests and summons them
 * all in one burst, on one loop, while a probe (a timer repeating every
 * millisecond on the same loop) records how late each tick comes: the
 * stall that every other client of the loop would see. Prints the time
 * until every guest is ready, the probe's p50/p99/max lateness during the
 * burst and, for comparison, while idle, and this process's RSS before and
 * after. Then destroys them all. Each guest is /bin/sleep (ready = none:
 * ready once it runs).
 *
 *   spawn_burst [-n N] [-s MAX_STARTING]
 */
#include <jitsu/jitsu.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_stats.h"

#define MAX_TICKS 200000

typedef struct probe {
  uv_timer_t timer;
  uint64_t last_ns;
  double *late_ms;
  int n;
} probe;

static void tick(uv_timer_t *t) {
  probe *p = t->data;
  uint64_t now = uv_hrtime();
  if (p->last_ns != 0 && p->n < MAX_TICKS) {
    double late = (double)(now - p->last_ns) / 1e6 - 1.0;
    p->late_ms[p->n++] = late > 0 ? late : 0;
  }
  p->last_ns = now;
}

static void report(const char *what, probe *p) {
  if (p->n == 0)
    return;
  qsort(p->late_ms, (size_t)p->n, sizeof(double), cmp_double);
  printf("  loop-lag probe (1 ms timer) %-14s %6d ticks  p50 %6.3f ms  p99 "
         "%6.3f ms  max %6.3f ms late\n",
         what, p->n, p->late_ms[(p->n - 1) / 2],
         p->late_ms[(int)(0.99 * (p->n - 1) + 0.5)], p->late_ms[p->n - 1]);
}

static long rss_kib(const char *field) {
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

static int remaining, failures;
static void done_cb(jitsu_vm *vm, int status, void *arg) {
  (void)vm, (void)arg;
  if (status != 0)
    failures++;
  remaining--;
}

static void run_until_done(uv_loop_t *loop, double limit_ms) {
  uint64_t end = uv_hrtime() + (uint64_t)(limit_ms * 1e6);
  while (remaining > 0 && uv_hrtime() < end)
    uv_run(loop, UV_RUN_ONCE);
}

int main(int argc, char **argv) {
  int n = 1000, max_starting = 0, opt;
  while ((opt = getopt(argc, argv, "n:s:")) != -1) {
    if (opt == 'n')
      n = atoi(optarg);
    else if (opt == 's')
      max_starting = atoi(optarg);
    else
      n = 0;
  }
  if (n < 1 || n > 10000 || max_starting < 0) {
    fprintf(stderr, "usage: spawn_burst [-n 1..10000] [-s MAX_STARTING]\n");
    return 2;
  }
  char dir[] = "/tmp/jitsu-burst-XXXXXX", conf[128];
  if (mkdtemp(dir) == NULL)
    return 1;
  snprintf(conf, sizeof(conf), "%s/burst.conf", dir);
  FILE *f = fopen(conf, "w");
  fprintf(f, "[jitsu]\nstate-dir = %s/state\nmax-live = %d\n", dir, n + 10);
  if (max_starting > 0)
    fprintf(f, "max-starting = %d\n", max_starting);
  for (int i = 0; i < n; i++)
    fprintf(f, "[vm g%d]\nexec = /bin/sleep 100000\n", i);
  fclose(f);
  uv_loop_t loop;
  uv_loop_init(&loop);
  jitsu_ctx *ctx;
  jitsu_error err;
  if (jitsu_ctx_new(&loop, NULL, &ctx) < 0 ||
      jitsu_config_load(ctx, conf, &err) < 0) {
    fprintf(stderr, "spawn_burst: %s\n", err.message);
    return 1;
  }
  unsigned ms;
  jitsu_ctx_limits(ctx, NULL, &ms, NULL);
  static probe idle, burst;
  idle.late_ms = calloc(MAX_TICKS, sizeof(double));
  burst.late_ms = calloc(MAX_TICKS, sizeof(double));
  uv_timer_init(&loop, &idle.timer);
  idle.timer.data = &idle;
  uv_timer_start(&idle.timer, tick, 1, 1);
  uint64_t idle_end = uv_hrtime() + 300 * 1000000ull;
  while (uv_hrtime() < idle_end)
    uv_run(&loop, UV_RUN_ONCE);
  uv_timer_stop(&idle.timer);
  long rss0 = rss_kib("VmRSS:");
  uv_timer_init(&loop, &burst.timer);
  burst.timer.data = &burst;
  uv_timer_start(&burst.timer, tick, 1, 1);
  uint64_t t0 = uv_hrtime();
  remaining = n;
  for (int i = 0; i < n; i++) {
    char name[32];
    snprintf(name, sizeof(name), "g%d", i);
    if (jitsu_vm_summon(jitsu_vm_find(ctx, name), done_cb, NULL) < 0)
      failures++, remaining--;
  }
  run_until_done(&loop, 120e3);
  double all_ready = (double)(uv_hrtime() - t0) / 1e6;
  uv_timer_stop(&burst.timer);
  long rss1 = rss_kib("VmRSS:"), hwm = rss_kib("VmHWM:");
  size_t live;
  jitsu_ctx_counts(ctx, NULL, &live, NULL);
  printf("burst of %d cold summons, one loop, max-starting %u (process "
         "guests, /bin/sleep, ready = none):\n",
         n, ms);
  printf("  all ready after %.1f ms (%.3f ms per guest); %zu live, %d "
         "failed\n",
         all_ready, all_ready / n, live, failures + remaining);
  report("idle", &idle);
  report("during burst", &burst);
  printf("  controller RSS %ld KiB before, %ld KiB after (peak %ld KiB)\n",
         rss0, rss1, hwm);
  /* Destroy them all, then free everything. */
  int bad = failures + remaining;
  remaining = n;
  for (int i = 0; i < n; i++) {
    char name[32];
    snprintf(name, sizeof(name), "g%d", i);
    if (jitsu_vm_stop(jitsu_vm_find(ctx, name), JITSU_STOP_DESTROY, done_cb,
                      NULL) < 0)
      remaining--;
  }
  run_until_done(&loop, 60e3);
  uv_close((uv_handle_t *)&idle.timer, NULL);
  uv_close((uv_handle_t *)&burst.timer, NULL);
  jitsu_ctx_free(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  char cmd[160];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "spawn_burst: could not remove %s\n", dir);
  return bad > 0;
}
