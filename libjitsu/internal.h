/* libjitsu internals: the one private header of the library. */
#ifndef JITSU_INTERNAL_H
#define JITSU_INTERNAL_H

#include <jitsu/jitsu.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>

#define JITSU__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* What the backend modules (module.c) may call besides the public API:
 * exported from libjitsu.so, private all the same (a module must come
 * from the same build: JITSU__MODULE_ABI). */
#define JITSU__API __attribute__((visibility("default")))
#define JITSU__READY_PATH_MAX                                                  \
  40 /* bytes of an http readiness path, with NUL                              \
      */

/* An intrusive, string-keyed hash table with chaining (O(1) lookups). */
typedef struct jitsu__hnode {
  struct jitsu__hnode *next;
  const char *key;
  uint32_t hash;
} jitsu__hnode;

typedef struct jitsu__table {
  jitsu__hnode **buckets;
  size_t mask; /* bucket count - 1 (a power of two), or 0 when empty */
  size_t count;
  uint32_t seed;
} jitsu__table;

/* Start (t) empty with hash seed (seed). */
void jitsu__table_init(jitsu__table *t, uint32_t seed);
/* Free the buckets of (t) (the nodes belong to their owners). */
void jitsu__table_free(jitsu__table *t);
/* The node whose key is (key), or NULL. */
jitsu__hnode *jitsu__table_find(const jitsu__table *t, const char *key);
/* Insert (node) with its key already set; -ENOMEM. Keys must be unique. */
int jitsu__table_insert(jitsu__table *t, jitsu__hnode *node);
/* Remove (node), which is in (t). */
void jitsu__table_remove(jitsu__table *t, jitsu__hnode *node);

/* A doubly linked list link. */
typedef struct jitsu__link {
  struct jitsu__link *prev, *next;
} jitsu__link;

JITSU__API void jitsu__list_init(jitsu__link *head);
JITSU__API void jitsu__list_append(jitsu__link *head, jitsu__link *link);
JITSU__API void jitsu__list_remove(jitsu__link *link);
#define JITSU__CONTAINER(ptr, type, member)                                    \
  ((type *)((char *)(ptr)-offsetof(type, member)))

/* A summon or stop waiting for its outcome. */
typedef struct jitsu__waiter {
  struct jitsu__waiter *next;
  jitsu_vm *vm;
  jitsu_vm_cb cb;
  void *arg;
  int status;
} jitsu__waiter;

typedef struct jitsu__readiness jitsu__readiness;
typedef struct jitsu__metrics jitsu__metrics;

struct jitsu_vm {
  jitsu__hnode node;       /* in ctx->vms, keyed by name */
  jitsu__link all;         /* ctx->all_vms, definition order */
  jitsu__link live;        /* ctx->live_vms while not stopped or failed */
  jitsu__link queue;       /* ctx->start_queue while waiting for a start slot */
  bool queued, queued_new; /* and whether it was stopped (a new live one) */
  jitsu_ctx *ctx;
  const jitsu_backend_ops *backend;
  void *backend_data;
  char *name;
  jitsu_state state;
  bool adopted;
  bool adopting;     /* starting: the backend finds out what it adopts */
  bool fail_on_exit; /* a stop that ends in failed (readiness timeout) */
  jitsu_stop_mode pending_stop;
  bool stop_pending;   /* a stop requested while suspending or resuming */
  const char *stop_by; /* who asked for the stop under way (static), or NULL */
  bool removing;       /* a reload removes it once it has stopped */
  bool undefined;      /* undefined; freed when (refs) drops to 0 */
  unsigned refs;       /* queued completions and calls in progress */
  struct jitsu__pending_def *pending; /* a reload's definition, applied
                                       * when the live guest has stopped */
  char *reason;
  char *next_reason; /* set by jitsu_vm_set_reason() for the next change */
  jitsu_ready_method ready;
  bool ready_marker; /* wait for jitsu_backend_marker() first */
  struct sockaddr_storage ready_addr;
  char ready_path[JITSU__READY_PATH_MAX]; /* JITSU_READY_HTTP: "/..." */
  uint64_t ready_timeout_ms, stop_grace_ms, idle_timeout_ms;
  jitsu_idle_action idle_action;
  unsigned cfg_line;   /* its [vm NAME] line in ctx->config_path, or 0 */
  jitsu_param *params; /* one allocation with the strings */
  size_t n_params;
  jitsu__waiter *summons; /* waiting for ready */
  jitsu__waiter **summons_tail;
  jitsu__waiter *stops; /* waiting for stopped */
  jitsu__waiter *ops;   /* waiting for a suspend or resume */
  jitsu__waiter *snaps; /* waiting for a snapshot */
  unsigned n_summons;
  unsigned holds;
  jitsu__readiness *readiness; /* while starting */
  char instance[160];
  uint64_t state_since_ms, last_active_ms, start_begin_ms;
  uint64_t live_since_ms;  /* when it last left stopped or failed */
  uint64_t op_begin_ns;    /* uv_hrtime() when a start or resume began */
  jitsu__metrics *metrics; /* allocated at the first state change */
  uint64_t summons_total, spawns, resumes, failures, last_start_ms;
  struct jitsu__proxy
      *proxy; /* its proxying socket triggers (proxy.c), or NULL */
};

