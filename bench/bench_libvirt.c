/*
 * bench_libvirt: the libvirt backend against the qemu backend and QEMU
 * started by hand, in one run, as ratios. The guest is the small Linux
 * guest (examples/guests/linux/build.sh) on machine pc under the same
 * accelerator, its HTTP port forwarded to loopback; every time is to the
 * first byte of an HTTP answer through that port.
 *
 *   libvirt, local   the backend over qemu+unix (the daemon's own socket)
 *   libvirt, remote  the backend over qemu+tcp://127.0.0.1 (a remote URI)
 *   qemu backend     libjitsu's qemu backend, machine pc
 *   QEMU by hand     qemu-system-x86_64 with the same kernel, initrd,
 *                    memory and NIC, spawn to first HTTP byte
 * and suspend (pause) / resume, and suspend to disk / restore, for each
 * backend. Cold rounds are interleaved (local, remote, qemu, by hand, then
 * again), after one untimed round. Last (its spares would boot during the
 * others), pool = 1 for the libvirt backend over qemu+unix and for the
 * qemu backend: a summon that takes the paused spare, each round once the
 * spare is ready (the other vm's pool refilled too).
 *
 * The daemon is a private libvirtd (tests/libvirt/vdaemon, root needed).
 *   bench_libvirt [-n N] VDAEMON KERNEL INITRD
 */
#include "bench_vm.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static jitsu_ctx *ctx;
static char dir[] = "/tmp/jitsu-bench-libvirt-XXXXXX";
static pid_t vdaemon;

static int tcp_port_open(int port) {
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
  close(fd);
  return ok;
}

/* What is timed, per backend: samples, then their medians. */
enum { COLD, PAUSE, RESUME, SAVE, RESTORE, N_TIMES };
enum { N_MAX = 16 };
static double samples[3][N_TIMES][N_MAX], p50s[3][N_TIMES];

static int failed(jitsu_vm *vm, const char *what) {
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  fprintf(stderr, "bench_libvirt: %s: %s failed: %s\n", info.name, what,
          info.reason);
  return -1;
}

/* One cold summon of (name), a pause and a resume: times into (t). */
static int cold_round(const char *name, int port, double t[N_TIMES]) {
  jitsu_vm *vm = jitsu_vm_find(ctx, name);
  double t0 = now_ms();
  if (wait_verb(jitsu_vm_summon, vm) < 0)
    return failed(vm, "summon");
  if (http_first_byte(port, now_ms() + 60000) < 0)
    return failed(vm, "HTTP");
  t[COLD] = now_ms() - t0;
  t0 = now_ms();
  if (wait_verb(jitsu_vm_suspend, vm) < 0)
    return failed(vm, "suspend");
  t[PAUSE] = now_ms() - t0;
  t0 = now_ms();
  if (wait_verb(jitsu_vm_summon, vm) < 0 ||
      http_first_byte(port, now_ms() + 60000) < 0)
    return failed(vm, "resume");
  t[RESUME] = now_ms() - t0;
  destroy_vm(vm);
  return 0;
}

/* (n) suspend-to-disk / restore rounds of NAME-disk: into (t). */
static int disk_rounds(const char *name, int port, int n,
                       double t[N_TIMES][N_MAX]) {
  char disk_name[64];
  snprintf(disk_name, sizeof(disk_name), "%s-disk", name);
  jitsu_vm *dvm = jitsu_vm_find(ctx, disk_name);
  if (wait_verb(jitsu_vm_summon, dvm) < 0 ||
      http_first_byte(port, now_ms() + 60000) < 0)
    return failed(dvm, "summon");
  for (int i = 0; i < n; i++) {
    double t0 = now_ms();
    if (wait_verb(jitsu_vm_suspend, dvm) < 0)
      return failed(dvm, "suspend to disk");
    t[SAVE][i] = now_ms() - t0;
    t0 = now_ms();
    if (wait_verb(jitsu_vm_summon, dvm) < 0 ||
        http_first_byte(port, now_ms() + 60000) < 0)
      return failed(dvm, "restore");
    t[RESTORE][i] = now_ms() - t0;
  }
  destroy_vm(dvm);
  return 0;
}

