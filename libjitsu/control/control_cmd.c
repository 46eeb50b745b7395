/* The control protocol's commands (doc/control-protocol.md). */
#include "control_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct command {
  const char *name;
  void (*run)(jitsu__creq *req, json_t *args);
  const char *const *fields; /* allowed besides v, id and cmd */
} command;

static json_t *latency_json(const jitsu_latency *l) {
  json_t *buckets = json_array();
  for (size_t i = 0; i < JITSU_LATENCY_BUCKETS; i++)
    json_array_append_new(buckets, json_integer((json_int_t)l->buckets[i]));
  return json_pack("{s:I, s:f, s:f, s:f, s:f, s:o}", "count",
                   (json_int_t)l->count, "sum_ms", l->sum_ms, "p50_ms",
                   l->p50_ms, "p90_ms", l->p90_ms, "p99_ms", l->p99_ms,
                   "buckets", buckets);
}

static json_t *metrics_json(const jitsu_vm *vm) {
  jitsu_vm_metrics m = {.version = JITSU_VM_METRICS_VERSION};
  jitsu_vm_metrics_get(vm, &m);
  json_t *states = json_object();
  for (int s = 0; s < JITSU_STATE_COUNT; s++)
    json_object_set_new(states, jitsu_state_name((jitsu_state)s),
                        json_integer((json_int_t)m.state_ms[s]));
  return json_pack(
      "{s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o}", "summons",
      (json_int_t)m.summons, "cold_starts", (json_int_t)m.cold_starts,
      "resumes", (json_int_t)m.resumes, "ready_failures",
      (json_int_t)m.ready_failures, "timeouts", (json_int_t)m.timeouts,
      "crashes", (json_int_t)m.crashes, "state_ms", states, "cold_start",
      latency_json(&m.cold_start), "resume", latency_json(&m.resume));
}

/* (vm)'s pool, into (o): its spares, those filling, their memory. */
static void spares_set(jitsu_vm *vm, json_t *o) {
  size_t spares, filling;
  uint64_t memory;
  jitsu_vm_spares(vm, &spares, &filling, &memory);
  json_object_set_new(o, "spares", json_integer((json_int_t)spares));
  json_object_set_new(o, "spares_filling", json_integer((json_int_t)filling));
  json_object_set_new(o, "spare_memory_bytes",
                      json_integer((json_int_t)memory));
}

static json_t *vm_json(jitsu_vm *vm) {
  jitsu_ctx *ctx = jitsu_vm_ctx(vm);
  uint64_t now = uv_now(jitsu_ctx_loop(ctx));
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  jitsu_vm_metrics m = {.version = JITSU_VM_METRICS_VERSION};
  jitsu_vm_metrics_get(vm, &m);
  json_t *addresses = json_array();
  const char *a;
  for (size_t i = 0; (a = jitsu_vm_param(vm, "address", i)) != NULL; i++)
    json_array_append_new(addresses, json_string(a));
  bool live =
      info.state != JITSU_STATE_STOPPED && info.state != JITSU_STATE_FAILED;
  json_t *o = json_pack(
      "{s:s, s:s, s:s, s:s, s:s, s:b, s:o, s:I, s:I, s:I, s:I, s:I, s:f, "
      "s:f}",
      "name", info.name, "backend", info.backend, "state",
      jitsu_state_name(info.state), "reason", info.reason, "instance",
      info.instance, "adopted", info.adopted, "addresses", addresses,
      "uptime_ms", (json_int_t)(live ? now - info.live_since_ms : 0), "idle_ms",
      (json_int_t)(info.last_active_ms ? now - info.last_active_ms : 0),
      "holds", (json_int_t)info.holds, "summons", (json_int_t)info.summons,
      "cold_starts", (json_int_t)info.spawns, "cold_start_p50_ms",
      m.cold_start.p50_ms, "cold_start_p99_ms", m.cold_start.p99_ms);
  json_object_set_new(o, "resumes", json_integer((json_int_t)info.resumes));
  spares_set(vm, o);
  return o;
}

/* The vm named by args.name, or NULL after answering the error. */
static jitsu_vm *named_vm(jitsu__creq *req, json_t *args) {
  json_t *name = json_object_get(args, "name");
  if (!json_is_string(name)) {
    jitsu__control_fail(req, -EINVAL, "missing \"name\" (a string)");
    return NULL;
  }
  jitsu_vm *vm =
      jitsu_vm_find(jitsu__control_ctx(req), json_string_value(name));
  if (vm == NULL)
    jitsu__control_fail(req, -ENOENT, "no vm '%s'", json_string_value(name));
  return vm;
}

