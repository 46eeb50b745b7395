/* The verbs (summon, stop, suspend, resume) and the backends' reports. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static jitsu__waiter *waiter_new(jitsu_vm *vm, jitsu_vm_cb cb, void *arg) {
  jitsu__waiter *w = calloc(1, sizeof(*w));
  if (w != NULL) {
    w->vm = vm;
    w->cb = cb;
    w->arg = arg;
    jitsu__vm_ref(vm); /* until its callback has returned */
  }
  return w;
}

static void push(jitsu__waiter **list, jitsu__waiter *w) {
  w->next = *list;
  *list = w;
}

/* Complete the summons with (status), in the order they came. */
static void finish_summons(jitsu_vm *vm, int status) {
  jitsu__start_queue_remove(vm); /* nothing waits for its start now */
  jitsu__waiter *list = vm->summons;
  vm->summons = NULL;
  vm->summons_tail = &vm->summons;
  vm->n_summons = 0;
  jitsu__defer_list(vm->ctx, list, status);
}

static void finish_list(jitsu_vm *vm, jitsu__waiter **list, int status) {
  /* Lists other than summons are pushed at the head: reverse them. */
  jitsu__waiter *rev = NULL;
  while (*list != NULL) {
    jitsu__waiter *w = *list;
    *list = w->next;
    w->next = rev;
    rev = w;
  }
  jitsu__defer_list(vm->ctx, rev, status);
}

/* The verbs refuse a vm that was undefined (a callback may still hold
 * it). */
static int check_defined(jitsu_vm *vm) {
  if (!vm->undefined)
    return 0;
  return jitsu__fail(vm->ctx, -ENOENT, "vm '%s' was undefined", vm->name);
}

/* A summon of (vm) was refused for (limit), as (ctx)'s last error says:
 * count it, and log it at most once per reason every
 * JITSU__REFUSAL_LOG_MS, with how many were not logged since. */
static int refused(jitsu_vm *vm, jitsu__limit limit) {
  jitsu_ctx *ctx = vm->ctx;
  uint64_t now = uv_now(ctx->loop);
  ctx->refused[limit]++;
  if (ctx->refused_logged_ms[limit] != 0 &&
      now - ctx->refused_logged_ms[limit] < JITSU__REFUSAL_LOG_MS) {
    ctx->refused_unlogged[limit]++;
    return JITSU_ELIMIT;
  }
  uint64_t more = ctx->refused_unlogged[limit];
  jitsu_vm_log(
      vm, JITSU_LOG_WARNING, "%s (%llu more refused for it in the last %llu s)",
      jitsu_ctx_last_error(ctx), (unsigned long long)more,
      (unsigned long long)(ctx->refused_logged_ms[limit]
                               ? (now - ctx->refused_logged_ms[limit]) / 1000
                               : 0));
  ctx->refused_logged_ms[limit] = now;
  ctx->refused_unlogged[limit] = 0;
  return JITSU_ELIMIT;
}

/* max-live counts the guests that run, those queued to start and
 * backends' spares; spares give way to a summon. */
static int check_live_limit(jitsu_vm *vm, bool new_live) {
  jitsu_ctx *ctx = vm->ctx;
  size_t live = ctx->n_live + ctx->n_queued_new;
  if (new_live && live < ctx->max_live && live + ctx->n_spares >= ctx->max_live)
    jitsu__spares_make_room(vm, live);
  if (!new_live || live < ctx->max_live)
    return 0;
  jitsu__fail(ctx, JITSU_ELIMIT,
              "cannot summon vm '%s': %zu guests live or queued to start, "
              "max-live is %u",
              vm->name, live, ctx->max_live);
  return refused(vm, JITSU__LIMIT_LIVE);
}

static bool is_new_live(const jitsu_vm *vm) {
  return vm->state == JITSU_STATE_STOPPED || vm->state == JITSU_STATE_FAILED;
}

/* A vm summoned while max-starting guests start waits for a slot, in
 * order: starts are bounded, never refused for it. The queue holds each
 * vm once, so it is as long as the vms defined, at most. */
