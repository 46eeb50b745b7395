/* libjitsu: the context, bound to the embedder's libuv loop. */
#ifndef JITSU_CTX_H
#define JITSU_CTX_H

#include <uv.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct jitsu_ctx jitsu_ctx;
typedef struct jitsu_vm jitsu_vm;

#define JITSU_DEFAULT_MAX_LIVE 64
#define JITSU_DEFAULT_MAX_STARTING 8
#define JITSU_DEFAULT_MAX_WAITERS 4096

#define JITSU_CTX_OPTIONS_VERSION 1
typedef struct jitsu_ctx_options {
  unsigned version; /* JITSU_CTX_OPTIONS_VERSION */
  /* Where guest records, logs and notify sockets live. NULL: /run/jitsu
   * for root, else $XDG_RUNTIME_DIR/jitsu, else /tmp/jitsu-UID. Created
   * (mode 0700) when missing. A config file's state-dir overrides it. */
  const char *state_dir;
  unsigned max_live;     /* live guests at once; 0: the default */
  unsigned max_starting; /* guests starting or resuming at once; 0: default */
  unsigned max_waiters;  /* summons waiting on one vm; 0: default */
} jitsu_ctx_options;
#define JITSU_CTX_OPTIONS_INIT                                                 \
  { JITSU_CTX_OPTIONS_VERSION, NULL, 0, 0, 0 }

/* Fill (opts) with the defaults of (version); returns 0 or -EINVAL. */
JITSU_EXTERN int jitsu_ctx_options_init(jitsu_ctx_options *opts,
                                        unsigned version);

/*
 * As with libuv, the embedder ignores SIGPIPE (signal(SIGPIPE, SIG_IGN)):
 * the control socket writes to clients that may have gone away.
 *
 * Create a context on (loop) with (opts) (NULL: defaults) and store it in
 * (*out). The caller owns the context and frees it with jitsu_ctx_free().
 * Returns 0 or a negative errno value.
 */
JITSU_EXTERN int jitsu_ctx_new(uv_loop_t *loop, const jitsu_ctx_options *opts,
                               jitsu_ctx **out);

/*
 * Free (ctx) and every vm defined in it. Live guests are left running (a
 * later context adopts them, see jitsu_vm_define()); stop them first to
 * end them. Pending callbacks are dropped, never called. The libuv handles
 * are closed asynchronously: run the loop afterwards until it is idle to
 * release the last of the memory.
 */
JITSU_EXTERN void jitsu_ctx_free(jitsu_ctx *ctx);

/* The loop (ctx) runs on. */
JITSU_EXTERN uv_loop_t *jitsu_ctx_loop(jitsu_ctx *ctx);

/* The state directory in use. */
JITSU_EXTERN const char *jitsu_ctx_state_dir(jitsu_ctx *ctx);

typedef void (*jitsu_log_fn)(jitsu_log_level level, const char *message,
                             void *arg);

/*
 * Send the library's log lines at or below (max_level) to (fn) with (arg).
 * The library prints nothing by itself; without a logger, lines are lost.
 */
JITSU_EXTERN void jitsu_ctx_set_logger(jitsu_ctx *ctx, jitsu_log_fn fn,
                                       void *arg, jitsu_log_level max_level);

/*
 * Log (fmt, ...) at (level) through the context's logger (nothing when none
 * is set or (level) is above its maximum). jitsu_vm_log() prefixes a vm.
 */
JITSU_EXTERN void jitsu_ctx_log(jitsu_ctx *ctx, jitsu_log_level level,
                                const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Create the state directory and its subdirectory (sub) (NULL: none),
 * writing the path into (path); the first call checks that the directory
 * is ours (owner, mode, no symlink) and takes its lock, so that one
 * controller at a time uses it (-EBUSY: another has it). 0, or a negative
 * errno value with jitsu_ctx_last_error() saying why. For backends and
 * embedders that keep files beside the guests' records.
 */
JITSU_EXTERN int jitsu_ctx_state_subdir(jitsu_ctx *ctx, const char *sub,
                                        char *path, size_t size);

/*
 * The detail of the last error that a call on (ctx) returned, e.g.
 * "cannot suspend vm 'web': it is stopped". Valid until the next call.
 */
JITSU_EXTERN const char *jitsu_ctx_last_error(jitsu_ctx *ctx);

/* Limits in force (after configuration). */
JITSU_EXTERN void jitsu_ctx_limits(jitsu_ctx *ctx, unsigned *max_live,
                                   unsigned *max_starting,
                                   unsigned *max_waiters);

/* Number of vms defined, guests live (not stopped or failed), starting. */
JITSU_EXTERN void jitsu_ctx_counts(jitsu_ctx *ctx, size_t *defined,
                                   size_t *live, size_t *starting);
/* Summons refused since (ctx) began, for max-live and for max-waiters
 * (either may be NULL); each refusal is also logged, at most once per
 * limit every 10 s with the number not logged since. */
JITSU_EXTERN void jitsu_ctx_refusals(jitsu_ctx *ctx, uint64_t *max_live,
                                     uint64_t *max_waiters);

#ifdef __cplusplus
}
#endif
#endif
