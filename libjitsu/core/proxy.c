/* Proxying socket triggers: the library listens on a vm's public address,
 * summons the vm when a connection comes, holds connections in a bounded,
 * ordered per-vm queue while it starts, then connects each to the guest's
 * address and relays both ways, with backpressure and half-close.
 *
 * "socket = tcp|udp:HOST:PORT [to=HOST:PORT] [backlog=N]" in a [vm]
 * section: for a backend that does not take sockets itself (every backend
 * but process), or with to= for any backend. The guest's address is to=,
 * or else the vm's first address key. UDP is relayed per flow (a client
 * address), each with a socket of its own connected to the guest.
 *
 * Lifetimes: a vm has one jitsu__proxy while it is defined. The proxy's
 * memory lives until its last handle has closed and its summon has called
 * back (refs); it forgets the vm at detach (undefine, redefine). */
#include "internal.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#define PROXY_BUF (16 * 1024)  /* per direction of a relay */
#define DEFAULT_QUEUE 256      /* held connections per vm */
#define DEFAULT_MAX_CONNS 1024 /* held + relayed per vm */
#define BACKOFF_FIRST_MS 1000  /* after a failed start */
#define BACKOFF_MAX_MS (60 * 1000)

typedef struct jitsu__proxy proxy;

typedef struct listener {
  jitsu_list link; /* proxy->listeners */
  proxy *px;
  bool udp;
  uv_tcp_t tcp; /* or: */
  uv_udp_t dgram;
  char *rbuf; /* udp: the datagram being received */
  struct sockaddr_storage to;
  char key[96]; /* "tcp:HOST:PORT", the trigger's key */
  char to_text[80];
} listener;

typedef struct dir {
  uv_stream_t *src, *dst;
  char *buf;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  bool writing, eof, shut;
} dir;

typedef struct conn {
  jitsu_list link; /* proxy->held or proxy->relays */
  proxy *px;
  listener *l;
  uv_tcp_t client, guest;
  uv_connect_t creq;
  dir d[2]; /* 0: client -> guest, 1: guest -> client */
  unsigned handles;
  bool held, holding, closing, guest_open;
} conn;

struct jitsu__proxy {
  jitsu_vm *vm; /* NULL once detached */
  jitsu_ctx *ctx;
  jitsu_list listeners, held, relays;
  unsigned n_held, n_conns, n_relays, queue_max, conns_max;
  unsigned relays_max; /* relayed at once (0: no limit); the rest wait */
  bool draining;
  unsigned refs; /* ours, open handles, the summon in flight */
  bool summoning;
  /* After a failed start, connections are refused at once until
   * (backoff_until); the wait doubles per failure in a row. */
  uint64_t backoff_ms, backoff_until;
  jitsu_list flows; /* udp */
  unsigned n_flows;
  uint64_t flow_timeout_ms;
};

static void proxy_unref(proxy *px) {
  if (--px->refs == 0)
    free(px);
}

/* Parse "tcp:HOST:PORT [to=HOST:PORT] [backlog=N]"; (*to_given) says
 * whether to= was there. */
static int parse_spec(const char *spec, listener *l, int *backlog,
                      bool *to_given, const char **why) {
  char **w;
  int n;
  *why = "expected 'tcp|udp:HOST:PORT [to=HOST:PORT] [backlog=N]'";
  if (jitsu_split_argv(spec, &w, &n) < 0)
    return -EINVAL;
  int r = -EINVAL;
  struct sockaddr_storage pub;
  *to_given = false;
  *backlog = SOMAXCONN;
  if (n < 1 || (strncmp(w[0], "tcp:", 4) != 0 && strncmp(w[0], "udp:", 4)))
    goto out;
  l->udp = w[0][0] == 'u';
  if (jitsu__parse_hostport(w[0] + 4, &pub) < 0) {
    *why = "the address must be a numeric HOST:PORT or [IPV6]:PORT";
    goto out;
  }
  char text[80];
  jitsu__format_sockaddr((struct sockaddr *)&pub, text, sizeof(text));
  snprintf(l->key, sizeof(l->key), "%s:%s", l->udp ? "udp" : "tcp", text);
  for (int i = 1; i < n; i++) {
    if (strncmp(w[i], "to=", 3) == 0) {
      if (jitsu__parse_hostport(w[i] + 3, &l->to) < 0) {
        *why = "to= needs a numeric HOST:PORT or [IPV6]:PORT";
        goto out;
      }
      *to_given = true;
    } else if (strncmp(w[i], "backlog=", 8) == 0) {
      unsigned v;
      if (jitsu__parse_uint(w[i] + 8, &v) < 0 || v < 1 || v > 65535) {
        *why = "backlog= needs a number from 1 to 65535";
        goto out;
      }
      *backlog = (int)v;
    } else {
      *why = "unknown option (to=HOST:PORT or backlog=N)";
      goto out;
    }
  }
  r = 0;
out:
  free(w);
  return r;
}

