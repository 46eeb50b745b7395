/*
 * The rendezvous server of a controller: endpoints register names ("L"),
 * connectors ask for a name and a port ("C", with the channel's memfd and
 * socket pair end), and the server hands those to the listener ("A"). A
 * connect to a name nobody listens on summons the vm of that name (or of
 * a "channel" trigger) and waits, bounded in number and in time.
 */
#include "chan_int.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct rv_conn rv_conn;

typedef struct rv_pending {
  struct rv_pending *next;
  rv_conn *from;
  char name[JITSU_CHAN_NAME_MAX + 1], port[JITSU_CHAN_PORT_MAX + 1];
  int fds[2];
  uint64_t deadline;
} rv_pending;

struct rv_conn {
  struct rv_conn *next;
  struct jitsu__rendezvous *rv;
  int fd;
  uv_poll_t poll;
  char listening[JITSU_CHAN_NAME_MAX + 1]; /* "" unless a listener */
  bool closing;
};

typedef struct jitsu__rendezvous {
  jitsu_ctx *ctx;
  char *path;
  int fd;
  uv_poll_t poll;
  uv_timer_t timer; /* pending connects' deadlines */
  rv_conn *conns;
  rv_pending *pending;
  unsigned n_pending, n_listeners, n_conns;
  int handles; /* open handles: the last close frees the struct */
} jitsu__rendezvous;

/* A descriptor is closed only once libuv has let go of its poll handle. */
static void conn_closed(uv_handle_t *h) {
  rv_conn *c = h->data;
  close(c->fd);
  free(c);
}

static void pending_drop(rv_pending *p) {
  close(p->fds[0]);
  close(p->fds[1]);
  free(p);
}

static void reply(rv_conn *c, int err, const char *text) {
  char msg[RV_MSG_MAX];
  if (err == 0)
    snprintf(msg, sizeof(msg), "OK");
  else
    snprintf(msg, sizeof(msg), "E %d %s", -err, text);
  jitsu__rv_send(c->fd, msg, NULL, 0); /* a peer that cannot take it left */
}

static void conn_close(rv_conn *c) {
  if (c->closing)
    return;
  c->closing = true;
  jitsu__rendezvous *rv = c->rv;
  if (c->listening[0])
    rv->n_listeners--;
  for (rv_pending **pp = &rv->pending; *pp;) { /* its connects go too */
    if ((*pp)->from == c) {
      rv_pending *p = *pp;
      *pp = p->next;
      rv->n_pending--;
      pending_drop(p);
    } else {
      pp = &(*pp)->next;
    }
  }
  for (rv_conn **cp = &rv->conns; *cp; cp = &(*cp)->next)
    if (*cp == c) {
      *cp = c->next;
      rv->n_conns--;
      break;
    }
  uv_close((uv_handle_t *)&c->poll, conn_closed);
}

static rv_conn *listener_of(jitsu__rendezvous *rv, const char *name) {
  for (rv_conn *c = rv->conns; c; c = c->next)
    if (!c->closing && strcmp(c->listening, name) == 0)
      return c;
  return NULL;
}

/* Hand a connect to (l); the connector gets OK or why not. */
static void deliver(rv_conn *l, rv_conn *from, const char *port,
                    const int fds[2]) {
  char msg[RV_MSG_MAX];
  snprintf(msg, sizeof(msg), "A %s", port);
  int r = jitsu__rv_send(l->fd, msg, fds, 2);
  if (r < 0)
    reply(from, -ECONNREFUSED, "the listener did not take the channel");
  else
    reply(from, 0, NULL);
}

typedef struct channel_find {
  const char *name;
  jitsu_vm *vm;
} channel_find;

static int has_channel(jitsu_vm *vm, void *arg) {
  channel_find *f = arg;
  const char *v;
  for (size_t i = 0; (v = jitsu_vm_param(vm, "channel", i)) != NULL; i++)
    if (strcmp(v, f->name) == 0) {
      f->vm = vm;
      return 1;
    }
  return 0;
}

/* The vm a connect to (name) summons: a "channel" trigger, the vm of that
 * name, or the first vm (in definition order) with "channel = name". */
jitsu_vm *jitsu__chan_vm_for(jitsu_ctx *ctx, const char *name) {
  jitsu_vm *vm = jitsu_trigger_lookup(ctx, "channel", name);
  if (vm == NULL)
    vm = jitsu_vm_find(ctx, name);
  if (vm == NULL) {
    channel_find f = {name, NULL};
    jitsu_vm_foreach(ctx, has_channel, &f);
    vm = f.vm;
  }
  return vm;
}

static void summoned(jitsu_vm *vm, int status, void *arg) {
  jitsu__rendezvous *rv = arg;
  if (status == 0)
    return; /* it runs: the connects wait for it to listen */
  /* It cannot start: its pending connects fail now. */
  const char *name = jitsu_vm_name(vm);
  for (rv_pending **pp = &rv->pending; *pp;) {
    rv_pending *p = *pp;
    if (jitsu__chan_vm_for(rv->ctx, p->name) == vm ||
        strcmp(p->name, name) == 0) {
      *pp = p->next;
      rv->n_pending--;
      char why[160];
      snprintf(why, sizeof(why), "vm %s could not start: %s", name,
               jitsu_strerror(status));
      reply(p->from, status, why);
      pending_drop(p);
    } else {
      pp = &p->next;
    }
  }
}

