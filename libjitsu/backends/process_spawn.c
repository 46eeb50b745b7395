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

#define DEFAULT_PATH                                                           \
  "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define LOG_ROTATE_BYTES (8 * 1024 * 1024)

/* Find (name) as execvp would, before forking, so that the error is clear. */
static int resolve_exec(proc *p, char *out, size_t size) {
  const char *name = p->argv[0];
  if (strchr(name, '/') != NULL) {
    if (snprintf(out, size, "%s", name) >= (int)size)
      return -ENAMETOOLONG;
    return access(out, X_OK) == 0 ? 0 : -errno;
  }
  const char *path = DEFAULT_PATH;
  for (char **e = p->env; e && *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0)
      path = *e + 5;
  int last = -ENOENT;
  while (*path) {
    const char *end = strchr(path, ':');
    size_t len = end ? (size_t)(end - path) : strlen(path);
    if (len > 0 &&
        snprintf(out, size, "%.*s/%s", (int)len, path, name) < (int)size) {
      if (access(out, X_OK) == 0)
        return 0;
      if (errno != ENOENT)
        last = -errno;
    }
    path += len + (end ? 1 : 0);
  }
  return last;
}

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
  bytes += sizeof(DEFAULT_PATH) + 6 + strlen(jitsu_vm_name(p->vm)) + 10 +
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
    ADD("PATH=%s", DEFAULT_PATH);
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

struct child_fail {
  int stage; /* what failed: see child_stage_names */
  int err;
};

static const char *const child_stage_names[] = {
    "setsid", "dup2",   "chdir",  "setrlimit",    "setgroups",
    "setgid", "setuid", "execve", "guest record",
};

/* Runs in the child between fork and exec: only async-signal-safe calls. */
static void child(proc *p, const char *path, char **env, char *pid_slot,
                  int devnull, int logfd, int errfd,
                  const jitsu__child_record *rec) {
  struct child_fail f = {0, 0};
  sigset_t none;
  sigemptyset(&none);
  for (int sig = 1; sig < NSIG; sig++)
    signal(sig, SIG_DFL);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (setsid() < 0)
    goto fail;
  f.stage = 8;
  if (jitsu__child_record_write(rec) < 0)
    goto fail;
  /* Move everything we need above the target range first, so that the
   * dup2 calls below cannot overwrite a source. */
  int base = 3 + (int)p->n_socks;
  int high[3 + 64];
  int srcs[3] = {devnull, logfd, logfd};
  f.stage = 1;
  for (size_t i = 0; i < 3 + p->n_socks; i++) {
    int src = i < 3 ? srcs[i] : p->socks[i - 3].fd;
    high[i] = fcntl(src, F_DUPFD_CLOEXEC, base + 8);
    if (high[i] < 0)
      goto fail;
  }
  if (errfd < base + 8) {
    errfd = fcntl(errfd, F_DUPFD_CLOEXEC, base + 8);
    if (errfd < 0)
      goto fail;
  }
  for (int i = 0; i < base; i++) {
    if (dup2(high[i], i) < 0) /* dup2 clears close-on-exec */
      goto fail;
    if (i >= 3) { /* we poll our copy: hand over a blocking socket */
      int fl = fcntl(i, F_GETFL);
      if (fl >= 0)
        fcntl(i, F_SETFL, fl & ~O_NONBLOCK);
    }
  }
  /* Descriptors the embedder left inheritable must not leak into the
   * guest: everything above the handed-over range closes at exec. */
  syscall(SYS_close_range, (unsigned)base, ~0u, CLOSE_RANGE_CLOEXEC);
  f.stage = 2;
  if (chdir(p->workdir ? p->workdir : "/") < 0)
    goto fail;
  f.stage = 3; /* before dropping privileges: root may raise them */
  struct rlimit rl;
  if (p->memory_max > 0) {
    rl.rlim_cur = rl.rlim_max = p->memory_max;
    if (setrlimit(RLIMIT_AS, &rl) < 0)
      goto fail;
  }
  if (p->files_max > 0) {
    rl.rlim_cur = rl.rlim_max = p->files_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
      goto fail;
  }
  if (p->set_group || p->set_user) {
    f.stage = 4;
    gid_t gid = p->gid;
    if (setgroups(p->set_group ? 1 : 0, &gid) < 0)
      goto fail;
    f.stage = 5;
    if (p->set_group && setgid(p->gid) < 0)
      goto fail;
    f.stage = 6;
    if (p->set_user && setuid(p->uid) < 0)
      goto fail;
  }
  if (pid_slot != NULL)
    put_decimal(pid_slot, 20, (long)getpid());
  f.stage = 7;
  execve(path, p->argv, env);
fail:
  f.err = errno;
  if (write(errfd, &f, sizeof(f)) < 0) {
    /* nothing more to do */
  }
  _exit(127);
}

int process_spawn(proc *p) {
  char path[4096];
  jitsu_vm *vm = p->vm;
  if (p->n_socks > 64) {
    jitsu_vm_set_reason(vm, "too many sockets (at most 64)");
    return -EINVAL;
  }
  int r = resolve_exec(p, path, sizeof(path));
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
  int pipefd[2] = {-1, -1};
  if (env == NULL || logfd < 0 || devnull < 0 || pipe2(pipefd, O_CLOEXEC) < 0) {
    r = env == NULL ? -ENOMEM : logfd < 0 ? logfd : -errno;
    jitsu_vm_set_reason(vm, "cannot prepare the guest: %s", strerror(-r));
    goto out;
  }
  pid_t pid = fork();
  if (pid < 0) {
    r = -errno;
    jitsu_vm_set_reason(vm, "fork: %s", strerror(-r));
    goto out;
  }
  if (pid == 0)
    child(p, path, env, pid_slot, devnull, logfd, pipefd[1], &rec);
  close(pipefd[1]);
  pipefd[1] = -1;
  /* The pipe closes on exec, or carries the reason the child failed. Like
   * uv_spawn(), this waits only for fork-to-exec, never for the guest. */
  struct child_fail f;
  ssize_t n;
  do
    n = read(pipefd[0], &f, sizeof(f));
  while (n < 0 && errno == EINTR);
  if (n == (ssize_t)sizeof(f)) {
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
      ;
    if (f.stage != 8)
      unlink(rec.path); /* the child wrote it before it failed */
    jitsu_vm_set_reason(vm, "%s '%s': %s", child_stage_names[f.stage], path,
                        strerror(f.err));
    r = -f.err;
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
  if (pipefd[0] >= 0)
    close(pipefd[0]);
  if (pipefd[1] >= 0)
    close(pipefd[1]);
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
