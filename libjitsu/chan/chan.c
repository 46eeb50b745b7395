/*
 * Channel endpoints: a sealed memfd with two rings (chan_ring.c), and a
 * socket pair whose bytes are wake-ups and whose hang-up means the peer is
 * gone. Work happens in loop callbacks only: an idle handle polls the rings
 * for a short while after activity (so that a busy pair never needs a
 * system call), then both sides ask to be woken and sleep on the socket.
 */
#include "chan_ring.h"
#include "chan_int.h"

#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK (64 * 1024)
#define DEFAULT_SPIN_NS (50 * 1000)

typedef struct wreq {
  struct wreq *next;
  size_t len, off;
  jitsu_chan_write_cb cb;
  void *arg;
  uint8_t data[];
} wreq;

struct jitsu_chan {
  uv_loop_t *loop;
  chan_ring ring;
  const jitsu__chan_transport *tr; /* another transport (a Xen vchan) */
  void *tr_impl;                   /* its state, owned */
  void *peer_watch;                /* and what tells it that the peer died */
  void (*peer_watch_free)(void *);
  jitsu__chan_count *count; /* the listener's, for a channel it accepted */
  uint8_t *map;
  size_t map_len;
  int bell; /* our end of the socket pair */
  uv_poll_t poll;
  uv_idle_t idle;
  int handles; /* open handles, for the last close */
  bool idling, closing, peer_gone, broken, eof_seen;
  bool shut_requested, shut_done, direct;
  int err; /* why it broke */
  wreq *wq, **wq_tail;
  size_t wq_bytes;
  wreq *done; /* completed writes, their callbacks run next */
  jitsu_chan_read_cb read_cb;
  void *read_arg;
  uint64_t spin_ns, spin_until;
  void *data;
  uint8_t *rbuf;
};

/* The transport: our rings in a memfd, or another (a Xen vchan, which notifies
 * its peer itself; no peek, no in-band end of stream). */
static long t_write(jitsu_chan *c, const void *data, size_t len, bool *wake) {
  if (c->tr != NULL) {
    *wake = false;
    return c->tr->write(c->tr_impl, data, len);
  }
  return chan_ring_write(&c->ring, data, len, wake);
}

static long t_read(jitsu_chan *c, void *buf, size_t len, bool *wake) {
  if (c->tr != NULL) {
    *wake = false;
    return c->tr->read(c->tr_impl, buf, len);
  }
  return chan_ring_read(&c->ring, buf, len, wake);
}

static long t_readable(jitsu_chan *c) {
  if (c->tr != NULL)
    return c->tr->readable(c->tr_impl);
  return chan_ring_readable(&c->ring);
}

static long t_writable(jitsu_chan *c) {
  if (c->tr != NULL)
    return c->tr->writable(c->tr_impl);
  return chan_ring_writable(&c->ring);
}

/* The peer ended its stream (a vchan: closed it, or its domain died). */
static bool t_peer_eof(jitsu_chan *c) {
  if (c->tr != NULL)
    return c->tr->peer_eof(c->tr_impl);
  return chan_ring_peer_eof(&c->ring);
}

