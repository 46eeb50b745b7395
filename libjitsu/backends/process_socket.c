/* The process backend's listening sockets: parsed, bound before the guest
 * exists, handed over at spawn, and watched as socket triggers while the
 * guest is not running. */
#include "process.h"

#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

/* After a failed start the sockets summon again only after a back-off,
 * doubling with each failure in a row. */
#define REARM_AFTER_FAILURE_MS 1000
#define REARM_MAX_MS 60000
#define RESET_MAX 4096 /* waiting connections reset after a failure */
/* While the guest serves its sockets, a connection or datagram arriving is
 * activity: seen by polling them, then not again for this long (at most a
 * few wake-ups a second, whatever the traffic). */
#define ACTIVITY_SAMPLE_MS 250
#define TIME_WAIT_MS 60000 /* Linux's TCP_TIMEWAIT_LEN */

static int parse_option(const char *word, psock *s, const char **why) {
  if (strncmp(word, "name=", 5) == 0) {
    const char *n = word + 5;
    size_t len = strlen(n);
    if (len == 0 || len >= sizeof(s->name) || strchr(n, ':') != NULL)
      return *why = "name= needs 1 to 63 characters without ':'", -EINVAL;
    memcpy(s->name, n, len + 1);
    return 0;
  }
  if (strncmp(word, "backlog=", 8) == 0) {
    char *end;
    long v = strtol(word + 8, &end, 10);
    if (word[8] == '\0' || *end != '\0' || v < 1 || v > 65535)
      return *why = "backlog= needs a number from 1 to 65535", -EINVAL;
    s->backlog = (int)v;
    return 0;
  }
  return *why = "unknown option (name=NAME or backlog=N)", -EINVAL;
}

int process_socket_parse(const char *spec, psock *s, const char **why) {
  char **w;
  int n;
  memset(s, 0, sizeof(*s));
  s->fd = -1;
  s->backlog = SOMAXCONN;
  if (jitsu_split_argv(spec, &w, &n) < 0)
    return *why = "expected 'tcp|udp:HOST:PORT' or 'unix:/PATH'", -EINVAL;
  int r = -EINVAL;
  *why = "expected 'tcp|udp:HOST:PORT' or 'unix:/PATH'";
  /* "tcp:HOST:PORT", as ready = and the other address keys write it, or
   * the older "tcp HOST:PORT". */
  char proto[8] = "";
  const char *addr = NULL;
  int opts = 1;
  if (n >= 1) {
    size_t pl = strcspn(w[0], ":");
    if (w[0][pl] == ':' && pl < sizeof(proto)) {
      memcpy(proto, w[0], pl);
      proto[pl] = '\0';
      addr = w[0] + pl + 1;
    } else if (n >= 2 && strlen(w[0]) < sizeof(proto)) {
      snprintf(proto, sizeof(proto), "%s", w[0]);
      addr = w[1];
      opts = 2;
    }
  }
  if (addr == NULL || addr[0] == '\0')
    goto out;
  if (strcmp(proto, "tcp") == 0 || strcmp(proto, "udp") == 0) {
    s->type = proto[0] == 't' ? SOCK_STREAM : SOCK_DGRAM;
    if (jitsu__parse_hostport(addr, &s->addr) < 0) {
      *why = "the address must be a numeric HOST:PORT or [IPV6]:PORT";
      goto out;
    }
    s->addr_len = s->addr.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                               : sizeof(struct sockaddr_in6);
    char text[80];
    jitsu__format_sockaddr((struct sockaddr *)&s->addr, text, sizeof(text));
    snprintf(s->key, sizeof(s->key), "%s:%s", proto, text);
  } else if (strcmp(proto, "unix") == 0) {
    struct sockaddr_un *sun = (struct sockaddr_un *)&s->addr;
    size_t len = strlen(addr);
    if (addr[0] != '/' || len >= sizeof(sun->sun_path) ||
        len + 6 > sizeof(s->key)) {
      *why = "a unix socket needs an absolute path under 108 bytes";
      goto out;
    }
    s->type = SOCK_STREAM;
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, addr, len + 1);
    s->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    snprintf(s->key, sizeof(s->key), "unix:%s", addr);
  } else {
    goto out;
  }
  if (s->type == SOCK_DGRAM)
    s->backlog = 0;
  for (int i = opts; i < n; i++)
    if (parse_option(w[i], s, why) < 0)
      goto out;
  if (s->name[0] == '\0')
    snprintf(s->name, sizeof(s->name), "%s", proto);
  r = 0;
