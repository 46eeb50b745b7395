/* jitsu-http: the internal header of the HTTP frontend. */
#ifndef JITSU_HTTP_H
#define JITSU_HTTP_H

#include <jitsu/jitsu.h>

#include <http_parser.h>
#include <stdbool.h>
#include <string.h>

typedef struct http_proxy http_proxy;

/* Limits and defaults, from [http] (documented in jitsu-http(8)). */
typedef struct http_settings {
  size_t max_header;         /* bytes of a request head: 431 beyond */
  uint64_t max_body;         /* bytes of a request body: 413 beyond; 0: none */
  uint64_t header_timeout;   /* ms to receive a head: 408 */
  uint64_t idle_timeout;     /* ms an idle keep-alive connection stays */
  uint64_t body_timeout;     /* ms between two reads of a request body */
  uint64_t body_min_rate;    /* bytes/s a body must average; 0: none */
  uint64_t response_timeout; /* ms the guest may be silent: 504 */
  uint64_t send_timeout;     /* ms a client may take nothing sent to it */
  unsigned max_conns;        /* client connections at once */
  unsigned queue;            /* default per-vm queue of waiting requests */
  uint64_t hold_ms;          /* default longest wait in that queue: 503 */
  unsigned retry_after;      /* seconds, in 503 answers */
  uint64_t drain_ms;         /* on SIGTERM: finish in-flight work this long */
  const char *default_vm;    /* for unknown hosts, or NULL: 404 */
} http_settings;

typedef struct http_config {
  http_settings settings;
  const char *const *listen; /* "HOST:PORT", NULL-terminated */
} http_config;

/* Declare the [http] and [vm] keys of jitsu-http (before loading a config);
 * 0 or a negative errno value. */
int http_declare_keys(jitsu_ctx *ctx);

int http_proxy_new(jitsu_ctx *ctx, const http_config *cfg, http_proxy **out,
                   char *why, size_t why_size);
/* Rebuild the routes from the vms (after a reload). */
void http_proxy_rebuild(http_proxy *px);
/* Stop accepting, let in-flight requests finish within drain_ms, then call
 * (done)(arg). */
void http_proxy_drain(http_proxy *px, void (*done)(void *arg), void *arg);
/* Serve a client already connected on (fd) (for the fuzz target). */
int http_proxy_adopt_fd(http_proxy *px, int fd);
/* Client connections open now. */
unsigned http_proxy_clients(http_proxy *px);
/* Free what is left once the loop has stopped. */
void http_proxy_destroy(http_proxy *px);

/* --- internals shared by the files of jitsu-http --- */

typedef struct http_client http_client;
typedef struct http_upstream http_upstream;

/* What jitsu-http keeps per vm: its queue, its idle upstream connections. */
typedef struct http_vmq {
  jitsu_list link;
  jitsu_vm *vm;       /* NULL: an upstream that runs by itself */
  char upstream[300]; /* its name, "HOST[/PREFIX]", when vm is NULL */
  bool removed;       /* a reload removes its vm: no routes to it */
  struct sockaddr_storage backend;
  unsigned queue_max;
  uint64_t hold_ms;
  jitsu_list waiting; /* http_client.qlink, oldest first */
  unsigned n_waiting;
  bool summoning;
  jitsu_list idle; /* http_upstream.plink */
  unsigned n_idle;
  /* New connections to the guest not yet answered on, and requests
   * waiting for one: a few at a time, as a guest behind QEMU's user
   * networking (its forward listens with a backlog of 1) has the SYNs of
   * a burst dropped, each costing a 1 s retransmission. */
  unsigned n_connecting;
  jitsu_list connect_wait; /* http_client.cwlink */
} http_vmq;

typedef enum client_state {
  C_HEAD,    /* reading a request head */
  C_QUEUED,  /* waiting for its guest */
  C_FORWARD, /* request and response under way */
  C_TUNNEL,  /* after 101: bytes both ways */
  C_CLOSING,
} client_state;

