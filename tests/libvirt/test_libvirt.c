/*
 * The libvirt backend against real libvirt daemons: two private libvirtd
 * (tests/libvirt/vdaemon.c) listening on 127.0.0.1 and 127.0.0.2 stand for
 * two hosts; the guest is the small Linux guest of the examples (QEMU TCG,
 * HTTP on port 80 forwarded to a loopback port). The test checks what the
 * daemons say with its own libvirt connections.
 *
 * Environment (tests/libvirt/run.sh): JITSU_VDAEMON, JITSU_LINUX_KERNEL,
 * JITSU_LINUX_INITRD.
 */
#include "helpers.h"

#include <errno.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <unistd.h>

typedef struct daemon {
  const char *addr;
  char dir[300];
  char uri[128];
  pid_t pid; /* vdaemon's */
} daemon_t;

static daemon_t hosts[2] = {{.addr = "127.0.0.1"}, {.addr = "127.0.0.2"}};
static char top[256];
static int port;
static const char *kernel, *initrd;
/* This program, for a controller in a child (under memcheck, exec of
 * /proc/self/exe would start valgrind's tool itself). */
static char self[4096];

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && v[0] ? v : NULL;
}

static void quiet(void *data, virErrorPtr e) {}

/* Whether a libvirt client can talk to (d) now. */
static bool answers(daemon_t *d) {
  virConnectPtr c = virConnectOpen(d->uri);
  if (c == NULL)
    return false;
  virConnectClose(c);
  return true;
}

static bool wait_answers(daemon_t *d, bool want, int ms) {
  for (int t = 0; t < ms; t += 50) {
    if (answers(d) == want)
      return true;
    usleep(50000);
  }
  return false;
}

static int daemon_start(daemon_t *d) {
  snprintf(d->dir, sizeof(d->dir), "%s/%s", top, d->addr);
  snprintf(d->uri, sizeof(d->uri), "qemu+tcp://%s:%d/system", d->addr, port);
  char p[16];
  snprintf(p, sizeof(p), "%d", port);
  d->pid = fork();
  if (d->pid == 0) {
    execl(env("JITSU_VDAEMON"), "vdaemon", d->dir, d->addr, p, (char *)NULL);
    _exit(127);
  }
  return d->pid > 0 && wait_answers(d, true, 30000) ? 0 : -1;
}

static void daemon_signal(daemon_t *d, int sig) {
  if (d->pid > 0)
    kill(d->pid, sig);
}

/* Every domain (running or defined) on (d). */
static int domains_on(daemon_t *d) {
  virConnectPtr c = virConnectOpen(d->uri);
  if (c == NULL)
    return -1;
  virDomainPtr *list = NULL;
  int n = virConnectListAllDomains(c, &list, 0);
  for (int i = 0; i < n; i++)
    virDomainFree(list[i]);
  free(list);
  virConnectClose(c);
  return n;
}

/* The state of domain (name) on (d): a VIR_DOMAIN_* state, or -1. */
/* The libvirt backend's metadata namespace (jitsu.conf(5)). */
#define LV_POOL_NS_TEST "https://jitsu.invalid/libvirt/pool"

static int domain_state(daemon_t *d, const char *name) {
  virConnectPtr c = virConnectOpen(d->uri);
  if (c == NULL)
    return -1;
  int state = -1, reason;
  virDomainPtr dom = virDomainLookupByName(c, name);
  if (dom != NULL) {
    if (virDomainGetState(dom, &state, &reason, 0) < 0)
      state = -1;
    virDomainFree(dom);
  }
  virConnectClose(c);
  return state;
}

/* Destroy and undefine every domain on (d) (cleanup after a failure). */
static void sweep(daemon_t *d) {
  virConnectPtr c = virConnectOpen(d->uri);
  if (c == NULL)
    return;
  virDomainPtr *list = NULL;
  int n = virConnectListAllDomains(c, &list, 0);
  for (int i = 0; i < n; i++) {
    virDomainDestroy(list[i]);
    virDomainUndefineFlags(list[i], VIR_DOMAIN_UNDEFINE_MANAGED_SAVE);
    virDomainFree(list[i]);
  }
  free(list);
  virConnectClose(c);
}

