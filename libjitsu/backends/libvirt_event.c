/*
 * libvirt's event loop on libuv. libvirt asks for fd watches and timeouts
 * through the six functions registered with virEventRegisterImpl, from
 * whichever thread makes an API call; the changes are recorded under one
 * lock and applied by the owning loop's thread when a uv_async wakes it.
 * One uv_poll serves every watch on an fd (libuv allows one per fd).
 */
#include "libvirt.h"

#include <libvirt/virterror.h>

#include <stdlib.h>
#include <string.h>

typedef struct lvfd lvfd;

typedef struct lvitem {
  jitsu_list link; /* in the loop's items */
  lvloop *l;
  int id;
  bool timer;
  int fd, events; /* watch: wanted events (VIR_EVENT_HANDLE_*) */
  int timeout;    /* timer: period in ms, -1 disabled */
  bool removed;   /* libvirt removed it; closed on the loop thread */
  bool dirty;     /* changed since last applied */
  virEventHandleCallback hcb;
  virEventTimeoutCallback tcb;
  void *opaque;
  virFreeCallback ff;
  /* Loop thread only. */
  lvfd *pfd;
  uv_timer_t *uvt;
  bool applied;
} lvitem;

/* One uv_poll per fd, shared by the watches on it. */
struct lvfd {
  jitsu_list link; /* in the loop's fds */
  lvloop *l;
  int fd;
  uv_poll_t poll;
  unsigned users;
  int armed; /* UV_ events the poll waits for */
};

typedef struct lvmsg {
  jitsu_list link;
  void (*fn)(void *);
  void *arg;
  const void *tag;
} lvmsg;