bool jitsu_backend_socket_relayed(const char *spec) {
  char **w;
  int n;
  bool found = false;
  if (jitsu_split_argv(spec, &w, &n) < 0)
    return false;
  for (int i = 1; i < n; i++)
    if (strncmp(w[i], "to=", 3) == 0)
      found = true;
  free(w);
  return found;
}

/* ---- connections ---- */

static void drain_held(proxy *px);

static void conn_closed(uv_handle_t *h) {
  conn *c = h->data;
  if (--c->handles > 0)
    return;
  proxy *px = c->px;
  free(c->d[0].buf);
  free(c->d[1].buf);
  free(c);
  proxy_unref(px);
}

/* End (c): both sockets closed, with a reset for the client if (reset). */
static void conn_close(conn *c, bool reset) {
  if (c->closing)
    return;
  c->closing = true;
  proxy *px = c->px;
  jitsu_list_remove(&c->link);
  if (c->held)
    px->n_held--;
  else
    px->n_relays--;
  px->n_conns--;
  if (c->holding && px->vm != NULL)
    jitsu_vm_release(px->vm);
  c->holding = false;
  if (!reset || uv_tcp_close_reset(&c->client, conn_closed) < 0)
    uv_close((uv_handle_t *)&c->client, conn_closed);
  if (c->guest_open)
    uv_close((uv_handle_t *)&c->guest, conn_closed);
  if (!c->held)
    drain_held(px); /* a relay slot is free */
}

static void dir_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  conn *c = h->data;
  dir *d = &c->d[(uv_handle_t *)&c->client == h ? 0 : 1];
  (void)hint;
  if (d->buf == NULL)
    d->buf = malloc(PROXY_BUF);
  *b = uv_buf_init(d->buf, d->buf ? PROXY_BUF : 0);
}

static void dir_done(conn *c) {
  if (c->d[0].shut && c->d[1].shut)
    conn_close(c, false);
}

static void shut_cb(uv_shutdown_t *req, int status) {
  conn *c = req->handle->data;
  dir *d = req->data;
  if (c->closing)
    return;
  if (status < 0) {
    conn_close(c, true);
    return;
  }
  d->shut = true;
  dir_done(c);
}

/* The source of (d) has ended and everything is written: pass the EOF on. */
static void dir_shutdown(conn *c, dir *d) {
  d->sreq.data = d;
  if (uv_shutdown(&d->sreq, d->dst, shut_cb) < 0)
    conn_close(c, true);
}

static void dir_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

static void write_cb(uv_write_t *req, int status) {
  conn *c = req->handle->data;
  dir *d = req->data;
  d->writing = false;
  if (c->closing)
    return;
  if (status < 0) {
    conn_close(c, true);
    return;
  }
  if (d->eof)
    dir_shutdown(c, d);
  else if (uv_read_start(d->src, dir_alloc, dir_read) < 0)
    conn_close(c, true);
}

static void dir_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  conn *c = s->data;
  dir *d = &c->d[s == (uv_stream_t *)&c->client ? 0 : 1];
  if (n == 0)
    return;
  if (n == UV_EOF) {
    d->eof = true;
    uv_read_stop(s);
    if (!d->writing)
      dir_shutdown(c, d);
    return;
  }
  if (n < 0) {
    conn_close(c, true);
    return;
  }
  if (c->px->vm != NULL)
    jitsu_vm_touch(c->px->vm); /* bytes are activity for the idle policy */
  /* Straight into the other socket if it takes it all: no write request,
   * and no epoll change in libuv for it. */
  uv_buf_t out = uv_buf_init(b->base, (unsigned)n);
  int w = uv_try_write(d->dst, &out, 1);
  if (w == n)
    return;
  if (w < 0 && w != UV_EAGAIN) {
    conn_close(c, true);
    return;
  }
  if (w > 0)
    out = uv_buf_init(b->base + w, (unsigned)(n - w));
  uv_read_stop(s); /* backpressure: read on when the write is done */
  d->writing = true;
  d->wreq.data = d;
  if (uv_write(&d->wreq, d->dst, &out, 1, write_cb) < 0) {
    d->writing = false;
    conn_close(c, true);
  }
}

