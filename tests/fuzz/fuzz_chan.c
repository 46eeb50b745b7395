/* libFuzzer target: a hostile channel peer. The input is a script of
 * operations on a real ring pair in (private) memory: the peer overwrites
 * its indices and flags with arbitrary values and scribbles data, and we
 * read and write through the same functions the channel uses. Nothing it
 * does may make us touch memory outside the mapping (ASan checks), and
 * every count we return must be within the ring. Then the same bytes
 * script channels through a real rendezvous (below), and are parsed as
 * Xen connect requests. */
#include "chan_ring.h"
#include "chan_int.h"
#include "fuzz_util.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RING 4096

static uint32_t get32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

static void fuzz_ring(const uint8_t *data, size_t size) {
  static uint8_t mem[CHAN_HDR_SIZE + 2 * RING] __attribute__((aligned(64)));
  static uint8_t buf[2 * RING];
  if (chan_ring_format(mem, sizeof(mem), RING) < 0)
    abort();
  chan_ring us, peer;
  if (chan_ring_attach(&us, mem, sizeof(mem), 0) < 0 ||
      chan_ring_attach(&peer, mem, sizeof(mem), 1) < 0)
    abort();
  chan_shm *shm = (chan_shm *)mem;
  for (size_t i = 0; i + 5 <= size; i += 5) {
    uint8_t op = data[i];
    uint32_t v = get32(data + i + 1);
    bool wake;
    long n;
    switch (op % 8) {
    case 0: /* the peer sets its producer index to anything */
      shm->dir[1].prod = v;
      break;
    case 1: /* ... or its consumer index */
      shm->dir[0].cons = v;
      break;
    case 2:
      shm->dir[1].eof = v;
      shm->dir[0].want_data = v >> 1;
      shm->dir[1].want_space = v >> 2;
      break;
    case 3: /* we read */
      n = chan_ring_read(&us, buf, v % sizeof(buf), &wake);
      if (n > (long)RING || n > (long)(v % sizeof(buf)))
        abort();
      break;
    case 4: /* we write */
      n = chan_ring_write(&us, buf, v % sizeof(buf), &wake);
      if (n > (long)RING)
        abort();
      break;
    case 5: /* the peer behaves: reads and writes through its view */
      chan_ring_write(&peer, data, (size_t)(v % (size - i)), &wake);
      chan_ring_read(&peer, buf, v % RING, &wake);
      break;
    case 6: /* the peer scribbles over the data */
      memset(mem + CHAN_HDR_SIZE + (v % (2 * RING)), (int)(v >> 24),
             (v >> 8) % 64 < 2 * RING - v % (2 * RING)
                 ? (v >> 8) % 64
                 : 2 * RING - v % (2 * RING));
      break;
    default:
      if (chan_ring_readable(&us) > (long)RING ||
          chan_ring_writable(&us) > (long)RING)
        abort();
      chan_ring_peer_eof(&us);
      chan_ring_want(&us, v & 1, v & 2);
    }
  }
  /* A header the peer wrote: attach must refuse what does not fit. */
  if (size >= 16) {
    memcpy(mem, data, 16);
    chan_ring r;
    chan_ring_attach(&r, mem, sizeof(mem), 1);
  }
}

/* ---- channels through the rendezvous -------------------------------------
 * The rest of the input is a script for the rendezvous server of a live
 * context and for endpoints around it: channels connected and accepted
 * through the library (connect, listen, write, read, shut down, close,
 * cancel, from inside callbacks too), hostile connectors that send
 * requests with memfds and bells of their own making (the listener's
 * check), hostile listeners that take channels and then scribble on their
 * memory (the connector's side), raw requests, and connects to names
 * that summon a vm (one that runs and never listens, one that cannot
 * start) or that nobody has. Every input ends with everything it opened
 * closed, so the server starts each input with nothing pending. */

#define SLOTS 8

static uv_loop_t loop;
static uv_timer_t nudge; /* bounds a wait for the loop */
static jitsu_ctx *ctx;
static char dir[64], rv_path[128];
static const char *const names[] = {"lis", "late", "run", "broken", "nobody"};

