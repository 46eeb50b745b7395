/*
 * hello: a small HTTP service for the examples, tests and benchmarks.
 *
 * It serves "hello from NAME" (and, for proxy tests, GET /bytes/N, request
 * bodies, and an echoing Upgrade) on the sockets that it is handed with the
 * systemd socket activation protocol (LISTEN_FDS, LISTEN_PID), or on the
 * one it binds itself (--listen HOST:PORT), and tells its supervisor that
 * it is ready with READY=1 on $NOTIFY_SOCKET. Only libc: it is meant to
 * be read as well as run.
 *
 *   hello [--listen [udp:]IPV4:PORT] [--name NAME] [--boot-ms MS]
 *         [--record FILE] [--exit-after-ready CODE]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 16
#define REQUEST_MAX 8192

static volatile sig_atomic_t stop;

static void on_term(int sig) {
  (void)sig;
  stop = 1;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !stop)
    ;
}

static int listen_on(const char *spec) {
  char host[64];
  bool udp = strncmp(spec, "udp:", 4) == 0;
  if (udp)
    spec += 4;
  const char *colon = strrchr(spec, ':');
  if (colon == NULL || (size_t)(colon - spec) >= sizeof(host))
    return -1;
  memcpy(host, spec, (size_t)(colon - spec));
  host[colon - spec] = '\0';
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)atoi(colon + 1))};
  if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
    return -1;
  int fd = socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
      (!udp && listen(fd, SOMAXCONN) < 0))
    return -1;
  return fd;
}

/* The fds handed over by socket activation, or 0 if none. */
static int handed_fds(void) {
  const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
  if (pid == NULL || fds == NULL || atol(pid) != (long)getpid())
    return 0;
  int n = atoi(fds);
  return n > 0 && n <= MAX_FDS ? n : 0;
}

static void notify_ready(void) {
  const char *path = getenv("NOTIFY_SOCKET");
  if (path == NULL || (path[0] != '/' && path[0] != '@'))
    return;
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  size_t len = strlen(path);
  if (len >= sizeof(sun.sun_path))
    return;
  memcpy(sun.sun_path, path, len);
  if (path[0] == '@')
    sun.sun_path[0] = '\0';
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return;
  socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  const char msg[] = "READY=1\nSTATUS=serving\n";
  if (sendto(fd, msg, sizeof(msg) - 1, 0, (struct sockaddr *)&sun, alen) < 0)
    perror("hello: notify");
  close(fd);
}

/* The value of header (name) in the request head (req), or NULL. */
static const char *header(const char *req, const char *name, char *out,
                          size_t size) {
  size_t n = strlen(name);
  for (const char *p = strstr(req, "\r\n"); p != NULL;
       p = strstr(p + 2, "\r\n")) {
    if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':') {
      const char *v = p + 3 + n;
      while (*v == ' ')
        v++;
      size_t l = strcspn(v, "\r\n");
      if (l >= size)
        l = size - 1;
      memcpy(out, v, l);
      out[l] = '\0';
      return out;
    }
  }
  return NULL;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Read a chunked body from (fd), starting with (have, n) already read;
 * return the payload's size. */
static unsigned long long read_chunked(int fd, const char *have, size_t n) {
  static char buf[65536 + 64];
  size_t len = n < sizeof(buf) ? n : sizeof(buf), pos = 0;
  unsigned long long total = 0, left = 0;
  int want_size = 1;
  memcpy(buf, have, len);
  for (;;) {
    if (want_size) {
      char *eol = memchr(buf + pos, '\n', len - pos);
      if (eol != NULL) {
        left = strtoull(buf + pos, NULL, 16);
        pos = (size_t)(eol - buf) + 1;
        if (left == 0)
          return total; /* the last chunk (trailers are not read) */
        want_size = 0;
        left += 2; /* the CRLF after the data */
        continue;
      }
    } else if (pos < len) {
      size_t take = len - pos < left ? len - pos : (size_t)left;
      pos += take;
      left -= take;
      total += take;
      if (left == 0) {
        total -= 2;
        want_size = 1;
      }
      continue;
    }
    memmove(buf, buf + pos, len - pos);
    len -= pos;
    pos = 0;
    ssize_t r = read(fd, buf + len, sizeof(buf) - len);
    if (r <= 0)
      return total;
    len += (size_t)r;
  }
}

/* One connection: "GET /bytes/N" streams N bytes, a request with a body
 * gets its size back, an Upgrade is accepted and echoed (for proxies'
 * tunnel tests), anything else gets "hello from NAME". */