out:
  free(w);
  return r;
}

int process_socket_bind(psock *s) {
  int fd = socket(s->addr.ss_family, s->type | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int one = 1;
  if (s->addr.ss_family != AF_UNIX)
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (s->addr.ss_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (s->addr.ss_family == AF_UNIX) {
    /* Replace a stale socket file, never one something answers on, never
     * anything else. */
    int r =
        jitsu__unix_claim(((struct sockaddr_un *)&s->addr)->sun_path, s->type);
    if (r < 0) {
      close(fd);
      return r;
    }
  }
  if (bind(fd, (struct sockaddr *)&s->addr, s->addr_len) < 0 ||
      (s->type == SOCK_STREAM && listen(fd, s->backlog) < 0)) {
    int e = -errno;
    close(fd);
    return e;
  }
  s->fd = fd;
  return 0;
}

static void socket_readable(uv_poll_t *h, int status, int events) {
  psock *s = h->data;
  proc *p = s->proc;
  (void)status, (void)events;
  /* Whatever happens, this socket is the guest's business now. */
  process_sockets_arm(p, JITSU_STATE_STARTING);
  jitsu_ctx *ctx = jitsu_vm_ctx(p->vm);
  int r = jitsu_trigger_fire(ctx, "socket", s->key, NULL, NULL, NULL);
  if (r < 0) {
    jitsu_vm_log(p->vm, JITSU_LOG_WARNING,
                 "connection on %s, but the summon failed: %s", s->key,
                 jitsu_ctx_last_error(ctx));
    process_sockets_arm(p, JITSU_STATE_FAILED);
  }
}

static void rearm_fired(uv_timer_t *t) {
  proc *p = t->data;
  process_sockets_arm(p, JITSU_STATE_STOPPED);
}

static void activity_fired(uv_timer_t *t) {
  proc *p = t->data;
  if (p != NULL)
    process_sockets_arm(p, jitsu_vm_state(p->vm));
}

/* A connection or datagram for the running guest (which takes it): the
 * vm is in use. Look again after ACTIVITY_SAMPLE_MS. */
static void activity_readable(uv_poll_t *h, int status, int events) {
  psock *s = h->data;
  proc *p = s->proc;
  (void)status, (void)events;
  jitsu_vm_touch(p->vm);
  for (size_t i = 0; i < p->n_socks; i++)
    if (p->socks[i].polling) {
      uv_poll_stop(p->socks[i].poll);
      p->socks[i].polling = false;
    }
  uv_timer_start(p->activity, activity_fired, ACTIVITY_SAMPLE_MS, 0);
}

/* The guest failed to start: the connections waiting in the kernel's
 * queue are reset (and datagrams dropped) now, not left to their clients'
 * time-outs. Returns how many. */
static unsigned reset_waiting(proc *p) {
  unsigned n = 0;
  for (size_t i = 0; i < p->n_socks; i++) {
    psock *s = &p->socks[i];
    for (unsigned k = 0; s->fd >= 0 && k < RESET_MAX; k++) {
      struct pollfd pf = {.fd = s->fd, .events = POLLIN};
      if (poll(&pf, 1, 0) != 1) /* our copy blocks: look first */
        break;
      if (s->type == SOCK_DGRAM) {
        char c;
        if (recv(s->fd, &c, 1, MSG_DONTWAIT | MSG_TRUNC) < 0)
          break;
      } else {
        int c = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c < 0)
          break;
        struct linger lg = {1, 0}; /* a reset, not an orderly close */
        setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(c);
      }
      n++;
    }
  }
  return n;
}

void process_sockets_arm(proc *p, jitsu_state state) {
  /* A guest that is not running (or is suspended) is summoned by a
   * connection; a running one serves its sockets itself. After a failure,
   * the waiting connections are reset and the sockets rest a while. */
  bool want = state == JITSU_STATE_STOPPED || state == JITSU_STATE_SUSPENDED ||
              state == JITSU_STATE_FAILED;
  if (state == JITSU_STATE_READY)
    p->failures_in_row = 0;
  if (state == JITSU_STATE_FAILED && p->rearm != NULL) {
    unsigned shift = p->failures_in_row < 6 ? p->failures_in_row : 6;
    uint64_t wait = (uint64_t)REARM_AFTER_FAILURE_MS << shift;
    if (wait > REARM_MAX_MS)
      wait = REARM_MAX_MS;
    p->failures_in_row++;
    unsigned n = reset_waiting(p);
    jitsu_vm_log(p->vm, JITSU_LOG_WARNING,
                 "not started: %u waiting connection(s) or datagram(s) "
                 "refused; its sockets summon it again in %llu ms",
                 n, (unsigned long long)wait);
    uv_timer_start(p->rearm, rearm_fired, wait, 0);
    want = false;
  } else if (p->rearm != NULL) {
    uv_timer_stop(p->rearm);
  }
  bool watch = state == JITSU_STATE_READY && p->activity != NULL;
  if (!watch && p->activity != NULL)
    uv_timer_stop(p->activity);
  for (size_t i = 0; i < p->n_socks; i++) {
    psock *s = &p->socks[i];
    if (s->fd < 0 && want && state != JITSU_STATE_SUSPENDED) {
      int r = process_socket_bind(s); /* an adopted guest let go of it */
      if (r < 0) {
        jitsu_vm_log(p->vm, JITSU_LOG_ERROR, "cannot bind %s: %s", s->key,
                     jitsu_strerror(r));
        continue;
      }
      if (uv_poll_init(jitsu_ctx_loop(jitsu_vm_ctx(p->vm)), s->poll, s->fd) < 0)
        continue;
      s->poll->data = s;
    }
    if (s->fd < 0)
      continue;
    if (want)
      uv_poll_start(s->poll, UV_READABLE, socket_readable);
    else if (watch)
      uv_poll_start(s->poll, UV_READABLE, activity_readable);
    else if (s->polling)
      uv_poll_stop(s->poll);
    s->polling = want || watch;
  }
}

/* Whether the established connection (m) is one of the guest's. */
static bool diag_matches(const proc *p, const struct inet_diag_msg *m) {
  for (size_t i = 0; i < p->n_socks; i++) {
    const psock *s = &p->socks[i];
    if (s->type != SOCK_STREAM || s->addr.ss_family != m->idiag_family)
      continue;
    if (s->addr.ss_family == AF_INET) {
      const struct sockaddr_in *a = (const struct sockaddr_in *)&s->addr;
      if (a->sin_port == m->id.idiag_sport &&
          (a->sin_addr.s_addr == INADDR_ANY ||
           a->sin_addr.s_addr == m->id.idiag_src[0]))
        return true;
    } else if (s->addr.ss_family == AF_INET6) {
      const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&s->addr;
      if (a->sin6_port == m->id.idiag_sport &&
          (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr) ||
           memcmp(&a->sin6_addr, m->id.idiag_src, 16) == 0))
        return true;
    }
  }
  return false;
}

