/* jitsu-http: the client side. Accept, parse requests with http-parser,
 * route by Host (and path prefix), queue a request while its guest is
 * summoned, and stream it to the guest with backpressure. */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* --- sending --- */

typedef struct wreq {
  uv_write_t w;
  http_client *c;
  char data[];
} wreq;

static void client_written(uv_write_t *w, int status) {
  wreq *r = JITSU_CONTAINER_OF(w, wreq, w);
  http_client *c = r->c;
  (void)status;
  free(r);
  /* A write done: the client takes what we send; send-timeout starts
   * over while more waits. */
  if (c->state != C_CLOSING) {
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)
      uv_timer_stop(&c->send_timer);
    else
      uv_timer_again(&c->send_timer);
  }
  if (c->up != NULL && c->up->paused_by_client &&
      uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <
          HTTP_HIGH_WATER / 2)
    http_upstream_backpressure(c->up, false);
  http_client_unref(c);
}

void http_client_send(http_client *c, const char *data, size_t len) {
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  http_client_sendv(c, &b, 1);
}

static void write_out(http_client *c, const uv_buf_t *parts, size_t n);

/* The client took nothing of what waits for it for send-timeout (it does
 * not read): it goes, and with it its guest's connection and hold. */
static void send_expired(uv_timer_t *t) {
  http_client *c = t->data;
  if (c->state == C_CLOSING ||
      uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)
    return;
  c->px->st.send_timeouts++;
  http_client_close(c);
}

/* While corked, what is sent gathers and goes out in one write at the
 * uncork (a response head and its body: one syscall, one packet). */
void http_client_cork(http_client *c, bool on) {
  c->corked = on;
  if (!on && c->out_len > 0) {
    uv_buf_t b = uv_buf_init(c->out, (unsigned)c->out_len);
    c->out_len = 0;
    write_out(c, &b, 1);
  }
}

void http_client_sendv(http_client *c, const uv_buf_t *parts, size_t n) {
  if (c->corked && c->state != C_CLOSING) {
    for (size_t i = 0; i < n; i++)
      if (http_buf_add(&c->out, &c->out_len, &c->out_cap, parts[i].base,
                       parts[i].len, SIZE_MAX) < 0) {
        http_client_close(c);
        return;
      }
    if (c->out_len >= HTTP_HIGH_WATER) {
      http_client_cork(c, false);
      c->corked = true;
    }
    return;
  }
  write_out(c, parts, n);
}

static void write_out(http_client *c, const uv_buf_t *parts, size_t n) {
  size_t len = 0;
  for (size_t i = 0; i < n; i++)
    len += parts[i].len;
  if (c->state == C_CLOSING || len == 0)
    return;
  size_t done = http_write_now((uv_stream_t *)&c->tcp, parts, n);
  if (done == len)
    return;
  wreq *r = malloc(sizeof(*r) + len - done);
  if (r == NULL) {
    http_client_close(c);
    return;
  }
  http_copy_rest(r->data, parts, n, done);
  len -= done;
  r->c = c;
  c->refs++;
  uv_buf_t b = uv_buf_init(r->data, (unsigned)len);
  if (uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, client_written) < 0) {
    free(r);
    c->refs--;
    http_client_close(c);
    return;
  }
  /* libuv wrote what it could at once; what is left waits for the client.
   * (uv_timer_again: its repeat is send-timeout, set in client_new.) */
  if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > 0 &&
      !uv_is_active((uv_handle_t *)&c->send_timer))
    uv_timer_again(&c->send_timer);
  if (c->up != NULL &&
      uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > HTTP_HIGH_WATER)
    http_upstream_backpressure(c->up, true);
}

static void client_closed(uv_handle_t *h) {
  http_client_unref(h->data);
}

void http_client_unref(http_client *c) {
  if (--c->refs > 0)
    return;
  free(c->head);
  free(c->stash);
  free(c->body);
  free(c->out);
  free(c);
}

static void release_hold(http_client *c) {
  if (c->held && c->q != NULL) {
    jitsu_vm_release(c->q->vm);
    c->held = false;
  }
}

/* Take the guest's connection from (c): it goes, and with it c's hold. */
static void drop_upstream(http_client *c) {
  release_hold(c);
  if (c->up != NULL) {
    http_upstream *u = c->up;
    c->up = NULL;
    u->c = NULL;
    http_upstream_release(u, false);
  }
}

