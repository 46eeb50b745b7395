/* The xl backend's private header (xl*.c). */
#ifndef JITSU_BACKEND_XL_H
#define JITSU_BACKEND_XL_H

#include "base.h"

#include <libxl.h>
#include <libxl_utils.h>
#include <limits.h>
#include <xenstore.h>

typedef struct xvm xvm;

/*
 * One libxenlight context and one XenStore connection per jitsu ctx that
 * has xl vms, shared by them. libxl's fds and timeouts are registered on
 * the ctx's libuv loop (libxl_osevent_register_hooks); its children are
 * reaped on SIGCHLD from the loop (libxl_sigchld_owner_mainloop).
 */
typedef struct xlhost {
  jitsu_list link; /* in the process's list of hosts */
  jitsu_ctx *ctx;
  uv_loop_t *loop;
  libxl_ctx *lx;
  struct xs_handle *xs;
  uv_poll_t *xs_poll;
  uv_signal_t *sigchld;
  struct xllogger *logger;
  char error[512]; /* libxl's first error since xl_host_clear_error() */
  jitsu_list fds, timeouts, vms;
  unsigned refs;
} xlhost;

/* Find or make the host of (ctx); NULL with (why) filled when there is no
 * Xen here (no privcmd, no xenstored, ...). Each call takes a reference. */
xlhost *xl_host_get(jitsu_ctx *ctx, char *why, size_t size);
void xl_host_put(xlhost *h);
/* The ctx's last vm is released (its operations may still run): stop
 * using the ctx (its log). */
void xl_host_orphan(xlhost *h);

/* Channels (conduit.h): make the names (vm) declares ("channel = NAME"),
 * unheld; hand them to its new domain (domid); a domain died: take its
 * names back and drop its requests. */
void xl_conduit_declare(xlhost *h, jitsu_vm *vm);
void xl_conduit_grant(xlhost *h, jitsu_vm *vm, uint32_t domid);
void xl_conduit_forget(xlhost *h, uint32_t domid);

/* Forget the remembered libxl error before an operation. */
void xl_host_clear_error(xlhost *h);

/* Watch XenStore (path) for (x); (what) names the watch for dispatch.
 * xl_watch_fired() is called with (what) and the path that changed. */
int xl_watch(xvm *x, const char *path, const char *what);
void xl_unwatch(xvm *x, const char *path, const char *what);
void xl_watch_fired(xvm *x, const char *what, const char *path);
/* A domain event (shutdown, death) for (x)'s domain. */
void xl_domain_event(xvm *x, libxl_event *ev);

enum { XL_NET_MAX = 8, XL_DISK_MAX = 8, XL_POOL_MAX = 8 };

/* A domain of the pool (pool = N), xl_pool.c. */
typedef enum xspare {
  XSPARE_NO,      /* the vm's own xvm */
  XSPARE_FILLING, /* created, booting to its marker, then paused */
  XSPARE_READY,   /* paused at its marker: a start takes it */
} xspare;

/* What the backend is doing with the live domain. */
typedef enum xop {
  XOP_NONE,         /* running, or nothing live */
  XOP_CREATE,       /* create or restore until started is reported */
  XOP_SUSPEND_MEM,  /* pause */
  XOP_RESUME_MEM,   /* unpause */
  XOP_SUSPEND_DISK, /* save to the file, then destroy */
  XOP_RESUME_DISK,  /* restore from the file */
  XOP_STOP,         /* shutdown request, destroy after the grace */
} xop;

