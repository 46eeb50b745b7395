/*
 * The xl backend against a real Xen: this program runs inside dom0 of the
 * Xen test harness (tests/xen/run.sh boots Xen under QEMU) and prints TAP.
 * The guest is the harness's PV Linux guest: it writes data/jitsu-ready
 * and prints JITSU_READY once up, counts seconds in data/tick and obeys
 * data/command (crash, poweroff).
 *
 * Environment: JITSU_XEN_KERNEL, JITSU_XEN_RAMDISK (set by the harness).
 */
#include "helpers.h"

#include <errno.h>
#include <execinfo.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xenstore.h>

static const char *kernel, *ramdisk;

/* ---- the outside view: xl and XenStore -------------------------------- */

/* The domain id of (name) by `xl domid`, or -1 if there is none. */
static int domid_of(const char *name) {
  char cmd[128], out[32] = "";
  snprintf(cmd, sizeof(cmd), "xl domid %s 2>/dev/null", name);
  FILE *p = popen(cmd, "r");
  if (p == NULL)
    return -1;
  char *got = fgets(out, sizeof(out), p);
  int status = pclose(p);
  return got && status == 0 ? atoi(out) : -1;
}

/* Wait up to (ms) for (name)'s domain to be gone, running the loop (the
 * backend may be destroying it). */
static bool domain_gone(fixture *f, const char *name, int ms) {
  for (int i = 0; i < ms / 100; i++) {
    if (domid_of(name) < 0)
      return true;
    run_for(f, 100);
  }
  return domid_of(name) < 0;
}

static char *xs_get(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xs_get(const char *fmt, ...) {
  char path[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(path, sizeof(path), fmt, ap);
  va_end(ap);
  struct xs_handle *xs = xs_open(0);
  unsigned len;
  char *v = xs ? xs_read(xs, XBT_NULL, path, &len) : NULL;
  if (xs)
    xs_close(xs);
  return v;
}

static void xs_put(const char *path, const char *value) {
  struct xs_handle *xs = xs_open(0);
  assert_non_null(xs);
  assert_true(xs_write(xs, XBT_NULL, path, value, strlen(value)));
  xs_close(xs);
}

/* The owner of a XenStore node, or -errno. */
static int xs_owner(const char *path) {
  struct xs_handle *xs = xs_open(0);
  unsigned n = 0;
  struct xs_permissions *p =
      xs ? xs_get_permissions(xs, XBT_NULL, path, &n) : NULL;
  int owner = p && n ? (int)p[0].id : -ENOENT;
  free(p);
  if (xs)
    xs_close(xs);
  return owner;
}

/* The number of children of a XenStore node (0 if it is not there). */
static unsigned xs_count(const char *path) {
  struct xs_handle *xs = xs_open(0);
  unsigned n = 0;
  char **d = xs ? xs_directory(xs, XBT_NULL, path, &n) : NULL;
  free(d);
  if (xs)
    xs_close(xs);
  return d ? n : 0;
}

/* The guest's tick counter (seconds since its /init began), or -1. */
static int tick(jitsu_vm *vm) {
  int id = domid_of(jitsu_vm_name(vm));
  char *v = id >= 0 ? xs_get("/local/domain/%d/data/tick", id) : NULL;
  int t = v ? atoi(v) : -1;
  free(v);
  return t;
}

/* ---- verbs through libjitsu -------------------------------------------- */

static void stop_ok(fixture *f, jitsu_vm *vm, jitsu_stop_mode mode) {
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_stop(vm, mode, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 60000));
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_STOPPED);
  assert_true(domain_gone(f, jitsu_vm_name(vm), 5000));
}

/* A vm of the harness's guest: "[vm NAME]" plus (extra) lines. */
#define GUEST_MEM(name, mem, extra)                                            \
  "[vm " name "]\nbackend = xl\nkernel = %s\nramdisk = %s\n"                   \
  "cmdline = console=hvc0 quiet\nmemory = " mem "\nready = marker\n"           \
  "ready-timeout = 90s\nstop-grace = 30s\n" extra
#define GUEST(name, extra) GUEST_MEM(name, "128M", extra)

/* The channel tests' guest image: the harness's, with guest-chan. */
static const char *chan_ramdisk(void) {
  const char *rd = getenv("JITSU_XEN_CHAN_RAMDISK");
  assert_non_null(rd);
  return rd;
}

static int setup(void **state) {
  return fixture_setup(state);
}

/* Teardown also destroys any domain a failed test left behind. */
static int teardown(void **state) {
  fixture *f = *state;
  run_for(f, 10);
  int r = fixture_teardown(state);
  (void)!system("xl list | awk 'NR > 2 { print $1 }' | "
                "while read d; do xl destroy $d; done");
  return r;
}

/* Create to ready through the XenStore key; the state in XenStore;
 * pause and unpause (the guest's clock stops and goes on); a clean
 * shutdown through the PV control node. */
