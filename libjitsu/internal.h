/* The core room's private header (core/ and the rooms above it): the
 * context and vm structures and the calls between core files. The base
 * room has its own header (base/base.h); config/ and control/ add theirs. */
#ifndef JITSU_INTERNAL_H
#define JITSU_INTERNAL_H

#include <jitsu/jitsu.h>

#include "base.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>

/* A summon or stop waiting for its outcome. */
typedef struct jitsu__waiter {
  struct jitsu__waiter *next;
  jitsu_vm *vm;
  jitsu_vm_cb cb;
  void *arg;
  int status;
} jitsu__waiter;

typedef struct jitsu__readiness jitsu__readiness;
typedef struct jitsu__metrics jitsu__metrics;

struct jitsu_vm {
  jitsu__hnode node;       /* in ctx->vms, keyed by name */
  jitsu_list all;          /* ctx->all_vms, definition order */
  jitsu_list live;         /* ctx->live_vms while not stopped or failed */
  jitsu_list queue;        /* ctx->start_queue while waiting for a start slot */
  bool queued, queued_new; /* and whether it was stopped (a new live one) */
  jitsu_ctx *ctx;
  const jitsu_backend_ops *backend;
  void *backend_data;
  char *name;
  jitsu_state state;
  bool adopted;
  bool adopting;     /* starting: the backend finds out what it adopts */
  bool fail_on_exit; /* a stop that ends in failed (readiness timeout) */
  jitsu_stop_mode pending_stop;
  bool stop_pending;   /* a stop requested while suspending or resuming */
  const char *stop_by; /* who asked for the stop under way (static), or NULL */
  bool removing;       /* a reload removes it once it has stopped */
  bool undefined;      /* undefined; freed when (refs) drops to 0 */
  unsigned refs;       /* queued completions and calls in progress */
  struct jitsu__pending_def *pending; /* a reload's definition, applied
                                       * when the live guest has stopped */
  char *reason;
  char *next_reason; /* set by jitsu_vm_set_reason() for the next change */
  jitsu_ready_method ready;
  bool ready_marker; /* wait for jitsu_backend_marker() first */
  struct sockaddr_storage ready_addr;
  char ready_path[JITSU__READY_PATH_MAX]; /* JITSU_READY_HTTP: "/..." */
  uint64_t ready_timeout_ms, stop_grace_ms, idle_timeout_ms;
  jitsu_idle_action idle_action;
  unsigned cfg_line;   /* its [vm NAME] line in ctx->config_path, or 0 */
  jitsu_param *params; /* one allocation with the strings */
  size_t n_params;
  jitsu__waiter *summons; /* waiting for ready */
  jitsu__waiter **summons_tail;
  jitsu__waiter *stops; /* waiting for stopped */
  jitsu__waiter *ops;   /* waiting for a suspend or resume */
  jitsu__waiter *snaps; /* waiting for a snapshot */
  unsigned n_summons;
  unsigned holds;
  jitsu__readiness *readiness; /* while starting */
  char instance[160];
  uint64_t state_since_ms, last_active_ms, start_begin_ms;
  uint64_t live_since_ms;  /* when it last left stopped or failed */
  uint64_t op_begin_ns;    /* uv_hrtime() when a start or resume began */
  jitsu__metrics *metrics; /* allocated at the first state change */
  uint64_t summons_total, spawns, resumes, failures, last_start_ms;
  struct jitsu__proxy
      *proxy; /* its proxying socket triggers (proxy.c), or NULL */
};

typedef struct jitsu__section_keys {
  struct jitsu__section_keys *next;
  const char *section;
  const jitsu_key *keys; /* NULL for a value check alone */
  size_t n;
  jitsu_value_check_fn check; /* NULL for keys */
  void *check_arg;
} jitsu__section_keys;

typedef struct jitsu__idle jitsu__idle;
typedef struct jitsu__control jitsu__control;

typedef struct jitsu__stats_src {
  struct jitsu__stats_src *next;
  char *group;
  jitsu_stats_source fn;
  void *arg;
  const jitsu_stat_help *help; /* the embedder's, or NULL */
  size_t n_help;
} jitsu__stats_src;

/* The limits a summon can be refused for (counted per context). */
typedef enum jitsu__limit {
  JITSU__LIMIT_LIVE,    /* max-live */
  JITSU__LIMIT_WAITERS, /* max-waiters */
  JITSU__N_LIMITS
} jitsu__limit;
#define JITSU__REFUSAL_LOG_MS 10000

