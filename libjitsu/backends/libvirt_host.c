/*
 * The libvirt backend's hosts: one open connection per (jitsu ctx, URI),
 * used by jobs that run libvirt's blocking calls on libuv's worker threads
 * and finish on the loop. A connection has keepalive and a close callback;
 * when it breaks, the host is reconnected with back-off and its guests'
 * states are read again (they keep running meanwhile).
 */
#include "libvirt.h"

#include <fcntl.h>
#include <libxml/uri.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <libvirt/virterror.h>

static jitsu_list hosts = {&hosts, &hosts}; /* loop threads only */

enum { KEEPALIVE_INTERVAL_S = 5, KEEPALIVE_COUNT = 3 };
enum { RETRY_FIRST_MS = 250, RETRY_MAX_MS = 30000 };
enum { PROBE_MS = 3000 }; /* a remote host's TCP answer, before libvirt */

int lv_fail(lvjob *j, const char *what) {
  const char *msg = virGetLastErrorMessage();
  snprintf(j->err, sizeof(j->err), "%s%s%s", what ? what : "", what ? ": " : "",
           msg ? msg : "unknown libvirt error");
  j->rc = -EIO;
  return j->rc;
}

/* ---- libvirt's callbacks (any thread) ----------------------------------- */

typedef struct lvevent {
  lvhost *h;
  int event, detail;
  char name[];
} lvevent;

static void event_deliver(void *arg) {
  lvevent *e = arg;
  lv_domain_event(e->h, e->name, e->event, e->detail);
  free(e);
}

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event,
                        int detail, void *opaque) {
  lvhost *h = opaque;
  const char *name = virDomainGetName(dom);
  if (name == NULL)
    return 0;
  size_t n = strlen(name) + 1;
  lvevent *e = malloc(sizeof(*e) + n);
  if (e == NULL)
    return 0;
  e->h = h;
  e->event = event;
  e->detail = detail;
  memcpy(e->name, name, n);
  lv_loop_post(h->l, event_deliver, e, h);
  return 0;
}

typedef struct lvclosed {
  lvhost *h;
  int reason;
} lvclosed;

static void closed_deliver(void *arg) {
  lvclosed *c = arg;
  lvhost *h = c->h;
  static const char *const why[] = {"an I/O error", "the daemon closed it",
                                    "keepalive timed out",
                                    "a client closed it"};
  char text[64];
  snprintf(text, sizeof(text), "connection lost (%s)",
           c->reason >= 0 && c->reason < 4 ? why[c->reason] : "unknown");
  lv_host_lost(h, text);
  free(c);
}

static void on_close(virConnectPtr conn, int reason, void *opaque) {
  lvhost *h = opaque;
  atomic_store(&h->broken, true);
  lvclosed *c = malloc(sizeof(*c));
  if (c == NULL)
    return;
  c->h = h;
  c->reason = reason;
  lv_loop_post(h->l, closed_deliver, c, h);
}

/* ---- the connection (worker threads) ----------------------------------- */

/* libvirt's connect to a remote host has no time limit: a host that drops
 * packets would hold a worker thread for the kernel's TCP time-out (about
 * two minutes). Ask the host's TCP port first, for at most PROBE_MS: no
 * answer is an error of ours; any answer (even a refusal) lets libvirt
 * connect and say what it says. Local URIs are not probed. */
static int probe(lvjob *j, const char *uri) {
  xmlURIPtr u = xmlParseURI(uri);
  if (u == NULL)
    return 0; /* libvirt will say what is wrong with it */
  const char *plus = u->scheme ? strchr(u->scheme, '+') : NULL;
  const char *transport = plus ? plus + 1 : (u->server ? "tls" : NULL);
  int port = u->port;
  if (transport == NULL || u->server == NULL || u->server[0] == '\0' ||
      (strcmp(transport, "tcp") != 0 && strcmp(transport, "tls") != 0 &&
       strncmp(transport, "ssh", 3) != 0 &&
       strncmp(transport, "libssh", 6) != 0)) {
    xmlFreeURI(u);
    return 0;
  }
  if (port <= 0)
    port = strcmp(transport, "tcp") == 0   ? 16509
           : strcmp(transport, "tls") == 0 ? 16514
                                           : 22;
  char service[8], host[256];
  snprintf(service, sizeof(service), "%d", port);
  snprintf(host, sizeof(host), "%s", u->server);
  xmlFreeURI(u);
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
  if (getaddrinfo(host, service, &hints, &ai) != 0 || ai == NULL)
    return 0; /* libvirt says it cannot resolve it */
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int answered = 1;
  if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 &&
      errno == EINPROGRESS) {
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    answered = poll(&p, 1, PROBE_MS) == 1;
  }
  if (fd >= 0)
    close(fd);
  freeaddrinfo(ai);
  if (answered)
    return 0;
  snprintf(j->err, sizeof(j->err), "no answer from %s port %d within %d ms",
           host, port, PROBE_MS);
  j->rc = -ETIMEDOUT;
  return j->rc;
}

