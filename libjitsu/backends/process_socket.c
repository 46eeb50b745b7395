/* The process backend's listening sockets: parsed, bound before the guest
 * exists, handed over at spawn, and watched as socket triggers while the
 * guest is not running. */
#include "process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#define REARM_AFTER_FAILURE_MS 1000

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

void process_sockets_arm(proc *p, jitsu_state state) {
  /* A guest that is not running (or is suspended) is summoned by a
   * connection; a running one serves its sockets itself. After a failure,
   * wait a little: the connection that failed may still be queued. */
  bool want = state == JITSU_STATE_STOPPED || state == JITSU_STATE_SUSPENDED ||
              state == JITSU_STATE_FAILED;
  if (state == JITSU_STATE_FAILED && p->rearm != NULL) {
    uv_timer_start(p->rearm, rearm_fired, REARM_AFTER_FAILURE_MS, 0);
    want = false;
  } else if (p->rearm != NULL) {
    uv_timer_stop(p->rearm);
  }
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
    if (want && !s->polling)
      uv_poll_start(s->poll, UV_READABLE, socket_readable);
    else if (!want && s->polling)
      uv_poll_stop(s->poll);
    s->polling = want;
  }
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
