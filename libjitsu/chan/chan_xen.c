/*
 * Channels between Xen domains: rings and notification by libxenvchan,
 * rendezvous through XenStore (conduit.h has the layout and who may write
 * what):
 *
 *   /conduit/NAME = the holder's domid     (dom0 grants the holder write)
 *   /conduit/NAME/requests/CLIENT/PORT     (written by a client, which
 *                                           owns it while its channel
 *                                           lasts)
 *   <holder's domain path>/data/vchan/CLIENT/PORT/
 *       {ring-ref,event-channel}           (libxenvchan, server side)
 *
 * A listener watches /conduit/NAME. For each request whose node is owned
 * by the domain its path names (XenStore sets the owner; a path or a
 * value may lie) it sets up a vchan server, bounded per client domain and
 * in time, and hands the channel over once the client has mapped it. The
 * client waits for the vchan's keys of the domain that holds the name
 * (its value, backed by dom0's grant in the node's permissions) and
 * connects.
 *
 * dom0 makes /conduit and holds names itself; a domU may listen only on a
 * name that dom0 has handed to it (the xl backend does that for a vm's
 * "channel = NAME" when it creates the domain), and a client may only
 * request names that exist. A request for the name of a stopped vm
 * summons it (the xl backend watches /conduit).
 */
#include "chan_int.h"

#include <fcntl.h>
#include <libxenvchan.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xenstore.h>

#include "conduit.h"

/* Our domid and domain path; 0 or -errno. */
static int whoami(struct xs_handle *xs, int *domid, char *home, size_t size) {
  unsigned len;
  char *v = xs_read(xs, XBT_NULL, "domid", &len);
  if (v == NULL)
    return -errno ? -errno : -EIO;
  *domid = atoi(v);
  free(v);
  char *path = xs_get_domain_path(xs, (unsigned)*domid);
  if (path == NULL)
    return -EIO;
  snprintf(home, size, "%s", path);
  free(path);
  return 0;
}

/* Vchan servers set up for requests whose clients have not mapped them
 * yet: per client domain, and per listener in all. More requests wait in
 * XenStore for a free place. */
#define XEN_PENDING_PER_CLIENT 4
#define XEN_PENDING_MAX 16
#define XEN_PENDING_TICK_MS 100 /* how often pending servers are looked at */

/* ---- the transport: libxenvchan's rings (it notifies its peer itself;
 * no peek, no in-band end of stream) ----------------------------------- */

typedef struct xvchan {
  struct libxenvchan *v;
  char *req; /* a client's request node, removed when it closes */
} xvchan;

static long v_write(void *t, const void *data, size_t len) {
  int n = libxenvchan_write(((xvchan *)t)->v, data, len);
  return n < 0 ? -ECONNRESET : n;
}

static long v_read(void *t, void *buf, size_t len) {
  int n = libxenvchan_read(((xvchan *)t)->v, buf, len);
  return n < 0 ? -ECONNRESET : n;
}

static long v_readable(void *t) {
  return libxenvchan_data_ready(((xvchan *)t)->v); /* and asks to be told */
}

static long v_writable(void *t) {
  return libxenvchan_buffer_space(((xvchan *)t)->v);
}

static bool v_peer_eof(void *t) {
  return libxenvchan_is_open(((xvchan *)t)->v) == 0;
}

static void v_wait(void *t) {
  libxenvchan_wait(((xvchan *)t)->v);
}

static void v_close(void *t) {
  xvchan *x = t;
  libxenvchan_close(x->v);
  if (x->req != NULL) {
    struct xs_handle *xs = xs_open(0);
    if (xs != NULL) {
      xs_rm(xs, XBT_NULL, x->req);
      xs_close(xs);
    }
    free(x->req);
  }
  free(x);
}

static const jitsu__chan_transport vchan_transport = {
    v_write, v_read, v_readable, v_writable, v_peer_eof, v_wait, v_close,
};

/* A channel over (v), which it owns from now on (closed if this fails),
 * with the client's request node (req, or NULL) removed when it closes. */
static jitsu_chan *new_vchan(uv_loop_t *loop, struct libxenvchan *v,
                             const char *req, const jitsu_chan_options *o,
                             int *err) {
  xvchan *t = calloc(1, sizeof(*t));
  if (t == NULL || (req != NULL && (t->req = strdup(req)) == NULL)) {
    free(t);
    libxenvchan_close(v);
    *err = -ENOMEM;
    return NULL;
  }
  t->v = v;
  v->blocking = 0;
  return jitsu__chan_new_transport(loop, &vchan_transport, t,
                                   libxenvchan_fd_for_select(v), o, err);
}

