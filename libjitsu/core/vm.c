/* The vm state machine: states, legal transitions, the accounting of live
 * and starting guests; the vm table, parameters and information. It
 * tells the layers above through ctx->hooks and the subscribers, and never
 * calls them by name. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_names[JITSU_STATE_COUNT] = {
    "stopped",   "starting", "ready",    "suspending",
    "suspended", "resuming", "stopping", "failed",
};

const char *jitsu_state_name(jitsu_state state) {
  if ((unsigned)state < JITSU_STATE_COUNT)
    return state_names[state];
  return "invalid";
}

#define BIT(s) (1u << JITSU_STATE_##s)
/* allowed[from] is the set of states reachable from (from). */
static const unsigned allowed[JITSU_STATE_COUNT] = {
    [JITSU_STATE_STOPPED] = BIT(STARTING),
    /* to suspended or stopped: only when an adoption finds out
     * (jitsu_backend_adopted) */
    [JITSU_STATE_STARTING] = BIT(READY) | BIT(SUSPENDED) | BIT(STOPPING) |
                             BIT(STOPPED) | BIT(FAILED),
    [JITSU_STATE_READY] =
        BIT(SUSPENDING) | BIT(STOPPING) | BIT(STOPPED) | BIT(FAILED),
    [JITSU_STATE_SUSPENDING] =
        BIT(SUSPENDED) | BIT(READY) | BIT(STOPPED) | BIT(FAILED),
    [JITSU_STATE_SUSPENDED] =
        BIT(RESUMING) | BIT(STOPPING) | BIT(STOPPED) | BIT(FAILED),
    [JITSU_STATE_RESUMING] =
        BIT(READY) | BIT(SUSPENDED) | BIT(STOPPED) | BIT(FAILED),
    [JITSU_STATE_STOPPING] = BIT(STOPPED) | BIT(FAILED),
    [JITSU_STATE_FAILED] = BIT(STARTING),
};
#undef BIT

bool jitsu_state_transition_allowed(jitsu_state from, jitsu_state to) {
  if ((unsigned)from >= JITSU_STATE_COUNT || (unsigned)to >= JITSU_STATE_COUNT)
    return false;
  return (allowed[from] & (1u << to)) != 0;
}

bool jitsu__state_is_live(jitsu_state s) {
  return s != JITSU_STATE_STOPPED && s != JITSU_STATE_FAILED;
}

static bool state_is_starting(jitsu_state s) {
  return s == JITSU_STATE_STARTING || s == JITSU_STATE_RESUMING;
}

void jitsu__vm_account(jitsu_vm *vm, jitsu_state s, int sign) {
  jitsu_ctx *ctx = vm->ctx;
  if (jitsu__state_is_live(s)) {
    ctx->n_live = (size_t)((long)ctx->n_live + sign);
    if (sign > 0)
      jitsu_list_append(&ctx->live_vms, &vm->live);
    else
      jitsu_list_remove(&vm->live);
  }
  if (state_is_starting(s)) {
    ctx->n_starting = (size_t)((long)ctx->n_starting + sign);
    if (sign < 0 && ctx->start_queue.next != &ctx->start_queue)
      ctx->hooks.slot_freed(ctx); /* a start slot came free */
  }
}

