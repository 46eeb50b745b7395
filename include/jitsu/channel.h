/* libjitsu: shared-memory channels and name rendezvous. */
#ifndef JITSU_CHANNEL_H
#define JITSU_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A channel is a bidirectional, ordered byte stream between two endpoints,
 * carried by two rings in shared memory (a sealed memfd) with a socket pair
 * for wake-ups and for noticing that the peer has gone. Endpoints find each
 * other by name through a rendezvous server: a controller serves one with
 * jitsu_rendezvous_listen(); programs (host programs and process-backend
 * guests, which get its path in $JITSU_RENDEZVOUS) listen on a name and a
 * port, or connect to one. Connecting to the name of a vm that is not
 * ready summons it and completes once the guest listens.
 *
 * Endpoints run on the caller's libuv loop; callbacks are never called
 * from inside the call that caused them. The peer's side of the shared
 * memory is untrusted: any index or length out of range ends that channel
 * with JITSU_EPROTO-like errors (-EPROTO), nothing else.
 */

typedef struct jitsu_chan jitsu_chan;
typedef struct jitsu_chan_listener jitsu_chan_listener;

#define JITSU_CHAN_NAME_MAX 63               /* [A-Za-z0-9_.-], as vm names */
#define JITSU_CHAN_PORT_MAX 63               /* [A-Za-z0-9_-] */
#define JITSU_CHAN_RING_DEFAULT (256 * 1024) /* bytes per direction */
#define JITSU_CHAN_RING_MIN 4096
#define JITSU_CHAN_RING_MAX (16 * 1024 * 1024)
#define JITSU_CHAN_LISTEN_MAX 256 /* channels open at once per listener */

/* Data arrived: (data, len) is valid during the call only. (len) 0 with
 * (err) 0 is the end of the stream (the peer shut down or closed); (err)
 * < 0 is a broken channel (the peer vanished: -ECONNRESET; garbage in the
 * shared memory: -EPROTO). Either way no more data comes. */
typedef void (*jitsu_chan_read_cb)(jitsu_chan *c, const void *data, size_t len,
                                   int err, void *arg);
/* A write was fully handed to the ring (0), or failed: -EPIPE or
 * -ECONNRESET on a broken channel, -ECANCELED when the channel was closed
 * first. Each write's callback runs exactly once, in order. */
typedef void (*jitsu_chan_write_cb)(jitsu_chan *c, int err, void *arg);
/* A connect finished: (c) is the new channel, or NULL with (err) < 0. */
typedef void (*jitsu_chan_connect_cb)(jitsu_chan *c, int err, void *arg);
/* A peer connected to a listener: (c) is the new channel, (port) the port
 * it asked for. Also called with (c) NULL: once with (err) 0 when the name
 * is registered (the listener is reachable from then on), or with (err)
 * < 0 when it cannot listen (-EADDRINUSE: the name is taken) or the
 * rendezvous went away (-ECONNRESET); then no more channels come. */
typedef void (*jitsu_chan_accept_cb)(jitsu_chan_listener *l, jitsu_chan *c,
                                     const char *port, int err, void *arg);

/* Options of an endpoint (listen or connect). */
#define JITSU_CHAN_OPTIONS_VERSION 2
typedef struct jitsu_chan_options {
  unsigned version;       /* JITSU_CHAN_OPTIONS_VERSION */
  const char *rendezvous; /* socket path; NULL: $JITSU_RENDEZVOUS */
  size_t ring_size;       /* connect: bytes per direction, a power of 2 */
  uint64_t timeout_ms;    /* connect: 0 = 10 s (includes a summon);
                           * listen on Xen: how long a client has to map
                           * its vchan (0 = 10 s) */
  uint64_t spin_us;       /* poll the ring this long before sleeping
                           * after activity (0: 50 us; UINT64_MAX: never) */
  /* Read callbacks get the bytes where they lie in the shared memory
   * instead of a private copy: one copy less, but the peer can still change
   * them while the callback runs, so read each byte once (forwarding,
   * hashing, copying out). Default false. */
  bool direct_read;
  /* listen: channels of this listener open at once; a connect beyond is
   * refused (0: JITSU_CHAN_LISTEN_MAX). Version 2. */
  unsigned max_channels;
} jitsu_chan_options;
#define JITSU_CHAN_OPTIONS_INIT                                                \
  { JITSU_CHAN_OPTIONS_VERSION, NULL, 0, 0, 0, false, 0 }

