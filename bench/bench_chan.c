/*
 * bench_chan: a channel against an AF_UNIX socket pair and TCP over
 * loopback, between two processes, in one run, as ratios.
 *   ping-pong: one byte there and back, N times: the mean round trip
 *   stream:    S bytes in 64 KiB writes, then a one-byte answer: MB/s
 * The socket baselines use plain blocking read/write (their best case);
 * the channel runs on libuv loops through the library's API.
 *
 *   bench_chan [-n ROUNDTRIPS] [-s MEGABYTES]
 *
 * Between two machines (two Xen domains; the rendezvous comes from
 * $JITSU_RENDEZVOUS, e.g. xen), one side serves and the other measures a
 * channel against TCP between the same two:
 *   bench_chan [-s MEGABYTES] -L NAME -T PORT       serve: the channel name
 *       NAME, TCP ping on PORT and stream on PORT+1, until killed
 *   bench_chan [-n N] [-s MEGABYTES] -C NAME -A ADDR:PORT
 */
#include <jitsu/jitsu.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int n_rt = 20000;
static bool direct; /* the channel's consumer reads in place */
static uint64_t stream_bytes = 512ull << 20;
static char rv_path[256];
static bool serve_forever; /* -L: peers outlive their channels */

/* ---- sockets ------------------------------------------------------------- */

static int full_write(int fd, const void *b, size_t n) {
  const char *p = b;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w <= 0)
      return -1;
    p += w, n -= (size_t)w;
  }
  return 0;
}

/* The far side of a socket: echo one byte at a time (ping) or swallow the
 * stream and answer one byte (stream). */
static void socket_peer(int fd, int stream) {
  static char buf[CHUNK];
  if (!stream) {
    char c;
    while (read(fd, &c, 1) == 1)
      if (write(fd, &c, 1) != 1)
        break;
    _exit(0);
  }
  uint64_t got = 0;
  ssize_t n;
  while (got < stream_bytes && (n = read(fd, buf, sizeof(buf))) > 0)
    got += (uint64_t)n;
  full_write(fd, "k", 1);
  _exit(0);
}

static double socket_ping(int fd) {
  char c = 'x';
  double t0 = now_s();
  for (int i = 0; i < n_rt; i++)
    if (write(fd, &c, 1) != 1 || read(fd, &c, 1) != 1)
      return -1;
  return (now_s() - t0) / n_rt * 1e6;
}

static double socket_stream(int fd) {
  static char buf[CHUNK];
  memset(buf, 7, sizeof(buf));
  double t0 = now_s();
  for (uint64_t sent = 0; sent < stream_bytes; sent += CHUNK)
    if (full_write(fd, buf, CHUNK) < 0)
      return -1;
  char c;
  if (read(fd, &c, 1) != 1)
    return -1;
  return stream_bytes / (now_s() - t0) / 1e6;
}

/* Connected to (sin) with TCP_NODELAY, or -1. */
static int tcp_connect(const struct sockaddr_in *sin) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  struct timeval tv = {30, 0}; /* a peer that stops answering ends the test */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (fd >= 0 && connect(fd, (const struct sockaddr *)sin, sizeof(*sin)) == 0)
    return fd;
  if (fd >= 0)
    close(fd);
  return -1;
}

/* (kind) 0: socketpair, 1: TCP; (stream): which test. */
static double run_socket(int kind, int stream) {
  int fds[2];
  int lfd = -1;
  struct sockaddr_in sin = {.sin_family = AF_INET};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (kind == 0) {
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0)
      return -1;
  } else {
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    socklen_t len = sizeof(sin);
    if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        listen(lfd, 1) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sin, &len) < 0)
      return -1;
  }
  pid_t pid = fork();
  if (pid == 0) {
    if (kind == 0)
      close(fds[0]); /* else our copy keeps the parent's end open */
    int fd = kind == 0 ? fds[1] : accept(lfd, NULL, NULL);
    int one = 1;
    if (kind == 1)
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    socket_peer(fd, stream);
  }
  int fd = fds[0];
  if (kind == 0) {
    close(fds[1]);
  } else {
    if ((fd = tcp_connect(&sin)) < 0)
      return -1;
    close(lfd);
  }
  double r = stream ? socket_stream(fd) : socket_ping(fd);
  close(fd);
  waitpid(pid, NULL, 0);
  return r;
}