static void test_lifecycle_key(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f, GUEST("k", "ready-key = data/jitsu-ready\n"),
                                kernel, ramdisk),
                   0);
  jitsu_vm *vm = summon_ok(f, "k", 120000);
  int id = domid_of("k");
  assert_true(id > 0);
  char *v = xs_get("/jitsu/k/state");
  assert_non_null(v);
  assert_string_equal(v, "ready");
  free(v);
  v = xs_get("/jitsu/k/domid");
  assert_non_null(v);
  assert_int_equal(atoi(v), id);
  free(v);
  v = xs_get("/local/domain/%d/data/jitsu-ready", id);
  assert_non_null(v);
  free(v);

  verb_ok(f, vm, jitsu_vm_suspend, 10000);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_SUSPENDED);
  v = xs_get("/jitsu/k/state");
  assert_string_equal(v, "suspended");
  free(v);
  int t0 = tick(vm);
  run_for(f, 2500);
  assert_int_equal(tick(vm), t0);
  verb_ok(f, vm, jitsu_vm_resume, 10000);
  assert_int_equal(domid_of("k"), id);
  int t1 = t0;
  for (int i = 0; i < 100 && t1 <= t0; i++) {
    run_for(f, 100);
    t1 = tick(vm);
  }
  assert_true(t1 > t0);

  stop_ok(f, vm, JITSU_STOP_SHUTDOWN);
  fprintf(stderr, "shutdown: %s\n", vm_reason(vm));
  assert_non_null(strstr(vm_reason(vm), "powered off"));
  v = xs_get("/jitsu/k/state");
  assert_string_equal(v, "stopped");
  free(v);
}

/* Readiness by the console marker; destroy. */
static void test_console_marker(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f, GUEST("c", ""), kernel, ramdisk), 0);
  jitsu_vm *vm = summon_ok(f, "c", 120000);
  int id = domid_of("c");
  assert_true(id > 0);
  /* The marker comes after the key in the guest's /init. */
  char *v = xs_get("/local/domain/%d/data/jitsu-ready", id);
  assert_non_null(v);
  free(v);
  stop_ok(f, vm, JITSU_STOP_DESTROY);
}

/* Save to a file and restore: the domain is gone in between, and the
 * restored guest goes on counting from where it was. */
static void test_save_restore(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f,
                                GUEST("s", "ready-key = data/jitsu-ready\n"
                                           "suspend = disk\n"),
                                kernel, ramdisk),
                   0);
  jitsu_vm *vm = summon_ok(f, "s", 120000);
  int t0 = -1;
  for (int i = 0; i < 50 && t0 < 2; i++) {
    run_for(f, 100);
    t0 = tick(vm);
  }
  assert_true(t0 >= 2);
  verb_ok(f, vm, jitsu_vm_suspend, 60000);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_SUSPENDED);
  assert_true(domain_gone(f, "s", 5000));
  char image[400];
  snprintf(image, sizeof(image), "%s/state/xl/s.save", f->dir);
  struct stat st;
  assert_int_equal(stat(image, &st), 0);
  assert_true(st.st_size > 1 << 20);
  /* libxl's own stream, from its first byte */
  char ident[9] = "";
  FILE *img = fopen(image, "rb");
  assert_non_null(img);
  assert_int_equal(fread(ident, 1, 8, img), 8);
  fclose(img);
  fprintf(stderr, "image %s: %lld bytes, starts with '%.8s'\n", image,
          (long long)st.st_size, ident);
  assert_memory_equal(ident, "LibxlFmt", 8);
  verb_ok(f, vm, jitsu_vm_resume, 60000);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_READY);
  assert_true(domid_of("s") > 0);
  assert_int_not_equal(stat(image, &st), 0); /* used up */
  int t1 = -1;
  for (int i = 0; i < 100 && t1 <= t0; i++) {
    run_for(f, 100);
    t1 = tick(vm);
  }
  fprintf(stderr, "tick before save %d, after restore %d\n", t0, t1);
  assert_true(t1 > t0); /* counting on, not from 1 again */
  stop_ok(f, vm, JITSU_STOP_DESTROY);
}

/* A guest that crashes: failed, "crashed", no domain left. */
static void test_crash(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f, GUEST("x", "ready-key = data/jitsu-ready\n"),
                                kernel, ramdisk),
                   0);
  jitsu_vm *vm = summon_ok(f, "x", 120000);
  char path[64];
  snprintf(path, sizeof(path), "/local/domain/%d/data/command", domid_of("x"));
  xs_put(path, "crash");
  assert_true(run_until_state(f, vm, JITSU_STATE_FAILED, 30000));
  fprintf(stderr, "crash: %s\n", vm_reason(vm));
  assert_non_null(strstr(vm_reason(vm), "crashed"));
  assert_true(domain_gone(f, "x", 5000));
}

/* A new controller adopts the running domain (and a paused one). */
static void test_adopt(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f, GUEST("a", "ready-key = data/jitsu-ready\n"),
                                kernel, ramdisk),
                   0);
  jitsu_vm *vm = summon_ok(f, "a", 120000);
  int id = domid_of("a");
  verb_ok(f, vm, jitsu_vm_suspend, 10000);
  jitsu_ctx_free(f->ctx);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(domid_of("a"), id); /* the domain outlives its controller */
  assert_int_equal(fixture_ctx_new(f, &f->ctx), 0);
  assert_int_equal(jitsu_config_load(f->ctx, f->config, &f->err), 0);
  vm = jitsu_vm_find(f->ctx, "a");
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_SUSPENDED);
  verb_ok(f, vm, jitsu_vm_resume, 10000);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_READY);
  assert_int_equal(domid_of("a"), id);
  stop_ok(f, vm, JITSU_STOP_DESTROY);
}