static int port_free_on(const char *addr, int p) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(p)};
  inet_pton(AF_INET, addr, &sa.sin_addr);
  int ok = s >= 0 && bind(s, (struct sockaddr *)&sa, sizeof(sa)) == 0;
  if (s >= 0)
    close(s);
  return ok;
}

static int group_setup(void **state) {
  virSetErrorFunc(NULL, quiet);
  snprintf(top, sizeof(top), "/tmp/jitsu-libvirt.XXXXXX");
  if (mkdtemp(top) == NULL)
    return -1;
  do
    port = free_port();
  while (!port_free_on("127.0.0.2", port));
  for (int i = 0; i < 2; i++)
    if (daemon_start(&hosts[i]) < 0) {
      fprintf(stderr, "libvirtd at %s did not answer: see %s/libvirtd.log\n",
              hosts[i].addr, hosts[i].dir);
      return -1;
    }
  return 0;
}

static int group_teardown(void **state) {
  for (int i = 0; i < 2; i++) {
    if (hosts[i].pid <= 0)
      continue;
    daemon_signal(&hosts[i], SIGUSR2); /* up, to sweep it */
    if (wait_answers(&hosts[i], true, 10000))
      sweep(&hosts[i]);
    daemon_signal(&hosts[i], SIGTERM);
    waitpid(hosts[i].pid, NULL, 0);
  }
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", top);
  return system(cmd) == 0 ? 0 : -1;
}

/* Each test leaves no domain behind, whatever happened. */
static int teardown(void **state) {
  int r = fixture_teardown(state);
  for (int i = 0; i < 2; i++)
    sweep(&hosts[i]);
  return r;
}

/* (text) contains (want), else fail saying what it was. */
#define has(text, want)                                                        \
  do {                                                                         \
    const char *t_ = (text);                                                   \
    if (strstr(t_, (want)) == NULL)                                            \
      fail_msg("'%s' lacks '%s'", t_, (want));                                 \
  } while (0)

static void stop_ok(fixture *f, jitsu_vm *vm, jitsu_stop_mode mode) {
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_stop(vm, mode, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 30000));
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_STOPPED);
}

/* A vm section of the Linux guest on (hosts) with HTTP on (port). */
static void web_vm(char *out, size_t size, const char *name, int http,
                   const char *host_lines, const char *extra) {
  snprintf(out, size,
           "[vm %s]\nbackend = libvirt\n%stype = qemu\nkernel = %s\n"
           "initrd = %s\ncmdline = console=ttyS0 panic=-1 quiet jname=%s\n"
           "memory = 128M\nnetwork = user\nforward = 127.0.0.1:%d:80\n"
           "ready = marker+http:127.0.0.1:%d/\nready-timeout = 60s\n"
           "stop-grace = 5s\n%s",
           name, host_lines, kernel, initrd, name, http, http, extra);
}

static void body_is(int http, const char *want) {
  char body[128] = "";
  assert_int_equal(http_get(http, body, sizeof(body)), 0);
  assert_string_equal(body, want);
}

/* Load (name), the Linux guest on (host_lines) with (extra) (the text
 * also into (conf)), summon it and see its page; its HTTP port. */
static int web_up(fixture *f, const char *name, const char *host_lines,
                  const char *extra, char *conf, size_t size) {
  int http = free_port();
  char want[96];
  web_vm(conf, size, name, http, host_lines, extra);
  assert_int_equal(fixture_load(f, "%s", conf), 0);
  summon_ok(f, name, 60000);
  snprintf(want, sizeof(want), "hello from %s", name);
  body_is(http, want);
  return http;
}

static const char *vm_instance(jitsu_vm *vm) {
  static jitsu_vm_info info;
  info.version = JITSU_VM_INFO_VERSION;
  jitsu_vm_info_get(vm, &info);
  return info.instance;
}

/* Create to HTTP, pause and continue, save to disk and restore (a request
 * served after it), shut down, destroy. */
