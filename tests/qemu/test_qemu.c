/*
 * The qemu backend against real QEMU: the tiny PVH guest for the
 * lifecycle (it boots in tens of milliseconds) and the small Linux guest
 * for networking (a boot takes 1-3 s under TCG: few of them).
 *
 * Environment: JITSU_PVH_GUEST (the tiny guest's ELF), JITSU_LINUX_KERNEL
 * and JITSU_LINUX_INITRD (examples/guests/linux/build.sh; the Linux tests
 * skip without them).
 */
#include "helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && v[0] ? v : NULL;
}

static void stop_ok(fixture *f, jitsu_vm *vm, jitsu_stop_mode mode) {
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_stop(vm, mode, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 15000));
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_STOPPED);
}

/* The QEMU process of (pid) is gone (reaped or never there). */
/* (pid) exits: a ceiling of 30 s, not a speed (QEMU under TCG and ASan,
 * on a busy machine, can take seconds to finish). */
static void gone(int pid) {
  for (int i = 0; i < 3000 && pid_alive(pid); i++)
    usleep(10000);
  assert_false(pid_alive(pid));
}

static int file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (int)st.st_size : -1;
}

/* A vm section of the tiny guest: "[vm NAME]" plus (extra) lines. */
#define TINY(name, extra)                                                      \
  "[vm " name "]\nbackend = qemu\nkernel = %s\nmemory = 16M\nnet = none\n"     \
  "ready = marker\nready-timeout = 20s\nstop-grace = 300ms\n" extra

static void test_tiny_lifecycle(void **state) {
  fixture *f = *state;
  const char *k = env("JITSU_PVH_GUEST");
  assert_non_null(k);
  assert_int_equal(fixture_load(f, TINY("t", ""), k), 0);
  jitsu_vm *vm = summon_ok(f, "t", 20000);
  int pid = vm_pid(vm);
  assert_true(pid > 0 && pid_alive(pid));
  /* Pause in memory and continue. */
  verb_ok(f, vm, jitsu_vm_suspend, 5000);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_SUSPENDED);
  verb_ok(f, vm, jitsu_vm_resume, 5000);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_READY);
  assert_int_equal(vm_pid(vm), pid);
  /* The tiny guest ignores the power button: quit after the grace. */
  stop_ok(f, vm, JITSU_STOP_SHUTDOWN);
  assert_non_null(strstr(vm_reason(vm), "QEMU quit"));
  gone(pid);
  vm = summon_ok(f, "t", 20000);
  pid = vm_pid(vm);
  stop_ok(f, vm, JITSU_STOP_DESTROY);
  gone(pid);
}

/* QEMU killed from outside: failed with the signal; the next summon
 * starts it again. */
static void test_tiny_killed(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f, TINY("t", ""), env("JITSU_PVH_GUEST")), 0);
  jitsu_vm *vm = summon_ok(f, "t", 20000);
  int pid = vm_pid(vm);
  kill(pid, SIGKILL);
  assert_true(run_until_state(f, vm, JITSU_STATE_FAILED, 5000));
  assert_non_null(strstr(vm_reason(vm), "killed by signal 9"));
  vm = summon_ok(f, "t", 20000);
  assert_true(vm_pid(vm) != pid);
  stop_ok(f, vm, JITSU_STOP_DESTROY);
}

/* Suspend to disk: QEMU goes away, the state is in a file; resume
 * restores it in a new QEMU. */
