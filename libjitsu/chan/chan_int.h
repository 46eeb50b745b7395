/* Channels and the rendezvous: what channel.c, chan_connect.c and
 * rendezvous.c share. */
#ifndef JITSU_CHANNEL_INT_H
#define JITSU_CHANNEL_INT_H

#include "base.h"

#include <jitsu/channel.h>

#define RV_MSG_MAX 256 /* one rendezvous message */
#define RV_PENDING_PER_NAME 64
#define RV_PENDING_MAX 1024
#define RV_LISTENERS_MAX 1024
#define RV_CONNS_MAX 4096 /* endpoints connected to the rendezvous */
#define RV_CONNECT_TIMEOUT_MS 10000
#define RV_CONNECT_TIMEOUT_MAX_MS 120000

/* A channel over (map) (the whole memfd mapping, which it now owns) and
 * (bell) (its socket pair end, owned too); NULL with (*err) set. */
/* (in) (NULL: the defaults) as the current version into (out); -EINVAL
 * for a version this library does not know. Version 1 lacks
 * max_channels. */
int jitsu__chan_opts(const jitsu_chan_options *in, jitsu_chan_options *out);

/* The open channels of one listener, shared with its channels (each
 * holds a reference until it is freed, which may be after the listener). */
typedef struct jitsu__chan_count {
  unsigned refs, open, max;
} jitsu__chan_count;
JITSU__API jitsu__chan_count *
jitsu__chan_count_new(const jitsu_chan_options *o);
/* Whether one more channel may open. */
JITSU__API bool jitsu__chan_count_room(const jitsu__chan_count *n);
/* (c) counts against (n) until it is freed. */
JITSU__API void jitsu__chan_count_add(jitsu_chan *c, jitsu__chan_count *n);
JITSU__API void jitsu__chan_count_put(jitsu__chan_count *n);

jitsu_chan *jitsu__chan_new(uv_loop_t *loop, uint8_t *map, size_t map_len,
                            int bell, int role, const jitsu_chan_options *o,
                            int *err);

/* A connect request in XenStore, "/conduit/NAME/requests/CLIENT/PORT"
 * (any domain may write one; conduit.h): 0 with its parts, or -EINVAL.
 * CLIENT is only what the path claims: the node's owner says who wrote
 * it. */
JITSU__API int jitsu__conduit_parse(const char *path, char *name,
                                    size_t name_size, unsigned *client,
                                    char *port, size_t port_size);

/* The rendezvous "xen" (options or $JITSU_RENDEZVOUS): channels between
 * Xen domains. */
bool jitsu__chan_xen_wanted(const jitsu_chan_options *o);

/* A channel over another transport than our rings: a Xen vchan
 * (chan_xen.c, in the vchan module). Its calls work on (t); (fd) wakes the
 * loop when there may be something to do, and wait() takes that event. */
typedef struct jitsu__chan_transport {
  long (*write)(void *t, const void *data, size_t len); /* or -errno */
  long (*read)(void *t, void *buf, size_t len);         /* or -errno */
  long (*readable)(void *t); /* and asks to be told when it changes */
  long (*writable)(void *t);
  bool (*peer_eof)(void *t);
  void (*wait)(void *t);
  void (*close)(void *t); /* the peer sees it closed; frees (t) */
} jitsu__chan_transport;
/* The channel owns (t) from now on, also when this fails (NULL, *err). */
JITSU__API jitsu_chan *
jitsu__chan_new_transport(uv_loop_t *loop, const jitsu__chan_transport *tr,
                          void *t, int fd, const jitsu_chan_options *o,
                          int *err);
/* (w) watches for the peer's death and calls jitsu__chan_peer_gone();
 * (free_fn) ends it when the channel closes. */
JITSU__API void jitsu__chan_set_peer_watch(jitsu_chan *c, void *w,
                                           void (*free_fn)(void *));
JITSU__API void jitsu__chan_peer_gone(jitsu_chan *c);

/* The Xen rendezvous (XenStore, conduit.h): chan_xen.c, in the
 * vchan module, which jitsu__module_load("vchan") finds. */
typedef struct jitsu__xen_chan_ops {
  int (*listen)(jitsu_chan_listener *outer, uv_loop_t *loop, const char *name,
                const jitsu_chan_options *opts, jitsu_chan_accept_cb cb,
                void *arg, void **impl);
  void (*listener_close)(void *impl);
  int (*connect)(uv_loop_t *loop, const char *name, const char *port,
                 const jitsu_chan_options *opts, jitsu_chan_connect_cb cb,
                 void *arg, jitsu_chan_connecting **out);
} jitsu__xen_chan_ops;

/* One message on a SOCK_SEQPACKET socket, with up to two descriptors. */
int jitsu__rv_send(int fd, const char *text, const int *fds, int nfds);
/* Receive one message into (buf) (NUL-terminated), descriptors into (fds)
 * (*nfds in: room, out: count; extra ones are closed). The length, 0 at
 * EOF, or -errno (-EAGAIN: nothing yet). */
long jitsu__rv_recv(int fd, char *buf, size_t size, int *fds, int *nfds);

/* Whether (s) is a valid channel name / port. */
JITSU__API bool jitsu__chan_name_ok(const char *s);
bool jitsu__chan_port_ok(const char *s);

/* The vm a connect to (name) summons: a "channel" trigger, the vm of that
 * name, or the first with "channel = name"; NULL if none. */
JITSU__API jitsu_vm *jitsu__chan_vm_for(jitsu_ctx *ctx, const char *name);

/* A pending connect, as its caller holds it: the transport's request
 * starts with this. */
struct jitsu_chan_connecting {
  void (*cancel)(jitsu_chan_connecting *req);
};

/* The server's state in a ctx (rendezvous.c). */
void jitsu__rendezvous_free(jitsu_ctx *ctx);

#endif