/* Listen on (name) for connects to any of its ports; (cb) says when the
 * name is registered and gets each new channel. */
JITSU_EXTERN int jitsu_chan_listen(uv_loop_t *loop, const char *name,
                                   const jitsu_chan_options *opts,
                                   jitsu_chan_accept_cb cb, void *arg,
                                   jitsu_chan_listener **out);
JITSU_EXTERN void jitsu_chan_listener_close(jitsu_chan_listener *l);

/* A connect in progress; valid until its callback has been called. */
typedef struct jitsu_chan_connecting jitsu_chan_connecting;

/* Connect to (name, port); (cb) gets the channel or an error, exactly
 * once: -ETIMEDOUT (nobody listened in time), -ECONNREFUSED (no such name
 * and no vm to summon), JITSU_ELIMIT (too many pending connects),
 * -ECANCELED (jitsu_chan_connect_cancel()). (*out), if (out) is not NULL,
 * is the pending connect, for cancelling it. */
JITSU_EXTERN int jitsu_chan_connect(uv_loop_t *loop, const char *name,
                                    const char *port,
                                    const jitsu_chan_options *opts,
                                    jitsu_chan_connect_cb cb, void *arg,
                                    jitsu_chan_connecting **out);

/* Give up a pending connect: its callback runs once, from the loop, with
 * -ECANCELED (the rendezvous drops the request; a guest it summoned stays
 * up). Call it only before the callback has run. */
JITSU_EXTERN void jitsu_chan_connect_cancel(jitsu_chan_connecting *req);

/* Deliver data to (cb) until EOF or an error; stop with (cb) NULL. */
JITSU_EXTERN int jitsu_chan_read_start(jitsu_chan *c, jitsu_chan_read_cb cb,
                                       void *arg);
/* Queue (len) bytes (copied); (cb) may be NULL. -EPIPE after shutdown or
 * close; on a broken channel why it broke (-ECONNRESET: the peer is gone,
 * -EPROTO: its side of the memory is garbage). */
JITSU_EXTERN int jitsu_chan_write(jitsu_chan *c, const void *data, size_t len,
                                  jitsu_chan_write_cb cb, void *arg);
/* Bytes queued but not yet in the ring: backpressure. */
JITSU_EXTERN size_t jitsu_chan_write_queue_size(const jitsu_chan *c);
/* End our direction once the queue is written (the peer reads EOF). */
JITSU_EXTERN int jitsu_chan_shutdown(jitsu_chan *c);
/* Close now: queued writes fail with -ECANCELED; the peer sees EOF (or
 * -ECONNRESET if we had not shut down). */
JITSU_EXTERN void jitsu_chan_close(jitsu_chan *c);
JITSU_EXTERN void jitsu_chan_set_data(jitsu_chan *c, void *data);
JITSU_EXTERN void *jitsu_chan_data(const jitsu_chan *c);

/* Serve the rendezvous for (ctx) on (path) (NULL: STATE/rendezvous.sock).
 * Connects to the name of a defined vm (or a "channel" trigger's key)
 * summon it. Process-backend guests get the path in $JITSU_RENDEZVOUS. */
JITSU_EXTERN int jitsu_rendezvous_listen(jitsu_ctx *ctx, const char *path);
JITSU_EXTERN const char *jitsu_rendezvous_path(jitsu_ctx *ctx);

/* Serve the rendezvous when the loaded config asks for it ([jitsu]
 * rendezvous = yes, or a rendezvous-socket path): 1 if it now serves, 0 if
 * not asked, or an error. The frontends call it after loading. */
JITSU_EXTERN int jitsu_rendezvous_from_config(jitsu_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif
