/* The context: loop binding, logging, deferred completions, backends. */
#include "channel_int.h"
#include "internal.h"

#include <dirent.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

int jitsu_ctx_options_init(jitsu_ctx_options *opts, unsigned version) {
  if (version != JITSU_CTX_OPTIONS_VERSION)
    return -EINVAL;
  jitsu_ctx_options init = JITSU_CTX_OPTIONS_INIT;
  *opts = init;
  return 0;
}

void jitsu_default_state_dir(char *buf, size_t size) {
  const char *xdg = getenv("XDG_RUNTIME_DIR");
  if (geteuid() == 0)
    snprintf(buf, size, "/run/jitsu");
  else if (xdg != NULL && xdg[0] == '/')
    snprintf(buf, size, "%s/jitsu", xdg);
  else
    snprintf(buf, size, "/tmp/jitsu-%u", (unsigned)geteuid());
}

static char *default_state_dir(void) {
  char buf[512];
  jitsu_default_state_dir(buf, sizeof(buf));
  return jitsu__strdup(buf);
}

int jitsu_ctx_new(uv_loop_t *loop, const jitsu_ctx_options *opts,
                  jitsu_ctx **out) {
  jitsu_ctx_options defaults = JITSU_CTX_OPTIONS_INIT;
  if (loop == NULL || out == NULL)
    return -EINVAL;
  if (opts == NULL)
    opts = &defaults;
  if (opts->version != JITSU_CTX_OPTIONS_VERSION)
    return -EINVAL;
  jitsu_ctx *ctx = calloc(1, sizeof(*ctx));
  if (ctx == NULL)
    return -ENOMEM;
  ctx->loop = loop;
  ctx->max_live = opts->max_live ? opts->max_live : JITSU_DEFAULT_MAX_LIVE;
  ctx->max_starting =
      opts->max_starting ? opts->max_starting : JITSU_DEFAULT_MAX_STARTING;
  ctx->max_waiters =
      opts->max_waiters ? opts->max_waiters : JITSU_DEFAULT_MAX_WAITERS;
  ctx->log_max = JITSU_LOG_INFO;
  ctx->state_dir =
      opts->state_dir ? jitsu__strdup(opts->state_dir) : default_state_dir();
  ctx->deferred_tail = &ctx->deferred;
  ctx->lock_fd = -1;
  ctx->notify_tag = jitsu__random32();
  jitsu__table_init(&ctx->vms, jitsu__random32());
  jitsu__table_init(&ctx->triggers, jitsu__random32());
  jitsu__list_init(&ctx->all_vms);
  jitsu__list_init(&ctx->live_vms);
  jitsu__list_init(&ctx->start_queue);
  if (ctx->state_dir == NULL)
    goto error;
  uv_idle_init(loop, &ctx->deferred_idle);
  ctx->deferred_idle.data = ctx;
  ctx->deferred_idle_open = true;
  for (size_t i = 0; jitsu__builtin_backends[i] != NULL; i++)
    if (jitsu_backend_register(ctx, jitsu__builtin_backends[i]) < 0)
      goto error;
  *out = ctx;
  return 0;
error:
  jitsu_ctx_free(ctx);
  return -ENOMEM;
}

/* Run the oldest queued completion. */
static void deferred_run_one(jitsu_ctx *ctx) {
  jitsu__waiter *w = ctx->deferred;
  ctx->deferred = w->next;
  if (ctx->deferred == NULL)
    ctx->deferred_tail = &ctx->deferred;
  ctx->n_deferred--;
  if (w->cb != NULL)
    w->cb(w->vm, w->status, w->arg);
  if (w->vm != NULL)
    jitsu__vm_unref(w->vm);
  free(w);
}

/* Everything the context owns; every vm is gone by now. */
static void ctx_destroy(jitsu_ctx *ctx) {
  jitsu__table_free(&ctx->vms);
  jitsu__table_free(&ctx->triggers);
  while (ctx->keys != NULL) {
    jitsu__section_keys *k = ctx->keys;
    ctx->keys = k->next;
    free(k);
  }
  jitsu__sub_clear(&ctx->vm_subs);
  jitsu__sub_clear(&ctx->reload_subs);
  free(ctx->config_path);
  while (ctx->stats_sources != NULL) {
    jitsu__stats_src *src = ctx->stats_sources;
    ctx->stats_sources = src->next;
    free(src->group);
    free(src);
  }
  jitsu__sub_clear(&ctx->state_subs);
  free(ctx->globals);
  free(ctx->global_lines);
  free(ctx->backends);
  free(ctx->backend_names);
  free(ctx->state_dir);
  free(ctx);
}

/* The last close of a context: completions still queued run now (those of
 * vms that went away with -ECANCELED), then the memory goes. */