/* Read the optional boolean (key) into (*out); 0, or -1 after failing. */
static int opt_bool(jitsu__creq *req, json_t *args, const char *key,
                    bool *out) {
  json_t *v = json_object_get(args, key);
  if (v == NULL)
    return 0;
  if (!json_is_boolean(v)) {
    jitsu__control_fail(req, -EINVAL, "\"%s\" must be true or false", key);
    return -1;
  }
  *out = json_is_true(v);
  return 0;
}

static int opt_timeout(jitsu__creq *req, json_t *args, uint64_t *ms) {
  json_t *v = json_object_get(args, "timeout_ms");
  *ms = 0;
  if (v == NULL)
    return 0;
  if (!json_is_integer(v) || json_integer_value(v) <= 0) {
    jitsu__control_fail(req, -EINVAL,
                        "\"timeout_ms\" must be a positive whole number");
    return -1;
  }
  *ms = (uint64_t)json_integer_value(v);
  return 0;
}

static void cmd_version(jitsu__creq *req, json_t *args) {
  (void)args;
  jitsu__control_reply(req, json_pack("{s:s, s:i}", "version", jitsu_version(),
                                      "protocol", JITSU_CONTROL_PROTOCOL));
}

static int add_vm(jitsu_vm *vm, void *arg) {
  json_array_append_new(arg, vm_json(vm));
  return 0;
}

static void cmd_list(jitsu__creq *req, json_t *args) {
  (void)args;
  json_t *vms = json_array();
  jitsu_vm_foreach(jitsu__control_ctx(req), add_vm, vms);
  jitsu__control_reply(req, json_pack("{s:o}", "vms", vms));
}

static void cmd_status(jitsu__creq *req, json_t *args) {
  jitsu_vm *vm = named_vm(req, args);
  if (vm == NULL)
    return;
  json_t *o = vm_json(vm);
  json_object_set_new(o, "metrics", metrics_json(vm));
  jitsu__control_reply(req, o);
}

/* Completion of a verb that the client waits for. */
static void verb_done(jitsu_vm *vm, int status, void *arg) {
  jitsu__creq *req = arg;
  if (status < 0) {
    jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
    jitsu_vm_info_get(vm, &info);
    jitsu__control_fail(req, status, "vm '%s': %s%s%s", jitsu_vm_name(vm),
                        jitsu_strerror(status), info.reason[0] ? ": " : "",
                        info.reason);
    return;
  }
  jitsu__control_reply(req, vm_json(vm));
}

static void verb_timeout(jitsu__creq *req) {
  jitsu__control_fail(req, -ETIMEDOUT,
                      "not done in time; the operation goes on (see status)");
}

typedef enum verb { SUMMON, STOP, SUSPEND, RESUME, SNAPSHOT } verb;

static void run_verb(jitsu__creq *req, json_t *args, verb v, bool wait) {
  jitsu_vm *vm = named_vm(req, args);
  uint64_t timeout;
  if (vm == NULL || opt_bool(req, args, "wait", &wait) < 0 ||
      opt_timeout(req, args, &timeout) < 0)
    return;
  jitsu_stop_mode mode = JITSU_STOP_SHUTDOWN;
  json_t *m = json_object_get(args, "mode");
  if (v == STOP && m != NULL) {
    const char *ms = json_string_value(m);
    if (ms != NULL && strcmp(ms, "destroy") == 0)
      mode = JITSU_STOP_DESTROY;
    else if (ms == NULL || strcmp(ms, "shutdown") != 0) {
      jitsu__control_fail(req, -EINVAL,
                          "\"mode\" must be \"shutdown\" or \"destroy\"");
      return;
    }
  }
  jitsu_vm_cb cb = wait ? verb_done : NULL;
  void *arg = wait ? req : NULL;
  int r = v == SUMMON     ? jitsu_vm_summon(vm, cb, arg)
          : v == STOP     ? JITSU__BY(vm->ctx, "an operator (control socket)",
                                      jitsu_vm_stop(vm, mode, cb, arg))
          : v == SUSPEND  ? JITSU__BY(vm->ctx, "an operator (control socket)",
                                      jitsu_vm_suspend(vm, cb, arg))
          : v == SNAPSHOT ? jitsu_vm_snapshot(vm, cb, arg)
                          : jitsu_vm_resume(vm, cb, arg);
  if (r < 0) {
    jitsu__control_fail(req, r, "%s",
                        jitsu_ctx_last_error(jitsu__control_ctx(req)));
    return;
  }
  if (wait)
    jitsu__control_wait(req, vm, timeout, verb_timeout);
  else
    jitsu__control_reply(req, vm_json(vm));
}