/* An existing xl domain config file, read with libxlutil. */
static void test_xl_file(void **state) {
  fixture *f = *state;
  char cfg[400];
  snprintf(cfg, sizeof(cfg), "%s/guest.cfg", f->dir);
  FILE *fp = fopen(cfg, "w");
  assert_non_null(fp);
  fprintf(fp,
          "# an xl file\nname = \"other\"\ntype = \"pv\"\nkernel = \"%s\"\n"
          "ramdisk = \"%s\"\nextra = \"console=hvc0 quiet\"\nmemory = 128\n"
          "vcpus = 1\non_crash = \"preserve\"\n",
          kernel, ramdisk);
  fclose(fp);
  assert_int_equal(fixture_load(f,
                                "[vm file]\nbackend = xl\nconfig = %s\n"
                                "ready = marker\nready-key = data/jitsu-ready"
                                "\nready-timeout = 90s\n",
                                cfg),
                   0);
  jitsu_vm *vm = summon_ok(f, "file", 120000);
  assert_true(domid_of("file") > 0); /* named after the vm, not the file */
  assert_true(domid_of("other") < 0);
  stop_ok(f, vm, JITSU_STOP_DESTROY);
}

/* The summon of (name) fails with (words) and leaves no domain. */
static void fails_leaving_nothing(fixture *f, const char *name,
                                  const char *words) {
  summon_fails(f, name, words, 120000);
  bool gone = domain_gone(f, name, 10000);
  if (!gone)
    (void)!system(
        "xl list >&2; xenstore-ls -f /local/domain | grep -v '^/local/"
        "domain/0' | head -n 20 >&2");
  assert_true(gone);
}

/* Each bad input: a clear error, the vm failed, no domain left. */
static void test_bad_input(void **state) {
  fixture *f = *state;
  char cfg[400];
  snprintf(cfg, sizeof(cfg), "%s/bad.cfg", f->dir);
  FILE *fp = fopen(cfg, "w");
  assert_non_null(fp);
  fputs("kernel = \"/guest/vmlinux\"\nmemory = = 12\n", fp);
  fclose(fp);
  /* A bad xl file is a config error, with libxlutil's message. */
  assert_int_not_equal(
      fixture_load(f, "[vm b]\nbackend = xl\nconfig = %s\n", cfg), 0);
  fprintf(stderr, "bad file: %s\n", f->err.message);
  assert_non_null(strstr(f->err.message, "bad.cfg:2: config parsing error"));

  assert_int_equal(
      fixture_load(f,
                   GUEST("nokernel", "") "[vm never]\nbackend = xl\n"
                                         "kernel = %s\nramdisk = %s\n"
                                         "ready = marker\nready-key = "
                                         "data/never\nready-timeout = 25s\n",
                   "/guest/no-such-kernel", ramdisk, kernel, ramdisk),
      0);
  fails_leaving_nothing(f, "nokernel", "no-such-kernel");
  fails_leaving_nothing(f, "never", "not ready within");
}

/* More memory than Xen has: libxl's own message, nothing left. */
static void test_too_much_memory(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f,
                                "[vm huge]\nbackend = xl\nkernel = %s\n"
                                "ramdisk = %s\nmemory = 64G\nready = marker\n"
                                "ready-timeout = 60s\n",
                                kernel, ramdisk),
                   0);
  fails_leaving_nothing(f, "huge", "cannot create the domain");
}

/* ---- channels between domains ------------------------------------------ */

typedef struct xfer {
  size_t total, sent, got;
  uint32_t sum_sent, sum_got; /* a position-weighted checksum */
  int done, err, eof;
  jitsu_chan *c;
} xfer;

static uint8_t pattern(size_t i) {
  return (uint8_t)(i * 131 + (i >> 9));
}

static void xfer_read(jitsu_chan *c, const void *data, size_t len, int err,
                      void *arg) {
  xfer *x = arg;
  const uint8_t *p = data;
  for (size_t i = 0; i < len; i++, x->got++)
    x->sum_got = x->sum_got * 31 + p[i];
  if (len == 0) {
    x->eof = 1;
    x->err = err;
    x->done = 1;
  } else if (x->got >= x->total) {
    x->done = 1;
  }
}

static void xfer_pump(xfer *x) {
  uint8_t buf[65536];
  while (x->sent < x->total && jitsu_chan_write_queue_size(x->c) < (1 << 20)) {
    size_t n =
        x->total - x->sent < sizeof(buf) ? x->total - x->sent : sizeof(buf);
    for (size_t i = 0; i < n; i++) {
      buf[i] = pattern(x->sent + i);
      x->sum_sent = x->sum_sent * 31 + buf[i];
    }
    if (jitsu_chan_write(x->c, buf, n, NULL, NULL) < 0)
      return;
    x->sent += n;
  }
}

typedef struct conn {
  jitsu_chan *c;
  int err, done;
} conn;

static void connected(jitsu_chan *c, int err, void *arg) {
  conn *k = arg;
  k->c = c;
  k->err = err;
  k->done = 1;
}

/* Run (x) until done, feeding the writes, or until nothing came back for
 * (idle_ms): a ceiling on a stall, not on speed (nested TCG is slow). */