static void ring_bell(jitsu_chan *c) {
  char b = 1;
  if (c->bell >= 0 && send(c->bell, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 &&
      errno != EAGAIN && errno != EWOULDBLOCK)
    c->peer_gone = true;
}

/* The callbacks of the writes left at close, in order: those already in
 * the ring with 0, the rest with -ECANCELED (libuv's uv_close discipline).
 * (c) is still valid during them; jitsu_chan_write() refuses it. */
/* Take the completed writes, oldest first (c->done is newest first). */
static wreq *take_done(jitsu_chan *c) {
  wreq *rev = NULL;
  while (c->done != NULL) {
    wreq *w = c->done;
    c->done = w->next;
    w->next = rev;
    rev = w;
  }
  return rev;
}

static void finish_closed_writes(jitsu_chan *c) {
  wreq *rev = take_done(c);
  for (wreq *w; (w = rev) != NULL; free(w)) {
    rev = w->next;
    if (w->cb != NULL)
      w->cb(c, 0, w->arg);
  }
  for (wreq *w; (w = c->wq) != NULL; free(w)) {
    c->wq = w->next;
    if (w->cb != NULL)
      w->cb(c, -ECANCELED, w->arg);
  }
}

static void handle_closed(uv_handle_t *h) {
  jitsu_chan *c = h->data;
  if (--c->handles == 0) {
    finish_closed_writes(c);
    if (c->tr != NULL)
      c->tr->close(c->tr_impl); /* the peer sees it closed */
    if (c->map != NULL)
      munmap(c->map, c->map_len);
    free(c->rbuf);
    free(c);
  }
}

static void fail_writes(jitsu_chan *c, int err) {
  while (c->wq != NULL && !c->closing) { /* at close: finish_closed_writes */
    wreq *w = c->wq;
    c->wq = w->next;
    if (c->wq == NULL)
      c->wq_tail = &c->wq;
    c->wq_bytes -= w->len - w->off;
    if (w->cb != NULL)
      w->cb(c, err, w->arg);
    free(w);
  }
}

void jitsu_chan_close(jitsu_chan *c) {
  if (c == NULL || c->closing)
    return;
  c->closing = true;
  c->wq_bytes = 0;
  uv_close((uv_handle_t *)&c->poll, handle_closed);
  uv_close((uv_handle_t *)&c->idle, handle_closed);
  if (c->peer_watch != NULL)
    c->peer_watch_free(c->peer_watch);
  c->peer_watch = NULL;
  if (c->count != NULL) {
    c->count->open--;
    jitsu__chan_count_put(c->count);
    c->count = NULL;
  }
  if (c->bell >= 0)
    close(c->bell); /* the peer's poll sees the hang-up */
  c->bell = -1;
}

static void start_idle(jitsu_chan *c);

/* The channel cannot go on: deliver (err) once to the reader. */
static void broken(jitsu_chan *c, int err) {
  if (c->broken)
    return;
  c->broken = true;
  c->err = err;
  fail_writes(c, err);
}

/* Move queued writes into the ring; 1 if anything moved. */
static int pump_writes(jitsu_chan *c) {
  int moved = 0;
  while (c->wq != NULL && !c->broken) {
    wreq *w = c->wq;
    bool wake;
    long n = t_write(c, w->data + w->off, w->len - w->off, &wake);
    if (n < 0) {
      broken(c, (int)n);
      return 1;
    }
    if (wake)
      ring_bell(c);
    if (n == 0)
      break;
    moved = 1;
    w->off += (size_t)n;
    c->wq_bytes -= (size_t)n;
    if (w->off == w->len) {
      c->wq = w->next;
      if (c->wq == NULL)
        c->wq_tail = &c->wq;
      w->next = c->done;
      c->done = w;
    }
  }
  if (c->wq == NULL && c->shut_requested && !c->shut_done && !c->broken &&
      c->tr == NULL) {
    c->shut_done = true;
    chan_ring_set_eof(&c->ring);
    ring_bell(c);
    moved = 1;
  }
  return moved;
}

/* Completed writes' callbacks, in order. */
static void finish_writes(jitsu_chan *c) {
  wreq *rev = take_done(c);
  while (rev != NULL && !c->closing) {
    wreq *w = rev;
    rev = w->next;
    if (w->cb != NULL)
      w->cb(c, 0, w->arg);
    free(w);
  }
  /* A callback closed it: the rest finish at close, after (older than)
   * what was written meanwhile. */
  wreq **tail = &c->done;
  while (*tail != NULL)
    tail = &(*tail)->next;
  while (rev != NULL) {
    wreq *w = rev;
    rev = w->next;
    w->next = *tail;
    *tail = w;
  }
}

/* Deliver what is readable; 1 if anything was read. */
static int pump_reads(jitsu_chan *c) {
  int moved = 0;
  while (c->read_cb != NULL && !c->closing && !c->eof_seen) {
    bool wake = false;
    const uint8_t *at = c->rbuf;
    long n = c->broken   ? 0
             : c->direct ? chan_ring_peek(&c->ring, &at, READ_CHUNK)
                         : t_read(c, c->rbuf, READ_CHUNK, &wake);
    if (n < 0) {
      broken(c, (int)n);
      continue;
    }
    if (n == 0) {
      /* Nothing more: the end, if the peer said so or went away. */
      if (c->broken || t_peer_eof(c) || c->peer_gone) {
        int err = c->broken ? c->err : t_peer_eof(c) ? 0 : -ECONNRESET;
        if (!c->broken && t_readable(c) > 0)
          continue; /* written just before the end */
        c->eof_seen = true;
        c->read_cb(c, NULL, 0, err, c->read_arg);
        moved = 1;
      }
      break;
    }
    moved = 1;
    if (c->direct) {
      c->read_cb(c, at, (size_t)n, 0, c->read_arg);
      if (!c->closing)
        chan_ring_consume(&c->ring, (size_t)n, &wake);
    } else {
      c->read_cb(c, at, (size_t)n, 0, c->read_arg);
    }
    if (wake && !c->closing)
      ring_bell(c);
  }
  return moved;
}

static void pump(jitsu_chan *c) {
  if (c->closing)
    return;
  if (c->peer_gone && !c->broken && c->wq != NULL)
    broken(c, -ECONNRESET);
  int moved = pump_writes(c);
  finish_writes(c);
  moved |= pump_reads(c);
  if (c->closing)
    return;
  uint64_t now = uv_hrtime();
  if (moved)
    c->spin_until = now + c->spin_ns;
  if (now < c->spin_until && !c->broken && !c->peer_gone)
    return; /* keep polling the rings for a while */
  /* Sleep: ask to be woken, then look once more (the peer may have acted
   * between our last look and the request). */
  bool want_data = c->read_cb != NULL && !c->eof_seen;
  bool want_space = c->wq != NULL && !c->broken;
  if (c->tr == NULL)
    chan_ring_want(&c->ring, want_data, want_space);
  long r = want_data ? t_readable(c) : 0;
  long w = want_space ? t_writable(c) : 0;
  if (r != 0 || w != 0 || (want_data && t_peer_eof(c)) || c->done != NULL)
    return; /* more to do: stay on the idle handle */
  if (c->idling) {
    uv_idle_stop(&c->idle);
    c->idling = false;
  }
}

static void idle_cb(uv_idle_t *h) {
  pump(h->data);
}

static void start_idle(jitsu_chan *c) {
  if (!c->idling && !c->closing) {
    c->idling = true;
    uv_idle_start(&c->idle, idle_cb);
  }
}

static void bell_cb(uv_poll_t *h, int status, int events) {
  jitsu_chan *c = h->data;
  if (c->closing)
    return;
  if (c->tr != NULL) {
    c->tr->wait(c->tr_impl); /* takes the event; does not block now */
    if (status < 0)
      c->peer_gone = true;
    c->spin_until = uv_hrtime() + c->spin_ns;
    start_idle(c);
    return;
  }
  char buf[256];
  for (;;) {
    ssize_t n = recv(c->bell, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0)
      continue;
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
      c->peer_gone = true;
    break;
  }
  if (status < 0 || (events & UV_DISCONNECT))
    c->peer_gone = true;
  if (c->peer_gone)
    uv_poll_stop(&c->poll);
  c->spin_until = uv_hrtime() + c->spin_ns;
  start_idle(c);
}

/* The parts of a channel both kinds share: a new one with its read
 * buffer (NULL with *err), and, once its poll handle is set up, the rest
 * and the start of its handles. */
static jitsu_chan *chan_alloc(int *err) {
  jitsu_chan *c = calloc(1, sizeof(*c));
  if (c == NULL || (c->rbuf = malloc(READ_CHUNK)) == NULL) {
    free(c);
    *err = -ENOMEM;
    return NULL;
  }
  return c;
}

static void chan_unalloc(jitsu_chan *c) {
  free(c->rbuf);
  free(c);
}

static jitsu_chan *chan_begin(jitsu_chan *c, uv_loop_t *loop,
                              const jitsu_chan_options *o, int events) {
  uint64_t spin_us = o ? o->spin_us : 0;
  c->loop = loop;
  c->wq_tail = &c->wq;
  c->spin_ns = spin_us == UINT64_MAX ? 0
               : spin_us == 0        ? DEFAULT_SPIN_NS
                                     : spin_us * 1000;
  uv_idle_init(loop, &c->idle);
  c->idle.data = c->poll.data = c;
  c->handles = 2;
  uv_poll_start(&c->poll, events, bell_cb);
  start_idle(c);
  return c;
}

jitsu_chan *jitsu__chan_new(uv_loop_t *loop, uint8_t *map, size_t map_len,
                            int bell, int role, const jitsu_chan_options *o,
                            int *err) {
  jitsu_chan *c = chan_alloc(err);
  if (c == NULL)
    return NULL;
  *err = chan_ring_attach(&c->ring, map, map_len, role);
  /* The bell must be a descriptor libuv can poll (the peer chose it). */
  if (*err == 0)
    *err = uv_poll_init(loop, &c->poll, bell);
  if (*err < 0) {
    chan_unalloc(c);
    return NULL;
  }
  c->map = map;
  c->map_len = map_len;
  c->bell = bell;
  c->direct = o != NULL && o->direct_read;
  return chan_begin(c, loop, o, UV_READABLE | UV_DISCONNECT);
}

jitsu_chan *jitsu__chan_new_transport(uv_loop_t *loop,
                                      const jitsu__chan_transport *tr,
                                      void *impl, int fd,
                                      const jitsu_chan_options *o, int *err) {
  jitsu_chan *c = chan_alloc(err);
  if (c != NULL) {
    /* libuv makes the descriptor non-blocking; the transport reads it as
     * it set it up. */
    int flags = fcntl(fd, F_GETFL);
    *err = uv_poll_init(loop, &c->poll, fd);
    if (flags >= 0)
      fcntl(fd, F_SETFL, flags);
    if (*err < 0) {
      chan_unalloc(c);
      c = NULL;
    }
  }
  if (c == NULL) {
    tr->close(impl); /* ours from the call on, as the header says */
    return NULL;
  }
  c->tr = tr;
  c->tr_impl = impl;
  c->bell = -1;
  return chan_begin(c, loop, o, UV_READABLE);
}

void jitsu__chan_set_peer_watch(jitsu_chan *c, void *w,
                                void (*free_fn)(void *)) {
  c->peer_watch = w;
  c->peer_watch_free = free_fn;
}

void jitsu__chan_peer_gone(jitsu_chan *c) {
  if (c->closing || c->peer_gone)
    return;
  c->peer_gone = true;
  start_idle(c);
}

int jitsu_chan_read_start(jitsu_chan *c, jitsu_chan_read_cb cb, void *arg) {
  if (c->closing)
    return -EBADF;
  c->read_cb = cb;
  c->read_arg = arg;
  if (cb != NULL)
    start_idle(c);
  return 0;
}

int jitsu_chan_write(jitsu_chan *c, const void *data, size_t len,
                     jitsu_chan_write_cb cb, void *arg) {
  if (c->closing || c->shut_requested)
    return -EPIPE;
  if (c->broken) /* why it broke, whether or not a read said so first */
    return c->err;
  if (c->peer_gone)
    return -ECONNRESET;
  /* Fast path: straight into the ring when nothing waits before us; only
   * what does not fit is copied into the queue. */
  size_t off = 0;
  if (c->wq == NULL) {
    bool wake;
    long n = t_write(c, data, len, &wake);
    if (n < 0) {
      broken(c, (int)n);
      return (int)n;
    }
    if (wake)
      ring_bell(c);
    off = (size_t)n;
  }
  size_t rest = len - off;
  wreq *w = malloc(sizeof(*w) + rest);
  if (w == NULL)
    return -ENOMEM; /* (what went into the ring stays there) */
  memcpy(w->data, (const uint8_t *)data + off, rest);
  w->next = NULL;
  w->len = rest;
  w->off = 0;
  w->cb = cb;
  w->arg = arg;
  if (rest == 0) { /* done: its callback runs from the loop */
    w->next = c->done;
    c->done = w;
  } else {
    *c->wq_tail = w;
    c->wq_tail = &w->next;
    c->wq_bytes += rest;
  }
  start_idle(c);
  return 0;
}

size_t jitsu_chan_write_queue_size(const jitsu_chan *c) {
  return c->wq_bytes;
}

int jitsu_chan_shutdown(jitsu_chan *c) {
  if (c->closing)
    return -EBADF;
  if (c->tr != NULL)
    return -EOPNOTSUPP; /* a vchan has no half-close: close it */
  c->shut_requested = true;
  start_idle(c);
  return 0;
}

void jitsu_chan_set_data(jitsu_chan *c, void *data) {
  c->data = data;
}

void *jitsu_chan_data(const jitsu_chan *c) {
  return c->data;
}

int jitsu__chan_opts(const jitsu_chan_options *in, jitsu_chan_options *out) {
  static const jitsu_chan_options defaults = JITSU_CHAN_OPTIONS_INIT;
  *out = defaults;
  if (in == NULL)
    return 0;
  if (in->version == 1) { /* everything before max_channels */
    memcpy(out, in, offsetof(jitsu_chan_options, max_channels));
    out->version = JITSU_CHAN_OPTIONS_VERSION;
    return 0;
  }
  if (in->version != JITSU_CHAN_OPTIONS_VERSION)
    return -EINVAL;
  *out = *in;
  return 0;
}

jitsu__chan_count *jitsu__chan_count_new(const jitsu_chan_options *o) {
  jitsu__chan_count *n = calloc(1, sizeof(*n));
  if (n != NULL) {
    n->refs = 1;
    n->max = o->max_channels ? o->max_channels : JITSU_CHAN_LISTEN_MAX;
  }
  return n;
}

bool jitsu__chan_count_room(const jitsu__chan_count *n) {
  return n == NULL || n->open < n->max;
}

void jitsu__chan_count_add(jitsu_chan *c, jitsu__chan_count *n) {
  if (n == NULL || c->count != NULL)
    return;
  n->refs++;
  n->open++;
  c->count = n;
}

void jitsu__chan_count_put(jitsu__chan_count *n) {
  if (n != NULL && --n->refs == 0)
    free(n);
}
