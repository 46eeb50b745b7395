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

#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_stats.h"

#define MAX_TICKS 200000

typedef struct probe {
  uv_timer_t timer;
  uint64_t last_ns;
  double *late_ms;
  int n;
  /* The loop thread's CPU time and time spent runnable but waiting for a
   * CPU (schedstat), at the last tick; and for the latest tick. */
  uint64_t last_run_ns, last_wait_ns;
  double worst_ms, worst_run_ms, worst_wait_ms;
} probe;

static int schedstat_fd = -1;

/* The loop thread's time on a CPU and waiting for one (ns). */
static void schedstat(uint64_t *run, uint64_t *wait) {
  char buf[128];
  ssize_t n = pread(schedstat_fd, buf, sizeof(buf) - 1, 0);
  *run = *wait = 0;
  if (n > 0) {
    buf[n] = '\0';
    sscanf(buf, "%" SCNu64 " %" SCNu64, run, wait);
  }
}

static void tick(uv_timer_t *t) {
  probe *p = t->data;
  uint64_t now = uv_hrtime(), run, wait;
  schedstat(&run, &wait);
  if (p->last_ns != 0 && p->n < MAX_TICKS) {
    double late = (double)(now - p->last_ns) / 1e6 - 1.0;
    p->late_ms[p->n++] = late > 0 ? late : 0;
    if (late > p->worst_ms) {
      p->worst_ms = late;
      p->worst_run_ms = (double)(run - p->last_run_ns) / 1e6;
      p->worst_wait_ms = (double)(wait - p->last_wait_ns) / 1e6;
    }
  }
  p->last_ns = now;
  p->last_run_ns = run;
  p->last_wait_ns = wait;
}

static void report(const char *what, probe *p) {
  if (p->n == 0)
    return;
  qsort(p->late_ms, (size_t)p->n, sizeof(double), cmp_double);
  printf("  loop-lag probe (1 ms timer) %-14s %6d ticks  p50 %6.3f ms  p99 "
         "%6.3f ms  max %6.3f ms late\n",
         what, p->n, p->late_ms[(p->n - 1) / 2],
         p->late_ms[(int)(0.99 * (p->n - 1) + 0.5)], p->late_ms[p->n - 1]);
  if (schedstat_fd >= 0)
    printf("    the latest tick: %.3f ms late; in its interval the loop "
           "thread ran %.3f ms and waited %.3f ms for a CPU\n",
           p->worst_ms, p->worst_run_ms, p->worst_wait_ms);
}

/* A plain process beside the burst, no libjitsu in it: a 1 ms poll()
 * timeout in a loop, timed like the probe, from a byte on (go) to the
 * next; then it writes its ticks' lateness (ms, sorted) to (out). What
 * the machine gives any process meanwhile: the probe's baseline. */
static pid_t baseline_start(int *go, int *out) {
  int g[2], o[2];
  if (pipe(g) < 0 || pipe(o) < 0)
    return -1;
  pid_t pid = fork();
  if (pid != 0) {
    close(g[0]), close(o[1]);
    *go = g[1], *out = o[0];
    return pid;
  }
  close(g[1]), close(o[0]);
  static double late[MAX_TICKS];
  int n = 0;
  char c;
  if (read(g[0], &c, 1) != 1)
    _exit(1);
  uint64_t last = uv_hrtime();
  for (;;) {
    struct pollfd p = {.fd = g[0], .events = POLLIN};
    int r = poll(&p, 1, 1);
    uint64_t now = uv_hrtime();
    if (r > 0)
      break;
    double l = (double)(now - last) / 1e6 - 1.0;
    if (n < MAX_TICKS)
      late[n++] = l > 0 ? l : 0;
    last = now;
  }
  qsort(late, (size_t)n, sizeof(double), cmp_double);
  if (write(o[1], &n, sizeof(n)) != sizeof(n) ||
      write(o[1], late, sizeof(double) * (size_t)n) < 0)
    _exit(1);
  _exit(0);
}

/* Stop the baseline and print what it saw. */
static void baseline_report(pid_t pid, int go, int out) {
  static double late[MAX_TICKS];
  int n = 0;
  size_t got = 0;
  if (write(go, "x", 1) != 1 || read(out, &n, sizeof(n)) != sizeof(n))
    n = 0;
  while (got < sizeof(double) * (size_t)n) {
    ssize_t r = read(out, (char *)late + got, sizeof(double) * (size_t)n - got);
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  close(go), close(out);
  waitpid(pid, NULL, 0);
  if (n > 0 && got == sizeof(double) * (size_t)n)
    printf("  a plain process beside it (1 ms poll, no libjitsu) %5d ticks  "
           "p50 %6.3f ms  p99 %6.3f ms  max %6.3f ms late\n",
           n, late[(n - 1) / 2], late[(int)(0.99 * (n - 1) + 0.5)],
           late[n - 1]);
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
  schedstat_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
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
  long rss0 = proc_status_kib("VmRSS:");
  uv_timer_init(&loop, &burst.timer);
  burst.timer.data = &burst;
  int go = -1, out = -1;
  pid_t base = baseline_start(&go, &out);
  if (base > 0 && write(go, "x", 1) != 1)
    return 1;
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
  long rss1 = proc_status_kib("VmRSS:"), hwm = proc_status_kib("VmHWM:");
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
  if (base > 0)
    baseline_report(base, go, out);
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