static void expire(uv_timer_t *t);

static void rearm(jitsu__rendezvous *rv) {
  uint64_t next = UINT64_MAX, now = uv_now(rv->ctx->loop);
  for (rv_pending *p = rv->pending; p; p = p->next)
    if (p->deadline < next)
      next = p->deadline;
  if (next == UINT64_MAX)
    uv_timer_stop(&rv->timer);
  else
    uv_timer_start(&rv->timer, expire, next > now ? next - now : 0, 0);
}

static void expire(uv_timer_t *t) {
  jitsu__rendezvous *rv = t->data;
  uint64_t now = uv_now(rv->ctx->loop);
  for (rv_pending **pp = &rv->pending; *pp;) {
    rv_pending *p = *pp;
    if (p->deadline <= now) {
      *pp = p->next;
      rv->n_pending--;
      char why[200];
      snprintf(why, sizeof(why), "nobody listened on %s in time", p->name);
      reply(p->from, -ETIMEDOUT, why);
      pending_drop(p);
    } else {
      pp = &p->next;
    }
  }
  rearm(rv);
}

static void on_listen(rv_conn *c, const char *name) {
  jitsu__rendezvous *rv = c->rv;
  if (c->listening[0]) {
    reply(c, -EISCONN, "this connection listens already");
    return;
  }
  if (listener_of(rv, name) != NULL) {
    reply(c, -EADDRINUSE, "another endpoint listens on that name");
    return;
  }
  if (rv->n_listeners >= RV_LISTENERS_MAX) {
    reply(c, JITSU_ELIMIT, "too many listeners");
    return;
  }
  snprintf(c->listening, sizeof(c->listening), "%s", name);
  rv->n_listeners++;
  reply(c, 0, NULL);
  /* Connects that waited for this name, oldest first. */
  rv_pending *mine = NULL, **tail = &mine;
  for (rv_pending **pp = &rv->pending; *pp;) {
    rv_pending *p = *pp;
    if (strcmp(p->name, name) == 0) {
      *pp = p->next;
      rv->n_pending--;
      p->next = NULL;
      *tail = p;
      tail = &p->next;
    } else {
      pp = &p->next;
    }
  }
  while (mine != NULL) {
    rv_pending *p = mine;
    mine = p->next;
    deliver(c, p->from, p->port, p->fds);
    pending_drop(p);
  }
  rearm(rv);
}

static void on_connect(rv_conn *c, const char *name, const char *port,
                       uint64_t timeout, int fds[2]) {
  jitsu__rendezvous *rv = c->rv;
  rv_conn *l = listener_of(rv, name);
  if (l != NULL) {
    deliver(l, c, port, fds);
    close(fds[0]);
    close(fds[1]);
    return;
  }
  jitsu_vm *vm = jitsu__chan_vm_for(rv->ctx, name);
  unsigned same = 0;
  for (rv_pending *p = rv->pending; p; p = p->next)
    same += strcmp(p->name, name) == 0;
  int err = 0;
  const char *why = NULL;
  if (vm == NULL)
    err = -ECONNREFUSED, why = "nobody listens on that name and no vm has it";
  else if (same >= RV_PENDING_PER_NAME || rv->n_pending >= RV_PENDING_MAX)
    err = JITSU_ELIMIT, why = "too many connects wait already";
  rv_pending *p = err ? NULL : calloc(1, sizeof(*p));
  if (err == 0 && p == NULL)
    err = -ENOMEM, why = "out of memory";
  if (err == 0 && jitsu_vm_state(vm) != JITSU_STATE_READY &&
      (err = jitsu_vm_summon(vm, summoned, rv)) < 0)
    why = jitsu_ctx_last_error(rv->ctx);
  if (err < 0) {
    free(p);
    reply(c, err, why);
    close(fds[0]);
    close(fds[1]);
    return;
  }
  p->from = c;
  snprintf(p->name, sizeof(p->name), "%s", name);
  snprintf(p->port, sizeof(p->port), "%s", port);
  p->fds[0] = fds[0];
  p->fds[1] = fds[1];
  p->deadline = uv_now(rv->ctx->loop) + timeout;
  p->next = rv->pending;
  rv->pending = p;
  rv->n_pending++;
  rearm(rv);
}

/* One request: strictly "L NAME" or "C NAME PORT MS" (with 2 fds). */
static void on_message(rv_conn *c, char *msg, int *fds, int nfds) {
  char name[RV_MSG_MAX], port[RV_MSG_MAX], extra[2];
  unsigned long long ms = 0;
  if (msg[0] == 'L' && nfds == 0 &&
      sscanf(msg, "L %255s %1s", name, extra) == 1 &&
      jitsu__chan_name_ok(name)) {
    on_listen(c, name);
    return;
  }
  if (msg[0] == 'C' && nfds == 2 &&
      sscanf(msg, "C %255s %255s %llu %1s", name, port, &ms, extra) == 3 &&
      jitsu__chan_name_ok(name) && jitsu__chan_port_ok(port) && ms > 0) {
    if (ms > RV_CONNECT_TIMEOUT_MAX_MS)
      ms = RV_CONNECT_TIMEOUT_MAX_MS;
    on_connect(c, name, port, ms, fds);
    return;
  }
  for (int i = 0; i < nfds; i++)
    close(fds[i]);
  reply(c, -EINVAL, "malformed request");
}