void http_client_close(http_client *c) {
  if (c->state == C_CLOSING)
    return;
  c->state = C_CLOSING;
  http_proxy *px = c->px;
  jitsu_list_remove(&c->link);
  px->n_clients--;
  if (c->qlink.next != NULL) {
    jitsu_list_remove(&c->qlink); /* it gave up waiting: out of the queue */
    c->q->n_waiting--;
  }
  jitsu_list_remove(&c->cwlink);
  drop_upstream(c);
  uv_close((uv_handle_t *)&c->tcp, client_closed);
  uv_close((uv_handle_t *)&c->timer, client_closed);
  uv_close((uv_handle_t *)&c->send_timer, client_closed);
  http_proxy_client_gone(px);
}

static void shutdown_done(uv_shutdown_t *req, int status) {
  http_client *c = req->data;
  (void)status;
  free(req);
  http_client_close(c);
  http_client_unref(c);
}

/* --- the client's one timer (head, body, queue or response) ---
 * Set and cleared on every request, so kept lazy: what is due is noted,
 * and the libuv timer is restarted only when that comes earlier than
 * the time it is armed for; when it fires early it is armed for the
 * rest. (Restarting it four times a request was 3% of our CPU.) */

static void client_timer_fired(uv_timer_t *t) {
  http_client *c = t->data;
  uint64_t now = uv_now(c->px->loop);
  if (c->due_fn == NULL)
    return;
  if (now < c->due) {
    c->armed_due = c->due;
    uv_timer_start(t, client_timer_fired, c->due - now, 0);
    return;
  }
  void (*fn)(http_client *) = c->due_fn;
  c->due_fn = NULL;
  fn(c);
}

static void client_timer_set(http_client *c, uint64_t ms,
                             void (*fn)(http_client *)) {
  uint64_t now = uv_now(c->px->loop);
  c->due = now + ms;
  c->due_fn = fn;
  if (!uv_is_active((uv_handle_t *)&c->timer) || c->due < c->armed_due) {
    c->armed_due = c->due;
    uv_timer_start(&c->timer, client_timer_fired, ms, 0);
  }
}

static void client_timer_stop(http_client *c) {
  c->due_fn = NULL; /* the libuv timer, if armed, fires in vain */
}

/* Close once what was written has gone out. */
static void client_finish(http_client *c) {
  if (c->state == C_CLOSING)
    return;
  http_client_cork(c, false);
  uv_read_stop((uv_stream_t *)&c->tcp);
  client_timer_stop(c);
  uv_shutdown_t *req = malloc(sizeof(*req));
  if (req == NULL ||
      uv_shutdown(req, (uv_stream_t *)&c->tcp, shutdown_done) < 0) {
    free(req);
    http_client_close(c);
    return;
  }
  req->data = c;
  c->refs++;
}

void http_client_error(http_client *c, int status, const char *reason,
                       const char *body) {
  http_proxy *px = c->px;
  char head[512];
  int n = snprintf(head, sizeof(head),
                   "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n",
                   status, reason, strlen(body) + 1);
  if (status == 503)
    n += snprintf(head + n, sizeof(head) - (size_t)n, "Retry-After: %u\r\n",
                  px->set.retry_after);
  n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
  px->st.responses[status / 100]++;
  if (!c->counted) { /* refused before its head was whole: a request too */
    px->st.requests++;
    c->counted = true;
  }
  if (status == 400 || status == 408 || status == 413 || status == 431)
    px->st.bad_requests++;
  http_client_send(c, head, (size_t)n);
  http_client_send(c, body, strlen(body));
  http_client_send(c, "\n", 1);
  if (c->qlink.next != NULL) {
    jitsu_list_remove(&c->qlink);
    c->q->n_waiting--;
  }
  client_finish(c);
}

/* --- reading and parsing --- */

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static int feed(http_client *c, const char *data, size_t len);
static void reading(http_client *c, bool on);

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[65536];
  (void)h, (void)suggested;
  *buf = uv_buf_init(slab, sizeof(slab));
}

static void reading(http_client *c, bool on) {
  if (c->state == C_CLOSING || on == c->reading)
    return;
  c->reading = on;
  if (on)
    uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
  else
    uv_read_stop((uv_stream_t *)&c->tcp);
}

static void arm_body_timer(http_client *c);

void http_client_backpressure(http_client *c, bool pause) {
  bool changed = pause != c->paused_by_upstream;
  c->paused_by_upstream = pause;
  if (c->state == C_FORWARD || c->state == C_TUNNEL)
    reading(c, !pause);
  /* While the guest does not take the body, its clock stops: the guest
   * is slow, not the client. */
  if (changed && c->state == C_FORWARD && !c->req_complete) {
    uint64_t now = uv_now(c->px->loop);
    if (pause) {
      client_timer_stop(c);
      c->body_paused_at = now;
    } else {
      if (c->body_paused_at != 0)
        c->body_clock += now - c->body_paused_at;
      c->body_paused_at = 0;
      arm_body_timer(c);
    }
  }
}

