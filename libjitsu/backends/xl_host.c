/*
 * The xl backend's connection to Xen: one libxenlight context and one
 * XenStore handle per jitsu ctx, with libxl's file descriptors, timeouts
 * and child processes served by the ctx's libuv loop, so that no libxl
 * operation blocks it.
 */
#include "xl.h"

#include "chan_int.h"
#include "conduit.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <xentoollog.h>

static pthread_mutex_t hosts_lock = PTHREAD_MUTEX_INITIALIZER;
static jitsu_list hosts = {&hosts, &hosts};

/* ---- libxl's log, into the ctx's log ------------------------------------
 */

typedef struct xllogger {
  xentoollog_logger vtable;
  xlhost *h;
} xllogger;

static void log_vmessage(xentoollog_logger *lg, xentoollog_level level,
                         int errnoval, const char *context, const char *fmt,
                         va_list al) {
  xlhost *h = ((xllogger *)lg)->h;
  if (h->ctx == NULL)
    return; /* the jitsu ctx is gone; operations are finishing */
  jitsu_log_level as = level >= XTL_ERROR  ? JITSU_LOG_ERROR
                       : level >= XTL_WARN ? JITSU_LOG_WARNING
                                           : JITSU_LOG_DEBUG;
  char msg[512];
  vsnprintf(msg, sizeof(msg), fmt, al);
  size_t n = strlen(msg);
  if (errnoval >= 0 && n < sizeof(msg) - 4)
    snprintf(msg + n, sizeof(msg) - n, ": %s", strerror(errnoval));
  /* The first error of an operation names the cause (e.g. "failed to
   * allocate 0x1000000 pages"); later ones only say that it failed. */
  if (level >= XTL_ERROR && h->error[0] == '\0')
    snprintf(h->error, sizeof(h->error), "%s", msg);
  jitsu_ctx_log(h->ctx, as, "%s: %s", context ? context : "libxl", msg);
}

static void log_progress(xentoollog_logger *lg, const char *context,
                         const char *doing, int percent, unsigned long done,
                         unsigned long total) {}

static void log_destroy(xentoollog_logger *lg) {}

void xl_host_clear_error(xlhost *h) {
  h->error[0] = '\0';
}

/* ---- fds and timeouts on the loop -------------------------------------- */

/* libxl may register one fd more than once: one uv_poll per fd carries
 * them all. */
typedef struct xlfd xlfd;
typedef struct xlreg {
  struct xlreg *next;
  xlfd *owner;
  short events;
  bool dead; /* deregistered during a dispatch */
  void *for_libxl;
} xlreg;

/* A regular file cannot be polled by epoll (libuv refuses it) but poll()
 * says it is always ready: an idle handle delivers that while wanted. */
struct xlfd {
  jitsu_list link;
  xlhost *h;
  int fd;
  uv_poll_t *poll; /* or, for a regular file: */
  uv_idle_t *idle;
  short idle_events;
  xlreg *regs;
  int dispatching;
};

static int to_uv(short events) {
  int e = 0;
  if (events & POLLIN)
    e |= UV_READABLE;
  if (events & POLLOUT)
    e |= UV_WRITABLE;
  if (events & POLLPRI)
    e |= UV_PRIORITIZED;
  return e;
}

static void fd_close_if_unused(xlfd *f) {
  if (f->regs != NULL || f->dispatching)
    return;
  jitsu_list_remove(&f->link);
  uv_handle_t *hd = f->poll ? (uv_handle_t *)f->poll : (uv_handle_t *)f->idle;
  hd->data = NULL;
  uv_close(hd, jitsu__free_handle);
  free(f);
}

static void fd_sweep(xlfd *f) {
  for (xlreg **p = &f->regs; *p;) {
    if ((*p)->dead) {
      xlreg *dead = *p;
      *p = dead->next;
      free(dead);
    } else {
      p = &(*p)->next;
    }
  }
}

static void fd_ready(uv_poll_t *p, int status, int events);
static void fd_always_ready(uv_idle_t *idle);

