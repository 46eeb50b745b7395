/* The qemu backend's private header (qemu*.c, qmp.c). */
#ifndef JITSU_BACKEND_QEMU_H
#define JITSU_BACKEND_QEMU_H

#include "base.h"

#include <jansson.h>
#include <limits.h>
#include <sys/types.h>

/*
 * A QMP client on the loop. Commands go one at a time, in order, each with
 * its own time limit; events are passed on as they come. The greeting and
 * the capabilities handshake are done before (on_open) is called.
 */
typedef struct qmp qmp;

/* (ret) is the command's "return" value, or NULL with (error) saying why
 * (QEMU's own "desc", "timed out" or "connection closed"). */
typedef void (*qmp_reply_cb)(void *arg, json_t *ret, const char *error);

typedef struct qmp_handlers {
  void (*open)(void *arg); /* handshake done */
  void (*event)(void *arg, const char *name, json_t *data);
  void (*closed)(void *arg, const char *why); /* EOF, error or time-out */
} qmp_handlers;

/* Take (fd), a connected stream socket to QEMU's monitor; NULL if out of
 * memory (fd is closed). (timeout_ms) bounds the handshake. */
qmp *qmp_open(uv_loop_t *loop, int fd, const qmp_handlers *h, void *arg,
              uint64_t timeout_ms);

/* Queue (cmd) with (args) (a new reference is taken; may be NULL), passing
 * (pass_fd) (-1: none) with SCM_RIGHTS; (cb) may be NULL. 0 or -errno. */
int qmp_send(qmp *q, const char *cmd, json_t *args, int pass_fd,
             uint64_t timeout_ms, qmp_reply_cb cb, void *arg);

/* Close the connection; queued commands are dropped without callbacks. */
void qmp_close(qmp *q);

enum { QNET_USER, QNET_TAP, QNET_NONE };
enum { QACCEL_AUTO, QACCEL_KVM, QACCEL_TCG };

/* What the backend is doing with the live guest. */
typedef enum qop {
  QOP_NONE,         /* running, or nothing live */
  QOP_START,        /* booting or restoring until started is reported */
  QOP_RESUME_DISK,  /* restoring the suspend image */
  QOP_SUSPEND_MEM,  /* QMP stop */
  QOP_RESUME_MEM,   /* QMP cont */
  QOP_SUSPEND_DISK, /* stop, migrate to the suspend image, quit */
  QOP_STOP,         /* powerdown / quit / kill */
  QOP_ADOPT,        /* a live QEMU found at definition: asking its status */
} qop;

/* A pool member (qemu_pool.c): a qvm of its own whose QEMU waits, paused,
 * at the guest's ready point (its console marker, or a restored image). */
#define QEMU_POOL_MAX 8
/* A pool refills this long after the guest that took a spare is ready, so
 * that its first answers do not compete with a new spare's boot. */
#define QEMU_POOL_AFTER_READY_MS 250
typedef enum qspare { QSPARE_NO = 0, QSPARE_FILLING, QSPARE_READY } qspare;
/* A ready spare's hold on the vm's host forwards (qemu_pool.c). */
typedef enum qhold {
  QHOLD_NO = 0, /* holds none: a take adds them */
  QHOLD_ADDING, /* adding them, one rule at a time */
  QHOLD_HELD,   /* holds all: a take only continues it */
  QHOLD_FAILED  /* one could not be added: not tried again while a spare */
} qhold;

typedef struct qvm {
  jitsu_vm *vm;
  /* Settings (strings point into the vm's params). */
  const char *binary, *machine, *cpu, *kernel, *initrd, *cmdline, *marker;
  const char *snapshot, *bridge, *netns, *mac;
  char **extra; /* qemu-arg words, NULL-terminated */
  uint64_t memory;
  unsigned vcpus;
  int accel, net;
  bool tsc_hint, suspend_disk, snapshot_auto;
  /* The live guest. */
  pid_t pid; /* 0: none */
  int pidfd; /* -1 without pidfd_open(2) (ENOSYS): exit_timer watches */
  unsigned long long starttime;
  uv_poll_t *exit_poll;
  uv_timer_t *exit_timer; /* without a pidfd: looks every 20 ms */
  qmp *qmp;
  uv_pipe_t *serial;
  int console_fd; /* the console log */
  char line[256]; /* the serial line being read */
  size_t line_len;
  uv_timer_t *timer; /* stop grace, kill after quit, migration poll */
  qop op;
  jitsu_stop_mode stop_mode;
  bool from_image;     /* this start restores the snapshot image */
  struct qsave *save;  /* a save (snapshot or suspend) under way */
  char snap_why[200];  /* a snapshot's error, reported once QEMU runs on */
  bool suspended_disk; /* no QEMU: the state is in the suspend image */
  bool quit_sent;
  char shutdown_reason[64]; /* from QEMU's SHUTDOWN event */
  off_t qemu_log_start;     /* where this QEMU's messages begin in its log */
  /* Pools. The vm's own qvm holds the spares; a spare's files carry its
   * tag ("<vm>.spare2.pid"), the vm's none. */
  qspare spare;     /* QSPARE_NO: the vm's own qvm */
  char tag[16];     /* "spareN" for a spare, else "" */
  struct qvm *of;   /* a spare's vm's own qvm */
  jitsu_spare acct; /* a spare: counted against the ctx's limits */
  unsigned pool;    /* pool = N */
  struct qvm *spares[QEMU_POOL_MAX];
  unsigned pool_fails;    /* fills that failed in a row */
  uv_timer_t *pool_timer; /* the next fill, after a failure's back-off */
  uint64_t pool_takes;    /* starts served by a spare */
  struct qwarm *warm;     /* a filling spare being warmed up */
  unsigned warmed;        /* answers it gave through its warm-up forward */
  qhold hold;             /* a spare's hold on the vm's forwards */
  unsigned held;          /* forward rules added so far */
} qvm;