struct http_client {
  http_proxy *px;
  jitsu_list link;   /* px->clients */
  jitsu_list qlink;  /* vmq->waiting while queued */
  jitsu_list cwlink; /* vmq->connect_wait while waiting for a connection */
  uv_tcp_t tcp;
  uv_timer_t timer;        /* head, body, queue or response: one at a time */
  uint64_t due, armed_due; /* when it is due; when timer fires */
  void (*due_fn)(http_client *c); /* what then, or NULL */
  uv_timer_t send_timer;          /* runs while a write to the client waits */
  http_parser parser;
  client_state state;
  unsigned refs;
  bool reading, paused_by_upstream, corked;
  char *out; /* gathered while corked */
  size_t out_len, out_cap;
  struct sockaddr_storage peer;
  char peer_ip[64]; /* its address as text, once needed */
  /* The request being read or forwarded. */
  char *head; /* the head to send upstream, built as it is parsed */
  size_t head_len, head_cap, head_bytes;
  bool head_started; /* a byte of this request came: header-timeout runs */
  char field[256];   /* the header name being read */
  size_t field_len;
  bool in_value, want_host_value, want_value;
  char conn[256]; /* the Connection fields' tokens, to drop those fields */
  bool host_seen; /* a Host field came (a second one is an error) */
  bool counted;   /* this request is in the requests_total count */
  char host[256];
  char url[2048];
  size_t url_len;
  char xff[256];     /* an incoming X-Forwarded-For */
  char upgrade[128]; /* an incoming Upgrade */
  bool req_chunked, req_complete, req_upgrade, req_head_method;
  bool req_has_body;
  bool keep_alive; /* the client's, from its request */
  uint64_t req_body;
  uint64_t body_clock;     /* when the body began (less paused time) */
  uint64_t body_paused_at; /* when the guest stopped taking it, or 0 */
  uint64_t guest_seen;     /* the guest's last byte (or the request's end) */
  http_vmq *q;
  uint64_t queued_ms, cold_ms;
  bool cold;
  http_upstream *up;
  bool held; /* jitsu_vm_hold() is ours */
  /* A small body is read whole before the request goes anywhere (no
   * summon, no connection to the guest for a client that trickles it). */
  bool buffering, expect;
  char *body;
  size_t body_len;
  /* Bytes read past a request we are not ready to parse yet. */
  char *stash;
  size_t stash_len;
};

struct http_upstream {
  http_vmq *q;
  jitsu_list plink; /* q->idle while idle */
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_timer_t timer;
  http_parser parser;
  http_client *c;
  bool connected, closing, paused_by_client, resp_chunked, resp_done;
  bool client_keep_alive, plink_counted, reusable;
  bool connecting; /* counted in q->n_connecting */
  unsigned refs;   /* handles (2) + writes in flight */
  int status;
  char reason[128];
  char field[256];
  size_t field_len;
  bool in_value, skip_header;
  char conn[256]; /* the response's Connection tokens */
  char *head;
  size_t head_len, head_cap;
};

struct http_proxy {
  jitsu_ctx *ctx;
  uv_loop_t *loop;
  http_settings set;
  uv_tcp_t **listeners;
  size_t n_listeners;
  jitsu_list clients;
  unsigned n_clients;
  jitsu_list vmqs;
  struct http_route *routes;
  struct http_route **route_index; /* by host */
  size_t route_buckets;            /* a power of two */
  jitsu_hash_key route_key;        /* of the hosts' hash */
  bool draining;
  uv_timer_t *drain_timer;
  uv_timer_t *rebuild_timer;
  void (*drain_done)(void *);
  void *drain_arg;
  struct {
    double requests, responses[6], cold, overflows, hold_timeouts;
    double bad_requests, upstream_errors, tunnels;
    double body_timeouts, response_timeouts, send_timeouts;
    uint32_t wait_us[256];
    unsigned wait_n, wait_pos;
  } st;
};

/* Copy (n) bytes of (s) to (p); the end of the copy. (Heads are built
 * with these, not snprintf: it was a tenth of our CPU per request.) */