/* Under h->mu. */
static void conn_drop(lvhost *h) {
  if (h->conn == NULL)
    return;
  if (h->event_id >= 0)
    virConnectDomainEventDeregisterAny(h->conn, h->event_id);
  virConnectUnregisterCloseCallback(h->conn, on_close);
  virConnectClose(h->conn);
  h->conn = NULL;
  h->event_id = -1;
}

virConnectPtr lv_conn(lvjob *j) {
  lvhost *h = j->host;
  lv_loop_enter(h->l);
  pthread_mutex_lock(&h->mu);
  if (h->conn != NULL &&
      (atomic_load(&h->broken) || virConnectIsAlive(h->conn) != 1))
    conn_drop(h);
  if (h->conn == NULL) {
    virConnectPtr c = probe(j, h->uri) < 0 ? NULL : virConnectOpen(h->uri);
    if (c == NULL) {
      if (j->rc == 0)
        lv_fail(j, NULL);
      j->unreachable = true;
      pthread_mutex_unlock(&h->mu);
      return NULL;
    }
    /* Remote connections only: keepalive needs a daemon at the other end. */
    if (virConnectSetKeepAlive(c, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT) < 0)
      virResetLastError();
    if (virConnectRegisterCloseCallback(c, on_close, h, NULL) < 0)
      virResetLastError();
    h->event_id = virConnectDomainEventRegisterAny(
        c, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
        VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), h, NULL);
    if (h->event_id < 0) {
      lv_fail(j, "cannot follow the host's domain events");
      virConnectUnregisterCloseCallback(c, on_close);
      virConnectClose(c);
      pthread_mutex_unlock(&h->mu);
      return NULL;
    }
    atomic_store(&h->broken, false);
    h->conn = c;
  }
  virConnectPtr c = h->conn;
  virConnectRef(c);
  pthread_mutex_unlock(&h->mu);
  return c;
}

/* ---- jobs --------------------------------------------------------------- */

static void job_run(uv_work_t *w) {
  lvjob *j = JITSU_CONTAINER_OF(w, lvjob, work);
  lv_loop_enter(j->host->l);
  j->rc = 0;
  j->err[0] = '\0';
  j->run(j);
}

static void job_done(uv_work_t *w, int status) {
  lvjob *j = JITSU_CONTAINER_OF(w, lvjob, work);
  lvhost *h = j->host;
  if (status == UV_ECANCELED && j->rc == 0) {
    j->rc = -ECANCELED;
    snprintf(j->err, sizeof(j->err), "cancelled");
  }
  if (j->unreachable)
    lv_host_lost(h, j->err);
  j->done(j);
  lv_host_put(h);
}

int lv_job_submit(lvhost *h, lvjob *j) {
  j->host = h;
  h->refs++;
  int r = uv_queue_work(lv_loop_uv(h->l), &j->work, job_run, job_done);
  if (r < 0) {
    h->refs--;
  }
  return r;
}

/* ---- reconnection ------------------------------------------------------- */

static void retry_schedule(lvhost *h);

static void reconnect_run(lvjob *j) {
  virConnectPtr c = lv_conn(j);
  if (c != NULL)
    virConnectClose(c);
}

static void reconnect_done(lvjob *j) {
  lvhost *h = j->host;
  int rc = j->rc;
  char err[sizeof(j->err)];
  snprintf(err, sizeof(err), "%s", j->err);
  free(j);
  h->reconnecting = false;
  if (h->ctx == NULL)
    return; /* the ctx is gone */
  if (rc == 0) {
    jitsu_ctx_log(h->ctx, JITSU_LOG_INFO,
                  "libvirt: host %s: reconnected after %u attempt%s", h->uri,
                  h->tries, h->tries == 1 ? "" : "s");
    h->down = false;
    h->tries = 0;
    h->why[0] = '\0';
    lv_host_back(h);
    return;
  }
  snprintf(h->why, sizeof(h->why), "%s", err);
  if (h->tries == 1 || h->tries % 10 == 0)
    jitsu_ctx_log(h->ctx, JITSU_LOG_WARNING,
                  "libvirt: host %s is down (%s); retrying (attempt %u)",
                  h->uri, err, h->tries);
  retry_schedule(h);
}