/* What the state machine (vm.c) tells the layers above it, set by
 * jitsu_ctx_new(): it never calls them by name. */
typedef struct jitsu__vm_hooks {
  void (*slot_freed)(jitsu_ctx *ctx); /* a start slot came free (verbs.c) */
  void (*guest_gone)(jitsu_vm *vm);   /* it left the live states (define.c) */
} jitsu__vm_hooks;

struct jitsu_ctx {
  uv_loop_t *loop;
  jitsu__vm_hooks hooks;
  const char *asking; /* who calls a verb now (jitsu__vm_verb_by), or NULL */
  char *state_dir;
  unsigned max_live, max_starting, max_waiters;
  jitsu__table vms;
  jitsu_list all_vms, live_vms;
  size_t n_live, n_starting;
  /* Summoned vms waiting for one of the max-starting slots, in order;
   * (n_queued_new) of them would be new live guests. */
  jitsu_list start_queue;
  size_t n_queued_new;
  bool queue_kicked; /* a run of the queue is deferred */
  /* Backends' spare guests (jitsu_spare): they count as live, and as
   * starting while they fill (spare.c). */
  jitsu_list spares;
  size_t n_spares, n_spares_filling;
  /* Summons refused for a limit (jitsu__refused), and the rate limit of
   * their log line: one per reason per JITSU__REFUSAL_LOG_MS. */
  uint64_t refused[JITSU__N_LIMITS];
  uint64_t refused_logged_ms[JITSU__N_LIMITS];
  uint64_t refused_unlogged[JITSU__N_LIMITS];
  jitsu__table triggers;
  const jitsu_backend_ops **backends;
  const char **backend_names;
  size_t n_backends;
  jitsu__section_keys *keys;
  jitsu_param *globals;   /* loaded config: "section\0key" = value */
  unsigned *global_lines; /* the line of each in config_path */
  size_t n_globals;
  jitsu__sub *state_subs;  /* jitsu_state_fn */
  jitsu__sub *vm_subs;     /* jitsu_vm_event_fn */
  jitsu__sub *reload_subs; /* jitsu_reloaded_fn */
  char *config_path;       /* the file jitsu_config_load() read, for reloads */
  jitsu__control *control;
  struct jitsu__rendezvous *rendezvous;
  jitsu__stats_src *stats_sources;
  jitsu_log_fn log_fn;
  void *log_arg;
  jitsu_log_level log_max;
  uv_idle_t deferred_idle; /* runs completions outside the API calls */
  bool deferred_idle_open;
  bool closing; /* jitsu_ctx_free() was called: freed in the idle's close */
  jitsu__waiter *deferred, **deferred_tail;
  size_t n_deferred;
  jitsu__idle *idle;
  int lock_fd;    /* our POSIX lock on STATE/lock, once the directory is used */
  dev_t lock_dev; /* the directory it locks (state_dir.c: hold_dir) */
  ino_t lock_ino;
  uint32_t notify_tag; /* makes abstract notify socket names unique */
  char last_error[512];
};

/* The last error's detail (log.c): store it for jitsu_ctx_last_error()
 * and return (err). */
int jitsu__fail(jitsu_ctx *ctx, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A call that fills a jitsu_error (err) ended with (r): when it failed, the
 * message is the context's last error too (jitsu_ctx_last_error() is the
 * one place for the detail of every failed call). The call clears
 * ctx->last_error first. Returns (r). */
int jitsu__fail_error(jitsu_ctx *ctx, int r, const jitsu_error *err);

/* Give the state directory's lock up (state_dir.c; jitsu_ctx_free(), or the
 * directory changes). */
void jitsu__state_dir_unlock(jitsu_ctx *ctx);

/* Queue (cb)(vm, status, arg) to run from the loop, never re-entrantly. */
int jitsu__defer(jitsu_ctx *ctx, jitsu_vm *vm, jitsu_vm_cb cb, void *arg,
                 int status);
/* Queue the waiters of (list) with (status); the list is consumed. */
void jitsu__defer_list(jitsu_ctx *ctx, jitsu__waiter *list, int status);
/* Start the queue of (ctx); run every completion still queued (its end). */
void jitsu__defer_init(jitsu_ctx *ctx);
void jitsu__defer_drain(jitsu_ctx *ctx);

