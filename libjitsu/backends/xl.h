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

enum { XL_NET_MAX = 8, XL_DISK_MAX = 8 };

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
  uv_timer_t *timer; /* stop grace */
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

/* Publish (x)'s state under /jitsu/<vm>/ in XenStore (readable by all). */
void xl_publish(xvm *x, const char *state);
void xl_unpublish(xvm *x);

#endif
