/* jitsu-http: the server around the clients: routes from the vms' keys,
 * the per-vm queues and pools, listeners, statistics, the drain; and the
 * small helpers both sides share. */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const jitsu_key http_section_keys[] = {
    {"listen", JITSU_KEY_STRING, JITSU_KEY_MULTI, "IP:PORT to serve on"},
    {"max-header", JITSU_KEY_SIZE, 0, "bytes of a request head (431)"},
    {"max-body", JITSU_KEY_SIZE, 0, "bytes of a request body (413); 0: none"},
    {"header-timeout", JITSU_KEY_DURATION, 0, "to receive a head (408)"},
    {"idle-timeout", JITSU_KEY_DURATION, 0, "an idle keep-alive connection"},
    {"upstream", JITSU_KEY_STRING, JITSU_KEY_MULTI,
     "HOST[/PREFIX] IP:PORT: a service that runs by itself"},
    {"body-timeout", JITSU_KEY_DURATION, 0,
     "between two reads of a request body (408)"},
    {"body-min-rate", JITSU_KEY_SIZE, 0,
     "bytes a second a request body must average (408); 0: none"},
    {"response-timeout", JITSU_KEY_DURATION, 0,
     "the guest's longest silence in its answer (504)"},
    {"send-timeout", JITSU_KEY_DURATION, 0,
     "a client's longest time taking nothing we send"},
    {"max-connections", JITSU_KEY_UINT, 0, "client connections at once"},
    {"queue", JITSU_KEY_UINT, 0, "requests waiting for one vm"},
    {"hold", JITSU_KEY_DURATION, 0, "longest wait for a vm (503)"},
    {"retry-after", JITSU_KEY_DURATION, 0, "Retry-After of 503 answers"},
    {"drain", JITSU_KEY_DURATION, 0, "on SIGTERM, time to finish requests"},
    {"default-vm", JITSU_KEY_STRING, 0, "the vm of unknown hosts (else 404)"},
};

static const jitsu_key http_vm_keys[] = {
    {"http-host", JITSU_KEY_STRING, JITSU_KEY_MULTI, "a Host that routes here"},
    {"http-path", JITSU_KEY_STRING, 0, "a path prefix that routes here"},
    {"http-backend", JITSU_KEY_STRING, 0, "IP:PORT of the guest's service"},
    {"http-queue", JITSU_KEY_UINT, 0, "requests waiting for it"},
    {"http-hold", JITSU_KEY_DURATION, 0, "longest wait for it"},
};

int http_declare_keys(jitsu_ctx *ctx) {
  int r = jitsu_config_declare_keys(ctx, "http", http_section_keys,
                                    sizeof(http_section_keys) /
                                        sizeof(*http_section_keys));
  if (r == 0)
    r = jitsu_config_declare_keys(ctx, "vm", http_vm_keys,
                                  sizeof(http_vm_keys) / sizeof(*http_vm_keys));
  return r;
}

#define MAX_ROUTE_HOST 256

typedef struct http_route {
  struct http_route *next;  /* px->routes: all of them */
  struct http_route *hnext; /* px->route_index: those of one host bucket */
  char host[MAX_ROUTE_HOST];
  char prefix[256];
  size_t prefix_len;
  http_vmq *q;
} http_route;

int http_buf_add(char **buf, size_t *len, size_t *cap, const char *data,
                 size_t n, size_t max) {
  if (n == 0)
    return 0; /* (data) may be NULL then: an empty header value */
  if (*len + n > max)
    return -1;
  if (*len + n > *cap) {
    size_t c = *cap ? *cap * 2 : 1024;
    while (c < *len + n)
      c *= 2;
    char *b = realloc(*buf, c);
    if (b == NULL)
      return -1;
    *buf = b;
    *cap = c;
  }
  memcpy(*buf + *len, data, n);
  *len += n;
  return 0;
}

size_t http_write_now(uv_stream_t *s, const uv_buf_t *parts, size_t n) {
  int r = uv_try_write(s, parts, (unsigned)n);
  return r > 0 ? (size_t)r : 0; /* an error: uv_write will report it */
}

