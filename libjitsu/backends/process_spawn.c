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

static int open_log(proc *p) {
  char dir[512], path[600], old[620];
  int r =
      jitsu__state_dir_ensure(jitsu_vm_ctx(p->vm), "logs", dir, sizeof(dir));
  if (r < 0)
    return r;
  snprintf(path, sizeof(path), "%s/%s.log", dir, jitsu_vm_name(p->vm));
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

typedef struct child_args {
  proc *p;
  const char *path;
  char **env;
  char *pid_slot;
  int devnull, logfd;
  const jitsu__child_record *rec;
} child_args;

/* Runs in the child before its exec (jitsu__spawn): system calls only. */
static int child(void *arg, int *errfd, const char **what) {
  child_args *c = arg;
  proc *p = c->p;
  *what = "setsid";
  if (setsid() < 0)
    return errno;
  *what = "guest record";
  if (jitsu__child_record_write(c->rec) < 0)
    return errno;
  /* Move everything we need above the target range first, so that the
   * dup2 calls below cannot overwrite a source. */
  int base = 3 + (int)p->n_socks;
  int high[3 + 64];
  int srcs[3] = {c->devnull, c->logfd, c->logfd};
  *what = "dup2";
  for (size_t i = 0; i < 3 + p->n_socks; i++) {
    int src = i < 3 ? srcs[i] : p->socks[i - 3].fd;
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
  if (chdir(p->workdir ? p->workdir : "/") < 0)
    return errno;
  *what = "setrlimit"; /* before dropping privileges: root may raise them */
  struct rlimit rl;
  if (p->memory_max > 0) {
    rl.rlim_cur = rl.rlim_max = p->memory_max;
    if (setrlimit(RLIMIT_AS, &rl) < 0)
      return errno;
  }
  if (p->files_max > 0) {
    rl.rlim_cur = rl.rlim_max = p->files_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
      return errno;
  }
  /* The system calls themselves: glibc's wrappers would make every thread
   * of the parent change its ids too. */
  if (p->set_group || p->set_user) {
    *what = "setgroups";
    gid_t gid = p->gid;
    if (syscall(SYS_setgroups, p->set_group ? 1 : 0, &gid) < 0)
      return errno;
    *what = "setgid";
    if (p->set_group && syscall(SYS_setgid, p->gid) < 0)
      return errno;
    *what = "setuid";
    if (p->set_user && syscall(SYS_setuid, p->uid) < 0)
      return errno;
  }
  if (c->pid_slot != NULL)
    put_decimal(c->pid_slot, 20, (long)getpid());
  *what = "execve";
  execve(c->path, p->argv, c->env);
  return errno;
}

int process_spawn(proc *p) {
  char path[4096];
  jitsu_vm *vm = p->vm;
  if (p->n_socks > 64) {
    jitsu_vm_set_reason(vm, "too many sockets (at most 64)");
    return -EINVAL;
  }
  int r = jitsu__resolve_exec(p->argv[0], p->env, path, sizeof(path));
  if (r < 0) {
    jitsu_vm_set_reason(vm, "exec '%s': %s", p->argv[0], strerror(-r));
    return r;
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
  jitsu__child_record rec;
  char rpath[600];
  if ((r = record_path(p, rpath, sizeof(rpath))) < 0 ||
      (r = jitsu__child_record_prepare(&rec, rpath)) < 0) {
    jitsu_vm_set_reason(vm, "cannot prepare the guest record: %s",
                        strerror(-r));
    return r;
  }
  char *pid_slot = NULL;
  char **env = build_env(p, &pid_slot);
  int logfd = open_log(p);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (env == NULL || logfd < 0 || devnull < 0) {
    r = env == NULL ? -ENOMEM : logfd < 0 ? logfd : -errno;
    jitsu_vm_set_reason(vm, "cannot prepare the guest: %s", strerror(-r));
    goto out;
  }
  child_args c = {p, path, env, pid_slot, devnull, logfd, &rec};
  const char *what;
  pid_t pid;
  if ((r = jitsu__spawn(child, &c, &pid, &what)) < 0) {
    if (strcmp(what, "guest record") != 0)
      unlink(rec.path); /* the child wrote it before it failed */
    jitsu_vm_set_reason(vm, "%s '%s': %s", what, path, strerror(-r));
    goto out;
  }
  p->pid = pid;
  p->pidfd = jitsu__pidfd_open(pid);
  if (p->pidfd < 0 && errno != ENOSYS) { /* ENOSYS: watched by a timer */
    r = -errno;
    kill(-pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
      ;
    jitsu_vm_set_reason(vm, "pidfd_open: %s", strerror(-r));
    goto out;
  }
  /* The child wrote the guest's record before its exec. */
  jitsu__proc_stat(pid, &p->starttime, NULL);
  r = 0;
out:
  if (devnull >= 0)
    close(devnull);
  if (logfd >= 0)
    close(logfd);
  free(env);
  return r;
}

static int record_path(proc *p, char *path, size_t size) {
  char dir[512];
  int r =
      jitsu__state_dir_ensure(jitsu_vm_ctx(p->vm), "process", dir, sizeof(dir));
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