static struct {
  jitsu_chan *chan[SLOTS];
  jitsu_chan_connecting *conn[SLOTS];
  jitsu_chan_listener *lis[SLOTS];
  struct hostile {
    int rv;       /* its connection to the rendezvous */
    int bell;     /* its end of a channel's bell */
    uint8_t *map; /* the channel's memory, as it sees it */
    size_t len;
  } host[SLOTS];
  int callbacks; /* connect callbacks still to come */
} S;

static void wait_turn(void);

static void stopped(jitsu_vm *vm, int status, void *arg) {
  (void)vm, (void)status;
  *(bool *)arg = true;
}

/* Leave nothing behind: the guest that ran, the sockets, the state. */
static void cleanup(void) {
  jitsu_vm *run = jitsu_vm_find(ctx, "run");
  bool done = false;
  if (run != NULL &&
      jitsu_vm_stop(run, JITSU_STOP_DESTROY, stopped, &done) == 0)
    for (int i = 0; i < 2000 && !done; i++)
      wait_turn();
  uv_close((uv_handle_t *)&nudge, NULL);
  jitsu_ctx_free(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  fuzz_rmtree(dir);
}

static void setup(void) {
  signal(SIGPIPE, SIG_IGN); /* the hostile side writes to closed pipes */
  snprintf(dir, sizeof(dir), "/tmp/jitsu-fuzz-chan-%d", (int)getpid());
  if (mkdir(dir, 0700) < 0)
    abort();
  uv_loop_init(&loop);
  jitsu_ctx_options o = JITSU_CTX_OPTIONS_INIT;
  o.state_dir = dir;
  if (jitsu_ctx_new(&loop, &o, &ctx) < 0)
    abort();
  /* "run" runs (and never listens: its connects wait or time out; it
   * ends by itself should this process die without its cleanup);
   * "broken" cannot start (its connects fail with the reason). */
  fuzz_load_config(ctx, dir,
                   "[vm run]\nexec = /bin/sleep 300\nready = none\n"
                   "[vm broken]\nexec = /nonexistent/jitsu-fuzz-guest\n",
                   "fuzz_chan");
  uv_timer_init(&loop, &nudge);
  snprintf(rv_path, sizeof(rv_path), "%s/rv.sock", dir);
  if (jitsu_rendezvous_listen(ctx, rv_path) < 0)
    abort();
  jitsu_vm *run = jitsu_vm_find(ctx, "run");
  if (run == NULL || jitsu_vm_summon(run, NULL, NULL) < 0)
    abort();
  for (int i = 0; i < 2000 && jitsu_vm_state(run) != JITSU_STATE_READY; i++)
    uv_run(&loop, UV_RUN_ONCE);
  if (jitsu_vm_state(run) != JITSU_STATE_READY)
    abort();
  atexit(cleanup);
}

static int slot_of(void **slots, void *p) {
  for (int i = 0; i < SLOTS; i++)
    if (slots[i] == p)
      return i;
  return -1;
}

static void chan_read(jitsu_chan *c, const void *data, size_t len, int err,
                      void *arg) {
  (void)arg;
  /* A callback may close what it was called for. */
  if (err < 0 || (len > 0 && ((const uint8_t *)data)[0] == 'X')) {
    int i = slot_of((void **)S.chan, c);
    if (i >= 0)
      S.chan[i] = NULL;
    jitsu_chan_close(c);
  }
}

static void keep_chan(jitsu_chan *c) {
  int i = slot_of((void **)S.chan, NULL);
  if (i < 0) {
    jitsu_chan_close(c);
    return;
  }
  S.chan[i] = c;
  jitsu_chan_read_start(c, chan_read, NULL);
}

static void connected(jitsu_chan *c, int err, void *arg) {
  int i = (int)(intptr_t)arg;
  S.callbacks--;
  if (err != -ECANCELED) /* a cancel emptied its slot already */
    S.conn[i] = NULL;
  if (c != NULL)
    keep_chan(c);
  else if (err == 0)
    abort(); /* neither a channel nor an error */
}

static void accepted(jitsu_chan_listener *l, jitsu_chan *c, const char *port,
                     int err, void *arg) {
  (void)port, (void)arg;
  if (c != NULL) {
    keep_chan(c);
  } else if (err < 0) { /* it cannot listen: close it from its callback */
    int i = slot_of((void **)S.lis, l);
    if (i >= 0)
      S.lis[i] = NULL;
    jitsu_chan_listener_close(l);
  }
}

static void written(jitsu_chan *c, int err, void *arg) {
  (void)c, (void)err, (void)arg;
}

static int rv_socket(void) {
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  strcpy(sun.sun_path, rv_path);
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
    abort();
  return fd;
}

static void hostile_end(struct hostile *h) {
  if (h->rv >= 0)
    close(h->rv);
  if (h->bell >= 0)
    close(h->bell);
  if (h->map != NULL)
    munmap(h->map, h->len);
  h->rv = h->bell = -1;
  h->map = NULL;
}

/* A memfd as a hostile connector makes it: its size, seals and header
 * chosen by (a, b); the channel's memory is then the hostile side's too. */
static int hostile_memfd(struct hostile *h, uint8_t a, uint32_t b) {
  static const size_t sizes[] = {CHAN_HDR_SIZE + 2 * 4096,
                                 CHAN_HDR_SIZE + 2 * 8192,
                                 CHAN_HDR_SIZE + 2 * 4096 + 1,
                                 CHAN_HDR_SIZE,
                                 0,
                                 CHAN_HDR_SIZE +
                                     2 * (size_t)JITSU_CHAN_RING_MAX + 4096};
  size_t len = sizes[a % 6];
  int fd = memfd_create("fuzz-chan", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ftruncate(fd, (off_t)len) < 0)
    abort();
  if (len >= CHAN_HDR_SIZE && len <= CHAN_HDR_SIZE + 2 * 8192 + 1) {
    uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
      abort();
    chan_ring_format(m, len, (uint32_t)((len - CHAN_HDR_SIZE) / 2));
    chan_shm *shm = (chan_shm *)m;
    switch ((a >> 3) & 3) { /* a header that lies */
    case 1:
      shm->ring_size = b;
      break;
    case 2:
      shm->magic = b;
      break;
    case 3:
      shm->version = b;
      break;
    }
    h->map = m;
    h->len = len;
  }
  if ((a & 0x40) == 0) /* unsealed: the listener must refuse it */
    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
  return fd;
}

/* A bell of the hostile side's choosing; (*mine) its end, if any. */
static int hostile_bell(uint8_t kind, int *mine) {
  int sv[2] = {-1, -1};
  *mine = -1;
  switch (kind % 4) {
  case 0:
  default:
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) <
        0)
      abort();
    break;
  case 1:
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) <
        0)
      abort();
    break;
  case 2:
    if (pipe2(sv, O_CLOEXEC | O_NONBLOCK) < 0)
      abort();
    break;
  case 3:
    return open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  *mine = sv[0];
  return sv[1];
}