void http_copy_rest(char *dst, const uv_buf_t *parts, size_t n, size_t skip) {
  for (size_t i = 0; i < n; i++) {
    size_t l = parts[i].len;
    if (skip >= l) {
      skip -= l;
      continue;
    }
    memcpy(dst, parts[i].base + skip, l - skip);
    dst += l - skip;
    skip = 0;
  }
}

bool http_hop_by_hop(const char *name, size_t len) {
  static const char *const hop[] = {
      "connection",
      "keep-alive",
      "proxy-connection",
      "transfer-encoding",
      "te",
      "trailer",
      "upgrade",
      "proxy-authenticate",
      "proxy-authorization",
      "x-forwarded-for",
      "x-forwarded-proto",
      "forwarded",
      "x-jitsu-cold-start",
  };
  for (size_t i = 0; i < sizeof(hop) / sizeof(*hop); i++)
    if (strlen(hop[i]) == len && strncasecmp(hop[i], name, len) == 0)
      return true;
  return false;
}

void http_capture(char *dst, size_t size, const char *at, size_t n) {
  size_t l = strlen(dst);
  if (l + n >= size)
    n = size - l - 1;
  memcpy(dst + l, at, n);
  dst[l + n] = '\0';
}

void http_field_list_add(char *list, size_t size, const char *at, size_t n,
                         bool first) {
  if (first && list[0] != '\0')
    http_capture(list, size, ", ", 2);
  http_capture(list, size, at, n);
}

/* Whether the token (name, len) is in the comma-separated (list). */
static bool in_token_list(const char *list, const char *name, size_t len) {
  const char *p = list;
  while (*p) {
    while (*p == ' ' || *p == '\t' || *p == ',')
      p++;
    size_t t = strcspn(p, ", \t");
    if (t == len && t > 0 && strncasecmp(p, name, len) == 0)
      return true;
    p += t;
  }
  return false;
}

void http_drop_named(char *head, size_t *len, const char *list,
                     const char *keep) {
  if (list[0] == '\0')
    return;
  size_t in = 0, out = 0;
  while (in < *len) {
    const char *line = head + in;
    const char *end = memchr(line, '\n', *len - in);
    size_t ll = end ? (size_t)(end - line) + 1 : *len - in;
    const char *colon = memchr(line, ':', ll);
    size_t nl = colon ? (size_t)(colon - line) : 0;
    bool drop = nl > 0 && in_token_list(list, line, nl) &&
                !(keep != NULL && strlen(keep) == nl &&
                  strncasecmp(keep, line, nl) == 0);
    if (!drop) {
      memmove(head + out, line, ll);
      out += ll;
    }
    in += ll;
  }
  *len = out;
}

static size_t host_bucket(const jitsu_hash_key *key, size_t buckets,
                          const char *host) {
  return (size_t)jitsu_hash(key, host, strlen(host)) & (buckets - 1);
}

/* The route of (host, url): the longest path prefix of that host. */
/* The route of host (h) (lower case) with the longest prefix of (url). */
static http_route *best_route(http_proxy *px, const char *h, const char *url) {
  http_route *best = NULL;
  for (http_route *r = px->route_index
                           ? px->route_index[host_bucket(&px->route_key,
                                                         px->route_buckets, h)]
                           : NULL;
       r; r = r->hnext)
    if (strcmp(r->host, h) == 0 &&
        strncmp(url, r->prefix, r->prefix_len) == 0 &&
        (best == NULL || r->prefix_len > best->prefix_len))
      best = r;
  return best;
}

/* Routes match the Host as sent with its port (http-host = app.test:8080),
 * then without it (http-host = app.test: any port); a final dot of the
 * name is ignored. */