static void queue_start(jitsu_vm *vm) {
  jitsu_ctx *ctx = vm->ctx;
  vm->queued = true;
  vm->queued_new = is_new_live(vm);
  jitsu_list_append(&ctx->start_queue, &vm->queue);
  if (vm->queued_new)
    ctx->n_queued_new++;
  jitsu_vm_log(vm, JITSU_LOG_DEBUG,
               "waiting for a start slot (%zu starting, max-starting %u)",
               ctx->n_starting, ctx->max_starting);
}

void jitsu__start_queue_remove(jitsu_vm *vm) {
  if (!vm->queued)
    return;
  jitsu_ctx *ctx = vm->ctx;
  vm->queued = false;
  jitsu_list_remove(&vm->queue);
  if (vm->queued_new)
    ctx->n_queued_new--;
}

static void vm_start(jitsu_vm *vm);
static void vm_resume(jitsu_vm *vm);
static void vm_became_ready(jitsu_vm *vm);
static void vm_ready_timeout(jitsu_vm *vm);

/* What the readiness checks (ready.c) found. */
static void ready_outcome(jitsu_vm *vm, int status) {
  if (status == 0)
    vm_became_ready(vm);
  else
    vm_ready_timeout(vm);
}

/* Start queued vms while there are slots. Deferred, so that it never runs
 * inside the state change of another vm. */
static void run_queue(jitsu_vm *unused, int status, void *arg) {
  jitsu_ctx *ctx = arg;
  ctx->queue_kicked = false;
  if (status < 0)
    return; /* the context is going away */
  while (ctx->start_queue.next != &ctx->start_queue &&
         ctx->n_starting < ctx->max_starting) {
    jitsu_vm *vm = JITSU_CONTAINER_OF(ctx->start_queue.next, jitsu_vm, queue);
    jitsu__start_queue_remove(vm);
    if (vm->n_summons == 0)
      continue; /* its summons were cancelled */
    if (is_new_live(vm) && ctx->n_live >= ctx->max_live) {
      jitsu__fail(ctx, JITSU_ELIMIT,
                  "summons of vm '%s' refused at the head of the start "
                  "queue: %zu guests live, max-live is %u",
                  vm->name, ctx->n_live, ctx->max_live);
      finish_summons(vm, refused(vm, JITSU__LIMIT_LIVE));
    } else if (is_new_live(vm)) {
      vm_start(vm);
    } else if (vm->state == JITSU_STATE_SUSPENDED) {
      vm_resume(vm);
    }
  }
}

/* Start (or resume) (vm) now if a slot is free and nobody waits before
 * it, else queue it. */
static void start_or_queue(jitsu_vm *vm) {
  jitsu_ctx *ctx = vm->ctx;
  if (ctx->n_starting >= ctx->max_starting ||
      ctx->start_queue.next != &ctx->start_queue)
    queue_start(vm); /* behind the others: first come, first started */
  else if (is_new_live(vm))
    vm_start(vm);
  else
    vm_resume(vm);
}

/* Summons that waited while the guest went away start a new one. */
static void start_again(jitsu_vm *vm) {
  if (vm->summons == NULL)
    return;
  if (check_live_limit(vm, true) < 0)
    finish_summons(vm, JITSU_ELIMIT);
  else
    start_or_queue(vm);
}

void jitsu__start_queue_kick(jitsu_ctx *ctx) {
  if (ctx->queue_kicked)
    return;
  if (jitsu__defer(ctx, NULL, run_queue, ctx, 0) == 0)
    ctx->queue_kicked = true;
}

/* Enter failed with the backend's reason and fail the summons. */
static void fail_start(jitsu_vm *vm, int err) {
  jitsu__ready_cancel(vm);
  jitsu__metrics_event(vm, JITSU__M_READY_FAILURE, 0);
  if (vm->next_reason == NULL)
    jitsu_vm_set_reason(vm, "%s", jitsu_strerror(err));
  jitsu__vm_set_state(vm, JITSU_STATE_FAILED, NULL);
  finish_summons(vm, err);
}

static void vm_start(jitsu_vm *vm) {
  vm->spawns++;
  vm->adopted = false;
  vm->start_begin_ms = uv_now(vm->ctx->loop);
  vm->op_begin_ns = uv_hrtime();
  vm->last_active_ms = vm->start_begin_ms;
  jitsu__vm_set_state(vm, JITSU_STATE_STARTING, "");
  int r = jitsu__ready_prepare(vm, ready_outcome);
  if (r < 0) {
    fail_start(vm, r);
    return;
  }
  r = vm->backend->start(vm);
  /* The backend may have reported already (from inside start). */
  if (r < 0 && vm->state == JITSU_STATE_STARTING)
    fail_start(vm, r);
}