static void xfer_run(fixture *f, xfer *x, uint64_t idle_ms) {
  size_t last = x->got;
  for (uint64_t still = 0; still < idle_ms && !x->done;) {
    xfer_pump(x);
    run_for(f, 20);
    still = x->got != last ? 0 : still + 20;
    last = x->got;
  }
}

/* Connecting to "echo" summons the stopped vm of that name (the dom0
 * controller sees the request under /conduit); 8 MiB go through its
 * chan_echo and come back intact. Then the domain is destroyed in the
 * middle of a transfer: the channel ends promptly, and neither /conduit
 * nor our descriptors keep anything of it. */
static void test_chan_summon_and_destroy(void **state) {
  fixture *f = *state;
  const char *rd = chan_ramdisk();
  assert_int_equal(fixture_load(f,
                                /* room to unpack its initramfs (large
                                 * under ASan) */
                                GUEST_MEM("echo", "384M",
                                          "ready-key = data/jitsu-ready\n"
                                          "channel = echo\n"),
                                kernel, rd),
                   0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "echo");
  jitsu_chan_options o = JITSU_CHAN_OPTIONS_INIT;
  o.rendezvous = "xen";
  o.timeout_ms = 120000;
  static conn k; /* callbacks' state: never on the stack */
  k = (conn){0};
  assert_int_equal(
      jitsu_chan_connect(&f->loop, "echo", "p", &o, connected, &k, NULL), 0);
  assert_true(run_until(f, &k.done, 125000));
  if (k.err != 0) {
    fprintf(stderr, "connect: %s (vm %s: %s)\n", jitsu_strerror(k.err),
            jitsu_state_name(jitsu_vm_state(vm)), vm_reason(vm));
    (void)!system("tail -n 20 /var/log/xen/console/guest-echo.log >&2");
  }
  assert_int_equal(k.err, 0);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_READY);

  static xfer x;
  x = (xfer){.total = 8u << 20, .c = k.c};
  jitsu_chan_read_start(k.c, xfer_read, &x);
  double t0 = uv_hrtime() / 1e6;
  xfer_run(f, &x, 60000);
  fprintf(stderr, "echo: %zu of %zu bytes back in %.0f ms\n", x.got, x.total,
          uv_hrtime() / 1e6 - t0);
  assert_int_equal(x.got, x.total);
  assert_int_equal(x.sum_got, x.sum_sent);
  jitsu_chan_close(k.c);
  run_for(f, 50);
  int fds0 = open_fds(); /* the second channel must leave no more */

  /* A second channel; the domain is destroyed while data flows. */
  static conn k2;
  k2 = (conn){0};
  assert_int_equal(
      jitsu_chan_connect(&f->loop, "echo", "q", &o, connected, &k2, NULL), 0);
  assert_true(run_until(f, &k2.done, 30000));
  assert_int_equal(k2.err, 0);
  static xfer y;
  y = (xfer){.total = 1u << 30, .c = k2.c};
  jitsu_chan_read_start(k2.c, xfer_read, &y);
  /* At least 1 MiB flows first, however long that takes here. */
  size_t last = 0;
  for (uint64_t still = 0; still < 60000 && y.got < (1u << 20);) {
    xfer_pump(&y);
    run_for(f, 10);
    still = y.got != last ? 0 : still + 10;
    last = y.got;
  }
  assert_true(y.got >= (1u << 20));
  static outcome stopped;
  stopped = (outcome){0};
  assert_int_equal(jitsu_vm_stop(vm, JITSU_STOP_DESTROY, outcome_cb, &stopped),
                   0);
  t0 = uv_hrtime() / 1e6;
  xfer_run(f, &y, 20000);
  fprintf(stderr,
          "destroyed mid-transfer: channel ended %.0f ms later "
          "(err %d) after %zu bytes\n",
          uv_hrtime() / 1e6 - t0, y.err, y.got);
  assert_true(y.eof);
  jitsu_chan_close(k2.c);
  assert_true(run_until(f, &stopped.done, 30000));
  run_for(f, 100);
  char *v = xs_get("/conduit/echo");
  assert_non_null(v);
  assert_string_equal(v, ""); /* unheld, ready for the next boot */
  free(v);
  assert_int_equal(xs_owner("/conduit/echo"), 0); /* back to dom0 */
  v = xs_get("/conduit/echo/requests/0/q");
  assert_null(v); /* no request of ours is left */
  int fds1 = open_fds();
  if (fds1 > fds0)
    fprintf(stderr, "descriptors: %d before the second channel, %d after\n",
            fds0, fds1);
  assert_true(fds1 <= fds0);
}

/* A vm of the harness's guest with its own kernel command line. */
#define GUEST_CMDLINE(name, mem, cmdline, extra)                               \
  "[vm " name "]\nbackend = xl\nkernel = %s\nramdisk = %s\n"                   \
  "cmdline = console=hvc0 quiet " cmdline "\nmemory = " mem                    \
  "\nready = marker\nready-timeout = 90s\nstop-grace = 30s\n" extra
/* The guest that connects to "echo" and sends 8 MiB (guest-chan). */
#define PEER_CLIENT                                                            \
  GUEST_CMDLINE("peer", "320M", "jitsu_role=client",                           \
                "ready-key = data/jitsu-ready\n")

/* dom0's side of a guest's channel: echo what comes, end when it ends. */
typedef struct dom0_echo {
  jitsu_chan *c;
  size_t bytes;
  int accepted, ended;
} dom0_echo;

