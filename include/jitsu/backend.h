/* libjitsu: the contract between the core and a backend. */
#ifndef JITSU_BACKEND_H
#define JITSU_BACKEND_H

#include <sys/socket.h>
#include <sys/types.h>

#include "config.h"
#include "helpers.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A backend turns vm operations into real work. Every operation is
 * asynchronous: it returns 0 once the work is under way (or a negative
 * errno value if it could not begin, with jitsu_vm_set_reason() saying
 * why) and reports the outcome later, from the loop, with the
 * jitsu_backend_*() calls below. The core calls an operation only in the
 * state where it makes sense and serialises them per vm.
 *
 * A report runs state subscribers, which may undefine the vm: when a
 * report returns, the vm pointer is still valid (until the loop turns) but
 * the backend's data may have been released (jitsu_vm_data() is then no
 * longer the backend's). Report last, or check jitsu_vm_data() before
 * touching the backend's data again.
 */
#define JITSU_BACKEND_OPS_VERSION 1
typedef struct jitsu_backend_ops {
  unsigned version; /* JITSU_BACKEND_OPS_VERSION */
  const char *name;
  const jitsu_key *keys; /* [vm] keys this backend accepts */
  size_t n_keys;
  /* Check the vm's params and keep what is needed (jitsu_vm_set_data);
   * fill (err) on a bad value. Called once, at definition. */
  int (*configure)(jitsu_vm *vm, jitsu_error *err);
  /* Free what configure kept; the vm is going away (the guest may live). */
  void (*release)(jitsu_vm *vm);
  /* Acquire host resources (e.g. bind listening sockets) once the vm is
   * defined and adoption has run (jitsu_vm_state() tells); fill (err) on
   * failure and the definition is undone. May be NULL. */
  int (*attach)(jitsu_vm *vm, jitsu_error *err);
  /* Look for a live guest of this vm left by an earlier controller.
   * Return 1 and set (*state) (ready or suspended) if found, else 0. When
   * finding out means waiting (asking a monitor or a remote host), do not
   * wait here: return 1 with (*state) starting, and report within a
   * bounded time with jitsu_backend_adopted(); summons wait meanwhile. */
  int (*adopt)(jitsu_vm *vm, jitsu_state *state);
  /* Start the guest; report with jitsu_backend_started(). */
  int (*start)(jitsu_vm *vm);
  /* Stop the guest in (mode), destroying it after (grace_ms) for a
   * shutdown; report with jitsu_backend_exited(). */
  int (*stop)(jitsu_vm *vm, jitsu_stop_mode mode, uint64_t grace_ms);
  /* Pause / continue the guest; report with jitsu_backend_suspended() /
   * jitsu_backend_resumed(). NULL: the backend cannot. */
  int (*suspend)(jitsu_vm *vm);
  int (*resume)(jitsu_vm *vm);
  /* Told after every state change of one of its vms (may be NULL). */
  void (*state_changed)(jitsu_vm *vm, jitsu_state old_state,
                        jitsu_state new_state);
  /* Whether (pid) belongs to the guest, for notify readiness (NULL: any
   * sender is accepted). */
  int (*owns_pid)(jitsu_vm *vm, pid_t pid);
  /* Describe the live guest into (buf), e.g. "pid 1234" (may be NULL). */
  void (*describe)(jitsu_vm *vm, char *buf, size_t size);
  /* Save the ready guest's state as the image its later starts restore,
   * and keep it running; report with jitsu_backend_snapshotted(). NULL:
   * the backend cannot. */
  int (*snapshot)(jitsu_vm *vm);
  /* Whether the guest has work the core cannot see, e.g. connections open
   * on sockets handed to it: > 0 counts as activity for the idle policy,
   * which asks before it acts (may be NULL). */
  int (*busy)(jitsu_vm *vm);
} jitsu_backend_ops;

/* Make (ops) available to (ctx) under ops->name; -EEXIST if taken. The
 * built-in backends are registered by jitsu_ctx_new(). */
JITSU_EXTERN int jitsu_backend_register(jitsu_ctx *ctx,
                                        const jitsu_backend_ops *ops);

