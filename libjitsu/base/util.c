/* Small shared helpers: hash table, strings, addresses, errors. */
#include "base.h"

#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <limits.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <time.h>

static uint32_t table_hash(const jitsu__table *t, const char *key) {
  return (uint32_t)jitsu_hash(&t->key, key, strlen(key));
}

void jitsu__table_init(jitsu__table *t) {
  memset(t, 0, sizeof(*t));
  jitsu_hash_key_random(&t->key);
}

void jitsu__table_free(jitsu__table *t) {
  free(t->buckets);
  t->buckets = NULL;
  t->mask = 0;
  t->count = 0;
}

jitsu__hnode *jitsu__table_find(const jitsu__table *t, const char *key) {
  if (t->buckets == NULL)
    return NULL;
  uint32_t h = table_hash(t, key);
  for (jitsu__hnode *n = t->buckets[h & t->mask]; n != NULL; n = n->next)
    if (n->hash == h && strcmp(n->key, key) == 0)
      return n;
  return NULL;
}

static int table_grow(jitsu__table *t) {
  size_t size = t->buckets ? (t->mask + 1) * 2 : 16;
  jitsu__hnode **b = calloc(size, sizeof(*b));
  if (b == NULL)
    return -ENOMEM;
  if (t->buckets != NULL) {
    for (size_t i = 0; i <= t->mask; i++) {
      jitsu__hnode *n = t->buckets[i];
      while (n != NULL) {
        jitsu__hnode *next = n->next;
        n->next = b[n->hash & (size - 1)];
        b[n->hash & (size - 1)] = n;
        n = next;
      }
    }
    free(t->buckets);
  }
  t->buckets = b;
  t->mask = size - 1;
  return 0;
}

int jitsu__table_insert(jitsu__table *t, jitsu__hnode *node) {
  if (t->buckets == NULL || t->count >= t->mask + 1) {
    int r = table_grow(t);
    if (r < 0)
      return r;
  }
  node->hash = table_hash(t, node->key);
  node->next = t->buckets[node->hash & t->mask];
  t->buckets[node->hash & t->mask] = node;
  t->count++;
  return 0;
}

void jitsu__table_remove(jitsu__table *t, jitsu__hnode *node) {
  jitsu__hnode **pp = &t->buckets[node->hash & t->mask];
  while (*pp != NULL && *pp != node)
    pp = &(*pp)->next;
  if (*pp == node) {
    *pp = node->next;
    t->count--;
  }
}

void jitsu__free_handle(uv_handle_t *h) {
  free(h);
}

uv_timer_t *jitsu__timer_get(uv_timer_t **t, uv_loop_t *loop, void *data) {
  if (*t == NULL && (*t = malloc(sizeof(**t))) != NULL) {
    uv_timer_init(loop, *t);
    (*t)->data = data;
  }
  return *t;
}

void jitsu__timer_drop(uv_timer_t **t) {
  if (*t == NULL)
    return;
  (*t)->data = NULL;
  uv_close((uv_handle_t *)*t, jitsu__free_handle);
  *t = NULL;
}

char *jitsu__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d != NULL)
    memcpy(d, s, n);
  return d;
}

int jitsu__parse_hostport(const char *text, struct sockaddr_storage *ss) {
  char host[64];
  const char *port;
  size_t hlen;
  memset(ss, 0, sizeof(*ss));
  if (text[0] == '[') {
    const char *end = strchr(text, ']');
    if (end == NULL || end[1] != ':')
      return -EINVAL;
    hlen = (size_t)(end - text - 1);
    if (hlen >= sizeof(host))
      return -EINVAL;
    memcpy(host, text + 1, hlen);
    port = end + 2;
  } else {
    const char *colon = strrchr(text, ':');
    if (colon == NULL)
      return -EINVAL;
    hlen = (size_t)(colon - text);
    if (hlen >= sizeof(host) || memchr(text, ':', hlen) != NULL)
      return -EINVAL;
    memcpy(host, text, hlen);
    port = colon + 1;
  }
  host[hlen] = '\0';
  char *end;
  if (*port < '0' || *port > '9')
    return -EINVAL;
  unsigned long p = strtoul(port, &end, 10);
  if (*end != '\0' || p == 0 || p > 65535)
    return -EINVAL;
  struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
  if (text[0] != '[' && inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    in4->sin_port = htons((uint16_t)p);
    return 0;
  }
  if (text[0] == '[' && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)p);
    return 0;
  }
  return -EINVAL;
}

