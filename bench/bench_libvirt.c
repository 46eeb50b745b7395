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
 * again), after one untimed round.
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

typedef struct result {
  double cold, pause, unpause, save, restore;
} result;

static int failed(jitsu_vm *vm, const char *what) {
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  fprintf(stderr, "bench_libvirt: %s: %s failed: %s\n", info.name, what,
          info.reason);
  return -1;
}

/* One cold summon of (name), a pause and a resume: times into (r). */
static int cold_round(const char *name, int port, result *r) {
  jitsu_vm *vm = jitsu_vm_find(ctx, name);
  double t0 = now_ms();
  if (wait_verb(jitsu_vm_summon, vm) < 0)
    return failed(vm, "summon");
  if (http_first_byte(port, now_ms() + 60000) < 0)
    return failed(vm, "HTTP");
  r->cold = now_ms() - t0;
  t0 = now_ms();
  if (wait_verb(jitsu_vm_suspend, vm) < 0)
    return failed(vm, "suspend");
  r->pause = now_ms() - t0;
  t0 = now_ms();
  if (wait_verb(jitsu_vm_summon, vm) < 0 ||
      http_first_byte(port, now_ms() + 60000) < 0)
    return failed(vm, "resume");
  r->unpause = now_ms() - t0;
  destroy_vm(vm);
  return 0;
}

/* (n) suspend-to-disk / restore rounds of NAME-disk: p50s into (r). */
static int disk_rounds(const char *name, int port, int n, result *r) {
  char disk_name[64];
  snprintf(disk_name, sizeof(disk_name), "%s-disk", name);
  jitsu_vm *dvm = jitsu_vm_find(ctx, disk_name);
  double save[16], restore[16];
  if (wait_verb(jitsu_vm_summon, dvm) < 0 ||
      http_first_byte(port, now_ms() + 60000) < 0)
    return failed(dvm, "summon");
  for (int i = 0; i < n; i++) {
    double t0 = now_ms();
    if (wait_verb(jitsu_vm_suspend, dvm) < 0)
      return failed(dvm, "suspend to disk");
    save[i] = now_ms() - t0;
    t0 = now_ms();
    if (wait_verb(jitsu_vm_summon, dvm) < 0 ||
        http_first_byte(port, now_ms() + 60000) < 0)
      return failed(dvm, "restore");
    restore[i] = now_ms() - t0;
  }
  destroy_vm(dvm);
  r->save = p50(save, n);
  r->restore = p50(restore, n);
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

int main(int argc, char **argv) {
  int n = 5, opt;
  while ((opt = getopt(argc, argv, "n:")) != -1)
    if (opt == 'n')
      n = atoi(optarg);
  if (optind + 2 >= argc || n < 1 || n > 16) {
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
  int base = 21000 + (int)(getpid() % 4000) * 2;
  int lport = base, http = base + 1;
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
  result r[3], one;
  double cold[3][16], pause[3][16], unpause[3][16], hand_t[16], hand = -1;
  int status = cold_round(vms[0].name, http, &one);
  for (int i = 0; i < n && status == 0; i++) {
    for (int k = 0; k < 3 && status == 0; k++) {
      status = cold_round(vms[k].name, http, &one);
      cold[k][i] = one.cold;
      pause[k][i] = one.pause;
      unpause[k][i] = one.unpause;
    }
    if (status == 0 && (hand_t[i] = by_hand(kernel, initrd, http)) < 0)
      status = 1;
  }
  for (int k = 0; k < 3 && status == 0; k++) {
    r[k].cold = p50(cold[k], n);
    r[k].pause = p50(pause[k], n);
    r[k].unpause = p50(unpause[k], n);
    status = disk_rounds(vms[k].name, http, n, &r[k]);
  }
  if (status == 0)
    hand = p50(hand_t, n);
  if (status == 0 && hand > 0) {
    printf("Linux guest, machine pc, TCG; p50 of %d, ms; xN = against the "
           "qemu backend\n",
           n);
    printf("summon to first HTTP byte:\n");
    row("libvirt, local (qemu+unix)", r[0].cold, r[2].cold);
    row("libvirt, remote (qemu+tcp)", r[1].cold, r[2].cold);
    row("qemu backend", r[2].cold, 0);
    row("QEMU by hand", hand, r[2].cold);
    printf("  libvirt local / QEMU by hand: %.2f\n", r[0].cold / hand);
    const char *names[] = {"libvirt, local", "libvirt, remote", "qemu backend"};
    printf("pause / resume to first HTTP byte:\n");
    for (int i = 0; i < 3; i++) {
      char label[64];
      snprintf(label, sizeof(label), "%s: pause", names[i]);
      row(label, r[i].pause, i < 2 ? r[2].pause : 0);
      snprintf(label, sizeof(label), "%s: resume", names[i]);
      row(label, r[i].unpause, i < 2 ? r[2].unpause : 0);
    }
    printf("suspend to disk / restore to first HTTP byte:\n");
    for (int i = 0; i < 3; i++) {
      char label[64];
      snprintf(label, sizeof(label), "%s: save", names[i]);
      row(label, r[i].save, i < 2 ? r[2].save : 0);
      snprintf(label, sizeof(label), "%s: restore", names[i]);
      row(label, r[i].restore, i < 2 ? r[2].restore : 0);
    }
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