struct xvm {
  jitsu_list link; /* in host->vms */
  jitsu_vm *vm;
  xlhost *host;
  /* Settings (strings point into the vm's params). */
  const char *file; /* an xl domain config file */
  const char *type, *kernel, *ramdisk, *cmdline, *ready_key, *marker;
  const char *nics[XL_NET_MAX], *disks[XL_DISK_MAX];
  size_t n_nics, n_disks;
  uint64_t memory, maxmem;
  unsigned vcpus;
  bool suspend_disk;
  /* The live domain. */
  uint32_t domid; /* valid while live */
  bool live;
  libxl_evgen_domain_death *death;
  libxl_domain_config *dc; /* the config of a create or restore under way */
  xop op;
  uv_timer_t *timer; /* stop grace, or a take's report */
  int take_rc;       /* the take's unpause (its report comes from the loop) */
  int save_fd;       /* the image being written or read */
  char image[PATH_MAX], image_tmp[PATH_MAX + 8];
  bool suspended_disk; /* no domain: its state is in the image */
  bool destroying;
  char exit_how[96];
  bool exit_clean;
  /* Readiness. */
  char watched_key[256], watched_tty[128];
  uv_poll_t *console;
  int console_fd;
  char line[256];
  size_t line_len;
  bool unpaused;
  /* libxl operations in flight: a released xvm waits for them. */
  unsigned pending;
  bool released;
  bool doomed; /* a released spare: a domain its create makes is destroyed */
  /* The pool (the vm's xvm) or a spare of it. */
  unsigned pool;
  xvm *spares[XL_POOL_MAX];
  uv_timer_t *pool_timer;
  unsigned pool_fails;
  unsigned long long pool_takes;
  xvm *of;      /* a spare: the vm's own xvm */
  xspare spare; /* a spare: what it is doing */
  char tag[16]; /* a spare: "spareN", its domain is "<vm>.spareN" */
  char *fp;     /* a spare: what it was made from (its ready file) */
  /* A spare: the Linux bridge each vif (vifDOMID.I) was taken off until
   * the spare is taken ("": none). */
  char vif_bridge[XL_NET_MAX][16];
  jitsu_spare acct;
};

/* Fill (*dc) for (x) from its keys or its xl config file; on failure a
 * negative errno value with (why) filled, and (*dc) holds nothing. Needs
 * no libxl context (the fuzz target builds it on any host). */
int xl_build_config(xvm *x, libxl_domain_config *dc, char *why, size_t size);

/* Check the keys of (vm) (and read its xl config file once, so that a bad
 * file is a config error); fill (err). */
int xl_configure_settings(xvm *x, jitsu_vm *vm, jitsu_error *err);

/* "<state>/xl/<vm>.<suffix>" */
int xl_path(xvm *x, const char *suffix, char *out, size_t size);

/* libxl's own message for the last failure of (x)'s host, else
 * (fallback). */
const char *xl_libxl_why(xvm *x, const char *fallback);
/* Shared with the pool (xl.c). An asynchronous libxl operation of (x)
 * that ends in (done), unless (x) was released meanwhile; abandon it when
 * the initiating call fails. */
int xl_ao_how(xvm *x, void (*done)(xvm *x, int rc), libxl_asyncop_how *how);
void xl_ao_abandon(xvm *x, libxl_asyncop_how *how);
int xl_ensure_host(xvm *x);
int xl_launch(xvm *x, xop op);
void xl_went_live(xvm *x);
void xl_readiness_begin(xvm *x);
void xl_destroy_domain(xvm *x);
/* (x)'s one timer: the stop's grace, or a start's report. */
int xl_timer_start(xvm *x, uv_timer_cb cb, uint64_t ms);
/* Let go of the spare (x): its console and watches close, its domain (if
 * any, or when its create under way makes one) is destroyed, and (x) is
 * freed once libxl is done with it; it does not touch its vm again. */
void xl_spare_drop(xvm *x);
/* The name of (x)'s domain: the vm's, or "<vm>.spareN" for a spare. */
void xl_domain_name(xvm *x, char *out, size_t size);

/* Pools (xl_pool.c). After a take, the refill waits until the taken
 * guest is ready, and this long more: a domain booting beside it would
 * compete for the CPUs with its first answers. */
#define XL_POOL_AFTER_READY_MS 250
int xl_pool_configure(xvm *x, jitsu_vm *vm, jitsu_error *err);
void xl_pool_fill(xvm *x);
void xl_pool_fill_after(xvm *x, uint64_t ms);
/* A start: take a ready spare (1: under way, its outcome is reported), or
 * 0: none, a cold start. */
int xl_pool_take(xvm *x);
void xl_pool_drain(xvm *x);
void xl_pool_adopt(xvm *x);
/* Events of a spare's domain. */
void xl_pool_spare_created(xvm *s, int rc);
void xl_pool_spare_marker(xvm *s);
void xl_pool_spare_gone(xvm *s);

/* Publish (x)'s state under /jitsu/<vm>/ in XenStore (readable by all). */
void xl_publish(xvm *x, const char *state);
void xl_unpublish(xvm *x);

#endif