http_vmq *http_route_lookup(http_proxy *px, const char *host, const char *url) {
  char h[MAX_ROUTE_HOST], full[MAX_ROUTE_HOST];
  size_t i = 0;
  for (; host[i] && host[i] != ':' && i < sizeof(h) - 1; i++)
    h[i] = (char)(host[i] >= 'A' && host[i] <= 'Z' ? host[i] + 32 : host[i]);
  h[i] = '\0';
  if (i > 0 && h[i - 1] == '.')
    h[i - 1] = '\0';
  http_route *best = NULL;
  if (host[i] == ':' &&
      snprintf(full, sizeof(full), "%s%s", h, host + i) < (int)sizeof(full))
    best = best_route(px, full, url);
  if (best == NULL)
    best = best_route(px, h, url);
  if (best != NULL)
    return best->q;
  if (px->set.default_vm != NULL)
    for (http_route *r = px->routes; r; r = r->next)
      if (strcmp(http_vmq_name(r->q), px->set.default_vm) == 0)
        return r->q;
  return NULL;
}

static void on_vm(jitsu_vm *vm, jitsu_vm_event ev, void *arg);

/* The drain is over: nothing in flight, or out of time. */
static void drain_finish(http_proxy *px) {
  if (px->drain_done == NULL)
    return;
  void (*done)(void *) = px->drain_done;
  px->drain_done = NULL;
  uv_timer_stop(px->drain_timer);
  /* Idle upstream connections go too: their idle timers (POOL_IDLE_MS)
   * would hold the loop, and the exit, for up to 30 s. */
  for (jitsu_list *l = px->vmqs.next; l != &px->vmqs; l = l->next)
    http_vmq_close_idle(JITSU_CONTAINER_OF(l, http_vmq, link));
  /* (done) may free the context: let go of it first. */
  jitsu_ctx_off_vm(px->ctx, on_vm, px);
  px->ctx = NULL;
  done(px->drain_arg);
}

void http_proxy_client_gone(http_proxy *px) {
  if (px->draining && px->n_clients == 0)
    drain_finish(px);
}

const char *http_vmq_name(const http_vmq *q) {
  return q->vm != NULL ? jitsu_vm_name(q->vm) : q->upstream;
}

/* The queue of (vm), or of the upstream (name) when (vm) is NULL. */
static http_vmq *vmq_of(http_proxy *px, jitsu_vm *vm, const char *name) {
  for (jitsu_list *l = px->vmqs.next; l != &px->vmqs; l = l->next) {
    http_vmq *q = JITSU_CONTAINER_OF(l, http_vmq, link);
    if (q->vm == vm && (vm != NULL || strcmp(q->upstream, name) == 0))
      return q;
  }
  http_vmq *q = calloc(1, sizeof(*q));
  if (q == NULL)
    return NULL;
  q->vm = vm;
  if (vm == NULL)
    snprintf(q->upstream, sizeof(q->upstream), "%s", name);
  jitsu_list_init(&q->waiting);
  jitsu_list_init(&q->idle);
  jitsu_list_init(&q->connect_wait);
  jitsu_list_append(&px->vmqs, &q->link);
  return q;
}

static int parse_backend(const char *text, struct sockaddr_storage *ss) {
  char buf[128];
  snprintf(buf, sizeof(buf), "%s", text);
  char *colon = strrchr(buf, ':');
  if (colon == NULL)
    return -1;
  *colon = '\0';
  int port = atoi(colon + 1);
  char *host = buf;
  if (host[0] == '[' && colon[-1] == ']') {
    host++;
    colon[-1] = '\0';
  }
  if (port <= 0 || port > 65535)
    return -1;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0 ||
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
    return 0;
  return -1;
}

typedef struct build {
  http_proxy *px;
  http_route *routes;
  char *why;
  size_t why_size;
  int err;
} build;

/* A route from (host, hl) (lower-cased here) and (prefix) (NULL: "/") to
 * (q), onto b->routes. */
static int add_route(build *b, http_vmq *q, const char *host, size_t hl,
                     const char *prefix) {
  http_route *r = calloc(1, sizeof(*r));
  if (r == NULL)
    return -ENOMEM;
  size_t k = 0;
  for (; k < hl && k < sizeof(r->host) - 1; k++)
    r->host[k] =
        (char)(host[k] >= 'A' && host[k] <= 'Z' ? host[k] + 32 : host[k]);
  snprintf(r->prefix, sizeof(r->prefix), "%s", prefix ? prefix : "/");
  r->prefix_len = strlen(r->prefix);
  r->q = q;
  r->next = b->routes;
  b->routes = r;
  return 0;
}

