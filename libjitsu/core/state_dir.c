/* The state directory: where records of guests and control sockets live;
 * one controller holds it at a time. */
#include "internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void jitsu_default_state_dir(char *buf, size_t size) {
  const char *xdg = getenv("XDG_RUNTIME_DIR");
  if (geteuid() == 0)
    snprintf(buf, size, "/run/jitsu");
  else if (xdg != NULL && xdg[0] == '/')
    snprintf(buf, size, "%s/jitsu", xdg);
  else
    snprintf(buf, size, "/tmp/jitsu-%u", (unsigned)geteuid());
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

int jitsu_ctx_state_subdir(jitsu_ctx *ctx, const char *sub, char *path,
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