int jitsu__parse_ready_address(const char *text, bool with_path,
                               struct sockaddr_storage *ss,
                               char path[JITSU__READY_PATH_MAX]) {
  char hostport[96];
  const char *slash = with_path ? strchr(text, '/') : NULL;
  size_t n = slash ? (size_t)(slash - text) : strlen(text);
  if (n >= sizeof(hostport))
    return -EINVAL;
  memcpy(hostport, text, n);
  hostport[n] = '\0';
  if (jitsu__parse_hostport(hostport, ss) < 0)
    return -EINVAL;
  const char *p = slash ? slash : "/";
  if (strlen(p) >= JITSU__READY_PATH_MAX)
    return -EINVAL;
  for (const char *c = p; *c; c++) /* one request line: no space, no CTL */
    if ((unsigned char)*c <= ' ' || *c == 0x7f)
      return -EINVAL;
  strcpy(path, p);
  return 0;
}

void jitsu__format_sockaddr(const struct sockaddr *sa, char *buf, size_t size) {
  char host[INET6_ADDRSTRLEN];
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host));
    snprintf(buf, size, "%s:%u", host, ntohs(in4->sin_port));
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    snprintf(buf, size, "[%s]:%u", host, ntohs(in6->sin6_port));
  } else {
    snprintf(buf, size, "(family %d)", sa->sa_family);
  }
}

int jitsu__check_vm_name(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > 63 || name[0] == '.')
    return -EINVAL;
  /* "NAME.spareN" names the spares of vm NAME's pool (their domains and
   * records): no vm may be called so. */
  const char *dot = strrchr(name, '.');
  if (dot != NULL && strncmp(dot, ".spare", 6) == 0 && dot[6] != '\0' &&
      strspn(dot + 6, "0123456789") == strlen(dot + 6))
    return -EINVAL;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
      return -EINVAL;
  }
  return 0;
}

const char *jitsu_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
  case JITSU_ESTATE:
    return "operation not allowed in the vm's current state";
  case JITSU_ELIMIT:
    return "limit reached (max-live, max-starting or max-waiters)";
  case JITSU_EEXITED:
    return "the guest exited before it was ready";
  case JITSU_ETIMEDOUT:
    return "the guest was not ready within its ready-timeout";
  case JITSU_ECANCELED:
    return "canceled by a stop";
  default:
    if (err < 0)
      return strerror(-err);
    return "unknown error";
  }
}

const char *jitsu_version(void) {
  return JITSU_VERSION_STRING;
}

const char *jitsu_log_level_name(jitsu_log_level level) {
  static const char *const names[] = {"error", "warning", "info", "debug"};
  if ((unsigned)level < JITSU__ARRAY_SIZE(names))
    return names[level];
  return "unknown";
}