static void guest_connected(uv_connect_t *req, int status) {
  conn *c = req->data;
  if (c->closing)
    return;
  proxy *px = c->px;
  if (status < 0 || px->vm == NULL) {
    if (px->vm != NULL)
      jitsu_vm_log(px->vm, JITSU_LOG_WARNING,
                   "%s: cannot connect to the guest at %s: %s", c->l->key,
                   c->l->to_text, uv_strerror(status));
    conn_close(c, true);
    return;
  }
  uv_tcp_nodelay(&c->guest, 1);
  c->d[0] =
      (dir){.src = (uv_stream_t *)&c->client, .dst = (uv_stream_t *)&c->guest};
  c->d[1] =
      (dir){.src = (uv_stream_t *)&c->guest, .dst = (uv_stream_t *)&c->client};
  if (uv_read_start(c->d[0].src, dir_alloc, dir_read) < 0 ||
      uv_read_start(c->d[1].src, dir_alloc, dir_read) < 0)
    conn_close(c, true);
}

/* Connect (c), accepted and no longer held, to the guest. */
static void conn_relay(conn *c) {
  proxy *px = c->px;
  c->held = false;
  px->n_held--;
  px->n_relays++;
  jitsu_list_remove(&c->link);
  jitsu_list_append(&px->relays, &c->link);
  jitsu_vm_hold(px->vm); /* an open connection keeps the guest up */
  c->holding = true;
  jitsu_vm_touch(px->vm);
  if (uv_tcp_init(jitsu_ctx_loop(px->ctx), &c->guest) < 0) {
    conn_close(c, true);
    return;
  }
  c->guest.data = c;
  c->guest_open = true;
  c->handles++;
  c->creq.data = c;
  int r = uv_tcp_connect(&c->creq, &c->guest, (struct sockaddr *)&c->l->to,
                         guest_connected);
  if (r < 0) {
    jitsu_vm_log(px->vm, JITSU_LOG_WARNING, "%s: cannot connect to %s: %s",
                 c->l->key, c->l->to_text, uv_strerror(r));
    conn_close(c, true);
  }
}

/* Relay the held connections, in order, as far as the guest's limit
 * allows; called when the vm is ready and when a relay ends. */
static void drain_held(proxy *px) {
  if (px->draining || px->vm == NULL ||
      jitsu_vm_state(px->vm) != JITSU_STATE_READY)
    return;
  px->draining = true; /* a relay that fails at once comes back here */
  while (px->held.next != &px->held &&
         (px->relays_max == 0 || px->n_relays < px->relays_max))
    conn_relay(JITSU_CONTAINER_OF(px->held.next, conn, link));
  px->draining = false;
}

/* ---- summons ---- */

static void flows_flush(proxy *px);
static void flows_close_all(proxy *px);

static void summon_kick(proxy *px);

static void summoned(jitsu_vm *vm, int status, void *arg) {
  proxy *px = arg;
  (void)vm;
  px->summoning = false;
  if (px->vm == NULL) {
    proxy_unref(px);
    return;
  }
  if (status == 0) {
    px->backoff_ms = 0;
    drain_held(px);
    flows_flush(px);
    if (px->held.next != &px->held &&
        jitsu_vm_state(px->vm) != JITSU_STATE_READY)
      summon_kick(px); /* it went away again before they got their turn */
  } else {
    jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
    jitsu_vm_info_get(px->vm, &info);
    px->backoff_ms = px->backoff_ms == 0                   ? BACKOFF_FIRST_MS
                     : px->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                           : px->backoff_ms * 2;
    px->backoff_until = uv_now(jitsu_ctx_loop(px->ctx)) + px->backoff_ms;
    jitsu_vm_log(px->vm, JITSU_LOG_WARNING,
                 "summon for a connection failed (%s): %u waiting "
                 "connection(s) closed; connections in the next %llu ms are "
                 "refused",
                 info.reason[0] ? info.reason : jitsu_strerror(status),
                 px->n_held, (unsigned long long)px->backoff_ms);
    while (px->held.next != &px->held)
      conn_close(JITSU_CONTAINER_OF(px->held.next, conn, link), true);
    flows_close_all(px);
  }
  proxy_unref(px);
}

