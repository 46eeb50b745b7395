/*
 * dns_flood: COUNT queries for one NAME sent to 127.0.0.1:PORT as fast as
 * one socket can send them, then every answer read until none has come
 * for 3 s: how many were answered (NOERROR with an answer) and how many
 * the server never saw (dropped by the kernel when its socket's receive
 * buffer was full). Bounded: COUNT at most 1,000,000.
 *
 *   dns_flood PORT NAME COUNT
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dns_client.h"

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: dns_flood PORT NAME COUNT\n");
    return 2;
  }
  int count = atoi(argv[3]);
  if (count < 1 || count > 1000000) {
    fprintf(stderr, "dns_flood: COUNT must be 1..1000000\n");
    return 2;
  }
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int big = 16 << 20;
  setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
  struct sockaddr_in d = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)atoi(argv[1]))};
  d.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  uint8_t q[300], a[1500];
  double t0 = now_ms();
  for (int i = 0; i < count; i++) {
    size_t len = build_query(q, argv[2], (uint16_t)i);
    while (sendto(s, q, len, 0, (struct sockaddr *)&d, sizeof(d)) < 0)
      ; /* our own send buffer is full: try again */
  }
  double sent = now_ms() - t0;
  int answers = 0, good = 0;
  for (;;) {
    struct pollfd p = {.fd = s, .events = POLLIN};
    if (poll(&p, 1, 3000) != 1)
      break;
    ssize_t n = recv(s, a, sizeof(a), 0);
    if (n < 12)
      continue;
    answers++;
    good += (a[3] & 0xF) == 0 && a[7] > 0;
  }
  printf("  %d queries for one name sent in %.0f ms: %d answered (%d NOERROR "
         "with an answer), %d never answered\n",
         count, sent, answers, good, count - answers);
  close(s);
  return 0;
}