static void head_timeout(http_client *c) {
  if (c->state == C_HEAD && (c->head_started || c->stash_len > 0))
    http_client_error(c, 408, "Request Timeout",
                      "the request head did not arrive in time");
  else if (c->state == C_HEAD)
    http_client_close(c); /* an idle keep-alive connection */
}

static void arm_head_timer(http_client *c, bool started) {
  http_proxy *px = c->px;
  client_timer_set(c, started ? px->set.header_timeout : px->set.idle_timeout,
                   head_timeout);
}

/* The body stopped arriving, or came too slowly: 408 if the guest has not
 * answered yet, else the connection ends (the guest's answer is cut).
 * Either way the guest's connection goes, and with it the hold on the
 * vm. */
static void body_timeout(http_client *c) {
  if ((c->state != C_FORWARD && !c->buffering) || c->req_complete)
    return;
  c->px->st.body_timeouts++;
  bool answered = c->up != NULL && c->up->status != 0;
  drop_upstream(c);
  if (!answered)
    http_client_error(c, 408, "Request Timeout",
                      "the request body stopped arriving or came too slowly");
  else
    http_client_close(c);
}

/* The body's clock starts: see arm_body_timer. */
static void body_begin(http_client *c) {
  c->body_clock = uv_now(c->px->loop);
  c->body_paused_at = 0;
}

/* A body must come with no gap of body-timeout and, with body-min-rate,
 * whole within body-timeout plus a second for each body-min-rate bytes
 * that came (the rule of Apache's mod_reqtimeout): a byte every half
 * second does not hold a vm for ever. */
static void arm_body_timer(http_client *c) {
  if ((c->state != C_FORWARD && !c->buffering) || c->req_complete ||
      c->paused_by_upstream)
    return;
  const http_settings *set = &c->px->set;
  uint64_t now = uv_now(c->px->loop);
  uint64_t due = now + set->body_timeout;
  if (set->body_min_rate > 0) {
    uint64_t by_rate = c->body_clock + set->body_timeout +
                       c->req_body * 1000 / set->body_min_rate;
    if (by_rate < due)
      due = by_rate;
  }
  client_timer_set(c, due > now ? due - now : 0, body_timeout);
}

/* The guest said nothing for response-timeout since the request was
 * whole (or since its last byte): 504 if it has not answered yet, else
 * the connection ends. A guest we stopped reading (the client does not
 * take its answer) is not silent: send-timeout is for that. */
static void response_timeout(http_client *c) {
  http_upstream *u = c->up;
  if (c->state != C_FORWARD || u == NULL)
    return;
  uint64_t now = uv_now(c->px->loop), limit = c->px->set.response_timeout;
  if (u->paused_by_client)
    c->guest_seen = now;
  if (now - c->guest_seen < limit) { /* it spoke since: wait the rest */
    client_timer_set(c, limit - (now - c->guest_seen), response_timeout);
    return;
  }
  c->px->st.response_timeouts++;
  bool answered = u->status != 0;
  char body[400];
  snprintf(body, sizeof(body), "vm '%s' did not answer in time",
           http_vmq_name(u->q));
  drop_upstream(c);
  if (!answered) {
    c->px->st.upstream_errors++;
    http_client_error(c, 504, "Gateway Timeout", body);
  } else {
    http_client_close(c);
  }
}

/* The request is whole at the guest's side: response-timeout runs. */
static void arm_response_timer(http_client *c) {
  if (c->state != C_FORWARD || c->up == NULL ||
      c->px->set.response_timeout == 0)
    return;
  c->guest_seen = uv_now(c->px->loop);
  client_timer_set(c, c->px->set.response_timeout, response_timeout);
}

void http_client_guest_active(http_client *c) {
  c->guest_seen = uv_now(c->px->loop); /* the timer looks at it when due */
}

#define STASH_MAX (64 * 1024)
#define BODY_BUFFER_MAX (64 * 1024)

/* Keep bytes the parser cannot take yet (the body of a queued request, a
 * pipelined request). Reading goes on, so that a client that leaves is
 * seen at once, until STASH_MAX bytes wait. */
static void stash(http_client *c, const char *data, size_t len) {
  if (len > 0) {
    char *s = realloc(c->stash, c->stash_len + len);
    if (s == NULL) {
      http_client_close(c);
      return;
    }
    memcpy(s + c->stash_len, data, len);
    c->stash = s;
    c->stash_len += len;
  }
  if (c->stash_len >= STASH_MAX)
    reading(c, false);
}

