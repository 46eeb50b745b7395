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
 * alike. Each round takes ITERATIONS samples of each; the ratios of the
 * rounds' medians are printed, then their median and spread. The
 * controller's CPU time (all its threads, from /proc/PID/task/TID/schedstat)
 * per summon-and-destroy cycle is printed too: the spawn's cost on the
 * loop that every other client shares.
 *
 *   bench_spawn [-n ITERATIONS] [-r ROUNDS] CONTROLLER HELLO
 */
#include <arpa/inet.h>
#include <dirent.h>
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

#include "bench_stats.h"

#define DEADLINE_S 5.0

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

/* CPU time of every thread of (pid), in ms (the scheduler's clock). */
static double cpu_ms(pid_t pid) {
  char path[64], line[128];
  snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  double ns = 0;
  struct dirent *e;
  while (d != NULL && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    char p2[128];
    snprintf(p2, sizeof(p2), "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
    FILE *f = fopen(p2, "r");
    unsigned long long run = 0;
    if (f != NULL && fgets(line, sizeof(line), f) != NULL &&
        sscanf(line, "%llu", &run) == 1)
      ns += (double)run;
    if (f != NULL)
      fclose(f);
  }
  if (d != NULL)
    closedir(d);
  return ns / 1e6;
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

typedef struct round {
  double j50, s50, f50, j90, s90, f90, cpu;
} round;

static int cmp_round_ratio(const void *a, const void *b) {
  const round *x = a, *y = b;
  double rx = x->j50 / x->s50, ry = y->j50 / y->s50;
  return (rx > ry) - (rx < ry);
}

int main(int argc, char **argv) {
  int n = 50, rounds = 3, opt;
  while ((opt = getopt(argc, argv, "n:r:")) != -1) {
    if (opt == 'n')
      n = atoi(optarg);
    else if (opt == 'r')
      rounds = atoi(optarg);
    else
      n = 0;
  }
  if (argc - optind != 2 || n < 1 || n > 1000 || rounds < 1 || rounds > 20) {
    fprintf(stderr, "usage: bench_spawn [-n 1..1000] [-r 1..20] CONTROLLER "
                    "HELLO\n");
    return 2;
  }
  const char *ctl = argv[optind], *hello = argv[optind + 1];
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
  round *res = calloc((size_t)rounds, sizeof(round));
  char portarg[32];
  int failures = 0;
  double give_up = now_ms() + 900e3; /* the whole run: 15 minutes at most */
  printf("cold start, connection to first HTTP byte, %d rounds of %d runs "
         "each:\n",
         rounds, n);
  for (int r = 0; r < rounds; r++) {
    double cpu_jitsu = 0;
    int done = 0;
    for (int i = 0; i < n && now_ms() < give_up; i++, done++) {
      /* jitsu: the socket is held by the library; connect summons. */
      double c0 = cpu_ms(c.pid);
      double t0 = now_ms();
      failures += first_byte(pj, 0, t0 + DEADLINE_S * 1e3) < 0;
      tj[i] = now_ms() - t0;
      if (controller_do(&c, "stop hello destroy") < 0)
        failures++;
      cpu_jitsu += cpu_ms(c.pid) - c0;
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
        execl(hello, hello, "--name", "hello", "--listen", portarg,
              (char *)NULL);
        _exit(127);
      }
      failures += first_byte(pf, 1, t0 + DEADLINE_S * 1e3) < 0;
      tf[i] = now_ms() - t0;
      reap(fp);
    }
    if (done == 0)
      break;
    round *o = &res[r];
    o->j50 = pct(tj, done, .5), o->s50 = pct(ts, done, .5);
    o->f50 = pct(tf, done, .5);
    o->j90 = pct(tj, done, .9), o->s90 = pct(ts, done, .9);
    o->f90 = pct(tf, done, .9);
    o->cpu = cpu_jitsu / done;
    printf("round %d:\n", r + 1);
    printf("  %-28s p50 %7.3f ms  p90 %7.3f ms  (controller CPU %.3f ms "
           "per summon+destroy)\n",
           "libjitsu process backend", o->j50, o->j90, o->cpu);
    printf("  %-28s p50 %7.3f ms  p90 %7.3f ms\n", "systemd-socket-activate",
           o->s50, o->s90);
    printf("  %-28s p50 %7.3f ms  p90 %7.3f ms\n", "fork/exec, connect retried",
           o->f50, o->f90);
    printf("  ratio libjitsu / systemd-socket-activate: p50 %.2f  p90 %.2f\n",
           o->j50 / o->s50, o->j90 / o->s90);
    fflush(stdout);
  }
  fclose(c.in); /* EOF: the controller keeps serving; stop it */
  kill(c.pid, SIGTERM);
  waitpid(c.pid, NULL, 0);
  fclose(c.out);
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "bench: could not remove %s\n", dir);
  double *cpus = calloc((size_t)rounds, sizeof(double));
  for (int r = 0; r < rounds; r++)
    cpus[r] = res[r].cpu;
  double cpu50 = pct(cpus, rounds, .5);
  free(cpus);
  qsort(res, (size_t)rounds, sizeof(*res), cmp_round_ratio);
  const round *m = &res[rounds / 2];
  printf("median of %d rounds: libjitsu / systemd-socket-activate p50 %.2f "
         "(rounds %.2f-%.2f); libjitsu / fork/exec + connect p50 %.2f; "
         "controller CPU %.3f ms per cycle (median)\n",
         rounds, m->j50 / m->s50, res[0].j50 / res[0].s50,
         res[rounds - 1].j50 / res[rounds - 1].s50, m->j50 / m->f50, cpu50);
  if (failures > 0)
    printf("failed samples: %d\n", failures);
  return failures > 0;
}
