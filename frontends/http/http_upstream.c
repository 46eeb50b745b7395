/* jitsu-http: the guest side. Connections to a guest (kept alive in a
 * small pool), responses parsed with http-parser and streamed back to the
 * client with backpressure, 1xx passed on, 101 turned into a tunnel. */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define POOL_MAX 256
#define POOL_IDLE_MS 30000
#define CONNECTS_MAX 2       /* per guest; see http_vmq.n_connecting */
#define CONNECT_GRACE_MS 200 /* a slow answer frees its slot after this */

void http_client_connected(http_client *c);
void http_proxy_count_response(http_proxy *px, int status);

typedef struct uwreq {
  uv_write_t w;
  http_upstream *u;
  char data[];
} uwreq;

static void upstream_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void upstream_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[65536];
  (void)h, (void)suggested;
  *buf = uv_buf_init(slab, sizeof(slab));
}

static void upstream_closed(uv_handle_t *h) {
  http_upstream *u = h->data;
  if (--u->refs == 0) {
    free(u->head);
    free(u);
  }
}

static void connect_over(http_upstream *u);

static void upstream_close(http_upstream *u) {
  if (u->closing)
    return;
  connect_over(u);
  u->closing = true;
  jitsu_list_remove(&u->plink);
  if (u->plink_counted) {
    u->q->n_idle--;
    u->plink_counted = false;
  }
  uv_close((uv_handle_t *)&u->tcp, upstream_closed);
  uv_close((uv_handle_t *)&u->timer, upstream_closed);
}

static void upstream_written(uv_write_t *w, int status) {
  uwreq *r = JITSU_CONTAINER_OF(w, uwreq, w);
  http_upstream *u = r->u;
  free(r);
  if (status == 0 && u->c != NULL && u->c->paused_by_upstream &&
      uv_stream_get_write_queue_size((uv_stream_t *)&u->tcp) <
          HTTP_HIGH_WATER / 2)
    http_client_backpressure(u->c, false);
  if (--u->refs == 0) {
    free(u->head);
    free(u);
  }
}

void http_upstream_send(http_upstream *u, const char *data, size_t len) {
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  http_upstream_sendv(u, &b, 1);
}

void http_upstream_sendv(http_upstream *u, const uv_buf_t *parts, size_t n) {
  size_t len = 0;
  for (size_t i = 0; i < n; i++)
    len += parts[i].len;
  if (u->closing || len == 0)
    return;
  size_t done = http_write_now((uv_stream_t *)&u->tcp, parts, n);
  if (done == len)
    return;
  uwreq *r = malloc(sizeof(*r) + len - done);
  if (r == NULL)
    return;
  http_copy_rest(r->data, parts, n, done);
  len -= done;
  r->u = u;
  u->refs++;
  uv_buf_t b = uv_buf_init(r->data, (unsigned)len);
  if (uv_write(&r->w, (uv_stream_t *)&u->tcp, &b, 1, upstream_written) < 0) {
    free(r);
    u->refs--;
    return;
  }
  if (u->c != NULL &&
      uv_stream_get_write_queue_size((uv_stream_t *)&u->tcp) > HTTP_HIGH_WATER)
    http_client_backpressure(u->c, true);
}

void http_upstream_backpressure(http_upstream *u, bool pause) {
  if (u->closing)
    return;
  u->paused_by_client = pause;
  if (pause)
    uv_read_stop((uv_stream_t *)&u->tcp);
  else
    uv_read_start((uv_stream_t *)&u->tcp, upstream_alloc, upstream_read);
}

static void idle_expired(uv_timer_t *t) {
  upstream_close(t->data);
}

/* Hand idle connections, or free connect slots, to waiting requests. */
static void serve_connect_waiters(http_vmq *q) {
  while (q->connect_wait.next != &q->connect_wait &&
         (q->idle.next != &q->idle || q->n_connecting < CONNECTS_MAX)) {
    http_client *c =
        JITSU_CONTAINER_OF(q->connect_wait.next, http_client, cwlink);
    jitsu_list_remove(&c->cwlink);
    http_upstream_attach(q, c);
  }
}

/* A new connection got its first answer (or is closing before that). */
static void connect_over(http_upstream *u) {
  if (!u->connecting)
    return;
  u->connecting = false;
  u->q->n_connecting--;
  if (!u->closing)
    serve_connect_waiters(u->q);
}