/* Resume parsing what was stashed, then read more. */
static void resume(http_client *c) {
  if (c->state == C_CLOSING)
    return;
  http_parser_pause(&c->parser, 0);
  char *s = c->stash;
  size_t n = c->stash_len;
  c->stash = NULL;
  c->stash_len = 0;
  int r = n ? feed(c, s, n) : 0;
  free(s);
  if (r == 0 && !c->paused_by_upstream &&
      (c->state == C_HEAD || c->state == C_FORWARD || c->state == C_TUNNEL))
    reading(c, true);
}

static const http_parser_settings *request_settings(void);

/* Whether (data) starts with a token and a space (a method, RFC 9110
 * 5.6.2 tchar). */
static bool method_token(const char *data, size_t len) {
  static const char extra[] = "!#$%&'*+-.^_`|~";
  size_t i = 0;
  for (; i < len && data[i] != ' '; i++) {
    unsigned char ch = (unsigned char)data[i];
    if (!(ch >= 'A' && ch <= 'Z') && !(ch >= 'a' && ch <= 'z') &&
        !(ch >= '0' && ch <= '9') && (ch == 0 || !strchr(extra, ch)))
      return false;
  }
  return i > 0 && i < len;
}

static int feed(http_client *c, const char *data, size_t len) {
  if (c->state == C_TUNNEL) {
    if (c->up != NULL)
      http_upstream_send(c->up, data, len);
    return 0;
  }
  size_t n = http_parser_execute(&c->parser, request_settings(), data, len);
  if (c->state == C_CLOSING)
    return -1;
  enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
  if (e == HPE_PAUSED || (c->parser.upgrade && e == HPE_OK)) {
    /* Not ready for more (queued, connecting, or a response is due), or
     * the rest is for the tunnel after 101. */
    stash(c, data + n, len - n);
    return 1;
  }
  if (e != HPE_OK) {
    if (c->state == C_HEAD && e == HPE_INVALID_METHOD &&
        method_token(data, len)) {
      /* A valid method (RFC 9110 9.1: a token) that the parser does not
       * know: not implemented here, not a bad request. */
      http_client_error(c, 501, "Not Implemented",
                        "the request's method is not supported");
    } else if (c->state == C_HEAD) {
      char body[128];
      snprintf(body, sizeof(body), "malformed request: %s",
               http_errno_description(e));
      http_client_error(c, 400, "Bad Request", body);
    } else {
      http_client_close(c); /* a broken body: nothing to answer */
    }
    return -1;
  }
  return 0;
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  http_client *c = s->data;
  if (n == 0)
    return; /* libuv's EAGAIN; a length of 0 would mean EOF to the parser */
  if (n < 0) {
    /* One that leaves while its request waits (for its guest, or for a
     * connection to it) is gone at once; one whose request reached the
     * guest may have half-closed: it gets its answer. */
    bool waiting =
        c->state == C_QUEUED ||
        (c->state == C_FORWARD && c->up == NULL && c->cwlink.next != NULL);
    if (c->state == C_HEAD || waiting || c->state == C_TUNNEL ||
        !c->req_complete) {
      http_client_close(c);
      return;
    }
    reading(c, false); /* half-closed after its request: answer, then close */
    return;
  }
  /* header-timeout runs from the request's first byte, whatever comes
   * after it (a method, empty lines): it is never armed again. */
  if (c->state == C_HEAD && !c->head_started) {
    c->head_started = true;
    arm_head_timer(c, true);
  }
  if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED ||
      (c->parser.upgrade && c->state != C_TUNNEL)) {
    stash(c, buf->base, (size_t)n); /* the parser waits: keep it for later */
    return;
  }
  feed(c, buf->base, (size_t)n);
}

/* --- the request head --- */

static int head_add(http_client *c, const char *data, size_t n) {
  if (http_buf_add(&c->head, &c->head_len, &c->head_cap, data, n,
                   c->px->set.max_header + 1024) < 0)
    return -1;
  return 0;
}

static int too_big(http_client *c, size_t n) {
  c->head_bytes += n;
  if (c->head_bytes > c->px->set.max_header) {
    http_client_error(c, 431, "Request Header Fields Too Large",
                      "the request head is too large");
    return 1;
  }
  return 0;
}

