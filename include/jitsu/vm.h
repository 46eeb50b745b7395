/* libjitsu: vms, their states and verbs. */
#ifndef JITSU_VM_H
#define JITSU_VM_H

#include <stdbool.h>

#include "ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum jitsu_state {
  JITSU_STATE_STOPPED = 0,
  JITSU_STATE_STARTING,
  JITSU_STATE_READY,
  JITSU_STATE_SUSPENDING,
  JITSU_STATE_SUSPENDED,
  JITSU_STATE_RESUMING,
  JITSU_STATE_STOPPING,
  JITSU_STATE_FAILED,
} jitsu_state;
#define JITSU_STATE_COUNT 8

/* "stopped", "starting", ... */
JITSU_EXTERN const char *jitsu_state_name(jitsu_state state);

/* Whether the state machine allows (from) -> (to). */
JITSU_EXTERN bool jitsu_state_transition_allowed(jitsu_state from,
                                                 jitsu_state to);

typedef enum jitsu_ready_method {
  JITSU_READY_NONE = 0, /* ready as soon as the backend has started it */
  JITSU_READY_TCP,      /* a TCP connect to ready_address succeeds */
  JITSU_READY_NOTIFY,   /* the guest sends READY=1 to $NOTIFY_SOCKET */
  JITSU_READY_HTTP,     /* an HTTP GET to ready_address is answered */
} jitsu_ready_method;

typedef enum jitsu_idle_action {
  JITSU_IDLE_NONE = 0,
  JITSU_IDLE_DESTROY,
  JITSU_IDLE_SHUTDOWN,
  JITSU_IDLE_SUSPEND,
} jitsu_idle_action;

typedef enum jitsu_stop_mode {
  JITSU_STOP_SHUTDOWN = 0, /* ask politely, destroy after stop_grace */
  JITSU_STOP_DESTROY = 1,  /* end it now */
} jitsu_stop_mode;

/* A key = value pair for a backend or a frontend, as in the config. */
typedef struct jitsu_param {
  const char *key;
  const char *value;
} jitsu_param;

#define JITSU_DEFAULT_READY_TIMEOUT_MS 30000
#define JITSU_DEFAULT_STOP_GRACE_MS 5000

#define JITSU_VM_DEF_VERSION 1
typedef struct jitsu_vm_def {
  unsigned version;    /* JITSU_VM_DEF_VERSION */
  const char *name;    /* [A-Za-z0-9_.-], 1..63 characters, no leading '.' */
  const char *backend; /* NULL: "process" */
  jitsu_ready_method ready;
  /* JITSU_READY_TCP: "HOST:PORT" or "[V6]:PORT"; JITSU_READY_HTTP: the
   * same, optionally followed by the path to GET ("HOST:PORT/health"). */
  const char *ready_address;
  uint64_t ready_timeout_ms; /* 0: JITSU_DEFAULT_READY_TIMEOUT_MS */
  uint64_t stop_grace_ms;    /* 0: JITSU_DEFAULT_STOP_GRACE_MS */
  uint64_t idle_timeout_ms;  /* 0: never idle (see jitsu/idle.h) */
  jitsu_idle_action idle_action;
  /* Backend keys (checked by the backend) and keys declared by frontends
   * with jitsu_config_declare_keys(); copied, may repeat. */
  const jitsu_param *params;
  size_t n_params;
  /* Before (ready), wait for the backend to see the guest's readiness
   * marker (e.g. a line on its console; see jitsu_backend_marker()). */
  bool ready_marker;
} jitsu_vm_def;
#define JITSU_VM_DEF_INIT                                                      \
  {                                                                            \
    JITSU_VM_DEF_VERSION, NULL, NULL, JITSU_READY_NONE, NULL, 0, 0, 0,         \
        JITSU_IDLE_NONE, NULL, 0, false                                        \
  }

