/* The optional idle policy: put away ready guests nobody uses. */
#include "internal.h"

#include <stdlib.h>

struct jitsu__idle {
  jitsu_ctx *ctx;
  uv_timer_t timer;
};

static void idle_tick(uv_timer_t *t) {
  jitsu__idle *idle = t->data;
  jitsu_ctx *ctx = idle->ctx;
  uint64_t now = uv_now(ctx->loop);
  jitsu_list *l = ctx->live_vms.next;
  while (l != &ctx->live_vms) {
    jitsu_vm *vm = JITSU_CONTAINER_OF(l, jitsu_vm, live);
    l = l->next; /* the action may move vm off the live list */
    if (vm->state != JITSU_STATE_READY || vm->idle_timeout_ms == 0 ||
        vm->idle_action == JITSU_IDLE_NONE || vm->holds > 0 ||
        now - vm->last_active_ms < vm->idle_timeout_ms)
      continue;
    if (vm->backend->busy != NULL && vm->backend->busy(vm) > 0) {
      vm->last_active_ms = now; /* e.g. a connection open on its socket */
      continue;
    }
    jitsu_vm_log(vm, JITSU_LOG_INFO, "idle for %llu ms: %s",
                 (unsigned long long)(now - vm->last_active_ms),
                 vm->idle_action == JITSU_IDLE_SUSPEND    ? "suspending"
                 : vm->idle_action == JITSU_IDLE_SHUTDOWN ? "shutting down"
                                                          : "destroying");
    int r;
    if (vm->idle_action == JITSU_IDLE_SUSPEND)
      r = JITSU__BY(ctx, "the idle policy", jitsu_vm_suspend(vm, NULL, NULL));
    else
      r = JITSU__BY(ctx, "the idle policy",
                    jitsu_vm_stop(vm,
                                  vm->idle_action == JITSU_IDLE_SHUTDOWN
                                      ? JITSU_STOP_SHUTDOWN
                                      : JITSU_STOP_DESTROY,
                                  NULL, NULL));
    if (r < 0)
      jitsu_vm_log(vm, JITSU_LOG_WARNING, "idle action failed: %s",
                   jitsu_ctx_last_error(ctx));
  }
}

int jitsu_idle_attach(jitsu_ctx *ctx, const jitsu_idle_options *opts) {
  jitsu_idle_options defaults = JITSU_IDLE_OPTIONS_INIT;
  if (opts == NULL)
    opts = &defaults;
  if (opts->version != JITSU_IDLE_OPTIONS_VERSION)
    return jitsu__fail(ctx, -EINVAL, "idle options of version %u, not %u",
                       opts->version, JITSU_IDLE_OPTIONS_VERSION);
  if (ctx->idle != NULL)
    return jitsu__fail(ctx, -EEXIST, "the idle policy is attached already");
  jitsu__idle *idle = calloc(1, sizeof(*idle));
  if (idle == NULL)
    return jitsu__fail(ctx, -ENOMEM, "out of memory");
  idle->ctx = ctx;
  uv_timer_init(ctx->loop, &idle->timer);
  idle->timer.data = idle;
  uint64_t every = opts->check_interval_ms ? opts->check_interval_ms : 1000;
  uv_timer_start(&idle->timer, idle_tick, every, every);
  ctx->idle = idle;
  return 0;
}

static void idle_closed(uv_handle_t *h) {
  free(h->data);
}

void jitsu_idle_detach(jitsu_ctx *ctx) {
  if (ctx->idle == NULL)
    return;
  uv_close((uv_handle_t *)&ctx->idle->timer, idle_closed);
  ctx->idle = NULL;
}

void jitsu__idle_free(jitsu_ctx *ctx) {
  jitsu_idle_detach(ctx);
}