static void test_tiny_suspend_to_disk(void **state) {
  fixture *f = *state;
  assert_int_equal(
      fixture_load(f, TINY("t", "suspend = disk\n"), env("JITSU_PVH_GUEST")),
      0);
  jitsu_vm *vm = summon_ok(f, "t", 20000);
  int pid = vm_pid(vm);
  verb_ok(f, vm, jitsu_vm_suspend, 20000);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_SUSPENDED);
  gone(pid);
  char image[400];
  snprintf(image, sizeof(image), "%s/state/qemu/t.suspend", f->dir);
  assert_true(file_size(image) > 1000);
  verb_ok(f, vm, jitsu_vm_resume, 20000);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_READY);
  int pid2 = vm_pid(vm);
  assert_true(pid2 > 0 && pid2 != pid);
  assert_int_equal(file_size(image), -1); /* used up */
  /* Suspended again, then stopped: the saved state goes. */
  verb_ok(f, vm, jitsu_vm_suspend, 20000);
  stop_ok(f, vm, JITSU_STOP_DESTROY);
  assert_int_equal(file_size(image), -1);
  gone(pid2);
}

/* snapshot-auto: the first boot saves an image; later summons restore it
 * (the guest does not boot again, so its marker is printed only once). */
static void test_tiny_snapshot_summons(void **state) {
  fixture *f = *state;
  char image[400], console[400];
  snprintf(image, sizeof(image), "%s/tiny.img", f->dir);
  snprintf(console, sizeof(console), "%s/state/qemu/t.console", f->dir);
  assert_int_equal(
      fixture_load(f, TINY("t", "snapshot = %s\nsnapshot-auto = yes\n"),
                   env("JITSU_PVH_GUEST"), image),
      0);
  jitsu_vm *vm = summon_ok(f, "t", 20000);
  for (int i = 0; i < 500 && file_size(image) <= 0; i++)
    run_for(f, 20);
  assert_true(file_size(image) > 1000);
  stop_ok(f, vm, JITSU_STOP_DESTROY);
  for (int round = 0; round < 3; round++) {
    vm = summon_ok(f, "t", 20000);
    assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_READY);
    stop_ok(f, vm, JITSU_STOP_DESTROY);
  }
  assert_int_equal(count_lines(console), 1);
  /* A broken image with a matching fingerprint: QEMU's own message, the
   * vm in failed, no QEMU left. */
  FILE *img = fopen(image, "w");
  fputs("not a migration stream\n", img);
  fclose(img);
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 20000));
  assert_int_equal(o.status, JITSU_EEXITED);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_FAILED);
  assert_non_null(strstr(vm_reason(vm), "QEMU exited with status 1"));
  assert_int_equal(vm_pid(vm), 0);
}

/* jitsu_vm_snapshot() on demand, and its errors. */
static void test_tiny_snapshot_on_demand(void **state) {
  fixture *f = *state;
  char image[400];
  snprintf(image, sizeof(image), "%s/demand.img", f->dir);
  assert_int_equal(
      fixture_load(f, TINY("t", "snapshot = %s\n") TINY("plain", ""),
                   env("JITSU_PVH_GUEST"), image, env("JITSU_PVH_GUEST")),
      0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "t");
  assert_int_equal(jitsu_vm_snapshot(vm, NULL, NULL), JITSU_ESTATE);
  vm = summon_ok(f, "t", 20000);
  assert_int_equal(file_size(image), -1);
  verb_ok(f, vm, jitsu_vm_snapshot, 20000);
  assert_true(file_size(image) > 1000);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_READY);
  verb_ok(f, vm, jitsu_vm_suspend, 5000); /* it still runs: pause works */
  stop_ok(f, vm, JITSU_STOP_DESTROY);
  jitsu_vm *plain = summon_ok(f, "plain", 20000);
  assert_int_equal(jitsu_vm_snapshot(plain, NULL, NULL), -EINVAL);
  assert_non_null(strstr(jitsu_ctx_last_error(f->ctx), "names no snapshot"));
}

/* A controller that goes away leaves QEMU running; the next one adopts it
 * through the record and the QMP socket in the state directory. The
 * definition does not wait for the monitors: the vms are starting until
 * each QEMU answers. One QEMU is stopped (SIGSTOP), so its monitor never
 * answers: it is killed, and the summon that waited starts a new guest. */