static void summon_kick(proxy *px) {
  if (px->summoning)
    return;
  int r = jitsu_vm_summon(px->vm, summoned, px);
  if (r == 0) {
    px->summoning = true;
    px->refs++;
    return;
  }
  jitsu_vm_log(px->vm, JITSU_LOG_WARNING,
               "summon for a connection refused: %s; %u waiting "
               "connection(s) closed",
               jitsu_ctx_last_error(px->ctx), px->n_held);
  while (px->held.next != &px->held)
    conn_close(JITSU_CONTAINER_OF(px->held.next, conn, link), true);
  flows_close_all(px);
}

static void on_connection(uv_stream_t *server, int status) {
  listener *l = server->data;
  proxy *px = l->px;
  if (status < 0 || px->vm == NULL)
    return;
  conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return; /* it stays in the backlog */
  c->px = px;
  c->l = l;
  uv_tcp_init(jitsu_ctx_loop(px->ctx), &c->client);
  c->client.data = c;
  c->handles = 1;
  px->refs++;
  px->n_conns++;
  jitsu_list_append(&px->held, &c->link);
  c->held = true;
  px->n_held++;
  if (uv_accept(server, (uv_stream_t *)&c->client) < 0) {
    conn_close(c, false);
    return;
  }
  uv_tcp_nodelay(&c->client, 1);
  uint64_t now = uv_now(jitsu_ctx_loop(px->ctx));
  if (px->n_conns > px->conns_max || px->n_held > px->queue_max ||
      now < px->backoff_until) {
    conn_close(c, true); /* refused at once, never left hanging */
    return;
  }
  if (jitsu_vm_state(px->vm) == JITSU_STATE_READY)
    drain_held(px);
  else
    summon_kick(px);
}

/* ---- udp: flows ---- */

#define FLOW_QUEUE_MAX 16             /* datagrams held per flow */
#define FLOW_QUEUE_BYTES (64 * 1024)  /* and their bytes */
#define DEFAULT_FLOW_TIMEOUT_MS 30000 /* a flow without traffic ends */

typedef struct held_dgram {
  struct held_dgram *next;
  size_t len;
  char data[];
} held_dgram;

/* The datagrams of one client address on one udp socket, relayed through
 * a socket of its own connected to the guest (so that answers find their
 * way back), until FLOW timeout without traffic. */
typedef struct flow {
  jitsu_list link; /* proxy->flows */
  proxy *px;
  listener *l;
  struct sockaddr_storage client;
  uv_udp_t up;
  uv_timer_t timer;
  held_dgram *queue, **tail;
  unsigned n_queued, handles;
  size_t queued_bytes;
  char buf[2048]; /* an answer from the guest, while it is passed on */
  bool closing;
} flow;

static void flow_closed(uv_handle_t *h) {
  flow *f = h->data;
  if (--f->handles > 0)
    return;
  proxy *px = f->px;
  free(f);
  proxy_unref(px);
}

static void flow_drop_queue(flow *f) {
  while (f->queue != NULL) {
    held_dgram *d = f->queue;
    f->queue = d->next;
    free(d);
  }
  f->tail = &f->queue;
  f->n_queued = 0;
  f->queued_bytes = 0;
}

static void flow_close(flow *f) {
  if (f->closing)
    return;
  f->closing = true;
  f->px->n_flows--;
  jitsu_list_remove(&f->link);
  flow_drop_queue(f);
  uv_close((uv_handle_t *)&f->up, flow_closed);
  uv_close((uv_handle_t *)&f->timer, flow_closed);
}

static void flow_expired(uv_timer_t *t) {
  flow_close(t->data);
}

static void flow_touch(flow *f) {
  uv_timer_start(&f->timer, flow_expired, f->px->flow_timeout_ms, 0);
  if (f->px->vm != NULL)
    jitsu_vm_touch(f->px->vm);
}