static int fd_update(xlfd *f) {
  short all = 0;
  for (xlreg *r = f->regs; r; r = r->next)
    if (!r->dead)
      all |= r->events;
  if (f->idle != NULL) {
    f->idle_events = all & (POLLIN | POLLOUT);
    return f->idle_events ? uv_idle_start(f->idle, fd_always_ready)
                          : uv_idle_stop(f->idle);
  }
  int e = to_uv(all);
  if (e == 0)
    return uv_poll_stop(f->poll);
  return uv_poll_start(f->poll, e | UV_DISCONNECT, fd_ready) == 0 ? 0 : -1;
}

static void fd_dispatch(xlfd *f, short revents) {
  f->dispatching++;
  for (xlreg *r = f->regs; r; r = r->next) {
    short mine = revents & (r->events | POLLERR | POLLHUP);
    if (!r->dead && mine)
      libxl_osevent_occurred_fd(f->h->lx, r->for_libxl, f->fd, r->events, mine);
  }
  f->dispatching--;
  if (f->dispatching == 0) {
    fd_sweep(f);
    if (f->regs != NULL)
      fd_update(f);
    fd_close_if_unused(f);
  }
}

static void fd_always_ready(uv_idle_t *idle) {
  xlfd *f = idle->data;
  if (f != NULL)
    fd_dispatch(f, f->idle_events);
}

static void fd_ready(uv_poll_t *p, int status, int events) {
  xlfd *f = p->data;
  if (f == NULL)
    return;
  short revents = 0;
  if (status < 0)
    revents |= POLLERR;
  if (events & UV_READABLE)
    revents |= POLLIN;
  if (events & UV_WRITABLE)
    revents |= POLLOUT;
  if (events & UV_PRIORITIZED)
    revents |= POLLPRI;
  if (events & UV_DISCONNECT)
    revents |= POLLHUP;
  fd_dispatch(f, revents);
}

/* A uv_poll for (fd), or for a regular file an idle handle, in (f). */
static int fd_watch(xlhost *h, xlfd *f, int fd) {
  struct stat st;
  if (fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
    f->idle = malloc(sizeof(*f->idle));
    if (f->idle == NULL || uv_idle_init(h->loop, f->idle) != 0) {
      free(f->idle);
      f->idle = NULL;
      return -1;
    }
    f->idle->data = f;
    return 0;
  }
  /* uv_poll_init makes the fd non-blocking; libxl reads some of its fds
   * (the save helper's pipe) expecting them to block as it left them. */
  int flags = fcntl(fd, F_GETFL);
  f->poll = malloc(sizeof(*f->poll));
  if (f->poll == NULL || uv_poll_init(h->loop, f->poll, fd) != 0) {
    free(f->poll);
    f->poll = NULL;
    return -1;
  }
  if (flags >= 0)
    fcntl(fd, F_SETFL, flags);
  f->poll->data = f;
  return 0;
}

static int fd_register(void *user, int fd, void **reg_out, short events,
                       void *for_libxl) {
  xlhost *h = user;
  xlfd *f = NULL;
  for (jitsu_list *l = h->fds.next; l != &h->fds; l = l->next) {
    xlfd *c = JITSU_CONTAINER_OF(l, xlfd, link);
    if (c->fd == fd) {
      f = c;
      break;
    }
  }
  bool fresh = f == NULL;
  if (fresh) {
    f = calloc(1, sizeof(*f));
    if (f == NULL || fd_watch(h, f, fd) < 0) {
      free(f);
      return ERROR_OSEVENT_REG_FAIL;
    }
    f->h = h;
    f->fd = fd;
    jitsu_list_append(&h->fds, &f->link);
  }
  xlreg *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    fd_close_if_unused(f);
    return ERROR_OSEVENT_REG_FAIL;
  }
  r->owner = f;
  r->events = events;
  r->for_libxl = for_libxl;
  r->next = f->regs;
  f->regs = r;
  if (fd_update(f) < 0) {
    f->regs = r->next;
    free(r);
    fd_close_if_unused(f);
    return ERROR_OSEVENT_REG_FAIL;
  }
  *reg_out = r;
  return 0;
}

static int fd_modify(void *user, int fd, void **reg, short events) {
  xlreg *r = *reg;
  short old = r->events;
  r->events = events;
  if (fd_update(r->owner) < 0) {
    r->events = old;
    return ERROR_OSEVENT_REG_FAIL;
  }
  return 0;
}