static void ctx_closed(uv_handle_t *h) {
  jitsu_ctx *ctx = h->data;
  while (ctx->deferred != NULL)
    deferred_run_one(ctx);
  ctx_destroy(ctx);
}

void jitsu_ctx_free(jitsu_ctx *ctx) {
  if (ctx == NULL || ctx->closing)
    return;
  ctx->closing = true;
  jitsu__idle_free(ctx);
  jitsu__control_free(ctx);
  jitsu__rendezvous_free(ctx);
  /* Undefining fails every waiting summon, stop and suspend with
   * -ECANCELED; a live guest is left for a later ctx. */
  while (ctx->all_vms.next != &ctx->all_vms) {
    jitsu_vm *vm = JITSU__CONTAINER(ctx->all_vms.next, jitsu_vm, all);
    jitsu__vm_forget(vm);
  }
  jitsu__state_dir_unlock(ctx);
  if (ctx->deferred_idle_open) {
    uv_close((uv_handle_t *)&ctx->deferred_idle, ctx_closed);
    return;
  }
  while (ctx->deferred != NULL)
    deferred_run_one(ctx);
  ctx_destroy(ctx);
}

uv_loop_t *jitsu_ctx_loop(jitsu_ctx *ctx) {
  return ctx->loop;
}

const char *jitsu_ctx_state_dir(jitsu_ctx *ctx) {
  return ctx->state_dir;
}

void jitsu_ctx_set_logger(jitsu_ctx *ctx, jitsu_log_fn fn, void *arg,
                          jitsu_log_level max_level) {
  ctx->log_fn = fn;
  ctx->log_arg = arg;
  ctx->log_max = max_level;
}

const char *jitsu_ctx_last_error(jitsu_ctx *ctx) {
  return ctx->last_error;
}

void jitsu_ctx_limits(jitsu_ctx *ctx, unsigned *max_live,
                      unsigned *max_starting, unsigned *max_waiters) {
  if (max_live)
    *max_live = ctx->max_live;
  if (max_starting)
    *max_starting = ctx->max_starting;
  if (max_waiters)
    *max_waiters = ctx->max_waiters;
}

void jitsu_ctx_counts(jitsu_ctx *ctx, size_t *defined, size_t *live,
                      size_t *starting) {
  if (defined)
    *defined = ctx->vms.count;
  if (live)
    *live = ctx->n_live;
  if (starting)
    *starting = ctx->n_starting;
}

void jitsu_ctx_refusals(jitsu_ctx *ctx, uint64_t *max_live,
                        uint64_t *max_waiters) {
  if (max_live)
    *max_live = ctx->refused[JITSU__LIMIT_LIVE];
  if (max_waiters)
    *max_waiters = ctx->refused[JITSU__LIMIT_WAITERS];
}

static void log_va(jitsu_ctx *ctx, jitsu_log_level level, const char *fmt,
                   va_list ap) {
  if (ctx->log_fn == NULL || level > ctx->log_max)
    return;
  char line[1024];
  vsnprintf(line, sizeof(line), fmt, ap);
  ctx->log_fn(level, line, ctx->log_arg);
}

void jitsu__log(jitsu_ctx *ctx, jitsu_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_va(ctx, level, fmt, ap);
  va_end(ap);
}

void jitsu_vm_log(jitsu_vm *vm, jitsu_log_level level, const char *fmt, ...) {
  char line[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  jitsu__log(vm->ctx, level, "vm %s: %s", vm->name, line);
}

int jitsu__fail(jitsu_ctx *ctx, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->last_error, sizeof(ctx->last_error), fmt, ap);
  va_end(ap);
  return err;
}

static void deferred_run(uv_idle_t *idle) {
  jitsu_ctx *ctx = idle->data;
  /* The completions queued now: those queued by these callbacks run on
   * the next turn of the loop. Each is taken from the live queue, so a
   * callback may undefine vms or free the context meanwhile. */
  for (size_t n = ctx->n_deferred; n > 0 && ctx->deferred != NULL; n--)
    deferred_run_one(ctx);
  if (ctx->deferred == NULL && !ctx->closing)
    uv_idle_stop(idle);
}

static void defer_waiter(jitsu_ctx *ctx, jitsu__waiter *w) {
  w->next = NULL;
  *ctx->deferred_tail = w;
  ctx->deferred_tail = &w->next;
  ctx->n_deferred++;
  if (!ctx->closing)
    uv_idle_start(&ctx->deferred_idle, deferred_run);
}

int jitsu__defer(jitsu_ctx *ctx, jitsu_vm *vm, jitsu_vm_cb cb, void *arg,
                 int status) {
  jitsu__waiter *w = malloc(sizeof(*w));
  if (w == NULL)
    return -ENOMEM;
  w->vm = vm;
  w->cb = cb;
  w->arg = arg;
  w->status = status;
  if (vm != NULL)
    jitsu__vm_ref(vm);
  defer_waiter(ctx, w);
  return 0;
}

