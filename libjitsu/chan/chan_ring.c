/* Ring operations of a channel (see chan_ring.h). */
#include "chan_ring.h"

#include <errno.h>
#include <string.h>

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define FENCE() __atomic_thread_fence(__ATOMIC_SEQ_CST)

int chan_ring_format(uint8_t *base, size_t len, uint32_t ring_size) {
  if (ring_size == 0 || (ring_size & (ring_size - 1)) != 0 ||
      len != CHAN_HDR_SIZE + 2 * (size_t)ring_size)
    return -EINVAL;
  chan_shm *s = (chan_shm *)base;
  memset(s, 0, sizeof(*s));
  s->magic = CHAN_MAGIC;
  s->version = CHAN_VERSION;
  s->ring_size = ring_size;
  return 0;
}

int chan_ring_attach(chan_ring *r, uint8_t *base, size_t len, int role) {
  chan_shm *s = (chan_shm *)base;
  if (len < CHAN_HDR_SIZE)
    return -EPROTO;
  /* Read the size once, then only our copy is used. */
  uint32_t size = LOAD(&s->ring_size);
  if (LOAD(&s->magic) != CHAN_MAGIC || LOAD(&s->version) != CHAN_VERSION ||
      size < 64 || (size & (size - 1)) != 0 ||
      len != CHAN_HDR_SIZE + 2 * (size_t)size)
    return -EPROTO;
  memset(r, 0, sizeof(*r));
  r->shm = s;
  r->size = size;
  int tx = role == 0 ? 0 : 1;
  r->tx = &s->dir[tx];
  r->rx = &s->dir[1 - tx];
  r->tx_data = base + CHAN_HDR_SIZE + (size_t)tx * size;
  r->rx_data = base + CHAN_HDR_SIZE + (size_t)(1 - tx) * size;
  /* Our indices start where the shared ones are (zero for a new channel);
   * the peer cannot have moved them yet in a way we would trust. */
  r->tx_prod = 0;
  r->rx_cons = 0;
  return 0;
}

long chan_ring_writable(chan_ring *r) {
  uint32_t used = r->tx_prod - LOAD(&r->tx->cons);
  if (used > r->size)
    return -EPROTO; /* the consumer claims to have read unwritten bytes */
  return (long)(r->size - used);
}

long chan_ring_readable(chan_ring *r) {
  uint32_t avail = LOAD(&r->rx->prod) - r->rx_cons;
  if (avail > r->size)
    return -EPROTO;
  return (long)avail;
}

long chan_ring_write(chan_ring *r, const void *data, size_t len, bool *wake) {
  *wake = false;
  long room = chan_ring_writable(r);
  if (room <= 0)
    return room;
  size_t n = len < (size_t)room ? len : (size_t)room;
  uint32_t at = r->tx_prod & (r->size - 1);
  size_t first = n < r->size - at ? n : r->size - at;
  memcpy(r->tx_data + at, data, first);
  memcpy(r->tx_data, (const uint8_t *)data + first, n - first);
  r->tx_prod += (uint32_t)n;
  STORE(&r->tx->prod, r->tx_prod);
  FENCE();
  if (n > 0 && LOAD(&r->tx->want_data)) {
    STORE(&r->tx->want_data, 0);
    *wake = true;
  }
  return (long)n;
}

long chan_ring_peek(chan_ring *r, const uint8_t **at, size_t cap) {
  long avail = chan_ring_readable(r);
  if (avail <= 0)
    return avail;
  uint32_t off = r->rx_cons & (r->size - 1);
  size_t n = (size_t)avail < r->size - off ? (size_t)avail : r->size - off;
  if (n > cap)
    n = cap;
  *at = r->rx_data + off;
  return (long)n;
}

void chan_ring_consume(chan_ring *r, size_t n, bool *wake) {
  *wake = false;
  r->rx_cons += (uint32_t)n;
  STORE(&r->rx->cons, r->rx_cons);
  FENCE();
  if (n > 0 && LOAD(&r->rx->want_space)) {
    STORE(&r->rx->want_space, 0);
    *wake = true;
  }
}

long chan_ring_read(chan_ring *r, void *out, size_t cap, bool *wake) {
  *wake = false;
  long avail = chan_ring_readable(r);
  if (avail <= 0)
    return avail;
  size_t n = cap < (size_t)avail ? cap : (size_t)avail;
  uint32_t at = r->rx_cons & (r->size - 1);
  size_t first = n < r->size - at ? n : r->size - at;
  memcpy(out, r->rx_data + at, first);
  memcpy((uint8_t *)out + first, r->rx_data, n - first);
  chan_ring_consume(r, n, wake);
  return (long)n;
}

bool chan_ring_peer_eof(chan_ring *r) {
  return LOAD(&r->rx->eof) != 0;
}

void chan_ring_set_eof(chan_ring *r) {
  STORE(&r->tx->eof, 1);
  FENCE();
}

void chan_ring_want(chan_ring *r, bool data, bool space) {
  if (data)
    STORE(&r->rx->want_data, 1);
  if (space)
    STORE(&r->tx->want_space, 1);
  FENCE();
}
