/*
 * Channels between Xen domains: rings and notification by libxenvchan,
 * rendezvous through XenStore in the layout of MirageOS's Conduit, so
 * that its unikernels can talk to ours:
 *
 *   /conduit/NAME = the listener's domid        (written by the listener)
 *   /conduit/NAME/CLIENT-DOMID/PORT             (written by a client)
 *   <listener's domain path>/data/vchan/CLIENT-DOMID/PORT/
 *       {ring-ref,event-channel}                (libxenvchan, server side)
 *
 * The listener watches /conduit/NAME, sets up a vchan server for each
 * request and removes the request; the client waits for the vchan's keys
 * and connects. dom0 makes /conduit writable by every domain ("b0"). A
 * client connects to a name that nobody has registered yet by writing its
 * request anyway: a controller in dom0 summons the vm of that name (the xl
 * backend watches /conduit), whose listener then finds the request.
 */
#include "chan_int.h"

#include <fcntl.h>
#include <libxenvchan.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xenstore.h>

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

/* dom0 makes /conduit; other domains find it made. */
static void conduit_root(struct xs_handle *xs, int domid) {
  if (domid == 0)
    jitsu__conduit_root(xs);
}

/* ---- the transport: libxenvchan's rings (it notifies its peer itself;
 * no peek, no in-band end of stream) ----------------------------------- */

static long v_write(void *t, const void *data, size_t len) {
  int n = libxenvchan_write(t, data, len);
  return n < 0 ? -ECONNRESET : n;
}

static long v_read(void *t, void *buf, size_t len) {
  int n = libxenvchan_read(t, buf, len);
  return n < 0 ? -ECONNRESET : n;
}

static long v_readable(void *t) {
  return libxenvchan_data_ready(t); /* and asks to be told */
}

static long v_writable(void *t) {
  return libxenvchan_buffer_space(t);
}

static bool v_peer_eof(void *t) {
  return libxenvchan_is_open(t) == 0;
}

static void v_wait(void *t) {
  libxenvchan_wait(t);
}

static void v_close(void *t) {
  libxenvchan_close(t);
}

static const jitsu__chan_transport vchan_transport = {
    v_write, v_read, v_readable, v_writable, v_peer_eof, v_wait, v_close,
};

/* A channel over (v), which it owns from now on (closed if this fails). */
static jitsu_chan *new_vchan(uv_loop_t *loop, struct libxenvchan *v,
                             const jitsu_chan_options *o, int *err) {
  v->blocking = 0;
  return jitsu__chan_new_transport(loop, &vchan_transport, v,
                                   libxenvchan_fd_for_select(v), o, err);
}

static size_t ring_size(const jitsu_chan_options *o) {
  return o && o->ring_size ? o->ring_size : JITSU_CHAN_RING_DEFAULT;
}

/* ---- the peer's death ---------------------------------------------------
 *
 * A destroyed domain runs no code: its side of the vchan is never marked
 * closed and no event comes. XenStore tells: a client watches the
 * listener's vchan keys (removed with the domain's home), a listener
 * watches @releaseDomain and asks whether the client's domain still
 * exists.
 */

typedef struct pwatch {
  jitsu_chan *c;
  struct xs_handle *xs;
  uv_poll_t poll;
  int peer;
  char path[200];
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
    return v != NULL;
  }
  return xs_is_domain_introduced(w->xs, (unsigned)w->peer);
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

typedef struct xlisten {
  jitsu_chan_listener *outer;
  uv_loop_t *loop;
  struct xs_handle *xs;
  uv_poll_t poll;
  uv_timer_t later; /* the registration callback, from the loop */
  int handles;
  int domid;
  char name[JITSU_CHAN_NAME_MAX + 1];
  char base[96], home[64], token[96];
  jitsu_chan_options opts;
  jitsu__chan_count *count; /* its channels open now */
  jitsu_chan_accept_cb cb;
  void *arg;
  bool closing;
} xlisten;

static void xl_handle_closed(uv_handle_t *h) {
  xlisten *x = h->data;
  if (--x->handles == 0) {
    xs_close(x->xs);
    jitsu__chan_count_put(x->count);
    free(x);
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
  if (v != NULL && atoi(v) == x->domid)
    xs_rm(x->xs, XBT_NULL, x->base);
  free(v);
  uv_close((uv_handle_t *)&x->poll, xl_handle_closed);
  uv_close((uv_handle_t *)&x->later, xl_handle_closed);
}

/* A XenStore path: at most 3072 bytes (XENSTORE_ABS_PATH_MAX). A request
 * whose path was cut to a buffer could never be removed. */
#define XS_PATH_MAX 3072

/* Set up a vchan for the request of (client) on (port). */
static void serve_request(xlisten *x, const char *client, const char *port) {
  char req[XS_PATH_MAX + 1], path[XS_PATH_MAX + 1];
  char name[JITSU_CHAN_NAME_MAX + 1], p[JITSU_CHAN_PORT_MAX + 1];
  unsigned cdom;
  if (snprintf(req, sizeof(req), "%s/%s/%s", x->base, client, port) >=
      (int)sizeof(req))
    return; /* longer than XenStore allows: it cannot be there */
  if (jitsu__conduit_parse(req, name, sizeof(name), &cdom, p, sizeof(p)) < 0) {
    xs_rm(x->xs, XBT_NULL, req); /* not a request: drop it */
    return;
  }
  if (!jitsu__chan_count_room(x->count)) {
    xs_rm(x->xs, XBT_NULL, req); /* over the limit: the client times out */
    return;
  }
  if (snprintf(path, sizeof(path), "%s/data/vchan/%u/%s", x->home, cdom,
               port) >= (int)sizeof(path)) {
    xs_rm(x->xs, XBT_NULL, req); /* a port too long for a vchan path */
    return;
  }
  size_t size = ring_size(&x->opts);
  struct libxenvchan *v =
      libxenvchan_server_init(NULL, (int)cdom, path, size, size);
  xs_rm(x->xs, XBT_NULL, req);
  if (v == NULL)
    return; /* the client times out */
  int err = 0;
  jitsu_chan *c = new_vchan(x->loop, v, &x->opts, &err);
  if (c == NULL)
    return;
  peer_watch(c, x->loop, (int)cdom, "@releaseDomain");
  jitsu__chan_count_add(c, x->count);
  x->cb(x->outer, c, port, 0, x->arg);
}

/* Serve every request under /conduit/NAME. */
static void scan(xlisten *x) {
  unsigned nc = 0;
  char **clients = xs_directory(x->xs, XBT_NULL, x->base, &nc);
  for (unsigned i = 0; clients && i < nc && !x->closing; i++) {
    char dir[XS_PATH_MAX + 1];
    if (snprintf(dir, sizeof(dir), "%s/%s", x->base, clients[i]) >=
        (int)sizeof(dir))
      continue;
    unsigned np = 0;
    char **ports = xs_directory(x->xs, XBT_NULL, dir, &np);
    for (unsigned j = 0; ports && j < np && !x->closing; j++)
      serve_request(x, clients[i], ports[j]);
    free(ports);
    if (np == 0 && ports != NULL)
      xs_rm(x->xs, XBT_NULL, dir);
  }
  free(clients);
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
  conduit_root(x->xs, x->domid);
  x->outer = outer;
  x->loop = loop;
  x->cb = cb;
  x->arg = arg;
  x->opts = *opts; /* checked and made current by jitsu_chan_listen */
  snprintf(x->name, sizeof(x->name), "%s", name);
  snprintf(x->base, sizeof(x->base), "/conduit/%s", name);
  snprintf(x->token, sizeof(x->token), "jitsu-listen/%s", name);
  /* A name held by another live domain is taken. */
  unsigned len;
  char *v = xs_read(x->xs, XBT_NULL, x->base, &len);
  if (v != NULL && v[0] != '\0' && atoi(v) != x->domid) {
    char path[64];
    snprintf(path, sizeof(path), "/local/domain/%d", atoi(v));
    char *alive = xs_read(x->xs, XBT_NULL, path, &len);
    free(v);
    if (alive != NULL) {
      free(alive);
      xs_close(x->xs);
      free(x);
      return -EADDRINUSE;
    }
  } else {
    free(v);
  }
  char val[16];
  snprintf(val, sizeof(val), "%d", x->domid);
  if (!xs_write(x->xs, XBT_NULL, x->base, val, strlen(val)) ||
      !xs_watch(x->xs, x->base, x->token)) {
    r = -errno;
    xs_close(x->xs);
    free(x);
    return r ? r : -EIO;
  }
  if ((x->count = jitsu__chan_count_new(&x->opts)) == NULL) {
    xs_rm(x->xs, XBT_NULL, x->base);
    xs_close(x->xs);
    free(x);
    return -ENOMEM;
  }
  uv_poll_init(loop, &x->poll, xs_fileno(x->xs));
  uv_timer_init(loop, &x->later);
  x->poll.data = x->later.data = x;
  x->handles = 2;
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
  int handles;
  int domid, server;
  char base[96], req[200], keys[200], token[96];
  jitsu_chan_options opts;
  jitsu_chan_connect_cb cb;
  void *arg;
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
  if (c == NULL)
    xs_rm(x->xs, XBT_NULL, x->req); /* nobody took it */
  uv_close((uv_handle_t *)&x->poll, xc_closed);
  uv_close((uv_handle_t *)&x->timer, xc_closed);
  if (!x->canceled)
    x->cb(c, err, x->arg);
}

static void xc_cancel(jitsu_chan_connecting *base) {
  xconnect *x = (xconnect *)base;
  x->canceled = !x->done;
  connect_end(x, NULL, -ECANCELED);
}

/* Once the listener is known and its vchan keys are there: connect. */
static void try_connect(xconnect *x) {
  unsigned len;
  if (x->server < 0) {
    char *v = xs_read(x->xs, XBT_NULL, x->base, &len);
    if (v == NULL || v[0] == '\0') {
      free(v);
      return; /* nobody has registered the name yet */
    }
    x->server = atoi(v);
    free(v);
    char *home = xs_get_domain_path(x->xs, (unsigned)x->server);
    if (home == NULL)
      return;
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
  jitsu_chan *c = new_vchan(x->loop, vc, &x->opts, &err);
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
  conduit_root(x->xs, x->domid);
  x->loop = loop;
  x->cb = cb;
  x->arg = arg;
  x->server = -1;
  x->opts = *opts; /* checked and made current by jitsu_chan_connect */
  snprintf(x->base, sizeof(x->base), "/conduit/%s", name);
  snprintf(x->req, sizeof(x->req), "/conduit/%s/%d/%s", name, x->domid, port);
  snprintf(x->token, sizeof(x->token), "jitsu-connect/%s/%s", name, port);
  if (!xs_write(x->xs, XBT_NULL, x->req, "", 0) ||
      !xs_watch(x->xs, x->base, x->token)) {
    r = -errno;
    xs_close(x->xs);
    free(x);
    return r ? r : -EIO;
  }
  uint64_t ms =
      opts && opts->timeout_ms ? opts->timeout_ms : RV_CONNECT_TIMEOUT_MS;
  if (ms > RV_CONNECT_TIMEOUT_MAX_MS)
    ms = RV_CONNECT_TIMEOUT_MAX_MS;
  uv_poll_init(loop, &x->poll, xs_fileno(x->xs));
  uv_timer_init(loop, &x->timer);
  x->poll.data = x->timer.data = x;
  x->handles = 2;
  uv_poll_start(&x->poll, UV_READABLE, connect_readable);
  uv_timer_start(&x->timer, connect_timeout, ms, 0);
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
