/* libFuzzer target: jitsu-dns's server through real sockets on loopback.
 * Each input goes to the running server twice: as one UDP datagram, and as
 * a TCP stream (its own bytes are the framing). Names under the zone
 * "test" summon a vm whose program cannot start (held, then answered);
 * other names are forwarded, through c-ares, to an upstream in this
 * process that answers every query with the input itself, its ID patched
 * (a hostile upstream). The loop runs until the server has read the input
 * and has nothing pending, bounded in turns. */
#include "dns.h"
#include "fuzz_util.h"
#include "internal.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t loop;
static jitsu_ctx *ctx;
static dns_server *srv;
static char dir[64];
static int port, udp_fd;
static uv_udp_t upstream;
static char upstream_buf[4096];
static const uint8_t *input;
static size_t input_len;

static const jitsu_key dns_keys[] = {
    {"zone", JITSU_KEY_STRING, JITSU_KEY_MULTI, ""},
};
static const jitsu_key vm_keys[] = {
    {"dns", JITSU_KEY_STRING, JITSU_KEY_MULTI, ""},
    {"dns-hold", JITSU_KEY_DURATION, 0, ""},
};

static void nudged(uv_timer_t *t) {
  (void)t;
}

/* Everything closes; bounded (once, under two busy fuzzers, a replay
 * waited here for good: then the handles still open are printed, for the
 * next look, and the exit goes on). */
static void cleanup(void) {
  dns_server_free(srv);
  uv_close((uv_handle_t *)&upstream, NULL);
  jitsu_ctx_free(ctx);
  uv_timer_t nudge;
  uv_timer_init(&loop, &nudge);
  uv_unref((uv_handle_t *)&nudge);
  uv_update_time(&loop);
  uv_timer_start(&nudge, nudged, 10, 10);
  int alive = 1;
  for (int i = 0; i < 500 && (alive = uv_run(&loop, UV_RUN_ONCE)) != 0; i++)
    ;
  if (alive) {
    fprintf(stderr, "fuzz_dns_server: handles still open at exit:\n");
    uv_print_active_handles(&loop, stderr);
  }
  uv_close((uv_handle_t *)&nudge, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  dns_server_destroy(srv);
  close(udp_fd);
  fuzz_rmtree(dir);
}

/* The hostile upstream: the input, as the answer to any query. */
static void upstream_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)h, (void)hint;
  *b = uv_buf_init(upstream_buf, sizeof(upstream_buf));
}

static void upstream_read(uv_udp_t *h, ssize_t n, const uv_buf_t *b,
                          const struct sockaddr *from, unsigned flags) {
  (void)flags;
  if (n < 2 || from == NULL || input_len < 2 || input_len > 4096)
    return;
  static uint8_t answer[4096];
  memcpy(answer, input, input_len);
  memcpy(answer, b->base, 2); /* the query's ID */
  uv_buf_t out = uv_buf_init((char *)answer, (unsigned)input_len);
  uv_udp_try_send(h, &out, 1, from);
}

/* A statistic of the server, from its stats source. */
typedef struct stat_pick {
  const char *name;
  double value;
} stat_pick;

static void pick(void *arg, const char *name, double value) {
  stat_pick *p = arg;
  if (strcmp(name, p->name) == 0)
    p->value = value;
}

static double stat_of(const char *name) {
  stat_pick p = {name, 0};
  for (jitsu__stats_src *s = ctx->stats_sources; s != NULL; s = s->next)
    if (strcmp(s->group, "dns") == 0)
      s->fn(pick, &p, s->arg);
  return p.value;
}

static int bind_port(int type) {
  int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sin);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
      getsockname(fd, (struct sockaddr *)&sin, &len) < 0)
    abort();
  int p = ntohs(sin.sin_port);
  close(fd);
  return p;
}

