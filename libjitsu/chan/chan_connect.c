/*
 * Channel endpoints meeting through the rendezvous server: connect makes
 * the shared memory (a sealed memfd) and the socket pair and sends them
 * with its request; the server hands them to the listener of the name.
 * Messages (SOCK_SEQPACKET, text): "L NAME", "C NAME PORT TIMEOUT_MS" with
 * [memfd, bell]; replies "OK" or "E ERRNO TEXT"; to a listener "A PORT"
 * with [memfd, bell].
 */
#include "chan_ring.h"
#include "chan_int.h"
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static const struct jitsu__xen_chan_ops *xen_chan(void);

bool jitsu__chan_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > JITSU_CHAN_NAME_MAX || s[0] == '.')
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
          (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-' ||
          s[i] == '.'))
      return false;
  return true;
}

bool jitsu__chan_port_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > JITSU_CHAN_PORT_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
          (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
      return false;
  return true;
}

int jitsu__rv_send(int fd, const char *text, const int *fds, int nfds) {
  union {
    struct cmsghdr align;
    char space[CMSG_SPACE(sizeof(int) * 2)];
  } control;
  struct iovec iov = {(void *)text, strlen(text)};
  struct msghdr mh = {0};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (nfds > 0) {
    memset(&control, 0, sizeof(control));
    mh.msg_control = &control;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
  }
  ssize_t n = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
  return n == (ssize_t)iov.iov_len ? 0 : n < 0 ? -errno : -EIO;
}

long jitsu__rv_recv(int fd, char *buf, size_t size, int *fds, int *nfds) {
  union {
    struct cmsghdr align;
    char space[CMSG_SPACE(sizeof(int) * 8)];
  } control;
  struct iovec iov = {buf, size - 1};
  struct msghdr mh = {0};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = &control;
  mh.msg_controllen = sizeof(control);
  ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  int room = *nfds, got = 0;
  *nfds = 0;
  if (n < 0)
    return -errno;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int f;
      memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (got < room)
        fds[got++] = f;
      else
        close(f); /* more than asked for: not ours to keep */
    }
  }
  *nfds = got;
  if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
    for (int i = 0; i < got; i++)
      close(fds[i]);
    *nfds = 0;
    return -EMSGSIZE;
  }
  buf[n] = '\0';
  if (memchr(buf, '\0', (size_t)n) != NULL) {
    for (int i = 0; i < got; i++)
      close(fds[i]);
    *nfds = 0;
    return -EPROTO;
  }
  return (long)n;
}

static int rv_connect(const jitsu_chan_options *o) {
  const char *path =
      o && o->rendezvous ? o->rendezvous : getenv("JITSU_RENDEZVOUS");
  if (path == NULL || path[0] == '\0')
    return -EDESTADDRREQ;
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sun.sun_path))
    return -ENAMETOOLONG;
  strcpy(sun.sun_path, path);
  /* Non-blocking: a Unix socket connect completes at once, or fails with
   * EAGAIN when the server's backlog is full; it never blocks our loop. */
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -errno;
  if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
    int e = -errno;
    close(fd);
    return e;
  }
  return fd;
}

/* "E ERRNO TEXT" -> -ERRNO (EPROTO if malformed). */
static int reply_error(const char *msg) {
  if (strcmp(msg, "OK") == 0)
    return 0;
  int e = 0;
  if (sscanf(msg, "E %d", &e) != 1 || e <= 0 || e > 4095)
    return -EPROTO;
  return -e;
}

/* ---- connect ------------------------------------------------------------ */

typedef struct pconnect {
  jitsu_chan_connecting req_base; /* first: what the caller holds */
  uv_loop_t *loop;
  int rv;
  uv_poll_t poll;
  uv_timer_t timer;
  int handles;
  uint8_t *map;
  size_t map_len;
  int bell;
  jitsu_chan_options opts;
  jitsu_chan_connect_cb cb;
  void *arg;
  bool done;
  bool canceled; /* its callback runs from the last close */
} pconnect;

static void pc_closed(uv_handle_t *h) {
  pconnect *p = h->data;
  if (--p->handles == 0) {
    if (p->canceled)
      p->cb(NULL, -ECANCELED, p->arg);
    if (p->map != NULL)
      munmap(p->map, p->map_len);
    if (p->bell >= 0)
      close(p->bell);
    free(p);
  }
}