typedef struct jitsu__section_keys {
  struct jitsu__section_keys *next;
  const char *section;
  const jitsu_key *keys; /* NULL for a value check alone */
  size_t n;
  jitsu_value_check_fn check; /* NULL for keys */
  void *check_arg;
} jitsu__section_keys;

/* A subscriber (fn, arg) in a list; (fn) is cast back by the caller. */
typedef void (*jitsu__any_fn)(void);
typedef struct jitsu__sub {
  struct jitsu__sub *next;
  jitsu__any_fn fn;
  void *arg;
} jitsu__sub;

/* Append (fn, arg) to (*list): 0 or -ENOMEM. */
int jitsu__sub_add(jitsu__sub **list, jitsu__any_fn fn, void *arg);
/* Remove (fn, arg) from (*list): 0 or -ENOENT. */
int jitsu__sub_remove(jitsu__sub **list, jitsu__any_fn fn, void *arg);
/* Free every subscriber of (*list). */
void jitsu__sub_clear(jitsu__sub **list);

typedef struct jitsu__idle jitsu__idle;
typedef struct jitsu__control jitsu__control;

typedef struct jitsu__stats_src {
  struct jitsu__stats_src *next;
  char *group;
  jitsu_stats_source fn;
  void *arg;
  const jitsu_stat_help *help; /* the embedder's, or NULL */
  size_t n_help;
} jitsu__stats_src;

/* The limits a summon can be refused for (counted per context). */
typedef enum jitsu__limit {
  JITSU__LIMIT_LIVE,    /* max-live */
  JITSU__LIMIT_WAITERS, /* max-waiters */
  JITSU__N_LIMITS
} jitsu__limit;
#define JITSU__REFUSAL_LOG_MS 10000

struct jitsu_ctx {
  uv_loop_t *loop;
  const char *asking; /* who calls a verb now (jitsu__vm_verb_by), or NULL */
  char *state_dir;
  unsigned max_live, max_starting, max_waiters;
  jitsu__table vms;
  jitsu__link all_vms, live_vms;
  size_t n_live, n_starting;
  /* Summoned vms waiting for one of the max-starting slots, in order;
   * (n_queued_new) of them would be new live guests. */
  jitsu__link start_queue;
  size_t n_queued_new;
  bool queue_kicked; /* a run of the queue is deferred */
  /* Summons refused for a limit (jitsu__refused), and the rate limit of
   * their log line: one per reason per JITSU__REFUSAL_LOG_MS. */
  uint64_t refused[JITSU__N_LIMITS];
  uint64_t refused_logged_ms[JITSU__N_LIMITS];
  uint64_t refused_unlogged[JITSU__N_LIMITS];
  jitsu__table triggers;
  const jitsu_backend_ops **backends;
  const char **backend_names;
  size_t n_backends;
  jitsu__section_keys *keys;
  jitsu_param *globals;   /* loaded config: "section\0key" = value */
  unsigned *global_lines; /* the line of each in config_path */
  size_t n_globals;
  jitsu__sub *state_subs;  /* jitsu_state_fn */
  jitsu__sub *vm_subs;     /* jitsu_vm_event_fn */
  jitsu__sub *reload_subs; /* jitsu_reloaded_fn */
  char *config_path;       /* the file jitsu_config_load() read, for reloads */
  jitsu__control *control;
  struct jitsu__rendezvous *rendezvous;
  jitsu__stats_src *stats_sources;
  jitsu_log_fn log_fn;
  void *log_arg;
  jitsu_log_level log_max;
  uv_idle_t deferred_idle; /* runs completions outside the API calls */
  bool deferred_idle_open;
  bool closing; /* jitsu_ctx_free() was called: freed in the idle's close */
  jitsu__waiter *deferred, **deferred_tail;
  size_t n_deferred;
  jitsu__idle *idle;
  int lock_fd;    /* our POSIX lock on STATE/lock, once the directory is used */
  dev_t lock_dev; /* the directory it locks (ctx.c: hold_dir) */
  ino_t lock_ino;
  uint32_t notify_tag; /* makes abstract notify socket names unique */
  char last_error[512];
};

