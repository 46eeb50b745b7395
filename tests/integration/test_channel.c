/* Channels and the rendezvous: host to host, host to a process guest
 * (summoned by the connect), 1 GiB with a checksum, a peer killed mid
 * transfer, many channels at once, and the errors. */
#include "chan_ring.h"
#include "chan_int.h"
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *echo_path(void) {
  const char *p = getenv("JITSU_CHAN_ECHO");
  assert_non_null(p);
  return p;
}

static jitsu_chan_options opts(fixture *f) {
  static char path[400];
  jitsu_chan_options o = JITSU_CHAN_OPTIONS_INIT;
  snprintf(path, sizeof(path), "%s", jitsu_rendezvous_path(f->ctx));
  o.rendezvous = path;
  return o;
}

/* A connect's outcome. */
typedef struct conn_out {
  int done, err;
  jitsu_chan *c;
} conn_out;

static void connected(jitsu_chan *c, int err, void *arg) {
  conn_out *o = arg;
  o->done = 1;
  o->err = err;
  o->c = c;
}

static jitsu_chan *connect_ok(fixture *f, const char *name, const char *port) {
  jitsu_chan_options o = opts(f);
  static conn_out out;
  out = (conn_out){0};
  assert_int_equal(
      jitsu_chan_connect(&f->loop, name, port, &o, connected, &out, NULL), 0);
  assert_true(run_until(f, &out.done, 15000));
  if (out.err != 0)
    fprintf(stderr, "connect %s/%s: %s\n", name, port, jitsu_strerror(out.err));
  assert_int_equal(out.err, 0);
  return out.c;
}

/* A reader that counts bytes, sums them, and remembers the end. */
typedef struct sink {
  uint64_t bytes, sum;
  int ended, err;
} sink;

static void sink_read(jitsu_chan *c, const void *data, size_t len, int err,
                      void *arg) {
  (void)c;
  sink *s = arg;
  const uint8_t *p = data;
  for (size_t i = 0; i < len; i++)
    s->sum = s->sum * 31 + p[i];
  s->bytes += len;
  if (len == 0) {
    s->ended = 1;
    s->err = err;
  }
}

/* In-process listener that echoes. */
static void echo_read(jitsu_chan *c, const void *data, size_t len, int err,
                      void *arg) {
  (void)arg;
  if (len > 0)
    jitsu_chan_write(c, data, len, NULL, NULL);
  else if (err == 0)
    jitsu_chan_shutdown(c);
  /* else broken: closed by the test that accepted it */
}

static char last_port[64];
static int listen_status = 1;
static jitsu_chan *accepted[8]; /* closed by the test that made them */
static int n_accepted;
static void echo_accept(jitsu_chan_listener *l, jitsu_chan *c, const char *port,
                        int err, void *arg) {
  (void)l;
  if (c == NULL) {
    *(int *)arg = err == 0 ? 2 : err; /* registered, or why not */
    return;
  }
  snprintf(last_port, sizeof(last_port), "%s", port);
  if (n_accepted < 8)
    accepted[n_accepted++] = c;
  jitsu_chan_read_start(c, echo_read, NULL);
}

static int wait_listen(fixture *f, int *status) {
  *status = 0;
  for (int i = 0; i < 500 && *status == 0; i++)
    run_for(f, 10);
  return *status == 2 ? 0 : *status;
}