static void fd_deregister(void *user, int fd, void *reg) {
  xlreg *r = reg;
  xlfd *f = r->owner;
  r->dead = true;
  if (f->dispatching)
    return; /* swept when the dispatch ends */
  fd_sweep(f);
  if (f->regs != NULL)
    fd_update(f);
  fd_close_if_unused(f);
}

typedef struct xlto {
  jitsu_list link;
  xlhost *h;
  uv_timer_t timer;
  void *for_libxl;
} xlto;

static uint64_t ms_until(struct timeval abs) {
  struct timeval now;
  gettimeofday(&now, NULL);
  int64_t ms = (int64_t)(abs.tv_sec - now.tv_sec) * 1000 +
               (abs.tv_usec - now.tv_usec) / 1000;
  return ms > 0 ? (uint64_t)ms : 0;
}

static void timeout_closed(uv_handle_t *t) {
  free(JITSU_CONTAINER_OF(t, xlto, timer));
}

static void timeout_fired(uv_timer_t *t) {
  xlto *to = t->data;
  xlhost *h = to->h;
  void *for_libxl = to->for_libxl;
  /* libxl forgets a timeout once it has occurred. */
  jitsu_list_remove(&to->link);
  uv_close((uv_handle_t *)&to->timer, timeout_closed);
  libxl_osevent_occurred_timeout(h->lx, for_libxl);
}

static int timeout_register(void *user, void **reg_out, struct timeval abs,
                            void *for_libxl) {
  xlhost *h = user;
  xlto *to = calloc(1, sizeof(*to));
  if (to == NULL)
    return ERROR_OSEVENT_REG_FAIL;
  uv_timer_init(h->loop, &to->timer);
  to->timer.data = to;
  to->h = h;
  to->for_libxl = for_libxl;
  uv_timer_start(&to->timer, timeout_fired, ms_until(abs), 0);
  jitsu_list_append(&h->timeouts, &to->link);
  *reg_out = to;
  return 0;
}

static int timeout_modify(void *user, void **reg, struct timeval abs) {
  xlto *to = *reg;
  uv_timer_start(&to->timer, timeout_fired, ms_until(abs), 0);
  return 0;
}

static void timeout_deregister(void *user, void *reg) {}

static const libxl_osevent_hooks osevent_hooks = {
    fd_register,      fd_modify,      fd_deregister,
    timeout_register, timeout_modify, timeout_deregister,
};

/* ---- children, domain events, XenStore watches ------------------------- */

static const libxl_childproc_hooks child_hooks = {libxl_sigchld_owner_mainloop,
                                                  NULL, NULL};

static void sigchld(uv_signal_t *s, int signum) {
  xlhost *h = s->data;
  libxl_childproc_sigchld_occurred(h->lx);
}

static xvm *vm_by_domid(xlhost *h, uint32_t domid) {
  for (jitsu_list *l = h->vms.next; l != &h->vms; l = l->next) {
    xvm *x = JITSU_CONTAINER_OF(l, xvm, link);
    if (x->live && x->domid == domid)
      return x;
  }
  return NULL;
}

static void event_occurs(void *user, libxl_event *ev) {
  xlhost *h = user;
  xvm *x = vm_by_domid(h, ev->domid);
  if (x != NULL)
    xl_domain_event(x, ev);
  libxl_event_free(h->lx, ev);
}

static void event_disaster(void *user, libxl_event_type type, const char *msg,
                           int errnoval) {
  xlhost *h = user;
  if (h->ctx != NULL)
    jitsu_ctx_log(h->ctx, JITSU_LOG_ERROR,
                  "xl: libxl reports a disaster in its event handling: %s (%s)",
                  msg, strerror(errnoval));
}

static const libxl_event_hooks event_hooks = {
    .event_occurs_mask = ~0ull,
    .event_occurs = event_occurs,
    .disaster = event_disaster,
};

/* ---- channels: names, grants and summons in /conduit (conduit.h) ------ */

#define CONDUIT_TOKEN "@conduit"

/* The xl vm that declares "channel = (name)", or NULL. Only these are
 * summoned by a request, and only their names are made here. */
static jitsu_vm *channel_vm(xlhost *h, const char *name) {
  for (jitsu_list *l = h->vms.next; l != &h->vms; l = l->next) {
    xvm *x = JITSU_CONTAINER_OF(l, xvm, link);
    if (x->released)
      continue;
    const char *v;
    for (size_t i = 0; (v = jitsu_vm_param(x->vm, "channel", i)) != NULL; i++)
      if (strcmp(v, name) == 0)
        return x->vm;
  }
  return NULL;
}