static void conn_readable(uv_poll_t *h, int status, int events) {
  rv_conn *c = h->data;
  (void)events;
  for (int i = 0; i < 16 && !c->closing; i++) {
    char msg[RV_MSG_MAX];
    int fds[2], nfds = 2;
    long n = status < 0 ? status
                        : jitsu__rv_recv(c->fd, msg, sizeof(msg), fds, &nfds);
    if (n == -EAGAIN)
      return;
    if (n <= 0) {
      conn_close(c);
      return;
    }
    on_message(c, msg, fds, nfds);
  }
}

static void accept_cb(uv_poll_t *h, int status, int events) {
  jitsu__rendezvous *rv = h->data;
  (void)status, (void)events;
  for (int i = 0; i < 16; i++) {
    int fd = accept4(rv->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
      return;
    if (rv->n_conns >= RV_CONNS_MAX) {
      close(fd); /* bounded: the endpoint sees its connection end */
      continue;
    }
    rv_conn *c = calloc(1, sizeof(*c));
    if (c == NULL || uv_poll_init(rv->ctx->loop, &c->poll, fd) < 0) {
      free(c);
      close(fd);
      continue;
    }
    c->rv = rv;
    c->fd = fd;
    c->poll.data = c;
    c->next = rv->conns;
    rv->conns = c;
    rv->n_conns++;
    uv_poll_start(&c->poll, UV_READABLE, conn_readable);
  }
}

/* Its two handles close in either order: the last frees it. */
static void rv_closed(uv_handle_t *h) {
  jitsu__rendezvous *rv = h->data;
  if (--rv->handles > 0)
    return;
  close(rv->fd);
  free(rv->path);
  free(rv);
}

void jitsu__rendezvous_free(jitsu_ctx *ctx) {
  jitsu__rendezvous *rv = ctx->rendezvous;
  if (rv == NULL)
    return;
  ctx->rendezvous = NULL;
  while (rv->conns != NULL)
    conn_close(rv->conns);
  unlink(rv->path);
  uv_close((uv_handle_t *)&rv->poll, rv_closed);
  uv_close((uv_handle_t *)&rv->timer, rv_closed);
}

int jitsu_rendezvous_listen(jitsu_ctx *ctx, const char *path) {
  if (ctx->rendezvous != NULL)
    return jitsu__fail(ctx, -EALREADY, "the rendezvous is served already");
  char buf[600];
  if (path == NULL)
    path = jitsu_config_get(ctx, "jitsu", "rendezvous-socket", 0);
  if (path == NULL) {
    char dir[512];
    int r = jitsu_ctx_state_subdir(ctx, NULL, dir, sizeof(dir));
    if (r < 0)
      return r;
    snprintf(buf, sizeof(buf), "%s/rendezvous.sock", dir);
    path = buf;
  }
  char why[700];
  int fd = jitsu__listen_unix("rendezvous socket", path,
                              SOCK_SEQPACKET | SOCK_NONBLOCK, SOMAXCONN, 0,
                              false, why, sizeof(why));
  if (fd < 0)
    return jitsu__fail(ctx, fd, "%s", why);
  jitsu__rendezvous *rv = calloc(1, sizeof(*rv));
  if (rv == NULL || (rv->path = jitsu__strdup(path)) == NULL) {
    free(rv);
    close(fd);
    unlink(path);
    return -ENOMEM;
  }
  rv->ctx = ctx;
  rv->fd = fd;
  int r = uv_poll_init(ctx->loop, &rv->poll, fd);
  if (r < 0) {
    free(rv->path);
    free(rv);
    close(fd);
    unlink(path);
    return jitsu__fail(ctx, r, "cannot poll the rendezvous socket: %s",
                       uv_strerror(r));
  }
  uv_timer_init(ctx->loop, &rv->timer);
  rv->poll.data = rv->timer.data = rv;
  rv->handles = 2;
  uv_poll_start(&rv->poll, UV_READABLE, accept_cb);
  ctx->rendezvous = rv;
  return 0;
}

const char *jitsu_rendezvous_path(jitsu_ctx *ctx) {
  return ctx->rendezvous ? ctx->rendezvous->path : NULL;
}

int jitsu_rendezvous_from_config(jitsu_ctx *ctx) {
  if (!jitsu_config_bool(ctx, "jitsu", "rendezvous", false) &&
      jitsu_config_get(ctx, "jitsu", "rendezvous-socket", 0) == NULL)
    return 0;
  if (ctx->rendezvous != NULL)
    return 1;
  int r = jitsu_rendezvous_listen(ctx, NULL);
  return r < 0 ? r : 1;
}