static void echo_back(jitsu_chan *c, const void *data, size_t len, int err,
                      void *arg) {
  dom0_echo *e = arg;
  if (len == 0) {
    e->ended = 1;
    return;
  }
  e->bytes += len;
  jitsu_chan_write(c, data, len, NULL, NULL);
}

static void echo_accept(jitsu_chan_listener *l, jitsu_chan *c, const char *port,
                        int err, void *arg) {
  dom0_echo *e = arg;
  if (c == NULL)
    return; /* the registration */
  e->c = c;
  e->accepted++;
  jitsu_chan_read_start(c, echo_back, e);
}

/* Wait up to (ms) for (path) in XenStore, running the loop. */
static char *xs_wait(fixture *f, const char *path, int ms) {
  char *v = NULL;
  for (int i = 0; i < ms / 100 && v == NULL; i++) {
    run_for(f, 100);
    v = xs_get("%s", path);
  }
  return v;
}

/* Listen on "echo" in dom0 into (e); (timeout_ms): how long a client
 * has to map its server (0: the default). */
static jitsu_chan_listener *dom0_listen(fixture *f, dom0_echo *e,
                                        uint64_t timeout_ms) {
  *e = (dom0_echo){0};
  jitsu_chan_options o = JITSU_CHAN_OPTIONS_INIT;
  o.rendezvous = "xen";
  o.timeout_ms = timeout_ms;
  jitsu_chan_listener *l = NULL;
  assert_int_equal(jitsu_chan_listen(&f->loop, "echo", &o, echo_accept, e, &l),
                   0);
  return l;
}

static void dom0_unlisten(fixture *f, dom0_echo *e, jitsu_chan_listener *l) {
  if (e->c != NULL)
    jitsu_chan_close(e->c);
  jitsu_chan_listener_close(l);
  run_for(f, 50);
}

/* Summon (name) and wait until it is ready. */
static jitsu_vm *summon_ready(fixture *f, const char *name) {
  jitsu_vm *vm = jitsu_vm_find(f->ctx, name);
  assert_non_null(vm);
  static outcome up;
  up = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &up), 0);
  assert_true(run_until(f, &up.done, 120000));
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_READY);
  return vm;
}

/* Summon (name), a guest in the client role, and wait for its transfer
 * through "echo": both checksums must match. */
static void client_guest_echoes(fixture *f, const char *name) {
  summon_ready(f, name);
  char path[96];
  snprintf(path, sizeof(path), "/local/domain/%d/data/chan-result",
           domid_of(name));
  char *v = xs_wait(f, path, 180000);
  char sent[40] = "", back[40] = "";
  bool got = v != NULL;
  if (!got || sscanf(v, "%39s %39s", sent, back) != 2 ||
      strcmp(sent, back) != 0)
    (void)!system("tail -n 20 /var/log/xen/console/guest-*.log >&2; "
                  "xenstore-ls -f -p /conduit >&2");
  fprintf(stderr, "%s: %s\n", name, got ? v : "(no result)");
  free(v); /* before the asserts: a failed one does not return */
  assert_true(got);
  assert_int_equal(strlen(sent), 32);
  assert_string_equal(sent, back);
}

/* A guest connects to a listener in dom0 ("echo" served here): its
 * request is checked against the domain that wrote it, and 8 MiB go
 * through and back. */
static void test_chan_guest_to_dom0(void **state) {
  fixture *f = *state;
  const char *rd = chan_ramdisk();
  assert_int_equal(fixture_load(f, PEER_CLIENT, kernel, rd), 0);
  static dom0_echo e;
  jitsu_chan_listener *l = dom0_listen(f, &e, 0);
  client_guest_echoes(f, "peer");
  assert_int_equal(e.accepted, 1);
  dom0_unlisten(f, &e, l);
}

/* Two guests, neither of them dom0: "peer" connects to "echo" (which its
 * request summons through the controller here) and sends 8 MiB through
 * the channel; both checksums come back in its data/chan-result. */
static void test_chan_between_guests(void **state) {
  fixture *f = *state;
  const char *rd = chan_ramdisk();
  assert_int_equal(fixture_load(f,
                                GUEST_CMDLINE("echo", "320M", "",
                                              "ready-key = data/jitsu-ready\n"
                                              "channel = echo\n") PEER_CLIENT,
                                kernel, rd, kernel, rd),
                   0);
  client_guest_echoes(f, "peer");
}

/* A hostile guest (tests/xen/chan_hostile.c) attacks the rendezvous
 * while dom0 listens on "echo": XenStore refuses every takeover of a
 * name, requests that lie about their author are never served, a flood
 * costs the listener at most XEN_PENDING_PER_CLIENT (4) vchan servers at a
 * time, each ended after the listener's time-out, and nothing that
 * declares no channel is summoned. When the hostile domain is destroyed
 * its requests and servers go; a guest's channel works throughout. */