static void pc_finish(pconnect *p, int err) {
  if (p->done)
    return;
  p->done = true;
  jitsu_chan *c = NULL;
  if (err == 0) {
    c = jitsu__chan_new(p->loop, p->map, p->map_len, p->bell, 0, &p->opts,
                        &err);
    if (c != NULL)
      p->map = NULL, p->bell = -1; /* the channel owns them now */
  }
  uv_close((uv_handle_t *)&p->poll, pc_closed);
  uv_close((uv_handle_t *)&p->timer, pc_closed);
  close(p->rv);
  p->cb(c, err, p->arg);
}

static void pc_readable(uv_poll_t *h, int status, int events) {
  pconnect *p = h->data;
  (void)events;
  char msg[RV_MSG_MAX];
  int fds[1], nfds = 0;
  long n =
      status < 0 ? status : jitsu__rv_recv(p->rv, msg, sizeof(msg), fds, &nfds);
  if (n == -EAGAIN)
    return;
  pc_finish(p, n < 0 ? (int)n : n == 0 ? -ECONNRESET : reply_error(msg));
}

static void pc_timeout(uv_timer_t *t) {
  pc_finish(t->data, -ETIMEDOUT);
}

static void pc_cancel(jitsu_chan_connecting *base) {
  pconnect *p = (pconnect *)base;
  if (p->done)
    return;
  p->done = true;
  p->canceled = true;
  uv_close((uv_handle_t *)&p->poll, pc_closed);
  uv_close((uv_handle_t *)&p->timer, pc_closed);
  close(p->rv); /* the server drops the request with the connection */
}

void jitsu_chan_connect_cancel(jitsu_chan_connecting *req) {
  if (req != NULL)
    req->cancel(req);
}