static size_t ring_size(const jitsu_chan_options *o) {
  return o && o->ring_size ? o->ring_size : JITSU_CHAN_RING_DEFAULT;
}

/* ---- the peer's death ---------------------------------------------------
 *
 * A destroyed domain runs no code: its side of the vchan is never marked
 * closed and no event comes. XenStore tells: a client watches the
 * listener's vchan keys (removed with the domain's home); a listener in
 * dom0 watches @releaseDomain and asks whether the client's domain still
 * exists; a listener in a domU, which may not ask that (xenstored answers
 * EACCES), watches the client's request node, which the client removes
 * when it closes and the xl backend in dom0 when the client's domain dies.
 */

typedef struct pwatch {
  jitsu_chan *c;
  struct xs_handle *xs;
  uv_poll_t poll;
  int peer;
  char path[XS_PATH_MAX + 1];
} pwatch;

static void pwatch_closed(uv_handle_t *h) {
  pwatch *w = h->data;
  xs_close(w->xs);
  free(w);
}

static void pwatch_free(void *arg) {
  pwatch *w = arg;
  uv_close((uv_handle_t *)&w->poll, pwatch_closed);
}

static bool peer_alive(pwatch *w) {
  if (w->path[0] != '@') {
    unsigned len;
    char *v = xs_read(w->xs, XBT_NULL, w->path, &len);
    free(v);
    return v != NULL || errno == EACCES;
  }
  errno = 0;
  return xs_is_domain_introduced(w->xs, (unsigned)w->peer) || errno == EACCES;
}

static void pwatch_readable(uv_poll_t *p, int status, int events) {
  pwatch *w = p->data;
  char **vec;
  while ((vec = xs_check_watch(w->xs)) != NULL)
    free(vec);
  if (!peer_alive(w)) {
    uv_poll_stop(&w->poll);
    jitsu__chan_peer_gone(w->c);
  }
}

/* Follow (c)'s peer (domain (peer)) through (path): a node that goes with
 * it, or "@releaseDomain". Best effort: without it the channel still
 * ends when the peer closes. */
static void peer_watch(jitsu_chan *c, uv_loop_t *loop, int peer,
                       const char *path) {
  if (peer == 0)
    return; /* dom0 does not go away */
  pwatch *w = calloc(1, sizeof(*w));
  if (w == NULL || (w->xs = xs_open(0)) == NULL) {
    free(w);
    return;
  }
  w->c = c;
  w->peer = peer;
  snprintf(w->path, sizeof(w->path), "%s", path);
  if (!xs_watch(w->xs, path, "jitsu-peer")) {
    xs_close(w->xs);
    free(w);
    return;
  }
  uv_poll_init(loop, &w->poll, xs_fileno(w->xs));
  w->poll.data = w;
  uv_poll_start(&w->poll, UV_READABLE, pwatch_readable);
  jitsu__chan_set_peer_watch(c, w, pwatch_free);
}

/* ---- listening ---------------------------------------------------------- */

typedef struct xlisten xlisten;

/* A request this listener has taken: pending (its vchan server waits for
 * the client) or served (its channel was handed over). Kept while its
 * node is there, so that it is served once. */
typedef struct xreq {
  jitsu_list link;
  xlisten *x;
  struct libxenvchan *v; /* pending: the server, not yet mapped */
  uv_poll_t poll;        /* pending: its event channel */
  uint64_t deadline;     /* pending: refused after this (loop ms) */
  unsigned client;
  bool seen;     /* its node was there at the last scan */
  bool settling; /* pending no more: its poll is closing */
  char port[JITSU_CHAN_PORT_MAX + 1];
  char path[XS_PATH_MAX + 1];
} xreq;

struct xlisten {
  jitsu_chan_listener *outer;
  uv_loop_t *loop;
  struct xs_handle *xs;
  uv_poll_t poll;
  uv_timer_t later; /* the registration callback, from the loop */
  uv_timer_t tick;  /* pending servers: connected yet? too late? */
  int handles;
  int domid;
  char name[JITSU_CHAN_NAME_MAX + 1];
  char base[96], requests[112], home[64], token[96];
  jitsu_chan_options opts;
  uint64_t accept_ms;       /* a client has this long to map its server */
  jitsu__chan_count *count; /* its channels open now */
  jitsu_list reqs;          /* xreq */
  unsigned pending;
  jitsu_chan_accept_cb cb;
  void *arg;
  bool closing;
};

