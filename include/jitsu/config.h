/* libjitsu: the INI configuration file and the keys it accepts. */
#ifndef JITSU_CONFIG_H
#define JITSU_CONFIG_H

#include "vm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum jitsu_key_type {
  JITSU_KEY_STRING = 0,
  JITSU_KEY_DURATION, /* "250ms", "5s", "2m", "1h"; a bare 0 is allowed */
  JITSU_KEY_UINT,     /* decimal, 0 .. 2^32-1 */
  JITSU_KEY_BOOL,     /* yes/no, true/false, on/off, 1/0 */
  JITSU_KEY_SIZE,     /* bytes: "4096", "512K", "64M", "2G" (powers of 2) */
  /* One of the words that (help) lists before any "(": "answer |
   * servfail"; a word ending in '*' matches as a prefix ("pc-*"). Anything
   * else is an error at its line naming the words. */
  JITSU_KEY_ENUM,
} jitsu_key_type;

#define JITSU_KEY_MULTI 1u    /* may be given more than once */
#define JITSU_KEY_REQUIRED 2u /* must be given */

/* A key that a section accepts. Declared arrays must outlive the ctx. */
typedef struct jitsu_key {
  const char *name;
  jitsu_key_type type;
  unsigned flags;
  const char *help;
} jitsu_key;

/*
 * Declare that sections called (section) accept (keys[0..n)). (section) is
 * "jitsu" for the global section, "vm" for every [vm NAME] section, or the
 * name of a section of the caller's own (e.g. "dns"). Keys that no one
 * declared are errors in a config file, so a frontend adds its keys here
 * before jitsu_config_load(). -EEXIST if a key is declared twice.
 */
JITSU_EXTERN int jitsu_config_declare_keys(jitsu_ctx *ctx, const char *section,
                                           const jitsu_key *keys, size_t n);

/*
 * A caller's own check of the values of a section it declared, beyond
 * their type (jitsu-dns parses the zone file that a [dns] zone names):
 * (fn) is called for every value of every key of (section) wherever a
 * file's values are checked, by jitsu_config_load(), jitsu_config_check()
 * and jitsu_config_reload(), before anything is applied. It returns 0, or
 * a negative errno value with the reason in (why) (a buffer of (size)
 * bytes); the file is then refused with "FILE:LINE: KEY: why" at that
 * value's line, and nothing changes. (section) is one of the caller's
 * own (not "jitsu" or "vm"); -ENOENT if it was not declared.
 */
typedef int (*jitsu_value_check_fn)(jitsu_ctx *ctx, const char *section,
                                    const char *key, const char *value,
                                    char *why, size_t size, void *arg);
JITSU_EXTERN int jitsu_config_check_values(jitsu_ctx *ctx, const char *section,
                                           jitsu_value_check_fn fn, void *arg);

/*
 * Load the configuration file (path) into (ctx): apply [jitsu], remember
 * other declared sections and define one vm per [vm NAME] section. The
 * whole file is checked first; on any error nothing is applied, (err)
 * says "file:line: key: reason" and a negative errno value is returned
 * (-EINVAL for a bad file). Relative paths in the file stay as written.
 */
JITSU_EXTERN int jitsu_config_load(jitsu_ctx *ctx, const char *path,
                                   jitsu_error *err);

typedef enum jitsu_reload_action {
  JITSU_RELOAD_ADDED = 0, /* a new vm, defined */
  JITSU_RELOAD_REMOVED,   /* gone from the file: stopped, then undefined */
  JITSU_RELOAD_CHANGED,   /* its new definition is in force */
  JITSU_RELOAD_CHANGED_AT_STOP, /* settings in force; the rest when the
                                 * running guest next stops */
  JITSU_RELOAD_UNCHANGED,       /* left alone, guest and all */
} jitsu_reload_action;

/* "added", "removed", "changed", "changed-at-stop", "unchanged". */
JITSU_EXTERN const char *jitsu_reload_action_name(jitsu_reload_action a);

typedef void (*jitsu_reload_fn)(const char *name, jitsu_reload_action action,
                                void *arg);

