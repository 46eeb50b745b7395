/*
 * bench_qemu: the qemu backend's summon times against QEMU started by
 * hand, in one run, as ratios.
 *
 * Tiny PVH guest (examples/guests/pvh), summon to its serial marker:
 *   jitsu   jitsu_vm_summon() until ready (marker seen)
 *   hand    the same QEMU command line (read from the running guest's
 *           /proc/PID/cmdline, QMP dropped, serial on a pipe) until the
 *           marker is read
 *   floor   the same command with jitsu.exit: the guest ends QEMU at its
 *           first C statement (spawn to exit: QEMU's own start-up)
 * The unikernel (examples/guests/unikernel), summon to first HTTP byte
 * through a forwarded port: libjitsu, by hand, and its floor; and a client
 * connecting to a proxying socket trigger (socket =) of the stopped vm,
 * connect to first byte, against the same QEMU by hand.
 * The unikernel from a pool of spare QEMUs (pool = 1, paused at their
 * marker), summon to first HTTP byte, p50 and p90, against its cold boot
 * in the same run; and the memory (RSS) of one pooled QEMU; and a request
 * to the same guest running, the floor a summon cannot go below.
 * Linux guest (examples/guests/linux/build.sh), summon to first HTTP
 * response through the forwarded port: cold boot, restore from a snapshot
 * image, resume from pause; and a cold boot by hand.
 *
 *   bench_qemu [-n N] PVH_GUEST UNIKERNEL [KERNEL INITRD]
 */
#include "bench_vm.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static jitsu_ctx *ctx;
static char dir[] = "/tmp/jitsu-bench-qemu-XXXXXX";

/* The running guest's command line, made runnable by hand: no QMP, the
 * serial console on stdout (a pipe), plus (append_extra) on -append. */
static char **hand_argv(int pid, const char *append_extra) {
  char path[64], buf[8192];
  snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
  int fd = open(path, O_RDONLY);
  ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
  if (fd >= 0)
    close(fd);
  if (n <= 0)
    return NULL;
  buf[n] = '\0';
  char **v = calloc(128, sizeof(*v));
  int k = 0;
  for (char *p = buf; p < buf + n && k < 120; p += strlen(p) + 1) {
    if (strncmp(p, "socket,id=jitsu-qmp", 19) == 0) {
      k--; /* drop "-chardev" before it, and "-mon x" after it */
      p += strlen(p) + 1;
      p += strlen(p) + 1;
      continue;
    }
    if (strncmp(p, "socket,id=jitsu-con", 19) == 0)
      v[k++] = strdup("stdio,id=jitsu-con");
    else if (append_extra && k > 0 && strcmp(v[k - 1], "-append") == 0) {
      char *s;
      if (asprintf(&s, "%s %s", p, append_extra) < 0)
        return NULL;
      v[k++] = s;
    } else
      v[k++] = strdup(p);
  }
  return v;
}

/* Run (argv) by hand; until (marker) on its stdout (or exit if NULL). */
static double run_by_hand(char **argv, const char *marker, int http_port) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) < 0)
    return -1;
  double t0 = now_ms();
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 2);
    execvp(argv[0], argv);
    _exit(127);
  }
  close(out[1]);
  double t = -1;
  /* Bounded: a guest that never answers is killed after 60 s. */
  pid_t guard = fork();
  if (guard == 0) {
    sleep(60);
    kill(pid, SIGKILL);
    _exit(0);
  }
  if (marker == NULL) {
    int st;
    waitpid(pid, &st, 0);
    if (!WIFSIGNALED(st))
      t = now_ms() - t0;
  } else {
    char buf[4096];
    size_t len = 0;
    ssize_t n;
    while ((n = read(out[0], buf + len, sizeof(buf) - 1 - len)) > 0) {
      len += (size_t)n;
      buf[len] = '\0';
      if (strstr(buf, marker) != NULL)
        break;
      if (len > sizeof(buf) / 2) {
        memmove(buf, buf + len / 2, len - len / 2);
        len -= len / 2;
      }
    }
    if (http_port == 0 || http_first_byte(http_port, now_ms() + 30000) == 0)
      t = now_ms() - t0;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
  }
  kill(guard, SIGKILL);
  waitpid(guard, NULL, 0);
  close(out[0]);
  return t;
}

static int define(const char *text) {
  char path[300];
  snprintf(path, sizeof(path), "%s/bench.conf", dir);
  FILE *f = fopen(path, "w");
  fputs(text, f);
  fclose(f);
  jitsu_error err;
  if (jitsu_config_load(ctx, path, &err) < 0) {
    fprintf(stderr, "bench_qemu: %s\n", err.message);
    return -1;
  }
  return 0;
}