void jitsu__defer_list(jitsu_ctx *ctx, jitsu__waiter *list, int status) {
  while (list != NULL) {
    jitsu__waiter *w = list;
    list = w->next;
    w->status = status;
    defer_waiter(ctx, w);
  }
}

int jitsu_backend_register(jitsu_ctx *ctx, const jitsu_backend_ops *ops) {
  if (ops == NULL || ops->version != JITSU_BACKEND_OPS_VERSION ||
      ops->name == NULL || ops->start == NULL || ops->stop == NULL)
    return -EINVAL;
  for (size_t i = 0; i < ctx->n_backends; i++)
    if (strcmp(ctx->backends[i]->name, ops->name) == 0)
      return -EEXIST;
  const jitsu_backend_ops **b =
      realloc(ctx->backends, (ctx->n_backends + 1) * sizeof(*b));
  if (b == NULL)
    return -ENOMEM;
  ctx->backends = b;
  const char **names =
      realloc(ctx->backend_names, (ctx->n_backends + 2) * sizeof(*names));
  if (names == NULL)
    return -ENOMEM;
  ctx->backend_names = names;
  ctx->backends[ctx->n_backends] = ops;
  names[ctx->n_backends] = ops->name;
  names[ctx->n_backends + 1] = NULL;
  ctx->n_backends++;
  return 0;
}

const char *const *jitsu_backend_names(jitsu_ctx *ctx) {
  return ctx->backend_names;
}

int jitsu_ctx_on_state(jitsu_ctx *ctx, jitsu_state_fn fn, void *arg) {
  return jitsu__sub_add(&ctx->state_subs, (jitsu__any_fn)fn, arg);
}

int jitsu_ctx_off_state(jitsu_ctx *ctx, jitsu_state_fn fn, void *arg) {
  return jitsu__sub_remove(&ctx->state_subs, (jitsu__any_fn)fn, arg);
}

static int mkdir_p(char *path, mode_t mode) {
  for (char *p = path + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    int r = mkdir(path, mode);
    *p = '/';
    if (r < 0 && errno != EEXIST)
      return -errno;
  }
  if (mkdir(path, mode) < 0 && errno != EEXIST)
    return -errno;
  return 0;
}

/* The state directory holds records that name processes to signal and
 * the control socket: it must be ours. Not a symlink, owned by the
 * effective uid, writable by nobody else; the /tmp fallback (a directory
 * anyone could have made first) not even readable by others. */