static void test_chan_hostile(void **state) {
  fixture *f = *state;
  const char *rd = chan_ramdisk();
  assert_int_equal(
      fixture_load(f,
                   GUEST_CMDLINE("hostile", "320M", "jitsu_role=hostile",
                                 "ready-key = data/jitsu-ready\n")
                       GUEST("secret", "") PEER_CLIENT,
                   kernel, rd, kernel, ramdisk, kernel, rd),
      0);
  static dom0_echo e;
  jitsu_chan_listener *l = dom0_listen(f, &e, 3000); /* 3 s to map */
  jitsu_vm *hostile = summon_ready(f, "hostile");
  int h = domid_of("hostile");
  char result[96], listen[96], servers[96], requests[96];
  snprintf(result, sizeof(result), "/local/domain/%d/data/hostile-result", h);
  snprintf(listen, sizeof(listen), "/local/domain/%d/data/hostile-listen", h);
  snprintf(servers, sizeof(servers), "/local/domain/0/data/vchan/%d", h);
  snprintf(requests, sizeof(requests), "/conduit/echo/requests/%d", h);
  /* Until its report and a second after: how many vchan servers dom0's
   * listener holds for it, and for requests that claim to be dom0's. */
  char *v = NULL;
  unsigned most = 0, as0 = 0;
  for (int i = 0, after = 0; i < 1800 && after < 10; i++) {
    run_for(f, 100);
    unsigned n = xs_count(servers);
    most = n > most ? n : most;
    as0 += xs_count("/local/domain/0/data/vchan/0");
    if (v == NULL)
      v = xs_get("%s", result);
    after += v != NULL;
  }
  if (v == NULL)
    (void)!system("tail -n 30 /var/log/xen/console/guest-hostile.log >&2");
  assert_non_null(v);
  char *lv = xs_get("%s", listen);
  fprintf(stderr, "hostile: %s; listen: %s; at most %u servers at once\n", v,
          lv ? lv : "(none)", most);
  /* No takeover of a name: XenStore says no. */
  assert_non_null(strstr(v, "hijack=EACCES"));
  assert_non_null(strstr(v, "remove=EACCES"));
  assert_non_null(strstr(v, "perms=EACCES"));
  assert_non_null(strstr(v, "squat=EACCES"));
  assert_non_null(strstr(v, "summon=EACCES"));
  assert_non_null(lv);
  assert_string_equal(lv, "echo=1 squat=1"); /* chan_echo could not listen */
  /* It may remove the requests node (every domain may add to it); the
   * listener makes it again. */
  assert_non_null(strstr(v, "repaired=ok"));
  /* Its flood was written, and bounded. */
  assert_non_null(strstr(v, "flood=12"));
  assert_true(most >= 1 && most <= 4);
  assert_int_equal(as0, 0); /* no request as dom0 was served */
  assert_int_equal(e.accepted, 0);
  char *name = xs_get("/conduit/echo");
  assert_non_null(name);
  assert_string_equal(name, "0");
  assert_int_equal(xs_owner("/conduit/echo"), 0);
  assert_null(xs_get("/conduit/squat"));
  assert_int_equal(jitsu_vm_state(jitsu_vm_find(f->ctx, "secret")),
                   JITSU_STATE_STOPPED);
  free(name);
  free(lv);
  free(v);

  /* Destroyed: its requests and the servers set up for them go. */
  stop_ok(f, hostile, JITSU_STOP_DESTROY);
  for (int i = 0; i < 100 && (xs_count(requests) || xs_count(servers)); i++)
    run_for(f, 100);
  assert_int_equal(xs_count(requests), 0);
  assert_int_equal(xs_count(servers), 0);

  /* And a guest's channel works. */
  client_guest_echoes(f, "peer");
  assert_int_equal(e.accepted, 1);
  dom0_unlisten(f, &e, l);
}

/* ---- pools: spare domains paused at their ready point ------------------ */

/* Column (col) of `xl list NAME` (3: memory in MiB, 5: the state) into
 * (out); "" when xl lists no such domain. */
static void xl_column(const char *name, int col, char *out, size_t size) {
  char cmd[128];
  snprintf(cmd, sizeof(cmd),
           "xl list %s 2>/dev/null | awk 'NR == 2 {print $%d}'", name, col);
  command_output(cmd, out, size);
}

static bool xl_paused(const char *name) {
  char state[32];
  xl_column(name, 5, state, sizeof(state));
  return strchr(state, 'p') != NULL;
}

static bool ready_file(fixture *f, const char *spare) {
  char path[400];
  snprintf(path, sizeof(path), "%s/state/xl/%s.ready", f->dir, spare);
  return access(path, F_OK) == 0;
}

/* Run the loop until (vm)'s guest counts on (it was unpaused). */
static bool ticking(fixture *f, jitsu_vm *vm) {
  int t0 = tick(vm), t1 = t0;
  for (int i = 0; i < 100 && (t1 <= t0 || t0 < 0); i++) {
    run_for(f, 100);
    if (t0 < 0)
      t0 = tick(vm);
    t1 = tick(vm);
  }
  return t0 >= 0 && t1 > t0;
}

#define POOL_GUEST(mem)                                                        \
  GUEST_MEM("p", mem,                                                          \
            "ready-key = data/jitsu-ready\npool = 2\n"                         \
            "vif = bridge=jbr0,script=/jitsu/vif-bridge\n")

/* The ports of the pool's bridge jbr0, in (out): "vif5.0 " and so on. */
static void bridge_ports(char *out, size_t size) {
  command_output("ls /sys/class/net/jbr0/brif | tr '\\n' ' '", out, size);
}