static int guest_pid(jitsu_vm *vm) {
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  int pid = 0;
  sscanf(info.instance, "qemu pid %d", &pid);
  return pid;
}

/* (v) plus the isa-debug-exit device. */
static char **exit_at_once_device(char **v) {
  int n = 0;
  while (v && v[n])
    n++;
  if (v == NULL || n > 120)
    return NULL;
  v[n] = "-device";
  v[n + 1] = "isa-debug-exit,iobase=0xf4,iosize=0x04";
  v[n + 2] = NULL;
  return v;
}

/* (v) with jitsu.exit on the kernel command line and the isa-debug-exit
 * device: the project's guests end QEMU at once with it. */
static char **exit_at_once(char **v) {
  for (int k = 0; v && v[k]; k++)
    if (strcmp(v[k], "-append") == 0 && v[k + 1] != NULL) {
      char *s;
      if (asprintf(&s, "jitsu.exit %s", v[k + 1]) < 0)
        return NULL;
      v[k + 1] = s;
      return exit_at_once_device(v);
    }
  for (int k = 0; v && v[k]; k++)
    if (strcmp(v[k], "-kernel") == 0) {
      memmove(v + k + 4, v + k + 2, (size_t)(120 - k - 4) * sizeof(char *));
      v[k + 2] = "-append";
      v[k + 3] = "jitsu.exit";
      break;
    }
  return exit_at_once_device(v);
}

static double linux_cold_p50, uni_p50;

/* A client in a thread of its own (the trigger runs on this loop): connect
 * to first byte, in ms, or -1. */
typedef struct probe {
  int port;
  double ms;
  bool done;
  uv_async_t async;
} probe;

static void *probe_main(void *arg) {
  probe *p = arg;
  double t0 = now_ms();
  p->ms = http_first_byte(p->port, t0 + 30000) == 0 ? now_ms() - t0 : -1;
  uv_async_send(&p->async);
  return NULL;
}

static void probe_done(uv_async_t *a) {
  probe *p = a->data;
  p->done = true;
  uv_close((uv_handle_t *)a, NULL);
}

static double probe_once(int port) {
  probe p = {.port = port, .ms = -1};
  uv_async_init(&loop, &p.async, probe_done);
  p.async.data = &p;
  pthread_t t;
  if (pthread_create(&t, NULL, probe_main, &p) != 0)
    return -1;
  while (!p.done)
    uv_run(&loop, UV_RUN_ONCE);
  uv_run(&loop, UV_RUN_NOWAIT); /* the async's close */
  pthread_join(t, NULL);
  return p.ms;
}

/* The unikernel behind a proxying socket trigger: a client's connect to
 * its first HTTP byte with the vm stopped, taking turns with the same
 * QEMU command by hand (summon to first byte on the guest's port). */
static void through_trigger(const char *name, const char *ready, int port,
                            int guest_port, int n) {
  jitsu_vm *vm = jitsu_vm_find(ctx, name);
  double *t = calloc((size_t)n, sizeof(double));
  double *h = calloc((size_t)n, sizeof(double));
  char **argv = NULL;
  for (int i = 0; i < n; i++) {
    if ((t[i] = probe_once(port)) < 0) {
      fprintf(stderr, "bench_qemu: no answer through the socket trigger\n");
      return;
    }
    if (argv == NULL)
      argv = hand_argv(guest_pid(vm), NULL);
    destroy_vm(vm);
    h[i] = run_by_hand(argv, "JITSU_READY", guest_port);
  }
  double pt = p50(t, n), ph = p50(h, n);
  printf("unikernel behind a proxying socket trigger (ready = %s), client "
         "connect to first HTTP byte, %d runs each, p50 (ms):\n",
         ready, n);
  printf("  through the trigger         %7.1f\n", pt);
  printf("  QEMU by hand                %7.1f\n", ph);
  printf("  toolstack's own share: %+.1f ms (ratio %.2f)\n", pt - ph, pt / ph);
}

/* Summons of (name) against the same QEMU command by hand and its floor
 * (the guest exits at once), (n) of each; with (port), to the first HTTP
 * byte through it, else to the marker. Prints under (title); returns the
 * libjitsu p50, or -1. */
