/*
 * bench_xen: the xl backend against xl itself, in one run, inside dom0 of
 * the Xen test harness (ninja -C build bench-xen boots it under QEMU).
 *
 *   create   jitsu_vm_summon() until the guest's XenStore key appears,
 *            against `xl create` of the same guest until the same key
 *   restore  resume of a vm saved to disk (suspend = disk) until the
 *            domain runs again, against create to ready
 *   save     suspend = disk through libjitsu until the domain is gone
 *   pool     a summon of a vm with pool = 1 (a spare domain created and
 *            paused at its ready key) until it is ready: the spare is
 *            renamed and unpaused, against create to ready; and the
 *            memory the paused spare holds
 *
 * Absolute times under TCG mean little; the ratios (the toolstack's share)
 * do. Prints p50 of N runs.
 *
 *   bench_xen [-n N] KERNEL RAMDISK
 */
#include "bench_vm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xenstore.h>

static jitsu_ctx *ctx;
static char dir[] = "/tmp/jitsu-bench-xen-XXXXXX";

/* The id of the domain called (name), from XenStore; -1 if none. */
static int find_domain(struct xs_handle *xs, const char *name) {
  unsigned n = 0;
  char **ids = xs_directory(xs, XBT_NULL, "/local/domain", &n);
  int found = -1;
  for (unsigned i = 0; ids && i < n && found < 0; i++) {
    char path[64];
    unsigned len;
    snprintf(path, sizeof(path), "/local/domain/%s/name", ids[i]);
    char *v = xs_read(xs, XBT_NULL, path, &len);
    if (v && strcmp(v, name) == 0)
      found = atoi(ids[i]);
    free(v);
  }
  free(ids);
  return found;
}

/* `xl create CFG` until (name)'s data/jitsu-ready exists; ms or -1. */
static double xl_create(struct xs_handle *xs, const char *cfg,
                        const char *name) {
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "xl create %s >/tmp/xl-create.log 2>&1", cfg);
  double t0 = now_ms();
  if (system(cmd) != 0)
    return -1;
  int id = find_domain(xs, name);
  char path[64];
  snprintf(path, sizeof(path), "/local/domain/%d/data/jitsu-ready", id);
  for (int i = 0; id >= 0 && i < 60000; i++) {
    unsigned len;
    char *v = xs_read(xs, XBT_NULL, path, &len);
    if (v != NULL) {
      free(v);
      double ms = now_ms() - t0;
      snprintf(cmd, sizeof(cmd), "xl destroy %s", name);
      (void)!system(cmd);
      return ms;
    }
    usleep(1000);
  }
  return -1;
}

/* Run the loop until (vm)'s one spare is ready (240 s at most); its
 * memory into (*memory). */
static int spare_ready(jitsu_vm *vm, uint64_t *memory) {
  double deadline = now_ms() + 240000;
  while (now_ms() < deadline) {
    size_t spares = 0, filling = 0;
    jitsu_vm_spares(vm, &spares, &filling, memory);
    if (spares == 1 && filling == 0)
      return 0;
    uv_run(&loop, UV_RUN_NOWAIT);
    usleep(10000);
  }
  return -1;
}

int main(int argc, char **argv) {
  int n = 3, opt;
  while ((opt = getopt(argc, argv, "n:")) != -1)
    n = atoi(optarg);
  if (argc - optind != 2 || n < 1 || n > 20) {
    fprintf(stderr, "usage: bench_xen [-n 1..20] KERNEL RAMDISK\n");
    return 2;
  }
  const char *kernel = argv[optind], *ramdisk = argv[optind + 1];
  struct xs_handle *xs = xs_open(0);
  if (xs == NULL || mkdtemp(dir) == NULL) {
    fprintf(stderr, "bench_xen: no XenStore here (run inside the harness)\n");
    return 1;
  }
  char path[300];
  if (bench_ctx(dir, &ctx) < 0)
    return 1;
  snprintf(path, sizeof(path), "%s/jitsu.conf", dir);
  FILE *f = fopen(path, "w");
  fprintf(f,
          "[vm b]\nbackend = xl\nkernel = %s\nramdisk = %s\n"
          "cmdline = console=hvc0 quiet\nmemory = 128M\nready = marker\n"
          "ready-key = data/jitsu-ready\nready-timeout = 120s\n"
          "suspend = disk\n",
          kernel, ramdisk);
  fclose(f);
  jitsu_error err;
  if (jitsu_config_load(ctx, path, &err) < 0) {
    fprintf(stderr, "bench_xen: %s\n", err.message);
    return 1;
  }
  char xlcfg[300];
  snprintf(xlcfg, sizeof(xlcfg), "%s/b.cfg", dir);
  f = fopen(xlcfg, "w");
  fprintf(f,
          "name = \"bx\"\ntype = \"pv\"\nkernel = \"%s\"\nramdisk = \"%s\"\n"
          "extra = \"console=hvc0 quiet\"\nmemory = 128\n",
          kernel, ramdisk);
  fclose(f);

  jitsu_vm *vm = jitsu_vm_find(ctx, "b");
  double create[20], by_xl[20], save[20], restore[20], pool[20];
  uint64_t spare_mem = 0;
  for (int i = 0; i < n; i++) {
    double t0 = now_ms();
    if (wait_verb(jitsu_vm_summon, vm) < 0)
      return 1;
    create[i] = now_ms() - t0;
    t0 = now_ms();
    wait_verb(jitsu_vm_suspend, vm); /* to disk */
    save[i] = now_ms() - t0;
    t0 = now_ms();
    if (wait_verb(jitsu_vm_resume, vm) < 0)
      return 1;
    restore[i] = now_ms() - t0;
    destroy_vm(vm);
    fprintf(stderr, "run %d: create %.0f ms, save %.0f ms, restore %.0f ms\n",
            i + 1, create[i], save[i], restore[i]);
  }
  /* The pooled vm is defined only now: its spares, filling, would compete
   * with the creates above for the CPUs. */
  snprintf(path, sizeof(path), "%s/jitsu.conf", dir);
  f = fopen(path, "a");
  fprintf(f,
          "[vm bp]\nbackend = xl\nkernel = %s\nramdisk = %s\n"
          "cmdline = console=hvc0 quiet\nmemory = 128M\nready = marker\n"
          "ready-key = data/jitsu-ready\nready-timeout = 120s\npool = 1\n",
          kernel, ramdisk);
  fclose(f);
  if (jitsu_config_reload(ctx, NULL, NULL, &err) < 0) {
    fprintf(stderr, "bench_xen: %s\n", err.message);
    return 1;
  }
  jitsu_vm *pooled = jitsu_vm_find(ctx, "bp");
  for (int i = 0; i < n; i++) {
    if (spare_ready(pooled, &spare_mem) < 0) {
      fprintf(stderr, "bench_xen: the pool of bp did not fill in 240 s\n");
      return 1;
    }
    double t0 = now_ms();
    if (wait_verb(jitsu_vm_summon, pooled) < 0)
      return 1;
    pool[i] = now_ms() - t0;
    destroy_vm(pooled);
    fprintf(stderr, "run %d: from the pool %.1f ms\n", i + 1, pool[i]);
  }
  /* xl itself last: in this harness a create by libxl that follows an xl
   * create and destroy waited in vain for its console (libxl's 10 s
   * console time-out), every time. */
  for (int i = 0; i < n; i++) {
    if ((by_xl[i] = xl_create(xs, xlcfg, "bx")) < 0) {
      fprintf(stderr, "bench_xen: xl create failed:\n");
      (void)!system("cat /tmp/xl-create.log >&2");
      return 1;
    }
    fprintf(stderr, "run %d: xl create %.0f ms\n", i + 1, by_xl[i]);
  }
  printf("xl backend, Xen 4.17 with a PV dom0 under QEMU TCG, p50 of %d:\n", n);
  double c = p50(create, n), x = p50(by_xl, n), r = p50(restore, n);
  printf("  create to ready   libjitsu %7.0f ms   xl create %7.0f ms   "
         "ratio %.2f\n",
         c, x, c / x);
  printf("  restore to running %6.0f ms   (%.1fx faster than create to "
         "ready)\n",
         r, c / r);
  printf("  save to disk       %6.0f ms\n", p50(save, n));
  double pl = p50(pool, n);
  printf("  from the pool      %6.1f ms   (unpause of a paused spare; %.0fx "
         "faster than create to ready; the spare holds %llu MiB)\n",
         pl, c / pl, (unsigned long long)(spare_mem >> 20));
  jitsu_ctx_free(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  char rm[100];
  snprintf(rm, sizeof(rm), "rm -rf %s", dir);
  (void)!system(rm);
  xs_close(xs);
  return 0;
}