static void listener_unref(xlisten *x) {
  if (--x->handles == 0) {
    xs_close(x->xs);
    jitsu__chan_count_put(x->count);
    free(x);
  }
}

static void xl_handle_closed(uv_handle_t *h) {
  listener_unref(h->data);
}

/* (r)'s pending server's poll is closed: hand its channel over (the
 * client has mapped it) or end it. */
static void req_poll_closed(uv_handle_t *h) {
  xreq *r = h->data;
  xlisten *x = r->x;
  struct libxenvchan *v = r->v;
  r->v = NULL;
  r->settling = false;
  bool take = v != NULL && !x->closing && v->ring->cli_live == 1 && r->seen &&
              jitsu__chan_count_room(x->count);
  if (!take && v != NULL)
    libxenvchan_close(v);
  if (x->closing || !r->seen) {
    jitsu_list_remove(&r->link);
    free(r);
  }
  if (take) {
    int err = 0;
    jitsu_chan *c = new_vchan(x->loop, v, NULL, &x->opts, &err);
    if (c != NULL) {
      /* A listener in dom0 may ask after the client's domain; a domU
       * follows the client's request node. */
      peer_watch(c, x->loop, (int)r->client,
                 x->domid == 0 ? "@releaseDomain" : r->path);
      jitsu__chan_count_add(c, x->count);
      x->cb(x->outer, c, r->port, 0, x->arg);
    }
  }
  listener_unref(x); /* the poll was one of the listener's handles */
}

/* (r) is pending no more: its poll goes, then req_poll_closed. */
static void req_settle(xreq *r) {
  if (r->v == NULL || r->settling)
    return;
  r->settling = true;
  r->x->pending--;
  uv_close((uv_handle_t *)&r->poll, req_poll_closed);
}

static void req_event(uv_poll_t *p, int status, int events) {
  xreq *r = p->data;
  libxenvchan_wait(r->v);        /* takes the event: the fd was readable */
  if (r->v->ring->cli_live != 2) /* mapped (1), or given up (0) */
    req_settle(r);
}

static void scan(xlisten *x);

/* Every tick while servers are pending: settle those whose client has
 * mapped them (it may not notify), refuse those past their time. */
static void pending_tick(uv_timer_t *t) {
  xlisten *x = t->data;
  uint64_t now = uv_now(x->loop);
  bool freed = false;
  for (jitsu_list *l = x->reqs.next; l != &x->reqs; l = l->next) {
    xreq *r = JITSU_CONTAINER_OF(l, xreq, link);
    if (r->v == NULL || r->settling)
      continue;
    if (r->v->ring->cli_live != 2) {
      req_settle(r);
    } else if (now >= r->deadline) {
      /* Nobody mapped it in time: end it, and the request with it. */
      xs_rm(x->xs, XBT_NULL, r->path);
      r->seen = false;
      req_settle(r);
      freed = true;
    }
  }
  if (x->pending == 0)
    uv_timer_stop(&x->tick);
  if (freed && !x->closing)
    scan(x); /* room for requests that wait */
}

static xreq *req_find(xlisten *x, const char *path) {
  for (jitsu_list *l = x->reqs.next; l != &x->reqs; l = l->next) {
    xreq *r = JITSU_CONTAINER_OF(l, xreq, link);
    if (strcmp(r->path, path) == 0)
      return r;
  }
  return NULL;
}

static unsigned pending_of(xlisten *x, unsigned client) {
  unsigned n = 0;
  for (jitsu_list *l = x->reqs.next; l != &x->reqs; l = l->next) {
    xreq *r = JITSU_CONTAINER_OF(l, xreq, link);
    n += r->client == client && r->v != NULL;
  }
  return n;
}

