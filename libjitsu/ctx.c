/* The context: it ties the rooms together (see doc/architecture.md); it is
 * created first and freed last, and nothing below calls into it. */
#include "chan_int.h"
#include "control_int.h"
#include "internal.h"

#include <stdlib.h>

/* The one backend built in (backends/process.c). */
extern const jitsu_backend_ops jitsu_backend_process;

int jitsu_ctx_options_init(jitsu_ctx_options *opts, unsigned version) {
  if (version != JITSU_CTX_OPTIONS_VERSION)
    return -EINVAL;
  jitsu_ctx_options init = JITSU_CTX_OPTIONS_INIT;
  *opts = init;
  return 0;
}

int jitsu_ctx_new(uv_loop_t *loop, const jitsu_ctx_options *opts,
                  jitsu_ctx **out) {
  jitsu_ctx_options defaults = JITSU_CTX_OPTIONS_INIT;
  if (loop == NULL || out == NULL)
    return -EINVAL;
  if (opts == NULL)
    opts = &defaults;
  if (opts->version != JITSU_CTX_OPTIONS_VERSION)
    return -EINVAL;
  jitsu_ctx *ctx = calloc(1, sizeof(*ctx));
  if (ctx == NULL)
    return -ENOMEM;
  ctx->loop = loop;
  ctx->hooks.slot_freed = jitsu__start_queue_kick;
  ctx->hooks.guest_gone = jitsu__define_guest_gone;
  ctx->max_live = opts->max_live ? opts->max_live : JITSU_DEFAULT_MAX_LIVE;
  ctx->max_starting =
      opts->max_starting ? opts->max_starting : JITSU_DEFAULT_MAX_STARTING;
  ctx->max_waiters =
      opts->max_waiters ? opts->max_waiters : JITSU_DEFAULT_MAX_WAITERS;
  ctx->log_max = JITSU_LOG_INFO;
  char dir[512];
  if (opts->state_dir == NULL)
    jitsu_default_state_dir(dir, sizeof(dir));
  ctx->state_dir = jitsu__strdup(opts->state_dir ? opts->state_dir : dir);
  ctx->lock_fd = -1;
  jitsu_hash_key random;
  jitsu_hash_key_random(&random);
  ctx->notify_tag = (uint32_t)random.k0;
  jitsu__table_init(&ctx->vms);
  jitsu__table_init(&ctx->triggers);
  jitsu_list_init(&ctx->all_vms);
  jitsu_list_init(&ctx->live_vms);
  jitsu_list_init(&ctx->start_queue);
  jitsu_list_init(&ctx->spares);
  if (ctx->state_dir == NULL)
    goto error;
  jitsu__defer_init(ctx);
  if (jitsu_backend_register(ctx, &jitsu_backend_process) < 0)
    goto error; /* the one backend built in; module.c loads the others */
  *out = ctx;
  return 0;
error:
  jitsu_ctx_free(ctx);
  return -ENOMEM;
}

/* Everything the context owns; every vm is gone by now. */
static void ctx_destroy(jitsu_ctx *ctx) {
  jitsu__table_free(&ctx->vms);
  jitsu__table_free(&ctx->triggers);
  while (ctx->keys != NULL) {
    jitsu__section_keys *k = ctx->keys;
    ctx->keys = k->next;
    free(k);
  }
  jitsu__sub_clear(&ctx->vm_subs);
  jitsu__sub_clear(&ctx->reload_subs);
  free(ctx->config_path);
  while (ctx->stats_sources != NULL) {
    jitsu__stats_src *src = ctx->stats_sources;
    ctx->stats_sources = src->next;
    free(src->group);
    free(src);
  }
  jitsu__sub_clear(&ctx->state_subs);
  free(ctx->globals);
  free(ctx->global_lines);
  free(ctx->backends);
  free(ctx->backend_names);
  free(ctx->state_dir);
  free(ctx);
}

/* The last close of a context: completions still queued run now (those of
 * vms that went away with -ECANCELED), then the memory goes. */
static void ctx_closed(uv_handle_t *h) {
  jitsu_ctx *ctx = h->data;
  jitsu__defer_drain(ctx);
  ctx_destroy(ctx);
}

void jitsu_ctx_free(jitsu_ctx *ctx) {
  if (ctx == NULL || ctx->closing)
    return;
  ctx->closing = true;
  jitsu__idle_free(ctx);
  jitsu__control_free(ctx);
  jitsu__rendezvous_free(ctx);
  /* Undefining fails every waiting summon, stop and suspend with
   * -ECANCELED; a live guest is left for a later ctx. */
  while (ctx->all_vms.next != &ctx->all_vms) {
    jitsu_vm *vm = JITSU_CONTAINER_OF(ctx->all_vms.next, jitsu_vm, all);
    jitsu__vm_forget(vm);
  }
  jitsu__state_dir_unlock(ctx);
  if (ctx->deferred_idle_open) {
    uv_close((uv_handle_t *)&ctx->deferred_idle, ctx_closed);
    return;
  }
  jitsu__defer_drain(ctx);
  ctx_destroy(ctx);
}