void http_upstream_release(http_upstream *u, bool reuse) {
  u->c = NULL;
  http_vmq *q = u->q;
  if (!reuse || u->closing || q == NULL || q->n_idle >= POOL_MAX) {
    upstream_close(u);
    return;
  }
  /* Keep it for the next request to this guest. */
  jitsu_list_append(&q->idle, &u->plink);
  q->n_idle++;
  u->plink_counted = true;
  u->paused_by_client = false;
  uv_read_start((uv_stream_t *)&u->tcp, upstream_alloc, upstream_read);
  uv_timer_start(&u->timer, idle_expired, POOL_IDLE_MS, 0);
  serve_connect_waiters(q);
}

void http_vmq_close_idle(http_vmq *q) {
  while (q->idle.next != &q->idle) {
    http_upstream *u = JITSU_CONTAINER_OF(q->idle.next, http_upstream, plink);
    upstream_close(u); /* takes it off q's list and counts; then q goes */
    u->q = NULL;
  }
}

/* --- the response --- */

static int u_message_begin(http_parser *p) {
  http_upstream *u = p->data;
  u->head_len = 0;
  u->field_len = 0;
  u->in_value = false;
  u->reason[0] = '\0';
  return 0;
}

static int u_status(http_parser *p, const char *at, size_t n) {
  http_upstream *u = p->data;
  size_t l = strlen(u->reason);
  if (l + n >= sizeof(u->reason))
    n = sizeof(u->reason) - l - 1;
  memcpy(u->reason + l, at, n);
  u->reason[l + n] = '\0';
  return 0;
}

static int u_add(http_upstream *u, const char *data, size_t n) {
  return http_buf_add(&u->head, &u->head_len, &u->head_cap, data, n,
                      256 * 1024);
}

static int u_header_field(http_parser *p, const char *at, size_t n) {
  http_upstream *u = p->data;
  if (u->in_value) {
    if (!u->skip_header && u_add(u, "\r\n", 2) < 0)
      return -1;
    u->in_value = false;
    u->field_len = 0;
  }
  if (u->field_len + n >= sizeof(u->field))
    return -1;
  memcpy(u->field + u->field_len, at, n);
  u->field_len += n;
  return 0;
}

static int u_header_value(http_parser *p, const char *at, size_t n) {
  http_upstream *u = p->data;
  bool first = !u->in_value;
  if (u->field_len == 10 && strncasecmp(u->field, "connection", 10) == 0)
    http_field_list_add(u->conn, sizeof(u->conn), at, n, first);
  if (!u->in_value) {
    u->in_value = true;
    /* Upgrade stays on a 101: the client must see what it switched to. */
    u->skip_header = http_hop_by_hop(u->field, u->field_len) &&
                     !(p->status_code == 101 && u->field_len == 7 &&
                       strncasecmp(u->field, "upgrade", 7) == 0);
    if (!u->skip_header &&
        (u_add(u, u->field, u->field_len) < 0 || u_add(u, ": ", 2) < 0))
      return -1;
  }
  if (!u->skip_header && u_add(u, at, n) < 0)
    return -1;
  return 0;
}