static void cmd_summon(jitsu__creq *req, json_t *args) {
  run_verb(req, args, SUMMON, false);
}
static void cmd_stop(jitsu__creq *req, json_t *args) {
  run_verb(req, args, STOP, true);
}
static void cmd_suspend(jitsu__creq *req, json_t *args) {
  run_verb(req, args, SUSPEND, true);
}
static void cmd_resume(jitsu__creq *req, json_t *args) {
  run_verb(req, args, RESUME, true);
}
static void cmd_snapshot(jitsu__creq *req, json_t *args) {
  run_verb(req, args, SNAPSHOT, true);
}

static int add_stats(jitsu_vm *vm, void *arg) {
  json_t *o = json_pack("{s:s, s:s, s:o}", "name", jitsu_vm_name(vm), "state",
                        jitsu_state_name(jitsu_vm_state(vm)), "metrics",
                        metrics_json(vm));
  spares_set(vm, o);
  json_array_append_new(arg, o);
  return 0;
}

/* A whole number as one (a counter stays exact in JSON), else a real. */
static json_t *json_number(double value) {
  if (value == (double)(json_int_t)value && value > -9007199254740992.0 &&
      value < 9007199254740992.0)
    return json_integer((json_int_t)value);
  return json_real(value);
}

static void emit_stat(void *arg, const char *name, double value) {
  json_object_set_new(arg, name, json_number(value));
}

static json_t *frontend_stats(jitsu_ctx *ctx) {
  json_t *all = json_object();
  for (jitsu__stats_src *s = ctx->stats_sources; s != NULL; s = s->next) {
    json_t *group = json_object();
    s->fn(emit_stat, group, s->arg);
    json_object_set_new(all, s->group, group);
  }
  return all;
}

/* The frontends' descriptions: {"group": {"name": "help"}}. */
static json_t *frontend_help(jitsu_ctx *ctx) {
  json_t *all = json_object();
  for (jitsu__stats_src *s = ctx->stats_sources; s != NULL; s = s->next) {
    json_t *group = json_object();
    for (size_t i = 0; i < s->n_help; i++)
      json_object_set_new(group, s->help[i].name, json_string(s->help[i].help));
    json_object_set_new(all, s->group, group);
  }
  return all;
}

static void cmd_stats(jitsu__creq *req, json_t *args) {
  jitsu_ctx *ctx = jitsu__control_ctx(req);
  json_t *vms = json_array();
  if (json_object_get(args, "name") != NULL) {
    jitsu_vm *vm = named_vm(req, args);
    if (vm == NULL) {
      json_decref(vms);
      return;
    }
    add_stats(vm, vms);
  } else {
    jitsu_vm_foreach(ctx, add_stats, vms);
  }
  size_t defined, live, starting;
  unsigned ml, ms, mw;
  uint64_t refused_live, refused_waiters;
  jitsu_ctx_counts(ctx, &defined, &live, &starting);
  jitsu_ctx_limits(ctx, &ml, &ms, &mw);
  jitsu_ctx_refusals(ctx, &refused_live, &refused_waiters);
  size_t spares, spares_filling;
  jitsu_ctx_spares(ctx, &spares, &spares_filling);
  json_t *bounds = json_array();
  for (size_t i = 0; i < JITSU_LATENCY_BUCKETS - 1; i++)
    json_array_append_new(bounds, json_real(jitsu_latency_bounds()[i]));
  json_t *answer = json_pack(
      "{s:{s:I, s:I, s:I, s:i, s:i, s:i, s:I, s:I, s:I, s:I}, s:o, s:o, "
      "s:o}",
      "ctx", "defined", (json_int_t)defined, "live", (json_int_t)live,
      "starting", (json_int_t)starting, "max_live", (int)ml, "max_starting",
      (int)ms, "max_waiters", (int)mw, "refused_max_live",
      (json_int_t)refused_live, "refused_max_waiters",
      (json_int_t)refused_waiters, "spares", (json_int_t)spares,
      "spares_filling", (json_int_t)spares_filling, "latency_bounds_ms", bounds,
      "vms", vms, "frontends", frontend_stats(ctx));
  json_object_set_new(answer, "frontends_help", frontend_help(ctx));
  jitsu__control_reply(req, answer);
}