static void test_host_to_host(void **state) {
  fixture *f = *state;
  assert_int_equal(jitsu_rendezvous_listen(f->ctx, NULL), 0);
  jitsu_chan_options o = opts(f);
  jitsu_chan_listener *l, *l2;
  static int st1, st2;
  st1 = st2 = 0;
  assert_int_equal(
      jitsu_chan_listen(&f->loop, "svc", &o, echo_accept, &st1, &l), 0);
  assert_int_equal(wait_listen(f, &st1), 0);
  assert_int_equal(
      jitsu_chan_listen(&f->loop, "svc", &o, echo_accept, &st2, &l2), 0);
  assert_int_equal(wait_listen(f, &st2), -EADDRINUSE);
  jitsu_chan_listener_close(l2);
  (void)listen_status;
  jitsu_chan *c = connect_ok(f, "svc", "p-1");
  static sink s;
  s = (sink){0};
  jitsu_chan_read_start(c, sink_read, &s);
  assert_int_equal(jitsu_chan_write(c, "hello", 5, NULL, NULL), 0);
  assert_int_equal(jitsu_chan_write(c, " world", 6, NULL, NULL), 0);
  assert_int_equal(jitsu_chan_shutdown(c), 0);
  assert_int_equal(jitsu_chan_write(c, "x", 1, NULL, NULL), -EPIPE);
  assert_true(run_until(f, &s.ended, 5000));
  assert_int_equal(s.err, 0);
  assert_int_equal(s.bytes, 11);
  assert_string_equal(last_port, "p-1");
  jitsu_chan_close(c);
  /* Errors: bad names, nobody there. */
  static conn_out out;
  out = (conn_out){0};
  assert_int_equal(
      jitsu_chan_connect(&f->loop, "bad name", "p", &o, connected, &out, NULL),
      -EINVAL);
  assert_int_equal(
      jitsu_chan_connect(&f->loop, "svc", "p/1", &o, connected, &out, NULL),
      -EINVAL);
  assert_int_equal(
      jitsu_chan_connect(&f->loop, "nobody", "p", &o, connected, &out, NULL),
      0);
  assert_true(run_until(f, &out.done, 5000));
  assert_int_equal(out.err, -ECONNREFUSED);
  jitsu_chan_listener_close(l);
  while (n_accepted > 0)
    jitsu_chan_close(accepted[--n_accepted]);
}

/* A connect to a stopped process guest summons it; it listens; 1 GiB goes
 * there and back with the same checksum. */
static void test_summon_on_connect_1gib(void **state) {
  fixture *f = *state;
  assert_int_equal(
      fixture_load(f, "[vm echo]\nexec = %s\nready = notify\n", echo_path()),
      0);
  assert_int_equal(jitsu_rendezvous_listen(f->ctx, NULL), 0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "echo");
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_STOPPED);
  jitsu_chan *c = connect_ok(f, "echo", "data");
  assert_int_not_equal(jitsu_vm_state(vm), JITSU_STATE_STOPPED);
  static sink s;
  s = (sink){0};
  jitsu_chan_read_start(c, sink_read, &s);
  enum { CHUNK = 64 * 1024 };
  const uint64_t total = 1ull << 30;
  static uint8_t buf[CHUNK];
  uint64_t sent = 0, sum = 0, x = 12345;
  while (sent < total) {
    if (jitsu_chan_write_queue_size(c) > 4 * CHUNK) {
      uv_run(&f->loop, UV_RUN_ONCE);
      continue;
    }
    for (size_t i = 0; i < CHUNK; i++) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      buf[i] = (uint8_t)(x >> 56);
      sum = sum * 31 + buf[i];
    }
    assert_int_equal(jitsu_chan_write(c, buf, CHUNK, NULL, NULL), 0);
    sent += CHUNK;
  }
  jitsu_chan_shutdown(c);
  assert_true(run_until(f, &s.ended, 120000));
  assert_int_equal(s.err, 0);
  assert_int_equal(s.bytes, total);
  assert_true(s.sum == sum);
  jitsu_chan_close(c);
}

