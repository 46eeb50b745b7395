/* vm definitions: define, redefine (reloads), undefine. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jitsu__pending_def {
  const jitsu_backend_ops *backend;
  jitsu_vm_def def;
  char *ready_address;
  jitsu_vm holder; /* its params hold a copy of def's */
};

static int copy_params(jitsu_vm *vm, const jitsu_param *params, size_t n) {
  size_t bytes = n * sizeof(jitsu_param);
  for (size_t i = 0; i < n; i++)
    bytes += strlen(params[i].key) + strlen(params[i].value) + 2;
  if (n == 0)
    return 0;
  vm->params = malloc(bytes);
  if (vm->params == NULL)
    return -ENOMEM;
  char *p = (char *)(vm->params + n);
  for (size_t i = 0; i < n; i++) {
    size_t kl = strlen(params[i].key) + 1, vl = strlen(params[i].value) + 1;
    memcpy(p, params[i].key, kl);
    vm->params[i].key = p;
    p += kl;
    memcpy(p, params[i].value, vl);
    vm->params[i].value = p;
    p += vl;
  }
  vm->n_params = n;
  return 0;
}

static int check_def(jitsu_ctx *ctx, const jitsu_vm_def *def,
                     const jitsu_backend_ops **backend, jitsu_error *err) {
  if (def->version != JITSU_VM_DEF_VERSION)
    return jitsu_error_set(err, -EINVAL, NULL, "unsupported jitsu_vm_def");
  if (def->name == NULL || jitsu__check_vm_name(def->name) < 0)
    return jitsu_error_set(err, -EINVAL, NULL,
                           "invalid vm name '%s': use 1 to 63 of "
                           "[A-Za-z0-9_.-], not starting with '.' nor "
                           "ending in .spareN (pools' spares)",
                           def->name ? def->name : "(null)");
  if (jitsu_vm_find(ctx, def->name) != NULL)
    return jitsu_error_set(err, -EEXIST, NULL, "vm '%s' is already defined",
                           def->name);
  const char *bname = def->backend ? def->backend : "process";
  char why[1400];
  *backend = jitsu__backend_find(ctx, bname, why, sizeof(why));
  if (*backend == NULL)
    return jitsu_error_set(err, -ENOENT, "backend", "%s", why);
  if ((unsigned)def->ready > JITSU_READY_HTTP)
    return jitsu_error_set(err, -EINVAL, "ready", "unknown readiness method");
  if ((unsigned)def->idle_action > JITSU_IDLE_SUSPEND)
    return jitsu_error_set(err, -EINVAL, "idle-action", "unknown idle action");
  if (def->idle_action == JITSU_IDLE_SUSPEND && (*backend)->suspend == NULL)
    return jitsu_error_set(err, -EINVAL, "idle-action",
                           "backend '%s' cannot suspend", bname);
  return jitsu__check_vm_params(ctx, *backend, def->params, def->n_params, err);
}

void jitsu__vm_apply_settings(jitsu_vm *vm, const jitsu_vm_def *def) {
  vm->ready = def->ready;
  vm->ready_marker = def->ready_marker;
  memset(&vm->ready_addr, 0, sizeof(vm->ready_addr));
  strcpy(vm->ready_path, "/");
  if ((def->ready == JITSU_READY_TCP || def->ready == JITSU_READY_HTTP) &&
      def->ready_address != NULL)
    jitsu__parse_ready_address(def->ready_address,
                               def->ready == JITSU_READY_HTTP, &vm->ready_addr,
                               vm->ready_path);
  vm->ready_timeout_ms = def->ready_timeout_ms ? def->ready_timeout_ms
                                               : JITSU_DEFAULT_READY_TIMEOUT_MS;
  vm->stop_grace_ms =
      def->stop_grace_ms ? def->stop_grace_ms : JITSU_DEFAULT_STOP_GRACE_MS;
  vm->idle_timeout_ms = def->idle_timeout_ms;
  vm->idle_action = def->idle_action;
}

/* Check the readiness address of (def); 0 or an error in (err). */
static int check_ready_address(const jitsu_vm_def *def, jitsu_error *err) {
  struct sockaddr_storage ss;
  char path[JITSU__READY_PATH_MAX];
  bool http = def->ready == JITSU_READY_HTTP;
  if ((def->ready == JITSU_READY_TCP || http) &&
      (def->ready_address == NULL ||
       jitsu__parse_ready_address(def->ready_address, http, &ss, path) < 0))
    return jitsu_error_set(
        err, -EINVAL, "ready",
        "%s readiness needs an address as HOST:PORT or [IPV6]:PORT%s, "
        "not '%s'",
        http ? "http" : "tcp",
        http ? " with an optional /PATH (under 40 bytes, no spaces)" : "",
        def->ready_address ? def->ready_address : "");
  return 0;
}

