/* The process backend: fork/exec with socket handoff, and guest records. */
#include "process.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <linux/close_range.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define LOG_ROTATE_BYTES (8 * 1024 * 1024)

/* The guest's log, STATE/logs/NAME.log: its path, on the loop (the
 * directory is the context's); 0 or -errno. */
static int log_path(proc *p, char *path, size_t size) {
  char dir[512];
  int r = jitsu_ctx_state_subdir(jitsu_vm_ctx(p->vm), "logs", dir, sizeof(dir));
  if (r < 0)
    return r;
  if (snprintf(path, size, "%s/%s.log", dir, jitsu_vm_name(p->vm)) >= (int)size)
    return -ENAMETOOLONG;
  return 0;
}

/* Open it, rotated past LOG_ROTATE_BYTES; in the worker thread (creating
 * a file can take a millisecond on a busy file system). */
static int open_log(const char *path) {
  char old[620];
  struct stat st;
  if (stat(path, &st) == 0 && st.st_size > LOG_ROTATE_BYTES) {
    snprintf(old, sizeof(old), "%s.1", path);
    rename(path, old);
  }
  int fd =
      open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
  return fd < 0 ? -errno : fd;
}

/* Build the guest's environment: PATH, the vm's env, JITSU_VM, and the
 * LISTEN_* and NOTIFY_SOCKET variables. LISTEN_PID is filled in by the
 * child ((*pid_slot) points at its digits). */
static char **build_env(proc *p, char **pid_slot) {
  const char *notify = jitsu_vm_notify_socket(p->vm);
  const char *rendezvous = jitsu_rendezvous_path(jitsu_vm_ctx(p->vm));
  size_t n = 0, bytes = 0;
  for (char **e = p->env; e && *e; e++)
    n++, bytes += strlen(*e) + 1;
  char names[1024] = "";
  size_t o = 0;
  for (size_t i = 0; i < p->n_socks && o < sizeof(names); i++)
    o += (size_t)snprintf(names + o, sizeof(names) - o, "%s%s", i ? ":" : "",
                          p->socks[i].name);
  bytes += sizeof(JITSU__DEFAULT_PATH) + 6 + strlen(jitsu_vm_name(p->vm)) + 10 +
           (notify ? strlen(notify) + 16 : 0) + 64 + strlen(names) + 32 +
           (rendezvous ? strlen(rendezvous) + 20 : 0);
  char **env = malloc((n + 8) * sizeof(char *) + bytes);
  if (env == NULL)
    return NULL;
  char *s = (char *)(env + n + 8);
  size_t k = 0;
#define ADD(...) (env[k++] = s, s += sprintf(s, __VA_ARGS__) + 1)
  bool has_path = false;
  for (char **e = p->env; e && *e; e++) {
    has_path |= strncmp(*e, "PATH=", 5) == 0;
    ADD("%s", *e);
  }
  if (!has_path)
    ADD("PATH=%s", JITSU__DEFAULT_PATH);
  ADD("JITSU_VM=%s", jitsu_vm_name(p->vm));
  if (notify != NULL)
    ADD("NOTIFY_SOCKET=%s", notify);
  if (rendezvous != NULL)
    ADD("JITSU_RENDEZVOUS=%s", rendezvous);
  *pid_slot = NULL;
  if (p->n_socks > 0) {
    ADD("LISTEN_FDS=%zu", p->n_socks);
    ADD("LISTEN_FDNAMES=%s", names);
    env[k++] = s;
    s += sprintf(s, "LISTEN_PID=%-20s", "");
    *pid_slot = env[k - 1] + strlen("LISTEN_PID=");
    s++;
  }
#undef ADD
  env[k] = NULL;
  return env;
}

static int record_path(proc *p, char *path, size_t size);

/* Write (v) in decimal at (out), padding with NULs; async-signal-safe. */
static void put_decimal(char *out, size_t size, long v) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0 && n < sizeof(tmp));
  size_t i = 0;
  while (n > 0 && i < size)
    out[i++] = tmp[--n];
  while (i < size)
    out[i++] = '\0';
}

/* A start in flight: everything the child needs, owned by the job (the
 * vm may let go of its proc while a worker thread runs the clone), and
 * what it came to. */
typedef struct spawn_job {
  uv_work_t work;
  proc *p; /* NULL once the vm let go of it */
  char path[4096];
  char **argv; /* copies */
  char **env;
  char *pid_slot;
  char *workdir;
  int *fds; /* the sockets handed over, our own duplicates */
  size_t n_fds;
  char log[600];
  int devnull, logfd; /* opened in the worker thread */
  bool set_user, set_group;
  uid_t uid;
  gid_t gid;
  uint64_t memory_max, files_max;
  jitsu__child_record rec;
  /* The outcome; the guest's pidfd (or -errno) and start time, taken in
   * the worker too. */
  pid_t pid;
  int pidfd;
  unsigned long long starttime;
  int r;
  const char *what;
} spawn_job;