/* QEMU by hand: spawn to first HTTP byte, then kill. */
static double by_hand(const char *kernel, const char *initrd, int port) {
  char fwd[128], log[400];
  snprintf(fwd, sizeof(fwd),
           "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:%d-:80", port);
  snprintf(log, sizeof(log), "file:%s/hand.console", dir);
  double t0 = now_ms();
  pid_t pid = fork();
  if (pid == 0) {
    execlp("qemu-system-x86_64", "qemu-system-x86_64", "-M", "pc", "-accel",
           "tcg", "-cpu", "max", "-m", "128", "-kernel", kernel, "-initrd",
           initrd, "-append", "console=ttyS0 panic=-1 quiet jname=hand",
           "-display", "none", "-serial", log, "-nic", fwd, "-no-reboot",
           (char *)NULL);
    _exit(127);
  }
  int ok = http_first_byte(port, now_ms() + 60000);
  double t = now_ms() - t0;
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return ok < 0 ? -1 : t;
}

/* Run the loop until (vm) has a ready spare, at most (ms). */
static int wait_spare(jitsu_vm *vm, double ms) {
  double end = now_ms() + ms;
  for (;;) {
    size_t spares, filling;
    uint64_t memory;
    jitsu_vm_spares(vm, &spares, &filling, &memory);
    if (spares >= 1 && filling == 0)
      return 0;
    if (now_ms() > end)
      return -1;
    uv_run(&loop, UV_RUN_NOWAIT);
    usleep(5000);
  }
}

/* (n) summons of (name) (pool = 1) that take its spare: into (t). */
static int pool_rounds(const char *name, int port, int n, double *t) {
  jitsu_vm *vm = jitsu_vm_find(ctx, name);
  for (int i = 0; i < n; i++) {
    if (wait_spare(vm, 120000) < 0)
      return failed(vm, "fill the pool");
    double t0 = now_ms();
    if (wait_verb(jitsu_vm_summon, vm) < 0 ||
        http_first_byte(port, now_ms() + 60000) < 0)
      return failed(vm, "summon from the pool");
    t[i] = now_ms() - t0;
    destroy_vm(vm);
  }
  return 0;
}