static int on_message_begin(http_parser *p) {
  http_client *c = p->data;
  c->head_len = 0;
  c->head_bytes = 0;
  c->field_len = 0;
  c->in_value = false;
  c->host[0] = c->url[0] = c->xff[0] = c->upgrade[0] = '\0';
  c->host_seen = c->counted = c->buffering = c->expect = false;
  free(c->body);
  c->body = NULL;
  c->body_len = 0;
  c->conn[0] = '\0';
  c->url_len = 0;
  c->req_complete = c->req_upgrade = false;
  c->req_body = 0;
  c->cold = false;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  http_client *c = p->data;
  if (too_big(c, n))
    return -1;
  if (c->url_len + n >= sizeof(c->url)) {
    http_client_error(c, 414, "URI Too Long", "the request target is too long");
    return -1;
  }
  memcpy(c->url + c->url_len, at, n);
  c->url_len += n;
  c->url[c->url_len] = '\0';
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  http_client *c = p->data;
  if (too_big(c, n))
    return -1;
  if (c->in_value) {
    if (c->want_value && head_add(c, "\r\n", 2) < 0)
      return -1;
    c->in_value = false;
    c->field_len = 0;
  }
  if (c->field_len + n >= sizeof(c->field)) {
    http_client_error(c, 431, "Request Header Fields Too Large",
                      "a header name is too long");
    return -1;
  }
  memcpy(c->field + c->field_len, at, n);
  c->field_len += n;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  http_client *c = p->data;
  if (too_big(c, n))
    return -1;
  bool first = !c->in_value;
  if (!c->in_value) {
    c->in_value = true;
    /* RFC 9112 5.1: no whitespace between a field name and its colon. */
    if (memchr(c->field, ' ', c->field_len) != NULL ||
        memchr(c->field, '\t', c->field_len) != NULL) {
      http_client_error(c, 400, "Bad Request",
                        "whitespace between a field name and its colon");
      return -1;
    }
    c->want_host_value =
        c->field_len == 4 && strncasecmp(c->field, "host", 4) == 0;
    if (c->want_host_value && c->host_seen) { /* RFC 9112 3.2 */
      http_client_error(c, 400, "Bad Request", "more than one Host field");
      return -1;
    }
    c->host_seen |= c->want_host_value;
    c->want_value = !http_hop_by_hop(c->field, c->field_len);
    if (c->field_len == 15 && strncasecmp(c->field, "x-forwarded-for", 15) == 0)
      c->want_host_value = false;
    if (c->want_value &&
        (head_add(c, c->field, c->field_len) < 0 || head_add(c, ": ", 2) < 0))
      return -1;
  }
  if (c->want_host_value)
    http_capture(c->host, sizeof(c->host), at, n);
  /* Several X-Forwarded-For fields make one list. */
  if (c->field_len == 15 && strncasecmp(c->field, "x-forwarded-for", 15) == 0)
    http_field_list_add(c->xff, sizeof(c->xff), at, n, first);
  if (c->field_len == 7 && strncasecmp(c->field, "upgrade", 7) == 0)
    http_capture(c->upgrade, sizeof(c->upgrade), at, n);
  if (c->field_len == 10 && strncasecmp(c->field, "connection", 10) == 0)
    http_field_list_add(c->conn, sizeof(c->conn), at, n, first);
  if (c->field_len == 6 && strncasecmp(c->field, "expect", 6) == 0)
    c->expect = true; /* the client waits for 100 before its body */
  if (c->want_value && head_add(c, at, n) < 0)
    return -1;
  return 0;
}

static const char *peer_text(http_client *c) {
  if (c->peer_ip[0] == '\0') {
    snprintf(c->peer_ip, sizeof(c->peer_ip), "unknown");
    if (c->peer.ss_family == AF_INET)
      uv_ip4_name((struct sockaddr_in *)&c->peer, c->peer_ip,
                  sizeof(c->peer_ip));
    else if (c->peer.ss_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)&c->peer, c->peer_ip,
                  sizeof(c->peer_ip));
  }
  return c->peer_ip;
}