/* Runs in the child before its exec (jitsu__spawn): system calls only. */
static int child(void *arg, int *errfd, const char **what) {
  spawn_job *j = arg;
  *what = "setsid";
  if (setsid() < 0)
    return errno;
  *what = "guest record";
  if (jitsu__child_record_write(&j->rec) < 0)
    return errno;
  /* Move everything we need above the target range first, so that the
   * dup2 calls below cannot overwrite a source. */
  int base = 3 + (int)j->n_fds;
  int high[3 + 64];
  int srcs[3] = {j->devnull, j->logfd, j->logfd};
  *what = "dup2";
  for (size_t i = 0; i < 3 + j->n_fds; i++) {
    int src = i < 3 ? srcs[i] : j->fds[i - 3];
    high[i] = fcntl(src, F_DUPFD_CLOEXEC, base + 8);
    if (high[i] < 0)
      return errno;
  }
  if (*errfd < base + 8) {
    int e = fcntl(*errfd, F_DUPFD_CLOEXEC, base + 8);
    if (e < 0)
      return errno;
    *errfd = e;
  }
  for (int i = 0; i < base; i++) {
    if (dup2(high[i], i) < 0) /* dup2 clears close-on-exec */
      return errno;
    if (i >= 3) { /* we poll our copy: hand over a blocking socket */
      int fl = fcntl(i, F_GETFL);
      if (fl >= 0)
        fcntl(i, F_SETFL, fl & ~O_NONBLOCK);
    }
  }
  /* Descriptors the embedder left inheritable must not leak into the
   * guest: everything above the handed-over range closes at exec. */
  syscall(SYS_close_range, (unsigned)base, ~0u, CLOSE_RANGE_CLOEXEC);
  *what = "chdir";
  if (chdir(j->workdir ? j->workdir : "/") < 0)
    return errno;
  *what = "setrlimit"; /* before dropping privileges: root may raise them */
  struct rlimit rl;
  if (j->memory_max > 0) {
    rl.rlim_cur = rl.rlim_max = j->memory_max;
    if (setrlimit(RLIMIT_AS, &rl) < 0)
      return errno;
  }
  if (j->files_max > 0) {
    rl.rlim_cur = rl.rlim_max = j->files_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
      return errno;
  }
  /* The system calls themselves: glibc's wrappers would make every thread
   * of the parent change its ids too. */
  if (j->set_group || j->set_user) {
    *what = "setgroups";
    gid_t gid = j->gid;
    if (syscall(SYS_setgroups, j->set_group ? 1 : 0, &gid) < 0)
      return errno;
    *what = "setgid";
    if (j->set_group && syscall(SYS_setgid, j->gid) < 0)
      return errno;
    *what = "setuid";
    if (j->set_user && syscall(SYS_setuid, j->uid) < 0)
      return errno;
  }
  if (j->pid_slot != NULL)
    put_decimal(j->pid_slot, 20, (long)getpid());
  *what = "execve";
  execve(j->path, j->argv, j->env);
  return errno;
}

/* Close the job's descriptors: in the worker once the clone is done, or
 * when a job that never ran is freed. */
static void job_close(spawn_job *j) {
  for (size_t i = 0; i < j->n_fds; i++)
    if (j->fds[i] >= 0)
      close(j->fds[i]);
  j->n_fds = 0;
  if (j->devnull >= 0)
    close(j->devnull);
  if (j->logfd >= 0)
    close(j->logfd);
  j->logfd = j->devnull = -1;
}

static void job_free(spawn_job *j) {
  job_close(j);
  if (j->pidfd >= 0)
    close(j->pidfd); /* not handed to a vm */
  free(j->fds);
  free(j->workdir);
  free(j->env);
  free(j->argv);
  free(j);
}

/* In a worker thread of libuv's pool: the clone waits for the child's
 * exec there, not on the loop that every other client shares. */
static void spawn_work(uv_work_t *w) {
  spawn_job *j = w->data;
  j->logfd = open_log(j->log);
  j->devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (j->logfd < 0 || j->devnull < 0) {
    j->r = j->logfd < 0 ? j->logfd : -errno;
    j->what = "log";
  } else {
    j->r = jitsu__spawn(child, j, &j->pid, &j->what);
  }
  if (j->r == 0) {
    j->pidfd = jitsu__pidfd_open(j->pid);
    if (j->pidfd < 0)
      j->pidfd = -errno;
    jitsu__proc_stat(j->pid, &j->starttime, NULL);
  }
  job_close(j); /* here too, not on the loop */
}

static void spawn_after(uv_work_t *w, int status) {
  spawn_job *j = w->data;
  proc *p = j->p;
  if (status < 0 && j->r == 0) /* cancelled before it ran */
    j->r = status, j->what = "spawn";
  if (j->r < 0 && strcmp(j->what, "guest record") != 0)
    unlink(j->rec.path); /* the child wrote it before it failed */
  if (p == NULL) { /* the vm let go: a started guest is left for adoption */
    job_free(j);
    return;
  }
  p->job = NULL;
  int r = j->r;
  if (r < 0 && strcmp(j->what, "log") == 0)
    jitsu_vm_set_reason(p->vm, "cannot open the guest's log %s: %s", j->log,
                        strerror(-r));
  else if (r < 0)
    jitsu_vm_set_reason(p->vm, "%s '%s': %s", j->what, j->path, strerror(-r));
  if (r == 0) {
    p->pid = j->pid;
    p->pidfd = j->pidfd; /* or -errno */
    p->starttime = j->starttime;
    j->pidfd = -1;
  }
  job_free(j);
  process_spawned(p, r);
}