/* ---- channels
 * ---------------------------------------------------------------- */

typedef struct peer_state {
  uint64_t got;
} peer_state;

static void peer_read(jitsu_chan *c, const void *d, size_t n, int err,
                      void *arg) {
  peer_state *s = arg;
  if (n == 0) {
    jitsu_chan_close(c);
    if (!serve_forever)
      uv_stop(uv_default_loop());
    return;
  }
  if (jitsu_chan_data(c) == NULL) { /* ping: echo */
    jitsu_chan_write(c, d, n, NULL, NULL);
    return;
  }
  s->got += n;
  if (s->got >= stream_bytes)
    jitsu_chan_write(c, "k", 1, NULL, NULL);
  (void)err;
}

static void peer_accept(jitsu_chan_listener *l, jitsu_chan *c, const char *port,
                        int err, void *arg) {
  (void)l;
  if (c == NULL) {
    if (err == 0) { /* registered: tell the parent */
      if (write(*(int *)arg, "r", 1) != 1)
        _exit(1);
    } else {
      _exit(1);
    }
    return;
  }
  static peer_state st;
  st.got = 0;
  jitsu_chan_set_data(c, strcmp(port, "stream") == 0 ? &st : NULL);
  jitsu_chan_read_start(c, peer_read, &st);
}

typedef struct bench_state {
  jitsu_chan *c;
  int done, rounds, stream;
  uint64_t sent;
  double t0, result;
} bench_state;

static void fill(bench_state *b);

static void written(jitsu_chan *c, int err, void *arg) {
  (void)c, (void)err;
  fill(arg);
}

/* Keep a few chunks queued: backpressure through the write queue. */
static void fill(bench_state *b) {
  static char buf[CHUNK];
  while (b->sent < stream_bytes &&
         jitsu_chan_write_queue_size(b->c) < 4 * CHUNK) {
    jitsu_chan_write(
        b->c, buf, CHUNK,
        b->sent + CHUNK >= stream_bytes || (b->sent / CHUNK) % 2 == 0 ? written
                                                                      : NULL,
        b);
    b->sent += CHUNK;
  }
}

static void bench_read(jitsu_chan *c, const void *d, size_t n, int err,
                       void *arg) {
  bench_state *b = arg;
  (void)d, (void)err;
  if (n == 0) {
    b->done = 1;
    return;
  }
  if (b->stream) {
    b->result = stream_bytes / (now_s() - b->t0) / 1e6;
    b->done = 1;
    return;
  }
  if (++b->rounds == n_rt) {
    b->result = (now_s() - b->t0) / n_rt * 1e6;
    b->done = 1;
    return;
  }
  jitsu_chan_write(c, "x", 1, NULL, NULL);
}

static void bench_connected(jitsu_chan *c, int err, void *arg) {
  bench_state *b = arg;
  if (err < 0) {
    fprintf(stderr, "bench_chan: connect: %s\n", jitsu_strerror(err));
    b->done = 1;
    return;
  }
  b->c = c;
  jitsu_chan_read_start(c, bench_read, b);
  b->t0 = now_s();
  if (b->stream)
    fill(b);
  else
    jitsu_chan_write(c, "x", 1, NULL, NULL);
}

/* Connect to (name) (through (rendezvous), or as $JITSU_RENDEZVOUS says
 * when NULL) and run one test; -1 on failure. */
