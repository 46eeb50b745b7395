/* The process backend: guests are local programs (the embedded default). */
#include "process.h"

#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CONFIRM_EVERY_MS 1
#define CONFIRM_TRIES 2000

static const jitsu_key process_keys[] = {
    {"exec", JITSU_KEY_STRING, JITSU_KEY_REQUIRED,
     "the program and its arguments, split like a shell without expansion"},
    {"env", JITSU_KEY_STRING, JITSU_KEY_MULTI, "NAME=VALUE for the guest"},
    {"workdir", JITSU_KEY_STRING, 0, "working directory (default /)"},
    {"user", JITSU_KEY_STRING, 0, "run as this user (needs root)"},
    {"group", JITSU_KEY_STRING, 0, "run as this group (needs root)"},
    {"socket", JITSU_KEY_STRING, JITSU_KEY_MULTI,
     "a socket handed to the guest: tcp|udp:HOST:PORT, unix:/PATH (with "
     "to=HOST:PORT: relayed by the library instead)"},
    {"memory-max", JITSU_KEY_SIZE, 0, "address space limit (RLIMIT_AS)"},
    {"files-max", JITSU_KEY_UINT, 0, "open files limit (RLIMIT_NOFILE)"},
};

static void proc_free(proc *p) {
  if (p == NULL)
    return;
  free(p->argv);
  if (p->env != NULL)
    for (char **e = p->env; *e; e++)
      free(*e);
  free(p->env);
  free(p->workdir);
  free(p->socks);
  free(p);
}

static int check_env(const char *v) {
  const char *eq = strchr(v, '=');
  if (eq == NULL || eq == v)
    return -EINVAL;
  for (const char *c = v; c < eq; c++)
    if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || *c == '_' ||
          (c > v && *c >= '0' && *c <= '9')))
      return -EINVAL;
  return 0;
}

/* A relative program path is taken from the controller's working
 * directory at definition, as the guest starts in its own workdir. */
static int absolute_exec(proc *p, jitsu_error *err) {
  char cwd[4096];
  if (getcwd(cwd, sizeof(cwd)) == NULL)
    return jitsu_error_set(err, -errno, "exec", "getcwd: %s", strerror(errno));
  size_t len = strlen(cwd) + strlen(p->argv[0]) + 2;
  int argc = 0;
  while (p->argv[argc] != NULL)
    argc++;
  size_t bytes = (size_t)(argc + 1) * sizeof(char *) + len;
  for (int i = 1; i < argc; i++)
    bytes += strlen(p->argv[i]) + 1;
  char **argv = malloc(bytes);
  if (argv == NULL)
    return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  char *s = (char *)(argv + argc + 1);
  for (int i = 0; i < argc; i++) {
    argv[i] = s;
    if (i == 0)
      s += sprintf(s, "%s/%s", cwd, p->argv[0]) + 1;
    else
      s += sprintf(s, "%s", p->argv[i]) + 1;
  }
  argv[argc] = NULL;
  free(p->argv);
  p->argv = argv;
  return 0;
}

static int configure_ids(proc *p, jitsu_vm *vm, jitsu_error *err) {
  const char *user = jitsu_vm_param(vm, "user", 0);
  const char *group = jitsu_vm_param(vm, "group", 0);
  if (user != NULL) {
    struct passwd *pw = getpwnam(user);
    if (pw == NULL)
      return jitsu_error_set(err, -EINVAL, "user", "no such user '%s'", user);
    p->uid = pw->pw_uid;
    p->set_user = true;
    if (group == NULL) {
      p->gid = pw->pw_gid;
      p->set_group = true;
    }
  }
  if (group != NULL) {
    struct group *gr = getgrnam(group);
    if (gr == NULL)
      return jitsu_error_set(err, -EINVAL, "group", "no such group '%s'",
                             group);
    p->gid = gr->gr_gid;
    p->set_group = true;
  }
  return 0;
}