static double against_hand(const char *name, const char *title, int port,
                           int n) {
  jitsu_vm *vm = jitsu_vm_find(ctx, name);
  double *j = calloc((size_t)n, sizeof(double));
  double *h = calloc((size_t)n, sizeof(double));
  double *fl = calloc((size_t)n, sizeof(double));
  char **argv = NULL, **exit_argv = NULL;
  for (int i = 0; i < n; i++) {
    double t0 = now_ms();
    if (wait_verb(jitsu_vm_summon, vm) < 0 ||
        (port && http_first_byte(port, now_ms() + 30000) < 0)) {
      jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
      jitsu_vm_info_get(vm, &info);
      fprintf(stderr, "bench_qemu: %s failed: %s\n", name, info.reason);
      return -1;
    }
    j[i] = now_ms() - t0;
    if (argv == NULL) {
      argv = hand_argv(guest_pid(vm), NULL);
      exit_argv = exit_at_once(hand_argv(guest_pid(vm), NULL));
    }
    destroy_vm(vm);
    h[i] = run_by_hand(argv, "JITSU_READY", port);
    fl[i] = run_by_hand(exit_argv, NULL, 0);
  }
  double pj = p50(j, n), ph = p50(h, n), pf = p50(fl, n);
  printf("%s, %d runs each, p50 (ms):\n", title, n);
  printf("  libjitsu                    %7.1f\n", pj);
  printf("  QEMU by hand                %7.1f\n", ph);
  printf("  QEMU floor (exit at once)   %7.1f   (spawn to exit, with "
         "QEMU's teardown)\n",
         pf);
  printf("  toolstack's own share: %+.1f ms (ratio jitsu/hand %.2f)\n", pj - ph,
         pj / ph);
  return pj;
}

/* Run the loop for (ms): the pool refills meanwhile. */
static void settle(double ms) {
  double end = now_ms() + ms;
  while (now_ms() < end) {
    uv_run(&loop, UV_RUN_NOWAIT);
    usleep(2000);
  }
}

static unsigned long long pool_takes(jitsu_vm *vm) {
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  /* "qemu pid P, pool R/N ready (resident M MiB), T taken" */
  const char *t = strstr(info.instance, " taken");
  while (t != NULL && t > info.instance && t[-1] >= '0' && t[-1] <= '9')
    t--;
  return t ? strtoull(t, NULL, 10) : 0;
}

/* The RSS in kB of the QEMU a spare's record names, or 0. */
static long spare_rss_kb(const char *name) {
  char path[400], line[128];
  snprintf(path, sizeof(path), "%s/state/qemu/%s.spare1.pid", dir, name);
  FILE *f = fopen(path, "r");
  int pid = 0;
  if (f != NULL) {
    if (fscanf(f, "%d", &pid) != 1)
      pid = 0;
    fclose(f);
  }
  snprintf(path, sizeof(path), "/proc/%d/status", pid);
  long kb = 0;
  if (pid > 0 && (f = fopen(path, "r")) != NULL) {
    while (fgets(line, sizeof(line), f) != NULL)
      if (sscanf(line, "VmRSS: %ld", &kb) == 1)
        break;
    fclose(f);
  }
  return kb;
}

/* Summons of the pooled guest (name), (what) for the report, against a
 * cold boot's p50 (cold_p50): each waits (settle_ms) first for the pool to
 * refill, and counts only if a spare served it. */
static void from_pool(const char *name, const char *what, const char *ready,
                      int port, int n, double cold_p50, double settle_ms) {
  jitsu_vm *vm = jitsu_vm_find(ctx, name);
  double *t = calloc((size_t)n, sizeof(double));
  int k = 0, cold = 0;
  long rss = 0;
  for (int i = 0; i < n; i++) {
    settle(settle_ms);
    if (rss == 0)
      rss = spare_rss_kb(name);
    unsigned long long before = pool_takes(vm);
    double t0 = now_ms();
    if (wait_verb(jitsu_vm_summon, vm) < 0 ||
        http_first_byte(port, now_ms() + 30000) < 0) {
      fprintf(stderr, "bench_qemu: %s failed\n", name);
      free(t);
      return;
    }
    double ms = now_ms() - t0;
    if (pool_takes(vm) > before)
      t[k++] = ms;
    else
      cold++;
    destroy_vm(vm);
  }
  if (k == 0) {
    fprintf(stderr, "bench_qemu: no summon of %s came from its pool\n", name);
    free(t);
    return;
  }
  double p = p50(t, k), p9 = t[(k * 9) / 10 < k ? (k * 9) / 10 : k - 1];
  /* The floor: the same guest, running (summoned and answered once),
   * connect to first HTTP byte. */
  double *r = calloc((size_t)n, sizeof(double)), running = -1;
  if (r != NULL && wait_verb(jitsu_vm_summon, vm) > 0 &&
      http_first_byte(port, now_ms() + 30000) == 0) {
    int m = 0;
    for (; m < n; m++) {
      double t0 = now_ms();
      if (http_first_byte(port, t0 + 30000) < 0)
        break;
      r[m] = now_ms() - t0;
    }
    if (m == n)
      running = p50(r, n);
  }
  destroy_vm(vm);
  free(r);
  printf("%s from a pool (pool = 1, ready = %s), summon to first HTTP "
         "byte, %d runs (%d cold: the pool had not refilled), p50 %.1f ms, "
         "p90 %.1f ms; its cold boot p50 %.1f ms (%.1fx); one pooled QEMU's "
         "RSS %ld kB; a request to the same guest running: p50 %.1f ms (the "
         "pool's summon adds %.1f ms)\n",
         what, ready, k, cold, p, p9, cold_p50, cold_p50 / p, rss, running,
         p - running);
  free(t);
}