static int u_headers_complete(http_parser *p) {
  http_upstream *u = p->data;
  http_client *c = u->c;
  if (u->in_value && !u->skip_header && u_add(u, "\r\n", 2) < 0)
    return -1;
  u->in_value = false;
  if (c == NULL)
    return -1;
  int status = p->status_code;
  /* Fields the guest named in Connection are for us alone (a 101 keeps
   * its Upgrade). */
  http_drop_named(u->head, &u->head_len, u->conn,
                  status == 101 ? "upgrade" : NULL);
  u->conn[0] = '\0';
  u->resp_chunked = (p->flags & F_CHUNKED) != 0;
  bool interim = status >= 100 && status < 200;
  bool no_body =
      c->req_head_method || status == 204 || status == 304 || interim;
  bool framed = no_body || u->resp_chunked || (p->flags & F_CONTENTLENGTH) != 0;
  u->client_keep_alive = framed && c->keep_alive;
  char extra[256];
  char *e = extra;
  if (c->cold && !interim)
    e += snprintf(e, 64, "X-Jitsu-Cold-Start: %llu\r\n",
                  (unsigned long long)c->cold_ms);
  if (status == 101)
    e = HTTP_PUT(e, "Connection: Upgrade\r\n");
  else if (!interim && u->client_keep_alive)
    e = HTTP_PUT(e, "Connection: keep-alive\r\n");
  else if (!interim)
    e = HTTP_PUT(e, "Connection: close\r\n");
  if (u->resp_chunked && !no_body)
    e = HTTP_PUT(e, "Transfer-Encoding: chunked\r\n");
  /* One write for the whole head: one syscall, one packet. The status
   * has three digits (http-parser takes no more). */
  char line[sizeof(u->reason) + 16];
  char *l = HTTP_PUT(line, "HTTP/1.1 ");
  *l++ = (char)('0' + status / 100 % 10);
  *l++ = (char)('0' + status / 10 % 10);
  *l++ = (char)('0' + status % 10);
  *l++ = ' ';
  const char *reason = u->reason[0] ? u->reason : "Status";
  l = http_put(l, reason, strlen(reason));
  l = HTTP_PUT(l, "\r\n");
  uv_buf_t parts[4] = {uv_buf_init(line, (unsigned)(l - line)),
                       uv_buf_init(u->head, (unsigned)u->head_len),
                       uv_buf_init(extra, (unsigned)(e - extra)),
                       uv_buf_init((char *)"\r\n", 2)};
  http_client_sendv(c, parts, 4);
  if (!interim)
    c->cold = false;
  u->status = status;
  if (status == 101)
    return 2; /* http-parser: stop here, the rest is the tunnel */
  return no_body && !interim ? 1 : 0;
}

static int u_body(http_parser *p, const char *at, size_t n) {
  http_upstream *u = p->data;
  if (u->c == NULL)
    return -1;
  if (u->resp_chunked) {
    char size[24];
    int l = snprintf(size, sizeof(size), "%zx\r\n", n);
    uv_buf_t parts[3] = {uv_buf_init(size, (unsigned)l),
                         uv_buf_init((char *)at, (unsigned)n),
                         uv_buf_init((char *)"\r\n", 2)};
    http_client_sendv(u->c, parts, 3);
  } else {
    http_client_send(u->c, at, n);
  }
  return 0;
}

static int u_message_complete(http_parser *p) {
  http_upstream *u = p->data;
  http_client *c = u->c;
  if (c == NULL)
    return -1;
  if (u->status >= 100 && u->status < 200 && u->status != 101)
    return 0; /* an interim response: the final one follows */
  if (u->resp_chunked && !c->req_head_method && u->status != 204 &&
      u->status != 304)
    http_client_send(c, "0\r\n\r\n", 5);
  http_proxy_count_response(c->px, u->status);
  /* http-parser answers this reliably only inside this callback. */
  u->reusable = http_should_keep_alive(p);
  u->resp_done = true;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings *response_settings(void) {
  static http_parser_settings s;
  if (s.on_message_begin == NULL) {
    s.on_message_begin = u_message_begin;
    s.on_status = u_status;
    s.on_header_field = u_header_field;
    s.on_header_value = u_header_value;
    s.on_headers_complete = u_headers_complete;
    s.on_body = u_body;
    s.on_message_complete = u_message_complete;
  }
  return &s;
}

/* The response is over: the connection back to the pool, the client on. */
static void response_over(http_upstream *u) {
  http_client *c = u->c;
  bool reuse = u->reusable && c->req_complete;
  bool keep = u->client_keep_alive;
  c->up = NULL;
  http_upstream_release(u, reuse);
  http_client_response_done(c, keep);
}

static void upstream_failed(http_upstream *u, const char *why) {
  http_client *c = u->c;
  u->c = NULL;
  if (c != NULL) {
    c->up = NULL;
    if (u->status == 0 && u->head_len == 0) {
      c->px->st.upstream_errors++;
      char body[300];
      snprintf(body, sizeof(body), "vm '%s': %s", http_vmq_name(u->q), why);
      http_client_error(c, 502, "Bad Gateway", body);
    } else {
      http_client_close(c); /* mid-response: the client sees it cut */
    }
  }
  upstream_close(u);
}

static void upstream_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  http_upstream *u = s->data;
  if (n == 0)
    return;           /* libuv's EAGAIN */
  if (u->c == NULL) { /* idle in the pool: the guest closed it */
    upstream_close(u);
    return;
  }
  /* A new connection counts as connecting until the guest answers on it:
   * the kernel completes a connect to a forward before QEMU accepts it. */
  if (n > 0)
    connect_over(u);
  http_client *c = u->c;
  http_client_guest_active(c);
  if (c->state == C_TUNNEL) {
    if (n < 0) {
      http_client_close(c);
      return;
    }
    http_client_send(c, buf->base, (size_t)n);
    return;
  }
  if (n < 0) {
    /* EOF ends a response that runs until close; else it is cut short. */
    if (n == UV_EOF && u->status != 0) {
      http_parser_execute(&u->parser, response_settings(), NULL, 0);
      if (u->resp_done) {
        u->client_keep_alive = false;
        response_over(u);
        return;
      }
    }
    upstream_failed(u, "the guest closed the connection");
    return;
  }
  /* What this read produces goes out in one write (c stays allocated: a
   * close is finished by the loop later). */
  http_client_cork(c, true);
  size_t done = http_parser_execute(&u->parser, response_settings(), buf->base,
                                    (size_t)n);
  http_client_cork(c, false);
  enum http_errno e = HTTP_PARSER_ERRNO(&u->parser);
  if (u->status == 101 && (u->parser.upgrade || e == HPE_CB_headers_complete)) {
    /* Switched: from here on, bytes both ways. */
    http_client_send(c, buf->base + done, (size_t)n - done);
    http_client_tunnel(c);
    return;
  }
  if (u->resp_done) {
    http_parser_pause(&u->parser, 0);
    response_over(u);
    return;
  }
  if (e != HPE_OK && e != HPE_PAUSED)
    upstream_failed(u, "a malformed response");
}