static void vm_resume(jitsu_vm *vm) {
  vm->op_begin_ns = uv_hrtime();
  jitsu__vm_set_state(vm, JITSU_STATE_RESUMING, "");
  int r = vm->backend->resume(vm);
  if (r < 0 && vm->state == JITSU_STATE_RESUMING)
    jitsu_backend_resumed(vm, r);
}

static void vm_stop(jitsu_vm *vm, jitsu_stop_mode mode) {
  vm->stop_pending = false;
  if (vm->state != JITSU_STATE_STOPPING) {
    char why[160];
    snprintf(why, sizeof(why), "%s requested%s%s",
             mode == JITSU_STOP_DESTROY ? "destroy" : "shutdown",
             vm->stop_by ? " by " : "", vm->stop_by ? vm->stop_by : "");
    jitsu__vm_set_state(vm, JITSU_STATE_STOPPING, why);
  }
  vm->stop_by = NULL;
  int r = vm->backend->stop(vm, mode, vm->stop_grace_ms);
  if (r < 0 && vm->state == JITSU_STATE_STOPPING) {
    if (vm->next_reason == NULL)
      jitsu_vm_set_reason(vm, "stop failed: %s", jitsu_strerror(r));
    jitsu__vm_set_state(vm, JITSU_STATE_FAILED, NULL);
    finish_list(vm, &vm->stops, r);
    finish_summons(vm, r);
  }
}

int jitsu_vm_summon(jitsu_vm *vm, jitsu_vm_cb cb, void *arg) {
  jitsu_ctx *ctx = vm->ctx;
  int r = check_defined(vm);
  if (r < 0)
    return r;
  if (vm->removing)
    return jitsu__fail(ctx, JITSU_ESTATE,
                       "cannot summon vm '%s': a reload is removing it",
                       vm->name);
  vm->last_active_ms = uv_now(ctx->loop);
  switch (vm->state) {
  case JITSU_STATE_READY:
    r = jitsu__defer(ctx, vm, cb, arg, 0);
    if (r == 0)
      vm->summons_total++;
    return r;
  case JITSU_STATE_STOPPED:
  case JITSU_STATE_FAILED:
  case JITSU_STATE_SUSPENDED:
    if (!vm->queued) {
      r = check_live_limit(vm, is_new_live(vm));
      break;
    }
    __attribute__((fallthrough)); /* queued: it waits like a starting vm */
  default:
    if (vm->n_summons >= ctx->max_waiters) {
      jitsu__fail(ctx, JITSU_ELIMIT,
                  "cannot summon vm '%s': %u summons already wait, "
                  "max-waiters is %u",
                  vm->name, vm->n_summons, ctx->max_waiters);
      r = refused(vm, JITSU__LIMIT_WAITERS);
    }
    break;
  }
  if (r < 0)
    return r;
  jitsu__waiter *w = waiter_new(vm, cb, arg);
  if (w == NULL)
    return -ENOMEM;
  *vm->summons_tail = w;
  vm->summons_tail = &w->next;
  vm->n_summons++;
  vm->summons_total++;
  bool startable = is_new_live(vm) || vm->state == JITSU_STATE_SUSPENDED;
  if (startable && !vm->queued)
    start_or_queue(vm);
  return 0;
}