/* The Linux guest with a pool of 1, answering on (port). */
static int define_webpool(const char *kernel, const char *initrd, int port) {
  char fw[64], addr[64];
  snprintf(fw, sizeof(fw), "tcp:127.0.0.1:%d-:80", port);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d/", port);
  jitsu_param params[] = {
      {"kernel", kernel},
      {"initrd", initrd},
      {"cmdline", "console=ttyS0 panic=-1 quiet jname=webpool"},
      {"tsc-hint", "yes"},
      {"forward", fw},
      {"pool", "1"},
  };
  jitsu_vm_def def = JITSU_VM_DEF_INIT;
  def.name = "webpool";
  def.backend = "qemu";
  def.ready = JITSU_READY_HTTP;
  def.ready_address = addr;
  def.ready_marker = true;
  def.ready_timeout_ms = 60000;
  def.params = params;
  def.n_params = sizeof(params) / sizeof(params[0]);
  jitsu_error err;
  if (jitsu_vm_define(ctx, &def, NULL, &err) < 0) {
    fprintf(stderr, "bench_qemu: webpool: %s\n", err.message);
    return -1;
  }
  return 0;
}

static void linux_guest(int port, int n) {
  jitsu_vm *vm = jitsu_vm_find(ctx, "web");
  double cold[8], hand[8], restore[32], resume[32];
  int nc = n < 8 ? n : 8;
  char **argv = NULL;
  char img[300];
  snprintf(img, sizeof(img), "%s/web.img", dir);
  for (int i = 0; i < nc; i++) {
    unlink(img);
    double t0 = now_ms();
    if (wait_verb(jitsu_vm_summon, vm) < 0 ||
        http_first_byte(port, now_ms() + 30000) < 0)
      return;
    cold[i] = now_ms() - t0;
    if (argv == NULL)
      argv = hand_argv(guest_pid(vm), NULL);
    if (i == nc - 1)
      wait_verb(jitsu_vm_snapshot, vm);
    destroy_vm(vm);
    hand[i] = run_by_hand(argv, "JITSU_READY", port);
  }
  for (int i = 0; i < n && i < 32; i++) {
    double t0 = now_ms();
    if (wait_verb(jitsu_vm_summon, vm) < 0 ||
        http_first_byte(port, now_ms() + 30000) < 0)
      return;
    restore[i] = now_ms() - t0;
    wait_verb(jitsu_vm_suspend, vm);
    t0 = now_ms();
    wait_verb(jitsu_vm_summon, vm);
    http_first_byte(port, now_ms() + 30000);
    resume[i] = now_ms() - t0;
    destroy_vm(vm);
  }
  int nr = n < 32 ? n : 32;
  double pc = p50(cold, nc), ph = p50(hand, nc), pr = p50(restore, nr);
  linux_cold_p50 = pc;
  double pz = p50(resume, nr);
  printf("Linux guest (TCG unless hardware KVM), summon to first HTTP "
         "byte, p50 (ms):\n");
  printf("  cold boot, libjitsu (%d)    %7.1f\n", nc, pc);
  printf("  cold boot, QEMU by hand (%d)%7.1f   ratio %.2f\n", nc, ph, pc / ph);
  printf("  restore from snapshot (%d)  %7.1f   %.1fx faster than a boot\n", nr,
         pr, pc / pr);
  printf("  resume from pause (%d)      %7.1f\n", nr, pz);
}

