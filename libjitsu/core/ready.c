/*
 * Readiness: none, a TCP connect with backoff, an HTTP request that is
 * answered, or the notify protocol; optionally after the backend has seen
 * the guest's marker (jitsu_backend_marker()), in which case probes begin
 * only then. A jitsu_probe (jitsu_vm_probe()) is the same tcp or http
 * check on its own, against another address, for a backend.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#define PROBE_FIRST_MS 5
#define PROBE_MAX_MS 200
#define PROBE_TIMEOUT_MS 1000 /* one connect or HTTP exchange */

struct jitsu__readiness {
  jitsu_vm *vm;         /* NULL once canceled (or a jitsu_probe completed) */
  jitsu__ready_fn done; /* the vm's start; NULL for a jitsu_probe */
  jitsu_probe_cb cb;    /* a jitsu_probe's */
  void *arg;
  int cb_status; /* a canceled jitsu_probe's, for its last close */
  int refs;      /* open handles + probes in flight */
  /* What is checked, copied from the vm. */
  uv_loop_t *loop;
  jitsu_ready_method method;
  struct sockaddr_storage addr;
  char path[JITSU__READY_PATH_MAX];
  uv_timer_t deadline;
  uv_timer_t retry;
  uint64_t backoff_ms;
  bool waiting_marker;  /* begun, but the marker has not been seen */
  bool marker_seen;     /* before or after begin */
  bool checked;         /* passed the check before this start */
  bool notified;        /* READY=1 came before the marker */
  struct probe *active; /* the probe in flight, if any */
  int notify_fd;
  uv_poll_t notify_poll;
  bool notify_open;
  char notify_name[108]; /* "@jitsu-..." as NOTIFY_SOCKET wants it */
};

typedef struct probe {
  uv_tcp_t tcp;
  uv_connect_t req;
  uv_write_t write;
  jitsu__readiness *r;
  char request[160 + JITSU__READY_PATH_MAX];
  char reply[8];
  size_t got;
} probe;

static void unref(jitsu__readiness *r) {
  if (--r->refs == 0) {
    if (r->notify_fd >= 0)
      close(r->notify_fd);
    if (r->cb != NULL && r->cb_status != 0)
      r->cb(r, r->cb_status, r->arg); /* canceled: after the last close */
    free(r);
  }
}

static void probe_stop(jitsu__readiness *r);

/* The check is over: (status) 0 (ready) or JITSU_ETIMEDOUT. */
static void finish(jitsu__readiness *r, int status) {
  if (r->done != NULL) {
    r->done(r->vm, status);
    return;
  }
  jitsu_probe_cb cb = r->cb;
  void *arg = r->arg;
  r->cb = NULL; /* called once, here */
  r->refs++;    /* (r) outlives the callback */
  probe_stop(r);
  cb(r, status, arg);
  unref(r);
}

static void handle_closed(uv_handle_t *h) {
  unref(h->data);
}

static void probe_closed(uv_handle_t *h) {
  probe *p = h->data;
  jitsu__readiness *r = p->r;
  free(p);
  unref(r);
}

static void probe_start(jitsu__readiness *r);

static void retry_fired(uv_timer_t *t) {
  jitsu__readiness *r = t->data;
  if (r->vm == NULL)
    return;
  if (r->active != NULL) { /* the probe in flight took too long */
    probe *p = r->active;
    r->active = NULL;
    uv_close((uv_handle_t *)&p->tcp, probe_closed);
  }
  probe_start(r);
}

/* The probe (p) ended: ready (ok), or try again after a back-off. */
static void probe_end(probe *p, bool ok) {
  jitsu__readiness *r = p->r;
  if (r->active != p)
    return; /* timed out and replaced: already closing */
  r->active = NULL;
  uv_timer_stop(&r->retry);
  uv_close((uv_handle_t *)&p->tcp, probe_closed);
  if (r->vm == NULL)
    return;
  if (ok) {
    finish(r, 0);
    return;
  }
  uv_timer_start(&r->retry, retry_fired, r->backoff_ms, 0);
  r->backoff_ms *= 2;
  if (r->backoff_ms > PROBE_MAX_MS)
    r->backoff_ms = PROBE_MAX_MS;
}

