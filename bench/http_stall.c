/*
 * http_stall: does a burst of cold summons hold up warm requests through
 * jitsu-http? One warm host is asked again and again on one keep-alive
 * connection, one request at a time, each timed to the end of its answer:
 * first alone, then right after COLD requests for COLD stopped vms were
 * sent at once (one connection each), until every cold one is answered.
 * Prints the warm latencies of both phases (p50, p99, max), how many cold
 * requests got a 200 and how long the burst took. The warm host's first
 * request (which summons it) is not timed.
 *
 *   http_stall HTTP-PORT WARM-HOST COLD-FORMAT COLD [WARM-GUEST-PORT]
 *
 * COLD-FORMAT is a printf format with one %d, e.g. "c%d.stall.test".
 * With WARM-GUEST-PORT, each warm request through the proxy is followed by
 * one straight to the warm guest: the baseline of what the guest itself
 * takes to answer on the same busy machine.
 * Bounded: at most 20 s per phase, at most 1000 cold requests.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_stats.h"

#define PHASE_MS 20000.0
#define WARM_ALONE 300
#define MAX_COLD 1000

typedef struct conn {
  int fd;
  char buf[8192];
  size_t len;
  bool done;
  int status; /* the answer's status code, or -1 */
} conn;

static int connect_to(int port, bool nonblocking) {
  int fd =
      socket(AF_INET,
             SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (fd < 0 || (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 &&
                 errno != EINPROGRESS)) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

/* Whether (c) holds a whole answer (status line, head, Content-Length
 * bytes of body); sets c->status. */
static bool complete(conn *c) {
  c->buf[c->len] = '\0';
  char *end = strstr(c->buf, "\r\n\r\n");
  if (end == NULL)
    return false;
  c->status = strncmp(c->buf, "HTTP/1.1 ", 9) == 0 ? atoi(c->buf + 9) : -1;
  size_t body = 0;
  for (char *h = strstr(c->buf, "\r\n"); h != NULL && h < end;
       h = strstr(h + 2, "\r\n"))
    if (strncasecmp(h + 2, "Content-Length:", 15) == 0)
      body = strtoul(h + 17, NULL, 10);
  return c->len >= (size_t)(end + 4 - c->buf) + body;
}

/* Read what (c) has; true when its answer is whole or the peer is gone. */
static bool drain(conn *c) {
  for (;;) {
    if (c->len + 1 >= sizeof(c->buf))
      return c->done = true;
    ssize_t n =
        recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, MSG_DONTWAIT);
    if (n > 0) {
      c->len += (size_t)n;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      return c->done = complete(c);
    complete(c);
    return c->done = true; /* closed, or an error */
  }
}

static int send_get(int fd, const char *host, bool close_after) {
  char req[512];
  int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\n%s\r\n",
                   host, close_after ? "Connection: close\r\n" : "");
  return send(fd, req, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -1;
}

/* Poll the warm connection and the cold ones that are not done for up to
 * (ms); reads what came. */
static void poll_all(conn *warm, conn *cold, int n_cold, int ms) {
  struct pollfd p[MAX_COLD + 1];
  int idx[MAX_COLD + 1], n = 0;
  if (warm != NULL) {
    p[n] = (struct pollfd){.fd = warm->fd, .events = POLLIN};
    idx[n++] = -1;
  }
  for (int i = 0; i < n_cold; i++)
    if (!cold[i].done) {
      p[n] = (struct pollfd){.fd = cold[i].fd, .events = POLLIN};
      idx[n++] = i;
    }
  if (poll(p, (nfds_t)n, ms) <= 0)
    return;
  for (int i = 0; i < n; i++)
    if (p[i].revents != 0)
      drain(idx[i] < 0 ? warm : &cold[idx[i]]);
}

/* One warm request on (w), timed to its whole answer while the cold
 * connections are served too; -1 when it failed or was not a 200. */
static double warm_once(conn *w, const char *host, conn *cold, int n_cold) {
  w->len = 0;
  w->done = false;
  double t0 = now_ms();
  if (send_get(w->fd, host, false) < 0)
    return -1;
  while (!w->done && now_ms() - t0 < 2000)
    poll_all(w, cold, n_cold, 100);
  return w->done && w->status == 200 ? now_ms() - t0 : -1;
}

/* One request straight to the warm guest at (port), on a connection of
 * its own (the guest closes each), timed like warm_once. */
static double direct_once(int port, const char *host, conn *cold, int n_cold) {
  double t0 = now_ms();
  conn d = {.fd = connect_to(port, false), .status = -1};
  if (d.fd < 0 || send_get(d.fd, host, true) < 0) {
    if (d.fd >= 0)
      close(d.fd);
    return -1;
  }
  while (!d.done && now_ms() - t0 < 2000)
    poll_all(&d, cold, n_cold, 100);
  close(d.fd);
  return d.done && d.status == 200 ? now_ms() - t0 : -1;
}

int main(int argc, char **argv) {
  if (argc != 5 && argc != 6) {
    fprintf(stderr, "usage: http_stall HTTP-PORT WARM-HOST COLD-FORMAT COLD "
                    "[WARM-GUEST-PORT]\n");
    return 2;
  }
  int port = atoi(argv[1]), n_cold = atoi(argv[4]);
  int direct = argc == 6 ? atoi(argv[5]) : 0;
  if (n_cold < 1 || n_cold > MAX_COLD) {
    fprintf(stderr, "http_stall: COLD must be 1..%d\n", MAX_COLD);
    return 2;
  }
  conn *cold = calloc((size_t)n_cold, sizeof(*cold));
  double *alone = calloc(WARM_ALONE, sizeof(double));
  double *during = calloc(200000, sizeof(double));
  double *d_alone = calloc(WARM_ALONE, sizeof(double));
  double *d_during = calloc(200000, sizeof(double));
  conn warm = {.fd = connect_to(port, false)};
  if (cold == NULL || alone == NULL || during == NULL || d_alone == NULL ||
      d_during == NULL || warm.fd < 0) {
    fprintf(stderr, "http_stall: cannot connect to 127.0.0.1:%d\n", port);
    return 1;
  }
  const char *host = argv[2];
  if (warm_once(&warm, host, NULL, 0) < 0) { /* summons it: not timed */
    fprintf(stderr, "http_stall: the warm host %s did not answer 200\n", host);
    return 1;
  }
  int n_alone = 0, n_during = 0, failed = 0, nd_alone = 0, nd_during = 0;
  for (int i = 0; i < WARM_ALONE; i++) {
    double ms = warm_once(&warm, host, NULL, 0);
    if (ms >= 0)
      alone[n_alone++] = ms;
    if (direct > 0 && (ms = direct_once(direct, host, NULL, 0)) >= 0)
      d_alone[nd_alone++] = ms;
  }
  /* The burst: every cold request at once, each on its own connection. */
  double t0 = now_ms();
  for (int i = 0; i < n_cold; i++) {
    cold[i].fd = connect_to(port, true);
    cold[i].status = -1;
    if (cold[i].fd < 0)
      cold[i].done = true;
  }
  int sent = 0;
  while (sent < n_cold && now_ms() - t0 < PHASE_MS) {
    /* the connects complete: send each request once its socket is up */
    sent = 0;
    for (int i = 0; i < n_cold; i++) {
      char name[256];
      if (cold[i].len == 0 && !cold[i].done && cold[i].status == -1) {
        snprintf(name, sizeof(name), argv[3], i);
        if (send_get(cold[i].fd, name, true) == 0)
          cold[i].status = 0; /* sent */
        else if (errno != EAGAIN && errno != ENOTCONN)
          cold[i].done = true;
      }
      sent += cold[i].status >= 0 || cold[i].done;
    }
  }
  double last = t0, first = 0;
  int remaining = n_cold;
  while (remaining > 0 && now_ms() - t0 < PHASE_MS) {
    double ms = warm_once(&warm, host, cold, n_cold);
    if (ms >= 0 && n_during < 200000)
      during[n_during++] = ms;
    else if (ms < 0)
      failed++;
    if (direct > 0 && (ms = direct_once(direct, host, cold, n_cold)) >= 0 &&
        nd_during < 200000)
      d_during[nd_during++] = ms;
    int left = 0;
    for (int i = 0; i < n_cold; i++)
      left += !cold[i].done;
    if (left < remaining) {
      last = now_ms();
      if (first == 0)
        first = last - t0;
    }
    remaining = left;
  }
  int ok = 0;
  for (int i = 0; i < n_cold; i++) {
    ok += cold[i].done && cold[i].status == 200;
    if (cold[i].fd >= 0)
      close(cold[i].fd);
  }
  report_latencies("alone", "requests", alone, n_alone);
  report_latencies("while the cold burst is answered", "requests", during,
                   n_during);
  if (direct > 0) {
    printf("  the same guest asked directly (a connection each, as the proxy "
           "does), in turn with the above:\n");
    report_latencies("alone", "requests", d_alone, nd_alone);
    report_latencies("while the cold burst is answered", "requests", d_during,
                     nd_during);
  }
  if (failed > 0)
    printf("  warm requests failed during the burst: %d\n", failed);
  printf("  cold: %d of %d answered 200, first after %.1f ms, all after %.1f "
         "ms%s\n",
         ok, n_cold, first, last - t0, remaining > 0 ? " (timed out)" : "");
  close(warm.fd);
  free(cold), free(alone), free(during), free(d_alone), free(d_during);
  return ok == n_cold && remaining == 0 ? 0 : 1;
}