static int check_state_dir(jitsu_ctx *ctx) {
  struct stat st;
  char fallback[64];
  snprintf(fallback, sizeof(fallback), "/tmp/jitsu-%u", (unsigned)geteuid());
  if (lstat(ctx->state_dir, &st) < 0)
    return jitsu__fail(ctx, -errno, "state directory %s: %s", ctx->state_dir,
                       strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return jitsu__fail(ctx, -ENOTDIR,
                       "state directory %s: not a directory (a symlink is "
                       "not accepted)",
                       ctx->state_dir);
  if (st.st_uid != geteuid())
    return jitsu__fail(ctx, -EPERM,
                       "state directory %s: owned by uid %u, not by us "
                       "(uid %u)",
                       ctx->state_dir, (unsigned)st.st_uid,
                       (unsigned)geteuid());
  mode_t bad = strcmp(ctx->state_dir, fallback) == 0 ? 077 : 022;
  if (st.st_mode & bad)
    return jitsu__fail(ctx, -EPERM,
                       "state directory %s: mode %04o lets others %s it "
                       "(%s)",
                       ctx->state_dir, (unsigned)(st.st_mode & 07777),
                       bad == 077 ? "into" : "write to",
                       bad == 077 ? "chmod 700" : "chmod go-w");
  return 0;
}

/* Take the state directory for this context: one controller per
 * directory, or two would adopt the same guests. Between processes: a
 * POSIX record lock on STATE/lock, which the kernel drops when we exit,
 * however we exit, and which, unlike flock(2), a child does not hold
 * through the descriptor it inherits for the moment before its exec (a
 * controller killed while it starts a guest would keep its successor
 * out). Such locks do not exclude within one process, and any close of
 * the file would drop them: contexts of this process keep a list of the
 * directories they hold, and open the file once. */
typedef struct held_dir {
  struct held_dir *next;
  dev_t dev;
  ino_t ino;
} held_dir;
static held_dir *held_dirs;
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;

static bool hold_dir(const struct stat *st, bool take) {
  bool ok = true;
  pthread_mutex_lock(&held_lock);
  held_dir **h = &held_dirs;
  while (*h != NULL && !((*h)->dev == st->st_dev && (*h)->ino == st->st_ino))
    h = &(*h)->next;
  if (take && *h != NULL) {
    ok = false;
  } else if (take) {
    held_dir *n = malloc(sizeof(*n));
    if (n != NULL) {
      n->dev = st->st_dev, n->ino = st->st_ino, n->next = held_dirs;
      held_dirs = n;
    }
    ok = n != NULL;
  } else if (*h != NULL) {
    held_dir *gone = *h;
    *h = gone->next;
    free(gone);
  }
  pthread_mutex_unlock(&held_lock);
  return ok;
}

static int state_dir_lock(jitsu_ctx *ctx) {
  char path[600];
  if (ctx->lock_fd >= 0)
    return 0;
  int r = check_state_dir(ctx);
  if (r < 0)
    return r;
  struct stat st;
  if (stat(ctx->state_dir, &st) < 0)
    return jitsu__fail(ctx, -errno, "state directory %s: %s", ctx->state_dir,
                       strerror(errno));
  if (!hold_dir(&st, true))
    return jitsu__fail(ctx, -EBUSY,
                       "state directory %s is in use by another controller "
                       "(pid %d), by another context of this process",
                       ctx->state_dir, (int)getpid());
  snprintf(path, sizeof(path), "%s/lock", ctx->state_dir);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    r = jitsu__fail(ctx, -errno, "cannot open %s: %s", path, strerror(errno));
    hold_dir(&st, false);
    return r;
  }
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
  if (fcntl(fd, F_SETLK, &fl) < 0) {
    int e = errno;
    struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    bool known = fcntl(fd, F_GETLK, &who) == 0 && who.l_type != F_UNLCK;
    close(fd);
    hold_dir(&st, false);
    if (e == EACCES || e == EAGAIN) {
      if (known)
        return jitsu__fail(ctx, -EBUSY,
                           "state directory %s is in use by another "
                           "controller (pid %d)",
                           ctx->state_dir, (int)who.l_pid);
      return jitsu__fail(ctx, -EBUSY,
                         "state directory %s is in use by another controller",
                         ctx->state_dir);
    }
    return jitsu__fail(ctx, -e, "cannot lock %s: %s", path, strerror(e));
  }
  ctx->lock_fd = fd;
  ctx->lock_dev = st.st_dev;
  ctx->lock_ino = st.st_ino;
  return 0;
}

/* The state directory's subdirectories that hold nothing (made on demand
 * by jitsu__state_dir_ensure) go, while the lock is still ours: a
 * controller that failed to start leaves no empty process/ behind. */
static void remove_empty_subdirs(jitsu_ctx *ctx) {
  DIR *d = opendir(ctx->state_dir);
  if (d == NULL)
    return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_type != DT_DIR || strcmp(e->d_name, ".") == 0 ||
        strcmp(e->d_name, "..") == 0)
      continue;
    (void)unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR); /* if empty */
  }
  closedir(d);
}

void jitsu__state_dir_unlock(jitsu_ctx *ctx) {
  if (ctx->lock_fd >= 0)
    remove_empty_subdirs(ctx);
  if (ctx->lock_fd >= 0) {
    close(ctx->lock_fd); /* the file stays: removing it would race */
    struct stat st = {.st_dev = ctx->lock_dev, .st_ino = ctx->lock_ino};
    hold_dir(&st, false);
  }
  ctx->lock_fd = -1;
}

int jitsu__state_dir_ensure(jitsu_ctx *ctx, const char *sub, char *path,
                            size_t size) {
  /* Held already: one mkdir for the subdirectory (a start calls this
   * twice, on the loop), the whole path only if the directory went. */
  if (ctx->lock_fd >= 0 && sub != NULL) {
    int m = snprintf(path, size, "%s/%s", ctx->state_dir, sub);
    if (m > 0 && (size_t)m < size &&
        (mkdir(path, 0700) == 0 || errno == EEXIST))
      return 0;
  }
  int n = snprintf(path, size, "%s", ctx->state_dir);
  if (n < 0 || (size_t)n >= size)
    return jitsu__fail(ctx, -ENAMETOOLONG, "state directory path too long");
  int r = mkdir_p(path, 0700);
  if (r < 0)
    return jitsu__fail(ctx, r, "cannot create state directory %s: %s", path,
                       strerror(-r));
  if ((r = state_dir_lock(ctx)) < 0 || sub == NULL)
    return r;
  n = snprintf(path, size, "%s/%s", ctx->state_dir, sub);
  if (n < 0 || (size_t)n >= size)
    return jitsu__fail(ctx, -ENAMETOOLONG, "state directory path too long");
  if (mkdir(path, 0700) < 0 && errno != EEXIST)
    return jitsu__fail(ctx, -errno, "cannot create %s: %s", path,
                       strerror(errno));
  return 0;
}