/* Files of (q) in the state directory: "<state>/qemu/<vm>.<suffix>", or
 * "<vm>.<tag>.<suffix>" for a spare's record, monitor, fingerprint (args)
 * and the forwards it holds (fwd); its console and QEMU's messages go to
 * the vm's files. */
int qemu_path(qvm *q, const char *suffix, char *out, size_t size);

/* Connect to the QMP socket of (q); a descriptor or -errno. */
int qemu_connect_qmp(qvm *q);

/* Spawn QEMU for (q); (image_fd) >= 0 restores from it (-incoming defer,
 * the descriptor becomes fd 6 in QEMU). On success q->pid, q->pidfd are
 * set and (*qmp_fd) / (*serial_fd) are our ends; otherwise a negative
 * errno value with the vm's reason set. */
int qemu_spawn(qvm *q, int image_fd, int *qmp_fd, int *serial_fd);

/* QEMU's argument vector for (q), as a start (or, with (incoming), a
 * restore) passes it; NULL when out of memory. */
char **qemu_argv(qvm *q, bool incoming);
void qemu_argv_free(char **v);

/* The argument vector without the per-run descriptors' words, as text,
 * for the snapshot image's fingerprint; malloc'd or NULL. */
char *qemu_describe_args(qvm *q);

/* The guest record ("<vm>.pid": pid and start time). */
void qemu_record_remove(qvm *q);
/* Find a live QEMU from the record: 1 with pid, pidfd, starttime set. */
int qemu_record_adopt(qvm *q);

/* The last line QEMU wrote to its log since this start, for reasons. */
void qemu_last_message(qvm *q, char *out, size_t size);

/* qemu.c's pieces that the pool uses. */
int qemu_launch(qvm *q, qop op, const char *image);
/* Add the tap of spare (q)'s live QEMU to the vm's bridge (in its
 * network namespace, if any): 0, or -errno with (why) set. */
int qemu_tap_join(qvm *q, char *why, size_t size);
/* Watch the QEMU of (q) found by its record (pid, pidfd set): its monitor
 * and its exit; its console is not followed. 0 or -errno. */
int qemu_watch_live(qvm *q);
void qemu_instance_drop(qvm *q);
void qemu_kill_now(qvm *q);
int qemu_configure_copy(qvm *q, jitsu_vm *vm, jitsu_error *err);
void qemu_free(qvm *q);
/* The snapshot image fits (q)'s configuration (its fingerprint matches). */
bool qemu_image_fits(qvm *q);
/* A QMP command of (q) failed in (what): say why and end QEMU. */
void qemu_op_failed(qvm *q, const char *what, const char *error);

/* Pools (qemu_pool.c). Read "pool" (0 to QEMU_POOL_MAX) into (q). */
int qemu_pool_configure(qvm *q, jitsu_vm *vm, jitsu_error *err);
/* Start filling the pool of (q), the vm's qvm, up to its size (one
 * spare at a time). */
void qemu_pool_fill(qvm *q);
/* The same, (ms) from now (unless a fill or back-off is due already). */
void qemu_pool_fill_after(qvm *q, uint64_t ms);
/* Start the vm from a ready spare, which becomes the vm's qvm: 1 (the
 * start is reported later), or 0 when no spare is ready. */
int qemu_pool_take(qvm *q);
/* While the vm of (q) is stopped, have one ready spare hold its host
 * forwards (so that a take only continues it). */
void qemu_pool_hold(qvm *q);
/* Whether a spare of (q) holds (or is adding) the vm's forwards. */
bool qemu_pool_holds(const qvm *q);
/* A spare's console showed the marker / its image is restored / its QEMU
 * exited. */
void qemu_pool_spare_marker(qvm *s);
void qemu_pool_spare_restored(qvm *s);
void qemu_pool_spare_exited(qvm *s);
/* End every spare of (q) and free them (undefine, release). */
void qemu_pool_drain(qvm *q);
/* Adopt the spares a controller before us left that fit (q)'s definition
 * and are paused at their ready point; end the others and remove their
 * records. */
void qemu_pool_adopt(qvm *q);

/* The resident memory of process (pid) in bytes (0 if unknown). */
uint64_t qemu_rss(pid_t pid);

/* Whether a hardware KVM module (kvm_intel, kvm_amd) is loaded and
 * /dev/kvm is usable. */
bool qemu_kvm_usable(void);

#endif