static void test_lifecycle(void **state) {
  fixture *f = *state;
  char conf[2048], hl[256];
  snprintf(hl, sizeof(hl), "host = %s\n", hosts[0].uri);
  int http = web_up(f, "web", hl, "suspend = memory\n", conf, sizeof(conf));
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "web");
  has(vm_instance(vm), hosts[0].uri);
  assert_int_equal(domain_state(&hosts[0], "web"), VIR_DOMAIN_RUNNING);
  assert_int_equal(domains_on(&hosts[1]), 0);

  verb_ok(f, vm, jitsu_vm_suspend, 30000);
  assert_int_equal(domain_state(&hosts[0], "web"), VIR_DOMAIN_PAUSED);
  verb_ok(f, vm, jitsu_vm_resume, 30000);
  body_is(http, "hello from web");

  /* Graceful shutdown: the guest's acpid powers it off. */
  stop_ok(f, vm, JITSU_STOP_SHUTDOWN);
  has(vm_reason(vm), "powered off");
  assert_int_equal(domains_on(&hosts[0]), 0);

  vm = summon_ok(f, "web", 60000);
  body_is(http, "hello from web");
  stop_ok(f, vm, JITSU_STOP_DESTROY);
  assert_int_equal(domains_on(&hosts[0]), 0);
}

static void test_save_restore(void **state) {
  fixture *f = *state;
  char conf[2048], hl[256];
  snprintf(hl, sizeof(hl), "host = %s\n", hosts[1].uri);
  int http = web_up(f, "saved", hl, "suspend = disk\n", conf, sizeof(conf));
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "saved");
  verb_ok(f, vm, jitsu_vm_suspend, 60000);
  /* Off, defined only to keep its image. */
  assert_int_equal(domain_state(&hosts[1], "saved"), VIR_DOMAIN_SHUTOFF);
  has(vm_instance(vm), "(saved)");
  verb_ok(f, vm, jitsu_vm_resume, 60000);
  body_is(http, "hello from saved");
  assert_int_equal(domain_state(&hosts[1], "saved"), VIR_DOMAIN_RUNNING);
  /* Transient again: destroying it leaves nothing. */
  verb_ok(f, vm, jitsu_vm_suspend, 60000);
  stop_ok(f, vm, JITSU_STOP_DESTROY);
  has(vm_reason(vm), "saved state was removed");
  assert_int_equal(domains_on(&hosts[1]), 0);
}

/* least-loaded spreads guests; first fills the first host; a host that is
 * down is skipped and comes back; a daemon restart does not lose guests. */
static void test_placement_and_outage(void **state) {
  fixture *f = *state;
  int p1 = free_port(), p2 = free_port(), p3 = free_port();
  char a[2048], b[2048], c[2048], hl[512];
  snprintf(hl, sizeof(hl), "host = %s\nhost = %s\nplacement = least-loaded\n",
           hosts[0].uri, hosts[1].uri);
  web_vm(a, sizeof(a), "one", p1, hl, "");
  web_vm(b, sizeof(b), "two", p2, hl, "");
  snprintf(hl, sizeof(hl), "host = %s\nhost = %s\n", hosts[0].uri,
           hosts[1].uri);
  web_vm(c, sizeof(c), "three", p3, hl, "");
  assert_int_equal(fixture_load(f, "%s%s%s", a, b, c), 0);
  summon_ok(f, "one", 60000);
  jitsu_vm *two = summon_ok(f, "two", 60000);
  assert_int_equal(domains_on(&hosts[0]), 1);
  assert_int_equal(domains_on(&hosts[1]), 1);
  /* "first": the first host, while it is up... */
  jitsu_vm *three = summon_ok(f, "three", 60000);
  has(vm_instance(three), hosts[0].uri);
  stop_ok(f, three, JITSU_STOP_DESTROY);

  /* ...and the second while the first is down. Its guests keep running. */
  const char *on0 = strstr(vm_instance(two), hosts[0].uri) ? "two" : "one";
  daemon_signal(&hosts[0], SIGUSR1);
  assert_true(wait_answers(&hosts[0], false, 10000));
  three = summon_ok(f, "three", 60000);
  has(vm_instance(three), hosts[1].uri);
  jitsu_vm *stranded = jitsu_vm_find(f->ctx, on0);
  assert_int_equal(jitsu_vm_state(stranded), JITSU_STATE_READY);
  body_is(strcmp(on0, "one") == 0 ? p1 : p2,
          strcmp(on0, "one") == 0 ? "hello from one" : "hello from two");
  run_for(f, 300);
  has(vm_instance(stranded), "(host unreachable)");

  /* The daemon comes back: reconnected, the guest still there, and it can
   * be stopped through the new connection. */
  daemon_signal(&hosts[0], SIGUSR2);
  assert_true(wait_answers(&hosts[0], true, 30000));
  for (int i = 0; i < 200 && strstr(vm_instance(stranded), "unreachable"); i++)
    run_for(f, 100);
  assert_null(strstr(vm_instance(stranded), "unreachable"));
  assert_int_equal(jitsu_vm_state(stranded), JITSU_STATE_READY);
  assert_int_equal(domain_state(&hosts[0], on0), VIR_DOMAIN_RUNNING);
  stop_ok(f, stranded, JITSU_STOP_DESTROY);
  assert_int_equal(domain_state(&hosts[0], on0), -1);
}

