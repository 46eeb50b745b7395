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
  /* Names of domains that a destroy job of a pool is ending here: no new
   * spare takes one until it is gone (libvirt_pool.c). */
  jitsu_list dying;
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

enum { LV_HOSTS_MAX = 8, LV_FORWARDS_MAX = 8, LV_POOL_MAX = 8 };
/* Spare domains are "<vm>.spareK", K from 1 to LV_SPARE_NAMES: the pool's
 * spares and the taken one that is the vm's domain now. */
#define LV_SPARE_NAMES (LV_POOL_MAX + 1)

/* What the backend is doing that changes how events are read. */
typedef enum lvop {
  LOP_NONE,
  LOP_CREATE, /* a start job runs: its own failures clean up after it */
  LOP_STOP,   /* a stop was asked: the domain's end is clean */
  LOP_ADOPT,  /* at definition: looking for its domain on the hosts */
} lvop;

typedef struct lvspare lvspare;

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
  char *kernel, *initrd; /* its <os> files (NULL: none), for fingerprints */
  char fwd[LV_FORWARDS_MAX][96]; /* network = user: "tcp:ADDR:HP-:GP" */
  size_t n_fwd;
  uint64_t memory_kib;
  const char *marker;
  bool suspend_disk;
  /* The live domain. */
  char dom[96]; /* its name when it is a spare that was taken, else "" */
  lvhost *on;   /* the host of the domain (live or saved), or NULL */
  bool saved;   /* inactive, its state in a managed save image on (on) */
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
  /* The pool (pool = N, libvirt_pool.c). */
  unsigned pool;
  lvspare *spares[LV_POOL_MAX];
  uv_timer_t *pool_timer;
  unsigned pool_fails; /* in a row, for the back-off */
  uint64_t pool_takes;
  bool scanning; /* the adoption's scan has not answered (even if the
                    adoption gave up waiting): no fill, whose names could
                    be those of spares it will find */
  /* Jobs in flight keep the lvvm past release. */
  unsigned pending;
  bool released;
};

/* A spare domain of a vm's pool. */
typedef enum lvspare_state {
  LSP_FILLING, /* created (or being created), booting to its marker */
  LSP_WARMING, /* marker seen, answering checks through its own forward */
  LSP_PAUSING, /* being paused */
  LSP_READY,   /* paused at its ready point: a start may take it */
} lvspare_state;

struct lvspare {
  jitsu_spare acct; /* counted by the library */
  lvvm *of;
  char name[96]; /* its domain's: "<vm>.spareK" */
  lvhost *on;    /* its host, once created */
  lvspare_state st;
  bool marker_seen; /* before its create job reported */
  char *xml;        /* while its create job runs */
  char fp[24];      /* the fingerprint of its definition */
  virStreamPtr console;
  char line[256];
  size_t line_len;
  /* Warming up (libvirt_pool.c): the vm's check through a forward of its
   * own, on (warm_addr), before the pause. */
  struct sockaddr_in warm_addr;
  char warm_rule[64]; /* "tcp:ADDR:PORT" while it has that forward */
  jitsu_probe *probe;
  unsigned warmed;  /* answers it gave */
  unsigned pending; /* its jobs and its probe in flight */
  bool gone;        /* let go of: freed when its jobs end */
};

/* Check the keys of (vm) and fill (v)'s settings and XML; fill (err). */
int lv_configure_settings(lvvm *v, jitsu_vm *vm, jitsu_error *err);

/* The lvvm whose domain on (h) is called (name), or NULL. */
lvvm *lv_vm_on(lvhost *h, const char *name);
/* The vm a domain called (name) belongs to (its own, or a spare's), or
 * NULL. */
lvvm *lv_vm_of(lvhost *h, const char *name);

/* ---- jobs on one vm (libvirt.c) ----------------------------------------- */