/* Take the request at (path), if it is one and there is room. */
static void take_request(xlisten *x, const char *path) {
  char name[JITSU_CHAN_NAME_MAX + 1], port[JITSU_CHAN_PORT_MAX + 1];
  unsigned client;
  xreq *old = req_find(x, path);
  if (old != NULL) {
    old->seen = true;
    return;
  }
  if (jitsu__conduit_parse(path, name, sizeof(name), &client, port,
                           sizeof(port)) < 0 ||
      strcmp(name, x->name) != 0) {
    xs_rm(x->xs, XBT_NULL, path); /* not a request: drop it */
    return;
  }
  /* The domain that wrote it, whatever its path claims. */
  int owner = jitsu__xs_owner(x->xs, XBT_NULL, path);
  if (owner == -EACCES || owner == -ENOENT)
    return; /* hidden from us, or gone */
  if (owner != (int)client) {
    xs_rm(x->xs, XBT_NULL, path);
    return;
  }
  if (x->pending >= XEN_PENDING_MAX ||
      pending_of(x, client) >= XEN_PENDING_PER_CLIENT ||
      !jitsu__chan_count_room(x->count))
    return; /* it waits for room (within the client's time-out) */
  char keys[XS_PATH_MAX + 1];
  if (snprintf(keys, sizeof(keys), "%s/data/vchan/%u/%s", x->home, client,
               port) >= (int)sizeof(keys)) {
    xs_rm(x->xs, XBT_NULL, path);
    return;
  }
  xreq *r = calloc(1, sizeof(*r));
  if (r == NULL)
    return;
  size_t size = ring_size(&x->opts);
  r->v = libxenvchan_server_init(NULL, (int)client, keys, size, size);
  if (r->v == NULL) {
    free(r);
    xs_rm(x->xs, XBT_NULL, path); /* the client times out */
    return;
  }
  r->x = x;
  r->client = client;
  r->seen = true;
  r->deadline = uv_now(x->loop) + x->accept_ms;
  snprintf(r->port, sizeof(r->port), "%s", port);
  snprintf(r->path, sizeof(r->path), "%s", path);
  uv_poll_init(x->loop, &r->poll, libxenvchan_fd_for_select(r->v));
  r->poll.data = r;
  uv_poll_start(&r->poll, UV_READABLE, req_event);
  x->handles++;
  x->pending++;
  jitsu_list_append(&x->reqs, &r->link);
  if (!uv_is_active((uv_handle_t *)&x->tick))
    uv_timer_start(&x->tick, pending_tick, XEN_PENDING_TICK_MS,
                   XEN_PENDING_TICK_MS);
}

static bool scan_one(const char *path, bool dir, void *arg) {
  xlisten *x = arg;
  if (!dir)
    take_request(x, path);
  return !x->closing;
}

/* Take every request under /conduit/NAME/requests; forget those whose
 * node went (their clients gave up or closed). */
static void scan(xlisten *x) {
  for (jitsu_list *l = x->reqs.next; l != &x->reqs; l = l->next)
    JITSU_CONTAINER_OF(l, xreq, link)->seen = false;
  if (jitsu__conduit_each(x->xs, x->requests, scan_one, x) == -ENOENT &&
      !x->closing) {
    /* Removed (every domain may add to it, so any may remove it): make
     * it again, as the name's holder. */
    jitsu__conduit_requests(x->xs, x->base, (unsigned)x->domid, -1);
  }
  for (jitsu_list *l = x->reqs.next, *next; l != &x->reqs; l = next) {
    next = l->next;
    xreq *r = JITSU_CONTAINER_OF(l, xreq, link);
    if (r->seen)
      continue;
    if (r->v != NULL) {
      req_settle(r); /* its client gave up: the server ends */
    } else {
      jitsu_list_remove(&r->link); /* served; its client closed */
      free(r);
    }
  }
}

static void xen_listener_close(void *impl) {
  xlisten *x = impl;
  if (x == NULL || x->closing)
    return;
  x->closing = true;
  xs_unwatch(x->xs, x->base, x->token);
  /* Unregister the name if it is still ours. */
  unsigned len;
  char *v = xs_read(x->xs, XBT_NULL, x->base, &len);
  if (v != NULL && v[0] != '\0' && atoi(v) == x->domid)
    xs_write(x->xs, XBT_NULL, x->base, "", 0);
  free(v);
  for (jitsu_list *l = x->reqs.next, *next; l != &x->reqs; l = next) {
    next = l->next;
    xreq *r = JITSU_CONTAINER_OF(l, xreq, link);
    if (r->v != NULL) {
      req_settle(r); /* freed from its close callback */
    } else {
      jitsu_list_remove(&r->link);
      free(r);
    }
  }
  uv_close((uv_handle_t *)&x->poll, xl_handle_closed);
  uv_close((uv_handle_t *)&x->later, xl_handle_closed);
  uv_close((uv_handle_t *)&x->tick, xl_handle_closed);
}

