/* What the DNS benchmark clients (dns_cold.c, dns_stall.c) share: a
 * monotonic clock (bench_stats.h) and an A query for a name. */
#ifndef JITSU_BENCH_DNS_CLIENT_H
#define JITSU_BENCH_DNS_CLIENT_H

#include "bench_stats.h"

#include <stdint.h>
#include <string.h>
#include <time.h>

/* An A query for (name) with (id), recursion desired, into (p) (at least
 * 12 + strlen(name) + 6 bytes); its length. */
static inline size_t build_query(uint8_t *p, const char *name, uint16_t id) {
  size_t n = 12;
  memset(p, 0, 12);
  p[0] = (uint8_t)(id >> 8), p[1] = (uint8_t)id, p[2] = 1, p[5] = 1;
  while (*name) {
    const char *dot = strchr(name, '.');
    size_t l = dot ? (size_t)(dot - name) : strlen(name);
    p[n++] = (uint8_t)l;
    memcpy(p + n, name, l);
    n += l;
    name += l + (dot ? 1 : 0);
  }
  p[n++] = 0;
  p[n++] = 0, p[n++] = 1, p[n++] = 0, p[n++] = 1;
  return n;
}

#endif
