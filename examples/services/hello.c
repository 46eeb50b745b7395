/*
 * hello: a small HTTP service for the examples, tests and benchmarks.
 *
 * It serves "hello from NAME" on the sockets that it is handed with the
 * systemd socket activation protocol (LISTEN_FDS, LISTEN_PID), or on the
 * one it binds itself (--listen HOST:PORT), and tells its supervisor that
 * it is ready with READY=1 on $NOTIFY_SOCKET. Only libc: it is meant to
 * be read as well as run.
 *
 *   hello [--listen IPV4:PORT] [--name NAME] [--boot-ms MS]
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
  const char *colon = strrchr(spec, ':');
  if (colon == NULL || (size_t)(colon - spec) >= sizeof(host))
    return -1;
  memcpy(host, spec, (size_t)(colon - spec));
  host[colon - spec] = '\0';
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)atoi(colon + 1))};
  if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
    return -1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
      listen(fd, SOMAXCONN) < 0)
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

static void serve(int lfd, const char *name) {
  int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0)
    return;
  struct timeval tv = {5, 0};
  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char req[REQUEST_MAX + 1];
  size_t got = 0;
  while (got < REQUEST_MAX) {
    ssize_t n = read(c, req + got, REQUEST_MAX - got);
    if (n <= 0)
      break;
    got += (size_t)n;
    req[got] = '\0';
    if (strstr(req, "\r\n\r\n") != NULL)
      break;
  }
  char body[256], resp[512];
  int blen = snprintf(body, sizeof(body), "hello from %s\n", name);
  int rlen = snprintf(resp, sizeof(resp),
                      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                      "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                      blen, body);
  if (got > 0 && write(c, resp, (size_t)rlen) < 0)
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
      fprintf(stderr,
              "usage: hello [--listen IPV4:PORT] [--name NAME] [--boot-ms MS]"
              " [--record FILE] [--exit-after-ready CODE]\n");
      return 2;
    }
  }
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
