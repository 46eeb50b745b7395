/* libFuzzer target: control protocol requests, through the JSON parser
 * and the command dispatcher of the real control server, then the same
 * bytes through a real connection to its socket (the transport). The
 * context has one vm whose program cannot start, so no verb can leave a
 * process behind. */
#include "control_int.h"
#include "fuzz_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t loop;
static jitsu_ctx *ctx;
static char dir[64];

/* Leave nothing behind: the socket, logs and the state directory. */
static void cleanup(void) {
  jitsu_ctx_free(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  fuzz_rmtree(dir);
}

static jitsu_ctx *fuzz_ctx(void) {
  if (ctx != NULL)
    return ctx;
  snprintf(dir, sizeof(dir), "/tmp/jitsu-fuzz-control-%d", (int)getpid());
  jitsu_ctx_options o = JITSU_CTX_OPTIONS_INIT;
  o.state_dir = dir;
  uv_loop_init(&loop);
  if (jitsu_ctx_new(&loop, &o, &ctx) < 0 || jitsu_control_listen(ctx, NULL) < 0)
    abort();
  jitsu_param params[] = {{"exec", "/nonexistent/jitsu-fuzz-guest"}};
  jitsu_vm_def def = JITSU_VM_DEF_INIT;
  def.name = "a";
  def.params = params;
  def.n_params = 1;
  if (jitsu_vm_define(ctx, &def, NULL, NULL) < 0)
    abort();
  atexit(cleanup);
  return ctx;
}

/* The same bytes through a real connection to the control socket: line
 * splitting, over-long lines, pipelining and half-close in the server's
 * transport. Until the server closes the connection, bounded. */
static void through_socket(const uint8_t *data, size_t size) {
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  const char *path = jitsu_control_path(ctx);
  if (path == NULL || strlen(path) >= sizeof(sun.sun_path))
    return;
  memcpy(sun.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return;
  if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
    close(fd);
    return;
  }
  fcntl(fd, F_SETFL, O_NONBLOCK);
  size_t off = 0;
  bool shut = false;
  char sink[65536];
  for (int turn = 0; turn < 2000; turn++) {
    if (off < size) {
      ssize_t w = write(fd, data + off, size - off);
      if (w > 0)
        off += (size_t)w;
    }
    if (off == size && !shut) {
      shutdown(fd, SHUT_WR);
      shut = true;
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    ssize_t n;
    while ((n = read(fd, sink, sizeof(sink))) > 0)
      ;
    if (n == 0 || (n < 0 && errno != EAGAIN))
      break; /* the server is done with us */
    if (turn > 4)
      usleep(200);
  }
  close(fd);
  uv_run(&loop, UV_RUN_NOWAIT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  jitsu__control_feed(fuzz_ctx(), (const char *)data, size);
  /* Let deferred completions and time-outs of this input run out. */
  uv_run(&loop, UV_RUN_NOWAIT);
  if (size <= 1 << 20)
    through_socket(data, size);
  return 0;
}