/* The guest dies mid-transfer: the reader learns at once; nothing leaks. */
static void test_peer_killed(void **state) {
  fixture *f = *state;
  assert_int_equal(
      fixture_load(f, "[vm echo]\nexec = %s\nready = notify\n", echo_path()),
      0);
  assert_int_equal(jitsu_rendezvous_listen(f->ctx, NULL), 0);
  int before = open_fds();
  jitsu_chan *c = connect_ok(f, "echo", "x");
  static sink s;
  s = (sink){0};
  jitsu_chan_read_start(c, sink_read, &s);
  static uint8_t buf[65536];
  for (int i = 0; i < 64; i++)
    jitsu_chan_write(c, buf, sizeof(buf), NULL, NULL);
  run_for(f, 20);
  kill(vm_pid(jitsu_vm_find(f->ctx, "echo")), SIGKILL);
  assert_true(run_until(f, &s.ended, 5000));
  assert_int_equal(s.err, -ECONNRESET);
  assert_int_equal(jitsu_chan_write(c, "x", 1, NULL, NULL), -ECONNRESET);
  jitsu_chan_close(c);
  run_for(f, 50);
  assert_int_equal(open_fds(), before);
}

/* Many channels at once to one guest. */
static void test_many_channels(void **state) {
  fixture *f = *state;
  enum { N = 100 };
  assert_int_equal(
      fixture_load(f, "[vm echo]\nexec = %s\nready = notify\n", echo_path()),
      0);
  assert_int_equal(jitsu_rendezvous_listen(f->ctx, NULL), 0);
  jitsu_chan_options o = opts(f);
  o.ring_size = 16384;
  static conn_out outs[N];
  static sink sinks[N];
  memset(outs, 0, sizeof(outs));
  memset(sinks, 0, sizeof(sinks));
  /* The first connect summons it (at most 64 may wait for one name). */
  jitsu_chan_close(connect_ok(f, "echo", "first"));
  for (int i = 0; i < N; i++) {
    char port[16];
    snprintf(port, sizeof(port), "p%d", i);
    assert_int_equal(jitsu_chan_connect(&f->loop, "echo", port, &o, connected,
                                        &outs[i], NULL),
                     0);
  }
  static uint8_t buf[65536];
  int started = 0, ended = 0;
  for (int round = 0; round < 20000 && ended < N; round++) {
    run_for(f, 1);
    for (int i = 0; i < N; i++) {
      if (outs[i].done && outs[i].c != NULL && !sinks[i].bytes &&
          !jitsu_chan_data(outs[i].c)) {
        assert_int_equal(outs[i].err, 0);
        jitsu_chan_set_data(outs[i].c, &sinks[i]);
        jitsu_chan_read_start(outs[i].c, sink_read, &sinks[i]);
        memset(buf, i, sizeof(buf));
        jitsu_chan_write(outs[i].c, buf, sizeof(buf), NULL, NULL);
        jitsu_chan_shutdown(outs[i].c);
        started++;
      }
    }
    ended = 0;
    for (int i = 0; i < N; i++)
      ended += sinks[i].ended;
  }
  assert_int_equal(started, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(sinks[i].err, 0);
    assert_int_equal(sinks[i].bytes, sizeof(buf));
    jitsu_chan_close(outs[i].c);
  }
}

/* A vm that never listens: the connect times out; one that cannot start
 * fails at once. */
static void test_connect_timeout(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f, "[vm mute]\nexec = /bin/sleep 30\n"
                                   "[vm broken]\nexec = /nonexistent/x\n"),
                   0);
  assert_int_equal(jitsu_rendezvous_listen(f->ctx, NULL), 0);
  jitsu_chan_options o = opts(f);
  o.timeout_ms = 300;
  static conn_out out;
  out = (conn_out){0};
  assert_int_equal(
      jitsu_chan_connect(&f->loop, "mute", "p", &o, connected, &out, NULL), 0);
  assert_true(run_until(f, &out.done, 5000));
  assert_int_equal(out.err, -ETIMEDOUT);
  memset(&out, 0, sizeof(out));
  assert_int_equal(
      jitsu_chan_connect(&f->loop, "broken", "p", &o, connected, &out, NULL),
      0);
  assert_true(run_until(f, &out.done, 5000));
  assert_true(out.err < 0 && out.err != -ETIMEDOUT);
}