static void reply_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  probe *p = h->data;
  (void)hint;
  *buf = uv_buf_init(p->reply + p->got, (unsigned)(sizeof(p->reply) - p->got));
}

/* An HTTP answer of any status proves the guest's server is up: a proxy
 * that accepts before the guest listens (e.g. QEMU's user networking)
 * closes without one. */
static void reply_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  probe *p = s->data;
  (void)buf;
  if (n == 0)
    return;
  if (n < 0) {
    probe_end(p, false);
    return;
  }
  p->got += (size_t)n;
  if (p->got < 5 && memcmp(p->reply, "HTTP/", p->got) == 0)
    return;
  probe_end(p, p->got >= 5 && memcmp(p->reply, "HTTP/", 5) == 0);
}

static void request_written(uv_write_t *w, int status) {
  probe *p = w->data;
  if (status < 0)
    probe_end(p, false);
  else
    uv_read_start((uv_stream_t *)&p->tcp, reply_alloc, reply_read);
}

static void probe_connected(uv_connect_t *req, int status) {
  probe *p = req->data;
  if (status == UV_ECANCELED)
    return;
  if (status < 0 || p->r->vm == NULL) {
    probe_end(p, false);
    return;
  }
  jitsu__readiness *r = p->r;
  if (r->method != JITSU_READY_HTTP) {
    probe_end(p, true);
    return;
  }
  char host[80];
  jitsu__format_sockaddr((struct sockaddr *)&r->addr, host, sizeof(host));
  int n = snprintf(p->request, sizeof(p->request),
                   "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: jitsu-ready"
                   "\r\nConnection: close\r\n\r\n",
                   r->path, host);
  uv_buf_t b = uv_buf_init(p->request, (unsigned)n);
  p->write.data = p;
  if (uv_write(&p->write, (uv_stream_t *)&p->tcp, &b, 1, request_written) < 0)
    probe_end(p, false);
}

static void probe_start(jitsu__readiness *r) {
  probe *p = calloc(1, sizeof(*p));
  if (p == NULL) {
    uv_timer_start(&r->retry, retry_fired, PROBE_MAX_MS, 0);
    return;
  }
  p->r = r;
  uv_tcp_init(r->loop, &p->tcp);
  p->tcp.data = p;
  p->req.data = p;
  r->refs++;
  r->active = p;
  uv_timer_start(&r->retry, retry_fired, PROBE_TIMEOUT_MS, 0);
  int e = uv_tcp_connect(&p->req, &p->tcp, (const struct sockaddr *)&r->addr,
                         probe_connected);
  if (e < 0)
    probe_end(p, false);
}

int jitsu__notify_says_ready(const char *msg, size_t len) {
  size_t i = 0;
  while (i < len) {
    size_t j = i;
    while (j < len && msg[j] != '\n')
      j++;
    if (j - i == 7 && memcmp(msg + i, "READY=1", 7) == 0)
      return 1;
    i = j + 1;
  }
  return 0;
}

static void notify_readable(uv_poll_t *h, int status, int events) {
  jitsu__readiness *r = h->data;
  (void)events;
  if (r->vm == NULL || status < 0)
    return;
  for (;;) {
    char buf[4096];
    union {
      struct cmsghdr align;
      char space[CMSG_SPACE(sizeof(struct ucred)) +
                 CMSG_SPACE(sizeof(int) * 16)];
    } control;
    struct iovec iov = {buf, sizeof(buf)};
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = &control;
    mh.msg_controllen = sizeof(control);
    ssize_t n = recvmsg(r->notify_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0)
      return; /* EAGAIN: drained */
    const struct ucred *cred = NULL;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET)
        continue;
      if (c->cmsg_type == SCM_CREDENTIALS &&
          c->cmsg_len == CMSG_LEN(sizeof(struct ucred)))
        cred = (const struct ucred *)CMSG_DATA(c);
      if (c->cmsg_type == SCM_RIGHTS) { /* we store no fds: close them */
        size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfd; i++) {
          int fd;
          memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
          close(fd);
        }
      }
    }
    jitsu_vm *vm = r->vm;
    if ((mh.msg_flags & MSG_TRUNC) || cred == NULL)
      continue;
    if (vm->backend->owns_pid != NULL &&
        !vm->backend->owns_pid(vm, cred->pid)) {
      jitsu_vm_log(vm, JITSU_LOG_WARNING,
                   "ignored a notify message from pid %d, not the guest's",
                   (int)cred->pid);
      continue;
    }
    if (jitsu__notify_says_ready(buf, (size_t)n)) {
      if (vm->ready_marker && !r->marker_seen) {
        r->notified = true; /* ready once the marker comes */
        continue;
      }
      finish(r, 0);
      return;
    }
  }
}

