/* The keyed hash of every table: SipHash-1-3 (Aumasson and Bernstein,
 * "SipHash: a fast short-input PRF", 2012; 1 compression and 3
 * finalization rounds, as CPython and Rust use for their tables). */
#include "base.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

static inline uint64_t rotl(uint64_t x, int b) {
  return (x << b) | (x >> (64 - b));
}

#define SIPROUND(v0, v1, v2, v3)                                               \
  do {                                                                         \
    v0 += v1, v1 = rotl(v1, 13), v1 ^= v0, v0 = rotl(v0, 32);                  \
    v2 += v3, v3 = rotl(v3, 16), v3 ^= v2;                                     \
    v0 += v3, v3 = rotl(v3, 21), v3 ^= v0;                                     \
    v2 += v1, v1 = rotl(v1, 17), v1 ^= v2, v2 = rotl(v2, 32);                  \
  } while (0)

static inline uint64_t load_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

uint64_t jitsu__siphash(const jitsu_hash_key *key, const void *data, size_t len,
                        int c_rounds, int d_rounds) {
  const uint8_t *in = data;
  uint64_t v0 = key->k0 ^ 0x736f6d6570736575ull;
  uint64_t v1 = key->k1 ^ 0x646f72616e646f6dull;
  uint64_t v2 = key->k0 ^ 0x6c7967656e657261ull;
  uint64_t v3 = key->k1 ^ 0x7465646279746573ull;
  size_t whole = len - len % 8;
  for (size_t i = 0; i < whole; i += 8) {
    uint64_t m = load_le64(in + i);
    v3 ^= m;
    for (int r = 0; r < c_rounds; r++)
      SIPROUND(v0, v1, v2, v3);
    v0 ^= m;
  }
  uint64_t b = (uint64_t)len << 56;
  for (size_t i = 0; i < len % 8; i++)
    b |= (uint64_t)in[whole + i] << (8 * i);
  v3 ^= b;
  for (int r = 0; r < c_rounds; r++)
    SIPROUND(v0, v1, v2, v3);
  v0 ^= b;
  v2 ^= 0xff;
  for (int r = 0; r < d_rounds; r++)
    SIPROUND(v0, v1, v2, v3);
  return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t jitsu_hash(const jitsu_hash_key *key, const void *data, size_t len) {
  return jitsu__siphash(key, data, len, 1, 3);
}

void jitsu_hash_key_random(jitsu_hash_key *key) {
  if (getrandom(key, sizeof(*key), GRND_NONBLOCK) == (ssize_t)sizeof(*key))
    return;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  key->k0 = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
  clock_gettime(CLOCK_REALTIME, &ts);
  key->k1 = (uint64_t)ts.tv_nsec * 0xc2b2ae3d27d4eb4full ^ (uint64_t)ts.tv_sec;
}