/* A frontend serves the rendezvous when its config asks. */
static void test_rendezvous_from_config(void **state) {
  fixture *f = *state;
  assert_int_equal(
      fixture_load(f, "[vm echo]\nexec = %s\nready = notify\n", echo_path()),
      0);
  assert_int_equal(jitsu_rendezvous_from_config(f->ctx), 0);
  assert_null(jitsu_rendezvous_path(f->ctx));
  jitsu_ctx_free(f->ctx);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  char sock[340];
  snprintf(sock, sizeof(sock), "%s/rv-custom.sock", f->dir);
  assert_int_equal(fixture_ctx_new(f, &f->ctx), 0);
  assert_int_equal(fixture_load(f,
                                "[jitsu]\nrendezvous-socket = %s\n"
                                "[vm echo]\nexec = %s\nready = notify\n",
                                sock, echo_path()),
                   0);
  assert_int_equal(jitsu_rendezvous_from_config(f->ctx), 1);
  assert_string_equal(jitsu_rendezvous_path(f->ctx), sock);
  jitsu_chan_close(connect_ok(f, "echo", "p"));
}

/* "channel = NAME" in a vm's section: a connect to NAME summons that vm
 * (whose guest listens on NAME). */
static void test_channel_alias(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f,
                                "[vm db]\nexec = %s store\nready = notify\n"
                                "channel = store\n",
                                echo_path()),
                   0);
  assert_int_equal(jitsu_rendezvous_listen(f->ctx, NULL), 0);
  jitsu_chan *c = connect_ok(f, "store", "q");
  assert_int_not_equal(jitsu_vm_state(jitsu_vm_find(f->ctx, "db")),
                       JITSU_STATE_STOPPED);
  jitsu_chan_close(c);
}

/* A listener takes at most max_channels at once: one more connect gets a
 * channel that ends at once (-ECONNRESET, or EOF); closing one makes room.
 * Options of version 1 (before max_channels) are still taken; an unknown
 * version is refused. */
static void test_listener_cap(void **state) {
  fixture *f = *state;
  assert_int_equal(jitsu_rendezvous_listen(f->ctx, NULL), 0);
  jitsu_chan_options o = opts(f);
  o.max_channels = 2;
  jitsu_chan_listener *l;
  static int st;
  st = 0;
  n_accepted = 0;
  assert_int_equal(
      jitsu_chan_listen(&f->loop, "capped", &o, echo_accept, &st, &l), 0);
  assert_int_equal(wait_listen(f, &st), 0);
  jitsu_chan *c1 = connect_ok(f, "capped", "a");
  jitsu_chan *c2 = connect_ok(f, "capped", "b");
  for (int i = 0; i < 100 && n_accepted < 2; i++)
    run_for(f, 10);
  assert_int_equal(n_accepted, 2);
  jitsu_chan *c3 = connect_ok(f, "capped", "c");
  static sink s3;
  s3 = (sink){0};
  jitsu_chan_read_start(c3, sink_read, &s3);
  jitsu_chan_write(c3, "x", 1, NULL, NULL);
  assert_true(run_until(f, &s3.ended, 5000));
  assert_int_equal(s3.bytes, 0); /* nobody echoed it */
  assert_int_equal(n_accepted, 2);
  jitsu_chan_close(c3);
  /* Room again once one of the two is closed on the listener's side. */
  jitsu_chan_close(accepted[--n_accepted]);
  run_for(f, 50);
  jitsu_chan *c4 = connect_ok(f, "capped", "d");
  static sink s4;
  s4 = (sink){0};
  jitsu_chan_read_start(c4, sink_read, &s4);
  jitsu_chan_write(c4, "y", 1, NULL, NULL);
  for (int i = 0; i < 200 && s4.bytes == 0; i++)
    run_for(f, 10);
  assert_int_equal(s4.bytes, 1);
  assert_string_equal(last_port, "d");
  /* Versions. */
  jitsu_chan_options v1 = opts(f), bad = opts(f);
  v1.version = 1;
  bad.version = 99;
  static conn_out out;
  out = (conn_out){0};
  assert_int_equal(
      jitsu_chan_connect(&f->loop, "capped", "e", &bad, connected, &out, NULL),
      -EINVAL);
  assert_int_equal(
      jitsu_chan_connect(&f->loop, "nobody", "e", &v1, connected, &out, NULL),
      0);
  assert_true(run_until(f, &out.done, 5000));
  assert_int_equal(out.err, -ECONNREFUSED);
  jitsu_chan_close(c1);
  jitsu_chan_close(c2);
  jitsu_chan_close(c4);
  jitsu_chan_listener_close(l);
  while (n_accepted > 0)
    jitsu_chan_close(accepted[--n_accepted]);
}