static int define_vm(jitsu_ctx *ctx, const jitsu_vm_def *def, jitsu_vm **out,
                     jitsu_error *err) {
  const jitsu_backend_ops *backend = NULL;
  char dir[600];
  if (ctx->closing)
    return jitsu_error_set(err, -ECANCELED, NULL, "the context is closing");
  int r = check_def(ctx, def, &backend, err);
  if (r < 0 || (r = check_ready_address(def, err)) < 0)
    return r;
  /* Adoption reads the state directory: it must be ours alone. */
  if ((r = jitsu_ctx_state_subdir(ctx, NULL, dir, sizeof(dir))) < 0)
    return jitsu_error_set(err, r, NULL, "%s", jitsu_ctx_last_error(ctx));
  jitsu_vm *vm = calloc(1, sizeof(*vm));
  if (vm == NULL)
    return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  vm->ctx = ctx;
  vm->backend = backend;
  vm->name = jitsu__strdup(def->name);
  jitsu__vm_apply_settings(vm, def);
  vm->summons_tail = &vm->summons;
  if (vm->name == NULL || copy_params(vm, def->params, def->n_params) < 0) {
    jitsu__vm_free(vm);
    return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  }
  if (backend->configure != NULL && (r = backend->configure(vm, err)) < 0) {
    jitsu__vm_free(vm);
    return r;
  }
  vm->node.key = vm->name;
  if (jitsu__table_insert(&ctx->vms, &vm->node) < 0) {
    if (backend->release != NULL)
      backend->release(vm);
    jitsu__vm_free(vm);
    return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  }
  jitsu_list_append(&ctx->all_vms, &vm->all);
  vm->state_since_ms = uv_now(ctx->loop);
  jitsu_state found = JITSU_STATE_STOPPED;
  if (backend->adopt != NULL && backend->adopt(vm, &found) > 0 &&
      (found == JITSU_STATE_READY || found == JITSU_STATE_SUSPENDED ||
       found == JITSU_STATE_STARTING)) {
    /* starting: the backend asks the guest and tells with
     * jitsu_backend_adopted(), off this call */
    vm->adopting = found == JITSU_STATE_STARTING;
    vm->adopted = !vm->adopting;
    vm->live_since_ms = uv_now(ctx->loop);
    vm->state = found;
    jitsu__vm_account(vm, found, +1);
    vm->last_active_ms = uv_now(ctx->loop);
    vm->op_begin_ns = uv_hrtime();
    if (backend->describe != NULL)
      backend->describe(vm, vm->instance, sizeof(vm->instance));
    if (vm->adopting)
      jitsu_vm_log(vm, JITSU_LOG_DEBUG, "looking for a guest to adopt%s%s%s",
                   vm->instance[0] ? " (" : "", vm->instance,
                   vm->instance[0] ? ")" : "");
    else
      jitsu_vm_log(vm, JITSU_LOG_INFO, "adopted a %s guest (%s)",
                   jitsu_state_name(found), vm->instance);
  }
  if ((backend->attach != NULL && (r = backend->attach(vm, err)) < 0) ||
      (r = jitsu__proxy_attach(vm, err)) < 0) {
    jitsu__vm_forget(vm);
    return r;
  }
  jitsu__vm_event(vm, JITSU_VM_DEFINED);
  if (out != NULL)
    *out = vm;
  return 0;
}

static bool same_params(const jitsu_vm *vm, const jitsu_vm_def *def) {
  if (vm->n_params != def->n_params)
    return false;
  for (size_t i = 0; i < def->n_params; i++)
    if (strcmp(vm->params[i].key, def->params[i].key) != 0 ||
        strcmp(vm->params[i].value, def->params[i].value) != 0)
      return false;
  return true;
}

int jitsu__vm_def_differs(const jitsu_vm *vm, const jitsu_backend_ops *backend,
                          const jitsu_vm_def *def) {
  if (backend != vm->backend || !same_params(vm, def))
    return 2;
  jitsu_vm probe;
  memset(&probe, 0, sizeof(probe));
  jitsu__vm_apply_settings(&probe, def);
  if (probe.ready != vm->ready || probe.ready_marker != vm->ready_marker ||
      memcmp(&probe.ready_addr, &vm->ready_addr, sizeof(vm->ready_addr)) ||
      strcmp(probe.ready_path, vm->ready_path) != 0 ||
      probe.ready_timeout_ms != vm->ready_timeout_ms ||
      probe.stop_grace_ms != vm->stop_grace_ms ||
      probe.idle_timeout_ms != vm->idle_timeout_ms ||
      probe.idle_action != vm->idle_action)
    return 1;
  return 0;
}