static int add_routes(jitsu_vm *vm, void *arg) {
  build *b = arg;
  http_proxy *px = b->px;
  const char *v, *host;
  if (jitsu_vm_param(vm, "http-host", 0) == NULL)
    return 0;
  http_vmq *q = vmq_of(px, vm, NULL);
  if (q == NULL)
    return b->err = -ENOMEM;
  if (q->removed)
    return 0; /* going: it takes no new requests */
  const char *backend = jitsu_vm_param(vm, "http-backend", 0);
  if (backend == NULL)
    backend = jitsu_vm_param(vm, "address", 0);
  if (backend == NULL || parse_backend(backend, &q->backend) < 0) {
    snprintf(b->why, b->why_size,
             "vm '%s': http-backend (or address) must be IP:PORT, not '%s'",
             jitsu_vm_name(vm), backend ? backend : "");
    jitsu_vm_blame(vm, b->why, b->why_size);
    return b->err = -EINVAL;
  }
  q->queue_max = px->set.queue;
  if ((v = jitsu_vm_param(vm, "http-queue", 0)) != NULL)
    q->queue_max = (unsigned)strtoul(v, NULL, 10);
  q->hold_ms = px->set.hold_ms;
  uint64_t ms;
  if ((v = jitsu_vm_param(vm, "http-hold", 0)) != NULL &&
      jitsu_parse_duration(v, &ms) == 0)
    q->hold_ms = ms;
  const char *prefix = jitsu_vm_param(vm, "http-path", 0);
  for (size_t i = 0; (host = jitsu_vm_param(vm, "http-host", i)); i++)
    if (add_route(b, q, host, strlen(host), prefix) < 0)
      return b->err = -ENOMEM;
  return 0;
}

/* [http] upstream = HOST[/PREFIX] IP:PORT: routes to a service that runs
 * by itself (nothing to summon, the same proxy path). */
static int add_upstreams(build *b) {
  http_proxy *px = b->px;
  const char *v;
  for (size_t i = 0; (v = jitsu_config_get(px->ctx, "http", "upstream", i));
       i++) {
    const char *sp = strpbrk(v, " \t");
    const char *addr = sp;
    while (addr != NULL && (*addr == ' ' || *addr == '\t'))
      addr++;
    size_t nl = sp ? (size_t)(sp - v) : 0;
    const char *slash = sp ? memchr(v, '/', nl) : NULL;
    size_t hl = slash ? (size_t)(slash - v) : nl;
    char name[300], prefix[256];
    struct sockaddr_storage ss;
    if (sp == NULL || hl == 0 || nl >= sizeof(name) ||
        (slash && (size_t)(v + nl - slash) >= sizeof(prefix)) ||
        parse_backend(addr, &ss) < 0) {
      snprintf(b->why, b->why_size,
               "upstream '%s': expected HOST[/PREFIX] IP:PORT", v);
      jitsu_config_blame(px->ctx, "http", "upstream", v, b->why, b->why_size);
      return b->err = -EINVAL;
    }
    snprintf(name, sizeof(name), "%.*s", (int)nl, v);
    if (slash)
      snprintf(prefix, sizeof(prefix), "%.*s", (int)(v + nl - slash), slash);
    http_vmq *q = vmq_of(px, NULL, name);
    if (q == NULL)
      return b->err = -ENOMEM;
    q->backend = ss;
    q->queue_max = px->set.queue;
    q->hold_ms = px->set.hold_ms;
    if (add_route(b, q, v, hl, slash ? prefix : NULL) < 0)
      return b->err = -ENOMEM;
  }
  return 0;
}

static void free_routes(http_route *r) {
  while (r) {
    http_route *next = r->next;
    free(r);
    r = next;
  }
}

/* Index (routes) by host into (*index, *buckets): lookups in O(1). Two
 * routes with the same host and prefix are an error in (why). */