int jitsu_error_set(jitsu_error *err, int code, const char *key,
                    const char *fmt, ...) {
  if (err == NULL)
    return code;
  char text[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  err->code = code;
  snprintf(err->key, sizeof(err->key), "%s", key ? key : "");
  char where[300] = ""; /* "file:line: ", or "file: " for the whole file */
  if (err->file[0] != '\0' && err->line > 0)
    snprintf(where, sizeof(where), "%s:%u: ", err->file, err->line);
  else if (err->file[0] != '\0')
    snprintf(where, sizeof(where), "%s: ", err->file);
  snprintf(err->message, sizeof(err->message), "%s%s%s%s", where,
           key ? key : "", key ? ": " : "", text);
  return code;
}

int jitsu__sub_add(jitsu__sub **list, jitsu__any_fn fn, void *arg) {
  jitsu__sub *s = malloc(sizeof(*s));
  if (s == NULL)
    return -ENOMEM;
  s->fn = fn;
  s->arg = arg;
  s->next = NULL;
  while (*list != NULL)
    list = &(*list)->next;
  *list = s;
  return 0;
}

int jitsu__sub_remove(jitsu__sub **list, jitsu__any_fn fn, void *arg) {
  for (; *list != NULL; list = &(*list)->next) {
    if ((*list)->fn == fn && (*list)->arg == arg) {
      jitsu__sub *s = *list;
      *list = s->next;
      free(s);
      return 0;
    }
  }
  return -ENOENT;
}

void jitsu__sub_clear(jitsu__sub **list) {
  while (*list != NULL) {
    jitsu__sub *s = *list;
    *list = s->next;
    free(s);
  }
}

int jitsu_sd_notify(const char *state) {
  const char *path = getenv("NOTIFY_SOCKET");
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  if (path == NULL)
    return 0;
  size_t len = strlen(path);
  if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sun.sun_path))
    return -EINVAL;
  memcpy(sun.sun_path, path, len);
  if (path[0] == '@')
    sun.sun_path[0] = '\0';
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  int r = 0;
  if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun,
             alen) < 0)
    r = -errno;
  close(fd);
  return r;
}

int jitsu__pidfd_open(pid_t pid) {
  return (int)syscall(SYS_pidfd_open, pid, 0);
}

int jitsu__free_tcp_port(struct sockaddr_in *sin) {
  sin->sin_family = AF_INET;
  sin->sin_port = 0;
  socklen_t len = sizeof(*sin);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int r = fd < 0 || bind(fd, (struct sockaddr *)sin, sizeof(*sin)) < 0 ||
                  getsockname(fd, (struct sockaddr *)sin, &len) < 0
              ? -errno
              : 0;
  if (fd >= 0)
    close(fd);
  return r;
}

const char *jitsu__hostfwd_parts(const char *rule, char *addr, size_t size,
                                 unsigned *port) {
  const char *dash = strchr(rule, '-');
  if (strncmp(rule, "tcp:", 4) != 0 || dash == NULL)
    return NULL;
  /* The last colon before the dash: "tcp:"'s when there is no other. */
  const char *colon = memrchr(rule, ':', (size_t)(dash - rule));
  size_t alen = colon > rule + 4 ? (size_t)(colon - rule - 4) : 0;
  if (addr != NULL) {
    if (alen >= size)
      return NULL;
    memcpy(addr, rule + 4, alen);
    addr[alen] = '\0';
  }
  *port = (unsigned)strtoul(colon + 1, NULL, 10);
  return dash + 1;
}

int jitsu__bridge_port(const char *bridge, const char *ifname, bool join,
                       const char **what) {
  struct ifreq idx, br;
  memset(&idx, 0, sizeof(idx));
  memset(&br, 0, sizeof(br));
  *what = "interface name too long";
  if (strlen(ifname) >= sizeof(idx.ifr_name) ||
      strlen(bridge) >= sizeof(br.ifr_name))
    return ENAMETOOLONG;
  memcpy(idx.ifr_name, ifname, strlen(ifname));
  memcpy(br.ifr_name, bridge, strlen(bridge));
  *what = "socket";
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0)
    return errno;
  int e = 0;
  *what = "cannot find the interface";
  if (ioctl(s, SIOCGIFINDEX, &idx) < 0) {
    e = errno;
  } else {
    br.ifr_ifindex = idx.ifr_ifindex;
    *what =
        join ? "cannot add it to the bridge" : "cannot take it off the bridge";
    if (ioctl(s, join ? SIOCBRADDIF : SIOCBRDELIF, &br) < 0)
      e = errno;
  }
  close(s);
  return e;
}