static void test_tiny_adopt(void **state) {
  fixture *f = *state;
  const char *k = env("JITSU_PVH_GUEST");
  assert_int_equal(
      fixture_load(f, TINY("t", "") TINY("p", "") TINY("h", ""), k, k, k), 0);
  jitsu_vm *vm = summon_ok(f, "t", 20000);
  int pid = vm_pid(vm);
  jitsu_vm *p = summon_ok(f, "p", 20000);
  verb_ok(f, p, jitsu_vm_suspend, 5000);
  int ppid = vm_pid(p);
  int hpid = vm_pid(summon_ok(f, "h", 20000));
  jitsu_ctx_free(f->ctx);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_true(pid_alive(pid));
  assert_int_equal(kill(hpid, SIGSTOP), 0);
  assert_int_equal(fixture_ctx_new(f, &f->ctx), 0);
  assert_int_equal(jitsu_config_load(f->ctx, f->config, &f->err), 0);
  vm = jitsu_vm_find(f->ctx, "t");
  p = jitsu_vm_find(f->ctx, "p");
  jitsu_vm *h = jitsu_vm_find(f->ctx, "h");
  assert_int_equal(jitsu_vm_state(h), JITSU_STATE_STARTING);
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_summon(h, outcome_cb, &o), 0);
  assert_true(run_until_state(f, vm, JITSU_STATE_READY, 10000));
  assert_int_equal(vm_pid(vm), pid);
  assert_true(run_until_state(f, p, JITSU_STATE_SUSPENDED, 10000));
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  assert_int_equal(jitsu_vm_info_get(p, &info), 0);
  assert_true(info.adopted);
  verb_ok(f, p, jitsu_vm_resume, 5000); /* the adopted monitor works */
  /* The stopped QEMU: killed after the monitor's timeout, then a new one. */
  assert_true(run_until(f, &o.done, 40000));
  assert_int_equal(o.status, 0);
  gone(hpid);
  assert_true(vm_pid(h) > 0 && vm_pid(h) != hpid);
  assert_int_equal(jitsu_vm_info_get(h, &info), 0);
  assert_false(info.adopted);
  stop_ok(f, vm, JITSU_STOP_DESTROY);
  stop_ok(f, p, JITSU_STOP_DESTROY);
  stop_ok(f, h, JITSU_STOP_DESTROY);
  gone(pid);
  gone(ppid);
}

/* The summon of (name) fails with (status) and (words); no QEMU left. */
static void fails_with(fixture *f, const char *name, int status,
                       const char *words) {
  assert_int_equal(summon_fails(f, name, words, 20000), status);
  assert_int_equal(vm_pid(jitsu_vm_find(f->ctx, name)), 0);
}