static void setup(void) {
  snprintf(dir, sizeof(dir), "/tmp/jitsu-fuzz-dns-%d", (int)getpid());
  if (mkdir(dir, 0700) < 0)
    abort();
  jitsu_ctx_options o = JITSU_CTX_OPTIONS_INIT;
  o.state_dir = dir;
  uv_loop_init(&loop);
  if (jitsu_ctx_new(&loop, &o, &ctx) < 0 ||
      jitsu_config_declare_keys(ctx, "dns", dns_keys, 1) < 0 ||
      jitsu_config_declare_keys(ctx, "vm", vm_keys, 2) < 0)
    abort();
  /* The zone's static records: the answer paths of a zone file. */
  char zone[128], conf[512];
  snprintf(zone, sizeof(zone), "%s/test.zone", dir);
  FILE *zf = fopen(zone, "w");
  if (zf == NULL)
    abort();
  fputs("$TTL 60\n@ SOA ns h 1 2 3 4 5\n NS ns\n MX 10 m\n TXT \"t\"\n"
        "ns A 192.0.2.53\nm A 192.0.2.25\n AAAA 2001:db8::25\n"
        "c CNAME d\nd CNAME m\nloop CNAME loop\nw CNAME a\n"
        "x CNAME www.example.org.\ns SRV 0 5 80 m\nsub NS ns.sub\n"
        "sub NS ns.other.\nns.sub A 192.0.2.54\nns.sub AAAA ::1\n"
        "big TXT \"0123456789012345678901234567890123456789012345678901234"
        "5678901234567890123456789012345678901234567890123456789012345678"
        "901234567890123456789012345678901234567890123456789\" \"0123456"
        "7890123456789012345678901234567890123456789012345678901234567890"
        "1234567890123456789012345678901234567890123456789012345678901234"
        "56789012345678901234567890123456789\"\n",
        zf);
  fclose(zf);
  snprintf(conf, sizeof(conf), "[dns]\nzone = test file=%s\n", zone);
  char *text = malloc(strlen(conf) + 512);
  if (text == NULL)
    abort();
  strcpy(text, conf);
  strcat(text, "[vm a]\nexec = /nonexistent/jitsu-fuzz-guest\n"
               "dns = a.test\ndns = b.w2.test\naddress = 192.0.2.1\n"
               "address = 2001:db8::1\ndns-hold = 20ms\n");
  fuzz_load_config(ctx, dir, text, "fuzz_dns_server");
  free(text);
  /* The upstream, on a port of its own. */
  uv_udp_init(&loop, &upstream);
  struct sockaddr_in up = {.sin_family = AF_INET};
  up.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (uv_udp_bind(&upstream, (struct sockaddr *)&up, 0) < 0 ||
      uv_udp_recv_start(&upstream, upstream_alloc, upstream_read) < 0)
    abort();
  int namelen = sizeof(up);
  uv_udp_getsockname(&upstream, (struct sockaddr *)&up, &namelen);
  static char forwarder[64], listen_at[64];
  snprintf(forwarder, sizeof(forwarder), "127.0.0.1:%d", ntohs(up.sin_port));
  static const char *const loopback[] = {"127.0.0.0/8", NULL};
  dns_server_config sc;
  memset(&sc, 0, sizeof(sc));
  sc.settings = (dns_settings){.ttl = 60,
                               .negative_ttl = 60,
                               .hold_ms = 20,
                               .idle_ms = -1,
                               .idle_action = JITSU_IDLE_DESTROY,
                               .rate_per_s = 10,
                               .rate_burst = 20,
                               .rate_prefix6 = 56,
                               .max_pending = 64,
                               .max_tcp = 8};
  sc.forwarders = forwarder;
  sc.forward = true;
  sc.forward_timeout_ms = 50;
  sc.allow = loopback;
  static const char *listen[2];
  listen[0] = listen_at;
  sc.listen = listen;
  char why[256];
  int tries = 0;
  do { /* a free port for both UDP and TCP */
    port = bind_port(SOCK_DGRAM);
    snprintf(listen_at, sizeof(listen_at), "127.0.0.1:%d", port);
  } while (dns_server_new(ctx, &sc, &srv, why, sizeof(why)) < 0 &&
           ++tries < 20);
  if (tries == 20) {
    fprintf(stderr, "fuzz_dns_server: %s\n", why);
    abort();
  }
  udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  atexit(cleanup);
}

static struct sockaddr_in server_addr(void) {
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sin;
}

static void drain(int fd) {
  char sink[65536];
  while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
    ;
}

/* Turn the loop until the server has read (want) queries and holds
 * nothing, or (tcp) it has closed every connection; bounded. */
static void settle(double want, int fd, bool tcp) {
  for (int turn = 0; turn < 400; turn++) {
    uv_run(&loop, UV_RUN_NOWAIT);
    drain(fd);
    double seen = stat_of("queries_udp_total") + stat_of("queries_tcp_total");
    if ((tcp ? stat_of("tcp_connections") == 0 : seen >= want) &&
        stat_of("pending") == 0)
      return;
    if (turn > 4)
      usleep(250);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (ctx == NULL)
    setup();
  if (size > 65535)
    return 0;
  input = data;
  input_len = size;
  struct sockaddr_in sin = server_addr();
  double before = stat_of("queries_udp_total") + stat_of("queries_tcp_total");
  if (size > 0 && sendto(udp_fd, data, size, 0, (struct sockaddr *)&sin,
                         sizeof(sin)) == (ssize_t)size)
    settle(before + 1, udp_fd, false);
  int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (t < 0)
    return 0;
  if (connect(t, (struct sockaddr *)&sin, sizeof(sin)) == 0) {
    fcntl(t, F_SETFL, O_NONBLOCK);
    size_t off = 0;
    for (int turn = 0; turn < 200 && off < size; turn++) {
      ssize_t w = write(t, data + off, size - off);
      if (w > 0)
        off += (size_t)w;
      uv_run(&loop, UV_RUN_NOWAIT);
      drain(t);
    }
    shutdown(t, SHUT_WR);
    uv_run(&loop, UV_RUN_NOWAIT); /* the accept, if it has not run yet */
    settle(0, t, true);
  }
  close(t);
  input_len = 0;
  return 0;
}
