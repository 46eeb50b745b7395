/* The control server's transport: a Unix stream socket, one JSON request
 * per line, bounded in request size, clients, requests in flight, time
 * and unread output. The commands are in control_cmd.c. */
#include "control_int.h"

#include <grp.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_INFLIGHT 16
#define MAX_UNREAD_OUTPUT (1024 * 1024)
#define IDLE_CLOSE_MS 300000

struct jitsu__control {
  jitsu_ctx *ctx;
  uv_pipe_t *server; /* NULL once closed */
  char *path;
  size_t max_request;
  unsigned max_clients, n_clients;
  uint64_t timeout_ms;
  jitsu_list clients;
  jitsu_list pending; /* requests whose vm callback is outstanding */
};

typedef struct client {
  jitsu__control *srv;
  jitsu_list link;
  uv_pipe_t pipe;
  uv_timer_t timer; /* a request line that takes too long; idleness */
  char *buf;
  size_t len;
  bool discarding; /* the rest of an over-long line */
  bool eof;        /* the client is done sending: close when answered */
  bool closing;
  unsigned handles; /* open libuv handles: pipe and timer */
  unsigned inflight;
} client;

struct jitsu__creq {
  client *c;
  jitsu__control *srv;
  jitsu_list link; /* in srv->pending while held */
  jitsu_vm *vm;
  json_t *id;
  uv_timer_t *timer;
  void (*on_timeout)(jitsu__creq *req);
  bool held; /* a libjitsu callback will still come with this req */
  bool answered;
  bool in_timeout; /* on_timeout is running */
};

static void client_close(client *c);

static void client_maybe_free(client *c) {
  if (c->closing && c->handles == 0 && c->inflight == 0) {
    free(c->buf);
    free(c);
  }
}

static void client_handle_closed(uv_handle_t *h) {
  client *c = h->data;
  c->handles--;
  client_maybe_free(c);
}

static void client_close(client *c) {
  if (c->closing)
    return;
  c->closing = true;
  if (c->srv != NULL) {
    c->srv->n_clients--;
    jitsu_list_remove(&c->link);
  }
  uv_close((uv_handle_t *)&c->pipe, client_handle_closed);
  uv_close((uv_handle_t *)&c->timer, client_handle_closed);
}

static void write_done(uv_write_t *w, int status) {
  (void)status;
  free(w);
}

/* Send (text) and a newline to (c). */
static void client_send(client *c, const char *text) {
  if (c->closing)
    return;
  /* A client that does not read its answers is dropped, not buffered
   * for: what earlier answers left unread is bounded, not the answer
   * itself (a list of 100,000 vms is one long line). */
  if (uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe) >
      MAX_UNREAD_OUTPUT) {
    client_close(c);
    return;
  }
  size_t len = strlen(text);
  uv_write_t *w = malloc(sizeof(*w) + len + 1);
  if (w == NULL) {
    client_close(c);
    return;
  }
  char *copy = (char *)(w + 1);
  memcpy(copy, text, len);
  copy[len] = '\n';
  uv_buf_t buf = uv_buf_init(copy, (unsigned)len + 1);
  if (uv_write(w, (uv_stream_t *)&c->pipe, &buf, 1, write_done) < 0) {
    free(w);
    client_close(c);
  }
}

static void arm_timer(client *c);

static void req_timer_closed(uv_handle_t *h) {
  free(h);
}

static void req_free(jitsu__creq *req) {
  if (req->timer != NULL)
    uv_close((uv_handle_t *)req->timer, req_timer_closed);
  json_decref(req->id);
  client *c = req->c;
  free(req);
  if (c != NULL) {
    c->inflight--;
    if (c->inflight == 0 && c->eof)
      client_close(c);
    else if (c->srv != NULL && c->inflight == 0)
      arm_timer(c); /* idle again */
    client_maybe_free(c);
  }
}

static void answer(jitsu__creq *req, json_t *body) {
  if (!req->answered && req->c != NULL && !req->c->closing) {
    json_object_set_new(body, "v", json_integer(JITSU_CONTROL_PROTOCOL));
    if (req->id != NULL)
      json_object_set(body, "id", req->id);
    /* 15 digits: a latency of 80.231 ms is 80.231, not 80.230999999... */
    char *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                      JSON_REAL_PRECISION(15));
    if (text != NULL)
      client_send(req->c, text);
    free(text);
  }
  req->answered = true;
  json_decref(body);
}