/* A new controller finds the running guest by name and carries on. */
static void test_adopt(void **state) {
  fixture *f = *state;
  char conf[2048], hl[512];
  snprintf(hl, sizeof(hl), "host = %s\nhost = %s\n", hosts[0].uri,
           hosts[1].uri);
  int http = web_up(f, "kept", hl, "", conf, sizeof(conf));
  /* Drop the controller without stopping its guest. */
  jitsu_ctx_free(f->ctx);
  run_for(f, 200);
  assert_int_equal(fixture_ctx_new(f, &f->ctx), 0);
  assert_int_equal(domain_state(&hosts[0], "kept"), VIR_DOMAIN_RUNNING);
  assert_int_equal(fixture_load(f, "%s", conf), 0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "kept");
  /* The hosts are asked off the definition; a summon meanwhile waits for
   * the answer and gets the running guest, not a new one. */
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_STARTING);
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 30000));
  assert_int_equal(o.status, 0);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_READY);
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  assert_true(info.adopted);
  assert_int_equal(info.spawns, 0);
  body_is(http, "hello from kept");
  stop_ok(f, vm, JITSU_STOP_DESTROY);
  assert_int_equal(domains_on(&hosts[0]), 0);
}

static void test_bad_input(void **state) {
  fixture *f = *state;
  char path[400], conf[2048];
  /* A malformed XML file: a config error with its line. */
  snprintf(path, sizeof(path), "%s/bad.xml", f->dir);
  FILE *x = fopen(path, "w");
  assert_non_null(x);
  fputs("<domain type='qemu'>\n  <name>x</name>\n  <memory>1\n</domain>\n", x);
  fclose(x);
  assert_int_not_equal(fixture_load(f,
                                    "[vm bad]\nbackend = libvirt\nhost = %s\n"
                                    "xml = %s\nready = marker\n",
                                    hosts[0].uri, path),
                       0);
  has(f->err.message, "bad.xml:5: Premature end of data");
  /* Not a <domain>. */
  x = fopen(path, "w");
  fputs("<network><name>n</name></network>\n", x);
  fclose(x);
  assert_int_not_equal(fixture_load(f,
                                    "[vm bad]\nbackend = libvirt\nhost = %s\n"
                                    "xml = %s\n",
                                    hosts[0].uri, path),
                       0);
  has(f->err.message, "not <domain>");

  /* Well-formed, but libvirt refuses it: libvirt's message, nothing left.
   * An unknown host, a refused connection and a kernel that is not there
   * fail the summon with the message of each host. */
  x = fopen(path, "w");
  fprintf(x,
          "<domain type='qemu'><name>x</name><memory unit='MiB'>64</memory>"
          "<os><type arch='x86_64' machine='pc'>hvm</type>"
          "<kernel>%s</kernel></os>"
          "<devices><serial type='pty'/><disk type='file' device='disk'>"
          "<source file='/nonexistent/disk.img'/><target dev='vda' "
          "bus='virtio'/></disk></devices></domain>\n",
          kernel);
  fclose(x);
  snprintf(conf, sizeof(conf),
           "[vm nokernel]\nbackend = libvirt\nhost = %s\ntype = qemu\n"
           "kernel = /nonexistent/vmlinux\nready = marker\n",
           hosts[0].uri);
  assert_int_equal(
      fixture_load(f,
                   "[vm refused]\nbackend = libvirt\nhost = qemu+tcp://"
                   "127.0.0.1:1/system\nhost = qemu+unix:///"
                   "system?socket=/nonexistent/libvirt-sock\nkernel = "
                   "%s\nready = marker\n"
                   "[vm badxml]\nbackend = libvirt\nhost = %s\nxml = %s\n"
                   "ready = marker\nready-timeout = 20s\n%s",
                   kernel, hosts[1].uri, path, conf),
      0);
  summon_fails(f, "refused", "127.0.0.1:1", 60000);
  has(vm_reason(jitsu_vm_find(f->ctx, "refused")), "/nonexistent/libvirt-sock");
  summon_fails(f, "badxml", "/nonexistent/disk.img", 60000);
  summon_fails(f, "nokernel", "/nonexistent", 60000);
  assert_int_equal(domains_on(&hosts[0]), 0);
  assert_int_equal(domains_on(&hosts[1]), 0);
}