/* A sealed memfd of a fresh channel, mapped: 0 or -errno. */
static int make_shm(size_t ring, uint8_t **map, size_t *len, int *fd) {
  *len = CHAN_HDR_SIZE + 2 * ring;
  *fd = memfd_create("jitsu-chan", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (*fd < 0)
    return -errno;
  if (ftruncate(*fd, (off_t)*len) < 0 ||
      fcntl(*fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
    int e = -errno;
    close(*fd);
    return e;
  }
  *map = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
  if (*map == MAP_FAILED) {
    int e = -errno;
    close(*fd);
    return e;
  }
  return chan_ring_format(*map, *len, (uint32_t)ring);
}

int jitsu_chan_connect(uv_loop_t *loop, const char *name, const char *port,
                       const jitsu_chan_options *opts, jitsu_chan_connect_cb cb,
                       void *arg, jitsu_chan_connecting **out) {
  jitsu_chan_options o;
  if (!jitsu__chan_name_ok(name) || !jitsu__chan_port_ok(port) || cb == NULL ||
      jitsu__chan_opts(opts, &o) < 0)
    return -EINVAL;
  if (jitsu__chan_xen_wanted(opts)) {
    const jitsu__xen_chan_ops *x = xen_chan();
    return x ? x->connect(loop, name, port, &o, cb, arg, out)
             : -EPROTONOSUPPORT;
  }
  size_t ring =
      opts && opts->ring_size ? opts->ring_size : JITSU_CHAN_RING_DEFAULT;
  if (ring < JITSU_CHAN_RING_MIN || ring > JITSU_CHAN_RING_MAX ||
      (ring & (ring - 1)) != 0)
    return -EINVAL;
  uint64_t timeout =
      opts && opts->timeout_ms ? opts->timeout_ms : RV_CONNECT_TIMEOUT_MS;
  if (timeout > RV_CONNECT_TIMEOUT_MAX_MS)
    timeout = RV_CONNECT_TIMEOUT_MAX_MS;
  pconnect *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return -ENOMEM;
  p->bell = -1;
  int memfd = -1, sv[2] = {-1, -1};
  int r = make_shm(ring, &p->map, &p->map_len, &memfd);
  if (r == 0 && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                           0, sv) < 0)
    r = -errno;
  if (r == 0 && (p->rv = rv_connect(opts)) < 0)
    r = p->rv;
  if (r == 0) {
    char msg[RV_MSG_MAX];
    snprintf(msg, sizeof(msg), "C %s %s %llu", name, port,
             (unsigned long long)timeout);
    int fds[2] = {memfd, sv[1]};
    r = jitsu__rv_send(p->rv, msg, fds, 2);
    if (r < 0)
      close(p->rv);
  }
  if (memfd >= 0)
    close(memfd);
  if (sv[1] >= 0)
    close(sv[1]);
  if (r < 0) {
    if (sv[0] >= 0)
      close(sv[0]);
    if (p->map != NULL && p->map != MAP_FAILED)
      munmap(p->map, p->map_len);
    free(p);
    return r;
  }
  p->req_base.cancel = pc_cancel;
  p->bell = sv[0];
  p->loop = loop;
  p->cb = cb;
  p->arg = arg;
  p->opts = o;
  uv_poll_init(loop, &p->poll, p->rv);
  uv_timer_init(loop, &p->timer);
  p->poll.data = p->timer.data = p;
  p->handles = 2;
  uv_poll_start(&p->poll, UV_READABLE, pc_readable);
  uv_timer_start(&p->timer, pc_timeout, timeout + 1000, 0);
  if (out != NULL)
    *out = &p->req_base;
  return 0;
}

/* ---- listen ---------------------------------------------------------------
 */

struct jitsu_chan_listener {
  uv_loop_t *loop;
  void *xen; /* a listener of the Xen rendezvous (chan_xen.c) */
  int rv;
  uv_poll_t poll;
  bool registered, closing;
  jitsu_chan_options opts;
  jitsu__chan_count *count; /* its channels open now */
  jitsu_chan_accept_cb cb;
  void *arg;
};

static void l_closed(uv_handle_t *h) {
  free(h->data);
}

int jitsu__conduit_parse(const char *path, char *name, size_t name_size,
                         unsigned *client, char *port, size_t port_size) {
  static const char root[] = "/conduit/", req[] = "/requests/";
  if (strncmp(path, root, sizeof(root) - 1) != 0)
    return -EINVAL;
  const char *n = path + sizeof(root) - 1;
  const char *s0 = strchr(n, '/');
  if (s0 == NULL || strncmp(s0, req, sizeof(req) - 1) != 0)
    return -EINVAL;
  const char *d = s0 + sizeof(req) - 1;
  const char *s2 = strchr(d, '/');
  if (s2 == NULL || strchr(s2 + 1, '/') != NULL)
    return -EINVAL;
  size_t nlen = (size_t)(s0 - n), plen = strlen(s2 + 1);
  if (nlen == 0 || nlen >= name_size || plen == 0 || plen >= port_size)
    return -EINVAL;
  unsigned long id = 0;
  if (d == s2 || s2 - d > 5 || (*d == '0' && s2 - d > 1))
    return -EINVAL; /* empty, too long, or a leading zero */
  for (; d < s2; d++) {
    if (*d < '0' || *d > '9')
      return -EINVAL;
    id = id * 10 + (unsigned long)(*d - '0');
  }
  if (id >= 0x7ff0) /* DOMID_FIRST_RESERVED */
    return -EINVAL;
  memcpy(name, n, nlen);
  name[nlen] = '\0';
  memcpy(port, s2 + 1, plen + 1);
  if (!jitsu__chan_name_ok(name) || !jitsu__chan_port_ok(port))
    return -EINVAL;
  *client = (unsigned)id;
  return 0;
}

/* The Xen rendezvous, from the vchan module (loaded once, never
 * unloaded); NULL when it is not there. */
static const jitsu__xen_chan_ops *xen_chan(void) {
  static const jitsu__xen_chan_ops *_Atomic ops;
  if (ops == NULL) {
    char err[1200];
    const jitsu__module *m = jitsu__module_load("vchan", err, sizeof(err));
    if (m != NULL)
      ops = m->xen_chan;
  }
  return ops;
}

bool jitsu__chan_xen_wanted(const jitsu_chan_options *o) {
  const char *path =
      o && o->rendezvous ? o->rendezvous : getenv("JITSU_RENDEZVOUS");
  return path != NULL && strcmp(path, "xen") == 0;
}

void jitsu_chan_listener_close(jitsu_chan_listener *l) {
  if (l == NULL || l->closing)
    return;
  l->closing = true;
  jitsu__chan_count_put(l->count);
  l->count = NULL;
  if (l->xen != NULL) {
    xen_chan()->listener_close(l->xen);
    free(l);
    return;
  }
  uv_close((uv_handle_t *)&l->poll, l_closed);
  close(l->rv);
}

/* Check and map a channel handed to us: the size must match the header,
 * the memfd must be sealed against shrinking (else the peer could make
 * our reads fault). */
static jitsu_chan *take_channel(jitsu_chan_listener *l, int memfd, int bell,
                                int *err) {
  struct stat st;
  int seals = fcntl(memfd, F_GET_SEALS);
  *err = -EPROTO;
  if (fstat(memfd, &st) < 0 || seals < 0 ||
      (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) !=
          (F_SEAL_SHRINK | F_SEAL_GROW) ||
      st.st_size < (off_t)(CHAN_HDR_SIZE + 2 * JITSU_CHAN_RING_MIN) ||
      st.st_size > (off_t)(CHAN_HDR_SIZE + 2 * (size_t)JITSU_CHAN_RING_MAX))
    return NULL;
  /* The bell: a stream socket pair end, as jitsu_chan_connect() makes. */
  int type = 0, domain = 0;
  socklen_t tl = sizeof(type), dl = sizeof(domain);
  if (fstat(bell, &st) < 0 || !S_ISSOCK(st.st_mode) ||
      getsockopt(bell, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 ||
      getsockopt(bell, SOL_SOCKET, SO_DOMAIN, &domain, &dl) < 0 ||
      type != SOCK_STREAM || domain != AF_UNIX)
    return NULL;
  if (fstat(memfd, &st) < 0)
    return NULL;
  size_t len = (size_t)st.st_size;
  uint8_t *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (map == MAP_FAILED) {
    *err = -errno;
    return NULL;
  }
  fcntl(bell, F_SETFL, fcntl(bell, F_GETFL) | O_NONBLOCK);
  jitsu_chan *c = jitsu__chan_new(l->loop, map, len, bell, 1, &l->opts, err);
  if (c == NULL)
    munmap(map, len);
  return c;
}

static void l_readable(uv_poll_t *h, int status, int events) {
  jitsu_chan_listener *l = h->data;
  (void)events;
  for (int i = 0; i < 64 && !l->closing; i++) {
    char msg[RV_MSG_MAX];
    int fds[2], nfds = 2;
    long n = status < 0 ? status
                        : jitsu__rv_recv(l->rv, msg, sizeof(msg), fds, &nfds);
    if (n == -EAGAIN)
      return;
    if (n <= 0) {
      uv_poll_stop(&l->poll); /* the server went away: no more accepts */
      l->cb(l, NULL, NULL, n == 0 ? -ECONNRESET : (int)n, l->arg);
      return;
    }
    if (!l->registered) {
      for (int k = 0; k < nfds; k++)
        close(fds[k]);
      int err = reply_error(msg);
      l->registered = err == 0;
      if (err < 0)
        uv_poll_stop(&l->poll);
      l->cb(l, NULL, NULL, err, l->arg);
      if (err < 0)
        return;
      continue;
    }
    char port[RV_MSG_MAX];
    int err = -EPROTO;
    jitsu_chan *c = NULL;
    if (nfds == 2 && sscanf(msg, "A %63s", port) == 1 &&
        jitsu__chan_port_ok(port) && jitsu__chan_count_room(l->count)) {
      /* (over the limit: the fds are closed, the connector sees the end) */
      c = take_channel(l, fds[0], fds[1], &err);
      close(fds[0]);
      if (c == NULL)
        close(fds[1]);
    } else {
      for (int k = 0; k < nfds; k++)
        close(fds[k]);
    }
    if (c != NULL) {
      jitsu__chan_count_add(c, l->count);
      l->cb(l, c, port, 0, l->arg);
    }
  }
}

int jitsu_chan_listen(uv_loop_t *loop, const char *name,
                      const jitsu_chan_options *opts, jitsu_chan_accept_cb cb,
                      void *arg, jitsu_chan_listener **out) {
  jitsu_chan_options o;
  if (!jitsu__chan_name_ok(name) || cb == NULL ||
      jitsu__chan_opts(opts, &o) < 0)
    return -EINVAL;
  if (jitsu__chan_xen_wanted(opts)) {
    const jitsu__xen_chan_ops *x = xen_chan();
    if (x == NULL)
      return -EPROTONOSUPPORT; /* built or installed without the module */
    jitsu_chan_listener *xl = calloc(1, sizeof(*xl));
    if (xl == NULL)
      return -ENOMEM;
    xl->loop = loop;
    int r = x->listen(xl, loop, name, &o, cb, arg, &xl->xen);
    if (r < 0) {
      free(xl);
      return r;
    }
    *out = xl;
    return 0;
  }
  int fd = rv_connect(opts);
  if (fd < 0)
    return fd;
  char msg[RV_MSG_MAX];
  snprintf(msg, sizeof(msg), "L %s", name);
  int r = jitsu__rv_send(fd, msg, NULL, 0);
  jitsu_chan_listener *l = r == 0 ? calloc(1, sizeof(*l)) : NULL;
  jitsu__chan_count *count = l != NULL ? jitsu__chan_count_new(&o) : NULL;
  if (count == NULL) {
    free(l);
    close(fd);
    return r < 0 ? r : -ENOMEM;
  }
  l->loop = loop;
  l->rv = fd;
  l->opts = o;
  l->count = count;
  l->cb = cb;
  l->arg = arg;
  uv_poll_init(loop, &l->poll, fd);
  l->poll.data = l;
  uv_poll_start(&l->poll, UV_READABLE, l_readable); /* the answer comes */
  if (out != NULL)
    *out = l;
  return 0;
}
