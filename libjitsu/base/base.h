/* The base room's header: helpers that know no guest (tables, subscriber
 * lists, logging and the last error, value parsers, spawning, guest
 * records, the state directory). Everything in the library may use them;
 * they use nothing else of it. The backends see this header and the public
 * API, never the core's structures. */
#ifndef JITSU_BASE_H
#define JITSU_BASE_H

#include <jitsu/jitsu.h>

#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>

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
  jitsu_hash_key key; /* random: outside input may choose the keys */
} jitsu__table;

/* Start (t) empty, with a random key for its hash. */
void jitsu__table_init(jitsu__table *t);
/* SipHash-c-d of (data, len) under (key) (hash.c): jitsu_hash() is 1-3. */
uint64_t jitsu__siphash(const jitsu_hash_key *key, const void *data, size_t len,
                        int c_rounds, int d_rounds);
/* Free the buckets of (t) (the nodes belong to their owners). */
void jitsu__table_free(jitsu__table *t);
/* The node whose key is (key), or NULL. */
jitsu__hnode *jitsu__table_find(const jitsu__table *t, const char *key);
/* Insert (node) with its key already set; -ENOMEM. Keys must be unique. */
int jitsu__table_insert(jitsu__table *t, jitsu__hnode *node);
/* Remove (node), which is in (t). */
void jitsu__table_remove(jitsu__table *t, jitsu__hnode *node);

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

/* Parse a whole number from 0 to UINT_MAX (values.c); 0 or -EINVAL. */
JITSU__API int jitsu__parse_uint(const char *text, unsigned *out);
/* A backend's "pool = N" (value, NULL when unset: 0) into (*out): 0, or
 * -EINVAL with (err) filled when it is not 0 to (max). */
JITSU__API int jitsu__parse_pool(const char *value, unsigned max, unsigned *out,
                                 jitsu_error *err);

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
/* The timer (*t) on (loop) with (data), made at first use: NULL when out
 * of memory. */
JITSU__API uv_timer_t *jitsu__timer_get(uv_timer_t **t, uv_loop_t *loop,
                                        void *data);
/* Close the timer (*t) if there is one (its data NULL first, for a
 * callback that may still come) and forget it; freed when closed. */
JITSU__API void jitsu__timer_drop(uv_timer_t **t);

/* Duplicate (s); NULL on failure. */
JITSU__API char *jitsu__strdup(const char *s);

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
/* (path) holds exactly (want) (false if (want) is NULL). */
JITSU__API bool jitsu__file_holds(const char *path, const char *want);
/* Write (text) to (path), replacing it: whether it was written whole
 * (false if (text) is NULL). */
JITSU__API bool jitsu__file_put(const char *path, const char *text);
/* The size and modification time of the file (path) as text into (out)
 * ("" when (path) is NULL or cannot be read): what a fingerprint of a
 * guest built from it records. */
JITSU__API void jitsu__file_stamp(const char *path, char *out, size_t size);
/* A back-off after (fails) failures in a row: (first_ms), doubling with
 * each further one, at most (max_ms). */
JITSU__API uint64_t jitsu__backoff_ms(unsigned fails, uint64_t first_ms,
                                      uint64_t max_ms);
/* Make (path) free for a Unix socket of (type): 0 when nothing is there or
 * a stale socket file was removed; -EADDRINUSE when something answers on
 * it, -EEXIST when it is not a socket (both left alone). */
int jitsu__unix_claim(const char *path, int type);
/* Listen on the Unix socket (path) of (type) (SOCK_NONBLOCK may be or-ed
 * in), born with mode 0600 (0660 and group (gid) when (group)), refusing to
 * take over a socket something still answers on; (what) names it in
 * errors. The listening descriptor, or an error with (why) filled. */
JITSU__API int jitsu__listen_unix(const char *what, const char *path, int type,
                                  int backlog, gid_t gid, bool group, char *why,
                                  size_t size);
/* pidfd_open(2); a descriptor or -1 with errno (ENOSYS: a kernel before
 * 5.3, or valgrind before 3.20: callers then watch the pid by polling). */
JITSU__API int jitsu__pidfd_open(pid_t pid);
/* waitid(WEXITED | WNOHANG) for our child (pid), through (pidfd) when there
 * is one (-1: by pid); 0 with (*si) (si_pid 0: still running), or -1 with
 * errno (ECHILD: not our child). */
JITSU__API int jitsu__reap(pid_t pid, int pidfd, siginfo_t *si);
/* Whether the process (pid) that started at (starttime) has ended, for a
 * watch without a pidfd: our child that exited (not reaped here), or a
 * process that is gone, a zombie, or another one under a reused pid. */
JITSU__API bool jitsu__pid_ended(pid_t pid, unsigned long long starttime);
/* Put the network interface (ifname) on the Linux bridge (bridge) (join)
 * or take it off (!join), in the calling thread's network namespace; no
 * allocation (a child between fork and exec may call it). 0, or the errno
 * with (*what) saying which step failed. */
JITSU__API int jitsu__bridge_port(const char *bridge, const char *ifname,
                                  bool join, const char **what);
/* A TCP port free now on (sin)'s IPv4 address (the kernel's pick, into
 * sin_port; whoever binds it next races other takers): 0, or -errno
 * (EADDRNOTAVAIL: not an address of this host). */
JITSU__API int jitsu__free_tcp_port(struct sockaddr_in *sin);
/* The parts of a QEMU host forward rule "tcp:[HOSTADDR]:HOSTPORT-GUEST":
 * its host port into (*port) and, when (addr) is not NULL, its host
 * address as text ("" for none) into (addr); returns the guest side
 * ("[GUESTADDR]:GUESTPORT"), or NULL when (rule) is not a tcp rule of that
 * shape or the address does not fit in (size). */
JITSU__API const char *jitsu__hostfwd_parts(const char *rule, char *addr,
                                            size_t size, unsigned *port);
/* Read the start time and state letter of (pid) from /proc; 0 or -errno. */
JITSU__API int jitsu__proc_stat(pid_t pid, unsigned long long *starttime,
                                char *state);
/* Parse "HOST:PORT" / "[V6]:PORT" into (ss); 0 or -EINVAL. */
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

/* A loadable module (core/module.c loads it): a VM backend, or the Xen
 * channels. Each defines one with JITSU__MODULE(). */
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
#endif