/* Put the request line and our headers around the kept ones. */
static int finish_head(http_client *c) {
  /* Fields the client named in Connection are for us alone. */
  http_drop_named(c->head, &c->head_len, c->conn, NULL);
  const char *ip = peer_text(c);
  const char *method = http_method_str((enum http_method)c->parser.method);
  size_t ml = strlen(method), ul = strlen(c->url), il = strlen(ip);
  size_t xl = strlen(c->xff), gl = strlen(c->upgrade);
  bool v6 = c->peer.ss_family == AF_INET6;
  char *h = malloc(ml + ul + c->head_len + xl + 2 * il + gl + 256);
  if (h == NULL)
    return -1;
  char *p = http_put(h, method, ml);
  p = HTTP_PUT(p, " ");
  p = http_put(p, c->url, ul);
  p = HTTP_PUT(p, " HTTP/1.1\r\n");
  p = http_put(p, c->head, c->head_len);
  p = HTTP_PUT(p, "X-Forwarded-For: ");
  if (xl > 0) {
    p = http_put(p, c->xff, xl);
    p = HTTP_PUT(p, ", ");
  }
  p = http_put(p, ip, il);
  p = HTTP_PUT(p, "\r\nX-Forwarded-Proto: http\r\nForwarded: for=");
  if (v6)
    p = HTTP_PUT(p, "\"[");
  p = http_put(p, ip, il);
  if (v6)
    p = HTTP_PUT(p, "]\"");
  p = HTTP_PUT(p, ";proto=http\r\n");
  if (c->req_upgrade)
    p = HTTP_PUT(p, "Connection: Upgrade\r\n");
  else
    p = HTTP_PUT(p, "Connection: keep-alive\r\n");
  if (c->req_chunked)
    p = HTTP_PUT(p, "Transfer-Encoding: chunked\r\n");
  if (c->req_upgrade) {
    p = HTTP_PUT(p, "Upgrade: ");
    p = http_put(p, c->upgrade, gl);
    p = HTTP_PUT(p, "\r\n");
  }
  p = HTTP_PUT(p, "\r\n");
  free(c->head);
  c->head = h;
  c->head_len = (size_t)(p - h);
  c->head_cap = c->head_len;
  return 0;
}

static void dispatch(http_client *c);

/* An absolute-form target (RFC 9112 3.2.2, "GET http://app.test/x"): its
 * authority replaces Host, and the guest gets the origin form ("/x"). */
static int absolute_form(http_client *c) {
  if (strncasecmp(c->url, "http://", 7) != 0)
    return 0;
  const char *a = c->url + 7;
  size_t al = strcspn(a, "/?#");
  if (al == 0 || al >= sizeof(c->host) || memchr(a, '@', al) != NULL) {
    http_client_error(c, 400, "Bad Request",
                      "an absolute-form target needs a host (no userinfo)");
    return -1;
  }
  memcpy(c->host, a, al);
  c->host[al] = '\0';
  const char *rest = a + al;
  char path[sizeof(c->url)];
  snprintf(path, sizeof(path), "%s%s", rest[0] == '/' ? "" : "/", rest);
  snprintf(c->url, sizeof(c->url), "%s", path);
  c->url_len = strlen(c->url);
  return 0;
}

static int on_headers_complete(http_parser *p) {
  http_client *c = p->data;
  http_proxy *px = c->px;
  if (c->in_value && c->want_value && head_add(c, "\r\n", 2) < 0)
    return -1;
  c->in_value = false;
  px->st.requests++;
  c->counted = true;
  c->req_chunked = (p->flags & F_CHUNKED) != 0;
  c->req_upgrade = p->upgrade && c->upgrade[0] != '\0';
  c->req_head_method = p->method == HTTP_HEAD;
  c->keep_alive = http_should_keep_alive(p);
  if (c->host[0] == '\0' && p->http_minor >= 1) {
    http_client_error(c, 400, "Bad Request", "HTTP/1.1 needs a Host header");
    return -1;
  }
  if (absolute_form(c) < 0)
    return -1;
  if (px->set.max_body && !c->req_chunked && p->content_length != ULLONG_MAX &&
      p->content_length > px->set.max_body) {
    http_client_error(c, 413, "Content Too Large",
                      "the request body is too large");
    return -1;
  }
  c->q = http_route_lookup(px, c->host, c->url);
  if (c->q == NULL) {
    char body[400];
    snprintf(body, sizeof(body), "no vm serves host '%s'", c->host);
    http_client_error(c, 404, "Not Found", body);
    return -1;
  }
  if (finish_head(c) < 0) {
    http_client_close(c);
    return -1;
  }
  client_timer_stop(c);
  /* A body of up to BODY_BUFFER_MAX bytes is read whole first (unless
   * the client waits for a 100); a larger one waits until the guest is
   * connected and then streams. Without one, the message completes right
   * after this (and pauses there, see below). */
  bool has_body = c->req_chunked ||
                  (p->content_length > 0 && p->content_length != ULLONG_MAX);
  c->req_has_body = has_body;
  if (has_body && !c->req_chunked && !c->expect && !c->req_upgrade &&
      p->content_length <= BODY_BUFFER_MAX) {
    c->body = malloc((size_t)p->content_length);
    if (c->body == NULL) {
      http_client_close(c);
      return -1;
    }
    c->buffering = true;
    body_begin(c);
    arm_body_timer(c);
    return 0; /* dispatched once the body is in (on_message_complete) */
  }
  if (has_body)
    http_parser_pause(p, 1);
  dispatch(c);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  http_client *c = p->data;
  http_proxy *px = c->px;
  c->req_body += n;
  arm_body_timer(c);
  if (c->buffering) { /* its length was checked: it fits */
    memcpy(c->body + c->body_len, at, n);
    c->body_len += n;
    return 0;
  }
  if (px->set.max_body && c->req_body > px->set.max_body) {
    http_client_error(c, 413, "Content Too Large",
                      "the request body is too large");
    return -1;
  }
  if (c->up == NULL)
    return -1;
  if (c->req_chunked) {
    char size[24];
    int l = snprintf(size, sizeof(size), "%zx\r\n", n);
    uv_buf_t parts[3] = {uv_buf_init(size, (unsigned)l),
                         uv_buf_init((char *)at, (unsigned)n),
                         uv_buf_init((char *)"\r\n", 2)};
    http_upstream_sendv(c->up, parts, 3);
  } else {
    http_upstream_send(c->up, at, n);
  }
  return 0;
}