/*
 * Define a vm in (ctx) from (def), which is copied, and store it in
 * (*out) (may be NULL). The backend checks its keys; on failure (err), if
 * not NULL, says why and nothing is defined. If the backend finds a live
 * guest of this name from an earlier controller, the vm adopts it and
 * starts in that guest's state (ready or suspended). The vm belongs to
 * (ctx) until jitsu_vm_undefine() or jitsu_ctx_free().
 */
JITSU_EXTERN int jitsu_vm_define(jitsu_ctx *ctx, const jitsu_vm_def *def,
                                 jitsu_vm **out, jitsu_error *err);

/* Remove (vm), which must be stopped or failed (else JITSU_ESTATE; -ENOENT
 * if it was undefined already). Its name is free at once; summons, stops
 * and suspends still waiting complete with JITSU_ECANCELED. It may be
 * called from any callback, also one about this vm: the pointer stays
 * valid (the verbs refuse it with -ENOENT) until the callbacks already
 * queued for it have returned. */
JITSU_EXTERN int jitsu_vm_undefine(jitsu_vm *vm);

/* The vm called (name), or NULL; O(1). */
JITSU_EXTERN jitsu_vm *jitsu_vm_find(jitsu_ctx *ctx, const char *name);

/* Call (fn) for each defined vm, in definition order, until it returns
 * non-zero; returns that value. (fn) must not define or undefine vms. */
JITSU_EXTERN int
jitsu_vm_foreach(jitsu_ctx *ctx, int (*fn)(jitsu_vm *vm, void *arg), void *arg);

JITSU_EXTERN const char *jitsu_vm_name(const jitsu_vm *vm);
JITSU_EXTERN jitsu_state jitsu_vm_state(const jitsu_vm *vm);
JITSU_EXTERN jitsu_ctx *jitsu_vm_ctx(const jitsu_vm *vm);

/*
 * The (index)th value of (key) among the vm's params (0 for the first), or
 * NULL when there is none.
 */
JITSU_EXTERN const char *jitsu_vm_param(const jitsu_vm *vm, const char *key,
                                        size_t index);

/* (vm)'s idle-timeout in milliseconds (0: never idle). */
JITSU_EXTERN uint64_t jitsu_vm_idle_timeout_ms(const jitsu_vm *vm);

#define JITSU_VM_INFO_VERSION 2
typedef struct jitsu_vm_info {
  unsigned version; /* set by the caller: JITSU_VM_INFO_VERSION */
  const char *name;
  const char *backend;
  jitsu_state state;
  const char *reason;      /* why it failed or last stopped, or "" */
  char instance[160];      /* backend's word for the live guest, or "" */
  bool adopted;            /* found running by this context, not spawned */
  unsigned holds;          /* jitsu_vm_hold() count */
  uint64_t state_since_ms; /* uv_now() at the last state change */
  uint64_t last_active_ms; /* uv_now() at the last touch, summon or start */
  uint64_t summons;        /* jitsu_vm_summon() calls accepted */
  uint64_t spawns;         /* cold starts */
  uint64_t resumes;
  uint64_t failures;      /* entries into the failed state */
  uint64_t last_start_ms; /* summon-to-ready of the last cold start */
  uint64_t live_since_ms; /* uv_now() when it last left stopped/failed */
} jitsu_vm_info;

/* Fill (info) (its version set by the caller); (instance) is a copy, the
 * other strings stay valid until (vm) changes state. Reads (vm) only. */
JITSU_EXTERN int jitsu_vm_info_get(const jitsu_vm *vm, jitsu_vm_info *info);

/* Completion of a verb: (status) is 0 or a negative errno value; the
 * detail of a failure is in jitsu_vm_info's reason. */
typedef void (*jitsu_vm_cb)(jitsu_vm *vm, int status, void *arg);

/*
 * Make (vm) ready and call (cb) (may be NULL) when it is: spawn it if
 * stopped or failed, resume it if suspended, wait if it is starting,
 * resuming, suspending or stopping, answer at once if ready. Any number of
 * concurrent summons cost one spawn and all get the result. (cb) is never
 * called from inside this call. Returns 0 when (cb) will be called, or an
 * error at once and (cb) is never called: JITSU_ELIMIT when max-live or
 * max-starting is reached or max-waiters summons already wait.
 */
