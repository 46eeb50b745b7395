/* jitsu-dns: forwarding to upstream resolvers with c-ares, on the loop. */
#include "dns.h"

#include <ares.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fwd_sock {
  struct fwd_sock *next;
  ares_socket_t fd;
  uv_poll_t poll;
  dns_forwarder *f;
} fwd_sock;

struct dns_forwarder {
  uv_loop_t *loop;
  ares_channel channel;
  uv_timer_t timer;
  fwd_sock *socks;
  unsigned inflight;
};

typedef struct fwd_req {
  dns_forwarder *f;
  dns_forward_cb cb;
  void *arg;
} fwd_req;

static void timer_arm(dns_forwarder *f);

static void sock_closed(uv_handle_t *h) {
  free(h->data);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  fwd_sock *s = h->data;
  dns_forwarder *f = s->f;
  ares_socket_t fd = s->fd;
  if (status < 0)
    events = UV_READABLE | UV_WRITABLE; /* let c-ares see the error */
  ares_process_fd(f->channel, events & UV_READABLE ? fd : ARES_SOCKET_BAD,
                  events & UV_WRITABLE ? fd : ARES_SOCKET_BAD);
  timer_arm(f);
}

/* c-ares opens, watches and closes its sockets through this. */
static void sock_state(void *data, ares_socket_t fd, int readable,
                       int writable) {
  dns_forwarder *f = data;
  fwd_sock **pp = &f->socks;
  while (*pp && (*pp)->fd != fd)
    pp = &(*pp)->next;
  fwd_sock *s = *pp;
  if (!readable && !writable) {
    if (s != NULL) {
      *pp = s->next;
      uv_poll_stop(&s->poll);
      uv_close((uv_handle_t *)&s->poll, sock_closed);
    }
    return;
  }
  if (s == NULL) {
    s = calloc(1, sizeof(*s));
    if (s == NULL)
      return;
    s->fd = fd;
    s->f = f;
    if (uv_poll_init_socket(f->loop, &s->poll, fd) < 0) {
      free(s);
      return;
    }
    s->poll.data = s;
    s->next = f->socks;
    f->socks = s;
  }
  uv_poll_start(&s->poll,
                (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0),
                poll_cb);
}

static void timer_cb(uv_timer_t *t) {
  dns_forwarder *f = t->data;
  ares_process_fd(f->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  timer_arm(f);
}

static void timer_arm(dns_forwarder *f) {
  if (f->inflight == 0) {
    uv_timer_stop(&f->timer);
    return;
  }
  struct timeval tv, *next = ares_timeout(f->channel, NULL, &tv);
  uint64_t ms =
      next ? (uint64_t)next->tv_sec * 1000 + (uint64_t)next->tv_usec / 1000 + 1
           : 100;
  uv_timer_start(&f->timer, timer_cb, ms, 0);
}

int dns_forwarder_new(uv_loop_t *loop, const char *servers, uint64_t timeout_ms,
                      dns_forwarder **out, char *why, size_t why_size) {
  static int library_ready;
  if (!library_ready && ares_library_init(ARES_LIB_INIT_ALL) == ARES_SUCCESS)
    library_ready = 1;
  dns_forwarder *f = calloc(1, sizeof(*f));
  if (f == NULL)
    return -ENOMEM;
  f->loop = loop;
  struct ares_options o;
  memset(&o, 0, sizeof(o));
  o.sock_state_cb = sock_state;
  o.sock_state_cb_data = f;
  o.timeout = (int)timeout_ms;
  o.tries = 2;
  /* Hand upstream SERVFAIL and REFUSED answers to the client as they are. */
  o.flags = ARES_FLAG_NOCHECKRESP;
  int r = ares_init_options(&f->channel, &o,
                            ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS |
                                ARES_OPT_TRIES | ARES_OPT_FLAGS);
  if (r != ARES_SUCCESS) {
    snprintf(why, why_size, "c-ares: %s", ares_strerror(r));
    free(f);
    return -EINVAL;
  }
  if (servers != NULL &&
      (r = ares_set_servers_ports_csv(f->channel, servers)) != ARES_SUCCESS) {
    snprintf(why, why_size, "forwarders '%s': %s", servers, ares_strerror(r));
    ares_destroy(f->channel);
    free(f);
    return -EINVAL;
  }
  uv_timer_init(loop, &f->timer);
  f->timer.data = f;
  *out = f;
  return 0;
}

static void answered(void *arg, int status, int timeouts, unsigned char *abuf,
                     int alen) {
  fwd_req *req = arg;
  (void)timeouts;
  req->f->inflight--;
  if (status == ARES_SUCCESS && abuf != NULL && alen > 0)
    req->cb(req->arg, abuf, (size_t)alen);
  else
    req->cb(req->arg, NULL, 0);
  free(req);
}

void dns_forward(dns_forwarder *f, const uint8_t *query, size_t len,
                 dns_forward_cb cb, void *arg) {
  fwd_req *req = malloc(sizeof(*req));
  if (req == NULL) {
    cb(arg, NULL, 0);
    return;
  }
  req->f = f;
  req->cb = cb;
  req->arg = arg;
  f->inflight++;
  ares_send(f->channel, query, (int)len, answered, req);
  timer_arm(f);
}

static void forwarder_closed(uv_handle_t *h) {
  free(h->data);
}

void dns_forwarder_free(dns_forwarder *f) {
  if (f == NULL)
    return;
  /* Pending requests complete with ARES_EDESTRUCTION: callers get NULL. */
  ares_destroy(f->channel);
  while (f->socks) {
    fwd_sock *s = f->socks;
    f->socks = s->next;
    uv_close((uv_handle_t *)&s->poll, sock_closed);
  }
  uv_close((uv_handle_t *)&f->timer, forwarder_closed);
}