int jitsu__reap(pid_t pid, int pidfd, siginfo_t *si) {
  memset(si, 0, sizeof(*si));
  return pidfd >= 0
             ? waitid((idtype_t)P_PIDFD, (id_t)pidfd, si, WEXITED | WNOHANG)
             : waitid(P_PID, (id_t)pid, si, WEXITED | WNOHANG);
}

bool jitsu__pid_ended(pid_t pid, unsigned long long starttime) {
  siginfo_t si;
  memset(&si, 0, sizeof(si));
  if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0)
    return si.si_pid != 0; /* our child: left for its reaper */
  unsigned long long start = 0;
  char state = 0;
  return jitsu__proc_stat(pid, &start, &state) < 0 || start != starttime ||
         state == 'Z' || state == 'X';
}

/* Read the state letter and start time (fields 3 and 22) of the process
 * whose stat file is (path); async-signal-safe, so that a child between
 * fork and exec can read its own. The command name (field 2) may hold
 * spaces and parentheses: fields count from the last ')'. 0 or -errno. */
static int read_stat(const char *path, unsigned long long *starttime,
                     char *state) {
  char buf[1024];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  ssize_t n = read(fd, buf, sizeof(buf));
  close(fd);
  const char *p = NULL, *end = buf + (n > 0 ? n : 0);
  for (const char *c = buf; c < end; c++)
    if (*c == ')')
      p = c;
  if (p == NULL || p + 2 >= end || p[1] != ' ')
    return -EIO;
  if (state != NULL)
    *state = p[2];
  int field = 2;
  for (; p < end && field < 22; p++)
    if (*p == ' ')
      field++;
  if (field < 22 || p >= end || *p < '0' || *p > '9')
    return -EIO;
  unsigned long long v = 0;
  for (; p < end && *p >= '0' && *p <= '9'; p++)
    v = v * 10 + (unsigned long long)(*p - '0');
  if (starttime != NULL)
    *starttime = v;
  return 0;
}

int jitsu__proc_stat(pid_t pid, unsigned long long *starttime, char *state) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  return read_stat(path, starttime, state);
}

int jitsu__child_record_prepare(jitsu__child_record *rec, const char *path) {
  if (snprintf(rec->path, sizeof(rec->path), "%s", path) >=
          (int)sizeof(rec->path) ||
      snprintf(rec->tmp, sizeof(rec->tmp), "%s.tmp", path) >=
          (int)sizeof(rec->tmp))
    return -ENAMETOOLONG;
  rec->parent = getpid();
  return 0;
}

/* Append (v) in decimal to (out) at (*len); async-signal-safe. */
static void put_ull(char *out, size_t *len, unsigned long long v) {
  char digits[24];
  size_t n = 0;
  do {
    digits[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0);
  while (n > 0)
    out[(*len)++] = digits[--n];
}

int jitsu__child_record_write(const jitsu__child_record *rec) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
    return -1;
  if (getppid() != rec->parent) /* the parent died before the prctl */
    _exit(127);
  char text[48];
  size_t len = 0;
  put_ull(text, &len, (unsigned long long)getpid());
  text[len++] = ' ';
  unsigned long long start = 0;
  read_stat("/proc/self/stat", &start, NULL); /* 0 if unreadable */
  put_ull(text, &len, start);
  text[len++] = '\n';
  int fd = open(rec->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                0600);
  if (fd < 0)
    return -1;
  ssize_t w = write(fd, text, len);
  int e = w == (ssize_t)len ? 0 : w < 0 ? errno : EIO;
  close(fd);
  if (e == 0 && rename(rec->tmp, rec->path) < 0)
    e = errno;
  if (e != 0) {
    unlink(rec->tmp);
    errno = e;
    return -1;
  }
  return prctl(PR_SET_PDEATHSIG, 0); /* from now on it outlives its parent */
}