/* ---- pools ------------------------------------------------------------- */

/* The names of the domains on (d) that start with (prefix), paused or
 * all, comma-separated, sorted as libvirt lists them; (ready): only those
 * our metadata marks ready. */
static void names_on(daemon_t *d, const char *prefix, bool paused, bool ready,
                     char *out, size_t size) {
  out[0] = '\0';
  virConnectPtr c = virConnectOpen(d->uri);
  if (c == NULL)
    return;
  virDomainPtr *list = NULL;
  int n = virConnectListAllDomains(
      c, &list, paused ? VIR_CONNECT_LIST_DOMAINS_PAUSED : 0);
  for (int i = 0; i < n; i++) {
    const char *name = virDomainGetName(list[i]);
    char *meta =
        ready ? virDomainGetMetadata(list[i], VIR_DOMAIN_METADATA_ELEMENT,
                                     LV_POOL_NS_TEST, 0)
              : NULL;
    bool marked = meta != NULL && strstr(meta, "state=\"ready\"") != NULL;
    free(meta);
    if (strncmp(name, prefix, strlen(prefix)) == 0 && (!ready || marked))
      snprintf(out + strlen(out), size - strlen(out), "%s%s", out[0] ? "," : "",
               name);
    virDomainFree(list[i]);
  }
  free(list);
  virConnectClose(c);
}

/* The maximum memory of domain (name) on (d) in MiB, or -1. */
static long domain_mib(daemon_t *d, const char *name) {
  virConnectPtr c = virConnectOpen(d->uri);
  long mib = -1;
  virDomainPtr dom = c ? virDomainLookupByName(c, name) : NULL;
  if (dom != NULL) {
    mib = (long)(virDomainGetMaxMemory(dom) >> 10);
    virDomainFree(dom);
  }
  if (c != NULL)
    virConnectClose(c);
  return mib;
}

/* --controller CONF: a controller of its own (the test SIGKILLs it). */
static int controller(const char *conf, const char *state_dir) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  jitsu_ctx_options o = JITSU_CTX_OPTIONS_INIT;
  o.state_dir = state_dir;
  jitsu_ctx *ctx;
  jitsu_error err;
  if (jitsu_ctx_new(&loop, &o, &ctx) < 0)
    return 1;
  jitsu_ctx_set_logger(ctx, jitsu_log_stderr, "controller",
                       getenv("JITSU_TEST_VERBOSE") ? JITSU_LOG_DEBUG
                                                    : JITSU_LOG_WARNING);
  if (jitsu_config_load(ctx, conf, &err) < 0) {
    fprintf(stderr, "controller: %s\n", err.message);
    return 1;
  }
  uv_timer_t keep; /* the loop runs until the test kills it */
  uv_timer_init(&loop, &keep);
  uv_timer_start(&keep, (uv_timer_cb)abort, 600000, 0);
  return uv_run(&loop, UV_RUN_DEFAULT);
}