static int index_routes(const jitsu_hash_key *key, http_route *routes,
                        http_route ***index, size_t *buckets, char *why,
                        size_t why_size) {
  size_t n = 0;
  for (http_route *r = routes; r; r = r->next)
    n++;
  size_t nb = 16;
  while (nb < 2 * n)
    nb *= 2;
  http_route **idx = calloc(nb, sizeof(*idx));
  if (idx == NULL)
    return -ENOMEM;
  for (http_route *r = routes; r; r = r->next) {
    http_route **head = &idx[host_bucket(key, nb, r->host)];
    for (http_route *o = *head; o; o = o->hnext)
      if (strcmp(o->host, r->host) == 0 && strcmp(o->prefix, r->prefix) == 0) {
        snprintf(why, why_size, "%s '%s': http-host %s%s is %s '%s''s",
                 r->q->vm ? "vm" : "upstream", http_vmq_name(r->q), r->host,
                 r->prefix, o->q->vm ? "vm" : "upstream", http_vmq_name(o->q));
        if (r->q->vm != NULL)
          jitsu_vm_blame(r->q->vm, why, why_size);
        free(idx);
        return -EINVAL;
      }
    r->hnext = *head;
    *head = r;
  }
  *index = idx;
  *buckets = nb;
  return 0;
}

static int build_routes(http_proxy *px, char *why, size_t why_size) {
  build b = {px, NULL, why, why_size, 0};
  http_route **index = NULL;
  size_t buckets = 0;
  jitsu_vm_foreach(px->ctx, add_routes, &b);
  if (b.err == 0)
    add_upstreams(&b);
  if (b.err < 0 || (b.err = index_routes(&px->route_key, b.routes, &index,
                                         &buckets, why, why_size)) < 0) {
    free_routes(b.routes);
    return b.err;
  }
  free_routes(px->routes);
  free(px->route_index);
  px->routes = b.routes;
  px->route_index = index;
  px->route_buckets = buckets;
  return 0;
}

/* Take (r) out of the host index. */
static void unindex_route(http_proxy *px, http_route *r) {
  size_t b = host_bucket(&px->route_key, px->route_buckets, r->host);
  for (http_route **pp = &px->route_index[b]; *pp; pp = &(*pp)->hnext)
    if (*pp == r) {
      *pp = r->hnext;
      return;
    }
}

void http_proxy_rebuild(http_proxy *px) {
  char why[512] = "";
  if (build_routes(px, why, sizeof(why)) < 0)
    fprintf(stderr, "jitsu-http: routes not rebuilt, the old ones stay: %s\n",
            why);
}

static void rebuild_fired(uv_timer_t *t) {
  http_proxy_rebuild(t->data);
}

static void on_vm(jitsu_vm *vm, jitsu_vm_event ev, void *arg) {
  http_proxy *px = arg;
  if (ev == JITSU_VM_REMOVING) {
    /* Its routes go now (requests in flight finish); the rest when it is
     * undefined. */
    http_vmq *q = vmq_of(px, vm, NULL);
    if (q != NULL) {
      q->removed = true;
      http_proxy_rebuild(px);
    }
    return;
  }
  if (ev != JITSU_VM_UNDEFINING) {
    /* A reload defines many: rebuild the routes once, soon. */
    uv_timer_start(px->rebuild_timer, rebuild_fired, 0, 0);
    return;
  }
  /* The vm goes: its waiting requests get 502, its routes and pool go. */
  for (jitsu_list *l = px->vmqs.next; l != &px->vmqs; l = l->next) {
    http_vmq *q = JITSU_CONTAINER_OF(l, http_vmq, link);
    if (q->vm != vm)
      continue;
    while (q->waiting.next != &q->waiting) {
      http_client *c = JITSU_CONTAINER_OF(q->waiting.next, http_client, qlink);
      http_client_error(c, 502, "Bad Gateway", "the vm was removed");
    }
    for (jitsu_list *k = px->clients.next; k != &px->clients;) {
      http_client *c = JITSU_CONTAINER_OF(k, http_client, link);
      k = k->next;
      if (c->q == q)
        http_client_close(c);
    }
    http_route **pp = &px->routes;
    while (*pp) {
      if ((*pp)->q == q) {
        http_route *r = *pp;
        *pp = r->next;
        unindex_route(px, r);
        free(r);
      } else {
        pp = &(*pp)->next;
      }
    }
    http_vmq_close_idle(q);
    jitsu_list_remove(&q->link);
    free(q);
    return;
  }
}