static void test_bad_input(void **state) {
  fixture *f = *state;
  const char *k = env("JITSU_PVH_GUEST");
  /* A kernel that is there when the config loads and gone at the summon
   * (a link to the tiny guest's, removed after the load). */
  char gone_kernel[400];
  snprintf(gone_kernel, sizeof(gone_kernel), "%s/gone-vmlinux", f->dir);
  assert_int_equal(symlink(k, gone_kernel), 0);
  int port = free_port();
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
  assert_int_equal(listen(lfd, 8), 0);
  assert_int_equal(
      fixture_load(
          f,
          TINY("nokernel", "") TINY(
              "badopt",
              "qemu-arg = -no-such-option\n") "[vm mute]\nbackend = "
                                              "qemu\nkernel = %s\nnet = none\n"
                                              "ready = marker\nready-timeout = "
                                              "1500ms\n"
                                              "console-marker = "
                                              "NEVER_PRINTED\n" TINY(
                                                  "noqemu", "qemu = "
                                                            "/nonexistent/"
                                                            "qemu\n") "[vm "
                                                                      "busy]"
                                                                      "\nbacken"
                                                                      "d = "
                                                                      "qemu\nke"
                                                                      "rnel = "
                                                                      "%s\nmemo"
                                                                      "ry = "
                                                                      "16M\n"
                                                                      "forward "
                                                                      "= "
                                                                      "tcp:127."
                                                                      "0.0.1:%"
                                                                      "d-:80\n"
                                                                      "ready = "
                                                                      "marker+"
                                                                      "tcp:127."
                                                                      "0.0.1:%"
                                                                      "d\nready"
                                                                      "-timeout"
                                                                      " = "
                                                                      "20s\n",
          gone_kernel, k, k, k, k, port, port),
      0);
  assert_int_equal(unlink(gone_kernel), 0);
  fails_with(f, "nokernel", -ENOENT, "cannot read the kernel");
  /* A forward's host port that something listens on already: it would
   * answer the readiness check in the guest's place. */
  char words[100];
  snprintf(words, sizeof(words), "TCP port 127.0.0.1:%d is in use already",
           port);
  fails_with(f, "busy", -EADDRINUSE, words);
  close(lfd);
  fails_with(f, "badopt", JITSU_EEXITED,
             "QEMU exited with status 1: qemu-system-x86_64: "
             "-no-such-option: invalid option");
  fails_with(f, "mute", JITSU_ETIMEDOUT, "not ready within 1500 ms");
  fails_with(f, "noqemu", -ENOENT,
             "cannot run QEMU: /nonexistent/qemu: No such file");
  /* Config errors name the key. */
  struct {
    const char *line, *key, *words;
  } bad[] = {
      {"accel = xen", "accel", "not auto, kvm or tcg"},
      {"memory = 1536K", "memory", "whole number of MiB"},
      {"net = bridge", "net", "not user, tap or none"},
      {"forward = tcp:127.0.0.1:80", "forward", "tcp:HOSTADDR:PORT-:GUESTPORT"},
      {"forward = tcp:127.0.0.1:80-:80,guestfwd=x", "forward", "not tcp:"},
      {"mac = 01:00:00:00:00:01", "mac", "unicast"},
      {"bridge = br0", "bridge", "needs net = tap"},
      {"net = tap\nready = marker\npool = 1", "pool",
       "a pool with net = tap needs a bridge"},
      {"pool = 1", "pool", "a point to pause its spares at"},
      {"pool = 9", "pool", "0 to 8"},
      {"snapshot = relative.img", "snapshot", "absolute"},
      {"snapshot-auto = yes", "snapshot-auto", "needs a snapshot path"},
      {"suspend = sometimes", "suspend", "not memory or disk"},
      {"vcpus = 0", "vcpus", "1 to 255"},
      {"qemu-arg = \"unbalanced", "qemu-arg", "quotes"},
      /* Files the guest needs are checked when the config loads. */
      {"initrd = /nonexistent/initrd", "initrd",
       "cannot read /nonexistent/initrd: No such file"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char text[600];
    snprintf(text, sizeof(text), "[vm x]\nbackend = qemu\nkernel = %s\n%s\n", k,
             bad[i].line);
    FILE *c = fopen(f->config, "w");
    fputs(text, c);
    fclose(c);
    jitsu_ctx *ctx;
    assert_int_equal(fixture_ctx_new(f, &ctx), 0);
    jitsu_error err;
    int r = jitsu_config_load(ctx, f->config, &err);
    if (r == 0 || strcmp(err.key, bad[i].key) != 0 ||
        strstr(err.message, bad[i].words) == NULL)
      fprintf(stderr, "'%s': %d %s: %s\n", bad[i].line, r, err.key,
              err.message);
    assert_true(r < 0);
    assert_string_equal(err.key, bad[i].key);
    assert_non_null(strstr(err.message, bad[i].words));
    jitsu_ctx_free(ctx);
  }
  FILE *c = fopen(f->config, "w");
  fputs("[vm x]\nbackend = qemu\nkernel = /nonexistent/vmlinux\n", c);
  fclose(c);
  jitsu_ctx *ctx;
  assert_int_equal(fixture_ctx_new(f, &ctx), 0);
  jitsu_error err;
  assert_int_equal(jitsu_config_load(ctx, f->config, &err), -ENOENT);
  assert_string_equal(err.key, "kernel");
  assert_int_equal(err.line, 3);
  assert_non_null(strstr(err.message, "cannot read /nonexistent/vmlinux"));
  jitsu_ctx_free(ctx);
}

/* The Linux guest: boot to HTTP through a forwarded port (marker, then a
 * real request), an on-demand snapshot, suspend to disk and a request
 * answered after the restore, and a later summon restored from the image. */
static void test_linux_http(void **state) {
  fixture *f = *state;
  const char *kernel = env("JITSU_LINUX_KERNEL");
  const char *initrd = env("JITSU_LINUX_INITRD");
  if (kernel == NULL || initrd == NULL) {
    skip_because("no Linux guest (JITSU_LINUX_KERNEL, JITSU_LINUX_INITRD)");
    return;
  }
  int port = free_port();
  char image[400], body[128];
  snprintf(image, sizeof(image), "%s/web.img", f->dir);
  assert_int_equal(
      fixture_load(f,
                   "[vm web]\nbackend = qemu\nkernel = %s\ninitrd = %s\n"
                   "cmdline = console=ttyS0 panic=-1 quiet jname=web\n"
                   "tsc-hint = yes\nforward = tcp:127.0.0.1:%d-:80\n"
                   "ready = marker+http:127.0.0.1:%d/\nready-timeout = 60s\n"
                   "suspend = disk\nsnapshot = %s\nstop-grace = 2s\n",
                   kernel, initrd, port, port, image),
      0);
  jitsu_vm *vm = summon_ok(f, "web", 60000);
  assert_int_equal(http_get(port, body, sizeof(body)), 0);
  assert_string_equal(body, "hello from web");
  verb_ok(f, vm, jitsu_vm_snapshot, 30000);
  assert_true(file_size(image) > 1000000);
  assert_int_equal(http_get(port, body, sizeof(body)), 0);
  int pid = vm_pid(vm);
  verb_ok(f, vm, jitsu_vm_suspend, 30000);
  gone(pid);
  verb_ok(f, vm, jitsu_vm_resume, 30000);
  assert_int_equal(http_get(port, body, sizeof(body)), 0);
  assert_string_equal(body, "hello from web");
  stop_ok(f, vm, JITSU_STOP_DESTROY);
  vm = summon_ok(f, "web", 30000); /* from the image */
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  fprintf(stderr, "linux guest: summon from the snapshot image in %llu ms\n",
          (unsigned long long)info.last_start_ms);
  assert_int_equal(http_get(port, body, sizeof(body)), 0);
  assert_string_equal(body, "hello from web");
  /* A shutdown: the guest powers off on ACPI's button, QEMU exits by
   * itself and closes its monitor first; that is a clean end. */
  stop_ok(f, vm, JITSU_STOP_SHUTDOWN);
  assert_string_equal(vm_reason(vm), "the guest powered off");
}

/* The unikernel under KVM where /dev/kvm is usable (this machine's kvm_pvm
 * runs it too), and under TCG: both answer HTTP through a forward. */
static void test_unikernel_kvm_and_tcg(void **state) {
  fixture *f = *state;
  const char *uni = env("JITSU_UNIKERNEL");
  assert_non_null(uni);
  bool kvm = access("/dev/kvm", R_OK | W_OK) == 0;
  if (!kvm)
    fprintf(stderr, "note: /dev/kvm is not usable: TCG only\n");
  int pk = free_port(), pt = free_port();
  assert_int_equal(
      fixture_load(f,
                   "[vm k]\nbackend = qemu\nkernel = %s\nmemory = 16M\n"
                   "accel = kvm\ncpu = host,-arch-capabilities\n"
                   "cmdline = jitsu.body=kvm\nforward = tcp:127.0.0.1:%d-:80\n"
                   "ready = marker+http:127.0.0.1:%d/\nready-timeout = 30s\n"
                   "[vm t]\nbackend = qemu\nkernel = %s\nmemory = 16M\n"
                   "accel = tcg\ntsc-hint = yes\ncmdline = jitsu.body=tcg\n"
                   "forward = tcp:127.0.0.1:%d-:80\n"
                   "ready = marker+http:127.0.0.1:%d/\n",
                   uni, pk, pk, uni, pt, pt),
      0);
  char body[64];
  jitsu_vm *vm = summon_ok(f, "t", 20000);
  assert_int_equal(http_get(pt, body, sizeof(body)), 0);
  assert_string_equal(body, "tcg");
  stop_ok(f, vm, JITSU_STOP_DESTROY);
  if (kvm) {
    vm = summon_ok(f, "k", 30000);
    assert_int_equal(http_get(pk, body, sizeof(body)), 0);
    assert_string_equal(body, "kvm");
    stop_ok(f, vm, JITSU_STOP_DESTROY);
  }
}

/* A network namespace (ns) with a bridge br0 up at (net).1/24: the
 * shell's status (0: made). */
static int make_netns(const char *ns, const char *net) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd),
           "ip netns add %s && ip -n %s link set lo up && "
           "ip -n %s link add br0 type bridge && "
           "ip -n %s addr add %s.1/24 dev br0 && "
           "ip -n %s link set br0 up",
           ns, ns, ns, ns, net, ns);
  return system(cmd);
}