static void note_change(const char *name, jitsu_reload_action action,
                        void *arg) {
  json_array_append_new(arg, json_pack("{s:s, s:s}", "name", name, "action",
                                       jitsu_reload_action_name(action)));
}

static void cmd_reload(jitsu__creq *req, json_t *args) {
  (void)args;
  json_t *changes = json_array();
  jitsu_error err;
  int r =
      jitsu_config_reload(jitsu__control_ctx(req), note_change, changes, &err);
  if (r < 0) {
    json_decref(changes);
    jitsu__control_fail(req, r, "%s (nothing was changed)", err.message);
    return;
  }
  jitsu__control_reply(req, json_pack("{s:o}", "changes", changes));
}

static const char *const no_fields[] = {NULL};
static const char *const name_field[] = {"name", NULL};
static const char *const verb_fields[] = {"name", "wait", "timeout_ms", NULL};
static const char *const stop_fields[] = {"name", "wait", "timeout_ms", "mode",
                                          NULL};

static const command commands[] = {
    {"version", cmd_version, no_fields},
    {"list", cmd_list, no_fields},
    {"status", cmd_status, name_field},
    {"summon", cmd_summon, verb_fields},
    {"stop", cmd_stop, stop_fields},
    {"suspend", cmd_suspend, verb_fields},
    {"resume", cmd_resume, verb_fields},
    {"stats", cmd_stats, name_field},
    {"reload", cmd_reload, no_fields},
    {"snapshot", cmd_snapshot, verb_fields},
};

static bool allowed(const command *c, const char *key) {
  if (strcmp(key, "v") == 0 || strcmp(key, "id") == 0 ||
      strcmp(key, "cmd") == 0)
    return true;
  for (const char *const *f = c->fields; *f != NULL; f++)
    if (strcmp(*f, key) == 0)
      return true;
  return false;
}

void jitsu__control_run(jitsu__creq *req, const char *line, size_t len) {
  json_error_t e;
  json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &e);
  if (root == NULL) {
    jitsu__control_fail(req, -EINVAL, "invalid JSON at column %d: %s", e.column,
                        e.text);
    return;
  }
  if (!json_is_object(root)) {
    json_decref(root);
    jitsu__control_fail(req, -EINVAL, "a request is a JSON object");
    return;
  }
  json_t *id = json_object_get(root, "id");
  if (id != NULL)
    jitsu__control_set_id(req, id);
  json_t *v = json_object_get(root, "v");
  json_t *cmd = json_object_get(root, "cmd");
  const command *c = NULL;
  for (size_t i = 0; json_is_string(cmd) && i < JITSU__ARRAY_SIZE(commands);
       i++)
    if (strcmp(commands[i].name, json_string_value(cmd)) == 0)
      c = &commands[i];
  const char *key;
  json_t *val;
  if (v != NULL &&
      (!json_is_integer(v) || json_integer_value(v) != JITSU_CONTROL_PROTOCOL))
    jitsu__control_fail(req, -EPROTO,
                        "protocol version not supported (this server speaks "
                        "\"v\": %d)",
                        JITSU_CONTROL_PROTOCOL);
  else if (!json_is_string(cmd))
    jitsu__control_fail(req, -EINVAL, "missing \"cmd\" (a string)");
  else if (c == NULL)
    jitsu__control_fail(req, -EOPNOTSUPP,
                        "unknown command \"%.64s\" (version, list, status, "
                        "summon, stop, suspend, resume, snapshot, stats, "
                        "reload)",
                        json_string_value(cmd));
  else {
    json_object_foreach(root, key, val) {
      if (!allowed(c, key)) {
        jitsu__control_fail(req, -EINVAL, "unknown field \"%.64s\" for \"%s\"",
                            key, c->name);
        json_decref(root);
        return;
      }
    }
    c->run(req, root);
  }
  json_decref(root);
}