/* Names of the registered backends, NULL-terminated, static storage of
 * the ctx; valid until the next registration. */
JITSU_EXTERN const char *const *jitsu_backend_names(jitsu_ctx *ctx);

/* ---- spares: guests made ahead of summons (e.g. qemu's pool = N) ----
 *
 * A backend that keeps spares asks before it makes one, so that spares
 * count against the context's limits: a spare counts as a live guest
 * (max-live) from jitsu_spare_begin() to jitsu_spare_end(), and as a
 * start (max-starting) until jitsu_spare_filled(). Summons come first: a
 * spare is begun only while no summon waits for a start slot, and when a
 * summon needs a live guest's room that spares hold, the library ends
 * spares (other vms' first, the oldest first) through their reclaim
 * callback, which must end the spare at once and call jitsu_spare_end().
 * A spare that a start takes over ends as a spare (jitsu_spare_end()) as
 * its vm becomes live. */
typedef struct jitsu_spare jitsu_spare;
struct jitsu_spare {
  /* the library's, from jitsu_spare_begin() to jitsu_spare_end() */
  jitsu_list link;
  jitsu_vm *vm;
  void (*reclaim)(jitsu_spare *s);
  bool filling, counted;
  /* the backend's: the memory the spare holds in bytes (e.g. its resident
   * memory once it waits), 0 while unknown; shown in the stats */
  uint64_t memory;
};
/* Count (s), a spare of (vm) about to be made: 0, or JITSU_ELIMIT when
 * max-live or max-starting leaves no room now, or summons wait (try again
 * later). (s) stays the caller's memory, zeroed before its first begin;
 * the library links it. The reclaim callback runs inside a summon. */
JITSU_EXTERN int jitsu_spare_begin(jitsu_vm *vm, jitsu_spare *s,
                                   void (*reclaim)(jitsu_spare *s));
/* Count (s), a spare that is made already (found by an adopt, left by a
 * controller before a restart) and so needs no start: 0, or JITSU_ELIMIT
 * when max-live leaves no room for it (end it then). */
JITSU_EXTERN int jitsu_spare_adopt(jitsu_vm *vm, jitsu_spare *s,
                                   void (*reclaim)(jitsu_spare *s));
/* (s) is made and waits: it no longer counts as a start. */
JITSU_EXTERN void jitsu_spare_filled(jitsu_spare *s);
/* (s) is gone (ended, or taken by its vm's start): it no longer counts.
 * Nothing if it was not counted. */
JITSU_EXTERN void jitsu_spare_end(jitsu_spare *s);
/* The spares that (ctx) counts now, and of those, the ones filling. */
JITSU_EXTERN void jitsu_ctx_spares(jitsu_ctx *ctx, size_t *spares,
                                   size_t *filling);
/* The same for (vm)'s spares, and the sum of their memory (bytes). */
JITSU_EXTERN void jitsu_vm_spares(const jitsu_vm *vm, size_t *spares,
                                  size_t *filling, uint64_t *memory);

/* Per-vm data of the backend. */
JITSU_EXTERN void jitsu_vm_set_data(jitsu_vm *vm, void *data);
JITSU_EXTERN void *jitsu_vm_data(const jitsu_vm *vm);

