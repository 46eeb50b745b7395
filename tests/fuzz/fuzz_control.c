/* libFuzzer target: a control protocol request line, through the JSON
 * parser and the command dispatcher of the real control server. The
 * context has one vm whose program cannot start, so no verb can leave a
 * process behind. */
#include "internal.h"
#include "fuzz_util.h"

#include <stdio.h>
#include <stdlib.h>
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  jitsu__control_feed(fuzz_ctx(), (const char *)data, size);
  /* Let deferred completions and time-outs of this input run out. */
  uv_run(&loop, UV_RUN_NOWAIT);
  return 0;
}
