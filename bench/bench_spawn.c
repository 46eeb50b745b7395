/*
 * bench_spawn: the cold start of a socket-activated service, three ways,
 * measured in the same run and printed as ratios.
 *
 *   jitsu    libjitsu's process backend (the example controller) holds the
 *            listening socket; a connection summons the hello service.
 *   systemd  systemd-socket-activate holds the socket and execs the same
 *            service on the first connection.
 *   fork     a plain fork/exec of the service, which binds its own port;
 *            the client retries its connect until the port is bound
 *            (no socket handoff: what a supervisor without one costs).
 *
 * Each sample is "connection to first HTTP byte" (fork: "fork to first
 * byte"). The methods take turns, so drift on a shared machine hits all
 * alike.
 *
 *   bench_spawn [-n ITERATIONS] CONTROLLER HELLO
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEADLINE_S 5.0

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sin);
  bind(fd, (struct sockaddr *)&sin, sizeof(sin));
  getsockname(fd, (struct sockaddr *)&sin, &len);
  close(fd);
  return ntohs(sin.sin_port);
}

/* Connect to (port), send a GET, wait for the first byte of the answer.
 * (retry): keep trying to connect while nothing listens. Returns 0. */
static int first_byte(int port, int retry, double deadline) {
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (;;) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
      close(fd);
      if (!retry || now_ms() > deadline)
        return -1;
      continue; /* spin: the floor is what we measure */
    }
    const char req[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
    char c;
    struct timeval tv = {(time_t)DEADLINE_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int ok = write(fd, req, sizeof(req) - 1) > 0 && read(fd, &c, 1) == 1;
    close(fd);
    return ok ? 0 : -1;
  }
}

/* Whether something listens on 127.0.0.1:(port), from /proc/net/tcp. */
static int listening(int port) {
  FILE *f = fopen("/proc/net/tcp", "r");
  char line[512];
  int found = 0;
  if (f == NULL)
    return 0;
  while (!found && fgets(line, sizeof(line), f) != NULL) {
    unsigned lport, st;
    if (sscanf(line, " %*d: %*x:%x %*x:%*x %x", &lport, &st) == 2)
      found = (int)lport == port && st == 0x0A;
  }
  fclose(f);
  return found;
}

static void reap(pid_t pid) {
  kill(pid, SIGKILL);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
    ;
}

typedef struct controller {
  pid_t pid;
  FILE *in, *out;
} controller;

static int controller_start(controller *c, const char *path, const char *conf) {
  int to[2], from[2];
  if (pipe2(to, O_CLOEXEC) < 0 || pipe2(from, O_CLOEXEC) < 0)
    return -1;
  c->pid = fork();
  if (c->pid == 0) {
    dup2(to[0], 0);
    dup2(from[1], 1);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 2);
    execl(path, path, conf, (char *)NULL);
    _exit(127);
  }
  close(to[0]);
  close(from[1]);
  c->in = fdopen(to[1], "w");
  c->out = fdopen(from[0], "r");
  setvbuf(c->in, NULL, _IOLBF, 0);
  char line[256];
  return fgets(line, sizeof(line), c->out) && strncmp(line, "ready", 5) == 0
             ? 0
             : -1;
}