/* Whether the ports of jbr0 are the vif of domain (domid) alone. */
static bool only_port_of(int domid) {
  char ports[256], want[32];
  bridge_ports(ports, sizeof(ports));
  snprintf(want, sizeof(want), "vif%d.0 ", domid);
  fprintf(stderr, "jbr0's ports: '%s'\n", ports);
  return strcmp(ports, want) == 0;
}

/* The MAC of domain (domid)'s vif 0, from its backend in XenStore. */
static char *vif_mac(int domid) {
  return xs_get("/local/domain/0/backend/vif/%d/0/mac", domid);
}

/* A controller in a child process: it fills the pool of 2 and says so on
 * (fd), then waits to be killed. */
static void pool_child(fixture *f, int fd) {
  fixture c;
  memset(&c, 0, sizeof(c));
  snprintf(c.dir, sizeof(c.dir), "%s", f->dir);
  snprintf(c.config, sizeof(c.config), "%s", f->config);
  char ok = '0';
  if (uv_loop_init(&c.loop) == 0 && uv_timer_init(&c.loop, &c.timer) == 0 &&
      fixture_ctx_new(&c, &c.ctx) == 0 &&
      jitsu_config_load(c.ctx, c.config, &c.err) == 0 &&
      wait_spares(&c, jitsu_vm_find(c.ctx, "p"), 2, 240000))
    ok = '1';
  (void)!write(fd, &ok, 1);
  for (;;)
    pause();
}

/* A pool of 2 fills with paused domains "p.spare1" and "p.spare2"; a
 * summon takes one (renamed "p", unpaused, no new domain) and the pool
 * refills; a spare destroyed from outside is replaced; a controller
 * SIGKILLed with a full pool leaves it to the next, which adopts both and
 * hands one out; a reload that changes the vm replaces its spares; bad
 * pool settings are config errors. */
static void test_pool(void **state) {
  fixture *f = *state;
  alarm(1800);
  /* The pool's vifs are bridged: a spare's vif stays off the bridge until
   * the spare is taken. */
  assert_int_equal(system("brctl addbr jbr0 && ip link set jbr0 up"), 0);
  char text[1200];
  snprintf(text, sizeof(text),
           GUEST("q", "ready-key = data/jitsu-ready\npool = 1\n"
                      "vif = ip=10.99.7.2,script=/jitsu/vif-route\n"),
           kernel, ramdisk);
  config_fails(f, text, "share the vif address ip=10.99.7.2");
  snprintf(text, sizeof(text),
           "[vm q]\nbackend = xl\nkernel = %s\nramdisk = %s\n"
           "ready = tcp:127.0.0.1:1\npool = 1\n",
           kernel, ramdisk);
  config_fails(f, text, "a pool needs a point to pause its spares at");

  assert_int_equal(fixture_load(f, POOL_GUEST("128M"), kernel, ramdisk), 0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "p");
  assert_true(wait_spares(f, vm, 2, 240000));
  int s1 = domid_of("p.spare1"), s2 = domid_of("p.spare2");
  fprintf(stderr, "spares: domains %d and %d\n", s1, s2);
  assert_true(s1 > 0 && s2 > 0 && s1 != s2);
  assert_true(xl_paused("p.spare1") && xl_paused("p.spare2"));
  assert_true(ready_file(f, "p.spare1") && ready_file(f, "p.spare2"));
  assert_true(domid_of("p") < 0);
  char ports[256];
  bridge_ports(ports, sizeof(ports));
  assert_string_equal(ports, ""); /* both spares' vifs are off jbr0 */
  char *m1 = vif_mac(s1), *m2 = vif_mac(s2);
  assert_non_null(m1);
  assert_non_null(m2);
  fprintf(stderr, "spares' MACs: %s, %s\n", m1, m2);
  assert_string_equal(m1, m2); /* the vm's, made from its name */
  assert_true(strncmp(m1, "00:16:3e:", 9) == 0);
  free(m1);
  free(m2);
  size_t spares, filling;
  uint64_t memory;
  jitsu_vm_spares(vm, &spares, &filling, &memory);
  assert_true(memory >= 2 * (100ull << 20));

  /* The summon takes a spare: no new domain. */
  uint64_t t0 = uv_hrtime();
  summon_ok(f, "p", 60000);
  fprintf(stderr, "summon from the pool: %.1f ms\n",
          (double)(uv_hrtime() - t0) / 1e6);
  int id = domid_of("p");
  assert_true(id == s1 || id == s2);
  assert_true(only_port_of(id)); /* the taken spare's vif joined jbr0 */
  const char *taken = id == s1 ? "p.spare1" : "p.spare2";
  assert_int_not_equal(domid_of(taken), id); /* (it may be refilling) */
  assert_false(ready_file(f, taken));
  assert_true(ticking(f, vm));
  char *v = xs_get("/jitsu/p/domid");
  assert_non_null(v);
  assert_int_equal(atoi(v), id);
  free(v);
  /* It refills, with a new domain. */
  assert_true(wait_spares(f, vm, 2, 240000));
  int s3 = domid_of(taken);
  assert_true(s3 > 0 && s3 != s1 && s3 != s2);
  assert_true(only_port_of(id)); /* the refilled spare's vif is off it */

  /* A spare destroyed from outside is replaced. */
  int other = domid_of("p.spare1") == s3 ? domid_of("p.spare2") : s3;
  char cmd[64];
  snprintf(cmd, sizeof(cmd), "xl destroy %d", other);
  assert_int_equal(system(cmd), 0);
  run_for(f, 500);
  assert_true(wait_spares(f, vm, 2, 240000));
  assert_true(domid_of("p.spare1") != other && domid_of("p.spare2") != other);
  stop_ok(f, vm, JITSU_STOP_DESTROY);

  /* A controller that goes (freed) ends its spares. */
  jitsu_ctx_free(f->ctx);
  f->ctx = NULL;
  bool gone1 = domain_gone(f, "p.spare1", 30000);
  bool gone2 = domain_gone(f, "p.spare2", 30000);
  run_for(f, 200);
  assert_int_equal(fixture_ctx_new(f, &f->ctx), 0); /* no vms yet */
  assert_true(gone1 && gone2);

  /* One that is SIGKILLed leaves them to the next controller. */
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    pool_child(f, fds[1]);
  }
  close(fds[1]);
  char ok = 0;
  struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
  int r = poll(&pfd, 1, 300000);
  if (r == 1)
    (void)!read(fds[0], &ok, 1);
  close(fds[0]);
  int k1 = domid_of("p.spare1"), k2 = domid_of("p.spare2");
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  assert_int_equal(ok, '1');
  fprintf(stderr, "the killed controller's spares: domains %d and %d\n", k1,
          k2);
  assert_int_equal(jitsu_config_load(f->ctx, f->config, &f->err), 0);
  vm = jitsu_vm_find(f->ctx, "p");
  jitsu_vm_spares(vm, &spares, &filling, &memory);
  assert_int_equal(spares, 2); /* adopted at once */
  assert_int_equal(filling, 0);
  assert_int_equal(domid_of("p.spare1"), k1);
  assert_int_equal(domid_of("p.spare2"), k2);
  summon_ok(f, "p", 60000);
  id = domid_of("p");
  assert_true(id == k1 || id == k2);
  assert_true(only_port_of(id)); /* its bridge, from the spare's file */
  assert_true(ticking(f, vm));
  stop_ok(f, vm, JITSU_STOP_DESTROY);
  assert_true(wait_spares(f, vm, 2, 240000));

  /* A reload that changes the vm replaces its spares. */
  int a1 = domid_of("p.spare1"), a2 = domid_of("p.spare2");
  FILE *cf = fopen(f->config, "w");
  assert_non_null(cf);
  fprintf(cf, POOL_GUEST("160M"), kernel, ramdisk);
  fclose(cf);
  assert_int_equal(jitsu_config_reload(f->ctx, NULL, NULL, &f->err), 0);
  assert_true(wait_spares(f, vm, 2, 240000));
  int b1 = domid_of("p.spare1"), b2 = domid_of("p.spare2");
  fprintf(stderr, "after the reload: domains %d and %d (were %d and %d)\n", b1,
          b2, a1, a2);
  assert_true(b1 > 0 && b2 > 0 && b1 != a1 && b1 != a2 && b2 != a1 && b2 != a2);
  char mib[32];
  xl_column("p.spare1", 3, mib, sizeof(mib));
  assert_int_equal(atoi(mib), 160);
  bridge_ports(ports, sizeof(ports));
  assert_string_equal(ports, "");
}