/* Copy the NULL-terminated (v) into one allocation. */
static char **argv_copy(char **v) {
  size_t n = 0, bytes = 0;
  for (; v[n] != NULL; n++)
    bytes += strlen(v[n]) + 1;
  char **c = malloc((n + 1) * sizeof(char *) + bytes);
  if (c == NULL)
    return NULL;
  char *s = (char *)(c + n + 1);
  for (size_t i = 0; i < n; i++) {
    c[i] = strcpy(s, v[i]);
    s += strlen(v[i]) + 1;
  }
  c[n] = NULL;
  return c;
}

int process_spawn(proc *p) {
  jitsu_vm *vm = p->vm;
  if (p->n_socks > 64) {
    jitsu_vm_set_reason(vm, "too many sockets (at most 64)");
    return -EINVAL;
  }
  if ((p->set_user || p->set_group) && geteuid() != 0) {
    jitsu_vm_set_reason(vm, "user= and group= need root");
    return -EPERM;
  }
  for (size_t i = 0; i < p->n_socks; i++)
    if (p->socks[i].fd < 0) {
      jitsu_vm_set_reason(vm, "socket %s is not bound", p->socks[i].key);
      return -EBADF;
    }
  spawn_job *j = calloc(1, sizeof(*j));
  if (j == NULL) {
    jitsu_vm_set_reason(vm, "out of memory");
    return -ENOMEM;
  }
  j->devnull = j->logfd = j->pidfd = -1;
  int r = jitsu__resolve_exec(p->argv[0], p->env, j->path, sizeof(j->path));
  if (r < 0) {
    jitsu_vm_set_reason(vm, "exec '%s': %s", p->argv[0], strerror(-r));
    job_free(j);
    return r;
  }
  char rpath[600];
  if ((r = record_path(p, rpath, sizeof(rpath))) < 0 ||
      (r = jitsu__child_record_prepare(&j->rec, rpath)) < 0) {
    jitsu_vm_set_reason(vm, "cannot prepare the guest record: %s",
                        strerror(-r));
    job_free(j);
    return r;
  }
  j->env = build_env(p, &j->pid_slot);
  j->argv = argv_copy(p->argv);
  j->fds = calloc(p->n_socks ? p->n_socks : 1, sizeof(int));
  r = j->env == NULL || j->argv == NULL || j->fds == NULL
          ? -ENOMEM
          : log_path(p, j->log, sizeof(j->log));
  for (size_t i = 0; r == 0 && i < p->n_socks; i++, j->n_fds++)
    if ((j->fds[i] = fcntl(p->socks[i].fd, F_DUPFD_CLOEXEC, 3)) < 0)
      r = -errno;
  if (r < 0) {
    jitsu_vm_set_reason(vm, "cannot prepare the guest: %s", strerror(-r));
    job_free(j);
    return r;
  }
  if (p->workdir != NULL && (j->workdir = jitsu__strdup(p->workdir)) == NULL) {
    jitsu_vm_set_reason(vm, "out of memory");
    job_free(j);
    return -ENOMEM;
  }
  j->set_user = p->set_user, j->set_group = p->set_group;
  j->uid = p->uid, j->gid = p->gid;
  j->memory_max = p->memory_max, j->files_max = p->files_max;
  j->p = p;
  j->work.data = j;
  r = uv_queue_work(jitsu_ctx_loop(jitsu_vm_ctx(vm)), &j->work, spawn_work,
                    spawn_after);
  if (r < 0) {
    jitsu_vm_set_reason(vm, "cannot start: %s", uv_strerror(r));
    job_free(j);
    return r;
  }
  p->job = j;
  return 0;
}

void process_spawn_forget(proc *p) {
  if (p->job != NULL)
    p->job->p = NULL;
  p->job = NULL;
}

static int record_path(proc *p, char *path, size_t size) {
  char dir[512];
  int r =
      jitsu_ctx_state_subdir(jitsu_vm_ctx(p->vm), "process", dir, sizeof(dir));
  if (r < 0)
    return r;
  if (snprintf(path, size, "%s/%s.pid", dir, jitsu_vm_name(p->vm)) >= (int)size)
    return -ENAMETOOLONG;
  return 0;
}

void process_record_remove(proc *p) {
  char path[600];
  if (record_path(p, path, sizeof(path)) == 0)
    unlink(path);
}

int process_record_adopt(proc *p) {
  char path[600];
  if (record_path(p, path, sizeof(path)) < 0)
    return 0;
  int r = jitsu__record_adopt(path, &p->pid, &p->pidfd, &p->starttime);
  if (r == -ESTALE)
    jitsu_vm_log(p->vm, JITSU_LOG_DEBUG, "removed a stale guest record");
  return r > 0;
}