int jitsu__record_adopt(const char *path, pid_t *pid, int *pidfd,
                        unsigned long long *starttime) {
  char text[64];
  int rfd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (rfd < 0)
    return 0;
  ssize_t n = read(rfd, text, sizeof(text) - 1);
  close(rfd);
  text[n > 0 ? n : 0] = '\0';
  int p = 0;
  unsigned long long start = 0, now = 0;
  int ok = sscanf(text, "%d %llu", &p, &start) == 2 && p > 1;
  /* Take a pidfd first, then check that it is still the same process: a
   * pid reused since the record was written has another start time. */
  int fd = ok ? jitsu__pidfd_open(p) : -1;
  bool nosys = ok && fd < 0 && errno == ENOSYS; /* the caller watches by pid */
  if ((fd >= 0 || nosys) && jitsu__proc_stat(p, &now, NULL) == 0 &&
      now == start) {
    *pid = p;
    *pidfd = fd;
    *starttime = start;
    return 1;
  }
  if (fd >= 0)
    close(fd);
  unlink(path);
  return -ESTALE;
}

int jitsu__unix_claim(const char *path, int type) {
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  struct stat st;
  if (strlen(path) >= sizeof(sun.sun_path))
    return -ENAMETOOLONG;
  if (lstat(path, &st) < 0)
    return errno == ENOENT ? 0 : -errno;
  if (!S_ISSOCK(st.st_mode))
    return -EEXIST;
  memcpy(sun.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -errno;
  /* A listener answers (or its backlog is full: EAGAIN): it is alive. */
  int r = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 ||
                  errno == EAGAIN || errno == EINPROGRESS
              ? -EADDRINUSE
              : 0;
  close(fd);
  if (r == 0 && unlink(path) < 0 && errno != ENOENT)
    r = -errno;
  return r;
}

/* Bind (fd) at (path) with (mode) from the start: bound inside a private
 * directory, given its mode (and group), then renamed into place, so that
 * nobody can connect before it has its final mode. (umask is process-wide:
 * changing it would race with other threads, libvirt's among them.) */
static int bind_with_mode(int fd, const char *path, mode_t mode, gid_t gid,
                          bool group) {
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  char dir[sizeof(sun.sun_path)];
  const char *slash = strrchr(path, '/');
  int n = slash ? snprintf(dir, sizeof(dir), "%.*s/.jitsu-XXXXXX",
                           (int)(slash - path), path)
                : snprintf(dir, sizeof(dir), ".jitsu-XXXXXX");
  if (n < 0 || (size_t)n + 3 >= sizeof(sun.sun_path))
    return -ENAMETOOLONG;
  if (mkdtemp(dir) == NULL)
    return -errno;
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/s", dir);
  int r = 0;
  if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
      chmod(sun.sun_path, mode) < 0 ||
      (group && chown(sun.sun_path, (uid_t)-1, gid) < 0) ||
      rename(sun.sun_path, path) < 0)
    r = -errno;
  unlink(sun.sun_path); /* (gone already once renamed) */
  rmdir(dir);
  return r;
}

int jitsu__listen_unix(const char *what, const char *path, int type,
                       int backlog, gid_t gid, bool group, char *why,
                       size_t size) {
  int r = jitsu__unix_claim(path, type & ~SOCK_NONBLOCK);
  if (r == -ENAMETOOLONG)
    return snprintf(why, size, "%s path too long: %s", what, path), r;
  if (r == -EEXIST)
    return snprintf(why, size, "%s exists and is not a socket", path), r;
  if (r == -EADDRINUSE)
    return snprintf(why, size, "another controller answers on %s", path), r;
  if (r < 0)
    return snprintf(why, size, "%s %s: %s", what, path, strerror(-r)), r;
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return snprintf(why, size, "%s: %s", what, strerror(errno)), -errno;
  r = bind_with_mode(fd, path, group ? 0660 : 0600, gid, group);
  if (r == 0 && listen(fd, backlog) < 0) {
    r = -errno;
    unlink(path);
  }
  if (r < 0) {
    close(fd);
    return snprintf(why, size, "%s %s: %s", what, path, strerror(-r)), r;
  }
  return fd;
}

