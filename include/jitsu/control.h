/* libjitsu: the control socket that jitsu-ctl and scripts speak to. */
#ifndef JITSU_CONTROL_H
#define JITSU_CONTROL_H

#include "ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

#define JITSU_CONTROL_PROTOCOL 1
#define JITSU_CONTROL_DEFAULT_MAX_REQUEST 65536
#define JITSU_CONTROL_DEFAULT_MAX_CLIENTS 64
#define JITSU_CONTROL_DEFAULT_TIMEOUT_MS 30000

#define JITSU_CONTROL_OPTIONS_VERSION 1
typedef struct jitsu_control_options {
  unsigned version; /* JITSU_CONTROL_OPTIONS_VERSION */
  /* The socket's path. NULL: [jitsu] control-socket of the loaded config,
   * else STATE_DIR/control.sock. */
  const char *path;
  /* A group that may also use the socket (mode 0660); NULL: [jitsu]
   * control-group, else none (mode 0600, the owner only). */
  const char *group;
  size_t max_request;   /* bytes in one request line; 0: 64 KiB */
  unsigned max_clients; /* connected at once; 0: 64 */
  /* Longest wait of one request (a summon --wait, a stop), and the
   * longest a request line may take to arrive; 0: 30 s. */
  uint64_t request_timeout_ms;
} jitsu_control_options;
#define JITSU_CONTROL_OPTIONS_INIT                                             \
  { JITSU_CONTROL_OPTIONS_VERSION, NULL, NULL, 0, 0, 0 }

/*
 * Serve the control protocol (doc/control-protocol.md) on a Unix socket.
 * A socket file left by a dead controller is replaced; one that a live
 * controller answers on is not (-EADDRINUSE). Returns 0 or a negative
 * errno value, with jitsu_ctx_last_error() saying why.
 */
JITSU_EXTERN int jitsu_control_listen(jitsu_ctx *ctx,
                                      const jitsu_control_options *opts);

/* The path the control socket listens on, or NULL. */
JITSU_EXTERN const char *jitsu_control_path(jitsu_ctx *ctx);

/* Give one statistic (name) = (value) to (emit_arg). */
typedef void (*jitsu_stat_fn)(void *emit_arg, const char *name, double value);
/* A source of statistics: calls (emit) once per statistic. Names ending in
 * "_total" are counters, others gauges. */
typedef void (*jitsu_stats_source)(jitsu_stat_fn emit, void *emit_arg,
                                   void *arg);

/*
 * Add the statistics of (group) (e.g. "dns") from (fn, arg) to the control
 * protocol's "stats" answer (under "frontends") and so to jitsu-ctl stats.
 * Returns 0, -EEXIST if (group) is taken, or -ENOMEM.
 */
JITSU_EXTERN int jitsu_control_add_stats(jitsu_ctx *ctx, const char *group,
                                         jitsu_stats_source fn, void *arg);

/* What a statistic is, for the HELP line of Prometheus' text format
 * (`jitsu-ctl stats --prometheus`). (name) is as emitted, or a prefix
 * ending in '*' ("answers_*"). A name ending in "_ms" is shown there in
 * seconds, as "_seconds" (Prometheus' base unit). */
typedef struct jitsu_stat_help {
  const char *name;
  const char *help;
} jitsu_stat_help;

/*
 * Describe the statistics of (group) (added with jitsu_control_add_stats)
 * with (help, n), a table that must outlive the group (a static one).
 * Returns 0, or -ENOENT if no such group.
 */
JITSU_EXTERN int jitsu_control_describe_stats(jitsu_ctx *ctx, const char *group,
                                              const jitsu_stat_help *help,
                                              size_t n);

/* Stop serving: close the socket, its clients, and remove the file. */
JITSU_EXTERN void jitsu_control_close(jitsu_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif
