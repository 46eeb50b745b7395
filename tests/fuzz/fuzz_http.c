/* libFuzzer target: jitsu-http through the real proxy, both ways.
 * Each input is written into one end of a socket pair whose other end the
 * proxy serves as a client; the loop runs until the proxy is done with it.
 * The one vm's program cannot start, so no process is left behind. Then
 * a fixed request goes to an upstream in this process (an `upstream =`
 * of [http]) that answers it with the input: the response path, bodies,
 * keep-alive and close-delimited answers, from a hostile guest. */
#include "http.h"
#include "fuzz_util.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t loop;
static jitsu_ctx *ctx;
static http_proxy *px;
static char dir[64];

static uv_tcp_t upstream;
static const uint8_t *answer;
static size_t answer_len;

typedef struct up_conn {
  uv_tcp_t tcp;
  uv_write_t w;
  uv_shutdown_t sd;
  bool answered;
  char buf[4096];
  char *copy; /* the answer, while it is written */
} up_conn;

static void up_closed(uv_handle_t *h) {
  up_conn *u = h->data;
  free(u->copy);
  free(u);
}

static void up_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  up_conn *u = h->data;
  (void)hint;
  *b = uv_buf_init(u->buf, sizeof(u->buf));
}

static void up_written(uv_write_t *w, int status) {
  up_conn *u = w->data;
  if (status == 0) /* the end of the answer: close-delimited bodies */
    uv_shutdown(&u->sd, (uv_stream_t *)&u->tcp, NULL);
}

/* The request is read and thrown away; the first read is answered. */
static void up_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  up_conn *u = s->data;
  (void)b;
  if (n < 0) {
    uv_close((uv_handle_t *)s, up_closed);
    return;
  }
  if (n == 0 || u->answered || answer_len == 0)
    return;
  u->answered = true;
  if ((u->copy = malloc(answer_len)) == NULL)
    return;
  memcpy(u->copy, answer, answer_len);
  uv_buf_t out = uv_buf_init(u->copy, (unsigned)answer_len);
  u->w.data = u;
  uv_write(&u->w, s, &out, 1, up_written);
}

static void up_connection(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  up_conn *u = calloc(1, sizeof(*u));
  if (u == NULL)
    return;
  uv_tcp_init(&loop, &u->tcp);
  u->tcp.data = u;
  if (uv_accept(server, (uv_stream_t *)&u->tcp) < 0 ||
      uv_read_start((uv_stream_t *)&u->tcp, up_alloc, up_read) < 0)
    uv_close((uv_handle_t *)&u->tcp, up_closed);
}

static void drained(void *arg) {
  (void)arg;
  jitsu_ctx_free(ctx);
}

/* As jitsu-http ends: drain, free the context, let the loop run out, and
 * only then free the proxy's memory. */
static void cleanup(void) {
  uv_close((uv_handle_t *)&upstream, NULL);
  http_proxy_drain(px, drained, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  http_proxy_destroy(px);
  uv_run(&loop, UV_RUN_DEFAULT);
  fuzz_rmtree(dir);
}

static void setup(void) {
  snprintf(dir, sizeof(dir), "/tmp/jitsu-fuzz-http-%d", (int)getpid());
  jitsu_ctx_options o = JITSU_CTX_OPTIONS_INIT;
  o.state_dir = dir;
  uv_loop_init(&loop);
  if (jitsu_ctx_new(&loop, &o, &ctx) < 0 || http_declare_keys(ctx) < 0 ||
      mkdir(dir, 0700) < 0)
    abort();
  uv_tcp_init(&loop, &upstream);
  struct sockaddr_in sin = {.sin_family = AF_INET};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int len = sizeof(sin);
  if (uv_tcp_bind(&upstream, (struct sockaddr *)&sin, 0) < 0 ||
      uv_listen((uv_stream_t *)&upstream, 64, up_connection) < 0 ||
      uv_tcp_getsockname(&upstream, (struct sockaddr *)&sin, &len) < 0)
    abort();
  char conf[512];
  snprintf(conf, sizeof(conf),
           "[http]\nupstream = u.test 127.0.0.1:%d\n"
           "[vm a]\nexec = /nonexistent/jitsu-fuzz-guest\nhttp-host = a.test\n"
           "http-backend = 127.0.0.1:9\nhttp-hold = 50ms\n",
           ntohs(sin.sin_port));
  fuzz_load_config(ctx, dir, conf, "fuzz_http");
  static const char *const none[] = {NULL};
  http_config cfg;
  memset(&cfg, 0, sizeof(cfg));
  cfg.settings = (http_settings){.max_header = 4096,
                                 .max_body = 1 << 20,
                                 .header_timeout = 50,
                                 .idle_timeout = 50,
                                 .body_timeout = 50,
                                 .response_timeout = 50,
                                 .send_timeout = 50,
                                 .max_conns = 16,
                                 .queue = 4,
                                 .hold_ms = 50,
                                 .retry_after = 1,
                                 .drain_ms = 50};
  cfg.listen = none;
  char why[256];
  if (http_proxy_new(ctx, &cfg, &px, why, sizeof(why)) < 0)
    abort();
  atexit(cleanup);
}

/* Serve (data) as a client's bytes until the proxy is done with them. */
static void as_client(const uint8_t *data, size_t size) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return;
  fcntl(sv[1], F_SETFL, O_NONBLOCK);
  if (http_proxy_adopt_fd(px, sv[0]) < 0) {
    close(sv[0]);
    close(sv[1]);
    return;
  }
  size_t off = 0;
  char sink[65536];
  /* Bounded: the proxy answers or times out (50 ms) on every input. */
  for (int turn = 0; turn < 2000 && http_proxy_clients(px) > 0; turn++) {
    if (off < size) {
      ssize_t w = write(sv[1], data + off, size - off);
      if (w > 0)
        off += (size_t)w;
      if (off == size)
        shutdown(sv[1], SHUT_WR);
    } else if (off == size && size == 0) {
      shutdown(sv[1], SHUT_WR);
    }
    while (read(sv[1], sink, sizeof(sink)) > 0)
      ;
    uv_run(&loop, UV_RUN_ONCE);
  }
  close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (ctx == NULL)
    setup();
  if (size > 32768)
    return 0;
  as_client(data, size);
  /* The input as the guest's answer to a plain request. */
  static const char req[] = "GET /x HTTP/1.1\r\nHost: u.test\r\n\r\n";
  answer = data;
  answer_len = size;
  as_client((const uint8_t *)req, sizeof(req) - 1);
  answer_len = 0;
  return 0;
}