/* A listener that takes channels and never reads them. */
static void deaf_accept(jitsu_chan_listener *l, jitsu_chan *c, const char *port,
                        int err, void *arg) {
  (void)l, (void)port;
  if (c == NULL) {
    *(int *)arg = err == 0 ? 2 : err;
    return;
  }
  if (n_accepted < 8)
    accepted[n_accepted++] = c;
}

typedef struct wcount {
  int calls[64];
  int ok, canceled, order_ok;
  int last;
} wcount;
static wcount wc;

static void count_write(jitsu_chan *c, int err, void *arg) {
  (void)c;
  int i = (int)(intptr_t)arg;
  wc.calls[i]++;
  wc.ok += err == 0;
  wc.canceled += err == -ECANCELED;
  wc.order_ok += i == wc.last + 1;
  wc.last = i;
}

/* Closing a channel with writes queued behind a full ring: every write's
 * callback runs once, in order, from the loop; those not in the ring with
 * -ECANCELED. */
static void test_close_completes_writes(void **state) {
  fixture *f = *state;
  assert_int_equal(jitsu_rendezvous_listen(f->ctx, NULL), 0);
  jitsu_chan_options o = opts(f);
  o.ring_size = JITSU_CHAN_RING_MIN;
  jitsu_chan_listener *l;
  static int st;
  st = 0;
  n_accepted = 0;
  assert_int_equal(
      jitsu_chan_listen(&f->loop, "deaf", &o, deaf_accept, &st, &l), 0);
  assert_int_equal(wait_listen(f, &st), 0);
  jitsu_chan_options co = opts(f);
  co.ring_size = JITSU_CHAN_RING_MIN;
  static conn_out out;
  out = (conn_out){0};
  assert_int_equal(
      jitsu_chan_connect(&f->loop, "deaf", "p", &co, connected, &out, NULL), 0);
  assert_true(run_until(f, &out.done, 5000));
  assert_int_equal(out.err, 0);
  memset(&wc, 0, sizeof(wc));
  wc.last = -1;
  static uint8_t buf[1024];
  for (int i = 0; i < 64; i++)
    assert_int_equal(jitsu_chan_write(out.c, buf, sizeof(buf), count_write,
                                      (void *)(intptr_t)i),
                     0);
  assert_true(jitsu_chan_write_queue_size(out.c) > 0);
  jitsu_chan_close(out.c);
  assert_int_equal(wc.ok + wc.canceled, 0); /* not from inside close */
  run_for(f, 20);
  for (int i = 0; i < 64; i++)
    assert_int_equal(wc.calls[i], 1);
  assert_int_equal(wc.order_ok, 64);
  assert_true(wc.canceled > 0);
  assert_int_equal(wc.ok + wc.canceled, 64);
  jitsu_chan_listener_close(l);
  while (n_accepted > 0)
    jitsu_chan_close(accepted[--n_accepted]);
}

/* A pending connect can be given up: its callback runs once, from the loop,
 * with -ECANCELED. */
static void test_connect_cancel(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f, "[vm mute]\nexec = /bin/sleep 30\n"), 0);
  assert_int_equal(jitsu_rendezvous_listen(f->ctx, NULL), 0);
  jitsu_chan_options o = opts(f);
  o.timeout_ms = 60000;
  static conn_out out;
  out = (conn_out){0};
  jitsu_chan_connecting *req = NULL;
  assert_int_equal(
      jitsu_chan_connect(&f->loop, "mute", "p", &o, connected, &out, &req), 0);
  assert_non_null(req);
  run_for(f, 50);
  assert_int_equal(out.done, 0);
  jitsu_chan_connect_cancel(req);
  assert_int_equal(out.done, 0); /* not from inside the call */
  assert_true(run_until(f, &out.done, 1000));
  assert_int_equal(out.err, -ECANCELED);
  assert_null(out.c);
}

/* A connector that hands over something that is not a socket as its bell
 * (here a regular file): the listener refuses that channel and goes on. */
static void test_bell_not_a_socket(void **state) {
  fixture *f = *state;
  assert_int_equal(jitsu_rendezvous_listen(f->ctx, NULL), 0);
  jitsu_chan_options o = opts(f);
  jitsu_chan_listener *l;
  static int st;
  st = 0;
  n_accepted = 0;
  assert_int_equal(jitsu_chan_listen(&f->loop, "svc", &o, echo_accept, &st, &l),
                   0);
  assert_int_equal(wait_listen(f, &st), 0);
  /* A well-formed shared memory, sealed as the listener wants it. */
  size_t len = CHAN_HDR_SIZE + 2 * JITSU_CHAN_RING_MIN;
  int memfd = memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  assert_true(memfd >= 0);
  assert_int_equal(ftruncate(memfd, (off_t)len), 0);
  assert_int_equal(
      fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), 0);
  uint8_t *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  assert_true(map != MAP_FAILED);
  assert_int_equal(chan_ring_format(map, len, JITSU_CHAN_RING_MIN), 0);
  munmap(map, len);
  char file[300];
  snprintf(file, sizeof(file), "%s/not-a-socket", f->dir);
  int bell = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  assert_true(bell >= 0);
  int rv = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s",
           jitsu_rendezvous_path(f->ctx));
  assert_int_equal(connect(rv, (struct sockaddr *)&sun, sizeof(sun)), 0);
  int fds[2] = {memfd, bell};
  assert_int_equal(jitsu__rv_send(rv, "C svc p 1000", fds, 2), 0);
  close(memfd);
  close(bell);
  run_for(f, 100);
  assert_int_equal(n_accepted, 0);
  close(rv);
  /* The listener still serves. */
  jitsu_chan *c = connect_ok(f, "svc", "after");
  for (int i = 0; i < 100 && n_accepted == 0; i++)
    run_for(f, 10);
  assert_int_equal(n_accepted, 1);
  jitsu_chan_close(c);
  jitsu_chan_listener_close(l);
  while (n_accepted > 0)
    jitsu_chan_close(accepted[--n_accepted]);
}

/* The peer's resident memory in KiB (VmRSS), or -1. */
static long rss_kib(int pid) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/status", pid);
  FILE *in = fopen(path, "r");
  long kib = -1;
  while (in != NULL && fgets(line, sizeof(line), in) != NULL)
    if (sscanf(line, "VmRSS: %ld", &kib) == 1)
      break;
  if (in != NULL)
    fclose(in);
  return kib;
}

/* A client that sends 64 MiB and reads none of the echo: the echo guest
 * stops reading instead of queueing it all (its memory stays bounded),
 * and everything comes back once the client reads. */