typedef struct give {
  xlhost *h;
  int holder;
} give;

/* One request (or client directory): its owner keeps it, the holder (if
 * any) may read and remove it, nobody else. */
static bool give_one(const char *path, bool dir, void *arg) {
  give *g = arg;
  int owner = jitsu__xs_owner(g->h->xs, XBT_NULL, path);
  if (owner >= 0)
    jitsu__xs_perms(g->h->xs, XBT_NULL, path, (unsigned)owner, XS_PERM_NONE,
                    g->holder == owner ? -1 : g->holder,
                    XS_PERM_READ | XS_PERM_WRITE);
  return true;
}

/* Give the requests of (base) ("/conduit/NAME") to (holder) (read and
 * remove), or to nobody but dom0 (-1): the requests node and each pending
 * request, whose owners stay. */
static void requests_give(xlhost *h, const char *base, int holder) {
  char reqs[128];
  snprintf(reqs, sizeof(reqs), "%s/" CONDUIT_REQUESTS, base);
  jitsu__xs_perms(h->xs, XBT_NULL, reqs, 0, XS_PERM_WRITE, holder,
                  XS_PERM_READ | XS_PERM_WRITE);
  give g = {h, holder};
  jitsu__conduit_each(h->xs, reqs, give_one, &g);
}

void xl_conduit_declare(xlhost *h, jitsu_vm *vm) {
  const char *name;
  for (size_t i = 0; (name = jitsu_vm_param(vm, "channel", i)) != NULL; i++)
    if (jitsu__chan_name_ok(name) && !jitsu__conduit_declare(h->xs, name))
      jitsu_vm_log(vm, JITSU_LOG_WARNING,
                   "cannot make /conduit/%s in XenStore: %s", name,
                   strerror(errno));
}

void xl_conduit_grant(xlhost *h, jitsu_vm *vm, uint32_t domid) {
  const char *name;
  for (size_t i = 0; (name = jitsu_vm_param(vm, "channel", i)) != NULL; i++) {
    if (!jitsu__chan_name_ok(name) || !jitsu__conduit_declare(h->xs, name))
      continue;
    char base[96];
    snprintf(base, sizeof(base), "/conduit/%s", name);
    unsigned len;
    char *v = xs_read(h->xs, XBT_NULL, base, &len);
    bool dom0_holds = v != NULL && strcmp(v, "0") == 0;
    free(v);
    if (dom0_holds) {
      jitsu_vm_log(vm, JITSU_LOG_WARNING,
                   "channel %s is held by a listener in dom0: not handed to "
                   "domain %u",
                   name, domid);
      continue;
    }
    /* The domain may write the name now (others read it): it may
     * listen. An adopted domain has it already, and maybe listens. */
    bool has = jitsu__conduit_grantee(h->xs, XBT_NULL, base) == (int)domid;
    if (!has && (!xs_write(h->xs, XBT_NULL, base, "", 0) ||
                 !jitsu__xs_perms(h->xs, XBT_NULL, base, 0, XS_PERM_READ,
                                  (int)domid, XS_PERM_READ | XS_PERM_WRITE))) {
      jitsu_vm_log(vm, JITSU_LOG_WARNING,
                   "cannot hand channel %s to domain %u: %s", name, domid,
                   strerror(errno));
      continue;
    }
    requests_give(h, base, (int)domid);
  }
}

/* A node under /conduit changed that is not a request. A requests node
 * that was removed is made again; a client's directory of requests made
 * by another domain (to keep the client out of it) goes. */