int jitsu_vm_stop(jitsu_vm *vm, jitsu_stop_mode mode, jitsu_vm_cb cb,
                  void *arg) {
  jitsu_ctx *ctx = vm->ctx;
  if (mode != JITSU_STOP_SHUTDOWN && mode != JITSU_STOP_DESTROY)
    return jitsu__fail(ctx, -EINVAL, "unknown stop mode %d", (int)mode);
  if (vm->undefined)
    return check_defined(vm);
  if (vm->queued) /* it has not started: it need not (leaves the queue) */
    finish_summons(vm, JITSU_ECANCELED);
  if (vm->state == JITSU_STATE_STOPPED || vm->state == JITSU_STATE_FAILED)
    return jitsu__defer(ctx, vm, cb, arg, 0);
  jitsu__waiter *w = waiter_new(vm, cb, arg);
  if (w == NULL)
    return -ENOMEM;
  push(&vm->stops, w);
  vm->stop_by = ctx->asking;
  switch (vm->state) {
  case JITSU_STATE_SUSPENDING:
  case JITSU_STATE_RESUMING:
    /* Let the backend finish first; the stop follows. */
    if (!vm->stop_pending || mode == JITSU_STOP_DESTROY)
      vm->pending_stop = mode;
    vm->stop_pending = true;
    return 0;
  case JITSU_STATE_STARTING:
    jitsu__ready_cancel(vm);
    finish_summons(vm, JITSU_ECANCELED);
    vm_stop(vm, mode);
    return 0;
  case JITSU_STATE_STOPPING:
    /* Already stopping: a destroy overtakes a shutdown's grace. */
    if (mode == JITSU_STOP_DESTROY)
      vm_stop(vm, mode);
    return 0;
  default:
    vm_stop(vm, mode);
    return 0;
  }
}

int jitsu_vm_suspend(jitsu_vm *vm, jitsu_vm_cb cb, void *arg) {
  if (vm->undefined)
    return check_defined(vm);
  if (vm->backend->suspend == NULL)
    return jitsu__fail(vm->ctx, -ENOTSUP,
                       "cannot suspend vm '%s': backend '%s' cannot suspend",
                       vm->name, vm->backend->name);
  if (vm->state == JITSU_STATE_SUSPENDED) /* already: done, as stop is */
    return jitsu__defer(vm->ctx, vm, cb, arg, 0);
  if (vm->state != JITSU_STATE_READY)
    return jitsu__fail(vm->ctx, JITSU_ESTATE,
                       "cannot suspend vm '%s': it is %s", vm->name,
                       jitsu_state_name(vm->state));
  jitsu__waiter *w = waiter_new(vm, cb, arg);
  if (w == NULL)
    return -ENOMEM;
  push(&vm->ops, w);
  char why[160] = "";
  if (vm->ctx->asking != NULL)
    snprintf(why, sizeof(why), "suspend requested by %s", vm->ctx->asking);
  jitsu__vm_set_state(vm, JITSU_STATE_SUSPENDING, why);
  int r = vm->backend->suspend(vm);
  if (r < 0 && vm->state == JITSU_STATE_SUSPENDING)
    jitsu_backend_suspended(vm, r);
  return 0;
}

int jitsu_vm_snapshot(jitsu_vm *vm, jitsu_vm_cb cb, void *arg) {
  if (vm->undefined)
    return check_defined(vm);
  if (vm->backend->snapshot == NULL)
    return jitsu__fail(vm->ctx, -ENOTSUP,
                       "cannot snapshot vm '%s': backend '%s' cannot", vm->name,
                       vm->backend->name);
  if (vm->state != JITSU_STATE_READY)
    return jitsu__fail(vm->ctx, JITSU_ESTATE,
                       "cannot snapshot vm '%s': it is %s", vm->name,
                       jitsu_state_name(vm->state));
  jitsu__waiter *w = waiter_new(vm, cb, arg);
  if (w == NULL)
    return -ENOMEM;
  int r = vm->backend->snapshot(vm);
  if (r < 0) {
    free(w);
    jitsu__vm_unref(vm); /* the waiter's reference */
    char *why = vm->next_reason;
    vm->next_reason = NULL;
    r = jitsu__fail(vm->ctx, r, "cannot snapshot vm '%s': %s", vm->name,
                    why ? why : jitsu_strerror(r));
    free(why);
    return r;
  }
  push(&vm->snaps, w);
  return 0;
}

void jitsu_backend_snapshotted(jitsu_vm *vm, int err) {
  if (err < 0 && vm->next_reason != NULL) {
    jitsu_vm_log(vm, JITSU_LOG_ERROR, "%s", vm->next_reason);
    free(vm->next_reason);
    vm->next_reason = NULL;
  }
  finish_list(vm, &vm->snaps, err);
}