static void connect_grace(uv_timer_t *t) {
  connect_over(t->data); /* a slow endpoint must not hold up new ones */
}

static void start_request(http_upstream *u, http_client *c) {
  u->c = c;
  c->up = u;
  u->status = 0;
  u->resp_done = false;
  u->head_len = 0;
  u->conn[0] = '\0';
  http_parser_init(&u->parser, HTTP_RESPONSE);
  u->parser.data = u;
  uv_timer_stop(&u->timer);
  if (u->connecting)
    uv_timer_start(&u->timer, connect_grace, CONNECT_GRACE_MS, 0);
  http_upstream_send(u, c->head, c->head_len);
  uv_read_start((uv_stream_t *)&u->tcp, upstream_alloc, upstream_read);
  http_client_connected(c);
}

static void connected(uv_connect_t *req, int status) {
  http_upstream *u = req->data;
  http_client *c = u->c;
  if (u->closing) {
    return;
  }
  if (status < 0) {
    char why[160];
    snprintf(why, sizeof(why), "cannot connect: %s", uv_strerror(status));
    upstream_failed(u, why);
    return;
  }
  u->connected = true;
  uv_tcp_nodelay(&u->tcp, 1);
  if (c == NULL) { /* the client left meanwhile */
    upstream_close(u);
    return;
  }
  start_request(u, c);
}

void http_upstream_attach(http_vmq *q, http_client *c) {
  if (q->idle.next != &q->idle) {
    http_upstream *u = JITSU_CONTAINER_OF(q->idle.next, http_upstream, plink);
    jitsu_list_remove(&u->plink);
    q->n_idle--;
    u->plink_counted = false;
    start_request(u, c);
    return;
  }
  if (q->n_connecting >= CONNECTS_MAX) {
    jitsu_list_append(&q->connect_wait, &c->cwlink); /* a connect slot or an
                                                      * idle connection soon */
    return;
  }
  http_upstream *u = calloc(1, sizeof(*u));
  if (u == NULL) {
    http_client_error(c, 502, "Bad Gateway", "out of memory");
    return;
  }
  u->connecting = true;
  q->n_connecting++;
  u->q = q;
  u->refs = 2;
  u->c = c;
  c->up = u;
  uv_tcp_init(c->px->loop, &u->tcp);
  uv_timer_init(c->px->loop, &u->timer);
  u->tcp.data = u->timer.data = u->connect.data = u;
  int r = uv_tcp_connect(&u->connect, &u->tcp,
                         (const struct sockaddr *)&q->backend, connected);
  if (r < 0) {
    char why[160];
    snprintf(why, sizeof(why), "cannot connect: %s", uv_strerror(r));
    upstream_failed(u, why);
  }
}