static void listen_readable(uv_poll_t *p, int status, int events) {
  xlisten *x = p->data;
  char **vec;
  bool ours = false;
  while ((vec = xs_check_watch(x->xs)) != NULL) {
    ours |= strcmp(vec[XS_WATCH_TOKEN], x->token) == 0;
    free(vec);
  }
  if (ours && !x->closing)
    scan(x);
}

static void registered(uv_timer_t *t) {
  xlisten *x = t->data;
  if (!x->closing)
    x->cb(x->outer, NULL, NULL, 0, x->arg);
  if (!x->closing)
    scan(x);
}

/* Hold NAME: dom0 takes it unless a live domU holds it; a domU must
 * have been granted it by dom0. 0 or -errno. */
static int hold_name(xlisten *x) {
  unsigned len;
  if (x->domid != 0) {
    if (jitsu__conduit_grantee(x->xs, XBT_NULL, x->base) != x->domid)
      return -EACCES; /* dom0 has not granted NAME to us */
  } else {
    int holder = jitsu__conduit_holder(x->xs, XBT_NULL, x->base);
    if (holder > 0 && xs_is_domain_introduced(x->xs, (unsigned)holder))
      return -EADDRINUSE; /* a live domain holds it */
    if (!jitsu__conduit_root(x->xs) ||
        !xs_write(x->xs, XBT_NULL, x->base, "", 0) ||
        !jitsu__xs_perms(x->xs, XBT_NULL, x->base, 0, XS_PERM_READ, -1, 0))
      return errno ? -errno : -EIO;
  }
  /* dom0 (re)makes the requests node; a domU keeps what dom0 made and
   * makes it only if it is missing. */
  char *reqs = xs_read(x->xs, XBT_NULL, x->requests, &len);
  bool have = reqs != NULL;
  free(reqs);
  char val[16];
  snprintf(val, sizeof(val), "%d", x->domid);
  if (((x->domid == 0 || !have) &&
       !jitsu__conduit_requests(x->xs, x->base, (unsigned)x->domid, -1)) ||
      !xs_write(x->xs, XBT_NULL, x->base, val, strlen(val)))
    return errno ? -errno : -EIO;
  return 0;
}

static int xen_listen(jitsu_chan_listener *outer, uv_loop_t *loop,
                      const char *name, const jitsu_chan_options *opts,
                      jitsu_chan_accept_cb cb, void *arg, void **impl) {
  xlisten *x = calloc(1, sizeof(*x));
  if (x == NULL)
    return -ENOMEM;
  x->xs = xs_open(0);
  if (x->xs == NULL) {
    free(x);
    return -EHOSTUNREACH; /* no XenStore: not a Xen domain */
  }
  int r = whoami(x->xs, &x->domid, x->home, sizeof(x->home));
  if (r < 0) {
    xs_close(x->xs);
    free(x);
    return r;
  }
  x->outer = outer;
  x->loop = loop;
  x->cb = cb;
  x->arg = arg;
  x->opts = *opts; /* checked and made current by jitsu_chan_listen */
  x->accept_ms = opts->timeout_ms ? opts->timeout_ms : RV_CONNECT_TIMEOUT_MS;
  if (x->accept_ms > RV_CONNECT_TIMEOUT_MAX_MS)
    x->accept_ms = RV_CONNECT_TIMEOUT_MAX_MS;
  jitsu_list_init(&x->reqs);
  snprintf(x->name, sizeof(x->name), "%s", name);
  snprintf(x->base, sizeof(x->base), "/conduit/%s", name);
  snprintf(x->requests, sizeof(x->requests), "%s/" CONDUIT_REQUESTS, x->base);
  snprintf(x->token, sizeof(x->token), "jitsu-listen/%s", name);
  if ((r = hold_name(x)) < 0 || !xs_watch(x->xs, x->base, x->token)) {
    r = r < 0 ? r : errno ? -errno : -EIO;
    xs_close(x->xs);
    free(x);
    return r;
  }
  if ((x->count = jitsu__chan_count_new(&x->opts)) == NULL) {
    xs_write(x->xs, XBT_NULL, x->base, "", 0);
    xs_close(x->xs);
    free(x);
    return -ENOMEM;
  }
  uv_poll_init(loop, &x->poll, xs_fileno(x->xs));
  uv_timer_init(loop, &x->later);
  uv_timer_init(loop, &x->tick);
  x->poll.data = x->later.data = x->tick.data = x;
  x->handles = 3;
  uv_poll_start(&x->poll, UV_READABLE, listen_readable);
  uv_timer_start(&x->later, registered, 0, 0);
  *impl = x;
  return 0;
}