/* pool = 2: spares filled by a controller that is then SIGKILLed are
 * adopted by the next; a summon takes one (its domain keeps the spare's
 * name, the forward is added to it) and the pool refills; a spare
 * destroyed from outside is replaced; a reload that changes the vm
 * replaces its spares; a freed ctx destroys them. */
/* The pid of (d)'s libvirtd (vdaemon writes it), or -1. */
static pid_t daemon_pid(daemon_t *d) {
  char path[400];
  snprintf(path, sizeof(path), "%s/libvirtd.pid", d->dir);
  FILE *fp = fopen(path, "r");
  int pid = -1;
  if (fp != NULL) {
    if (fscanf(fp, "%d", &pid) != 1)
      pid = -1;
    fclose(fp);
  }
  return pid;
}

/* A controller (this program, --controller CONF) fills the pool of vm p
 * of (conf) on host 0 and is killed with SIGKILL once both spares are
 * paused at their ready point: the spares are left, their names in
 * (names). */
static void leave_spares(fixture *f, const char *conf, char *names,
                         size_t size) {
  pid_t child = fork();
  if (child == 0) {
    char sd[400];
    snprintf(sd, sizeof(sd), "%s/child-state", f->dir);
    execl(self, "test_libvirt", "--controller", conf, sd, (char *)NULL);
    _exit(127);
  }
  assert_true(child > 0);
  for (int i = 0; i < 1200; i++) {
    names_on(&hosts[0], "p.spare", true, true, names, size);
    if (strcmp(names, "p.spare1,p.spare2") == 0 ||
        strcmp(names, "p.spare2,p.spare1") == 0)
      break;
    usleep(100000);
  }
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  has(names, "p.spare1");
  has(names, "p.spare2");
  assert_int_equal(domain_state(&hosts[0], "p"), -1);
}

/* Every ready spare of live (vm) was warmed up before its pause (the
 * check answered through a forward of its own), one adopted too: its
 * metadata says so. There is one at least. */
static void all_warmed(jitsu_vm *vm) {
  const char *inst = vm_instance(vm);
  const char *at = strstr(inst, ", pool ");
  unsigned ready = 0, size = 0, warmed = 0;
  if (at == NULL ||
      sscanf(at, ", pool %u/%u ready (%u warmed up)", &ready, &size, &warmed) !=
          3 ||
      ready == 0 || warmed != ready) {
    fprintf(stderr, "ERROR: not all its ready spares are warmed up: %s\n",
            inst);
    fail();
  }
}

