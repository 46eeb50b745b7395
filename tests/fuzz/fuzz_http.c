/* libFuzzer target: jitsu-http's request path, through the real proxy.
 * Each input is written into one end of a socket pair whose other end the
 * proxy serves as a client; the loop runs until the proxy is done with it.
 * The one vm's program cannot start, so no process is left behind. */
#include "http.h"
#include "fuzz_util.h"

#include <fcntl.h>
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

static void cleanup(void) {
  http_proxy_destroy(px);
  jitsu_ctx_free(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  fuzz_rmtree(dir);
}

static void setup(void) {
  snprintf(dir, sizeof(dir), "/tmp/jitsu-fuzz-http-%d", (int)getpid());
  jitsu_ctx_options o = JITSU_CTX_OPTIONS_INIT;
  o.state_dir = dir;
  uv_loop_init(&loop);
  if (jitsu_ctx_new(&loop, &o, &ctx) < 0 || http_declare_keys(ctx) < 0)
    abort();
  jitsu_param params[] = {{"exec", "/nonexistent/jitsu-fuzz-guest"},
                          {"http-host", "a.test"},
                          {"http-backend", "127.0.0.1:9"},
                          {"http-hold", "50ms"}};
  jitsu_vm_def def = JITSU_VM_DEF_INIT;
  def.name = "a";
  def.params = params;
  def.n_params = 4;
  if (jitsu_vm_define(ctx, &def, NULL, NULL) < 0)
    abort();
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (ctx == NULL)
    setup();
  int sv[2];
  if (size > 32768 ||
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return 0;
  fcntl(sv[1], F_SETFL, O_NONBLOCK);
  if (http_proxy_adopt_fd(px, sv[0]) < 0) {
    close(sv[0]);
    close(sv[1]);
    return 0;
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
  return 0;
}
