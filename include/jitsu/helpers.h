/* libjitsu: helpers that are not about guests. The core API (contexts,
 * vms, triggers, channels, control) is in the other headers; these are the
 * small tools that frontends and embedders share with the library: value
 * parsers, argv splitting, the systemd notify protocol, a logger, an
 * intrusive list and a keyed hash. */
#ifndef JITSU_HELPERS_H
#define JITSU_HELPERS_H

#include "common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The state directory used when none is configured: /run/jitsu for root,
 * else $XDG_RUNTIME_DIR/jitsu, else /tmp/jitsu-UID. */
JITSU_EXTERN void jitsu_default_state_dir(char *out, size_t size);

/* Parse a duration ("250ms", "5s", "2m", "1h", "0") into (*ms): 0 or
 * -EINVAL. */
JITSU_EXTERN int jitsu_parse_duration(const char *text, uint64_t *ms);

/* Parse a size in bytes ("4096", "512K", "64M", "2G", "1T"; powers of
 * 1024) into (*bytes): 0 or -EINVAL. */
JITSU_EXTERN int jitsu_parse_size(const char *text, uint64_t *bytes);

/* Parse a boolean (yes/no, true/false, on/off, 1/0): 0 or -EINVAL. */
JITSU_EXTERN int jitsu_parse_bool(const char *text, bool *value);

/*
 * Split (text) into an argv array the way a POSIX shell splits words, with
 * '...' and "..." quoting and backslash escapes, but no expansion of any
 * kind. On success (*argv) is a NULL-terminated array in one allocation
 * (free() it) and (*argc) its length. -EINVAL (unbalanced quote, empty)
 * or -ENOMEM.
 */
JITSU_EXTERN int jitsu_split_argv(const char *text, char ***argv, int *argc);

/*
 * A ready-made logger for jitsu_ctx_set_logger: one line on stderr per
 * message, "2026-12-02T12:00:00.123Z PROGRAM: LEVEL: MESSAGE" (UTC,
 * milliseconds), where (arg) is PROGRAM (a const char *, or NULL). Under
 * systemd (stderr is the journal: $JOURNAL_STREAM names it) the time is
 * left to the journal and the line starts with the syslog priority
 * instead ("<4>PROGRAM: warning: ..."), so journalctl -p filters it.
 */
JITSU_EXTERN void jitsu_log_stderr(jitsu_log_level level, const char *message,
                                   void *arg);

/*
 * Tell systemd (or any supervisor speaking its notify protocol) (state),
 * e.g. "READY=1": one datagram to $NOTIFY_SOCKET (a path, or "@name" for
 * an abstract socket). 0 when sent or when there is no $NOTIFY_SOCKET,
 * else a negative errno value.
 */
JITSU_EXTERN int jitsu_sd_notify(const char *state);

/*
 * An intrusive doubly linked list: embed a jitsu_list in each element and
 * one as the head; JITSU_CONTAINER_OF() gets the element back. The head of
 * an empty list points at itself. A link in no list is all NULL (as calloc
 * leaves it, and as removing leaves it): removing it does nothing.
 */
typedef struct jitsu_list {
  struct jitsu_list *prev, *next;
} jitsu_list;

/* The (type) whose field (member) is at (ptr). */
#define JITSU_CONTAINER_OF(ptr, type, member)                                  \
  ((type *)((char *)(ptr)-offsetof(type, member)))

static inline void jitsu_list_init(jitsu_list *head) {
  head->prev = head->next = head;
}

static inline bool jitsu_list_empty(const jitsu_list *head) {
  return head->next == head;
}

/* Add (link) at the end of (head). */
static inline void jitsu_list_append(jitsu_list *head, jitsu_list *link) {
  link->prev = head->prev;
  link->next = head;
  head->prev->next = link;
  head->prev = link;
}

/* Take (link) out of its list (or do nothing if it is in none). */
static inline void jitsu_list_remove(jitsu_list *link) {
  if (link->next == NULL)
    return;
  link->prev->next = link->next;
  link->next->prev = link->prev;
  link->prev = link->next = NULL;
}

/*
 * A keyed hash for tables whose keys outside input may choose (DNS names,
 * HTTP hosts): SipHash-1-3 of (data, len) under (key). Give each table a
 * random key (jitsu_hash_key_random()) so that nobody can aim collisions
 * at it; a fixed key gives a stable hash (derived names, MACs).
 */
typedef struct jitsu_hash_key {
  uint64_t k0, k1;
} jitsu_hash_key;

/* Fill (key) from getrandom(2) (a time-based fallback without it). */
JITSU_EXTERN void jitsu_hash_key_random(jitsu_hash_key *key);

JITSU_EXTERN uint64_t jitsu_hash(const jitsu_hash_key *key, const void *data,
                                 size_t len);

#ifdef __cplusplus
}
#endif
#endif