/* A test that hangs inside dom0 cannot be looked at with a debugger:
 * after the alarm, print where it is (addr2line on the host) and end. */
static void hung(int sig) {
  void *frames[32];
  int n = backtrace(frames, 32);
  static const char msg[] = "test_xen: hung; backtrace:\n";
  (void)!write(2, msg, sizeof(msg) - 1);
  backtrace_symbols_fd(frames, n, 2);
  signal(sig, SIG_DFL);
  raise(sig);
}

static int setup_alarm(void **state) {
  const char *a = getenv("JITSU_XEN_ALARM");
  /* A guard against a hang, not a time limit: each test takes at most a
   * few minutes under ASan on a loaded machine (test_pool sets its own). */
  alarm(a ? (unsigned)atoi(a) : 600);
  return setup(state);
}

int main(void) {
  signal(SIGALRM, hung);
  setvbuf(stdout, NULL, _IOLBF, 0);
  kernel = getenv("JITSU_XEN_KERNEL");
  ramdisk = getenv("JITSU_XEN_RAMDISK");
  if (kernel == NULL || ramdisk == NULL) {
    fprintf(stderr, "JITSU_XEN_KERNEL and JITSU_XEN_RAMDISK are not set: this "
                    "program runs in the Xen harness's dom0\n");
    return 77;
  }
  if (getenv("JITSU_XEN_TESTS") != NULL)
    cmocka_set_test_filter(getenv("JITSU_XEN_TESTS"));
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_alarm, teardown)
  const struct CMUnitTest tests[] = {
      T(test_lifecycle_key),
      T(test_console_marker),
      T(test_save_restore),
      T(test_crash),
      T(test_adopt),
      T(test_xl_file),
      T(test_bad_input),
      T(test_too_much_memory),
      T(test_chan_summon_and_destroy),
      T(test_chan_guest_to_dom0),
      T(test_chan_between_guests),
      T(test_chan_hostile),
      T(test_pool),
  };
  return cmocka_run_group_tests_name("xen", tests, NULL, NULL);
}