/* Logging and last-error detail. */
JITSU__API void jitsu__log(jitsu_ctx *ctx, jitsu_log_level level,
                           const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Store a detail for jitsu_ctx_last_error() and return (err). */
int jitsu__fail(jitsu_ctx *ctx, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parse a whole number from 0 to UINT_MAX (values.c); 0 or -EINVAL. */
JITSU__API int jitsu__parse_uint(const char *text, unsigned *out);

/* Guest settings shared by the VM backends (values.c); 0 or -EINVAL. */
/* A unicast MAC "xx:xx:xx:xx:xx:xx" into (mac) (may be NULL). */
JITSU__API int jitsu__parse_mac(const char *text, uint8_t mac[6]);
/* Guest memory: a size that is a whole number of MiB, at least 1M. */
JITSU__API int jitsu__parse_mib(const char *text, uint64_t *bytes);
/* Virtual CPUs: 1 to 255. */
JITSU__API int jitsu__parse_vcpus(const char *text, unsigned *n);

/* The whole of (path), a regular file of at most (max) bytes, into a
 * malloc'd NUL-terminated (*text); on failure a negative errno value with
 * (why) filled ("PATH: not a regular file", ...). */
JITSU__API int jitsu__read_bounded(const char *path, size_t max, char **text,
                                   size_t *len, char *why, size_t size);

/* A close callback that frees a handle allocated on its own (casting free()
 * to uv_close_cb is undefined behaviour). */
JITSU__API void jitsu__free_handle(uv_handle_t *h);

/* Duplicate (s); NULL on failure. */
JITSU__API char *jitsu__strdup(const char *s);
/* Random 32 bits from getrandom(), or a time-based fallback. */
uint32_t jitsu__random32(void);

/* Queue (cb)(vm, status, arg) to run from the loop, never re-entrantly. */
int jitsu__defer(jitsu_ctx *ctx, jitsu_vm *vm, jitsu_vm_cb cb, void *arg,
                 int status);
/* Queue the waiters of (list) with (status); the list is consumed. */
void jitsu__defer_list(jitsu_ctx *ctx, jitsu__waiter *list, int status);

/* Keep (vm) alive: a call in progress or a queued completion uses it. An
 * undefined vm is freed (and its backend released) at the last unref. */
void jitsu__vm_ref(jitsu_vm *vm);
void jitsu__vm_unref(jitsu_vm *vm);

/* Move (vm) to (state) with (reason) (NULL: keep what
 * jitsu_vm_set_reason() left, or ""). Illegal transitions are refused
 * with JITSU_ESTATE and logged. */
int jitsu__vm_set_state(jitsu_vm *vm, jitsu_state state, const char *reason);

/* Undefine (vm) whatever its state, leaving a live guest running (for
 * jitsu_ctx_free() and undoing a definition). */
void jitsu__vm_forget(jitsu_vm *vm);

/* Load a config from (f), called (name); (apply) false only checks. */
int jitsu__config_load_stream(jitsu_ctx *ctx, FILE *f, const char *name,
                              bool apply, jitsu_error *err);

/* Proxying socket triggers (proxy.c): listen on the vm's "socket" keys
 * that its backend does not take itself; 0 or (err) filled, nothing kept.
 * Detach closes them and every connection held or relayed. */
int jitsu__proxy_attach(jitsu_vm *vm, jitsu_error *err);
void jitsu__proxy_detach(jitsu_vm *vm);
/* Check the vm's relayed "socket" values without binding anything. */
int jitsu__proxy_check(jitsu_vm *vm, jitsu_error *err);
/* The guest has gone (stopped or failed): its relayed connections are
 * reset; held ones wait for the next start. */
void jitsu__proxy_guest_gone(jitsu_vm *vm);
/* Whether a "socket" value names a guest address (to=): then the library
 * relays it, whatever the backend. */
JITSU__API bool jitsu__proxy_spec_has_to(const char *spec);

/* Tell the vm event subscribers about (vm). */
void jitsu__vm_event(jitsu_vm *vm, jitsu_vm_event ev);

/* Replace the definition of a vm that is not live with (def), whose
 * backend is (backend), in place (triggers and metrics stay); on failure
 * the old definition is restored and (err) says why. */
int jitsu__vm_redefine(jitsu_vm *vm, const jitsu_backend_ops *backend,
                       const jitsu_vm_def *def, jitsu_error *err);

/* Apply the settings of (def) that need no restart (readiness, time-outs,
 * idle policy). */
void jitsu__vm_apply_settings(jitsu_vm *vm, const jitsu_vm_def *def);

/* Whether (def) with (backend) differs from (vm)'s definition: 0 same,
 * 1 only in settings jitsu__vm_apply_settings() applies, 2 otherwise. */
int jitsu__vm_def_differs(const jitsu_vm *vm, const jitsu_backend_ops *backend,
                          const jitsu_vm_def *def);

/* Stash (def) to be applied when (vm) next stops; replaces an older one. */
int jitsu__vm_stash_def(jitsu_vm *vm, const jitsu_backend_ops *backend,
                        const jitsu_vm_def *def);

/* A copy of a vm's definition (the stash of a reload, or its undo). */
typedef struct jitsu__pending_def jitsu__snapshot;
jitsu__snapshot *jitsu__snapshot_take(jitsu_vm *vm);
/* Redefine (vm) from (snap) (it must not be live); logs a failure. */
void jitsu__snapshot_restore(jitsu_vm *vm, jitsu__snapshot *snap);
void jitsu__snapshot_free(jitsu__snapshot *snap);

/* Who asks for a stop or a suspend, named in the state change's reason
 * ("shutdown requested by the idle policy"): (by) is a static text; the
 * call (verb (vm, ...)) runs with it. */
#define JITSU__BY(ctx, by, call)                                               \
  __extension__({                                                              \
    (ctx)->asking = (by);                                                      \
    int r_ = (call);                                                           \
    (ctx)->asking = NULL;                                                      \
    r_;                                                                        \
  })

/* The control server (control.c: transport; control_cmd.c: commands). */
void jitsu__control_free(jitsu_ctx *ctx);

typedef struct jitsu__creq jitsu__creq;
/* Run the request line (line, len) of a client; the answer comes through
 * jitsu__control_reply() now or later. */
void jitsu__control_run(jitsu__creq *req, const char *line, size_t len);
/* Answer (req) with (json) (a jansson json_t *, stolen) and free it. */
void jitsu__control_reply(jitsu__creq *req, void *json);
/* Answer (req) with an error (err, message) and free it. */
void jitsu__control_fail(jitsu__creq *req, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Run one request line with no client attached (for the fuzz target). */
void jitsu__control_feed(jitsu_ctx *ctx, const char *line, size_t len);
/* The context of (req). */
jitsu_ctx *jitsu__control_ctx(jitsu__creq *req);
/* Let (req) wait on (vm) for (timeout_ms) (0, or above the server's
 * request time-out: that); (on_timeout) answers it then. */
void jitsu__control_wait(jitsu__creq *req, jitsu_vm *vm, uint64_t timeout_ms,
                         void (*on_timeout)(jitsu__creq *req));
/* The request's id (a json_t * or NULL), to echo. */
void *jitsu__control_id(jitsu__creq *req);
void jitsu__control_set_id(jitsu__creq *req, void *id);

/* A configuration file as read (config_read.c), for config.c. */
#define JITSU__MAX_LINE 65536 /* bytes of a config line, with its end */

typedef struct entry {
  const char *section; /* its header's name (not owned), or "" */
  char *key, *value;
  unsigned line;
} entry;

/* A section header; its entries are e[first .. first + n) (inih gives a
 * section's entries in a row; a header given twice is an error). */
typedef struct header {
  char *name;
  unsigned line;
  size_t first, n;
} header;

typedef struct cfg {
  jitsu_ctx *ctx;
  FILE *f;
  entry *e;
  size_t n, cap;
  header *h;
  size_t nh, caph;
  unsigned lineno;
  size_t line_len;
  bool at_line_start;
  int oom;
  const char *read_error; /* a problem the reader found */
  unsigned read_error_line;
} cfg;

/* Read every entry of (f) into (c); 0 or an error in (err). */
int jitsu__cfg_read(FILE *f, cfg *c, jitsu_error *err);
void jitsu__cfg_free(cfg *c);
/* Set (err)'s line to (line); returns 0. */
int jitsu__err_at(jitsu_error *err, unsigned line);

/* Readiness (ready.c): begin checks for a started (vm), cancel them. */
int jitsu__ready_prepare(jitsu_vm *vm); /* before start: notify socket */
int jitsu__ready_begin(jitsu_vm *vm);   /* the guest runs: probe, timer */
void jitsu__ready_cancel(jitsu_vm *vm);
/* Parse a notify datagram: 1 if it holds READY=1, else 0. */
int jitsu__notify_says_ready(const char *msg, size_t len);

/* Parse "HOST:PORT" / "[V6]:PORT" into (ss); 0 or -EINVAL. */
/* A guest record the child of a fork writes itself, before its exec: until
 * it exists the child dies with its parent (PR_SET_PDEATHSIG), after it a
 * restarted controller finds the guest, so no guest ever runs that no
 * record names. Prepare (rec) for (path) before the fork (0 or
 * -ENAMETOOLONG); in the child, jitsu__child_record_write() is
 * async-signal-safe: 0, or -1 with errno (it exits if the parent is gone
 * already). */
typedef struct jitsu__child_record {
  char path[600], tmp[610];
  pid_t parent;
} jitsu__child_record;
JITSU__API int jitsu__child_record_prepare(jitsu__child_record *rec,
                                           const char *path);
JITSU__API int jitsu__child_record_write(const jitsu__child_record *rec);

/* Start a program without copying the controller (spawn.c): (fn) runs in
 * a child that shares our memory until its exec, on a stack of its own,
 * with every signal handler back at the default and no signal blocked. It
 * may make system calls only (no malloc, no stdio, no glibc set*id(): use
 * syscall(2)), must keep (*errfd) open and close-on-exec (it may move it),
 * and returns only if it failed: the errno, with (*what) naming the step.
 * 0 with (*pid) once the child has exec'd; else -errno and (*what). */
typedef int (*jitsu__child_fn)(void *arg, int *errfd, const char **what);
JITSU__API int jitsu__spawn(jitsu__child_fn fn, void *arg, pid_t *pid,
                            const char **what);
#define JITSU__DEFAULT_PATH                                                    \
  "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
/* Find (name) as execvp would with the PATH in (env), or the default, so
 * that the child need not search and a missing program is a clear error
 * before anything starts: 0 with the path in (out), or -errno. */
JITSU__API int jitsu__resolve_exec(const char *name, char *const *env,
                                   char *out, size_t size);

/* The live process a record names: 1 with (*pid, *pidfd, *starttime)
 * set (*pidfd -1 without pidfd_open(2)); 0 without a record; -ESTALE when it
 * named a process that is gone (or a pid reused since: another start time), and
 * it was removed. */
JITSU__API int jitsu__record_adopt(const char *path, pid_t *pid, int *pidfd,
                                   unsigned long long *starttime);
/* Make (path) free for a Unix socket of (type): 0 when nothing is there or
 * a stale socket file was removed; -EADDRINUSE when something answers on
 * it, -EEXIST when it is not a socket (both left alone). */
int jitsu__unix_claim(const char *path, int type);
/* Listen on the Unix socket (path) of (type) (SOCK_NONBLOCK may be or-ed
 * in), born with mode 0600 (0660 and group (gid) when (group)), refusing to
 * take over a socket something still answers on; (what) names it in
 * errors. The listening descriptor, or an error set on (ctx). */
JITSU__API int jitsu__listen_unix(jitsu_ctx *ctx, const char *what,
                                  const char *path, int type, int backlog,
                                  gid_t gid, bool group);
/* pidfd_open(2); a descriptor or -1 with errno (ENOSYS: a kernel before
 * 5.3, or valgrind before 3.20: callers then watch the pid by polling). */
JITSU__API int jitsu__pidfd_open(pid_t pid);
/* Read the start time and state letter of (pid) from /proc; 0 or -errno. */
JITSU__API int jitsu__proc_stat(pid_t pid, unsigned long long *starttime,
                                char *state);
JITSU__API int jitsu__parse_hostport(const char *text,
                                     struct sockaddr_storage *ss);
/* Split a readiness address "HOST:PORT[/PATH]" (the path for http only);
 * 0 or -EINVAL. (path) gets "/" when there is none. */
int jitsu__parse_ready_address(const char *text, bool with_path,
                               struct sockaddr_storage *ss,
                               char path[JITSU__READY_PATH_MAX]);
/* Format (sa) as "HOST:PORT" / "[V6]:PORT" into (buf). */
void jitsu__format_sockaddr(const struct sockaddr *sa, char *buf, size_t size);

/* Validate a vm name (also used for file names); 0 or -EINVAL. */
int jitsu__check_vm_name(const char *name);

/* Builtin backends, and the names of the backend modules built with
 * them, generated by meson (builtin_backends.c). */
extern const jitsu_backend_ops *const jitsu__builtin_backends[];
extern const char *const jitsu__module_names[];

/* A loadable module (module.c): a VM backend, or the Xen channels. Each
 * defines one with JITSU__MODULE(). */
struct jitsu__xen_chan_ops;
typedef struct jitsu__module {
  const char *abi; /* JITSU__MODULE_ABI of the build it comes from */
  const char *name;
  const jitsu_backend_ops *backend;           /* or NULL */
  const struct jitsu__xen_chan_ops *xen_chan; /* or NULL */
} jitsu__module;
#define JITSU__MODULE_SYMBOL "jitsu__module_info"
#define JITSU__MODULE_ABI JITSU_VERSION_STRING
#define JITSU__MODULE(name, backend, xen_chan)                                 \
  JITSU__API const jitsu__module jitsu__module_info = {                        \
      JITSU__MODULE_ABI, name, backend, xen_chan}
/* Load the module (name) from jitsu__module_dir(): $JITSU_BACKEND_DIR, else
 * the directory the library was installed with. NULL with why in (err). */
const jitsu__module *jitsu__module_load(const char *name, char *err,
                                        size_t size);
const char *jitsu__module_dir(void);
/* The backend (name) of (ctx): registered already, or loaded from its
 * module and registered now. NULL with a message in (err). */
const jitsu_backend_ops *jitsu__backend_find(jitsu_ctx *ctx, const char *name,
                                             char *err, size_t size);

/* The start queue (verbs.c): a start slot may have come free; take the
 * vm out of the queue (undefine). */
void jitsu__start_queue_kick(jitsu_ctx *ctx);
void jitsu__start_queue_remove(jitsu_vm *vm);

/* Remove every trigger of (vm) (trigger.c). */
void jitsu__triggers_drop_vm(jitsu_ctx *ctx, jitsu_vm *vm);

/* Check (params) against the keys of (backend) and of "vm" sections
 * (config.c); 0 or an error in (err). */
int jitsu__check_vm_params(jitsu_ctx *ctx, const jitsu_backend_ops *backend,
                           const jitsu_param *params, size_t n,
                           jitsu_error *err);

/* Readiness outcomes (verbs.c), reported by ready.c. */
void jitsu__vm_became_ready(jitsu_vm *vm);
void jitsu__vm_ready_timeout(jitsu_vm *vm);

/* Metrics (metrics.c). */
typedef enum jitsu__metric_event {
  JITSU__M_COLD_START, /* (ns): summon to ready */
  JITSU__M_RESUME,     /* (ns): summon to ready */
  JITSU__M_READY_TIMEOUT,
  JITSU__M_READY_FAILURE, /* exited before ready, or could not start */
  JITSU__M_CRASH,         /* failed after being ready */
} jitsu__metric_event;
void jitsu__metrics_event(jitsu_vm *vm, jitsu__metric_event ev, uint64_t ns);
/* (vm) leaves (old) after (ms) in it. */
void jitsu__metrics_state(jitsu_vm *vm, jitsu_state old, uint64_t ms);
void jitsu__metrics_free(jitsu_vm *vm);

/* The idle helper's hook on state changes (idle.c). */
void jitsu__idle_free(jitsu_ctx *ctx);

/* Create (ctx->state_dir) and its subdirectory (sub) (may be NULL), whose
 * path goes into (path); the first call checks the directory is ours and
 * takes its lock (-EBUSY: another controller has it). 0 or an error set
 * on (ctx). */
JITSU__API int jitsu__state_dir_ensure(jitsu_ctx *ctx, const char *sub,
                                       char *path, size_t size);
/* Give the lock up (jitsu_ctx_free(), or the directory changes). */
void jitsu__state_dir_unlock(jitsu_ctx *ctx);

#endif