static void retry_fire(uv_timer_t *t) {
  lvhost *h = t->data;
  if (h == NULL || h->reconnecting || !h->down || h->ctx == NULL)
    return;
  lvjob *j = calloc(1, sizeof(*j));
  if (j == NULL)
    return;
  j->run = reconnect_run;
  j->done = reconnect_done;
  h->tries++;
  h->reconnecting = true;
  if (lv_job_submit(h, j) < 0) {
    h->reconnecting = false;
    free(j);
  }
}

static void retry_schedule(lvhost *h) {
  if (h->retry == NULL) {
    h->retry = malloc(sizeof(*h->retry));
    if (h->retry == NULL)
      return;
    uv_timer_init(lv_loop_uv(h->l), h->retry);
    h->retry->data = h;
  }
  uint64_t ms = RETRY_FIRST_MS;
  for (unsigned i = 1; i < h->tries && ms < RETRY_MAX_MS; i++)
    ms *= 2;
  if (ms > RETRY_MAX_MS)
    ms = RETRY_MAX_MS;
  uv_timer_start(h->retry, retry_fire, ms, 0);
}

void lv_host_lost(lvhost *h, const char *why) {
  if (h->down)
    return; /* already known; the reconnection runs */
  h->down = true;
  snprintf(h->why, sizeof(h->why), "%s", why);
  if (h->ctx != NULL) {
    jitsu_ctx_log(h->ctx, JITSU_LOG_WARNING,
                  "libvirt: host %s: %s; reconnecting", h->uri, h->why);
    h->tries = 0;
    lv_vms_report(h);
    retry_schedule(h);
  }
}

/* ---- hosts -------------------------------------------------------------- */

lvhost *lv_host_get(jitsu_ctx *ctx, const char *uri) {
  for (jitsu_list *i = hosts.next; i != &hosts; i = i->next) {
    lvhost *h = JITSU_CONTAINER_OF(i, lvhost, link);
    if (h->ctx == ctx && strcmp(h->uri, uri) == 0) {
      h->refs++;
      h->users++;
      return h;
    }
  }
  lvhost *h = calloc(1, sizeof(*h));
  if (h == NULL || (h->uri = strdup(uri)) == NULL ||
      (h->l = lv_loop_get(jitsu_ctx_loop(ctx))) == NULL) {
    if (h != NULL)
      free(h->uri);
    free(h);
    return NULL;
  }
  h->ctx = ctx;
  jitsu_list_init(&h->dying);
  h->event_id = -1;
  h->refs = 1;
  h->users = 1;
  pthread_mutex_init(&h->mu, NULL);
  jitsu_list_append(&hosts, &h->link);
  return h;
}

static void host_free(lvhost *h) {
  lv_loop_purge(h->l, h);
  lv_loop_put(h->l);
  pthread_mutex_destroy(&h->mu);
  free(h->uri);
  free(h);
}

static void close_run(lvjob *j) {
  lvhost *h = j->host;
  pthread_mutex_lock(&h->mu);
  conn_drop(h);
  pthread_mutex_unlock(&h->mu);
}

static void close_done(lvjob *j) {
  free(j);
}

static void retry_closed(uv_handle_t *t) {
  free(t);
}

void lv_host_unuse(lvhost *h) {
  if (--h->users > 0 || h->ctx == NULL)
    return;
  /* No vm of the ctx uses it: it leaves the ctx, which may be freed now;
   * its jobs finish without it and a later vm gets a new host. */
  jitsu_list_remove(&h->link);
  h->ctx = NULL;
  if (h->retry != NULL)
    uv_timer_stop(h->retry);
}

void lv_host_put(lvhost *h) {
  if (--h->refs > 0)
    return;
  if (h->ctx != NULL) {
    jitsu_list_remove(&h->link);
    h->ctx = NULL;
  }
  if (h->retry != NULL) {
    uv_close((uv_handle_t *)h->retry, retry_closed);
    h->retry = NULL;
  }
  if (h->conn != NULL) {
    /* Closing talks to the daemon: a last job does it off the loop, and
     * its end frees the host. */
    lvjob *j = calloc(1, sizeof(*j));
    if (j != NULL) {
      j->run = close_run;
      j->done = close_done;
      if (lv_job_submit(h, j) == 0)
        return;
      free(j);
    }
    close_run(&(lvjob){.host = h});
  }
  host_free(h);
}