/* Give (vm) (backend) and (params) and let the backend take them up. */
static int take_definition(jitsu_vm *vm, const jitsu_backend_ops *backend,
                           jitsu_param *params, size_t n, jitsu_error *err) {
  vm->backend = backend;
  vm->backend_data = NULL;
  vm->params = params;
  vm->n_params = n;
  int r = backend->configure ? backend->configure(vm, err) : 0;
  if (r < 0)
    return r; /* configure keeps nothing when it fails */
  if (backend->attach != NULL)
    r = backend->attach(vm, err);
  if (r == 0)
    r = jitsu__proxy_attach(vm, err);
  if (r < 0 && backend->release != NULL)
    backend->release(vm);
  return r;
}

int jitsu__vm_redefine(jitsu_vm *vm, const jitsu_backend_ops *backend,
                       const jitsu_vm_def *def, jitsu_error *err) {
  if (jitsu__state_is_live(vm->state))
    return jitsu_error_set(err, JITSU_ESTATE, NULL, "vm '%s' is %s", vm->name,
                           jitsu_state_name(vm->state));
  int r = check_ready_address(def, err);
  if (r < 0)
    return r;
  const jitsu_backend_ops *old_backend = vm->backend;
  jitsu_param *old_params = vm->params;
  size_t old_n = vm->n_params;
  jitsu_vm saved = *vm; /* the settings, to put back on failure */
  jitsu__proxy_detach(vm);
  if (old_backend->release != NULL)
    old_backend->release(vm);
  vm->params = NULL;
  vm->n_params = 0;
  if (copy_params(vm, def->params, def->n_params) < 0) {
    r = jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  } else {
    jitsu_param *fresh = vm->params;
    jitsu__vm_apply_settings(vm, def);
    r = take_definition(vm, backend, fresh, def->n_params, err);
    if (r < 0)
      free(fresh);
  }
  if (r < 0) {
    jitsu_error ignored;
    vm->ready = saved.ready;
    vm->ready_marker = saved.ready_marker;
    vm->ready_addr = saved.ready_addr;
    memcpy(vm->ready_path, saved.ready_path, sizeof(vm->ready_path));
    vm->ready_timeout_ms = saved.ready_timeout_ms;
    vm->stop_grace_ms = saved.stop_grace_ms;
    vm->idle_timeout_ms = saved.idle_timeout_ms;
    vm->idle_action = saved.idle_action;
    if (take_definition(vm, old_backend, old_params, old_n, &ignored) < 0)
      jitsu_vm_log(vm, JITSU_LOG_ERROR, "could not restore its definition: %s",
                   ignored.message);
    return r;
  }
  free(old_params);
  jitsu__vm_event(vm, JITSU_VM_CHANGED);
  return 0;
}

static void pending_free(struct jitsu__pending_def *p) {
  if (p == NULL)
    return;
  free(p->holder.params);
  free(p->ready_address);
  free(p);
}

static struct jitsu__pending_def *pending_new(const jitsu_backend_ops *backend,
                                              const jitsu_vm_def *def) {
  struct jitsu__pending_def *p = calloc(1, sizeof(*p));
  if (p == NULL || copy_params(&p->holder, def->params, def->n_params) < 0 ||
      (def->ready_address != NULL &&
       (p->ready_address = jitsu__strdup(def->ready_address)) == NULL)) {
    pending_free(p);
    return NULL;
  }
  p->backend = backend;
  p->def = *def;
  p->def.name = NULL;
  p->def.ready_address = p->ready_address;
  p->def.params = p->holder.params;
  return p;
}

int jitsu__vm_stash_def(jitsu_vm *vm, const jitsu_backend_ops *backend,
                        const jitsu_vm_def *def) {
  struct jitsu__pending_def *p = pending_new(backend, def);
  if (p == NULL)
    return -ENOMEM;
  pending_free(vm->pending);
  vm->pending = p;
  return 0;
}

jitsu__snapshot *jitsu__snapshot_take(jitsu_vm *vm) {
  char addr[80 + JITSU__READY_PATH_MAX] = "";
  jitsu_vm_def def = JITSU_VM_DEF_INIT;
  def.name = vm->name;
  def.backend = vm->backend->name;
  def.ready = vm->ready;
  def.ready_marker = vm->ready_marker;
  if (vm->ready == JITSU_READY_TCP || vm->ready == JITSU_READY_HTTP) {
    jitsu__format_sockaddr((struct sockaddr *)&vm->ready_addr, addr, 80);
    if (vm->ready == JITSU_READY_HTTP)
      strcat(addr, vm->ready_path);
    def.ready_address = addr;
  }
  def.ready_timeout_ms = vm->ready_timeout_ms;
  def.stop_grace_ms = vm->stop_grace_ms;
  def.idle_timeout_ms = vm->idle_timeout_ms;
  def.idle_action = vm->idle_action;
  def.params = vm->params;
  def.n_params = vm->n_params;
  return pending_new(vm->backend, &def);
}

