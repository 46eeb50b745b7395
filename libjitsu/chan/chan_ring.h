/* The shared-memory layout of a channel, and ring operations that treat
 * everything the peer writes as hostile (chan_ring.c; fuzzed). */
#ifndef JITSU_CHAN_RING_H
#define JITSU_CHAN_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHAN_MAGIC 0x4e48434au /* "JCHN" */
#define CHAN_VERSION 1u
#define CHAN_HDR_SIZE 4096u

/* One direction's indices and flags, each on its own cache line: the
 * producer writes prod and eof, the consumer cons; want_* are set by the
 * side that is about to sleep and cleared by the side that wakes it. */
typedef struct chan_dir {
  uint32_t prod; /* bytes produced, mod 2^32 */
  uint8_t pad0[60];
  uint32_t cons; /* bytes consumed, mod 2^32 */
  uint8_t pad1[60];
  uint32_t want_data;  /* the consumer sleeps until data comes */
  uint32_t want_space; /* the producer sleeps until space frees */
  uint32_t eof;        /* the producer will write no more */
  uint8_t pad2[52];
} chan_dir;

typedef struct chan_shm {
  uint32_t magic, version, ring_size, reserved;
  uint8_t pad[48];
  chan_dir dir[2]; /* [0]: connector to listener, [1]: the other way */
} chan_shm;

/* Our private view: sizes and our own indices are never read back from
 * the shared memory. */
typedef struct chan_ring {
  chan_shm *shm;
  uint8_t *tx_data, *rx_data;
  chan_dir *tx, *rx;
  uint32_t size; /* power of 2 */
  uint32_t tx_prod, rx_cons;
} chan_ring;

/* Map (base) of (len) bytes as (role) (0 connector, 1 listener). The
 * connector writes the header first (chan_ring_format). 0, or -EPROTO for
 * a header that does not match (len). */
int chan_ring_format(uint8_t *base, size_t len, uint32_t ring_size);
int chan_ring_attach(chan_ring *r, uint8_t *base, size_t len, int role);

/* Copy up to (len) bytes into the tx ring: the count (maybe 0), or -EPROTO
 * when the peer's consumer index is impossible. Sets (*wake) when the
 * consumer asked to be woken. */
long chan_ring_write(chan_ring *r, const void *data, size_t len, bool *wake);

/* Copy up to (cap) readable bytes into (out): the count, or -EPROTO. Sets
 * (*wake) when the producer asked to be woken for space. */
long chan_ring_read(chan_ring *r, void *out, size_t cap, bool *wake);

/* Direct reads: the contiguous readable bytes at (*at) (the count, or
 * -EPROTO), then release (n) of them. */
long chan_ring_peek(chan_ring *r, const uint8_t **at, size_t cap);
void chan_ring_consume(chan_ring *r, size_t n, bool *wake);

/* Bytes readable now (or -EPROTO); free space to write (or -EPROTO). */
long chan_ring_readable(chan_ring *r);
long chan_ring_writable(chan_ring *r);

/* The peer said it will write no more. */
bool chan_ring_peer_eof(chan_ring *r);
void chan_ring_set_eof(chan_ring *r);

/* Ask to be woken (the caller then re-checks, to close the race). */
void chan_ring_want(chan_ring *r, bool data, bool space);

#endif