typedef struct vjob vjob;
struct vjob {
  lvjob j;
  lvvm *v;
  lvspare *sp; /* a job on this spare's domain */
  char name[256];
  void (*then)(vjob *);
  /* start */
  const char *xml;
  bool marker, least_loaded;
  virStreamEventCallback console_cb;
  void *console_arg;
  uint64_t memory_kib;
  unsigned max_per_host;
  lvhost *cands[LV_HOSTS_MAX];
  bool skip[LV_HOSTS_MAX];
  int host_ok[LV_HOSTS_MAX]; /* 1 reached, -1 unreachable, 0 untried */
  char host_err[LV_HOSTS_MAX][256];
  size_t n_cands;
  lvhost *chosen;
  virStreamPtr stream;
  char notes[1536];
  /* a spare's pause: its metadata once paused */
  char meta[160];
  /* a monitor command (HMP) for the spare: its warm-up forward's add, or
   * its removal before the pause */
  char hmp[192];
  /* a take: the forwards to add */
  const char (*fwd)[96];
  size_t n_fwd;
  /* lookups */
  bool found;
  int state;
  int image; /* a managed save image: 1 yes, 0 no */
  size_t found_at;
  /* adoption: the domains named like spares, on the host where they are */
  struct lvfound {
    char name[96];
    size_t host;
    int state;
    bool ours;  /* it has our metadata */
    bool ready; /* which says it was paused at its marker */
    bool taken; /* which says a start took it */
    char fp[24];
    unsigned warmed; /* the answers it gave before its pause */
  } spares[LV_SPARE_NAMES * LV_HOSTS_MAX];
  size_t n_spares;
};

/* The hosts of (v), made on first use: 0, or -ENOMEM. */
int lv_hosts_get(lvvm *v);

vjob *lv_vjob_new(lvvm *v, void (*run)(lvjob *), void (*then)(vjob *));
int lv_vjob_submit(lvhost *h, vjob *vj);
/* On a worker: (fn) on the domain vj->name of (j) (a vjob's), if the host
 * has it (otherwise j->rc says why: -ENOENT when it has no such domain). */
void lv_on_domain(lvjob *j, void (*fn)(vjob *vj, virDomainPtr d));
/* Jobs: create on the first candidate that takes it (run_start); destroy
 * the domain named vj->name. */
void lv_run_start(lvjob *j);
void lv_run_destroy(lvjob *j);
/* The candidates of a start of (v) (its hosts, those known down skipped
 * unless all are), and what the job learnt of them afterwards. */
void lv_start_cands(lvvm *v, vjob *vj);
void lv_hosts_learn(vjob *vj);
/* Feed console bytes to (line, *len), calling (on_line)(arg) per line;
 * false when it must stop reading (on_line said so). */
int lv_console_read(virStreamPtr st, char *line, size_t size, size_t *len,
                    bool (*on_line)(void *arg), void *arg);
void lv_stream_release(lvhost *h, virStreamPtr st);
/* The cold start (the pool had nothing to give). */
int lv_start_cold(lvvm *v);

/* ---- the pool (libvirt_pool.c) ------------------------------------------ */

#define LV_POOL_NS "https://jitsu.invalid/libvirt/pool"
#define LV_POOL_AFTER_READY_MS 250

int lv_pool_configure(lvvm *v, jitsu_vm *vm, jitsu_error *err);
/* Fill from the loop, now or after (ms). */
void lv_pool_fill(lvvm *v);
void lv_pool_fill_after(lvvm *v, uint64_t ms);
/* A start: 1 if a ready spare is being taken (it reports), else 0. */
int lv_pool_take(lvvm *v);
/* Let every spare go (their domains are destroyed). */
void lv_pool_drain(lvvm *v);
/* An event for spare domain (name) of (v) on (h); true if it was one. */
bool lv_pool_event(lvvm *v, lvhost *h, const char *name, int event);
/* After an adoption job: adopt or end the spares it found (the vm's own
 * domain decided already). (late): the adoption had given up waiting for
 * it; a spare a start took (the guest of the vm under an earlier
 * controller) is then left as it is, with a warning. */
void lv_pool_adopt(lvvm *v, vjob *vj, bool late);
/* On a worker: the domains of (vj)'s candidate (i) named "<vm>.spareK",
 * with their state and metadata, into vj->spares. */
void lv_pool_scan(vjob *vj, size_t i, virConnectPtr c);
void lv_pool_describe(lvvm *v, char *buf, size_t size);
/* The spare XML of (v), named (name), without host forwards, marked with
 * our metadata (fingerprint (fp)); NULL when out of memory. */
char *lv_spare_xml(lvvm *v, const char *name, const char *fp);
/* Attribute (name) of the root element of (xml) (a spare's pool metadata,
 * as libvirt gives it back) into (out), truncated to (size); "" when the
 * text is not XML, has no such attribute, or it does not fit. */
void lv_meta_attr(const char *xml, const char *name, char *out, size_t size);

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