/* The Linux guest's files, if tap tests can run here (else the test is
 * skipped). */
static bool tap_guest(const char **kernel, const char **initrd) {
  *kernel = env("JITSU_LINUX_KERNEL");
  *initrd = env("JITSU_LINUX_INITRD");
  if (*kernel != NULL && *initrd != NULL && geteuid() == 0)
    return true;
  skip_because("tap networking needs root and the Linux guest");
  return false;
}

/* Tap on a bridge inside a network namespace that the test makes. */
static void test_linux_tap_netns(void **state) {
  fixture *f = *state;
  const char *kernel, *initrd;
  if (!tap_guest(&kernel, &initrd))
    return;
  char ns[64], cmd[512], body[128] = "";
  snprintf(ns, sizeof(ns), "jitsu-test-%d", (int)getpid());
  int made = make_netns(ns, "10.77.0");
  if (made == 0) {
    if (fixture_load(f,
                     "[vm tap]\nbackend = qemu\nkernel = %s\ninitrd = %s\n"
                     "cmdline = console=ttyS0 panic=-1 quiet jname=tap "
                     "jip=10.77.0.2/24 jgw=10.77.0.1\n"
                     "tsc-hint = yes\nnet = tap\nbridge = br0\nnetns = %s\n"
                     "ready = marker\nready-timeout = 60s\n",
                     kernel, initrd, ns) == 0) {
      jitsu_vm *vm = summon_ok(f, "tap", 60000);
      snprintf(cmd, sizeof(cmd),
               "ip netns exec %s curl -s -m 5 --retry 5 --retry-connrefused "
               "http://10.77.0.2/",
               ns);
      command_output(cmd, body, sizeof(body));
      stop_ok(f, vm, JITSU_STOP_DESTROY);
    }
  }
  snprintf(cmd, sizeof(cmd), "ip netns del %s", ns);
  assert_int_equal(system(cmd), 0);
  assert_int_equal(made, 0);
  assert_string_equal(body, "hello from tap");
}