void jitsu__control_reply(jitsu__creq *req, void *result) {
  json_t *body = json_object();
  json_object_set_new(body, "ok", json_true());
  json_object_set_new(body, "result",
                      result ? (json_t *)result : json_object());
  answer(req, body);
  if (req->held && req->in_timeout)
    return; /* the vm's callback is still to come: it frees the request */
  if (req->held) {
    req->held = false;
    jitsu_list_remove(&req->link);
  }
  req_free(req);
}

void jitsu__control_fail(jitsu__creq *req, int err, const char *fmt, ...) {
  char text[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  const char *name = strerrorname_np(-err);
  json_t *body = json_object();
  json_object_set_new(body, "ok", json_false());
  json_object_set_new(body, "error",
                      json_pack("{s:s, s:i, s:s}", "code", name ? name : "EIO",
                                "errno", err, "message", text));
  answer(req, body);
  if (req->held && req->in_timeout)
    return;
  if (req->held) {
    req->held = false;
    jitsu_list_remove(&req->link);
  }
  req_free(req);
}

jitsu_ctx *jitsu__control_ctx(jitsu__creq *req) {
  return req->srv->ctx;
}

void *jitsu__control_id(jitsu__creq *req) {
  return req->id;
}

void jitsu__control_set_id(jitsu__creq *req, void *id) {
  json_decref(req->id);
  req->id = json_incref(id);
}

static void wait_expired(uv_timer_t *t) {
  jitsu__creq *req = t->data;
  if (req->answered)
    return;
  req->in_timeout = true;
  req->on_timeout(req);
  req->in_timeout = false;
}

void jitsu__control_wait(jitsu__creq *req, jitsu_vm *vm, uint64_t timeout_ms,
                         void (*on_timeout)(jitsu__creq *req)) {
  if (timeout_ms == 0 || timeout_ms > req->srv->timeout_ms)
    timeout_ms = req->srv->timeout_ms;
  req->vm = vm;
  req->held = true;
  req->on_timeout = on_timeout;
  jitsu_list_append(&req->srv->pending, &req->link);
  req->timer = malloc(sizeof(*req->timer));
  if (req->timer != NULL) {
    uv_timer_init(req->srv->ctx->loop, req->timer);
    req->timer->data = req;
    uv_timer_start(req->timer, wait_expired, timeout_ms, 0);
  }
}

static void run_line(client *c, const char *line, size_t len) {
  jitsu__creq *req = calloc(1, sizeof(*req));
  if (req == NULL) {
    client_close(c);
    return;
  }
  req->c = c;
  req->srv = c->srv;
  c->inflight++;
  if (c->inflight > MAX_INFLIGHT) {
    jitsu__control_fail(req, -EBUSY,
                        "too many requests in flight on this connection "
                        "(at most %d)",
                        MAX_INFLIGHT);
    return;
  }
  jitsu__control_run(req, line, len);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  client *c = h->data;
  (void)suggested;
  size_t room = c->srv->max_request + 1 - c->len;
  *buf = uv_buf_init(c->buf + c->len, (unsigned)room);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  client *c = s->data;
  (void)buf;
  if (n == UV_EOF && c->inflight > 0) {
    /* Half-closed: answer what was asked, then close. */
    c->eof = true;
    uv_read_stop(s);
    uv_timer_stop(&c->timer);
    return;
  }
  if (n < 0) {
    client_close(c);
    return;
  }
  if (c->srv == NULL) {
    client_close(c);
    return;
  }
  c->len += (size_t)n;
  char *start = c->buf, *nl;
  while (!c->closing &&
         (nl = memchr(start, '\n', c->len - (size_t)(start - c->buf)))) {
    size_t len = (size_t)(nl - start);
    if (!c->discarding && len > 0)
      run_line(c, start, len > 0 && start[len - 1] == '\r' ? len - 1 : len);
    c->discarding = false;
    start = nl + 1;
  }
  if (c->closing)
    return;
  c->len -= (size_t)(start - c->buf);
  memmove(c->buf, start, c->len);
  if (c->len > c->srv->max_request) {
    /* No newline within the limit: refuse it, skip to the next line. */
    jitsu__creq *req = calloc(1, sizeof(*req));
    if (req != NULL) {
      req->c = c;
      req->srv = c->srv;
      c->inflight++;
      jitsu__control_fail(req, -EMSGSIZE,
                          "request too long (at most %zu bytes a line)",
                          c->srv->max_request);
    }
    c->len = 0;
    c->discarding = true;
  }
  arm_timer(c);
}

static void client_timer(uv_timer_t *t) {
  client *c = t->data;
  if (c->len > 0 || c->discarding) {
    jitsu__creq *req = calloc(1, sizeof(*req));
    if (req != NULL) {
      req->c = c;
      req->srv = c->srv;
      c->inflight++;
      jitsu__control_fail(req, -ETIMEDOUT,
                          "incomplete request line for %llu ms: closing",
                          (unsigned long long)c->srv->timeout_ms);
    }
  }
  client_close(c);
}

static void arm_timer(client *c) {
  if (c->closing)
    return;
  if (c->len > 0 || c->discarding)
    uv_timer_start(&c->timer, client_timer, c->srv->timeout_ms, 0);
  else if (c->inflight == 0)
    uv_timer_start(&c->timer, client_timer, IDLE_CLOSE_MS, 0);
  else
    uv_timer_stop(&c->timer);
}

static void on_connection(uv_stream_t *server, int status) {
  jitsu__control *srv = server->data;
  if (status < 0)
    return;
  client *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return;
  c->srv = srv;
  c->buf = malloc(srv->max_request + 1);
  uv_pipe_init(srv->ctx->loop, &c->pipe, 0);
  uv_timer_init(srv->ctx->loop, &c->timer);
  c->pipe.data = c->timer.data = c;
  c->handles = 2;
  srv->n_clients++;
  jitsu_list_append(&srv->clients, &c->link);
  if (uv_accept(server, (uv_stream_t *)&c->pipe) < 0 || c->buf == NULL) {
    client_close(c);
    return;
  }
  if (srv->n_clients > srv->max_clients) {
    client_send(c, "{\"v\":1,\"ok\":false,\"error\":{\"code\":\"EUSERS\","
                   "\"errno\":-87,\"message\":\"too many clients\"}}");
    client_close(c);
    return;
  }
  uv_read_start((uv_stream_t *)&c->pipe, alloc_cb, read_cb);
  arm_timer(c);
}

static void server_closed(uv_handle_t *h) {
  free(h);
}

int jitsu_control_listen(jitsu_ctx *ctx, const jitsu_control_options *opts) {
  jitsu_control_options defaults = JITSU_CONTROL_OPTIONS_INIT;
  if (opts == NULL)
    opts = &defaults;
  if (opts->version != JITSU_CONTROL_OPTIONS_VERSION)
    return -EINVAL;
  if (ctx->control != NULL && ctx->control->server != NULL)
    return jitsu__fail(ctx, -EEXIST, "the control socket is already open");
  const char *path = opts->path;
  const char *group = opts->group;
  char buf[600];
  if (path == NULL)
    path = jitsu_config_get(ctx, "jitsu", "control-socket", 0);
  if (group == NULL)
    group = jitsu_config_get(ctx, "jitsu", "control-group", 0);
  if (path == NULL) {
    char dir[512];
    int r = jitsu_ctx_state_subdir(ctx, NULL, dir, sizeof(dir));
    if (r < 0)
      return r;
    snprintf(buf, sizeof(buf), "%s/control.sock", dir);
    path = buf;
  }
  gid_t gid = 0;
  if (group != NULL) {
    struct group *gr = getgrnam(group);
    if (gr == NULL)
      return jitsu__fail(ctx, -EINVAL, "control-group: no such group '%s'",
                         group);
    gid = gr->gr_gid;
  }
  jitsu__control *srv = ctx->control;
  if (srv == NULL) {
    srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
      return -ENOMEM;
    srv->ctx = ctx;
    jitsu_list_init(&srv->clients);
    jitsu_list_init(&srv->pending);
    ctx->control = srv;
  }
  srv->max_request =
      opts->max_request ? opts->max_request : JITSU_CONTROL_DEFAULT_MAX_REQUEST;
  srv->max_clients =
      opts->max_clients ? opts->max_clients : JITSU_CONTROL_DEFAULT_MAX_CLIENTS;
  srv->timeout_ms = opts->request_timeout_ms ? opts->request_timeout_ms
                                             : JITSU_CONTROL_DEFAULT_TIMEOUT_MS;
  char why[700];
  int fd = jitsu__listen_unix("control socket", path, SOCK_STREAM, 64, gid,
                              group != NULL, why, sizeof(why));
  if (fd < 0)
    return jitsu__fail(ctx, fd, "%s", why);
  free(srv->path);
  srv->path = jitsu__strdup(path);
  srv->server = malloc(sizeof(*srv->server));
  if (srv->path == NULL || srv->server == NULL) {
    free(srv->server);
    srv->server = NULL;
    close(fd);
    unlink(path);
    return -ENOMEM;
  }
  uv_pipe_init(ctx->loop, srv->server, 0);
  srv->server->data = srv;
  int r = uv_pipe_open(srv->server, fd);
  if (r == 0)
    r = uv_listen((uv_stream_t *)srv->server, 64, on_connection);
  if (r < 0) {
    uv_close((uv_handle_t *)srv->server, server_closed);
    srv->server = NULL;
    unlink(path);
    return jitsu__fail(ctx, r, "control socket %s: %s", path, uv_strerror(r));
  }
  jitsu_ctx_log(ctx, JITSU_LOG_INFO, "control socket on %s", path);
  return 0;
}

const char *jitsu_control_path(jitsu_ctx *ctx) {
  return ctx->control && ctx->control->server ? ctx->control->path : NULL;
}

void jitsu_control_close(jitsu_ctx *ctx) {
  jitsu__control *srv = ctx->control;
  if (srv == NULL || srv->server == NULL)
    return;
  uv_close((uv_handle_t *)srv->server, server_closed);
  srv->server = NULL;
  if (srv->path != NULL)
    unlink(srv->path);
  while (srv->clients.next != &srv->clients) {
    client *c = JITSU_CONTAINER_OF(srv->clients.next, client, link);
    client_close(c);
    c->srv = NULL;
  }
  /* Requests held by vm callbacks stay until they come (or the vm goes). */
}

void jitsu__control_free(jitsu_ctx *ctx) {
  jitsu__control *srv = ctx->control;
  if (srv == NULL)
    return;
  jitsu_control_close(ctx);
  /* Requests waiting on a vm stay until its callback comes (every one
   * does, -ECANCELED as the context goes): they only leave our list. */
  while (srv->pending.next != &srv->pending) {
    jitsu__creq *req = JITSU_CONTAINER_OF(srv->pending.next, jitsu__creq, link);
    jitsu_list_remove(&req->link);
    req->srv = NULL;
  }
  free(srv->path);
  free(srv);
  ctx->control = NULL;
}

void jitsu__control_feed(jitsu_ctx *ctx, const char *line, size_t len) {
  if (ctx->control == NULL)
    return;
  jitsu__creq *req = calloc(1, sizeof(*req));
  if (req == NULL)
    return;
  req->srv = ctx->control; /* no client: the answer goes nowhere */
  jitsu__control_run(req, line, len);
}

int jitsu_control_add_stats(jitsu_ctx *ctx, const char *group,
                            jitsu_stats_source fn, void *arg) {
  for (jitsu__stats_src *s = ctx->stats_sources; s != NULL; s = s->next)
    if (strcmp(s->group, group) == 0)
      return -EEXIST;
  jitsu__stats_src *s = calloc(1, sizeof(*s));
  if (s == NULL || (s->group = jitsu__strdup(group)) == NULL) {
    free(s);
    return -ENOMEM;
  }
  s->fn = fn;
  s->arg = arg;
  jitsu__stats_src **pp = &ctx->stats_sources;
  while (*pp != NULL)
    pp = &(*pp)->next;
  *pp = s;
  return 0;
}

int jitsu_control_describe_stats(jitsu_ctx *ctx, const char *group,
                                 const jitsu_stat_help *help, size_t n) {
  for (jitsu__stats_src *s = ctx->stats_sources; s != NULL; s = s->next)
    if (strcmp(s->group, group) == 0) {
      s->help = help;
      s->n_help = n;
      return 0;
    }
  return -ENOENT;
}