static void conduit_tidy(xlhost *h, const char *path) {
  static const char reqs[] = "/" CONDUIT_REQUESTS;
  const char *r = strstr(path, reqs);
  if (strncmp(path, "/conduit/", 9) != 0 || r == NULL ||
      memchr(path + 9, '/', (size_t)(r - path - 9)) != NULL)
    return;
  char base[96];
  if (snprintf(base, sizeof(base), "%.*s", (int)(r - path), path) >=
      (int)sizeof(base))
    return;
  const char *rest = r + sizeof(reqs) - 1;
  unsigned len;
  if (*rest == '\0') {
    char *v = xs_read(h->xs, XBT_NULL, path, &len);
    if (v != NULL || errno != ENOENT) {
      free(v);
      return;
    }
    v = xs_read(h->xs, XBT_NULL, base, &len);
    if (v == NULL)
      return; /* the name went too */
    free(v);
    if (jitsu__conduit_requests(h->xs, base, 0, -1))
      requests_give(h, base, jitsu__conduit_grantee(h->xs, XBT_NULL, base));
    return;
  }
  if (*rest != '/' || rest[1] == '\0' || strchr(rest + 1, '/') != NULL)
    return;
  char *end;
  unsigned long id = strtoul(rest + 1, &end, 10);
  int owner = jitsu__xs_owner(h->xs, XBT_NULL, path);
  if (owner >= 0 && (*end != '\0' || (unsigned long)owner != id)) {
    if (h->ctx != NULL)
      jitsu_ctx_log(h->ctx, JITSU_LOG_WARNING,
                    "xl: domain %d made %s, which is not its own: removed",
                    owner, path);
    xs_rm(h->xs, XBT_NULL, path);
  }
}

/* A client asked for /conduit/NAME/requests/CLIENT/PORT: check that
 * CLIENT wrote it, and summon NAME's vm if it is not running (its
 * listener then serves the request). Any other change under /conduit: a
 * requests node that was removed is made again. */
static void conduit_request(xlhost *h, const char *path) {
  char name[JITSU_CHAN_NAME_MAX + 1], port[JITSU_CHAN_PORT_MAX + 1];
  unsigned client;
  if (jitsu__conduit_parse(path, name, sizeof(name), &client, port,
                           sizeof(port)) < 0) {
    conduit_tidy(h, path);
    return; /* not a request (a name's node, or junk) */
  }
  int owner = jitsu__xs_owner(h->xs, XBT_NULL, path);
  if (owner < 0)
    return; /* already served (or withdrawn) */
  if (owner != (int)client) {
    /* Written by another domain than the one it names: dropped, and
     * never served (listeners check the owner too). */
    if (h->ctx != NULL)
      jitsu_ctx_log(h->ctx, JITSU_LOG_WARNING,
                    "xl: domain %d wrote channel request %s as domain %u: "
                    "removed",
                    owner, path, client);
    xs_rm(h->xs, XBT_NULL, path);
    return;
  }
  jitsu_vm *vm = h->ctx ? channel_vm(h, name) : NULL;
  if (vm == NULL)
    return;
  jitsu_state st = jitsu_vm_state(vm);
  if (st == JITSU_STATE_STOPPED || st == JITSU_STATE_FAILED ||
      st == JITSU_STATE_SUSPENDED) {
    jitsu_ctx_log(h->ctx, JITSU_LOG_INFO,
                  "xl: channel request %s from domain %u: summoning vm '%s'",
                  path, client, jitsu_vm_name(vm));
    jitsu_vm_summon(vm, NULL, NULL);
  }
}

void xl_conduit_forget(xlhost *h, uint32_t domid) {
  unsigned n = 0;
  char **names = xs_directory(h->xs, XBT_NULL, "/conduit", &n);
  for (unsigned i = 0; names && i < n; i++) {
    char base[200], path[256];
    snprintf(base, sizeof(base), "/conduit/%s", names[i]);
    if (jitsu__conduit_grantee(h->xs, XBT_NULL, base) == (int)domid) {
      /* Its names: unheld, back to dom0, ready for its next boot. */
      xs_write(h->xs, XBT_NULL, base, "", 0);
      jitsu__xs_perms(h->xs, XBT_NULL, base, 0, XS_PERM_READ, -1, 0);
      requests_give(h, base, -1);
    }
    /* Its requests as a client: their listeners see them go. */
    snprintf(path, sizeof(path), "%s/" CONDUIT_REQUESTS "/%u", base, domid);
    xs_rm(h->xs, XBT_NULL, path);
  }
  free(names);
}

/* (what) of a token of vm (x): "WHAT" for (x), "WHAT/spareN" for one of
 * its spares. */