/* ---- connecting --------------------------------------------------------- */

typedef struct xconnect {
  jitsu_chan_connecting req_base; /* first: what the caller holds */
  uv_loop_t *loop;
  struct xs_handle *xs;
  uv_poll_t poll;
  uv_timer_t timer;
  uv_timer_t retry; /* writes the request again while it is not in */
  int handles;
  int domid, server;
  char base[96], req[200], keys[200], token[96];
  jitsu_chan_options opts;
  jitsu_chan_connect_cb cb;
  void *arg;
  bool requested; /* our request node is written */
  bool done;
  bool canceled; /* its callback runs from the last close */
} xconnect;

static void xc_closed(uv_handle_t *h) {
  xconnect *x = h->data;
  if (--x->handles == 0) {
    if (x->canceled)
      x->cb(NULL, -ECANCELED, x->arg);
    xs_close(x->xs);
    free(x);
  }
}

static void connect_end(xconnect *x, jitsu_chan *c, int err) {
  if (x->done)
    return;
  x->done = true;
  xs_unwatch(x->xs, x->base, x->token);
  if (x->keys[0])
    xs_unwatch(x->xs, x->keys, x->token);
  if (c == NULL && x->requested)
    xs_rm(x->xs, XBT_NULL, x->req); /* nobody took it */
  uv_close((uv_handle_t *)&x->poll, xc_closed);
  uv_close((uv_handle_t *)&x->timer, xc_closed);
  uv_close((uv_handle_t *)&x->retry, xc_closed);
  if (!x->canceled)
    x->cb(c, err, x->arg);
}

static void xc_cancel(jitsu_chan_connecting *base) {
  xconnect *x = (xconnect *)base;
  x->canceled = !x->done;
  connect_end(x, NULL, -ECANCELED);
}

/* Write our request, readable (and removable) by NAME's holder only:
 * false while NAME does not exist yet (or on a XenStore error). */
static bool write_request(xconnect *x) {
  for (int tries = 0; tries < 8; tries++) {
    xs_transaction_t t = xs_transaction_start(x->xs);
    if (t == XBT_NULL)
      return false;
    /* For the domain the name is granted to (none: dom0 holds it or
     * nobody; dom0 reads everything, and gives our request to the domain
     * it grants the name to later). A transaction: a grant in between
     * retries. */
    unsigned len;
    char *name = xs_read(x->xs, t, x->base, &len);
    bool exists = name != NULL;
    free(name);
    int holder = jitsu__conduit_grantee(x->xs, t, x->base);
    struct xs_permissions p[2] = {
        {.id = (unsigned)x->domid, .perms = XS_PERM_NONE},
        {.id = holder > 0 ? (unsigned)holder : 0,
         .perms = XS_PERM_READ | XS_PERM_WRITE}};
    unsigned n = holder > 0 && holder != x->domid ? 2 : 1;
    bool ok = exists && xs_write(x->xs, t, x->req, "", 0) &&
              xs_set_permissions(x->xs, t, x->req, p, n);
    if (ok) {
      char dir[200];
      snprintf(dir, sizeof(dir), "%s/" CONDUIT_REQUESTS "/%d", x->base,
               x->domid);
      if (x->domid == 0 || jitsu__xs_owner(x->xs, t, dir) == x->domid)
        xs_set_permissions(x->xs, t, dir, p, n); /* dom0 may own it */
    }
    if (xs_transaction_end(x->xs, t, !ok))
      return ok;
    if (errno != EAGAIN)
      return false;
  }
  return false;
}

/* Once the request is in, the holder known and its vchan keys there:
 * connect. */