static int process_configure(jitsu_vm *vm, jitsu_error *err) {
  if (jitsu_vm_wants_marker(vm))
    return jitsu_error_set(err, -EINVAL, "ready",
                           "the process backend has no console marker: use "
                           "notify, tcp: or http: readiness");
  proc *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  p->vm = vm;
  p->pid = 0;
  p->pidfd = -1;
  int argc, r;
  const char *exec = jitsu_vm_param(vm, "exec", 0);
  if (exec == NULL || jitsu_split_argv(exec, &p->argv, &argc) < 0) {
    r = jitsu_error_set(err, -EINVAL, "exec",
                        "'%s' is not a program with arguments (check the "
                        "quotes)",
                        exec ? exec : "");
    goto fail;
  }
  if (strchr(p->argv[0], '/') != NULL && p->argv[0][0] != '/' &&
      (r = absolute_exec(p, err)) < 0)
    goto fail;
  size_t n_env = 0, n_socks = 0;
  while (jitsu_vm_param(vm, "env", n_env) != NULL)
    n_env++;
  const char *spec;
  size_t n_specs = 0;
  for (; (spec = jitsu_vm_param(vm, "socket", n_specs)) != NULL; n_specs++)
    if (!jitsu_backend_socket_relayed(spec)) /* to=: the library relays it */
      n_socks++;
  p->env = calloc(n_env + 1, sizeof(char *));
  p->socks = n_socks ? calloc(n_socks, sizeof(psock)) : NULL;
  if (p->env == NULL || (n_socks > 0 && p->socks == NULL)) {
    r = jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
    goto fail;
  }
  for (size_t i = 0; i < n_env; i++) {
    const char *v = jitsu_vm_param(vm, "env", i);
    if (check_env(v) < 0) {
      r = jitsu_error_set(err, -EINVAL, "env",
                          "'%s' is not NAME=VALUE with a NAME of letters, "
                          "digits and _",
                          v);
      goto fail;
    }
    if ((p->env[i] = jitsu__strdup(v)) == NULL) {
      r = jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
      goto fail;
    }
  }
  for (size_t i = 0, k = 0; i < n_socks; k++) {
    const char *why;
    spec = jitsu_vm_param(vm, "socket", k);
    if (jitsu_backend_socket_relayed(spec))
      continue;
    if (process_socket_parse(spec, &p->socks[i], &why) < 0) {
      r = jitsu_error_set(err, -EINVAL, "socket", "'%s': %s", spec, why);
      goto fail;
    }
    p->socks[i].proc = p;
    for (size_t j = 0; j < i; j++)
      if (strcmp(p->socks[j].key, p->socks[i].key) == 0) {
        r = jitsu_error_set(err, -EINVAL, "socket", "'%s' given twice", spec);
        goto fail;
      }
    i++;
  }
  p->n_socks = n_socks;
  const char *wd = jitsu_vm_param(vm, "workdir", 0);
  if (wd != NULL && wd[0] != '/') {
    r = jitsu_error_set(err, -EINVAL, "workdir", "'%s' is not an absolute path",
                        wd);
    goto fail;
  }
  if (wd != NULL && (p->workdir = jitsu__strdup(wd)) == NULL) {
    r = jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
    goto fail;
  }
  if ((r = configure_ids(p, vm, err)) < 0)
    goto fail;
  const char *mem = jitsu_vm_param(vm, "memory-max", 0);
  const char *files = jitsu_vm_param(vm, "files-max", 0);
  if (mem != NULL && (jitsu_parse_size(mem, &p->memory_max) < 0 ||
                      p->memory_max < 1024 * 1024)) {
    r = jitsu_error_set(err, -EINVAL, "memory-max",
                        "'%s' is below the 1M that any program needs", mem);
    goto fail;
  }
  if (files != NULL && ((p->files_max = strtoull(files, NULL, 10)) < 16 ||
                        p->files_max > 1048576)) {
    r = jitsu_error_set(err, -EINVAL, "files-max",
                        "'%s' is not from 16 to 1048576", files);
    goto fail;
  }
  jitsu_vm_set_data(vm, p);
  return 0;
fail:
  proc_free(p);
  return r;
}

static void free_closed(uv_handle_t *h) {
  free(h);
}

static void close_handle(void *hp) {
  uv_handle_t **h = hp;
  if (*h != NULL) {
    (*h)->data = NULL;
    uv_close(*h, free_closed);
    *h = NULL;
  }
}

/* Forget the live guest (it exited, or we are going away). */
static void instance_drop(proc *p) {
  close_handle(&p->exit_poll);
  close_handle(&p->exit_timer);
  close_handle(&p->timer);
  if (p->pidfd >= 0)
    close(p->pidfd);
  p->pidfd = -1;
  p->pid = 0;
  p->stopping = false;
}

static void process_release(jitsu_vm *vm) {
  proc *p = jitsu_vm_data(vm);
  if (p == NULL)
    return;
  instance_drop(p); /* a live guest keeps running, for adoption */
  process_spawn_forget(p);
  close_handle(&p->rearm);
  close_handle(&p->activity);
  jitsu_ctx *ctx = jitsu_vm_ctx(vm);
  for (size_t i = 0; i < p->n_socks; i++)
    if (jitsu_trigger_lookup(ctx, "socket", p->socks[i].key) == vm)
      jitsu_trigger_remove(ctx, "socket", p->socks[i].key);
  process_sockets_close(p);
  proc_free(p);
  jitsu_vm_set_data(vm, NULL);
}

static void describe_exit(const siginfo_t *si, bool stopping, char *buf,
                          size_t size, int *clean) {
  if (si->si_code == CLD_EXITED) {
    snprintf(buf, size, "exited with status %d", si->si_status);
    *clean = si->si_status == 0;
  } else {
    snprintf(buf, size, "killed by signal %d (%s)%s", si->si_status,
             strsignal(si->si_status),
             si->si_code == CLD_DUMPED ? ", core dumped" : "");
    *clean = stopping && (si->si_status == SIGTERM || si->si_status == SIGKILL);
  }
}

/* Whether the guest has gone; (si) has its status when it was our child. */
static bool guest_gone(proc *p, siginfo_t *si, bool *ours) {
  int r = jitsu__reap(p->pid, p->pidfd, si);
  *ours = r == 0;
  if (r == 0)
    return si->si_pid != 0;
  if (p->pidfd >= 0)
    return true; /* the pidfd was readable: it has ended */
  return jitsu__pid_ended(p->pid, p->starttime); /* adopted, by pid */
}

static void exit_seen(proc *p) {
  siginfo_t si;
  char how[160];
  int clean = 0;
  bool ours;
  if (!guest_gone(p, &si, &ours))
    return; /* not yet */
  if (ours) {
    describe_exit(&si, p->stopping, how, sizeof(how), &clean);
  } else {
    /* Adopted: not our child, so the status is not ours to read. */
    snprintf(how, sizeof(how), "exited (status unknown: adopted guest)");
    clean = p->stopping;
  }
  pid_t pid = p->pid;
  kill(-pid, SIGKILL); /* what is left of its process group goes too */
  process_record_remove(p);
  instance_drop(p);
  jitsu_backend_exited(p->vm, clean, how);
}

static void exit_readable(uv_poll_t *h, int status, int events) {
  (void)status, (void)events;
  if (h->data != NULL)
    exit_seen(h->data);
}

static void exit_timer_fired(uv_timer_t *t) {
  if (t->data != NULL)
    exit_seen(t->data);
}

static int watch_exit(proc *p) {
  jitsu_ctx *ctx = jitsu_vm_ctx(p->vm);
  p->exit_poll = calloc(1, sizeof(*p->exit_poll));
  p->timer = calloc(1, sizeof(*p->timer));
  if (p->exit_poll == NULL || p->timer == NULL) {
    free(p->exit_poll), free(p->timer);
    p->exit_poll = NULL, p->timer = NULL;
    return -ENOMEM;
  }
  uv_timer_init(jitsu_ctx_loop(ctx), p->timer);
  p->timer->data = p;
  if (p->pidfd < 0) { /* no pidfd_open(2) here: look every 20 ms */
    free(p->exit_poll);
    p->exit_poll = NULL;
    p->exit_timer = calloc(1, sizeof(*p->exit_timer));
    if (p->exit_timer == NULL)
      return -ENOMEM;
    uv_timer_init(jitsu_ctx_loop(ctx), p->exit_timer);
    p->exit_timer->data = p;
    return uv_timer_start(p->exit_timer, exit_timer_fired, 20, 20);
  }
  int r = uv_poll_init(jitsu_ctx_loop(ctx), p->exit_poll, p->pidfd);
  if (r < 0) {
    free(p->exit_poll);
    p->exit_poll = NULL;
    return r;
  }
  p->exit_poll->data = p;
  return uv_poll_start(p->exit_poll, UV_READABLE, exit_readable);
}

static int process_start(jitsu_vm *vm) {
  proc *p = jitsu_vm_data(vm);
  p->stop_asked = false;
  return process_spawn(p);
}

static int process_stop(jitsu_vm *vm, jitsu_stop_mode mode, uint64_t grace_ms);

void process_spawned(proc *p, int err) {
  jitsu_vm *vm = p->vm;
  if (err == 0) {
    /* pidfd (or -errno) and starttime were taken in the worker */
    if (p->pidfd < 0 && p->pidfd != -ENOSYS) { /* ENOSYS: a timer watches */
      err = p->pidfd;
      p->pidfd = -1;
      jitsu_vm_set_reason(vm, "pidfd_open: %s", strerror(-err));
    } else {
      if (p->pidfd < 0)
        p->pidfd = -1;
      /* The child wrote the guest's record before its exec. */
      if ((err = watch_exit(p)) < 0)
        jitsu_vm_set_reason(vm, "cannot watch pid %d: %s", (int)p->pid,
                            jitsu_strerror(err));
    }
    if (err < 0) {
      kill(-p->pid, SIGKILL);
      while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
        ;
      process_record_remove(p);
      instance_drop(p);
    }
  }
  if (p->stop_asked) { /* a stop came while it started */
    p->stop_asked = false;
    if (err < 0)
      jitsu_backend_exited(vm, 1, "stopped before it started");
    else if (process_stop(vm, p->stop_mode, p->stop_grace_ms) < 0)
      kill(-p->pid, SIGKILL); /* its exit is reported as it is seen */
    return;
  }
  jitsu_backend_started(vm, err);
}

static void grace_expired(uv_timer_t *t) {
  proc *p = t->data;
  if (p == NULL || p->pid <= 0)
    return;
  jitsu_vm_log(p->vm, JITSU_LOG_WARNING,
               "still running after its stop grace: killing");
  kill(-p->pid, SIGKILL);
}

static int process_stop(jitsu_vm *vm, jitsu_stop_mode mode, uint64_t grace_ms) {
  proc *p = jitsu_vm_data(vm);
  if (p->job != NULL) { /* starting: stopped once the start is done */
    if (!p->stop_asked || mode == JITSU_STOP_DESTROY)
      p->stop_mode = mode;
    p->stop_grace_ms = grace_ms;
    p->stop_asked = true;
    return 0;
  }
  if (p->pid <= 0)
    return -ESRCH;
  p->stopping = true;
  uv_timer_stop(p->timer);
  if (mode == JITSU_STOP_DESTROY) {
    if (kill(-p->pid, SIGKILL) < 0 && errno != ESRCH)
      return -errno;
    return 0;
  }
  if (kill(-p->pid, SIGTERM) < 0 && errno != ESRCH)
    return -errno;
  kill(-p->pid, SIGCONT); /* a suspended guest must run to hear it */
  uv_timer_start(p->timer, grace_expired, grace_ms, 0);
  return 0;
}

/* Check every millisecond that the guest reached the stopped state (or
 * left it), as kill() only queues the signal. */
static void confirm_tick(uv_timer_t *t) {
  proc *p = t->data;
  if (p == NULL)
    return;
  bool suspending = jitsu_vm_state(p->vm) == JITSU_STATE_SUSPENDING;
  char st = '?';
  if (jitsu__proc_stat(p->pid, NULL, &st) < 0)
    return; /* gone: the exit event follows */
  bool stopped = st == 'T' || st == 't';
  if (stopped == suspending) {
    uv_timer_stop(t);
    if (suspending)
      jitsu_backend_suspended(p->vm, 0);
    else
      jitsu_backend_resumed(p->vm, 0);
    return;
  }
  if (++p->checks >= CONFIRM_TRIES) {
    uv_timer_stop(t);
    jitsu_vm_set_reason(p->vm, "state '%c' after %d ms", st, CONFIRM_TRIES);
    if (suspending)
      jitsu_backend_suspended(p->vm, -ETIMEDOUT);
    else
      jitsu_backend_resumed(p->vm, -ETIMEDOUT);
  }
}

static int signal_and_confirm(jitsu_vm *vm, int sig) {
  proc *p = jitsu_vm_data(vm);
  if (p->pid <= 0)
    return -ESRCH;
  if (kill(-p->pid, sig) < 0)
    return -errno;
  p->checks = 0;
  uv_timer_start(p->timer, confirm_tick, 0, CONFIRM_EVERY_MS);
  return 0;
}

static int process_suspend(jitsu_vm *vm) {
  return signal_and_confirm(vm, SIGSTOP);
}