struct lvloop {
  jitsu_list link; /* in loops */
  uv_loop_t *loop;
  uv_async_t *async;
  unsigned refs;    /* users (hosts) and items; under mu */
  jitsu_list items; /* under mu */
  jitsu_list msgs;  /* under mu */
  jitsu_list fds;   /* loop thread only */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static jitsu_list loops = {&loops, &loops};
static int next_id = 1;
static __thread lvloop *current;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void apply(uv_async_t *a);

/* The loop libvirt's new watch or timeout belongs to: the one this thread
 * is serving or working for, else the first (libvirt adds some in calls of
 * its own on the loop thread). Under mu. */
static lvloop *owner(void) {
  if (current != NULL)
    return current;
  if (loops.next != &loops)
    return JITSU_CONTAINER_OF(loops.next, lvloop, link);
  return NULL;
}

static lvitem *find(int id) {
  for (jitsu_list *ll = loops.next; ll != &loops; ll = ll->next) {
    lvloop *l = JITSU_CONTAINER_OF(ll, lvloop, link);
    for (jitsu_list *i = l->items.next; i != &l->items; i = i->next) {
      lvitem *it = JITSU_CONTAINER_OF(i, lvitem, link);
      if (it->id == id && !it->removed)
        return it;
    }
  }
  return NULL;
}

static void touch(lvitem *it) {
  it->dirty = true;
  uv_async_send(it->l->async);
}

static int add_item(lvitem *proto) {
  lvitem *it = calloc(1, sizeof(*it));
  if (it == NULL)
    return -1;
  *it = *proto;
  pthread_mutex_lock(&mu);
  lvloop *l = owner();
  if (l == NULL) {
    pthread_mutex_unlock(&mu);
    free(it);
    return -1;
  }
  it->l = l;
  it->id = next_id++;
  l->refs++;
  jitsu_list_append(&l->items, &it->link);
  int id = it->id;
  touch(it);
  pthread_mutex_unlock(&mu);
  return id;
}

static int add_handle(int fd, int events, virEventHandleCallback cb,
                      void *opaque, virFreeCallback ff) {
  lvitem it = {.fd = fd,
               .events = events,
               .hcb = cb,
               .opaque = opaque,
               .ff = ff,
               .timeout = -1};
  return add_item(&it);
}

static void update_handle(int id, int events) {
  pthread_mutex_lock(&mu);
  lvitem *it = find(id);
  if (it != NULL && !it->timer) {
    it->events = events;
    touch(it);
  }
  pthread_mutex_unlock(&mu);
}

static int remove_item(int id, bool timer) {
  pthread_mutex_lock(&mu);
  lvitem *it = find(id);
  int r = -1;
  if (it != NULL && it->timer == timer) {
    it->removed = true;
    touch(it);
    r = 0;
  }
  pthread_mutex_unlock(&mu);
  return r;
}

static int remove_handle(int id) {
  return remove_item(id, false);
}

static int add_timeout(int ms, virEventTimeoutCallback cb, void *opaque,
                       virFreeCallback ff) {
  lvitem it = {.timer = true,
               .fd = -1,
               .timeout = ms,
               .tcb = cb,
               .opaque = opaque,
               .ff = ff};
  return add_item(&it);
}

static void update_timeout(int id, int ms) {
  pthread_mutex_lock(&mu);
  lvitem *it = find(id);
  if (it != NULL && it->timer) {
    it->timeout = ms;
    touch(it);
  }
  pthread_mutex_unlock(&mu);
}

static int remove_timeout(int id) {
  return remove_item(id, true);
}

/* libvirt prints every error on stderr unless told otherwise; the backend
 * reports them itself (reasons and the ctx's log). */
static void no_print(void *data, virErrorPtr e) {}

static void register_impl(void) {
  virInitialize();
  virSetErrorFunc(NULL, no_print);
  virEventRegisterImpl(add_handle, update_handle, remove_handle, add_timeout,
                       update_timeout, remove_timeout);
}

/* ---- the loop thread ------------------------------------------------------
 */

static int to_uv(int ev) {
  int r = 0;
  if (ev & VIR_EVENT_HANDLE_READABLE)
    r |= UV_READABLE;
  if (ev & VIR_EVENT_HANDLE_WRITABLE)
    r |= UV_WRITABLE;
  return r;
}

static void fd_ready(uv_poll_t *p, int status, int uvev) {
  lvfd *f = p->data;
  int got = 0;
  if (status < 0)
    got = VIR_EVENT_HANDLE_ERROR | VIR_EVENT_HANDLE_HANGUP;
  else {
    if (uvev & UV_READABLE)
      got |= VIR_EVENT_HANDLE_READABLE;
    if (uvev & UV_WRITABLE)
      got |= VIR_EVENT_HANDLE_WRITABLE;
    if (uvev & UV_DISCONNECT)
      got |= VIR_EVENT_HANDLE_HANGUP;
  }
  /* Collect the watches to call, then call them without the lock (they
   * call back into update/remove). At most a few watches share an fd. */
  struct {
    int id, ev;
    virEventHandleCallback cb;
    void *opaque;
  } calls[8];
  size_t n = 0;
  pthread_mutex_lock(&mu);
  lvloop *l = f->l;
  for (jitsu_list *i = l->items.next; i != &l->items && n < 8; i = i->next) {
    lvitem *it = JITSU_CONTAINER_OF(i, lvitem, link);
    if (it->timer || it->removed || it->pfd != f)
      continue;
    int ev =
        got & (it->events | VIR_EVENT_HANDLE_ERROR | VIR_EVENT_HANDLE_HANGUP);
    if (ev != 0) {
      calls[n].id = it->id;
      calls[n].ev = ev;
      calls[n].cb = it->hcb;
      calls[n].opaque = it->opaque;
      n++;
    }
  }
  pthread_mutex_unlock(&mu);
  lvloop *saved = current;
  current = l;
  for (size_t k = 0; k < n; k++) {
    pthread_mutex_lock(&mu);
    lvitem *it = find(calls[k].id); /* an earlier call may remove it */
    pthread_mutex_unlock(&mu);
    if (it != NULL)
      calls[k].cb(calls[k].id, f->fd, calls[k].ev, calls[k].opaque);
  }
  current = saved;
}

static void timer_fired(uv_timer_t *t) {
  int id = (int)(intptr_t)t->data;
  pthread_mutex_lock(&mu);
  lvitem *it = find(id);
  virEventTimeoutCallback cb = it ? it->tcb : NULL;
  void *opaque = it ? it->opaque : NULL;
  lvloop *l = it ? it->l : NULL;
  pthread_mutex_unlock(&mu);
  if (cb == NULL)
    return;
  lvloop *saved = current;
  current = l;
  cb(id, opaque);
  current = saved;
  /* A period of 0 means "on every iteration": arm it again. */
  pthread_mutex_lock(&mu);
  it = find(id);
  if (it != NULL && it->timeout == 0 && it->uvt != NULL && !it->dirty)
    uv_timer_start(it->uvt, timer_fired, 0, 0);
  pthread_mutex_unlock(&mu);
}

static void fd_closed(uv_handle_t *h) {
  free(h->data);
}

static void fd_release(lvfd *f) {
  if (--f->users > 0)
    return;
  jitsu_list_remove(&f->link);
  uv_poll_stop(&f->poll);
  f->poll.data = f;
  uv_close((uv_handle_t *)&f->poll, fd_closed);
}

static lvfd *fd_get(lvloop *l, int fd) {
  for (jitsu_list *i = l->fds.next; i != &l->fds; i = i->next) {
    lvfd *f = JITSU_CONTAINER_OF(i, lvfd, link);
    if (f->fd == fd) {
      f->users++;
      return f;
    }
  }
  lvfd *f = calloc(1, sizeof(*f));
  if (f == NULL)
    return NULL;
  if (uv_poll_init(l->loop, &f->poll, fd) != 0) {
    free(f);
    return NULL;
  }
  f->l = l;
  f->fd = fd;
  f->users = 1;
  f->poll.data = f;
  jitsu_list_append(&l->fds, &f->link);
  return f;
}

/* Arm (f)'s poll for the union of its watches' events. Under mu. */
static void fd_rearm(lvloop *l, lvfd *f) {
  int want = 0;
  for (jitsu_list *i = l->items.next; i != &l->items; i = i->next) {
    lvitem *it = JITSU_CONTAINER_OF(i, lvitem, link);
    if (!it->timer && !it->removed && it->pfd == f)
      want |= to_uv(it->events);
  }
  if (want == f->armed)
    return;
  f->armed = want;
  if (want == 0)
    uv_poll_stop(&f->poll);
  else
    uv_poll_start(&f->poll, want | UV_DISCONNECT, fd_ready);
}

typedef struct freed {
  virFreeCallback ff;
  void *opaque;
} freed;

static void timer_closed(uv_handle_t *h) {
  free(h);
}

static void loop_closed(uv_handle_t *h) {
  free(h->data);
  free(h);
}

static void apply(uv_async_t *a) {
  lvloop *l = a->data;
  freed done[16];
  size_t n_done = 0;
  bool again = false;
  pthread_mutex_lock(&mu);
  /* Removals first: an fd number libvirt closed may come back at once. */
  for (jitsu_list *i = l->items.next, *next; i != &l->items; i = next) {
    next = i->next;
    lvitem *it = JITSU_CONTAINER_OF(i, lvitem, link);
    if (!it->removed)
      continue;
    if (n_done == sizeof(done) / sizeof(done[0])) {
      again = true;
      break;
    }
    jitsu_list_remove(&it->link);
    if (it->pfd != NULL) {
      lvfd *f = it->pfd;
      it->pfd = NULL;
      fd_rearm(l, f);
      fd_release(f);
    }
    if (it->uvt != NULL) {
      uv_timer_stop(it->uvt);
      uv_close((uv_handle_t *)it->uvt, timer_closed);
    }
    done[n_done].ff = it->ff;
    done[n_done].opaque = it->opaque;
    n_done++;
    l->refs--;
    free(it);
  }
  for (jitsu_list *i = l->items.next; i != &l->items; i = i->next) {
    lvitem *it = JITSU_CONTAINER_OF(i, lvitem, link);
    if (!it->dirty || it->removed)
      continue;
    it->dirty = false;
    if (it->timer) {
      if (it->uvt == NULL) {
        it->uvt = malloc(sizeof(*it->uvt));
        if (it->uvt == NULL)
          continue;
        uv_timer_init(l->loop, it->uvt);
        it->uvt->data = (void *)(intptr_t)it->id;
      }
      if (it->timeout < 0)
        uv_timer_stop(it->uvt);
      else
        uv_timer_start(it->uvt, timer_fired, (uint64_t)it->timeout,
                       (uint64_t)it->timeout);
    } else {
      if (it->pfd == NULL && (it->pfd = fd_get(l, it->fd)) == NULL)
        continue;
      fd_rearm(l, it->pfd);
    }
  }
  /* Calls posted from other threads. */
  jitsu_list msgs;
  jitsu_list_init(&msgs);
  if (l->msgs.next != &l->msgs) {
    msgs.next = l->msgs.next;
    msgs.prev = l->msgs.prev;
    msgs.next->prev = &msgs;
    msgs.prev->next = &msgs;
    jitsu_list_init(&l->msgs);
  }
  bool last = l->refs == 0;
  if (last)
    jitsu_list_remove(&l->link);
  pthread_mutex_unlock(&mu);

  /* libvirt wants its free callbacks called after the removal returned,
   * never from within it. */
  for (size_t k = 0; k < n_done; k++)
    if (done[k].ff != NULL)
      done[k].ff(done[k].opaque);
  while (msgs.next != &msgs) {
    lvmsg *m = JITSU_CONTAINER_OF(msgs.next, lvmsg, link);
    jitsu_list_remove(&m->link);
    lvloop *saved = current;
    current = l;
    m->fn(m->arg);
    current = saved;
    free(m);
  }
  if (last) {
    if (current == l)
      current = NULL;
    uv_close((uv_handle_t *)l->async, loop_closed);
    return;
  }
  if (again)
    uv_async_send(l->async);
}

lvloop *lv_loop_get(uv_loop_t *loop) {
  pthread_once(&once, register_impl);
  pthread_mutex_lock(&mu);
  for (jitsu_list *i = loops.next; i != &loops; i = i->next) {
    lvloop *l = JITSU_CONTAINER_OF(i, lvloop, link);
    if (l->loop == loop) {
      l->refs++;
      pthread_mutex_unlock(&mu);
      current = l;
      return l;
    }
  }
  pthread_mutex_unlock(&mu);
  lvloop *l = calloc(1, sizeof(*l));
  uv_async_t *a = malloc(sizeof(*a));
  if (l == NULL || a == NULL || uv_async_init(loop, a, apply) != 0) {
    free(l);
    free(a);
    return NULL;
  }
  a->data = l;
  l->loop = loop;
  l->async = a;
  l->refs = 1;
  jitsu_list_init(&l->items);
  jitsu_list_init(&l->msgs);
  jitsu_list_init(&l->fds);
  pthread_mutex_lock(&mu);
  jitsu_list_append(&loops, &l->link);
  pthread_mutex_unlock(&mu);
  current = l; /* this is the loop's thread */
  return l;
}

void lv_loop_put(lvloop *l) {
  pthread_mutex_lock(&mu);
  l->refs--;
  uv_async_send(l->async); /* the last reference closes it from the loop */
  pthread_mutex_unlock(&mu);
}

uv_loop_t *lv_loop_uv(lvloop *l) {
  return l->loop;
}

void lv_loop_enter(lvloop *l) {
  current = l;
}

void lv_loop_post(lvloop *l, void (*fn)(void *), void *arg, const void *tag) {
  lvmsg *m = calloc(1, sizeof(*m));
  if (m == NULL)
    return; /* out of memory: the message is lost, as its event would be */
  m->fn = fn;
  m->arg = arg;
  m->tag = tag;
  pthread_mutex_lock(&mu);
  jitsu_list_append(&l->msgs, &m->link);
  uv_async_send(l->async);
  pthread_mutex_unlock(&mu);
}

void lv_loop_purge(lvloop *l, const void *tag) {
  pthread_mutex_lock(&mu);
  for (jitsu_list *i = l->msgs.next, *next; i != &l->msgs; i = next) {
    next = i->next;
    lvmsg *m = JITSU_CONTAINER_OF(i, lvmsg, link);
    if (m->tag == tag) {
      jitsu_list_remove(&m->link);
      free(m->arg == tag ? NULL : m->arg);
      free(m);
    }
  }
  pthread_mutex_unlock(&mu);
}
