/* libjitsu: the optional idle policy helper. */
#ifndef JITSU_IDLE_H
#define JITSU_IDLE_H

#include "vm.h"

#ifdef __cplusplus
extern "C" {
#endif

#define JITSU_IDLE_OPTIONS_VERSION 1
typedef struct jitsu_idle_options {
  unsigned version;           /* JITSU_IDLE_OPTIONS_VERSION */
  uint64_t check_interval_ms; /* 0: 1000 */
} jitsu_idle_options;
#define JITSU_IDLE_OPTIONS_INIT                                                \
  { JITSU_IDLE_OPTIONS_VERSION, 0 }

/*
 * Opt in to the idle policy: every (check_interval_ms), each ready vm with
 * an idle_timeout_ms, no holds and no activity (summon, touch, start) for
 * that long gets its idle_action (destroy, shutdown or suspend). The core
 * never stops anything without this helper. Returns 0, -EEXIST if already
 * attached, or -ENOMEM.
 */
JITSU_EXTERN int jitsu_idle_attach(jitsu_ctx *ctx,
                                   const jitsu_idle_options *opts);

/* Stop the idle policy; nothing more is put away. */
JITSU_EXTERN void jitsu_idle_detach(jitsu_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif
