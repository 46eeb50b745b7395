/* Starting a program without copying the controller: clone(2) with
 * CLONE_VM | CLONE_VFORK, as posix_spawn does, so that the cost of a start
 * does not grow with what the controller maps (a fork copies the page
 * tables of every library: 1.5-1.8 ms for libjitsu with its backends).
 *
 * The child shares our memory until it execs, and we wait for that. So it
 * runs on a stack of its own, with every signal blocked until it has put
 * every handler back to the default (a handler of ours must never run in
 * it), and it makes only system calls: no malloc, no stdio, and no glibc
 * set*id() wrapper (those signal every thread of the parent). */
#include "base.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* The child's frames leave ASan's red zones in the shadow of its stack,
 * which we share; clear them before the pages can be mapped again. */
#if defined(__SANITIZE_ADDRESS__)
#define JITSU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define JITSU_ASAN 1
#endif
#endif
#ifdef JITSU_ASAN
#include <sanitizer/asan_interface.h>
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Enough for the children's frames with ASan's red zones. */
#define CHILD_STACK (256 * 1024)

typedef struct spawn_args {
  jitsu__child_fn fn;
  void *arg;
  int errfd;
} spawn_args;

typedef struct spawn_report {
  const char *what;
  int err;
} spawn_report;

/* The kernel's sigset, all signals: glibc's sigfillset leaves out the two
 * it reserves for itself, and those must not reach the child either. */
static int block_all(sigset_t *old) {
  unsigned long all[2] = {~0UL, ~0UL};
  return (int)syscall(SYS_rt_sigprocmask, SIG_SETMASK, all, old, 8);
}

static int child_main(void *p) {
  spawn_args *a = p;
  struct sigaction dfl;
  memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < 65; sig++)
    if (sig != SIGKILL && sig != SIGSTOP)
      syscall(SYS_rt_sigaction, sig, &dfl, NULL, 8);
  unsigned long none[2] = {0, 0};
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, none, NULL, 8);
  spawn_report rep;
  memset(&rep, 0, sizeof(rep)); /* its padding goes down the pipe too */
  rep.what = "exec";
  int errfd = a->errfd;
  rep.err = a->fn(a->arg, &errfd, &rep.what);
  if (write(errfd, &rep, sizeof(rep)) < 0) {
    /* the parent then sees an exit without exec: reported as EIO */
  }
  for (;;) /* not _exit(): under ASan that is a no-return call on a
            * foreign stack, which it warns about */
    syscall(SYS_exit_group, 127);
  return 0;
}

/* The children's stack of the calling thread, made once and kept: a
 * thread is held in clone() until its child has left the stack (exec or
 * exit), so one per thread is enough. It saves an mmap and an munmap per
 * spawn, and the munmap's TLB shootdown on every CPU the process runs on
 * (it is never unmapped: a few threads, 256 KiB each). */
static void *thread_stack(void) {
  static __thread void *stack;
  if (stack == NULL) {
    void *p = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    stack = p == MAP_FAILED ? NULL : p;
  }
  return stack;
}

int jitsu__spawn(jitsu__child_fn fn, void *arg, pid_t *pid, const char **what) {
  int errp[2];
  *what = "pipe2";
  if (pipe2(errp, O_CLOEXEC) < 0)
    return -errno;
  *what = "mmap";
  void *stack = thread_stack();
  if (stack == NULL) {
    int e = errno;
    close(errp[0]);
    close(errp[1]);
    return -e;
  }
  sigset_t old;
  spawn_args a = {fn, arg, errp[1]};
  block_all(&old);
  *what = "clone";
  pid_t child = (pid_t)clone(child_main, (char *)stack + CHILD_STACK,
                             CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
  int e = errno;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, 8);
  UNPOISON(stack, CHILD_STACK);
  close(errp[1]);
  if (child < 0) {
    close(errp[0]);
    return -e;
  }
  /* The pipe closes at exec, or carries why the child could not get
   * there. Read it to the end: under valgrind (which runs this clone as a
   * fork) the child may not have got that far yet. */
  spawn_report rep;
  ssize_t n;
  do
    n = read(errp[0], &rep, sizeof(rep));
  while (n < 0 && errno == EINTR);
  close(errp[0]);
  if (n == 0) {
    *pid = child;
    return 0;
  }
  while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
    ;
  if (n != (ssize_t)sizeof(rep)) {
    *what = "exec";
    return -EIO;
  }
  *what = rep.what;
  return -(rep.err > 0 ? rep.err : EIO);
}

int jitsu__resolve_exec(const char *name, char *const *env, char *out,
                        size_t size) {
  if (strchr(name, '/') != NULL) {
    if (snprintf(out, size, "%s", name) >= (int)size)
      return -ENAMETOOLONG;
    return access(out, X_OK) == 0 ? 0 : -errno;
  }
  const char *path = JITSU__DEFAULT_PATH;
  for (char *const *e = env; e && *e; e++)
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