static double measure_channel(uv_loop_t *loop, const char *name,
                              const char *rendezvous, int stream) {
  bench_state b = {.stream = stream};
  jitsu_chan_options o = JITSU_CHAN_OPTIONS_INIT;
  o.rendezvous = rendezvous;
  o.ring_size = 1024 * 1024;
  double deadline = now_s() + 60;
  if (jitsu_chan_connect(loop, name, stream ? "stream" : "ping", &o,
                         bench_connected, &b, NULL) < 0)
    return -1;
  while (!b.done && now_s() < deadline)
    uv_run(loop, UV_RUN_NOWAIT);
  if (b.c != NULL)
    jitsu_chan_close(b.c);
  uv_run(loop, UV_RUN_NOWAIT);
  return b.done ? b.result : -1;
}

static double run_channel(uv_loop_t *loop, int stream) {
  int ready[2];
  if (pipe(ready) < 0)
    return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(ready[0]);
    uv_loop_t *l = uv_default_loop();
    jitsu_chan_options o = JITSU_CHAN_OPTIONS_INIT;
    o.rendezvous = rv_path;
    o.direct_read = direct;
    jitsu_chan_listener *lst;
    if (jitsu_chan_listen(l, "bench", &o, peer_accept, &ready[1], &lst) < 0)
      _exit(1);
    uv_run(l, UV_RUN_DEFAULT);
    _exit(0);
  }
  close(ready[1]);
  /* Serve the rendezvous until the child has registered. */
  char c;
  for (int i = 0; i < 5000; i++) {
    uv_run(loop, UV_RUN_NOWAIT);
    struct timeval tv = {0, 1000};
    fd_set fs;
    FD_ZERO(&fs);
    FD_SET(ready[0], &fs);
    if (select(ready[0] + 1, &fs, NULL, NULL, &tv) == 1 &&
        read(ready[0], &c, 1) == 1)
      break;
  }
  close(ready[0]);
  double r = measure_channel(loop, "bench", rv_path, stream);
  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);
  return r;
}

/* ---- across two machines (-L, -C) ---------------------------------------- */

/* Serve TCP on (port): each connection gets a peer process. */
static void tcp_server(int port, int stream) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
  if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
      listen(lfd, 4) < 0) {
    perror("bench_chan: TCP server");
    _exit(1);
  }
  signal(SIGCHLD, SIG_IGN); /* no zombies */
  for (;;) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
      continue;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (fork() == 0) {
      close(lfd);
      socket_peer(fd, stream);
    }
    close(fd);
  }
}

static int serve(const char *name, int port) {
  for (int stream = 0; stream < 2; stream++)
    if (fork() == 0)
      tcp_server(port + stream, stream);
  serve_forever = true;
  uv_loop_t *l = uv_default_loop();
  jitsu_chan_options o = JITSU_CHAN_OPTIONS_INIT;
  jitsu_chan_listener *lst;
  int ready[2];
  if (pipe(ready) < 0)
    return 1;
  int r = jitsu_chan_listen(l, name, &o, peer_accept, &ready[1], &lst);
  if (r < 0) {
    fprintf(stderr, "bench_chan: listen %s: %s\n", name, jitsu_strerror(r));
    return 1;
  }
  fprintf(stderr, "bench_chan: serving %s, TCP %d and %d\n", name, port,
          port + 1);
  return uv_run(l, UV_RUN_DEFAULT);
}

static double tcp_measure(const struct sockaddr_in *sin, int stream) {
  int fd = tcp_connect(sin);
  if (fd < 0)
    return -1;
  double r = stream ? socket_stream(fd) : socket_ping(fd);
  close(fd);
  return r;
}