static inline char *http_put(char *p, const char *s, size_t n) {
  if (n > 0) /* (s) may be NULL then: an empty field */
    memcpy(p, s, n);
  return p + n;
}
#define HTTP_PUT(p, lit) http_put((p), (lit), sizeof(lit) - 1)

/* Append (len) bytes to the growing buffer (*buf, *len, *cap); -1 past
 * (max). */
int http_buf_add(char **buf, size_t *len, size_t *cap, const char *data,
                 size_t n, size_t max);

/* Write what the socket takes of (parts) (n of them, len bytes in all) at
 * once, with uv_try_write: no request, no copy, and none of the
 * epoll_ctl that libuv spends on each finished uv_write (per request, the
 * two writes' epoll_ctl cost more CPU than all our parsing). The bytes
 * written (0 also when the stream has queued writes, or on an error, for
 * uv_write to report). */
size_t http_write_now(uv_stream_t *s, const uv_buf_t *parts, size_t n);
/* Copy (parts) into (dst), less their first (skip) bytes. */
void http_copy_rest(char *dst, const uv_buf_t *parts, size_t n, size_t skip);

/* Client side (http_proxy.c), used by the upstream side. */
void http_client_send(http_client *c, const char *data, size_t len);
/* Gather sends (on) and write them at once (off). */
void http_client_cork(http_client *c, bool on);
/* Send (parts) as one write. */
void http_client_sendv(http_client *c, const uv_buf_t *parts, size_t n);
void http_client_error(http_client *c, int status, const char *reason,
                       const char *body);
/* The response is complete: keep the connection for the next request, or
 * close it. */
void http_client_response_done(http_client *c, bool keep_alive);
void http_client_tunnel(http_client *c);
/* The guest sent a byte of its answer: response-timeout starts over. */
void http_client_guest_active(http_client *c);
void http_client_close(http_client *c);
void http_client_backpressure(http_client *c, bool pause);
void http_client_unref(http_client *c);

/* Upstream side (http_upstream.c). */
/* Get an idle connection to (q)'s guest, or open one; it sends (c)'s head
 * once connected. */
void http_upstream_attach(http_vmq *q, http_client *c);
void http_upstream_send(http_upstream *u, const char *data, size_t len);
void http_upstream_sendv(http_upstream *u, const uv_buf_t *parts, size_t n);
void http_upstream_release(http_upstream *u, bool reuse);
void http_upstream_backpressure(http_upstream *u, bool pause);
void http_vmq_close_idle(http_vmq *q);

#define HTTP_HIGH_WATER (256 * 1024)

/* Server side (http_server.c), used by the client side. */
/* The vm that serves (host, url): the longest path prefix; or NULL. */
http_vmq *http_route_lookup(http_proxy *px, const char *host, const char *url);
/* A client connection closed: the drain may be over. */
void http_proxy_client_gone(http_proxy *px);
/* Accept a client on (server) (http_proxy.c). */
void http_proxy_on_connection(uv_stream_t *server, int status);

/* Whether (name) is a hop-by-hop header that a proxy must not pass on
 * (RFC 9110 7.6.1), or one we set ourselves. */
bool http_hop_by_hop(const char *name, size_t len);
/* The name of what (q) reaches: its vm's, or its upstream's. */
const char *http_vmq_name(const http_vmq *q);
/* Append (at, n) to the string (dst) of (size) bytes, cut to fit. */
void http_capture(char *dst, size_t size, const char *at, size_t n);
/* Append a piece (at, n) of a field's value to (list), a list of such
 * fields (Connection, X-Forwarded-For): ", " before the (first) piece of
 * a field that is not the list's first. */
void http_field_list_add(char *list, size_t size, const char *at, size_t n,
                         bool first);
/* Remove from the header lines (head, *len) ("Name: value\r\n" each)
 * those named in (list) (a Connection field's tokens, RFC 9110 7.6.1),
 * except (keep) (may be NULL). */
void http_drop_named(char *head, size_t *len, const char *list,
                     const char *keep);

#endif