static void test_pool(void **state) {
  fixture *f = *state;
  char conf[2048], hl[256], path[400], names[512];
  snprintf(hl, sizeof(hl), "host = %s\n", hosts[0].uri);
  /* Refused: out of range, and without a marker to pause at. */
  web_vm(conf, sizeof(conf), "p", 1, hl, "pool = 9\n");
  assert_int_not_equal(fixture_load(f, "%s", conf), 0);
  has(f->err.message, "is not 0 to 8");
  assert_int_not_equal(
      fixture_load(f,
                   "[vm p]\nbackend = libvirt\n%s"
                   "kernel = %s\nready = tcp:127.0.0.1:1\npool = 1\n",
                   hl, kernel),
      0);
  has(f->err.message, "ready = marker");

  int http = free_port();
  web_vm(conf, sizeof(conf), "p", http, hl, "pool = 2\n");
  snprintf(path, sizeof(path), "%s/pool.conf", f->dir);
  FILE *cf = fopen(path, "w");
  assert_non_null(cf);
  fputs(conf, cf);
  fclose(cf);
  leave_spares(f, path, names, sizeof(names));

  /* An adoption that gave up waiting (its host did not answer within
   * 5 s: libvirtd stopped) still adopts the spares its scan finds once
   * the host answers, and fills nothing under their names meanwhile: no
   * new domain. In a second context, freed after (its spares go). */
  pid_t lvd = daemon_pid(&hosts[0]);
  assert_true(lvd > 0);
  assert_int_equal(kill(lvd, SIGSTOP), 0);
  jitsu_ctx *late = NULL;
  assert_int_equal(fixture_ctx_new(f, &late), 0);
  int loaded = jitsu_config_load(late, path, &f->err);
  jitsu_vm *lvm = loaded == 0 ? jitsu_vm_find(late, "p") : NULL;
  int gave_up =
      lvm != NULL && run_until_state(f, lvm, JITSU_STATE_STOPPED, 15000);
  kill(lvd, SIGCONT);
  /* Checked after the context is freed (a failed assert would leave it
   * on the loop). */
  bool adopted = gave_up && wait_spares(f, lvm, 2, 30000);
  run_for(f, 500);
  int doms = domains_on(&hosts[0]);
  char again[512];
  names_on(&hosts[0], "p.spare", true, true, again, sizeof(again));
  jitsu_ctx_free(late);
  for (int i = 0; i < 100 && domains_on(&hosts[0]) > 0; i++)
    run_for(f, 100);
  assert_int_equal(loaded, 0);
  assert_true(gave_up);
  assert_true(adopted);
  assert_int_equal(doms, 2);
  has(again, "p.spare1");
  has(again, "p.spare2");
  assert_int_equal(domains_on(&hosts[0]), 0);
  leave_spares(f, path, names, sizeof(names));

  /* Adopted as they are: no new domain. (The loop's time is stale after
   * the wait above: the adoption's bound must not start from it.) */
  uv_update_time(&f->loop);
  assert_int_equal(fixture_load(f, "%s", conf), 0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "p");
  assert_true(wait_spares(f, vm, 2, 30000));
  run_for(f, 500);
  assert_int_equal(domains_on(&hosts[0]), 2);
  size_t n, filling;
  uint64_t mem;
  jitsu_vm_spares(vm, &n, &filling, &mem);
  assert_int_equal(mem, 2 * 128ull << 20);

  /* Two summons take one each (the second while the refill still boots,
   * or after). */
  for (int round = 0; round < 2; round++) {
    if (round > 0)
      stop_ok(f, vm, JITSU_STOP_DESTROY);
    uint64_t t0 = uv_hrtime();
    summon_ok(f, "p", 60000);
    fprintf(stderr, "# summon from the pool to ready: %.1f ms (%s)\n",
            (uv_hrtime() - t0) / 1e6, vm_instance(vm));
    body_is(http, "hello from p");
    has(vm_instance(vm), "taken");
    if (round == 0) /* the other adopted spare is ready */
      all_warmed(vm);
  }
  const char *inst = vm_instance(vm);
  has(inst, "domain p.spare");
  has(inst, "taken");
  char taken[32];
  const char *at = strstr(inst, "p.spare");
  snprintf(taken, sizeof(taken), "%.*s", (int)strcspn(at, " ,"), at);
  assert_int_equal(domain_state(&hosts[0], taken), VIR_DOMAIN_RUNNING);
  assert_int_equal(domain_state(&hosts[0], "p"), -1);
  /* ...and the pool refills with new domains, warmed up too. */
  assert_true(wait_spares(f, vm, 2, 120000));
  assert_int_equal(domains_on(&hosts[0]), 3);
  has(vm_instance(vm), "pool 2/2 ready (2 warmed up)");

  /* A spare destroyed from outside is replaced. */
  virConnectPtr c = virConnectOpen(hosts[0].uri);
  assert_non_null(c);
  names_on(&hosts[0], "p.spare", true, true, names, sizeof(names));
  char victim[32];
  snprintf(victim, sizeof(victim), "%.*s", (int)strcspn(names, ","), names);
  virDomainPtr d = virDomainLookupByName(c, victim);
  assert_non_null(d);
  assert_int_equal(virDomainDestroy(d), 0);
  virDomainFree(d);
  virConnectClose(c);
  run_for(f, 1000);
  assert_true(wait_spares(f, vm, 2, 90000));
  assert_int_equal(domains_on(&hosts[0]), 3);

  /* The taken guest stops like any: its domain goes. */
  stop_ok(f, vm, JITSU_STOP_DESTROY);
  assert_int_equal(domain_state(&hosts[0], taken), -1);
  assert_int_equal(domains_on(&hosts[0]), 2);

  /* A reload that changes the vm replaces its spares. */
  web_vm(conf, sizeof(conf), "p", http, hl, "pool = 2\n");
  char *m = strstr(conf, "memory = 128M");
  assert_non_null(m);
  memcpy(m, "memory = 160M", 13);
  cf = fopen(f->config, "w");
  assert_non_null(cf);
  fputs(conf, cf);
  fclose(cf);
  assert_int_equal(jitsu_config_reload(f->ctx, NULL, NULL, &f->err), 0);
  /* The new spares boot one at a time: one destroyed from outside while it
   * boots (its console open) is replaced too. */
  bool hit = false;
  for (int i = 0; i < 300 && !hit; i++) {
    run_for(f, 100);
    names_on(&hosts[0], "p.spare", false, false, names, sizeof(names));
    for (char *tok = strtok(names, ","); tok != NULL && !hit;
         tok = strtok(NULL, ","))
      if (domain_state(&hosts[0], tok) == VIR_DOMAIN_RUNNING &&
          domain_mib(&hosts[0], tok) == 160) {
        c = virConnectOpen(hosts[0].uri);
        assert_non_null(c);
        d = virDomainLookupByName(c, tok);
        hit = d != NULL && virDomainDestroy(d) == 0;
        if (d != NULL)
          virDomainFree(d);
        virConnectClose(c);
      }
  }
  assert_true(hit);
  run_for(f, 1000);
  assert_true(wait_spares(f, vm, 2, 120000));
  names_on(&hosts[0], "p.spare", true, false, names, sizeof(names));
  char one[32];
  snprintf(one, sizeof(one), "%.*s", (int)strcspn(names, ","), names);
  assert_int_equal(domain_mib(&hosts[0], one), 160);
  assert_int_equal(domains_on(&hosts[0]), 2);

  /* A freed ctx destroys its spares. */
  jitsu_ctx_free(f->ctx);
  f->ctx = NULL;
  for (int i = 0; i < 100 && domains_on(&hosts[0]) > 0; i++)
    run_for(f, 100);
  assert_int_equal(domains_on(&hosts[0]), 0);
  assert_int_equal(fixture_ctx_new(f, &f->ctx), 0);
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "--controller") == 0)
    return controller(argv[2], argv[3]);
  if (geteuid() != 0) {
    fprintf(stderr, "skipped: the libvirt tests start their own libvirtd "
                    "daemons, which needs root\n");
    return 77;
  }
  if (access("/usr/sbin/libvirtd", X_OK) != 0) {
    fprintf(stderr,
            "skipped: no /usr/sbin/libvirtd "
            "(apt-get install libvirt-daemon libvirt-daemon-driver-qemu)\n");
    return 77;
  }
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) {
    fprintf(stderr, "cannot read /proc/self/exe: %s\n", strerror(errno));
    return 1;
  }
  self[n] = '\0';
  kernel = env("JITSU_LINUX_KERNEL");
  initrd = env("JITSU_LINUX_INITRD");
  if (kernel == NULL || initrd == NULL || env("JITSU_VDAEMON") == NULL) {
    fprintf(stderr, "JITSU_LINUX_KERNEL/INITRD and JITSU_VDAEMON are not "
                    "set (run through meson test)\n");
    return 77;
  }
#define T(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_lifecycle), T(test_save_restore), T(test_placement_and_outage),
      T(test_adopt),     T(test_bad_input),    T(test_pool),
  };
  if (getenv("JITSU_LIBVIRT_TESTS") != NULL) /* a cmocka filter, by hand */
    cmocka_set_test_filter(getenv("JITSU_LIBVIRT_TESTS"));
  return cmocka_run_group_tests_name("libvirt", tests, group_setup,
                                     group_teardown);
}
