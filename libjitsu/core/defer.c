/* Deferred completions: callbacks run from the loop, never re-entrantly
 * from inside the call that queued them. */
#include "internal.h"

#include <stdlib.h>

/* Run the oldest queued completion. */
static void deferred_run_one(jitsu_ctx *ctx) {
  jitsu__waiter *w = ctx->deferred;
  ctx->deferred = w->next;
  if (ctx->deferred == NULL)
    ctx->deferred_tail = &ctx->deferred;
  ctx->n_deferred--;
  if (w->cb != NULL)
    w->cb(w->vm, w->status, w->arg);
  if (w->vm != NULL)
    jitsu__vm_unref(w->vm);
  free(w);
}

static void deferred_run(uv_idle_t *idle) {
  jitsu_ctx *ctx = idle->data;
  /* The completions queued now: those queued by these callbacks run on
   * the next turn of the loop. Each is taken from the live queue, so a
   * callback may undefine vms or free the context meanwhile. */
  for (size_t n = ctx->n_deferred; n > 0 && ctx->deferred != NULL; n--)
    deferred_run_one(ctx);
  if (ctx->deferred == NULL && !ctx->closing)
    uv_idle_stop(idle);
}

static void defer_waiter(jitsu_ctx *ctx, jitsu__waiter *w) {
  w->next = NULL;
  *ctx->deferred_tail = w;
  ctx->deferred_tail = &w->next;
  ctx->n_deferred++;
  if (!ctx->closing)
    uv_idle_start(&ctx->deferred_idle, deferred_run);
}

int jitsu__defer(jitsu_ctx *ctx, jitsu_vm *vm, jitsu_vm_cb cb, void *arg,
                 int status) {
  jitsu__waiter *w = malloc(sizeof(*w));
  if (w == NULL)
    return -ENOMEM;
  w->vm = vm;
  w->cb = cb;
  w->arg = arg;
  w->status = status;
  if (vm != NULL)
    jitsu__vm_ref(vm);
  defer_waiter(ctx, w);
  return 0;
}

void jitsu__defer_list(jitsu_ctx *ctx, jitsu__waiter *list, int status) {
  while (list != NULL) {
    jitsu__waiter *w = list;
    list = w->next;
    w->status = status;
    defer_waiter(ctx, w);
  }
}

void jitsu__defer_init(jitsu_ctx *ctx) {
  ctx->deferred_tail = &ctx->deferred;
  uv_idle_init(ctx->loop, &ctx->deferred_idle);
  ctx->deferred_idle.data = ctx;
  ctx->deferred_idle_open = true;
}

void jitsu__defer_drain(jitsu_ctx *ctx) {
  while (ctx->deferred != NULL)
    deferred_run_one(ctx);
}