int jitsu_vm_resume(jitsu_vm *vm, jitsu_vm_cb cb, void *arg) {
  if (vm->undefined)
    return check_defined(vm);
  if (vm->state == JITSU_STATE_READY) /* already running: done */
    return jitsu__defer(vm->ctx, vm, cb, arg, 0);
  if (vm->state != JITSU_STATE_SUSPENDED)
    return jitsu__fail(vm->ctx, JITSU_ESTATE, "cannot resume vm '%s': it is %s",
                       vm->name, jitsu_state_name(vm->state));
  /* An operator's resume is not queued: it runs now or is refused. */
  if (vm->ctx->n_starting >= vm->ctx->max_starting)
    return jitsu__fail(vm->ctx, JITSU_ELIMIT,
                       "cannot resume vm '%s': %zu guests starting, "
                       "max-starting is %u",
                       vm->name, vm->ctx->n_starting, vm->ctx->max_starting);
  jitsu__waiter *w = waiter_new(vm, cb, arg);
  if (w == NULL)
    return -ENOMEM;
  jitsu__start_queue_remove(vm); /* its summons wait for this resume */
  push(&vm->ops, w);
  vm->last_active_ms = uv_now(vm->ctx->loop);
  vm_resume(vm);
  return 0;
}

void jitsu_vm_touch(jitsu_vm *vm) {
  vm->last_active_ms = uv_now(vm->ctx->loop);
}

void jitsu_vm_hold(jitsu_vm *vm) {
  vm->holds++;
  jitsu_vm_touch(vm);
}

void jitsu_vm_release(jitsu_vm *vm) {
  if (vm->holds > 0)
    vm->holds--;
  jitsu_vm_touch(vm);
}

/* After a suspend or resume completes: a stop that waited goes first,
 * then summons that came meanwhile. */
static void after_transition(jitsu_vm *vm) {
  if (vm->stop_pending) {
    finish_summons(vm, JITSU_ECANCELED);
    vm_stop(vm, vm->pending_stop);
  } else if (vm->state == JITSU_STATE_SUSPENDED && vm->summons != NULL) {
    vm_resume(vm);
  }
}

void jitsu_backend_started(jitsu_vm *vm, int err) {
  if (vm->state != JITSU_STATE_STARTING || vm->adopting)
    return; /* a stop overtook the start; an adoption ends otherwise */
  if (err < 0) {
    fail_start(vm, err);
    return;
  }
  if (vm->backend->describe != NULL)
    vm->backend->describe(vm, vm->instance, sizeof(vm->instance));
  err = jitsu__ready_begin(vm);
  if (err < 0) {
    jitsu_vm_set_reason(vm, "readiness check failed: %s", jitsu_strerror(err));
    vm_ready_timeout(vm);
  }
}

static void vm_became_ready(jitsu_vm *vm) {
  jitsu__ready_cancel(vm);
  if (vm->state != JITSU_STATE_STARTING)
    return;
  uint64_t now = uv_now(vm->ctx->loop);
  vm->last_start_ms = now - vm->start_begin_ms;
  vm->last_active_ms = now;
  jitsu__metrics_event(vm, JITSU__M_COLD_START, uv_hrtime() - vm->op_begin_ns);
  jitsu__vm_set_state(vm, JITSU_STATE_READY, "");
  finish_summons(vm, 0);
}

static void vm_ready_timeout(jitsu_vm *vm) {
  jitsu__ready_cancel(vm);
  if (vm->state != JITSU_STATE_STARTING)
    return;
  if (vm->next_reason == NULL)
    jitsu_vm_set_reason(vm, "not ready within %llu ms",
                        (unsigned long long)vm->ready_timeout_ms);
  char *reason = vm->next_reason;
  vm->next_reason = NULL;
  jitsu__metrics_event(vm, JITSU__M_READY_TIMEOUT, 0);
  finish_summons(vm, JITSU_ETIMEDOUT);
  vm->fail_on_exit = true;
  jitsu__vm_set_state(vm, JITSU_STATE_STOPPING, reason ? reason : "");
  free(reason);
  vm_stop(vm, JITSU_STOP_DESTROY);
}