/* Take one message off a hostile side's rendezvous connection: a
 * hostile listener keeps the memory and bell of a channel handed to it. */
static void hostile_recv(struct hostile *h) {
  char msg[RV_MSG_MAX];
  int fds[2], nfds = 2;
  if (h->rv < 0 || jitsu__rv_recv(h->rv, msg, sizeof(msg), fds, &nfds) < 0)
    return;
  if (nfds == 2 && h->map == NULL && h->bell < 0) {
    struct stat st;
    if (fstat(fds[0], &st) == 0 && st.st_size >= CHAN_HDR_SIZE) {
      void *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE,
                     MAP_SHARED, fds[0], 0);
      if (m != MAP_FAILED)
        h->map = m, h->len = (size_t)st.st_size;
    }
    close(fds[0]);
    h->bell = fds[1];
    return;
  }
  for (int i = 0; i < nfds; i++)
    close(fds[i]);
}

static void nudged(uv_timer_t *t) {
  (void)t;
}

/* One turn of the loop that waits for something, 4 ms at most. (The
 * timer repeats: a first expiry may come before the loop polls, from a
 * loop time that was stale.) */
static void wait_turn(void) {
  uv_update_time(&loop);
  uv_timer_start(&nudge, nudged, 4, 4);
  uv_run(&loop, UV_RUN_ONCE);
  uv_timer_stop(&nudge);
}