static void test_echo_backpressure(void **state) {
  fixture *f = *state;
  assert_int_equal(
      fixture_load(f, "[vm echo]\nexec = %s\nready = notify\n", echo_path()),
      0);
  assert_int_equal(jitsu_rendezvous_listen(f->ctx, NULL), 0);
  jitsu_chan *c = connect_ok(f, "echo", "bp");
  int pid = vm_pid(jitsu_vm_find(f->ctx, "echo"));
  long before = rss_kib(pid);
  enum { CHUNK = 64 * 1024, TOTAL = 64 * 1024 * 1024 };
  static uint8_t buf[CHUNK];
  memset(buf, 7, sizeof(buf));
  size_t sent = 0;
  /* Send until the guest has taken nothing for 1 s, at most 64 MiB. */
  for (int stalled = 0; stalled < 1000 && sent < TOTAL;) {
    if (jitsu_chan_write_queue_size(c) > 4 * CHUNK) {
      run_for(f, 1);
      stalled++;
      continue;
    }
    stalled = 0;
    assert_int_equal(jitsu_chan_write(c, buf, CHUNK, NULL, NULL), 0);
    sent += CHUNK;
  }
  run_for(f, 200);
  long during = rss_kib(pid);
  printf("# echo guest: RSS %ld -> %ld KiB with %zu bytes sent, none read\n",
         before, during, sent);
  assert_true(during - before < 16 * 1024);
  /* Read it all back: nothing was lost by the pause. */
  static sink s;
  s = (sink){0};
  jitsu_chan_read_start(c, sink_read, &s);
  assert_int_equal(jitsu_chan_shutdown(c), 0);
  assert_true(run_until(f, &s.ended, 60000));
  assert_int_equal(s.err, 0);
  assert_int_equal(s.bytes, sent);
  jitsu_chan_close(c);
}

/* The Xen rendezvous's request paths (libjitsu/chan/conduit.h), as any
 * domain may write them: what is taken, and what is not. */
static void test_conduit_paths(void **state) {
  char name[JITSU_CHAN_NAME_MAX + 1], port[JITSU_CHAN_PORT_MAX + 1];
  unsigned client = 99;
  assert_int_equal(jitsu__conduit_parse("/conduit/echo/requests/7/p", name,
                                        sizeof(name), &client, port,
                                        sizeof(port)),
                   0);
  assert_string_equal(name, "echo");
  assert_string_equal(port, "p");
  assert_int_equal(client, 7);
  assert_int_equal(jitsu__conduit_parse("/conduit/a-b.c/requests/0/q_1", name,
                                        sizeof(name), &client, port,
                                        sizeof(port)),
                   0);
  assert_int_equal(client, 0);
  static const char *const bad[] = {
      "/conduit/echo/7/p",               /* Conduit's old layout */
      "/conduit/echo/requests/7",        /* a client's directory */
      "/conduit/echo/requests/7/p/x",    /* deeper */
      "/conduit/echo/requests//p",       /* no client */
      "/conduit/echo/requests/07/p",     /* a leading zero */
      "/conduit/echo/requests/32752/p",  /* DOMID_FIRST_RESERVED */
      "/conduit/echo/requests/123456/p", /* too long */
      "/conduit/echo/requests/7a/p",     /* not a number */
      "/conduit/echo/requests/7/",       /* no port */
      "/conduit/echo/requests/7/p q",    /* not a port */
      "/conduit//requests/7/p",          /* no name */
      "/conduit/e/x/requests/7/p",       /* a name with a slash */
      "/conduitx/echo/requests/7/p",     /* not under /conduit */
      "conduit/echo/requests/7/p",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    if (jitsu__conduit_parse(bad[i], name, sizeof(name), &client, port,
                             sizeof(port)) != -EINVAL)
      fail_msg("%s was taken as a request", bad[i]);
}

int main(void) {
#define T(fn)                                                                  \
  cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)
  const struct CMUnitTest tests[] = {
      T(test_host_to_host),
      T(test_summon_on_connect_1gib),
      T(test_peer_killed),
      T(test_many_channels),
      T(test_connect_timeout),
      T(test_rendezvous_from_config),
      T(test_channel_alias),
      T(test_listener_cap),
      T(test_close_completes_writes),
      T(test_connect_cancel),
      T(test_bell_not_a_socket),
      T(test_echo_backpressure),
      cmocka_unit_test(test_conduit_paths),
  };
  return cmocka_run_group_tests_name("channel", tests, NULL, NULL);
}
