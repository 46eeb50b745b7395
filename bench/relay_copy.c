/*
 * relay_copy: what a TCP relay's copy costs, by method, on loopback: a
 * sender thread writes (-m) MiB into one connection, the relay (this
 * thread) moves it to a second connection, a receiver thread drains it.
 * Methods: read/write through a 16 KiB buffer (what the socket triggers
 * do), read/write through 64 KiB, and splice(2) through a pipe (64 KiB).
 * Prints, per method, the median of (-r) rounds of throughput and of the
 * relay thread's CPU time per GiB (user + system, RUSAGE_THREAD), with the
 * spread, and the ratios to the 16 KiB copy.
 *
 *   relay_copy [-m MIB] [-r ROUNDS]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static size_t total;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double thread_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* A connected pair of loopback TCP sockets: (*a) connects, (*b) accepts. */
static int tcp_pair(int *a, int *b) {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sin);
  if (l < 0 || bind(l, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
      listen(l, 1) < 0 || getsockname(l, (struct sockaddr *)&sin, &len) < 0)
    return -1;
  *a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (*a < 0 || connect(*a, (struct sockaddr *)&sin, sizeof(sin)) < 0)
    return -1;
  *b = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  close(l);
  return *b < 0 ? -1 : 0;
}

static void *sender(void *arg) {
  int fd = *(int *)arg;
  static char buf[65536];
  memset(buf, 'x', sizeof(buf));
  for (size_t sent = 0; sent < total;) {
    size_t n = total - sent < sizeof(buf) ? total - sent : sizeof(buf);
    ssize_t w = write(fd, buf, n);
    if (w <= 0)
      break;
    sent += (size_t)w;
  }
  shutdown(fd, SHUT_WR);
  return NULL;
}

static void *receiver(void *arg) {
  int fd = *(int *)arg;
  static char buf[65536];
  while (read(fd, buf, sizeof(buf)) > 0) {
  }
  return NULL;
}

/* Move everything from (in) to (out) by (method); bytes moved. */
static size_t relay(int in, int out, int method) {
  size_t moved = 0;
  if (method == 2) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
      return 0;
    fcntl(p[1], F_SETPIPE_SZ, 65536);
    for (;;) {
      ssize_t n = splice(in, NULL, p[1], NULL, 65536, SPLICE_F_MOVE);
      if (n <= 0)
        break;
      while (n > 0) {
        ssize_t w = splice(p[0], NULL, out, NULL, (size_t)n, SPLICE_F_MOVE);
        if (w <= 0)
          return moved;
        n -= w;
        moved += (size_t)w;
      }
    }
    close(p[0]);
    close(p[1]);
    return moved;
  }
  size_t size = method == 0 ? 16384 : 65536;
  char *buf = malloc(size);
  for (;;) {
    ssize_t n = read(in, buf, size);
    if (n <= 0)
      break;
    for (ssize_t o = 0; o < n;) {
      ssize_t w = write(out, buf + o, (size_t)(n - o));
      if (w <= 0) {
        free(buf);
        return moved;
      }
      o += w;
      moved += (size_t)w;
    }
  }
  free(buf);
  return moved;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  int mib = 1024, rounds = 3, opt;
  while ((opt = getopt(argc, argv, "m:r:")) != -1)
    if (opt == 'm')
      mib = atoi(optarg);
    else if (opt == 'r')
      rounds = atoi(optarg);
  if (mib < 1 || rounds < 1 || rounds > 15) {
    fprintf(stderr, "usage: relay_copy [-m MIB] [-r ROUNDS (1-15)]\n");
    return 2;
  }
  total = (size_t)mib << 20;
  const char *names[3] = {"read/write 16 KiB", "read/write 64 KiB",
                          "splice via a pipe"};
  double rate[3][15], cpu[3][15];
  for (int r = 0; r < rounds; r++)
    for (int m = 0; m < 3; m++) { /* methods take turns in each round */
      int s1, r1, s2, r2;
      if (tcp_pair(&s1, &r1) < 0 || tcp_pair(&s2, &r2) < 0) {
        perror("relay_copy: loopback");
        return 1;
      }
      pthread_t ts, tr;
      pthread_create(&ts, NULL, sender, &s1);
      pthread_create(&tr, NULL, receiver, &r2);
      double t0 = now_s(), c0 = thread_cpu_s();
      size_t moved = relay(r1, s2, m);
      double t1 = now_s(), c1 = thread_cpu_s();
      shutdown(s2, SHUT_WR);
      pthread_join(ts, NULL);
      pthread_join(tr, NULL);
      close(s1), close(r1), close(s2), close(r2);
      if (moved != total) {
        fprintf(stderr, "relay_copy: %s moved %zu of %zu bytes\n", names[m],
                moved, total);
        return 1;
      }
      rate[m][r] = (double)mib / (t1 - t0);
      cpu[m][r] = (c1 - c0) / ((double)mib / 1024.0);
    }
  printf("relay_copy: %d MiB over loopback TCP, %d rounds, median (spread):\n",
         mib, rounds);
  double base_rate = 0, base_cpu = 0;
  for (int m = 0; m < 3; m++) {
    qsort(rate[m], (size_t)rounds, sizeof(double), cmp);
    qsort(cpu[m], (size_t)rounds, sizeof(double), cmp);
    double mr = rate[m][rounds / 2], mc = cpu[m][rounds / 2];
    if (m == 0)
      base_rate = mr, base_cpu = mc;
    printf("  %-18s %7.0f MiB/s (%.0f-%.0f)   relay CPU %.3f s/GiB "
           "(%.3f-%.3f)   vs 16 KiB: throughput %.2f, CPU %.2f\n",
           names[m], mr, rate[m][0], rate[m][rounds - 1], mc, cpu[m][0],
           cpu[m][rounds - 1], mr / base_rate, mc / base_cpu);
  }
  return 0;
}
