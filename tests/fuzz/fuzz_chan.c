/* libFuzzer target: a hostile channel peer. The input is a script of
 * operations on a real ring pair in (private) memory: the peer overwrites
 * its indices and flags with arbitrary values and scribbles data, and we
 * read and write through the same functions the channel uses. Nothing it
 * does may make us touch memory outside the mapping (ASan checks), and
 * every count we return must be within the ring. Then the same bytes go
 * to the rendezvous server as requests over a socket. */
#include "chan_ring.h"
#include "channel_int.h"

#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RING 4096

static uint32_t get32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

static void fuzz_ring(const uint8_t *data, size_t size) {
  static uint8_t mem[CHAN_HDR_SIZE + 2 * RING] __attribute__((aligned(64)));
  static uint8_t buf[2 * RING];
  if (chan_ring_format(mem, sizeof(mem), RING) < 0)
    abort();
  chan_ring us, peer;
  if (chan_ring_attach(&us, mem, sizeof(mem), 0) < 0 ||
      chan_ring_attach(&peer, mem, sizeof(mem), 1) < 0)
    abort();
  chan_shm *shm = (chan_shm *)mem;
  for (size_t i = 0; i + 5 <= size; i += 5) {
    uint8_t op = data[i];
    uint32_t v = get32(data + i + 1);
    bool wake;
    long n;
    switch (op % 8) {
    case 0: /* the peer sets its producer index to anything */
      shm->dir[1].prod = v;
      break;
    case 1: /* ... or its consumer index */
      shm->dir[0].cons = v;
      break;
    case 2:
      shm->dir[1].eof = v;
      shm->dir[0].want_data = v >> 1;
      shm->dir[1].want_space = v >> 2;
      break;
    case 3: /* we read */
      n = chan_ring_read(&us, buf, v % sizeof(buf), &wake);
      if (n > (long)RING || n > (long)(v % sizeof(buf)))
        abort();
      break;
    case 4: /* we write */
      n = chan_ring_write(&us, buf, v % sizeof(buf), &wake);
      if (n > (long)RING)
        abort();
      break;
    case 5: /* the peer behaves: reads and writes through its view */
      chan_ring_write(&peer, data, (size_t)(v % (size - i)), &wake);
      chan_ring_read(&peer, buf, v % RING, &wake);
      break;
    case 6: /* the peer scribbles over the data */
      memset(mem + CHAN_HDR_SIZE + (v % (2 * RING)), (int)(v >> 24),
             (v >> 8) % 64 < 2 * RING - v % (2 * RING)
                 ? (v >> 8) % 64
                 : 2 * RING - v % (2 * RING));
      break;
    default:
      if (chan_ring_readable(&us) > (long)RING ||
          chan_ring_writable(&us) > (long)RING)
        abort();
      chan_ring_peer_eof(&us);
      chan_ring_want(&us, v & 1, v & 2);
    }
  }
  /* A header the peer wrote: attach must refuse what does not fit. */
  if (size >= 16) {
    memcpy(mem, data, 16);
    chan_ring r;
    chan_ring_attach(&r, mem, sizeof(mem), 1);
  }
}

static uv_loop_t loop;
static jitsu_ctx *ctx;
static char dir[] = "/tmp/jitsu-fuzz-chan-XXXXXX";

/* Leave nothing behind: the socket and the state directory. */
static void cleanup(void) {
  jitsu_ctx_free(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  char p[300];
  snprintf(p, sizeof(p), "%s/rv.sock", dir);
  unlink(p);
  rmdir(dir);
}

static void fuzz_rendezvous(const uint8_t *data, size_t size) {
  static char path[128];
  if (ctx == NULL) {
    uv_loop_init(&loop);
    if (mkdtemp(dir) == NULL)
      abort();
    atexit(cleanup);
    jitsu_ctx_options o = JITSU_CTX_OPTIONS_INIT;
    o.state_dir = dir;
    if (jitsu_ctx_new(&loop, &o, &ctx) < 0)
      abort();
    snprintf(path, sizeof(path), "%s/rv.sock", dir);
    if (jitsu_rendezvous_listen(ctx, path) < 0)
      abort();
  }
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  strcpy(sun.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
    abort();
  /* Messages separated by newlines; each a request. */
  size_t start = 0;
  for (size_t i = 0; i <= size; i++) {
    if (i == size || data[i] == '\n') {
      if (i > start && i - start < RV_MSG_MAX)
        send(fd, data + start, i - start, MSG_DONTWAIT);
      start = i + 1;
    }
  }
  for (int k = 0; k < 4; k++)
    uv_run(&loop, UV_RUN_NOWAIT);
  close(fd);
  for (int k = 0; k < 4; k++)
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* A Xen channel request path, as another domain may write it. */
static void fuzz_conduit(const uint8_t *data, size_t size) {
  char path[300], name[JITSU_CHAN_NAME_MAX + 1], port[JITSU_CHAN_PORT_MAX + 1];
  for (size_t start = 0, i = 0; i <= size; i++) {
    if (i < size && data[i] != '\n')
      continue;
    size_t len = i - start < sizeof(path) - 1 ? i - start : sizeof(path) - 1;
    memcpy(path, data + start, len);
    path[len] = '\0';
    start = i + 1;
    unsigned client = 0;
    if (jitsu__conduit_parse(path, name, sizeof(name), &client, port,
                             sizeof(port)) == 0) {
      char again[300];
      snprintf(again, sizeof(again), "/conduit/%s/%u/%s", name, client, port);
      if (strcmp(again, path) != 0 || client >= 0x7ff0 ||
          !jitsu__chan_name_ok(name) || !jitsu__chan_port_ok(port))
        abort(); /* accepted something it should not have */
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_ring(data, size);
  fuzz_rendezvous(data, size);
  fuzz_conduit(data, size);
  return 0;
}