/*
 * Read the file that jitsu_config_load() read again and make the running
 * set match it: define new vms, stop and undefine removed ones, apply
 * changed definitions (at once for a vm that is not running; for a running
 * one, its readiness, time-out and idle settings at once and the rest when
 * it next stops), apply [jitsu] limits and the other sections, and leave
 * unchanged vms and their guests alone. The state directory cannot change.
 * A file with errors is rejected whole, as is one whose new sockets cannot
 * be bound: then nothing changed. (fn), if not NULL, hears what became of
 * each vm. -ENOENT if no config was loaded.
 */
JITSU_EXTERN int jitsu_config_reload(jitsu_ctx *ctx, jitsu_reload_fn fn,
                                     void *arg, jitsu_error *err);

/* Called after every reload that was applied, whoever asked for it (the
 * control socket's "reload", a signal, a call), once the vms are as the
 * file says: a frontend re-reads its own sections here. */
typedef void (*jitsu_reloaded_fn)(jitsu_ctx *ctx, void *arg);
/* Subscribe (fn, arg); -ENOMEM or 0. */
JITSU_EXTERN int jitsu_ctx_on_reloaded(jitsu_ctx *ctx, jitsu_reloaded_fn fn,
                                       void *arg);
/* Unsubscribe (fn, arg); -ENOENT if it was not subscribed. */
JITSU_EXTERN int jitsu_ctx_off_reloaded(jitsu_ctx *ctx, jitsu_reloaded_fn fn,
                                        void *arg);

/* Check the config file (path) as jitsu_config_load() would (keys,
 * values, each backend's check of its vms, the files they need), and
 * apply nothing: no vm is defined, the state directory is not touched (a
 * daemon that runs on it keeps it). 0, or as jitsu_config_load(). */
JITSU_EXTERN int jitsu_config_check(jitsu_ctx *ctx, const char *path,
                                    jitsu_error *err);

/* The (index)th value of (key) in section (section) of the loaded config
 * ("jitsu" or a declared section of one's own), or NULL. */
JITSU_EXTERN const char *jitsu_config_get(jitsu_ctx *ctx, const char *section,
                                          const char *key, size_t index);

/* Where the (index)th value of (key) in (section) was read, as
 * "FILE:LINE" in (out), for errors found after loading ("FILE:LINE:
 * [dns] listen '...': address already in use"); 0, or -ENOENT. */
JITSU_EXTERN int jitsu_config_where(jitsu_ctx *ctx, const char *section,
                                    const char *key, size_t index, char *out,
                                    size_t size);

/* For a frontend's own checks of a vm's keys: put "FILE:LINE: " (where
 * its [vm NAME] section was read) before the message (why) (a buffer of
 * (size) bytes); nothing for a vm defined in code. */
JITSU_EXTERN void jitsu_vm_blame(jitsu_vm *vm, char *why, size_t size);

/* If (value) is a value of (key) in (section) of the loaded config (the
 * very pointer jitsu_config_get() gave), put "FILE:LINE: [SECTION] "
 * before the message (why) (a buffer of (size) bytes). */
JITSU_EXTERN void jitsu_config_blame(jitsu_ctx *ctx, const char *section,
                                     const char *key, const char *value,
                                     char *why, size_t size);

/* The first value of (key) in (section) of the loaded config as a
 * duration in ms, a size in bytes, a whole number or a boolean; (def) when
 * it is absent. Values were checked by their declared type at load. */
JITSU_EXTERN uint64_t jitsu_config_duration(jitsu_ctx *ctx, const char *section,
                                            const char *key, uint64_t def);
JITSU_EXTERN uint64_t jitsu_config_size(jitsu_ctx *ctx, const char *section,
                                        const char *key, uint64_t def);
JITSU_EXTERN unsigned jitsu_config_uint(jitsu_ctx *ctx, const char *section,
                                        const char *key, unsigned def);
JITSU_EXTERN bool jitsu_config_bool(jitsu_ctx *ctx, const char *section,
                                    const char *key, bool def);

/*
 * Read the value of (key) in [section] of the config file (path) into
 * (out) without loading anything (for tools such as jitsu-ctl). 0, -ENOENT
 * when the key is absent, or the file's error.
 */
JITSU_EXTERN int jitsu_config_peek(const char *path, const char *section,
                                   const char *key, char *out, size_t size);

#ifdef __cplusplus
}
#endif
#endif