int main(int argc, char **argv) {
  int n = 20, opt;
  while ((opt = getopt(argc, argv, "n:")) != -1)
    if (opt == 'n')
      n = atoi(optarg);
  if (optind + 1 >= argc || n < 1) {
    fprintf(stderr,
            "usage: bench_qemu [-n N] PVH_GUEST UNIKERNEL [KERNEL INITRD]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (mkdtemp(dir) == NULL)
    return 1;
  if (bench_ctx(dir, &ctx) < 0)
    return 1;
  int port = 20000 + (int)(getpid() % 5000);
  char conf[8192];
  int len =
      snprintf(conf, sizeof(conf),
               "[vm tiny]\nbackend = qemu\n"
               "kernel = %s\nmemory = 16M\nnet = none\n"
               "ready = marker\n"
               "[vm uni]\nbackend = qemu\nkernel = %s\nmemory = 16M\n"
               "tsc-hint = yes\nforward = tcp:127.0.0.1:%d-:80\n"
               "ready = marker+http:127.0.0.1:%d/\n"
               "[vm unip]\nbackend = qemu\nkernel = %s\nmemory = 16M\n"
               "tsc-hint = yes\nforward = tcp:127.0.0.1:%d-:80\n"
               "ready = marker+http:127.0.0.1:%d/\n"
               "address = 127.0.0.1:%d\nsocket = tcp:127.0.0.1:%d\n"
               "[vm unim]\nbackend = qemu\nkernel = %s\nmemory = 16M\n"
               "tsc-hint = yes\nforward = tcp:127.0.0.1:%d-:80\n"
               "ready = marker\n"
               "address = 127.0.0.1:%d\nsocket = tcp:127.0.0.1:%d\n"
               "[vm unipool]\nbackend = qemu\nkernel = %s\n"
               "memory = 16M\ntsc-hint = yes\n"
               "forward = tcp:127.0.0.1:%d-:80\nready = marker\n"
               "pool = 1\n"
               "[vm unipoolh]\nbackend = qemu\nkernel = %s\n"
               "memory = 16M\ntsc-hint = yes\n"
               "forward = tcp:127.0.0.1:%d-:80\n"
               "ready = marker+http:127.0.0.1:%d/\npool = 1\n",
               argv[optind], argv[optind + 1], port + 1, port + 1,
               argv[optind + 1], port + 2, port + 2, port + 2, port + 3,
               argv[optind + 1], port + 4, port + 4, port + 5, argv[optind + 1],
               port + 6, argv[optind + 1], port + 7, port + 7);
  if (optind + 3 < argc)
    snprintf(conf + len, sizeof(conf) - (size_t)len,
             "[vm web]\nbackend = qemu\nkernel = %s\ninitrd = %s\n"
             "cmdline = console=ttyS0 panic=-1 quiet jname=web\n"
             "tsc-hint = yes\nforward = tcp:127.0.0.1:%d-:80\n"
             "ready = marker+http:127.0.0.1:%d/\nready-timeout = 60s\n"
             "snapshot = %s/web.img\n",
             argv[optind + 2], argv[optind + 3], port, port, dir);
  if (define(conf) < 0)
    return 1;
  against_hand("tiny", "tiny PVH guest, summon to its marker", 0, n);
  uni_p50 =
      against_hand("uni", "unikernel, summon to first HTTP byte", port + 1, n);
  if (uni_p50 > 0) {
    /* With an HTTP probe, readiness costs the guest one more exchange
     * before the client's; with its marker alone (printed once its NIC is
     * up), the client's request is the first. */
    through_trigger("unip", "marker+http", port + 3, port + 2, n);
    through_trigger("unim", "marker", port + 5, port + 4, n);
    from_pool("unipool", "unikernel", "marker", port + 6, n, uni_p50, 500);
    from_pool("unipoolh", "unikernel", "marker+http", port + 7, n, uni_p50,
              500);
  }
  if (optind + 3 < argc) {
    linux_guest(port, n < 5 ? n : 5);
    /* Defined only now: its spares boot to the marker (seconds under
     * TCG), which must not run beside the rows above. */
    if (linux_cold_p50 > 0 &&
        define_webpool(argv[optind + 2], argv[optind + 3], port + 8) == 0)
      from_pool("webpool", "Linux guest", "marker+http", port + 8,
                n < 10 ? n : 10, linux_cold_p50, 2.5 * linux_cold_p50);
    printf("unikernel against the Linux guest, summon to first HTTP byte "
           "(p50): %.1f ms vs %.1f ms\n",
           uni_p50, linux_cold_p50);
  }
  jitsu_ctx_free(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  char cmd[400];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : 1;
}
