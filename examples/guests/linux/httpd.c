/* The small Linux guest's HTTP server: one process, no fork per request
 * (busybox httpd forks for each, which costs 8-17 ms per request under
 * TCG, more than the whole summon from a pool). It serves the plain files
 * of one directory over HTTP/1.0 and 1.1 GET and HEAD, one request per
 * connection. It returns once it listens (its child serves), so that the
 * port is open when the guest's init goes on.
 * usage: httpd PORT DOCROOT */
#define _GNU_SOURCE /* accept4 */
#include "request.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define CONN_MAX 64
#define HEAD_MS 5000 /* a client has this long to send its request head */

typedef struct conn {
  int fd; /* -1: a free slot */
  size_t got;
  long long deadline;
  char buf[REQ_HEAD_MAX];
} conn;

static conn conns[CONN_MAX];
static int docroot = -1;

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *reason(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 431:
    return "Request Header Fields Too Large";
  case 505:
    return "HTTP Version Not Supported";
  default:
    return "Internal Server Error";
  }
}

static bool write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return false;
    p += w, n -= (size_t)w;
  }
  return true;
}

/* Answer (c) with (status) and, for 200, the file of (r); the connection
 * is closed after. */
static void answer(conn *c, int status, const request *r) {
  int file = -1;
  struct stat st;
  if (status == 200) {
    file = openat(docroot, r->name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (file < 0 || fstat(file, &st) < 0 || !S_ISREG(st.st_mode))
      status = 404;
  }
  char head[256];
  const char *type = "text/plain";
  size_t nlen = status == 200 ? strlen(r->name) : 0;
  if (nlen > 5 && strcmp(r->name + nlen - 5, ".html") == 0)
    type = "text/html";
  long long length = status == 200 ? (long long)st.st_size
                                   : (long long)strlen(reason(status)) + 1;
  int n = snprintf(head, sizeof(head),
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                   "Content-Length: %lld\r\nConnection: close\r\n\r\n",
                   status, reason(status), type, length);
  /* Blocking from here, bounded: a client that does not read is left. */
  fcntl(c->fd, F_SETFL, 0);
  struct timeval tv = {.tv_sec = 2};
  setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  bool ok = write_all(c->fd, head, (size_t)n);
  if (ok && status != 200 && (r == NULL || !r->head)) {
    char body[64];
    int b = snprintf(body, sizeof(body), "%s\n", reason(status));
    ok = write_all(c->fd, body, (size_t)b);
  }
  if (ok && status == 200 && !r->head) {
    off_t off = 0;
    while (off < st.st_size &&
           sendfile(c->fd, file, &off, (size_t)(st.st_size - off)) > 0)
      ;
  }
  if (file >= 0)
    close(file);
  close(c->fd);
  c->fd = -1;
}

static void readable(conn *c) {
  ssize_t n = read(c->fd, c->buf + c->got, sizeof(c->buf) - c->got);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (n <= 0) {
    close(c->fd);
    c->fd = -1;
    return;
  }
  c->got += (size_t)n;
  size_t head = request_head_length(c->buf, c->got);
  request r;
  if (head > 0)
    answer(c, request_parse(c->buf, head, &r), &r);
  else if (c->got == sizeof(c->buf))
    answer(c, 431, NULL);
}

static void accept_one(int ls) {
  int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0)
    return;
  for (int i = 0; i < CONN_MAX; i++)
    if (conns[i].fd < 0) {
      conns[i].fd = fd;
      conns[i].got = 0;
      conns[i].deadline = now_ms() + HEAD_MS;
      return;
    }
  close(fd); /* full: the client sees a reset, and may try again */
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: httpd PORT DOCROOT\n");
    return 2;
  }
  char *end;
  long port = strtol(argv[1], &end, 10);
  if (*end != '\0' || port < 1 || port > 65535) {
    fprintf(stderr, "httpd: '%s' is not a port\n", argv[1]);
    return 2;
  }
  docroot = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (docroot < 0) {
    fprintf(stderr, "httpd: %s: %s\n", argv[2], strerror(errno));
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  /* IPv6 and IPv4 on one socket; IPv4 alone on a kernel without IPv6. */
  int one = 1, zero = 0;
  struct sockaddr_in6 a6 = {.sin6_family = AF_INET6,
                            .sin6_port = htons((uint16_t)port)};
  struct sockaddr_in a4 = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  int ls = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  bool v6 = ls >= 0;
  if (!v6)
    ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (ls < 0 ||
      setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
      (v6 &&
       setsockopt(ls, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0) ||
      (v6 ? bind(ls, (struct sockaddr *)&a6, sizeof(a6))
          : bind(ls, (struct sockaddr *)&a4, sizeof(a4))) < 0 ||
      listen(ls, 128) < 0) {
    fprintf(stderr, "httpd: port %ld: %s\n", port, strerror(errno));
    return 1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "httpd: fork: %s\n", strerror(errno));
    return 1;
  }
  if (pid > 0)
    return 0; /* it listens: the child serves */
  setsid();
  for (int i = 0; i < CONN_MAX; i++)
    conns[i].fd = -1;
  struct pollfd p[CONN_MAX + 1];
  for (;;) {
    int n = 0, at[CONN_MAX];
    p[n++] = (struct pollfd){.fd = ls, .events = POLLIN};
    long long now = now_ms(), wait = -1;
    for (int i = 0; i < CONN_MAX; i++) {
      if (conns[i].fd < 0)
        continue;
      if (conns[i].deadline <= now) { /* too slow: let it go */
        close(conns[i].fd);
        conns[i].fd = -1;
        continue;
      }
      if (wait < 0 || conns[i].deadline - now < wait)
        wait = conns[i].deadline - now;
      at[n - 1] = i;
      p[n++] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
    }
    if (poll(p, (nfds_t)n, (int)wait) <= 0)
      continue;
    for (int k = 1; k < n; k++)
      if (p[k].revents != 0)
        readable(&conns[at[k - 1]]);
    if (p[0].revents & POLLIN)
      accept_one(ls);
  }
}