int jitsu__vm_set_state(jitsu_vm *vm, jitsu_state state, const char *reason) {
  jitsu_state old = vm->state;
  if (!jitsu_state_transition_allowed(old, state)) {
    jitsu_vm_log(vm, JITSU_LOG_ERROR, "refused illegal transition %s -> %s",
                 jitsu_state_name(old), jitsu_state_name(state));
    return jitsu__fail(vm->ctx, JITSU_ESTATE,
                       "vm '%s': illegal transition %s -> %s", vm->name,
                       jitsu_state_name(old), jitsu_state_name(state));
  }
  char *text = NULL;
  if (reason != NULL)
    text = jitsu__strdup(reason);
  else if (vm->next_reason != NULL)
    text = vm->next_reason, vm->next_reason = NULL;
  else
    text = jitsu__strdup("");
  free(vm->next_reason);
  vm->next_reason = NULL;
  if (text != NULL) {
    free(vm->reason);
    vm->reason = text;
  }
  uint64_t now = uv_now(vm->ctx->loop);
  jitsu__metrics_state(vm, old, now - vm->state_since_ms);
  if (!jitsu__state_is_live(old) && jitsu__state_is_live(state))
    vm->live_since_ms = now;
  jitsu__vm_account(vm, old, -1);
  if (old == JITSU_STATE_STARTING)
    vm->adopting = false;
  vm->state = state;
  jitsu__vm_account(vm, state, +1);
  vm->state_since_ms = now;
  if (state == JITSU_STATE_FAILED)
    vm->failures++;
  if (!jitsu__state_is_live(state))
    vm->instance[0] = '\0';
  else if (vm->backend->describe != NULL)
    vm->backend->describe(vm, vm->instance, sizeof(vm->instance));
  jitsu_vm_log(
      vm, state == JITSU_STATE_FAILED ? JITSU_LOG_WARNING : JITSU_LOG_INFO,
      "%s -> %s%s%s", jitsu_state_name(old), jitsu_state_name(state),
      vm->reason && vm->reason[0] ? ": " : "", vm->reason ? vm->reason : "");
  if (vm->backend->state_changed != NULL)
    vm->backend->state_changed(vm, old, state);
  if (!jitsu__state_is_live(state))
    vm->ctx->hooks.guest_gone(vm);
  for (jitsu__sub *s = vm->ctx->state_subs; s != NULL;) {
    jitsu__sub *next = s->next; /* fn may unsubscribe itself */
    ((jitsu_state_fn)s->fn)(vm, old, state, vm->reason ? vm->reason : "",
                            s->arg);
    s = next;
  }
  return 0;
}