static double wait_pct(http_proxy *px, double p) {
  unsigned n = px->st.wait_n;
  if (n == 0)
    return 0;
  uint32_t v[256];
  memcpy(v, px->st.wait_us, n * sizeof(uint32_t));
  for (unsigned i = 1; i < n; i++)
    for (unsigned j = i; j > 0 && v[j - 1] > v[j]; j--) {
      uint32_t x = v[j];
      v[j] = v[j - 1];
      v[j - 1] = x;
    }
  size_t rank = (size_t)(p * n + 0.999999);
  return v[rank ? rank - 1 : 0] / 1000.0;
}

static void http_stats(jitsu_stat_fn emit, void *emit_arg, void *arg) {
  http_proxy *px = arg;
  emit(emit_arg, "requests_total", px->st.requests);
  static const char *const cls[] = {"", "1xx", "2xx", "3xx", "4xx", "5xx"};
  for (int i = 1; i <= 5; i++) {
    char name[32];
    snprintf(name, sizeof(name), "responses_%s_total", cls[i]);
    emit(emit_arg, name, px->st.responses[i]);
  }
  emit(emit_arg, "cold_requests_total", px->st.cold);
  emit(emit_arg, "queue_overflows_total", px->st.overflows);
  emit(emit_arg, "hold_timeouts_total", px->st.hold_timeouts);
  emit(emit_arg, "bad_requests_total", px->st.bad_requests);
  emit(emit_arg, "upstream_errors_total", px->st.upstream_errors);
  emit(emit_arg, "tunnels_total", px->st.tunnels);
  emit(emit_arg, "body_timeouts_total", px->st.body_timeouts);
  emit(emit_arg, "response_timeouts_total", px->st.response_timeouts);
  emit(emit_arg, "send_timeouts_total", px->st.send_timeouts);
  emit(emit_arg, "connections", px->n_clients);
  emit(emit_arg, "queue_wait_p50_ms", wait_pct(px, 0.5));
  emit(emit_arg, "queue_wait_p90_ms", wait_pct(px, 0.9));
  emit(emit_arg, "queue_wait_p99_ms", wait_pct(px, 0.99));
}

static const jitsu_stat_help http_stats_help[] = {
    {"requests_total", "Requests received (also those refused)."},
    {"responses_*", "Responses sent, by status class."},
    {"cold_requests_total", "Requests that waited for their guest to start."},
    {"queue_overflows_total", "Requests refused: their vm's queue was full."},
    {"hold_timeouts_total", "Requests whose guest was not ready in time."},
    {"bad_requests_total", "Requests refused as malformed or too large."},
    {"upstream_errors_total", "Requests failed at the guest (502, 504)."},
    {"tunnels_total", "Upgrade tunnels opened (101)."},
    {"body_timeouts_total", "Request bodies cut for body-timeout or rate."},
    {"response_timeouts_total", "Guests silent for response-timeout."},
    {"send_timeouts_total", "Clients that read nothing for send-timeout."},
    {"connections", "Client connections open now."},
    {"queue_wait_p50_ms", "Median wait of requests for their guest."},
    {"queue_wait_p90_ms", "90th percentile wait for the guest."},
    {"queue_wait_p99_ms", "99th percentile wait for the guest."},
};

void http_proxy_count_response(http_proxy *px, int status);
void http_proxy_count_response(http_proxy *px, int status) {
  if (status >= 100 && status < 600)
    px->st.responses[status / 100]++;
}

static int listen_one(http_proxy *px, const char *spec, char *why,
                      size_t why_size) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  if (parse_backend(spec, &ss) < 0) {
    snprintf(why, why_size, "listen '%s': expected IP:PORT", spec);
    return -EINVAL;
  }
  uv_tcp_t *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return -ENOMEM;
  uv_tcp_init(px->loop, t);
  t->data = px;
  px->listeners[px->n_listeners++] = t;
  int r = uv_tcp_bind(t, (struct sockaddr *)&ss,
                      ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
  if (r == 0)
    r = uv_listen((uv_stream_t *)t, 511, http_proxy_on_connection);
  if (r < 0) {
    snprintf(why, why_size, "listen '%s': %s", spec, uv_strerror(r));
    return r;
  }
  return 0;
}

