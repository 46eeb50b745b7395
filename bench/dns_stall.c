/*
 * dns_stall: does a burst of cold summons hold up warm answers? One warm
 * name is asked again and again, one query at a time, each timed to its
 * answer: first alone, then right after COLD queries for COLD stopped
 * vms were sent at once, until every cold one is answered. Prints the warm
 * latencies of both phases (p50, p99, max) and how long the burst took.
 * The warm name's own first query (which summons it) is not timed.
 *
 *   dns_stall DNS-PORT WARM-NAME COLD-FORMAT COLD
 *
 * COLD-FORMAT is a printf format with one %d, e.g. "c%d.stall.test".
 * Bounded: at most 20 s per phase.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dns_client.h"

#define PHASE_MS 20000.0
#define WARM_ALONE 300

/* One warm query on (s), timed; -1 when it timed out or was not NOERROR
 * with an answer. */
static double warm_once(int s, const struct sockaddr_in *d, const char *name,
                        uint16_t id) {
  uint8_t q[300], a[1500];
  size_t len = build_query(q, name, id);
  double t0 = now_ms();
  if (sendto(s, q, len, 0, (const struct sockaddr *)d, sizeof(*d)) < 0)
    return -1;
  for (;;) {
    struct pollfd p = {.fd = s, .events = POLLIN};
    if (poll(&p, 1, 2000) != 1)
      return -1;
    ssize_t n = recv(s, a, sizeof(a), 0);
    if (n >= 12 && a[0] == q[0] && a[1] == q[1])
      return (a[3] & 0xF) == 0 && a[7] > 0 ? now_ms() - t0 : -1;
  }
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: dns_stall DNS-PORT WARM-NAME COLD-FORMAT COLD\n");
    return 2;
  }
  int port = atoi(argv[1]), cold = atoi(argv[4]);
  if (cold < 1 || cold > 10000)
    return 2;
  struct sockaddr_in d = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port)};
  d.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int ws = socket(AF_INET, SOCK_DGRAM, 0), cs = socket(AF_INET, SOCK_DGRAM, 0);
  int big = 4 << 20;
  setsockopt(cs, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  double *alone = calloc(WARM_ALONE, sizeof(double));
  double *during = calloc(100000, sizeof(double));
  int n_alone = 0, n_during = 0, failures = 0;
  uint16_t id = 1;
  if (warm_once(ws, &d, argv[2], id++) < 0) /* its summon: not timed */
    failures++;
  double end = now_ms() + PHASE_MS;
  for (int i = 0; i < WARM_ALONE && now_ms() < end; i++) {
    double t = warm_once(ws, &d, argv[2], id++);
    if (t < 0)
      failures++;
    else
      alone[n_alone++] = t;
  }
  /* The burst: every cold query at once, then warm ones until every cold
   * one is answered. */
  uint8_t q[300], a[1500];
  char name[256];
  double t0 = now_ms();
  for (int i = 0; i < cold; i++) {
    snprintf(name, sizeof(name), argv[3], i);
    size_t len = build_query(q, name, (uint16_t)(0x8000 + i));
    if (sendto(cs, q, len, 0, (struct sockaddr *)&d, sizeof(d)) < 0)
      failures++;
  }
  int answered = 0, bad = 0;
  double last = t0;
  end = t0 + PHASE_MS;
  while (answered < cold && now_ms() < end && n_during < 100000) {
    double t = warm_once(ws, &d, argv[2], id++);
    if (t < 0)
      failures++;
    else
      during[n_during++] = t;
    ssize_t n;
    while ((n = recv(cs, a, sizeof(a), MSG_DONTWAIT)) > 0) {
      answered++;
      last = now_ms();
      if (n < 12 || (a[3] & 0xF) != 0 || a[7] == 0)
        bad++;
    }
  }
  printf("warm answers, one query at a time:\n");
  report_latencies("alone", "queries", alone, n_alone);
  report_latencies("while the cold burst is answered", "queries", during,
                   n_during);
  printf("  cold burst: %d of %d answered (%d not NOERROR) in %.1f ms\n",
         answered, cold, bad, last - t0);
  if (failures > 0)
    printf("  warm queries lost or failed: %d\n", failures);
  return answered < cold || failures > 0;
}