static int measure_remote(const char *name, const char *addr) {
  char host[64];
  int port = 0;
  if (sscanf(addr, "%63[^:]:%d", host, &port) != 2 || port < 1 ||
      port > 65534) {
    fprintf(stderr, "bench_chan: -A ADDR:PORT expected\n");
    return 2;
  }
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
    return 2;
  uv_loop_t loop;
  uv_loop_init(&loop);
  double ping[2], tput[2];
  ping[0] = measure_channel(&loop, name, NULL, 0);
  tput[0] = measure_channel(&loop, name, NULL, 1);
  ping[1] = tcp_measure(&sin, 0);
  sin.sin_port = htons((uint16_t)(port + 1));
  tput[1] = tcp_measure(&sin, 1);
  printf("one-byte ping-pong to %s, %d round trips (mean us):\n", name, n_rt);
  printf("  channel            %8.2f\n  TCP to %-12s%8.2f\n", ping[0], host,
         ping[1]);
  printf("streaming %llu MiB in 64 KiB writes (MB/s):\n",
         (unsigned long long)(stream_bytes >> 20));
  printf("  channel            %8.0f\n  TCP to %-12s%8.0f\n", tput[0], host,
         tput[1]);
  printf("ratios: latency channel/TCP %.2f, throughput channel/TCP %.2f\n",
         ping[0] / ping[1], tput[0] / tput[1]);
  uv_loop_close(&loop);
  return ping[0] > 0 && ping[1] > 0 && tput[0] > 0 && tput[1] > 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  int opt, tcp_port = 0;
  const char *listen_name = NULL, *connect_name = NULL, *addr = NULL;
  while ((opt = getopt(argc, argv, "n:s:L:T:C:A:")) != -1) {
    if (opt == 'n')
      n_rt = atoi(optarg);
    else if (opt == 's')
      stream_bytes = (uint64_t)atoi(optarg) << 20;
    else if (opt == 'L')
      listen_name = optarg;
    else if (opt == 'T')
      tcp_port = atoi(optarg);
    else if (opt == 'C')
      connect_name = optarg;
    else if (opt == 'A')
      addr = optarg;
  }
  if (n_rt < 1 || n_rt > 10000000 || stream_bytes < CHUNK) {
    fprintf(stderr, "usage: bench_chan [-n ROUNDTRIPS] [-s MEGABYTES]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (listen_name != NULL)
    return tcp_port > 0 && tcp_port < 65535 ? serve(listen_name, tcp_port) : 2;
  if (connect_name != NULL)
    return addr != NULL ? measure_remote(connect_name, addr) : 2;
  char dir[] = "/tmp/jitsu-bench-chan-XXXXXX";
  if (mkdtemp(dir) == NULL)
    return 1;
  uv_loop_t loop;
  uv_loop_init(&loop);
  jitsu_ctx *ctx;
  jitsu_ctx_options co = JITSU_CTX_OPTIONS_INIT;
  co.state_dir = dir;
  snprintf(rv_path, sizeof(rv_path), "%s/rv.sock", dir);
  if (jitsu_ctx_new(&loop, &co, &ctx) < 0 ||
      jitsu_rendezvous_listen(ctx, rv_path) < 0)
    return 1;
  double ping[3], tput[4];
  ping[0] = run_channel(&loop, 0);
  ping[1] = run_socket(0, 0);
  ping[2] = run_socket(1, 0);
  tput[0] = run_channel(&loop, 1);
  direct = true;
  tput[3] = run_channel(&loop, 1);
  tput[1] = run_socket(0, 1);
  tput[2] = run_socket(1, 1);
  printf("one-byte ping-pong, %d round trips (mean us):\n", n_rt);
  printf("  channel            %8.2f\n  AF_UNIX socketpair %8.2f\n"
         "  TCP loopback       %8.2f\n",
         ping[0], ping[1], ping[2]);
  printf("streaming %llu MiB in 64 KiB writes (MB/s):\n",
         (unsigned long long)(stream_bytes >> 20));
  printf("  channel            %8.0f\n  channel, direct_read %6.0f\n"
         "  AF_UNIX socketpair %8.0f\n  TCP loopback       %8.0f\n",
         tput[0], tput[3], tput[1], tput[2]);
  printf("ratios: latency channel/AF_UNIX %.2f (goal <= 0.5), "
         "throughput channel/AF_UNIX %.2f, with direct_read %.2f (goal >= "
         "2)\n",
         ping[0] / ping[1], tput[0] / tput[1], tput[3] / tput[1]);
  jitsu_ctx_free(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  rmdir(dir);
  return 0;
}