static void turn(int n) {
  for (int i = 0; i < n; i++) {
    uv_run(&loop, UV_RUN_NOWAIT);
    for (int k = 0; k < SLOTS; k++)
      hostile_recv(&S.host[k]);
  }
}

static void fuzz_channels(const uint8_t *data, size_t size) {
  if (ctx == NULL)
    setup();
  for (int i = 0; i < SLOTS; i++)
    S.host[i].rv = S.host[i].bell = -1;
  int waits = 0, broken_summons = 0;
  for (size_t i = 0; i + 4 <= size; i += 4) {
    uint8_t op = data[i], a = data[i + 1], b = data[i + 2], c = data[i + 3];
    int k = a % SLOTS;
    const char *name = names[b % 5];
    struct hostile *h = &S.host[k];
    switch (op % 14) {
    case 0: { /* connect through the library */
      if (S.conn[k] != NULL || (strcmp(name, "broken") == 0 &&
                                broken_summons++ > 0)) /* one spawn per input */
        break;
      jitsu_chan_options o = JITSU_CHAN_OPTIONS_INIT;
      o.rendezvous = rv_path;
      o.ring_size = (size_t)4096 << (c % 3);
      o.timeout_ms = 1 + c % 3;
      o.spin_us = UINT64_MAX;
      o.direct_read = c & 0x80;
      char port[8];
      snprintf(port, sizeof(port), "p%u", c & 7);
      if (jitsu_chan_connect(&loop, name, port, &o, connected,
                             (void *)(intptr_t)k, &S.conn[k]) == 0)
        S.callbacks++;
      break;
    }
    case 1: { /* listen through the library */
      if (S.lis[k] != NULL)
        break;
      jitsu_chan_options o = JITSU_CHAN_OPTIONS_INIT;
      o.rendezvous = rv_path;
      o.spin_us = UINT64_MAX;
      o.max_channels = 1 + c % 4;
      jitsu_chan_listen(&loop, name, &o, accepted, NULL, &S.lis[k]);
      break;
    }
    case 2: /* write on a channel */
      if (S.chan[k] != NULL) {
        size_t n = (size_t)c * 64 < size - i ? (size_t)c * 64 : size - i;
        jitsu_chan_write(S.chan[k], data + i, n, b & 1 ? written : NULL, NULL);
      }
      break;
    case 3:
      if (S.chan[k] != NULL)
        jitsu_chan_shutdown(S.chan[k]);
      break;
    case 4:
      if (S.chan[k] != NULL) {
        jitsu_chan_close(S.chan[k]);
        S.chan[k] = NULL;
      }
      break;
    case 5:
      if (S.conn[k] != NULL) {
        jitsu_chan_connect_cancel(S.conn[k]);
        S.conn[k] = NULL;
      }
      break;
    case 6:
      if (S.lis[k] != NULL) {
        jitsu_chan_listener_close(S.lis[k]);
        S.lis[k] = NULL;
      }
      break;
    case 7: { /* a hostile connector: its own memfd and bell */
      hostile_end(h);
      h->rv = rv_socket();
      int fds[2];
      fds[0] = hostile_memfd(h, c, (uint32_t)b << 12 | a);
      fds[1] = hostile_bell(b >> 4, &h->bell);
      char msg[RV_MSG_MAX];
      snprintf(msg, sizeof(msg), "C %s p%u %u", name, c & 7, 1 + (a >> 6));
      jitsu__rv_send(h->rv, msg, fds, 1 + ((b & 8) == 0));
      close(fds[0]);
      close(fds[1]);
      break;
    }
    case 8: /* a hostile listener: takes channels, then attacks them */
      hostile_end(h);
      h->rv = rv_socket();
      char msg[RV_MSG_MAX];
      snprintf(msg, sizeof(msg), "L %s", name);
      jitsu__rv_send(h->rv, msg, NULL, 0);
      break;
    case 9: /* the hostile side writes a word into the channel's memory */
      if (h->map != NULL) {
        uint32_t v = (uint32_t)b << 24 | (uint32_t)c << 8 | a;
        size_t off = ((size_t)b << 8 | c) * 4 % h->len;
        if (off + 4 <= h->len)
          memcpy(h->map + off, &v, 4);
        if (c & 1) /* and the producer index of its direction */
          ((chan_shm *)h->map)->dir[b & 1].prod += c;
      }
      if (h->bell >= 0)
        (void)!write(h->bell, "!", 1);
      break;
    case 10: /* the hostile side hangs up its bell, or everything */
      if (c & 1)
        hostile_end(h);
      else if (h->bell >= 0) {
        close(h->bell);
        h->bell = -1;
      }
      break;
    case 11: { /* raw request text, from the input */
      if (h->rv < 0)
        h->rv = rv_socket();
      size_t n = size - i - 4 < (size_t)c ? size - i - 4 : c;
      send(h->rv, data + i + 4, n, MSG_DONTWAIT);
      i += n;
      break;
    }
    case 12: /* let timers run out (short: connects time out in 1-3 ms) */
      if (waits++ < 2)
        wait_turn();
      break;
    default:
      turn(1 + c % 4);
    }
  }
  turn(4);
  /* Close everything this input opened, and let every callback run. */
  for (int i = 0; i < SLOTS; i++) {
    if (S.conn[i] != NULL)
      jitsu_chan_connect_cancel(S.conn[i]);
    S.conn[i] = NULL;
    if (S.lis[i] != NULL)
      jitsu_chan_listener_close(S.lis[i]);
    S.lis[i] = NULL;
  }
  for (int i = 0; i < SLOTS; i++) {
    hostile_end(&S.host[i]);
    if (S.chan[i] != NULL)
      jitsu_chan_close(S.chan[i]);
    S.chan[i] = NULL;
  }
  for (int n = 0; n < 1000 && S.callbacks > 0; n++)
    if (n < 8)
      uv_run(&loop, UV_RUN_NOWAIT);
    else
      wait_turn();
  if (S.callbacks != 0)
    abort(); /* a connect whose callback never came */
  turn(4);
  /* A channel accepted after its slot was emptied is closed here. */
  for (int i = 0; i < SLOTS; i++)
    if (S.chan[i] != NULL) {
      jitsu_chan_close(S.chan[i]);
      S.chan[i] = NULL;
    }
  turn(2);
}

/* A Xen channel request path, as another domain may write it. */
static void fuzz_conduit(const uint8_t *data, size_t size) {
  char path[300], name[JITSU_CHAN_NAME_MAX + 1], port[JITSU_CHAN_PORT_MAX + 1];
  for (size_t start = 0, i = 0; i <= size; i++) {
    if (i < size && data[i] != '\n')
      continue;
    size_t len = i - start < sizeof(path) - 1 ? i - start : sizeof(path) - 1;
    memcpy(path, data + start, len);
    path[len] = '\0';
    start = i + 1;
    unsigned client = 0;
    if (jitsu__conduit_parse(path, name, sizeof(name), &client, port,
                             sizeof(port)) == 0) {
      char again[300];
      snprintf(again, sizeof(again), "/conduit/%s/requests/%u/%s", name, client,
               port);
      if (strcmp(again, path) != 0 || client >= 0x7ff0 ||
          !jitsu__chan_name_ok(name) || !jitsu__chan_port_ok(port))
        abort(); /* accepted something it should not have */
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_ring(data, size);
  fuzz_channels(data, size);
  fuzz_conduit(data, size);
  return 0;
}