static int process_resume(jitsu_vm *vm) {
  return signal_and_confirm(vm, SIGCONT);
}

static int process_adopt(jitsu_vm *vm, jitsu_state *state) {
  proc *p = jitsu_vm_data(vm);
  if (process_record_adopt(p) <= 0)
    return 0;
  if (watch_exit(p) < 0) {
    instance_drop(p);
    return 0;
  }
  char st = '?';
  jitsu__proc_stat(p->pid, NULL, &st);
  *state = (st == 'T' || st == 't') ? JITSU_STATE_SUSPENDED : JITSU_STATE_READY;
  return 1;
}

static int process_attach(jitsu_vm *vm, jitsu_error *err) {
  proc *p = jitsu_vm_data(vm);
  jitsu_ctx *ctx = jitsu_vm_ctx(vm);
  bool live = p->pid > 0; /* adopted: the guest holds its sockets */
  if (p->n_socks == 0)
    return 0;
  p->rearm = calloc(1, sizeof(*p->rearm));
  p->activity = calloc(1, sizeof(*p->activity));
  if (p->rearm == NULL || p->activity == NULL) {
    free(p->rearm), free(p->activity);
    p->rearm = p->activity = NULL;
    return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  }
  uv_timer_init(jitsu_ctx_loop(ctx), p->rearm);
  p->rearm->data = p;
  uv_timer_init(jitsu_ctx_loop(ctx), p->activity);
  p->activity->data = p;
  for (size_t i = 0; i < p->n_socks; i++) {
    psock *s = &p->socks[i];
    s->poll = calloc(1, sizeof(*s->poll));
    if (s->poll == NULL)
      return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
    int r = jitsu_trigger_add(ctx, "socket", s->key, vm);
    if (r < 0)
      return jitsu_error_set(err, r, "socket", "%s", jitsu_ctx_last_error(ctx));
    if (live) {
      /* The adopted guest holds its sockets: share them, so that the
       * trigger works at once (a connection resumes it when suspended),
       * with no gap when it exits. Else they are bound at its exit. */
      r = process_socket_take(s, p->pidfd, 3 + (int)i);
      if (r < 0) {
        jitsu_vm_log(vm, JITSU_LOG_INFO,
                     "%s stays with the adopted guest until it exits (%s)",
                     s->key, strerror(-r));
        continue;
      }
    } else if ((r = process_socket_bind(s)) < 0) {
      return jitsu_error_set(err, r, "socket", "cannot bind %s: %s", s->key,
                             strerror(-r));
    }
    r = uv_poll_init(jitsu_ctx_loop(ctx), s->poll, s->fd);
    if (r < 0)
      return jitsu_error_set(err, r, "socket", "cannot watch %s: %s", s->key,
                             uv_strerror(r));
    s->poll->data = s;
  }
  process_sockets_arm(p, jitsu_vm_state(vm));
  return 0;
}

static void process_state_changed(jitsu_vm *vm, jitsu_state old_state,
                                  jitsu_state new_state) {
  (void)old_state;
  proc *p = jitsu_vm_data(vm);
  if (p->rearm != NULL)
    process_sockets_arm(p, new_state);
}

static int process_busy(jitsu_vm *vm) {
  proc *p = jitsu_vm_data(vm);
  return p->n_socks > 0 ? process_sockets_busy(p) : 0;
}

static int process_owns_pid(jitsu_vm *vm, pid_t pid) {
  proc *p = jitsu_vm_data(vm);
  return p->pid > 0 && (pid == p->pid || getpgid(pid) == p->pid);
}

static void process_describe(jitsu_vm *vm, char *buf, size_t size) {
  proc *p = jitsu_vm_data(vm);
  if (p->pid > 0)
    snprintf(buf, size, "pid %d", (int)p->pid);
  else
    snprintf(buf, size, "%s", "");
}

const jitsu_backend_ops jitsu_backend_process = {
    .version = JITSU_BACKEND_OPS_VERSION,
    .name = "process",
    .keys = process_keys,
    .n_keys = JITSU__ARRAY_SIZE(process_keys),
    .configure = process_configure,
    .release = process_release,
    .attach = process_attach,
    .adopt = process_adopt,
    .start = process_start,
    .stop = process_stop,
    .suspend = process_suspend,
    .resume = process_resume,
    .state_changed = process_state_changed,
    .owns_pid = process_owns_pid,
    .describe = process_describe,
    .busy = process_busy,
};
