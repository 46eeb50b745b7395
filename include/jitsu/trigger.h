/* libjitsu: triggers map something arriving to a summon of a vm. */
#ifndef JITSU_TRIGGER_H
#define JITSU_TRIGGER_H

#include "vm.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Register a trigger of (kind) (e.g. "dns", "http", "socket" or one of the
 * caller's own) with (key) (a name, a host, an address) for (vm). Keys are
 * compared byte for byte: normalise them (e.g. lower-case DNS names)
 * before adding and looking up. -EEXIST if (kind, key) is taken, -EINVAL
 * for an empty kind or key. Triggers go away with their vm.
 */
JITSU_EXTERN int jitsu_trigger_add(jitsu_ctx *ctx, const char *kind,
                                   const char *key, jitsu_vm *vm);

/* Remove the trigger (kind, key); -ENOENT if there is none. */
JITSU_EXTERN int jitsu_trigger_remove(jitsu_ctx *ctx, const char *kind,
                                      const char *key);

/* The vm that (kind, key) summons, or NULL; O(1). */
JITSU_EXTERN jitsu_vm *jitsu_trigger_lookup(jitsu_ctx *ctx, const char *kind,
                                            const char *key);

/*
 * Something arrived for (kind, key): touch its vm and summon it as
 * jitsu_vm_summon() does, with (cb, arg). -ENOENT when no trigger matches;
 * otherwise what jitsu_vm_summon() returns. (*vm_out), if not NULL, is set
 * to the vm or NULL.
 */
JITSU_EXTERN int jitsu_trigger_fire(jitsu_ctx *ctx, const char *kind,
                                    const char *key, jitsu_vm_cb cb, void *arg,
                                    jitsu_vm **vm_out);

#ifdef __cplusplus
}
#endif
#endif