int jitsu__read_bounded(const char *path, size_t max, char **text, size_t *len,
                        char *why, size_t size) {
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  struct stat st;
  int r = 0;
  *text = NULL;
  if (fd < 0 || fstat(fd, &st) < 0) {
    r = -errno;
    snprintf(why, size, "%s: %s", path, strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    r = -EINVAL;
    snprintf(why, size, "%s: not a regular file", path);
  } else if ((uint64_t)st.st_size > max) {
    r = -EFBIG;
    snprintf(why, size, "%s: over %zu bytes", path, max);
  } else if ((*text = malloc((size_t)st.st_size + 1)) == NULL) {
    r = -ENOMEM;
    snprintf(why, size, "out of memory");
  } else {
    ssize_t n = read(fd, *text, (size_t)st.st_size);
    if (n < 0) {
      r = -errno;
      snprintf(why, size, "%s: %s", path, strerror(errno));
      free(*text);
      *text = NULL;
    } else {
      (*text)[n] = '\0';
      *len = (size_t)n;
    }
  }
  if (fd >= 0)
    close(fd);
  return r;
}

/* Whether stderr is the journal: $JOURNAL_STREAM is "DEVICE:INODE" of it. */
static bool stderr_is_journal(void) {
  const char *js = getenv("JOURNAL_STREAM");
  unsigned long long dev, ino;
  struct stat st;
  return js != NULL && sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
         fstat(STDERR_FILENO, &st) == 0 &&
         (unsigned long long)st.st_dev == dev &&
         (unsigned long long)st.st_ino == ino;
}

void jitsu_log_stderr(jitsu_log_level level, const char *message, void *arg) {
  static const int priority[] = {3, 4, 6, 7}; /* syslog's err .. debug */
  const char *program = arg != NULL ? arg : "jitsu";
  const char *what = jitsu_log_level_name(level);
  if (stderr_is_journal()) {
    fprintf(stderr, "<%d>%s: %s: %s\n",
            priority[(unsigned)level < 4 ? level : 3], program, what, message);
    return;
  }
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  char when[32];
  strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
  fprintf(stderr, "%s.%03ldZ %s: %s: %s\n", when, ts.tv_nsec / 1000000, program,
          what, message);
}

bool jitsu__file_holds(const char *path, const char *want) {
  FILE *f = want != NULL ? fopen(path, "re") : NULL;
  bool ok = false;
  if (f != NULL) {
    size_t len = strlen(want);
    char *have = malloc(len + 2);
    ok = have != NULL && fread(have, 1, len + 1, f) == len &&
         memcmp(have, want, len) == 0;
    free(have);
    fclose(f);
  }
  return ok;
}

bool jitsu__file_put(const char *path, const char *text) {
  FILE *f = text != NULL ? fopen(path, "we") : NULL;
  bool written = f != NULL && fputs(text, f) >= 0;
  if (f != NULL && fclose(f) != 0) /* closed whether the write worked */
    written = false;
  return written;
}

uint64_t jitsu__backoff_ms(unsigned fails, uint64_t first_ms, uint64_t max_ms) {
  uint64_t ms = first_ms;
  for (unsigned i = 1; i < fails && ms < max_ms; i++)
    ms *= 2;
  return ms > max_ms ? max_ms : ms;
}

void jitsu__file_stamp(const char *path, char *out, size_t size) {
  struct stat st;
  if (size > 0)
    out[0] = '\0';
  if (path != NULL && stat(path, &st) == 0)
    snprintf(out, size, "%lld bytes, modified %lld.%09ld",
             (long long)st.st_size, (long long)st.st_mtim.tv_sec,
             st.st_mtim.tv_nsec);
}