static void try_connect(xconnect *x) {
  unsigned len;
  if (!x->requested && !(x->requested = write_request(x)))
    return; /* NAME is not there yet */
  if (x->server < 0) {
    /* Only a holder that dom0's grant backs. */
    int holder = jitsu__conduit_holder(x->xs, XBT_NULL, x->base);
    if (holder < 0)
      return; /* nobody holds the name yet */
    char *home = xs_get_domain_path(x->xs, (unsigned)holder);
    if (home == NULL)
      return; /* the next change tries again */
    x->server = holder;
    const char *port = strrchr(x->req, '/') + 1;
    snprintf(x->keys, sizeof(x->keys), "%s/data/vchan/%d/%s", home, x->domid,
             port);
    free(home);
    xs_watch(x->xs, x->keys, x->token);
  }
  char ev[240];
  snprintf(ev, sizeof(ev), "%s/event-channel", x->keys);
  char *v = xs_read(x->xs, XBT_NULL, ev, &len);
  if (v == NULL)
    return;
  free(v);
  struct libxenvchan *vc = libxenvchan_client_init(NULL, x->server, x->keys);
  if (vc == NULL)
    return; /* half written: the next change tries again */
  int err = 0;
  jitsu_chan *c = new_vchan(x->loop, vc, x->req, &x->opts, &err);
  if (c != NULL)
    peer_watch(c, x->loop, x->server, ev);
  connect_end(x, c, c ? 0 : err);
}

static void connect_readable(uv_poll_t *p, int status, int events) {
  xconnect *x = p->data;
  char **vec;
  while ((vec = xs_check_watch(x->xs)) != NULL)
    free(vec);
  if (!x->done)
    try_connect(x);
}

static void connect_timeout(uv_timer_t *t) {
  connect_end(t->data, NULL, -ETIMEDOUT);
}

/* The name exists but its requests node does not (any domain may remove
 * it; its holder makes it again): no watch of ours sees it come back. */
static void connect_retry(uv_timer_t *t) {
  xconnect *x = t->data;
  if (x->requested)
    uv_timer_stop(t);
  else if (!x->done)
    try_connect(x);
}

static int xen_connect(uv_loop_t *loop, const char *name, const char *port,
                       const jitsu_chan_options *opts, jitsu_chan_connect_cb cb,
                       void *arg, jitsu_chan_connecting **out) {
  xconnect *x = calloc(1, sizeof(*x));
  if (x == NULL)
    return -ENOMEM;
  x->xs = xs_open(0);
  if (x->xs == NULL) {
    free(x);
    return -EHOSTUNREACH;
  }
  char home[64];
  int r = whoami(x->xs, &x->domid, home, sizeof(home));
  if (r < 0) {
    xs_close(x->xs);
    free(x);
    return r;
  }
  x->loop = loop;
  x->cb = cb;
  x->arg = arg;
  x->server = -1;
  x->opts = *opts; /* checked and made current by jitsu_chan_connect */
  snprintf(x->base, sizeof(x->base), "/conduit/%s", name);
  snprintf(x->req, sizeof(x->req), "/conduit/%s/" CONDUIT_REQUESTS "/%d/%s",
           name, x->domid, port);
  snprintf(x->token, sizeof(x->token), "jitsu-connect/%s/%s", name, port);
  /* The name's node, once it exists: its holder, and room for requests. */
  if (!xs_watch(x->xs, x->base, x->token)) {
    r = -errno;
    xs_close(x->xs);
    free(x);
    return r ? r : -EIO;
  }
  x->requested = write_request(x);
  uint64_t ms =
      opts && opts->timeout_ms ? opts->timeout_ms : RV_CONNECT_TIMEOUT_MS;
  if (ms > RV_CONNECT_TIMEOUT_MAX_MS)
    ms = RV_CONNECT_TIMEOUT_MAX_MS;
  uv_poll_init(loop, &x->poll, xs_fileno(x->xs));
  uv_timer_init(loop, &x->timer);
  uv_timer_init(loop, &x->retry);
  x->poll.data = x->timer.data = x->retry.data = x;
  x->handles = 3;
  uv_poll_start(&x->poll, UV_READABLE, connect_readable);
  uv_timer_start(&x->timer, connect_timeout, ms, 0);
  if (!x->requested)
    uv_timer_start(&x->retry, connect_retry, 250, 250);
  x->req_base.cancel = xc_cancel;
  if (out != NULL)
    *out = &x->req_base;
  return 0;
}

static const jitsu__xen_chan_ops xen_chan_ops = {
    xen_listen,
    xen_listener_close,
    xen_connect,
};

JITSU__MODULE("vchan", NULL, &xen_chan_ops);