static void flow_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  flow *f = h->data;
  (void)hint;
  *b = uv_buf_init(f->buf, sizeof(f->buf));
}

/* An answer from the guest: back to the client, from the public socket. */
static void flow_answer(uv_udp_t *h, ssize_t n, const uv_buf_t *b,
                        const struct sockaddr *from, unsigned flags) {
  flow *f = h->data;
  (void)from, (void)flags;
  if (n <= 0 || f->closing)
    return; /* nothing, or an error (the guest's port is closed): retried */
  uv_buf_t out = uv_buf_init(b->base, (unsigned)n);
  uv_udp_try_send(&f->l->dgram, &out, 1, (struct sockaddr *)&f->client);
  flow_touch(f);
}

static void flow_send(flow *f, const char *data, size_t len) {
  uv_buf_t out = uv_buf_init((char *)data, (unsigned)len);
  uv_udp_try_send(&f->up, &out, 1, NULL); /* a full buffer drops it: udp */
}

/* The guest is ready: pass on what each flow holds. */
static void flows_flush(proxy *px) {
  for (jitsu_list *k = px->flows.next; k != &px->flows; k = k->next) {
    flow *f = JITSU_CONTAINER_OF(k, flow, link);
    for (held_dgram *d = f->queue; d != NULL; d = d->next)
      flow_send(f, d->data, d->len);
    flow_drop_queue(f);
  }
}

static flow *flow_find(proxy *px, listener *l, const struct sockaddr *a) {
  socklen_t len = a->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                          : sizeof(struct sockaddr_in6);
  for (jitsu_list *k = px->flows.next; k != &px->flows; k = k->next) {
    flow *f = JITSU_CONTAINER_OF(k, flow, link);
    if (f->l == l && memcmp(&f->client, a, len) == 0)
      return f;
  }
  return NULL;
}

static flow *flow_new(proxy *px, listener *l, const struct sockaddr *a) {
  if (px->n_flows + px->n_conns >= px->conns_max)
    return NULL;
  flow *f = calloc(1, sizeof(*f));
  if (f == NULL)
    return NULL;
  f->px = px;
  f->l = l;
  memcpy(&f->client, a,
         a->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                 : sizeof(struct sockaddr_in6));
  f->tail = &f->queue;
  uv_loop_t *loop = jitsu_ctx_loop(px->ctx);
  uv_udp_init(loop, &f->up);
  uv_timer_init(loop, &f->timer);
  f->up.data = f->timer.data = f;
  f->handles = 2;
  px->refs++;
  px->n_flows++;
  jitsu_list_append(&px->flows, &f->link);
  int r = uv_udp_connect(&f->up, (struct sockaddr *)&l->to);
  if (r == 0)
    r = uv_udp_recv_start(&f->up, flow_alloc, flow_answer);
  if (r < 0) {
    jitsu_vm_log(px->vm, JITSU_LOG_WARNING, "%s: cannot relay to %s: %s",
                 l->key, l->to_text, uv_strerror(r));
    flow_close(f);
    return NULL;
  }
  return f;
}

static void dgram_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  listener *l = h->data;
  (void)hint;
  if (l->rbuf == NULL)
    l->rbuf = malloc(65536);
  *b = uv_buf_init(l->rbuf, l->rbuf ? 65536 : 0);
}

/* A datagram from a client: relayed now if the guest is ready, else held
 * (bounded) and the vm summoned. */
static void dgram_in(uv_udp_t *h, ssize_t n, const uv_buf_t *b,
                     const struct sockaddr *from, unsigned flags) {
  listener *l = h->data;
  proxy *px = l->px;
  (void)flags;
  if (n < 0 || from == NULL || px->vm == NULL ||
      (from->sa_family != AF_INET && from->sa_family != AF_INET6))
    return;
  if (uv_now(jitsu_ctx_loop(px->ctx)) < px->backoff_until)
    return; /* dropped: the vm failed to start a moment ago */
  flow *f = flow_find(px, l, from);
  if (f == NULL && (f = flow_new(px, l, from)) == NULL)
    return; /* too many flows: dropped */
  flow_touch(f);
  if (jitsu_vm_state(px->vm) == JITSU_STATE_READY) {
    flow_send(f, b->base, (size_t)n);
    return;
  }
  if (f->n_queued < FLOW_QUEUE_MAX &&
      f->queued_bytes + (size_t)n <= FLOW_QUEUE_BYTES) {
    held_dgram *d = malloc(sizeof(*d) + (size_t)n);
    if (d != NULL) {
      d->next = NULL;
      d->len = (size_t)n;
      memcpy(d->data, b->base, (size_t)n);
      *f->tail = d;
      f->tail = &d->next;
      f->n_queued++;
      f->queued_bytes += (size_t)n;
    }
  }
  summon_kick(px);
}