int http_proxy_new(jitsu_ctx *ctx, const http_config *cfg, http_proxy **out,
                   char *why, size_t why_size) {
  http_proxy *px = calloc(1, sizeof(*px));
  if (px == NULL)
    return -ENOMEM;
  *out = px;
  px->ctx = ctx;
  jitsu_hash_key_random(&px->route_key); /* requests choose the hosts */
  px->loop = jitsu_ctx_loop(ctx);
  px->set = cfg->settings;
  jitsu_list_init(&px->clients);
  jitsu_list_init(&px->vmqs);
  px->drain_timer = calloc(1, sizeof(*px->drain_timer));
  px->rebuild_timer = calloc(1, sizeof(*px->rebuild_timer));
  if (px->drain_timer == NULL || px->rebuild_timer == NULL)
    return -ENOMEM;
  uv_timer_init(px->loop, px->rebuild_timer);
  px->rebuild_timer->data = px;
  uv_timer_init(px->loop, px->drain_timer);
  px->drain_timer->data = px;
  size_t n = 0;
  while (cfg->listen[n])
    n++;
  px->listeners = calloc(n + 1, sizeof(*px->listeners));
  if (px->listeners == NULL)
    return -ENOMEM;
  int r = build_routes(px, why, why_size);
  if (r < 0)
    return r;
  for (size_t i = 0; i < n; i++)
    if ((r = listen_one(px, cfg->listen[i], why, why_size)) < 0) {
      jitsu_config_blame(ctx, "http", "listen", cfg->listen[i], why, why_size);
      return r;
    }
  if (jitsu_ctx_on_vm(ctx, on_vm, px) < 0)
    return -ENOMEM;
  if (jitsu_control_add_stats(ctx, "http", http_stats, px) == 0)
    jitsu_control_describe_stats(ctx, "http", http_stats_help,
                                 sizeof(http_stats_help) /
                                     sizeof(*http_stats_help));
  return 0;
}

static void free_handle(uv_handle_t *h) {
  free(h);
}

static void drain_expired(uv_timer_t *t) {
  http_proxy *px = t->data;
  while (px->clients.next != &px->clients)
    http_client_close(JITSU_CONTAINER_OF(px->clients.next, http_client, link));
  drain_finish(px);
}

void http_proxy_drain(http_proxy *px, void (*done)(void *arg), void *arg) {
  px->draining = true;
  for (size_t i = 0; i < px->n_listeners; i++)
    uv_close((uv_handle_t *)px->listeners[i], free_handle);
  px->n_listeners = 0;
  px->drain_done = done;
  px->drain_arg = arg;
  /* Idle keep-alive connections go now; the others once answered. */
  for (jitsu_list *l = px->clients.next; l != &px->clients;) {
    http_client *c = JITSU_CONTAINER_OF(l, http_client, link);
    l = l->next;
    if (c->state == C_HEAD && !c->head_started && c->stash_len == 0)
      http_client_close(c);
  }
  uv_timer_start(px->drain_timer, drain_expired, px->set.drain_ms, 0);
  if (px->n_clients == 0)
    drain_finish(px);
}

void http_proxy_destroy(http_proxy *px) {
  if (px == NULL)
    return;
  if (px->ctx != NULL)
    jitsu_ctx_off_vm(px->ctx, on_vm, px);
  uv_close((uv_handle_t *)px->drain_timer, free_handle);
  uv_close((uv_handle_t *)px->rebuild_timer, free_handle);
  while (px->vmqs.next != &px->vmqs) {
    http_vmq *q = JITSU_CONTAINER_OF(px->vmqs.next, http_vmq, link);
    http_vmq_close_idle(q);
    jitsu_list_remove(&q->link);
    free(q);
  }
  free_routes(px->routes);
  free(px->route_index);
  for (size_t i = 0; i < px->n_listeners; i++)
    uv_close((uv_handle_t *)px->listeners[i], free_handle);
  free(px->listeners);
  free(px);
}