static void watch_dispatch(xvm *x, const char *what, const char *path) {
  const char *slash = strchr(what, '/');
  if (slash == NULL) {
    xl_watch_fired(x, what, path);
    return;
  }
  char w[32];
  if ((size_t)(slash - what) >= sizeof(w))
    return;
  memcpy(w, what, (size_t)(slash - what));
  w[slash - what] = '\0';
  for (unsigned i = 0; i < x->pool; i++)
    if (x->spares[i] != NULL && strcmp(x->spares[i]->tag, slash + 1) == 0) {
      xl_watch_fired(x->spares[i], w, path);
      return;
    }
}

/* Tokens are "VMNAME/WHAT", or "VMNAME/WHAT/spareN" for a spare of the
 * vm; a vm is found by name, never by pointer. */
static void xs_readable(uv_poll_t *p, int status, int events) {
  xlhost *h = p->data;
  char **vec;
  while (h != NULL && (vec = xs_check_watch(h->xs)) != NULL) {
    const char *path = vec[XS_WATCH_PATH], *token = vec[XS_WATCH_TOKEN];
    if (strcmp(token, CONDUIT_TOKEN) == 0) {
      conduit_request(h, path);
      free(vec);
      continue;
    }
    const char *slash = strchr(token, '/');
    if (slash != NULL) {
      for (jitsu_list *l = h->vms.next; l != &h->vms; l = l->next) {
        xvm *x = JITSU_CONTAINER_OF(l, xvm, link);
        const char *name = x->released ? "" : jitsu_vm_name(x->vm);
        if (!x->released && x->spare == XSPARE_NO &&
            strlen(name) == (size_t)(slash - token) &&
            strncmp(name, token, (size_t)(slash - token)) == 0) {
          watch_dispatch(x, slash + 1, path);
          break;
        }
      }
    }
    free(vec);
  }
}

static void watch_token(xvm *x, const char *what, char *out, size_t size) {
  snprintf(out, size, "%s/%s%s%s", jitsu_vm_name(x->vm), what,
           x->spare != XSPARE_NO ? "/" : "", x->tag);
}

int xl_watch(xvm *x, const char *path, const char *what) {
  char token[256];
  watch_token(x, what, token, sizeof(token));
  return xs_watch(x->host->xs, path, token) ? 0 : -errno;
}

void xl_unwatch(xvm *x, const char *path, const char *what) {
  char token[256];
  watch_token(x, what, token, sizeof(token));
  xs_unwatch(x->host->xs, path, token);
}

/* ---- the host ----------------------------------------------------------- */

static void host_free(xlhost *h) {
  if (h->lx != NULL)
    libxl_ctx_free(h->lx);
  /* What libxl left registered goes with the context. */
  while (h->fds.next != &h->fds) {
    xlfd *f = JITSU_CONTAINER_OF(h->fds.next, xlfd, link);
    while (f->regs) {
      xlreg *r = f->regs;
      f->regs = r->next;
      free(r);
    }
    f->dispatching = 0;
    fd_close_if_unused(f);
  }
  while (h->timeouts.next != &h->timeouts) {
    xlto *to = JITSU_CONTAINER_OF(h->timeouts.next, xlto, link);
    jitsu_list_remove(&to->link);
    uv_close((uv_handle_t *)&to->timer, timeout_closed);
  }
  if (h->xs_poll != NULL) {
    h->xs_poll->data = NULL;
    uv_close((uv_handle_t *)h->xs_poll, jitsu__free_handle);
  }
  if (h->xs != NULL)
    xs_close(h->xs);
  if (h->sigchld != NULL)
    uv_close((uv_handle_t *)h->sigchld, jitsu__free_handle);
  free(h->logger);
  free(h);
}