void jitsu_vm_set_reason(jitsu_vm *vm, const char *fmt, ...) {
  char text[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  free(vm->next_reason);
  vm->next_reason = jitsu__strdup(text);
}

void jitsu__vm_free(jitsu_vm *vm) {
  jitsu__metrics_free(vm);
  free(vm->params);
  free(vm->reason);
  free(vm->next_reason);
  free(vm->name);
  free(vm);
}

void jitsu__vm_ref(jitsu_vm *vm) {
  vm->refs++;
}

void jitsu__vm_unref(jitsu_vm *vm) {
  if (--vm->refs == 0 && vm->undefined)
    jitsu__vm_free(vm);
}

void jitsu__vm_event(jitsu_vm *vm, jitsu_vm_event ev) {
  for (jitsu__sub *s = vm->ctx->vm_subs; s != NULL;) {
    jitsu__sub *next = s->next; /* fn may unsubscribe itself */
    ((jitsu_vm_event_fn)s->fn)(vm, ev, s->arg);
    s = next;
  }
}

int jitsu_ctx_on_vm(jitsu_ctx *ctx, jitsu_vm_event_fn fn, void *arg) {
  return jitsu__sub_add(&ctx->vm_subs, (jitsu__any_fn)fn, arg);
}

int jitsu_ctx_off_vm(jitsu_ctx *ctx, jitsu_vm_event_fn fn, void *arg) {
  return jitsu__sub_remove(&ctx->vm_subs, (jitsu__any_fn)fn, arg);
}

jitsu_vm *jitsu_vm_find(jitsu_ctx *ctx, const char *name) {
  jitsu__hnode *n = jitsu__table_find(&ctx->vms, name);
  return n ? JITSU_CONTAINER_OF(n, jitsu_vm, node) : NULL;
}

int jitsu_vm_foreach(jitsu_ctx *ctx, int (*fn)(jitsu_vm *vm, void *arg),
                     void *arg) {
  for (jitsu_list *l = ctx->all_vms.next; l != &ctx->all_vms; l = l->next) {
    int r = fn(JITSU_CONTAINER_OF(l, jitsu_vm, all), arg);
    if (r != 0)
      return r;
  }
  return 0;
}

const char *jitsu_vm_name(const jitsu_vm *vm) {
  return vm->name;
}

jitsu_state jitsu_vm_state(const jitsu_vm *vm) {
  return vm->state;
}

jitsu_ctx *jitsu_vm_ctx(const jitsu_vm *vm) {
  return vm->ctx;
}

const char *jitsu_vm_param(const jitsu_vm *vm, const char *key, size_t index) {
  for (size_t i = 0; i < vm->n_params; i++)
    if (strcmp(vm->params[i].key, key) == 0 && index-- == 0)
      return vm->params[i].value;
  return NULL;
}

void jitsu_vm_set_data(jitsu_vm *vm, void *data) {
  vm->backend_data = data;
}

void *jitsu_vm_data(const jitsu_vm *vm) {
  return vm->backend_data;
}

jitsu_ready_method jitsu_vm_ready_method(const jitsu_vm *vm) {
  return vm->ready;
}

int jitsu_vm_info_get(const jitsu_vm *vm, jitsu_vm_info *info) {
  if (info->version != JITSU_VM_INFO_VERSION)
    return -EINVAL;
  memset(info, 0, sizeof(*info));
  info->version = JITSU_VM_INFO_VERSION;
  info->name = vm->name;
  info->backend = vm->backend->name;
  info->state = vm->state;
  info->reason = vm->reason ? vm->reason : "";
  /* A live guest's description may change without a state change (e.g.
   * its host became unreachable): ask the backend again (describe only
   * reads the vm). */
  if (jitsu__state_is_live(vm->state) && vm->backend->describe != NULL)
    vm->backend->describe((jitsu_vm *)vm, info->instance,
                          sizeof(info->instance));
  else
    snprintf(info->instance, sizeof(info->instance), "%s", vm->instance);
  info->adopted = vm->adopted;
  info->holds = vm->holds;
  info->state_since_ms = vm->state_since_ms;
  info->last_active_ms = vm->last_active_ms;
  info->summons = vm->summons_total;
  info->spawns = vm->spawns;
  info->resumes = vm->resumes;
  info->failures = vm->failures;
  info->last_start_ms = vm->last_start_ms;
  info->live_since_ms = vm->live_since_ms;
  return 0;
}

void jitsu_ctx_limits(jitsu_ctx *ctx, unsigned *max_live,
                      unsigned *max_starting, unsigned *max_waiters) {
  if (max_live)
    *max_live = ctx->max_live;
  if (max_starting)
    *max_starting = ctx->max_starting;
  if (max_waiters)
    *max_waiters = ctx->max_waiters;
}

void jitsu_ctx_counts(jitsu_ctx *ctx, size_t *defined, size_t *live,
                      size_t *starting) {
  if (defined)
    *defined = ctx->vms.count;
  if (live)
    *live = ctx->n_live;
  if (starting)
    *starting = ctx->n_starting;
}

void jitsu_ctx_refusals(jitsu_ctx *ctx, uint64_t *max_live,
                        uint64_t *max_waiters) {
  if (max_live)
    *max_live = ctx->refused[JITSU__LIMIT_LIVE];
  if (max_waiters)
    *max_waiters = ctx->refused[JITSU__LIMIT_WAITERS];
}

int jitsu_ctx_on_state(jitsu_ctx *ctx, jitsu_state_fn fn, void *arg) {
  return jitsu__sub_add(&ctx->state_subs, (jitsu__any_fn)fn, arg);
}

int jitsu_ctx_off_state(jitsu_ctx *ctx, jitsu_state_fn fn, void *arg) {
  return jitsu__sub_remove(&ctx->state_subs, (jitsu__any_fn)fn, arg);
}

const jitsu_backend_ops *jitsu_vm_backend(const jitsu_vm *vm) {
  return vm->backend;
}

uint64_t jitsu_vm_idle_timeout_ms(const jitsu_vm *vm) {
  return vm->idle_timeout_ms;
}