static int start_daemon(const char *vd, int port) {
  char p[16], d[400];
  snprintf(p, sizeof(p), "%d", port);
  snprintf(d, sizeof(d), "%s/daemon", dir);
  vdaemon = fork();
  if (vdaemon == 0) {
    execl(vd, "vdaemon", d, "127.0.0.1", p, (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 600; i++) {
    if (tcp_port_open(port))
      return 0;
    usleep(50000);
  }
  return -1;
}

static void stop_daemon(void) {
  if (vdaemon > 0) {
    kill(vdaemon, SIGTERM);
    waitpid(vdaemon, NULL, 0);
  }
}

static void row(const char *what, double v, double base) {
  printf("  %-28s %8.1f", what, v);
  if (base > 0)
    printf("   x%.2f", v / base);
  printf("\n");
}

/* For each backend, the medians of (a) and (b), the libvirt ones against
 * the qemu backend's. */
static void backend_rows(int a, const char *a_name, int b, const char *b_name) {
  static const char *const names[] = {"libvirt, local", "libvirt, remote",
                                      "qemu backend"};
  for (int k = 0; k < 3; k++) {
    char label[64];
    snprintf(label, sizeof(label), "%s: %s", names[k], a_name);
    row(label, p50s[k][a], k < 2 ? p50s[2][a] : 0);
    snprintf(label, sizeof(label), "%s: %s", names[k], b_name);
    row(label, p50s[k][b], k < 2 ? p50s[2][b] : 0);
  }
}

int main(int argc, char **argv) {
  int n = 5, opt;
  while ((opt = getopt(argc, argv, "n:")) != -1)
    if (opt == 'n')
      n = atoi(optarg);
  if (optind + 2 >= argc || n < 1 || n > N_MAX) {
    fprintf(stderr, "usage: bench_libvirt [-n 1..16] VDAEMON KERNEL INITRD\n");
    return 2;
  }
  if (geteuid() != 0) {
    fprintf(stderr, "bench_libvirt: needs root (a private libvirtd)\n");
    return 77;
  }
  const char *kernel = argv[optind + 1], *initrd = argv[optind + 2];
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (mkdtemp(dir) == NULL)
    return 1;
  int base = 21000 + (int)(getpid() % 4000) * 3;
  int lport = base, http = base + 1, qhttp = base + 2;
  if (start_daemon(argv[optind], lport) < 0) {
    fprintf(stderr, "bench_libvirt: libvirtd did not start (%s/daemon)\n", dir);
    stop_daemon();
    return 1;
  }
  if (bench_ctx(dir, &ctx) < 0)
    return 1;

  static char conf[16384];
  size_t len = 0;
  const char *guest_fmt =
      "kernel = %s\ninitrd = %s\ncmdline = console=ttyS0 panic=-1 quiet "
      "jname=g\nmemory = 128M\nready = marker+http:127.0.0.1:%d/\n"
      "ready-timeout = 60s\nstop-grace = 5s\n";
  const struct {
    const char *name, *head;
  } vms[] = {
      {"local", "backend = libvirt\ntype = qemu\nnetwork = user\n"
                "forward = 127.0.0.1:%d:80\nhost = qemu+unix:///system?"
                "socket=%s/daemon/run/libvirt-sock\n"},
      {"remote", "backend = libvirt\ntype = qemu\nnetwork = user\n"
                 "forward = 127.0.0.1:%d:80\nhost = qemu+tcp://127.0.0.1:%d/"
                 "system\n"},
      {"qemu", "backend = qemu\nmachine = pc\naccel = tcg\ncpu = max\n"
               "forward = tcp:127.0.0.1:%d-:80\n"},
  };
  for (size_t i = 0; i < 3; i++)
    for (int disk = 0; disk < 2; disk++) {
      len += (size_t)snprintf(conf + len, sizeof(conf) - len, "[vm %s%s]\n",
                              vms[i].name, disk ? "-disk" : "");
      if (i == 0)
        len += (size_t)snprintf(conf + len, sizeof(conf) - len, vms[i].head,
                                http, dir);
      else if (i == 1)
        len += (size_t)snprintf(conf + len, sizeof(conf) - len, vms[i].head,
                                http, lport);
      else
        len +=
            (size_t)snprintf(conf + len, sizeof(conf) - len, vms[i].head, http);
      len += (size_t)snprintf(conf + len, sizeof(conf) - len, guest_fmt, kernel,
                              initrd, http);
      len += (size_t)snprintf(conf + len, sizeof(conf) - len, "suspend = %s\n",
                              disk ? "disk" : "memory");
    }
  char path[400];
  snprintf(path, sizeof(path), "%s/bench.conf", dir);
  FILE *f = fopen(path, "w");
  if (f == NULL || fputs(conf, f) < 0 || fclose(f) != 0)
    return 1;
  jitsu_error err = {0};
  if (jitsu_config_load(ctx, path, &err) < 0) {
    fprintf(stderr, "bench_libvirt: %s\n", err.message);
    return 1;
  }

  /* One untimed round first (the daemon probes QEMU, caches warm up);
   * then the cold rounds interleaved, so that drift hits all alike. */
  double one[N_TIMES], hand_t[N_MAX], hand = -1;
  int status = cold_round(vms[0].name, http, one);
  for (int i = 0; i < n && status == 0; i++) {
    for (int k = 0; k < 3 && status == 0; k++) {
      status = cold_round(vms[k].name, http, one);
      for (int t = COLD; t <= RESUME; t++)
        samples[k][t][i] = one[t];
    }
    if (status == 0 && (hand_t[i] = by_hand(kernel, initrd, http)) < 0)
      status = 1;
  }
  for (int k = 0; k < 3 && status == 0; k++)
    status = disk_rounds(vms[k].name, http, n, samples[k]);
  /* The pools last: a reload adds the vms, and their spares boot. The
   * qemu backend's on a port of its own: its spare holds the vm's forward
   * while the vm is stopped. */
  double pool_t[2][N_MAX], pooled[2] = {-1, -1};
  f = fopen(path, "a");
  if (f == NULL ||
      fprintf(f, "[vm pooled]\n%s",
              "backend = libvirt\ntype = qemu\n"
              "network = user\npool = 1\n") < 0 ||
      fprintf(f,
              "forward = 127.0.0.1:%d:80\nhost = qemu+unix:///system?"
              "socket=%s/daemon/run/libvirt-sock\n",
              http, dir) < 0 ||
      fprintf(f, guest_fmt, kernel, initrd, http) < 0 ||
      fprintf(f, "[vm qpooled]\npool = 1\n") < 0 ||
      fprintf(f, vms[2].head, qhttp) < 0 ||
      fprintf(f, guest_fmt, kernel, initrd, qhttp) < 0 || fclose(f) != 0)
    status = 1;
  if (status == 0 && jitsu_config_reload(ctx, NULL, NULL, &err) < 0) {
    fprintf(stderr, "bench_libvirt: %s\n", err.message);
    status = 1;
  }
  const char *pool_vm[2] = {"pooled", "qpooled"};
  int pool_port[2] = {http, qhttp};
  for (int k = 0; k < 2 && status == 0; k++) {
    jitsu_vm *other = jitsu_vm_find(ctx, pool_vm[1 - k]);
    if (wait_spare(other, 120000) < 0) /* no spare of it boots meanwhile */
      status = failed(other, "fill the pool");
    else if ((status = pool_rounds(pool_vm[k], pool_port[k], n, pool_t[k])) ==
             0)
      pooled[k] = p50(pool_t[k], n);
  }
  for (int k = 0; k < 3 && status == 0; k++)
    for (int t = 0; t < N_TIMES; t++)
      p50s[k][t] = p50(samples[k][t], n);
  if (status == 0)
    hand = p50(hand_t, n);
  if (status == 0 && hand > 0) {
    printf("Linux guest, machine pc, TCG; p50 of %d, ms; xN = against the "
           "qemu backend\n",
           n);
    printf("summon to first HTTP byte:\n");
    row("libvirt, local (qemu+unix)", p50s[0][COLD], p50s[2][COLD]);
    row("libvirt, remote (qemu+tcp)", p50s[1][COLD], p50s[2][COLD]);
    row("qemu backend", p50s[2][COLD], 0);
    row("QEMU by hand", hand, p50s[2][COLD]);
    printf("  libvirt local / QEMU by hand: %.2f\n", p50s[0][COLD] / hand);
    printf("summon to first HTTP byte, pool = 1 (a paused spare taken):\n");
    row("libvirt, local, from the pool", pooled[0], pooled[1]);
    row("qemu backend, from the pool", pooled[1], 0);
    for (int k = 0; k < 2; k++) {
      double lo = pool_t[k][0], hi = pool_t[k][0];
      for (int i = 1; i < n; i++)
        lo = pool_t[k][i] < lo ? pool_t[k][i] : lo,
        hi = pool_t[k][i] > hi ? pool_t[k][i] : hi;
      printf("  (%s: %d summons, %.1f to %.1f ms; cold / pool x%.0f)\n",
             k ? "qemu backend" : "libvirt", n, lo, hi,
             p50s[k ? 2 : 0][COLD] / pooled[k]);
    }
    printf("  (each spare holds the guest's 128 MiB)\n");
    printf("pause / resume to first HTTP byte:\n");
    backend_rows(PAUSE, "pause", RESUME, "resume");
    printf("suspend to disk / restore to first HTTP byte:\n");
    backend_rows(SAVE, "save", RESTORE, "restore");
  } else {
    status = 1;
  }
  jitsu_ctx_free(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  stop_daemon();
  char cmd[400];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd) == 0 ? status : 1;
}