/* A pool with tap networking: spares share the vm's MAC and address, so a
 * spare's tap is on no bridge until it takes the vm's place. While the vm
 * is stopped one spare's tap joins the bridge (it holds the place); a
 * summon takes that spare, and the one filled after it stays off the
 * bridge while the vm runs. Tap needs root: in a namespace of the test's. */
static void test_linux_tap_pool(void **state) {
  fixture *f = *state;
  const char *kernel, *initrd;
  if (!tap_guest(&kernel, &initrd))
    return;
  char ns[64], cmd[512], on_bridge[3][128], body[2][128];
  memset(on_bridge, 0, sizeof(on_bridge));
  memset(body, 0, sizeof(body));
  snprintf(ns, sizeof(ns), "jitsu-pool-%d", (int)getpid());
  int made = make_netns(ns, "10.78.0"), filled = 0, refilled = 0;
  char bridged[300], get[300];
  /* The taps on br0, one line: "jitsu0 jitsu2" */
  snprintf(bridged, sizeof(bridged),
           "ip -n %s -o link show master br0 | awk -F': ' '{print $2}' | "
           "sed 's/@.*//' | sort | paste -sd' '",
           ns);
  snprintf(get, sizeof(get),
           "ip netns exec %s curl -s -m 5 --retry 5 --retry-connrefused "
           "http://10.78.0.2/",
           ns);
  jitsu_vm *vm = NULL;
  if (made == 0 &&
      fixture_load(f,
                   "[vm tapp]\nbackend = qemu\nkernel = %s\ninitrd = %s\n"
                   "cmdline = console=ttyS0 panic=-1 quiet jname=tapp "
                   "jip=10.78.0.2/24 jgw=10.78.0.1\n"
                   "tsc-hint = yes\nnet = tap\nbridge = br0\nnetns = %s\n"
                   "ready = marker\nready-timeout = 60s\npool = 1\n",
                   kernel, initrd, ns) == 0 &&
      (vm = jitsu_vm_find(f->ctx, "tapp")) != NULL) {
    filled = wait_spares(f, vm, 1, 90000);
    run_for(f, 300); /* the hold, right after the spare is ready */
    command_output(bridged, on_bridge[0], sizeof(on_bridge[0]));
    summon_ok(f, "tapp", 60000);
    command_output(get, body[0], sizeof(body[0]));
    refilled = wait_spares(f, vm, 1, 90000);
    command_output(bridged, on_bridge[1], sizeof(on_bridge[1]));
    stop_ok(f, vm, JITSU_STOP_DESTROY);
    run_for(f, 300);
    command_output(bridged, on_bridge[2], sizeof(on_bridge[2]));
    summon_ok(f, "tapp", 60000);
    command_output(get, body[1], sizeof(body[1]));
    stop_ok(f, vm, JITSU_STOP_DESTROY);
  }
  print_message("# taps on br0: stopped with a spare '%s', running '%s', "
                "stopped again '%s'\n",
                on_bridge[0], on_bridge[1], on_bridge[2]);
  if (vm != NULL)
    jitsu_vm_undefine(vm); /* its spare ends with it */
  snprintf(cmd, sizeof(cmd), "ip netns del %s", ns);
  assert_int_equal(system(cmd), 0);
  assert_int_equal(made, 0);
  assert_true(filled);
  assert_true(refilled);
  /* One tap on the bridge each time: the holding spare's, then the vm's
   * guest's (the refilled spare's is not there), then the new holder's
   * (the refilled spare's: another tap than the guest's, gone). */
  for (int i = 0; i < 3; i++) {
    assert_int_equal(strncmp(on_bridge[i], "jitsu", 5), 0);
    assert_null(strchr(on_bridge[i], ' '));
  }
  assert_string_equal(on_bridge[0], on_bridge[1]);
  assert_string_not_equal(on_bridge[1], on_bridge[2]);
  assert_string_equal(body[0], "hello from tapp");
  assert_string_equal(body[1], "hello from tapp");
}

int main(void) {
  if (env("JITSU_PVH_GUEST") == NULL) {
    fprintf(stderr, "JITSU_PVH_GUEST is not set (run through meson test)\n");
    return 77;
  }
#define T(fn)                                                                  \
  cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)
  const struct CMUnitTest tests[] = {
      T(test_tiny_lifecycle),
      T(test_tiny_killed),
      T(test_tiny_suspend_to_disk),
      T(test_tiny_snapshot_summons),
      T(test_tiny_snapshot_on_demand),
      T(test_tiny_adopt),
      T(test_bad_input),
      T(test_unikernel_kvm_and_tcg),
      T(test_linux_http),
      T(test_linux_tap_netns),
      T(test_linux_tap_pool),
  };
  return cmocka_run_group_tests_name("qemu", tests, NULL, NULL);
}