void jitsu_backend_exited(jitsu_vm *vm, int clean, const char *how) {
  jitsu_state s = vm->state;
  jitsu__ready_cancel(vm);
  if (s == JITSU_STATE_STOPPED || s == JITSU_STATE_FAILED || vm->undefined) {
    jitsu_vm_log(vm, JITSU_LOG_DEBUG, "exit reported while %s: %s",
                 jitsu_state_name(s), how);
    return;
  }
  /* A guest that ends while its adoption asks it: as if it had ended
   * just before (its summons start a new one). */
  bool adopting = vm->adopting;
  bool starting = s == JITSU_STATE_STARTING && !adopting;
  bool failed =
      !clean || starting || (s == JITSU_STATE_STOPPING && vm->fail_on_exit);
  const char *reason = how;
  char text[512];
  if (starting)
    jitsu__metrics_event(vm, JITSU__M_READY_FAILURE, 0);
  else if (!clean && s != JITSU_STATE_STOPPING)
    jitsu__metrics_event(vm, JITSU__M_CRASH, 0);
  if (starting) {
    snprintf(text, sizeof(text), "%s before it was ready", how);
    reason = text;
  } else if (s == JITSU_STATE_STOPPING && vm->fail_on_exit) {
    reason = vm->reason; /* keep why it was destroyed */
  }
  vm->fail_on_exit = false;
  vm->stop_pending = false;
  free(vm->next_reason);
  vm->next_reason = NULL;
  char *keep = jitsu__strdup(reason ? reason : "");
  /* Queued before the state change, whose subscribers may undefine the vm:
   * the stops did what they asked for. */
  finish_list(vm, &vm->stops, 0);
  finish_list(vm, &vm->ops, JITSU_EEXITED);
  finish_list(vm, &vm->snaps, JITSU_EEXITED);
  jitsu__vm_set_state(vm, failed ? JITSU_STATE_FAILED : JITSU_STATE_STOPPED,
                      keep ? keep : "");
  free(keep);
  if (s == JITSU_STATE_STOPPING || adopting)
    start_again(vm);
  else
    finish_summons(vm, JITSU_EEXITED);
}

void jitsu_backend_adopted(jitsu_vm *vm, jitsu_state state, const char *how) {
  if (vm->state != JITSU_STATE_STARTING || !vm->adopting)
    return; /* a stop overtook the adoption */
  if (state != JITSU_STATE_READY && state != JITSU_STATE_SUSPENDED)
    state = JITSU_STATE_STOPPED;
  if (state != JITSU_STATE_STOPPED) {
    vm->adopted = true;
    vm->last_active_ms = uv_now(vm->ctx->loop);
  }
  char text[512];
  snprintf(text, sizeof(text), "%s%s%s",
           state == JITSU_STATE_STOPPED ? "nothing to adopt" : "adopted",
           how != NULL && how[0] ? ": " : "", how != NULL ? how : "");
  jitsu__vm_set_state(vm, state, text);
  if (state == JITSU_STATE_READY)
    finish_summons(vm, 0);
  else if (state == JITSU_STATE_SUSPENDED && vm->summons != NULL)
    start_or_queue(vm); /* resumed for them, as a summon would */
  else if (state == JITSU_STATE_STOPPED)
    start_again(vm);
}

void jitsu_backend_suspended(jitsu_vm *vm, int err) {
  if (vm->state != JITSU_STATE_SUSPENDING)
    return;
  if (err < 0) {
    if (vm->next_reason == NULL)
      jitsu_vm_set_reason(vm, "suspend failed: %s", jitsu_strerror(err));
    jitsu__vm_set_state(vm, JITSU_STATE_READY, NULL);
    finish_list(vm, &vm->ops, err);
    if (vm->summons != NULL)
      finish_summons(vm, 0);
  } else {
    jitsu__vm_set_state(vm, JITSU_STATE_SUSPENDED, "");
    finish_list(vm, &vm->ops, 0);
  }
  after_transition(vm);
}

void jitsu_backend_resumed(jitsu_vm *vm, int err) {
  if (vm->state != JITSU_STATE_RESUMING)
    return;
  if (err < 0) {
    if (vm->next_reason == NULL)
      jitsu_vm_set_reason(vm, "resume failed: %s", jitsu_strerror(err));
    jitsu__vm_set_state(vm, JITSU_STATE_SUSPENDED, NULL);
    finish_list(vm, &vm->ops, err);
    finish_summons(vm, err);
  } else {
    vm->resumes++;
    vm->last_active_ms = uv_now(vm->ctx->loop);
    jitsu__metrics_event(vm, JITSU__M_RESUME, uv_hrtime() - vm->op_begin_ns);
    jitsu__vm_set_state(vm, JITSU_STATE_READY, "");
    finish_list(vm, &vm->ops, 0);
    finish_summons(vm, 0);
  }
  after_transition(vm);
}