/* Count the connections of (family) open on the guest's sockets, or
 * closed by it within its idle time, with one dump of the kernel's TCP
 * sockets. */
static int count_family(const proc *p, int family) {
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0)
    return -errno;
  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 req;
  } q;
  memset(&q, 0, sizeof(q));
  q.nlh.nlmsg_len = sizeof(q);
  q.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  q.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  q.req.sdiag_family = (uint8_t)family;
  q.req.sdiag_protocol = IPPROTO_TCP;
  q.req.idiag_states = (1u << TCP_ESTABLISHED) | (1u << TCP_SYN_RECV) |
                       (1u << TCP_CLOSE_WAIT) | (1u << TCP_FIN_WAIT1) |
                       (1u << TCP_FIN_WAIT2) | (1u << TCP_LAST_ACK) |
                       (1u << TCP_CLOSING) | (1u << TCP_TIME_WAIT);
  /* A connection the guest closed within the idle time is still there, in
   * TIME_WAIT (60 s in Linux): the arrivals that sampling missed. */
  uint64_t window = jitsu_vm_idle_timeout_ms(p->vm);
  int n = 0;
  if (send(fd, &q, sizeof(q), 0) < 0) {
    n = -errno;
    close(fd);
    return n;
  }
  static __thread char buf[32768] __attribute__((aligned(8)));
  for (;;) {
    ssize_t len = recv(fd, buf, sizeof(buf), 0);
    if (len <= 0) {
      n = len < 0 ? -errno : n;
      break;
    }
    size_t left = (size_t)len;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, left);
         h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR)
        goto done;
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
        continue;
      const struct inet_diag_msg *m = NLMSG_DATA(h);
      if (m->idiag_state == TCP_TIME_WAIT &&
          TIME_WAIT_MS - (uint64_t)m->idiag_expires >= window)
        continue; /* closed before the idle time began */
      if (diag_matches(p, m))
        n++;
    }
  }