/* Set the reason shown with the next state change (printf format). */
JITSU_EXTERN void jitsu_vm_set_reason(jitsu_vm *vm, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Log on behalf of (vm): the line is prefixed with "vm NAME: ". */
/* Whether the "socket" value (spec) names a guest address (to=): then the
 * library relays its connections, whatever the backend; a backend that
 * hands sockets to its guests takes only the others. */
JITSU_EXTERN bool jitsu_backend_socket_relayed(const char *spec);

/* The backend that runs (vm) (its ops, to tell one's own vms apart). */
JITSU_EXTERN const jitsu_backend_ops *jitsu_vm_backend(const jitsu_vm *vm);

JITSU_EXTERN void jitsu_vm_log(jitsu_vm *vm, jitsu_log_level level,
                               const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Readiness parameters of (vm). */
JITSU_EXTERN jitsu_ready_method jitsu_vm_ready_method(const jitsu_vm *vm);

/* The port of (vm)'s tcp or http readiness address; 0 when its readiness
 * has no address. */
JITSU_EXTERN unsigned jitsu_vm_ready_port(const jitsu_vm *vm);

/* Probing a guest that is not (yet) the vm's own, e.g. a spare through a
 * forward of its own, with the vm's tcp or http readiness check. */
typedef struct jitsu__readiness jitsu_probe;
typedef void (*jitsu_probe_cb)(jitsu_probe *p, int status, void *arg);
/* Check (addr) the way (vm)'s readiness checks its own address (a TCP
 * connect, or an HTTP GET of its path that is answered), again with a
 * back-off until it answers. (cb) is called once, from the loop: 0 once it
 * answered, JITSU_ETIMEDOUT after (timeout_ms), JITSU_ECANCELED after
 * jitsu_probe_cancel(); (p) is gone when it returns. Returns 0 with (*out)
 * set, -EINVAL when (vm)'s readiness is neither tcp nor http, or -ENOMEM.
 * The probe copies what it needs: (vm) may change or go meanwhile. */
JITSU_EXTERN int jitsu_vm_probe(jitsu_vm *vm, const struct sockaddr *addr,
                                uint64_t timeout_ms, jitsu_probe_cb cb,
                                void *arg, jitsu_probe **out);
/* Stop (p), which has not completed: its callback gets JITSU_ECANCELED. */
JITSU_EXTERN void jitsu_probe_cancel(jitsu_probe *p);

/* The NOTIFY_SOCKET value the guest must get ("@..." for an abstract
 * socket), or NULL when readiness is not notify. Valid while starting. */
JITSU_EXTERN const char *jitsu_vm_notify_socket(const jitsu_vm *vm);

/* The guest is running (err 0; readiness checks begin) or could not be
 * started (err < 0, with a reason set). */
JITSU_EXTERN void jitsu_backend_started(jitsu_vm *vm, int err);
/* An adoption that adopt() left starting found the guest (state) ready
 * or suspended, or nothing to adopt (stopped: summons that wait start a
 * new guest); (how) says what was found, for the log. If the guest ends
 * first, report that with jitsu_backend_exited() instead. */
JITSU_EXTERN void jitsu_backend_adopted(jitsu_vm *vm, jitsu_state state,
                                        const char *how);

/* The guest has shown its readiness marker (e.g. printed it on its
 * console). It counts only while the vm is starting and its definition
 * asks for a marker (jitsu_vm_wants_marker()); otherwise it is ignored. */
JITSU_EXTERN void jitsu_backend_marker(jitsu_vm *vm);
JITSU_EXTERN bool jitsu_vm_wants_marker(const jitsu_vm *vm);
/* This guest has passed the vm's readiness check already, before this
 * start (e.g. a pool's spare, checked before it was paused and continued
 * now): the start is ready as soon as it is reported, without checking
 * again. Report it, with the marker, before jitsu_backend_started(); it
 * counts only while the vm is starting. */
JITSU_EXTERN void jitsu_backend_checked(jitsu_vm *vm);

/* The guest is gone: (clean) if it ended normally (exit status 0 or the
 * stop asked of it), with (how) e.g. "exited with status 3". */
JITSU_EXTERN void jitsu_backend_exited(jitsu_vm *vm, int clean,
                                       const char *how);

/* A snapshot finished (err 0) or failed (err < 0, with a reason set). */
JITSU_EXTERN void jitsu_backend_snapshotted(jitsu_vm *vm, int err);

/* Suspend / resume finished (err 0) or failed (err < 0). */
JITSU_EXTERN void jitsu_backend_suspended(jitsu_vm *vm, int err);
JITSU_EXTERN void jitsu_backend_resumed(jitsu_vm *vm, int err);

/* Fill (err) with (code) and a formatted message; returns (code). */
JITSU_EXTERN int jitsu_error_set(jitsu_error *err, int code, const char *key,
                                 const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#ifdef __cplusplus
}
#endif
#endif
