/*
 * dns_cold: the cold path of jitsu-dns, from the client's side. For each
 * run: the guest is destroyed (through jitsu-ctl, not timed), then one A
 * query is sent and timed to its answer, and an HTTP GET to the guest is
 * timed to its first byte, both from the moment the query left.
 *
 *   dns_cold DNS-PORT NAME HTTP-PORT JITSU-CTL CONFIG VM RUNS
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dns_client.h"

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sin;
}

int main(int argc, char **argv) {
  if (argc != 8) {
    fprintf(stderr, "usage: dns_cold DNS-PORT NAME HTTP-PORT JITSU-CTL CONFIG "
                    "VM RUNS\n");
    return 2;
  }
  int dport = atoi(argv[1]), hport = atoi(argv[3]), runs = atoi(argv[7]);
  if (runs < 1 || runs > 1000)
    return 2;
  double *dns = calloc((size_t)runs, sizeof(double));
  double *http = calloc((size_t)runs, sizeof(double));
  char stop[1024];
  snprintf(stop, sizeof(stop), "%s -c %s stop %s destroy >/dev/null", argv[4],
           argv[5], argv[6]);
  int failures = 0;
  for (int i = 0; i < runs; i++) {
    if (system(stop) != 0)
      failures++;
    uint8_t q[300], a[1500];
    size_t qlen = build_query(q, argv[2], (uint16_t)i);
    struct sockaddr_in d = loopback(dport), h = loopback(hport);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval tv = {5, 0};
    setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    double t0 = now_ms();
    sendto(u, q, qlen, 0, (struct sockaddr *)&d, sizeof(d));
    ssize_t n = recv(u, a, sizeof(a), 0);
    dns[i] = now_ms() - t0;
    close(u);
    if (n < 12 || (a[3] & 0xF) != 0 || a[7] == 0)
      failures++;
    int t = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(t, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char c;
    const char get[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
    if (connect(t, (struct sockaddr *)&h, sizeof(h)) < 0 ||
        write(t, get, sizeof(get) - 1) < 0 || read(t, &c, 1) != 1)
      failures++;
    http[i] = now_ms() - t0;
    close(t);
  }
  printf("cold path, %d runs (guest destroyed before each):\n", runs);
  printf("  query to answer            p50 %7.3f ms  p90 %7.3f ms\n",
         pct(dns, runs, .5), pct(dns, runs, .9));
  printf("  query to first HTTP byte   p50 %7.3f ms  p90 %7.3f ms\n",
         pct(http, runs, .5), pct(http, runs, .9));
  if (failures)
    printf("  failed: %d\n", failures);
  return failures > 0;
}