static int on_message_complete(http_parser *p) {
  http_client *c = p->data;
  if (c->req_chunked && c->up != NULL)
    http_upstream_send(c->up, "0\r\n\r\n", 5);
  c->req_complete = true;
  if (c->buffering) { /* the whole body is in: now the request goes */
    c->buffering = false;
    client_timer_stop(c);
    dispatch(c);
    /* One request at a time (a connection from the pool may have resumed
     * the parser inside dispatch). */
    http_parser_pause(p, 1);
    return 0;
  }
  if (c->state == C_FORWARD) {
    client_timer_stop(c); /* the body is in: the guest's turn */
    arm_response_timer(c);
  }
  /* One request at a time: the next waits for this response. */
  if (!c->req_upgrade)
    http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings *request_settings(void) {
  static http_parser_settings s;
  if (s.on_message_begin == NULL) {
    s.on_message_begin = on_message_begin;
    s.on_url = on_url;
    s.on_header_field = on_header_field;
    s.on_header_value = on_header_value;
    s.on_headers_complete = on_headers_complete;
    s.on_body = on_body;
    s.on_message_complete = on_message_complete;
  }
  return &s;
}

/* --- the queue --- */

static void wait_add(http_proxy *px, uint64_t ms) {
  uint64_t us = ms * 1000;
  px->st.wait_us[px->st.wait_pos] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
  px->st.wait_pos = (px->st.wait_pos + 1) % 256;
  if (px->st.wait_n < 256)
    px->st.wait_n++;
}

/* Forward (c) now: its guest is ready. */
static void forward(http_client *c) {
  c->state = C_FORWARD;
  if (!c->held && c->q->vm != NULL) {
    jitsu_vm_hold(c->q->vm); /* in flight: the idle policy waits */
    c->held = true;
  }
  if (c->q->vm != NULL)
    jitsu_vm_touch(c->q->vm);
  http_upstream_attach(c->q, c);
}

/* The upstream connection took the head: let the body flow. */
void http_client_connected(http_client *c);
void http_client_connected(http_client *c) {
  if (c->body != NULL) { /* read whole before: it follows the head */
    http_upstream_send(c->up, c->body, c->body_len);
    free(c->body);
    c->body = NULL;
    c->body_len = 0;
  }
  if (c->req_complete) {
    arm_response_timer(c);
    /* A request pipelined behind this one stays stashed, its parser
     * paused, until this answer is over (http_client_response_done):
     * parsed now, it would take the guest connection from under this
     * request, which would be left open and unanswered. */
    if (!c->paused_by_upstream)
      reading(c, true);
    return;
  }
  if (c->req_has_body) { /* (without one, the request completes right
                          * after this) */
    body_begin(c);
    arm_body_timer(c);
  }
  resume(c);
}

static void hold_expired(http_client *c) {
  if (c->state != C_QUEUED)
    return;
  c->px->st.hold_timeouts++;
  char body[256];
  snprintf(body, sizeof(body), "vm '%s' is not ready yet; try again shortly",
           http_vmq_name(c->q));
  http_client_error(c, 503, "Service Unavailable", body);
}

static void vm_summoned(jitsu_vm *vm, int status, void *arg) {
  http_vmq *q = arg;
  http_proxy *px = NULL;
  q->summoning = false;
  char reason[400];
  if (status < 0) {
    jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
    jitsu_vm_info_get(vm, &info);
    snprintf(reason, sizeof(reason), "vm '%s' could not start: %s%s%s",
             jitsu_vm_name(vm), jitsu_strerror(status),
             info.reason[0] ? ": " : "", info.reason);
  }
  /* In order: the oldest first. */
  while (q->waiting.next != &q->waiting) {
    http_client *c = JITSU_CONTAINER_OF(q->waiting.next, http_client, qlink);
    px = c->px;
    jitsu_list_remove(&c->qlink);
    q->n_waiting--;
    client_timer_stop(c);
    if (status < 0) {
      px->st.upstream_errors++;
      http_client_error(c, 502, "Bad Gateway", reason);
      continue;
    }
    c->cold_ms = uv_now(px->loop) - c->queued_ms;
    wait_add(px, c->cold_ms);
    forward(c);
  }
}

static void dispatch(http_client *c) {
  http_proxy *px = c->px;
  http_vmq *q = c->q;
  if (q->vm == NULL) { /* an upstream that runs by itself */
    forward(c);
    return;
  }
  jitsu_vm_touch(q->vm);
  if (jitsu_vm_state(q->vm) == JITSU_STATE_READY && !q->summoning) {
    forward(c);
    return;
  }
  if (q->n_waiting >= q->queue_max) {
    px->st.overflows++;
    char body[256];
    snprintf(body, sizeof(body),
             "vm '%s' is starting and %u requests already wait for it",
             jitsu_vm_name(q->vm), q->n_waiting);
    http_client_error(c, 503, "Service Unavailable", body);
    return;
  }
  if (!q->summoning) {
    int r = jitsu_vm_summon(q->vm, vm_summoned, q);
    if (r < 0) {
      char body[512];
      snprintf(body, sizeof(body), "vm '%s' cannot be summoned: %s",
               jitsu_vm_name(q->vm), jitsu_ctx_last_error(px->ctx));
      http_client_error(c, 503, "Service Unavailable", body);
      return;
    }
    q->summoning = true;
  }
  c->state = C_QUEUED;
  c->cold = true;
  c->queued_ms = uv_now(px->loop);
  px->st.cold++;
  jitsu_list_append(&q->waiting, &c->qlink);
  q->n_waiting++;
  client_timer_set(c, q->hold_ms, hold_expired);
}

void http_client_tunnel(http_client *c) {
  c->state = C_TUNNEL;
  c->px->st.tunnels++;
  client_timer_stop(c); /* bytes both ways, as long as they like */
  resume(c);            /* bytes read after the head go through */
}

void http_client_response_done(http_client *c, bool keep_alive) {
  if (c->state == C_CLOSING)
    return;
  release_hold(c);
  if (!keep_alive || !c->req_complete || c->px->draining) {
    client_finish(c);
    return;
  }
  c->state = C_HEAD;
  c->up = NULL;
  c->head_bytes = 0;
  c->head_started = c->stash_len > 0; /* a pipelined request is here */
  arm_head_timer(c, c->head_started);
  resume(c);
}

/* --- connections --- */

static http_client *client_new(http_proxy *px) {
  http_client *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return NULL;
  c->px = px;
  c->refs = 3; /* the connection and its two timers */
  uv_tcp_init(px->loop, &c->tcp);
  uv_timer_init(px->loop, &c->timer);
  uv_timer_init(px->loop, &c->send_timer);
  uv_timer_start(&c->send_timer, send_expired, 0, px->set.send_timeout);
  uv_timer_stop(&c->send_timer); /* its repeat stays: uv_timer_again */
  c->tcp.data = c->timer.data = c->send_timer.data = c;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  jitsu_list_append(&px->clients, &c->link);
  px->n_clients++;
  return c;
}

int http_proxy_adopt_fd(http_proxy *px, int fd) {
  http_client *c = client_new(px);
  if (c == NULL)
    return -ENOMEM;
  int r = uv_tcp_open(&c->tcp, fd);
  if (r < 0) {
    http_client_close(c);
    return r;
  }
  arm_head_timer(c, false);
  reading(c, true);
  return 0;
}

unsigned http_proxy_clients(http_proxy *px) {
  return px->n_clients;
}

void http_proxy_on_connection(uv_stream_t *server, int status) {
  http_proxy *px = server->data;
  if (status < 0)
    return;
  http_client *c = client_new(px);
  if (c == NULL)
    return;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
    http_client_close(c);
    return;
  }
  int len = sizeof(c->peer);
  uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &len);
  uv_tcp_nodelay(&c->tcp, 1);
  if (px->n_clients > px->set.max_conns) {
    http_client_error(c, 503, "Service Unavailable",
                      "too many connections; try again shortly");
    return;
  }
  arm_head_timer(c, false);
  reading(c, true);
}