static void serve(int lfd, const char *name) {
  int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0)
    return;
  struct timeval tv = {5, 0};
  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char req[REQUEST_MAX + 1], *end = NULL;
  size_t got = 0;
  while (got < REQUEST_MAX && end == NULL) {
    ssize_t n = read(c, req + got, REQUEST_MAX - got);
    if (n <= 0)
      break;
    got += (size_t)n;
    req[got] = '\0';
    end = strstr(req, "\r\n\r\n");
  }
  char v[64], resp[512], body[256];
  if (end == NULL) {
    close(c);
    return;
  }
  size_t head = (size_t)(end - req) + 4;
  unsigned long long want = 0;
  int blen;
  if (header(req, "Upgrade", v, sizeof(v)) != NULL) {
    int rlen = snprintf(resp, sizeof(resp),
                        "HTTP/1.1 101 Switching Protocols\r\nConnection: "
                        "Upgrade\r\nUpgrade: %s\r\n\r\n",
                        v);
    if (write_all(c, resp, (size_t)rlen) == 0 &&
        write_all(c, req + head, got - head) == 0) {
      char buf[4096];
      ssize_t n;
      while ((n = read(c, buf, sizeof(buf))) > 0 &&
             write_all(c, buf, (size_t)n) == 0)
        ;
    }
    close(c);
    return;
  }
  if (strncmp(req, "GET /bytes/", 11) == 0) {
    want = strtoull(req + 11, NULL, 10);
    int rlen = snprintf(resp, sizeof(resp),
                        "HTTP/1.1 200 OK\r\nContent-Type: "
                        "application/octet-stream\r\nContent-Length: "
                        "%llu\r\nConnection: close\r\n\r\n",
                        want);
    static char chunk[65536];
    memset(chunk, 'x', sizeof(chunk));
    int ok = write_all(c, resp, (size_t)rlen) == 0;
    while (ok && want > 0) {
      size_t n = want < sizeof(chunk) ? (size_t)want : sizeof(chunk);
      ok = write_all(c, chunk, n) == 0;
      want -= n;
    }
    close(c);
    return;
  }
  if (header(req, "Transfer-Encoding", v, sizeof(v)) != NULL &&
      strcasecmp(v, "chunked") == 0) {
    unsigned long long seen = read_chunked(c, req + head, got - head);
    blen = snprintf(body, sizeof(body), "received %llu bytes\n", seen);
  } else if (header(req, "Content-Length", v, sizeof(v)) != NULL) {
    unsigned long long len = strtoull(v, NULL, 10), seen = got - head;
    char buf[65536];
    ssize_t n;
    while (seen < len && (n = read(c, buf, sizeof(buf))) > 0)
      seen += (unsigned long long)n;
    blen = snprintf(body, sizeof(body), "received %llu bytes\n", seen);
  } else {
    blen = snprintf(body, sizeof(body), "hello from %s\n", name);
  }
  int rlen = snprintf(resp, sizeof(resp),
                      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                      "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                      blen, body);
  if (write_all(c, resp, (size_t)rlen) < 0)
    perror("hello: write");
  close(c);
}

static void answer_datagram(int fd, const char *name) {
  char buf[512];
  struct sockaddr_storage from;
  socklen_t flen = sizeof(from);
  ssize_t n = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT,
                       (struct sockaddr *)&from, &flen);
  if (n < 0)
    return;
  int len = snprintf(buf, sizeof(buf), "hello from %s\n", name);
  sendto(fd, buf, (size_t)len, 0, (struct sockaddr *)&from, flen);
}

int main(int argc, char **argv) {
  const char *listen_spec = NULL, *name = "hello", *record = NULL;
  long boot_ms = 0;
  int exit_code = -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (v != NULL && strcmp(a, "--listen") == 0)
      listen_spec = v, i++;
    else if (v != NULL && strcmp(a, "--name") == 0)
      name = v, i++;
    else if (v != NULL && strcmp(a, "--boot-ms") == 0)
      boot_ms = atol(v), i++;
    else if (v != NULL && strcmp(a, "--record") == 0)
      record = v, i++;
    else if (v != NULL && strcmp(a, "--exit-after-ready") == 0)
      exit_code = atoi(v), i++;
    else {
      fprintf(
          stderr,
          "usage: hello [--listen [udp:]IPV4:PORT] [--name NAME] [--boot-ms MS]"
          " [--record FILE] [--exit-after-ready CODE]\n");
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN); /* a client that leaves: EPIPE, not death */
  struct sigaction sa = {.sa_handler = on_term};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  if (record != NULL) { /* one line per start: tests count spawns */
    FILE *f = fopen(record, "a");
    if (f != NULL)
      fprintf(f, "%d\n", (int)getpid()), fclose(f);
  }
  sleep_ms(boot_ms); /* stands for a guest's boot */
  int fds[MAX_FDS], nfds = handed_fds();
  for (int i = 0; i < nfds; i++)
    fds[i] = 3 + i;
  if (nfds == 0 && listen_spec != NULL) {
    fds[0] = listen_on(listen_spec);
    if (fds[0] < 0) {
      fprintf(stderr, "hello: cannot listen on %s: %s\n", listen_spec,
              strerror(errno));
      return 1;
    }
    nfds = 1;
  }
  if (nfds == 0) {
    fprintf(stderr, "hello: no socket handed over and no --listen\n");
    return 2;
  }
  fprintf(stderr, "hello %s: pid %d serving %d socket(s)\n", name,
          (int)getpid(), nfds);
  notify_ready();
  if (exit_code >= 0)
    return exit_code;
  struct pollfd pfd[MAX_FDS];
  while (!stop) {
    for (int i = 0; i < nfds; i++)
      pfd[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    if (poll(pfd, (nfds_t)nfds, -1) < 0)
      continue;
    for (int i = 0; i < nfds; i++) {
      if (!(pfd[i].revents & POLLIN))
        continue;
      int type = 0;
      socklen_t tl = sizeof(type);
      getsockopt(fds[i], SOL_SOCKET, SO_TYPE, &type, &tl);
      if (type == SOCK_DGRAM)
        answer_datagram(fds[i], name);
      else
        serve(fds[i], name);
    }
  }
  fprintf(stderr, "hello %s: stopping\n", name);
  return 0;
}