done:
  close(fd);
  return n;
}

int process_sockets_busy(proc *p) {
  bool v4 = false, v6 = false;
  for (size_t i = 0; i < p->n_socks; i++)
    if (p->socks[i].type == SOCK_STREAM) {
      v4 |= p->socks[i].addr.ss_family == AF_INET;
      v6 |= p->socks[i].addr.ss_family == AF_INET6;
    }
  int n4 = v4 ? count_family(p, AF_INET) : 0;
  int n6 = v6 ? count_family(p, AF_INET6) : 0;
  if (n4 < 0 && n6 <= 0)
    return n4;
  return (n4 > 0 ? n4 : 0) + (n6 > 0 ? n6 : 0);
}

static void free_closed(uv_handle_t *h) {
  free(h);
}

void process_sockets_close(proc *p) {
  for (size_t i = 0; i < p->n_socks; i++) {
    psock *s = &p->socks[i];
    if (s->poll != NULL) {
      if (s->poll->data != NULL)
        uv_close((uv_handle_t *)s->poll, free_closed);
      else
        free(s->poll);
    }
    if (s->fd >= 0)
      close(s->fd);
    s->poll = NULL;
    s->fd = -1;
  }
}

int process_socket_take(psock *s, int pidfd, int target) {
  /* Our copy of the guest's descriptor (target), if it is still this
   * socket: same type, same address. Needs the right to ptrace the guest
   * (our own user, or root). */
  int fd = (int)syscall(SYS_pidfd_getfd, pidfd, target, 0);
  if (fd < 0)
    return -errno;
  int type = 0;
  socklen_t tl = sizeof(type);
  struct sockaddr_storage ss;
  socklen_t sl = sizeof(ss);
  memset(&ss, 0, sizeof(ss));
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != s->type ||
      getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 || sl != s->addr_len ||
      memcmp(&ss, &s->addr, sl) != 0) {
    close(fd);
    return -ENOTSOCK;
  }
  s->fd = fd; /* pidfd_getfd() gives it close-on-exec */
  return 0;
}