/* Keep (vm) alive: a call in progress or a queued completion uses it. An
 * undefined vm is freed (and its backend released) at the last unref. */
void jitsu__vm_ref(jitsu_vm *vm);
void jitsu__vm_unref(jitsu_vm *vm);

/* Move (vm) to (state) with (reason) (NULL: keep what
 * jitsu_vm_set_reason() left, or ""). Illegal transitions are refused
 * with JITSU_ESTATE and logged. */
int jitsu__vm_set_state(jitsu_vm *vm, jitsu_state state, const char *reason);

/* Whether (s) is a live state (not stopped or failed). */
bool jitsu__state_is_live(jitsu_state s);
/* Count (vm) in (s) (sign +1) or out of it (-1): live and starting
 * guests, the live list. */
void jitsu__vm_account(jitsu_vm *vm, jitsu_state s, int sign);
/* Free (vm) and what the state machine holds of it (its last reference). */
void jitsu__vm_free(jitsu_vm *vm);
/* A guest of (vm) has gone: its relayed connections end, a reload's
 * definition waiting for the stop is applied (define.c's hook). */
void jitsu__define_guest_gone(jitsu_vm *vm);

/* Undefine (vm) whatever its state, leaving a live guest running (for
 * jitsu_ctx_free() and undoing a definition). */
void jitsu__vm_forget(jitsu_vm *vm);

/* Proxying socket triggers (proxy.c): listen on the vm's "socket" keys
 * that its backend does not take itself; 0 or (err) filled, nothing kept.
 * Detach closes them and every connection held or relayed. */
int jitsu__proxy_attach(jitsu_vm *vm, jitsu_error *err);
void jitsu__proxy_detach(jitsu_vm *vm);
/* Check the vm's relayed "socket" values without binding anything. */
int jitsu__proxy_check(jitsu_vm *vm, jitsu_error *err);
/* The guest has gone (stopped or failed): its relayed connections are
 * reset; held ones wait for the next start. */
void jitsu__proxy_guest_gone(jitsu_vm *vm);
/* Tell the vm event subscribers about (vm). */
void jitsu__vm_event(jitsu_vm *vm, jitsu_vm_event ev);

/* Replace the definition of a vm that is not live with (def), whose
 * backend is (backend), in place (triggers and metrics stay); on failure
 * the old definition is restored and (err) says why. */
int jitsu__vm_redefine(jitsu_vm *vm, const jitsu_backend_ops *backend,
                       const jitsu_vm_def *def, jitsu_error *err);

/* Apply the settings of (def) that need no restart (readiness, time-outs,
 * idle policy). */
void jitsu__vm_apply_settings(jitsu_vm *vm, const jitsu_vm_def *def);

/* Whether (def) with (backend) differs from (vm)'s definition: 0 same,
 * 1 only in settings jitsu__vm_apply_settings() applies, 2 otherwise. */
int jitsu__vm_def_differs(const jitsu_vm *vm, const jitsu_backend_ops *backend,
                          const jitsu_vm_def *def);

/* Stash (def) to be applied when (vm) next stops; replaces an older one. */
int jitsu__vm_stash_def(jitsu_vm *vm, const jitsu_backend_ops *backend,
                        const jitsu_vm_def *def);

/* A copy of a vm's definition (the stash of a reload, or its undo). */
typedef struct jitsu__pending_def jitsu__snapshot;
jitsu__snapshot *jitsu__snapshot_take(jitsu_vm *vm);
/* Redefine (vm) from (snap) (it must not be live); logs a failure. */
void jitsu__snapshot_restore(jitsu_vm *vm, jitsu__snapshot *snap);
void jitsu__snapshot_free(jitsu__snapshot *snap);

/* Who asks for a stop or a suspend, named in the state change's reason
 * ("shutdown requested by the idle policy"): (by) is a static text; the
 * call (verb (vm, ...)) runs with it. */
#define JITSU__BY(ctx, by, call)                                               \
  __extension__({                                                              \
    (ctx)->asking = (by);                                                      \
    int r_ = (call);                                                           \
    (ctx)->asking = NULL;                                                      \
    r_;                                                                        \
  })