static int notify_open(jitsu__readiness *r) {
  jitsu_vm *vm = r->vm;
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  int n =
      snprintf(r->notify_name, sizeof(r->notify_name), "@jitsu-%08x-%llu-%s",
               vm->ctx->notify_tag, (unsigned long long)vm->spawns, vm->name);
  if (n < 0 || (size_t)n >= sizeof(sun.sun_path))
    return -ENAMETOOLONG;
  memcpy(sun.sun_path + 1, r->notify_name + 1, (size_t)n - 1);
  socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  r->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (r->notify_fd < 0)
    return -errno;
  int one = 1;
  if (setsockopt(r->notify_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) <
          0 ||
      bind(r->notify_fd, (struct sockaddr *)&sun, len) < 0)
    return -errno;
  int e = uv_poll_init(vm->ctx->loop, &r->notify_poll, r->notify_fd);
  if (e < 0)
    return e;
  r->notify_poll.data = r;
  r->notify_open = true; /* read from jitsu__ready_begin() on */
  r->refs++;
  return 0;
}

/* A check of (vm)'s method at (addr) (NULL: its own address). */
static jitsu__readiness *readiness_new(jitsu_vm *vm,
                                       const struct sockaddr *addr) {
  jitsu__readiness *r = calloc(1, sizeof(*r));
  if (r == NULL)
    return NULL;
  r->vm = vm;
  r->notify_fd = -1;
  r->refs = 3; /* ours until canceled, and the two timers */
  r->backoff_ms = PROBE_FIRST_MS;
  r->loop = vm->ctx->loop;
  r->method = vm->ready;
  memcpy(&r->addr, &vm->ready_addr, sizeof(r->addr));
  if (addr != NULL)
    memcpy(&r->addr, addr,
           addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                       : sizeof(struct sockaddr_in));
  memcpy(r->path, vm->ready_path, sizeof(r->path));
  uv_timer_init(r->loop, &r->deadline);
  uv_timer_init(r->loop, &r->retry);
  r->deadline.data = r->retry.data = r;
  return r;
}

int jitsu__ready_prepare(jitsu_vm *vm, jitsu__ready_fn done) {
  jitsu__ready_cancel(vm);
  jitsu__readiness *r = readiness_new(vm, NULL);
  if (r == NULL)
    return -ENOMEM;
  r->done = done;
  vm->readiness = r;
  if (vm->ready == JITSU_READY_NOTIFY) {
    int e = notify_open(r);
    if (e < 0) {
      jitsu_vm_set_reason(vm, "cannot open the notify socket: %s",
                          jitsu_strerror(e));
      return e;
    }
  }
  return 0;
}

static void deadline_fired(uv_timer_t *t) {
  jitsu__readiness *r = t->data;
  if (r->vm != NULL)
    finish(r, JITSU_ETIMEDOUT);
}

/* The marker (if any) has been seen: run the method. */
static int begin_method(jitsu__readiness *r) {
  jitsu_vm *vm = r->vm;
  if (vm->ready == JITSU_READY_NONE ||
      (vm->ready == JITSU_READY_NOTIFY && r->notified))
    finish(r, 0);
  else if (vm->ready == JITSU_READY_TCP || vm->ready == JITSU_READY_HTTP)
    probe_start(r);
  return 0;
}

int jitsu__ready_begin(jitsu_vm *vm) {
  jitsu__readiness *r = vm->readiness;
  if (r == NULL)
    return -EINVAL;
  /* Only now does the backend know the guest's pid: a message that came
   * earlier (the guest can be quicker than the report of its start) has
   * waited in the socket, and is read now. */
  if (r->notify_open)
    uv_poll_start(&r->notify_poll, UV_READABLE, notify_readable);
  if ((vm->ready == JITSU_READY_NONE && !vm->ready_marker) || r->checked) {
    finish(r, 0);
    return 0;
  }
  uv_timer_start(&r->deadline, deadline_fired, vm->ready_timeout_ms, 0);
  if (vm->ready_marker && !r->marker_seen) {
    r->waiting_marker = true;
    return 0;
  }
  return begin_method(r);
}

void jitsu_backend_marker(jitsu_vm *vm) {
  jitsu__readiness *r = vm->readiness;
  if (r == NULL || !vm->ready_marker || r->marker_seen)
    return;
  r->marker_seen = true;
  if (r->waiting_marker) {
    r->waiting_marker = false;
    begin_method(r);
  }
}

void jitsu_backend_checked(jitsu_vm *vm) {
  jitsu__readiness *r = vm->readiness;
  if (r != NULL && !r->waiting_marker)
    r->checked = r->marker_seen = true;
}

bool jitsu_vm_wants_marker(const jitsu_vm *vm) {
  return vm->ready_marker;
}

/* End whatever (r) has running and drop our reference: it is freed after
 * the last close. */
static void probe_stop(jitsu__readiness *r) {
  r->vm = NULL;
  if (r->active != NULL) {
    probe *p = r->active;
    r->active = NULL;
    uv_close((uv_handle_t *)&p->tcp, probe_closed);
  }
  uv_close((uv_handle_t *)&r->deadline, handle_closed);
  uv_close((uv_handle_t *)&r->retry, handle_closed);
  if (r->notify_open)
    uv_close((uv_handle_t *)&r->notify_poll, handle_closed);
  unref(r);
}

void jitsu__ready_cancel(jitsu_vm *vm) {
  jitsu__readiness *r = vm->readiness;
  if (r == NULL)
    return;
  vm->readiness = NULL;
  probe_stop(r);
}

unsigned jitsu_vm_ready_port(const jitsu_vm *vm) {
  if (vm == NULL ||
      (vm->ready != JITSU_READY_TCP && vm->ready != JITSU_READY_HTTP))
    return 0;
  const struct sockaddr *sa = (const struct sockaddr *)&vm->ready_addr;
  if (sa->sa_family == AF_INET)
    return ntohs(((const struct sockaddr_in *)sa)->sin_port);
  if (sa->sa_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
  return 0;
}

int jitsu_vm_probe(jitsu_vm *vm, const struct sockaddr *addr,
                   uint64_t timeout_ms, jitsu_probe_cb cb, void *arg,
                   jitsu_probe **out) {
  if (vm == NULL || addr == NULL || cb == NULL || out == NULL ||
      (vm->ready != JITSU_READY_TCP && vm->ready != JITSU_READY_HTTP) ||
      (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
    return -EINVAL;
  jitsu__readiness *r = readiness_new(vm, addr);
  if (r == NULL)
    return -ENOMEM;
  r->cb = cb;
  r->arg = arg;
  r->vm = vm; /* only as "not over": nothing of it is read from here on */
  uv_timer_start(&r->deadline, deadline_fired, timeout_ms, 0);
  probe_start(r);
  *out = r;
  return 0;
}

void jitsu_probe_cancel(jitsu_probe *p) {
  if (p == NULL || p->cb == NULL || p->vm == NULL)
    return;
  p->cb_status = JITSU_ECANCELED; /* called at the last close */
  probe_stop(p);
}

const char *jitsu_vm_notify_socket(const jitsu_vm *vm) {
  if (vm->readiness == NULL || !vm->readiness->notify_open)
    return NULL;
  return vm->readiness->notify_name;
}