void jitsu__snapshot_restore(jitsu_vm *vm, jitsu__snapshot *snap) {
  jitsu_error err;
  memset(&err, 0, sizeof(err));
  if (jitsu__vm_redefine(vm, snap->backend, &snap->def, &err) < 0)
    jitsu_vm_log(vm, JITSU_LOG_ERROR, "could not restore its definition: %s",
                 err.message);
}

void jitsu__snapshot_free(jitsu__snapshot *snap) {
  pending_free(snap);
}

/* Runs from the loop once a vm with a stashed definition has stopped. */
static void apply_pending(jitsu_vm *vm, int status, void *arg) {
  (void)status, (void)arg;
  struct jitsu__pending_def *p = vm->pending;
  if (p == NULL || vm->undefined || jitsu__state_is_live(vm->state))
    return; /* started again meanwhile: wait for the next stop */
  vm->pending = NULL;
  jitsu_error err;
  memset(&err, 0, sizeof(err));
  if (jitsu__vm_redefine(vm, p->backend, &p->def, &err) < 0)
    jitsu_vm_log(vm, JITSU_LOG_ERROR,
                 "the reloaded definition could not be applied: %s",
                 err.message);
  else
    jitsu_vm_log(vm, JITSU_LOG_INFO, "reloaded definition applied");
  pending_free(p);
}

int jitsu_vm_undefine(jitsu_vm *vm) {
  jitsu_ctx *ctx = vm->ctx;
  if (vm->undefined)
    return jitsu__fail(ctx, -ENOENT, "vm '%s' is undefined already", vm->name);
  if (jitsu__state_is_live(vm->state))
    return jitsu__fail(ctx, JITSU_ESTATE,
                       "cannot undefine vm '%s': it is %s; stop it first",
                       vm->name, jitsu_state_name(vm->state));
  vm->undefined = true; /* from now on the verbs refuse it */
  jitsu__start_queue_remove(vm);
  jitsu__vm_event(vm, JITSU_VM_UNDEFINING);
  jitsu__ready_cancel(vm);
  jitsu__triggers_drop_vm(ctx, vm);
  /* Every waiter gets its callback, from the loop: -ECANCELED. */
  jitsu__waiter **lists[] = {&vm->summons, &vm->stops, &vm->ops, &vm->snaps};
  for (size_t i = 0; i < JITSU__ARRAY_SIZE(lists); i++) {
    jitsu__defer_list(ctx, *lists[i], JITSU_ECANCELED);
    *lists[i] = NULL;
  }
  vm->summons_tail = &vm->summons;
  vm->n_summons = 0;
  /* The backend lets go of the name (sockets, files) now, so that it can be
   * defined again at once; its memory and the vm's stay until the callbacks
   * queued for it, and the call that undefined it, have returned. */
  jitsu__proxy_detach(vm);
  if (vm->backend->release != NULL)
    vm->backend->release(vm);
  pending_free(vm->pending); /* a reload's definition for a next stop */
  vm->pending = NULL;
  jitsu__table_remove(&ctx->vms, &vm->node);
  jitsu_list_remove(&vm->all);
  jitsu_list_remove(&vm->live);
  jitsu__defer(ctx, vm, NULL, NULL, 0); /* the last reference, if none other */
  return 0;
}

void jitsu__vm_forget(jitsu_vm *vm) {
  if (vm->undefined)
    return;
  jitsu__vm_account(vm, vm->state, -1);
  vm->state = JITSU_STATE_STOPPED;
  jitsu_vm_undefine(vm);
}

void jitsu__define_guest_gone(jitsu_vm *vm) {
  if (vm->proxy != NULL)
    jitsu__proxy_guest_gone(vm);
  if (vm->pending != NULL)
    jitsu__defer(vm->ctx, vm, apply_pending, NULL, 0);
}

int jitsu_vm_define(jitsu_ctx *ctx, const jitsu_vm_def *def, jitsu_vm **out,
                    jitsu_error *err) {
  jitsu_error local;
  if (err == NULL) {
    memset(&local, 0, sizeof(local));
    err = &local;
  }
  ctx->last_error[0] = '\0';
  return jitsu__fail_error(ctx, define_vm(ctx, def, out, err), err);
}