JITSU_EXTERN int jitsu_vm_summon(jitsu_vm *vm, jitsu_vm_cb cb, void *arg);

/*
 * Stop (vm) in (mode) and call (cb) once it is stopped. Waiting summons
 * fail with JITSU_ECANCELED. A stopped or failed vm completes at once
 * (asynchronously) with 0. Returns 0, or an error and (cb) is never called.
 */
JITSU_EXTERN int jitsu_vm_stop(jitsu_vm *vm, jitsu_stop_mode mode,
                               jitsu_vm_cb cb, void *arg);

/* Suspend a ready (vm) in memory. A suspended one is done already: (cb)
 * gets 0 (later, as for a stop of a stopped vm); JITSU_ESTATE in any
 * other state. */
JITSU_EXTERN int jitsu_vm_suspend(jitsu_vm *vm, jitsu_vm_cb cb, void *arg);

/* Resume a suspended (vm). A ready one is done already: (cb) gets 0
 * (later); JITSU_ESTATE in any other state. */
JITSU_EXTERN int jitsu_vm_resume(jitsu_vm *vm, jitsu_vm_cb cb, void *arg);

/* Save a ready (vm)'s state as the image its later cold starts restore
 * (e.g. the qemu backend's "snapshot" key); the guest keeps running. (cb)
 * gets 0, or why it failed. -ENOTSUP if the backend cannot, JITSU_ESTATE
 * unless ready. */
JITSU_EXTERN int jitsu_vm_snapshot(jitsu_vm *vm, jitsu_vm_cb cb, void *arg);

/* Report activity on (vm) now (for the idle policy). */
JITSU_EXTERN void jitsu_vm_touch(jitsu_vm *vm);

/* Work is in flight on (vm): the idle policy leaves it alone until as many
 * jitsu_vm_release() calls as jitsu_vm_hold() calls have been made. */
JITSU_EXTERN void jitsu_vm_hold(jitsu_vm *vm);
JITSU_EXTERN void jitsu_vm_release(jitsu_vm *vm);

/* Called after every state change of any vm of (ctx). (reason) is "" or
 * why (e.g. "exited with status 3"). */
typedef void (*jitsu_state_fn)(jitsu_vm *vm, jitsu_state old_state,
                               jitsu_state new_state, const char *reason,
                               void *arg);

/* Subscribe (fn, arg) to state changes; -ENOMEM or 0. */
JITSU_EXTERN int jitsu_ctx_on_state(jitsu_ctx *ctx, jitsu_state_fn fn,
                                    void *arg);
/* Unsubscribe (fn, arg); -ENOENT if it was not subscribed. */
JITSU_EXTERN int jitsu_ctx_off_state(jitsu_ctx *ctx, jitsu_state_fn fn,
                                     void *arg);

/* What happened to a vm's definition. */
typedef enum jitsu_vm_event {
  JITSU_VM_DEFINED = 0, /* defined (by a config load, reload or a call) */
  JITSU_VM_CHANGED,     /* its definition changed (a reload) */
  JITSU_VM_UNDEFINING,  /* about to be undefined; its pointer dies next */
  JITSU_VM_REMOVING,    /* a reload removes it: undefined once stopped, and
                         * no longer to be routed to from now */
} jitsu_vm_event;

typedef void (*jitsu_vm_event_fn)(jitsu_vm *vm, jitsu_vm_event event,
                                  void *arg);

/* Subscribe (fn, arg) to definition events, e.g. to register a frontend's
 * triggers for vms that a reload adds or changes; -ENOMEM or 0. */
JITSU_EXTERN int jitsu_ctx_on_vm(jitsu_ctx *ctx, jitsu_vm_event_fn fn,
                                 void *arg);
/* Unsubscribe (fn, arg); -ENOENT if it was not subscribed. */
JITSU_EXTERN int jitsu_ctx_off_vm(jitsu_ctx *ctx, jitsu_vm_event_fn fn,
                                  void *arg);

#ifdef __cplusplus
}
#endif
#endif