/* Readiness (ready.c): begin checks for a started (vm), cancel them. */
/* (done)(vm, 0) when ready, (done)(vm, JITSU_ETIMEDOUT) past the time-out. */
typedef void (*jitsu__ready_fn)(jitsu_vm *vm, int status);
int jitsu__ready_prepare(jitsu_vm *vm, jitsu__ready_fn done); /* before start */
int jitsu__ready_begin(jitsu_vm *vm); /* the guest runs: probe, timer */
void jitsu__ready_cancel(jitsu_vm *vm);
/* Parse a notify datagram: 1 if it holds READY=1, else 0. */
int jitsu__notify_says_ready(const char *msg, size_t len);

/* Load the module (name) from jitsu__module_dir(): $JITSU_BACKEND_DIR, else
 * the directory the library was installed with. NULL with why in (err). */
const jitsu__module *jitsu__module_load(const char *name, char *err,
                                        size_t size);
const char *jitsu__module_dir(void);
/* The backend (name) of (ctx): registered already, or loaded from its
 * module and registered now. NULL with a message in (err). */
const jitsu_backend_ops *jitsu__backend_find(jitsu_ctx *ctx, const char *name,
                                             char *err, size_t size);

/* The start queue (verbs.c): a start slot may have come free; take the
 * vm out of the queue (undefine). */
void jitsu__start_queue_kick(jitsu_ctx *ctx);
/* Before (vm) becomes one more of (live) live guests: end spares that
 * take the room max-live leaves (spare.c). */
void jitsu__spares_make_room(jitsu_vm *vm, size_t live);
void jitsu__start_queue_remove(jitsu_vm *vm);

/* Remove every trigger of (vm) (trigger.c). */
void jitsu__triggers_drop_vm(jitsu_ctx *ctx, jitsu_vm *vm);

/* The keys a configuration may use (keys.c). Check (params) against the
 * keys of (backend) and of "vm" sections; 0 or an error in (err). */
int jitsu__check_vm_params(jitsu_ctx *ctx, const jitsu_backend_ops *backend,
                           const jitsu_param *params, size_t n,
                           jitsu_error *err);
/* Whether any keys of (section) were declared. */
bool jitsu__keys_declared(jitsu_ctx *ctx, const char *section);
/* The callers' value checks of (key) = (value) in (section). */
int jitsu__keys_run_checks(jitsu_ctx *ctx, const char *section, const char *key,
                           const char *value, jitsu_error *err);
/* The declaration of (name) in (section): the library's or a caller's. */
const jitsu_key *jitsu__keys_find(jitsu_ctx *ctx, const char *section,
                                  const char *name);
/* A [vm] key that fills a field of jitsu_vm_def, or NULL. */
const jitsu_key *jitsu__keys_vm_field(const char *name);
/* The declaration of (key) for a vm of (b): the backend's keys first. */
const jitsu_key *jitsu__keys_vm_key(jitsu_ctx *ctx, const jitsu_backend_ops *b,
                                    const char *key);
/* Check (value) against the type of (k); 0 or an error in (err). */
int jitsu__keys_check_value(const jitsu_key *k, const char *value,
                            jitsu_error *err);
/* A declared key of (section) close to (key), or NULL. */
const char *jitsu__keys_did_you_mean(jitsu_ctx *ctx, const jitsu_backend_ops *b,
                                     const char *section, const char *key);
/* Fill (err) for an unknown [vm] key (key) of backend (b); the error. */
int jitsu__keys_unknown_vm_key(jitsu_ctx *ctx, const jitsu_backend_ops *b,
                               const char *key, jitsu_error *err);

/* Metrics (metrics.c). */
typedef enum jitsu__metric_event {
  JITSU__M_COLD_START, /* (ns): summon to ready */
  JITSU__M_RESUME,     /* (ns): summon to ready */
  JITSU__M_READY_TIMEOUT,
  JITSU__M_READY_FAILURE, /* exited before ready, or could not start */
  JITSU__M_CRASH,         /* failed after being ready */
} jitsu__metric_event;
void jitsu__metrics_event(jitsu_vm *vm, jitsu__metric_event ev, uint64_t ns);
/* (vm) leaves (old) after (ms) in it. */
void jitsu__metrics_state(jitsu_vm *vm, jitsu_state old, uint64_t ms);
void jitsu__metrics_free(jitsu_vm *vm);

/* The idle helper's hook on state changes (idle.c). */
void jitsu__idle_free(jitsu_ctx *ctx);

#endif