/* Send (cmd) and wait for its "ok"/"error" line. */
static int controller_do(controller *c, const char *cmd) {
  char line[512];
  fprintf(c->in, "%s\n", cmd);
  while (fgets(line, sizeof(line), c->out) != NULL) {
    if (strncmp(line, "ok ", 3) == 0)
      return 0;
    if (strncmp(line, "error ", 6) == 0) {
      fprintf(stderr, "controller: %s", line);
      return -1;
    }
  }
  return -1;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double pct(double *v, int n, double p) {
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  int i = (int)(p * (n - 1) + 0.5);
  return v[i];
}

int main(int argc, char **argv) {
  int n = 50, a = 1;
  if (argc > 2 && strcmp(argv[1], "-n") == 0)
    n = atoi(argv[2]), a = 3;
  if (argc - a != 2 || n < 1 || n > 1000) {
    fprintf(stderr, "usage: bench_spawn [-n 1..1000] CONTROLLER HELLO\n");
    return 2;
  }
  const char *ctl = argv[a], *hello = argv[a + 1];
  char dir[] = "/tmp/jitsu-bench-XXXXXX", conf[128], cmd[128];
  if (mkdtemp(dir) == NULL)
    return 1;
  int pj = free_port(), ps = free_port(), pf = free_port();
  snprintf(conf, sizeof(conf), "%s/bench.conf", dir);
  FILE *f = fopen(conf, "w");
  fprintf(f,
          "[jitsu]\nstate-dir = %s/state\n[vm hello]\nexec = %s --name "
          "hello\nsocket = tcp 127.0.0.1:%d\nready = none\n",
          dir, hello, pj);
  fclose(f);
  controller c;
  if (controller_start(&c, ctl, conf) < 0) {
    fprintf(stderr, "bench: the controller did not start\n");
    return 1;
  }
  double *tj = calloc((size_t)n, sizeof(double)),
         *ts = calloc((size_t)n, sizeof(double)),
         *tf = calloc((size_t)n, sizeof(double));
  char portarg[32];
  int failures = 0;
  double give_up = now_ms() + 600e3; /* the whole run: 10 minutes at most */
  for (int i = 0; i < n && now_ms() < give_up; i++) {
    /* jitsu: the socket is held by the library; connect summons. */
    double t0 = now_ms();
    failures += first_byte(pj, 0, t0 + DEADLINE_S * 1e3) < 0;
    tj[i] = now_ms() - t0;
    if (controller_do(&c, "stop hello destroy") < 0)
      failures++;
    /* systemd-socket-activate: listening before the measurement starts. */
    snprintf(portarg, sizeof(portarg), "127.0.0.1:%d", ps);
    pid_t sp = fork();
    if (sp == 0) {
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 2);
      execlp("systemd-socket-activate", "systemd-socket-activate", "-l",
             portarg, hello, "--name", "hello", (char *)NULL);
      _exit(127);
    }
    double wait_until = now_ms() + DEADLINE_S * 1e3;
    while (!listening(ps) && now_ms() < wait_until)
      usleep(1000);
    t0 = now_ms();
    failures += first_byte(ps, 0, t0 + DEADLINE_S * 1e3) < 0;
    ts[i] = now_ms() - t0;
    reap(sp);
    /* fork/exec: the service binds its own port. */
    snprintf(portarg, sizeof(portarg), "127.0.0.1:%d", pf);
    t0 = now_ms();
    pid_t fp = fork();
    if (fp == 0) {
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 2);
      execl(hello, hello, "--name", "hello", "--listen", portarg, (char *)NULL);
      _exit(127);
    }
    failures += first_byte(pf, 1, t0 + DEADLINE_S * 1e3) < 0;
    tf[i] = now_ms() - t0;
    reap(fp);
  }
  fclose(c.in); /* EOF: the controller keeps serving; stop it */
  kill(c.pid, SIGTERM);
  waitpid(c.pid, NULL, 0);
  fclose(c.out);
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "bench: could not remove %s\n", dir);
  double j50 = pct(tj, n, .5), s50 = pct(ts, n, .5), f50 = pct(tf, n, .5);
  double j90 = pct(tj, n, .9), s90 = pct(ts, n, .9), f90 = pct(tf, n, .9);
  printf("cold start, connection to first HTTP byte, %d runs each:\n", n);
  printf("  %-28s p50 %7.3f ms  p90 %7.3f ms\n", "libjitsu process backend",
         j50, j90);
  printf("  %-28s p50 %7.3f ms  p90 %7.3f ms\n", "systemd-socket-activate", s50,
         s90);
  printf("  %-28s p50 %7.3f ms  p90 %7.3f ms\n", "fork/exec, connect retried",
         f50, f90);
  printf("ratio libjitsu / systemd-socket-activate: p50 %.2f  p90 %.2f\n",
         j50 / s50, j90 / s90);
  printf("ratio libjitsu / fork/exec + connect:     p50 %.2f  p90 %.2f\n",
         j50 / f50, j90 / f90);
  if (failures > 0)
    printf("failed samples: %d\n", failures);
  return failures > 0;
}
