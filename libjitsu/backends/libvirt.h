/* The libvirt backend's private header (libvirt*.c). */
#ifndef JITSU_BACKEND_LIBVIRT_H
#define JITSU_BACKEND_LIBVIRT_H

#include "base.h"

#include <libvirt/libvirt.h>
#include <pthread.h>
#include <stdatomic.h>

/* ---- libvirt's event loop on libuv (libvirt_event.c) ---------------------
 *
 * libvirt's event implementation is one per process: it is registered once
 * and serves every jitsu ctx. Each watch or timeout libvirt adds belongs to
 * the loop of the thread that adds it (a loop thread, or a worker running a
 * job for a host of that loop); libvirt adds, changes and removes them from
 * any thread, so the changes are queued under a lock and applied on the
 * loop thread, which is woken with a uv_async. libvirt's callbacks run on
 * the loop thread.
 */
typedef struct lvloop lvloop;

/* The lvloop of (loop), made on first use (on the loop thread); a
 * reference is taken. NULL when out of memory. */
lvloop *lv_loop_get(uv_loop_t *loop);
void lv_loop_put(lvloop *l);
uv_loop_t *lv_loop_uv(lvloop *l);

/* Within a job on another thread: watches and timeouts libvirt adds now
 * belong to (l). */
void lv_loop_enter(lvloop *l);

/* Run (fn)(arg) on (l)'s loop thread soon; callable from any thread.
 * (tag) lets lv_loop_purge() drop queued calls about a thing being freed. */
void lv_loop_post(lvloop *l, void (*fn)(void *), void *arg, const void *tag);
void lv_loop_purge(lvloop *l, const void *tag);

/* ---- hosts: one connection per (ctx, URI) (libvirt_host.c) ------------- */

typedef struct lvhost lvhost;
typedef struct lvvm lvvm;

struct lvhost {
  jitsu_list link; /* in the process's list of hosts */
  jitsu_ctx *ctx;
  lvloop *l;
  char *uri;
  /* The connection, shared by jobs on worker threads. */
  pthread_mutex_t mu;
  virConnectPtr conn; /* under mu */
  int event_id;       /* lifecycle callback, under mu */
  atomic_bool broken; /* the close callback fired */
  /* Loop thread only. */
  bool down;      /* the last attempt failed or the link broke */
  char why[512];  /* why it is down */
  unsigned tries; /* reconnection attempts in this outage */
  uv_timer_t *retry;
  unsigned refs;
  unsigned users; /* vms using it; at 0 it leaves the ctx (ctx = NULL) */
  bool reconnecting;
};

/* Find or make the host (ctx, uri) for a vm: takes a reference and counts
 * a user. lv_host_unuse() when the vm is released (its jobs may still
 * run), lv_host_put() when they are done. */
lvhost *lv_host_get(jitsu_ctx *ctx, const char *uri);
void lv_host_unuse(lvhost *h);
void lv_host_put(lvhost *h);

/* A unit of blocking work for a host: (run) on a worker thread, (done) on
 * the loop thread. The host is kept until (done) returns. */
typedef struct lvjob lvjob;
struct lvjob {
  uv_work_t work;
  lvhost *host;
  void (*run)(lvjob *j);
  void (*done)(lvjob *j);
  int rc;           /* run's outcome: 0 or a negative errno value */
  bool unreachable; /* lv_conn() could not reach the host */
  char err[768];    /* libvirt's message when rc < 0 */
};

/* Queue (j) (its run and done set) for (h). */
int lv_job_submit(lvhost *h, lvjob *j);

/* On a worker thread: the host's connection (a reference the caller must
 * virConnectClose), opened if need be; NULL with (j->err) filled. */
virConnectPtr lv_conn(lvjob *j);

/* Fill (j) with libvirt's last error on this thread, after (what). */
int lv_fail(lvjob *j, const char *what);

/* ---- the vms (libvirt.c, libvirt_xml.c) -------------------------------- */

enum { LV_HOSTS_MAX = 8, LV_FORWARDS_MAX = 8 };

/* What the backend is doing that changes how events are read. */
typedef enum lvop {
  LOP_NONE,
  LOP_CREATE, /* a start job runs: its own failures clean up after it */
  LOP_STOP,   /* a stop was asked: the domain's end is clean */
  LOP_ADOPT,  /* at definition: looking for its domain on the hosts */
} lvop;

struct lvvm {
  jitsu_vm *vm;
  jitsu_ctx *ctx;
  /* Settings. */
  const char *uris[LV_HOSTS_MAX];
  size_t n_hosts;
  lvhost *hosts[LV_HOSTS_MAX]; /* made at first use */
  bool least_loaded;
  unsigned max_per_host; /* 0: no limit */
  char *xml;             /* the domain's XML, its name the vm's */
  uint64_t memory_kib;
  const char *marker;
  bool suspend_disk;
  /* The live domain. */
  lvhost *on; /* the host of the domain (live or saved), or NULL */
  bool saved; /* inactive, its state in a managed save image on (on) */
  lvop op;
  uv_timer_t *timer; /* stop grace; the adoption's bound */
  /* A stop asked while the adoption looks: done once it has found. */
  bool stop_after_adopt;
  jitsu_stop_mode adopt_stop_mode;
  uint64_t adopt_stop_grace_ms;
  char exit_how[96];
  bool exit_clean;
  /* The console, while waiting for the marker. */
  virStreamPtr console;
  char line[256];
  size_t line_len;
  bool marker_seen;
  /* Jobs in flight keep the lvvm past release. */
  unsigned pending;
  bool released;
};

/* Check the keys of (vm) and fill (v)'s settings and XML; fill (err). */
int lv_configure_settings(lvvm *v, jitsu_vm *vm, jitsu_error *err);

/* The lvvm of the vm called (name) on (h), or NULL. */
lvvm *lv_vm_on(lvhost *h, const char *name);

/* Events of (h) for the vm (name) (the loop thread). */
void lv_domain_event(lvhost *h, const char *name, int event, int detail);

/* (h) came back: check its guests (the loop thread). */
void lv_host_back(lvhost *h);
/* (h) cannot be reached, because (why): unless already known, mark it
 * down, log it, tell its vms' logs (lv_vms_report) and reconnect in the
 * background, the first attempt at once (the loop thread). */
void lv_host_lost(lvhost *h, const char *why);
void lv_vms_report(lvhost *h);

#endif