static void flows_close_all(proxy *px) {
  while (px->flows.next != &px->flows)
    flow_close(JITSU_CONTAINER_OF(px->flows.next, flow, link));
}

/* ---- attach / detach ---- */

static void listener_closed(uv_handle_t *h) {
  listener *l = h->data;
  proxy *px = l->px;
  free(l->rbuf);
  free(l);
  proxy_unref(px);
}

static int open_listener(proxy *px, listener *l, int backlog, jitsu_error *err,
                         const char *spec) {
  jitsu_ctx *ctx = px->ctx;
  struct sockaddr_storage pub;
  jitsu__parse_hostport(l->key + 4, &pub);
  int r;
  px->refs++;
  jitsu_list_append(&px->listeners, &l->link);
  if (l->udp) {
    uv_udp_init(jitsu_ctx_loop(ctx), &l->dgram);
    l->dgram.data = l;
    r = uv_udp_bind(&l->dgram, (struct sockaddr *)&pub,
                    pub.ss_family == AF_INET6 ? UV_UDP_IPV6ONLY : 0);
    if (r == 0)
      r = uv_udp_recv_start(&l->dgram, dgram_alloc, dgram_in);
  } else {
    uv_tcp_init(jitsu_ctx_loop(ctx), &l->tcp);
    l->tcp.data = l;
    r = uv_tcp_bind(&l->tcp, (struct sockaddr *)&pub,
                    pub.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
    if (r == 0)
      r = uv_listen((uv_stream_t *)&l->tcp, backlog, on_connection);
  }
  if (r < 0)
    return jitsu_error_set(err, r, "socket", "'%s': cannot listen on %s: %s",
                           spec, l->key + 4, uv_strerror(r));
  r = jitsu_trigger_add(ctx, "socket", l->key, px->vm);
  if (r < 0)
    return jitsu_error_set(err, r, "socket", "%s", jitsu_ctx_last_error(ctx));
  return 0;
}

static bool backend_takes_sockets(const jitsu_vm *vm) {
  const jitsu_backend_ops *b = vm->backend;
  for (size_t i = 0; i < b->n_keys; i++)
    if (strcmp(b->keys[i].name, "socket") == 0)
      return true;
  return false;
}

static unsigned param_uint(jitsu_vm *vm, const char *key, unsigned dflt) {
  const char *v = jitsu_vm_param(vm, key, 0);
  unsigned u;
  return v != NULL && jitsu__parse_uint(v, &u) == 0 ? u : dflt;
}

/* Fill (l) from (spec), a socket of (vm): its address, and the guest's
 * (to=, else the vm's first address); 0 or (err) filled. */
static int listener_spec(jitsu_vm *vm, const char *spec, listener *l,
                         int *backlog, jitsu_error *err) {
  bool to_given;
  const char *why;
  if (parse_spec(spec, l, backlog, &to_given, &why) < 0)
    return jitsu_error_set(err, -EINVAL, "socket", "'%s': %s", spec, why);
  if (!to_given) {
    const char *a = jitsu_vm_param(vm, "address", 0);
    if (a == NULL || jitsu__parse_hostport(a, &l->to) < 0)
      return jitsu_error_set(err, -EINVAL, "socket",
                             "'%s': no guest address to relay to: add "
                             "to=HOST:PORT, or an address = HOST:PORT key",
                             spec);
  }
  jitsu__format_sockaddr((struct sockaddr *)&l->to, l->to_text,
                         sizeof(l->to_text));
  return 0;
}

/* The next socket of (vm) that the library relays, at index (*k) or
 * later (moved past it); NULL when there is no other. */
static const char *next_spec(jitsu_vm *vm, size_t *k) {
  bool takes = backend_takes_sockets(vm);
  const char *spec;
  while ((spec = jitsu_vm_param(vm, "socket", (*k)++)) != NULL)
    if (!takes || jitsu_backend_socket_relayed(spec))
      return spec; /* else handed to the guest by the backend */
  return NULL;
}

int jitsu__proxy_check(jitsu_vm *vm, jitsu_error *err) {
  const char *spec;
  listener l;
  int backlog, r;
  for (size_t k = 0; (spec = next_spec(vm, &k)) != NULL;) {
    memset(&l, 0, sizeof(l));
    if ((r = listener_spec(vm, spec, &l, &backlog, err)) < 0)
      return r;
  }
  return 0;
}

int jitsu__proxy_attach(jitsu_vm *vm, jitsu_error *err) {
  const char *spec;
  proxy *px = NULL;
  int r = 0;
  for (size_t k = 0; (spec = next_spec(vm, &k)) != NULL;) {
    if (px == NULL) {
      if ((px = calloc(1, sizeof(*px))) == NULL)
        return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
      px->vm = vm;
      px->ctx = vm->ctx;
      px->refs = 1;
      jitsu_list_init(&px->listeners);
      jitsu_list_init(&px->held);
      jitsu_list_init(&px->relays);
      jitsu_list_init(&px->flows);
      const char *t = jitsu_vm_param(vm, "socket-udp-timeout", 0);
      if (t == NULL || jitsu_parse_duration(t, &px->flow_timeout_ms) < 0 ||
          px->flow_timeout_ms == 0)
        px->flow_timeout_ms = DEFAULT_FLOW_TIMEOUT_MS;
      px->queue_max = param_uint(vm, "socket-queue", DEFAULT_QUEUE);
      px->conns_max = param_uint(vm, "socket-max-conns", DEFAULT_MAX_CONNS);
      px->relays_max = param_uint(vm, "socket-guest-conns", 0);
      vm->proxy = px;
    }
    listener *l = calloc(1, sizeof(*l));
    if (l == NULL) {
      r = jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
      break;
    }
    l->px = px;
    int backlog;
    if ((r = listener_spec(vm, spec, l, &backlog, err)) < 0) {
      free(l);
      break;
    }
    if ((r = open_listener(px, l, backlog, err, spec)) < 0)
      break;
  }
  if (r < 0)
    jitsu__proxy_detach(vm);
  return r;
}

void jitsu__proxy_detach(jitsu_vm *vm) {
  proxy *px = vm->proxy;
  if (px == NULL)
    return;
  vm->proxy = NULL;
  while (px->held.next != &px->held)
    conn_close(JITSU_CONTAINER_OF(px->held.next, conn, link), true);
  while (px->relays.next != &px->relays)
    conn_close(JITSU_CONTAINER_OF(px->relays.next, conn, link), true);
  flows_close_all(px);
  while (px->listeners.next != &px->listeners) {
    listener *l = JITSU_CONTAINER_OF(px->listeners.next, listener, link);
    jitsu_list_remove(&l->link);
    if (jitsu_trigger_lookup(px->ctx, "socket", l->key) == vm)
      jitsu_trigger_remove(px->ctx, "socket", l->key);
    uv_close(l->udp ? (uv_handle_t *)&l->dgram : (uv_handle_t *)&l->tcp,
             listener_closed);
  }
  px->vm = NULL;
  proxy_unref(px);
}

void jitsu__proxy_guest_gone(jitsu_vm *vm) {
  proxy *px = vm->proxy;
  px->draining = true; /* no relay starts while the others go */
  while (px->relays.next != &px->relays)
    conn_close(JITSU_CONTAINER_OF(px->relays.next, conn, link), true);
  px->draining = false;
  /* Connections waiting for a relay slot have no summon to wait for. */
  while (!px->summoning && px->held.next != &px->held)
    conn_close(JITSU_CONTAINER_OF(px->held.next, conn, link), true);
  /* Flows that relayed to it end; those holding datagrams wait on. */
  for (jitsu_list *k = px->flows.next; k != &px->flows;) {
    flow *f = JITSU_CONTAINER_OF(k, flow, link);
    k = k->next;
    if (f->n_queued == 0)
      flow_close(f);
  }
}