static xlhost *host_new(jitsu_ctx *ctx, char *why, size_t size) {
  xlhost *h = calloc(1, sizeof(*h));
  if (h == NULL) {
    snprintf(why, size, "out of memory");
    return NULL;
  }
  h->ctx = ctx;
  h->loop = jitsu_ctx_loop(ctx);
  jitsu_list_init(&h->fds);
  jitsu_list_init(&h->timeouts);
  jitsu_list_init(&h->vms);
  if (access("/proc/xen/capabilities", F_OK) != 0 &&
      access("/dev/xen/privcmd", F_OK) != 0) {
    snprintf(why, size,
             "this host runs no Xen (no /proc/xen or /dev/xen/privcmd)");
    free(h);
    return NULL;
  }
  h->logger = calloc(1, sizeof(*h->logger));
  if (h->logger == NULL) {
    snprintf(why, size, "out of memory");
    free(h);
    return NULL;
  }
  h->logger->vtable.vmessage = log_vmessage;
  h->logger->vtable.progress = log_progress;
  h->logger->vtable.destroy = log_destroy;
  h->logger->h = h;
  int rc = libxl_ctx_alloc(&h->lx, LIBXL_VERSION, 0, &h->logger->vtable);
  if (rc != 0) {
    snprintf(why, size, "cannot open libxenlight: %s",
             h->error[0] ? h->error : "libxl_ctx_alloc failed");
    h->lx = NULL;
    host_free(h);
    return NULL;
  }
  libxl_osevent_register_hooks(h->lx, &osevent_hooks, h);
  libxl_childproc_setmode(h->lx, &child_hooks, h);
  libxl_event_register_callbacks(h->lx, &event_hooks, h);
  h->sigchld = malloc(sizeof(*h->sigchld));
  if (h->sigchld == NULL || uv_signal_init(h->loop, h->sigchld) != 0) {
    free(h->sigchld);
    h->sigchld = NULL;
    snprintf(why, size, "cannot watch SIGCHLD");
    host_free(h);
    return NULL;
  }
  h->sigchld->data = h;
  uv_signal_start(h->sigchld, sigchld, SIGCHLD);
  h->xs = xs_open(0);
  h->xs_poll = h->xs ? malloc(sizeof(*h->xs_poll)) : NULL;
  if (h->xs_poll == NULL ||
      uv_poll_init(h->loop, h->xs_poll, xs_fileno(h->xs)) != 0) {
    snprintf(why, size, "cannot connect to XenStore: %s", strerror(errno));
    free(h->xs_poll);
    h->xs_poll = NULL;
    host_free(h);
    return NULL;
  }
  h->xs_poll->data = h;
  uv_poll_start(h->xs_poll, UV_READABLE, xs_readable);
#ifdef JITSU_HAVE_VCHAN
  /* The channels' rendezvous: connects to names of stopped vms summon
   * them. */
  if (!jitsu__conduit_root(h->xs) ||
      !xs_watch(h->xs, "/conduit", CONDUIT_TOKEN))
    jitsu_ctx_log(ctx, JITSU_LOG_WARNING,
                  "xl: cannot set up /conduit in XenStore (%s): channels to "
                  "stopped vms will not summon them",
                  strerror(errno));
#endif
  return h;
}

xlhost *xl_host_get(jitsu_ctx *ctx, char *why, size_t size) {
  pthread_mutex_lock(&hosts_lock);
  xlhost *h = NULL;
  for (jitsu_list *l = hosts.next; l != &hosts; l = l->next) {
    xlhost *c = JITSU_CONTAINER_OF(l, xlhost, link);
    if (c->ctx == ctx) {
      h = c;
      break;
    }
  }
  if (h == NULL && (h = host_new(ctx, why, size)) != NULL)
    jitsu_list_append(&hosts, &h->link);
  if (h != NULL)
    h->refs++;
  pthread_mutex_unlock(&hosts_lock);
  return h;
}

static void host_free_deferred(uv_handle_t *t) {
  xlhost *h = t->data;
  free(t);
  host_free(h);
}

static void host_free_now(uv_timer_t *t) {
  uv_close((uv_handle_t *)t, host_free_deferred);
}

void xl_host_put(xlhost *h) {
  if (h == NULL)
    return;
  pthread_mutex_lock(&hosts_lock);
  bool last = --h->refs == 0;
  if (last)
    jitsu_list_remove(&h->link);
  pthread_mutex_unlock(&hosts_lock);
  if (!last)
    return;
  h->ctx = NULL; /* it may be freed before the deferred free runs */
  /* The last reference may go inside a libxl callback (an operation that
   * outlived its vm): free the libxl context from the loop instead. */
  uv_timer_t *t = malloc(sizeof(*t));
  if (t == NULL) {
    host_free(h);
    return;
  }
  uv_timer_init(h->loop, t);
  t->data = h;
  uv_timer_start(t, host_free_now, 0, 0);
}

void xl_host_orphan(xlhost *h) {
  for (jitsu_list *l = h->vms.next; l != &h->vms; l = l->next)
    if (!JITSU_CONTAINER_OF(l, xvm, link)->released)
      return;
  h->ctx = NULL;
}
