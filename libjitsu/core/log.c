/* Logging through the embedder's callback, and the detail of the last
 * error. */
#include "internal.h"

#include <stdio.h>

uv_loop_t *jitsu_ctx_loop(jitsu_ctx *ctx) {
  return ctx->loop;
}

const char *jitsu_ctx_state_dir(jitsu_ctx *ctx) {
  return ctx->state_dir;
}

void jitsu_ctx_set_logger(jitsu_ctx *ctx, jitsu_log_fn fn, void *arg,
                          jitsu_log_level max_level) {
  ctx->log_fn = fn;
  ctx->log_arg = arg;
  ctx->log_max = max_level;
}

const char *jitsu_ctx_last_error(jitsu_ctx *ctx) {
  return ctx->last_error;
}

static void log_va(jitsu_ctx *ctx, jitsu_log_level level, const char *fmt,
                   va_list ap) {
  if (ctx->log_fn == NULL || level > ctx->log_max)
    return;
  char line[1024];
  vsnprintf(line, sizeof(line), fmt, ap);
  ctx->log_fn(level, line, ctx->log_arg);
}

void jitsu_ctx_log(jitsu_ctx *ctx, jitsu_log_level level, const char *fmt,
                   ...) {
  va_list ap;
  va_start(ap, fmt);
  log_va(ctx, level, fmt, ap);
  va_end(ap);
}

void jitsu_vm_log(jitsu_vm *vm, jitsu_log_level level, const char *fmt, ...) {
  char line[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  jitsu_ctx_log(vm->ctx, level, "vm %s: %s", vm->name, line);
}

int jitsu__fail(jitsu_ctx *ctx, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->last_error, sizeof(ctx->last_error), fmt, ap);
  va_end(ap);
  return err;
}

int jitsu__fail_error(jitsu_ctx *ctx, int r, const jitsu_error *err) {
  if (r >= 0)
    return r;
  if (err->code == r && err->message[0] != '\0')
    snprintf(ctx->last_error, sizeof(ctx->last_error), "%s", err->message);
  else if (ctx->last_error[0] == '\0') /* and jitsu__fail() left nothing */
    snprintf(ctx->last_error, sizeof(ctx->last_error), "%s", jitsu_strerror(r));
  return r;
}
