/*
 * config_scale: what a configuration of N vms costs on the real load
 * path. For each N it writes a file of N process vms (each with an exec,
 * readiness, idle settings and two params of its own), loads it into a
 * fresh context with jitsu_config_load(), reloads it unchanged with
 * jitsu_config_reload(), and prints the time of each, the RSS the load
 * added per vm, and the peak RSS; each size in a fresh process.
 *
 *   config_scale [N...]        (default: 1000 2000 4000 10000)
 *
 * Nothing is started: the vms stay stopped.
 */
#include <jitsu/jitsu.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_stats.h"

static int write_config(const char *path, const char *dir, int n) {
  FILE *f = fopen(path, "w");
  if (f == NULL)
    return -1;
  fprintf(f, "[jitsu]\nstate-dir = %s/state\nmax-live = %d\n", dir, n + 1);
  for (int i = 0; i < n; i++)
    fprintf(f,
            "[vm v%d]\nexec = /bin/sleep 100000 %d\nready = none\n"
            "idle-timeout = 5m\nidle-action = destroy\n"
            "env = NAME=v%d\nworkdir = /tmp\n",
            i, i, i);
  return fclose(f);
}

int main(int argc, char **argv) {
  static const int def[] = {1000, 2000, 4000, 10000};
  int counts[32], nc = 0;
  for (int i = 1; i < argc && nc < 32; i++)
    if ((counts[nc] = atoi(argv[i])) > 0)
      nc++;
  if (nc == 0)
    for (; nc < 4; nc++)
      counts[nc] = def[nc];
  char dir[] = "/tmp/jitsu-cfgscale-XXXXXX", conf[128];
  if (mkdtemp(dir) == NULL)
    return 1;
  snprintf(conf, sizeof(conf), "%s/scale.conf", dir);
  int bad = 0;
  printf("configuration of N process vms: load and unchanged reload "
         "(jitsu_config_load / jitsu_config_reload), one context each:\n");
  for (int c = 0; c < nc; c++) {
    int n = counts[c];
    if (write_config(conf, dir, n) < 0)
      return 1;
    /* Each size in a process of its own: its RSS and peak are its own. */
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
      return 1;
    if (pid > 0) {
      int st;
      waitpid(pid, &st, 0);
      bad |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
      continue;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    jitsu_ctx *ctx;
    jitsu_error err;
    long rss0 = proc_status_kib("VmRSS:");
    if (jitsu_ctx_new(&loop, NULL, &ctx) < 0)
      return 1;
    double t0 = now_ms();
    int r = jitsu_config_load(ctx, conf, &err);
    double load = now_ms() - t0;
    long rss1 = proc_status_kib("VmRSS:");
    t0 = now_ms();
    int r2 = r == 0 ? jitsu_config_reload(ctx, NULL, NULL, &err) : r;
    double reload = now_ms() - t0;
    if (r < 0 || r2 < 0) {
      fprintf(stderr, "config_scale: %s:%u: %s\n", err.file, err.line,
              err.message);
      bad = 1;
    }
    printf("  %6d vms: load %8.1f ms, unchanged reload %8.1f ms, RSS +%6ld "
           "KiB (%5.0f bytes per vm), peak RSS %6ld KiB\n",
           n, load, reload, rss1 - rss0, (double)(rss1 - rss0) * 1024.0 / n,
           proc_status_kib("VmHWM:"));
    jitsu_ctx_free(ctx);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    fflush(stdout);
    _exit(bad);
  }
  unlink(conf);
  char cmd[160];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "config_scale: could not remove %s\n", dir);
  return bad;
}
