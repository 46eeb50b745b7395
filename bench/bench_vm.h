/* What bench_qemu and bench_xen share: the median, and verbs run
 * to completion on the benchmark's loop. Header-only (static functions);
 * the including file defines `static uv_loop_t loop`. */
#ifndef JITSU_BENCH_VM_H
#define JITSU_BENCH_VM_H

#include <jitsu/jitsu.h>

#include "bench_stats.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uv_loop_t loop;

/* The library's warnings and errors, on stderr after the program's name. */
static inline void bench_log(jitsu_log_level level, const char *msg,
                             void *arg) {
  (void)arg;
  if (level <= JITSU_LOG_WARNING)
    fprintf(stderr, "%s: %s\n", program_invocation_short_name, msg);
}

/* Init the benchmark's loop and a context on it whose state directory is
 * DIR/state, logging warnings on stderr; 0 or a negative errno value. */
static inline int bench_ctx(const char *dir, jitsu_ctx **ctx) {
  uv_loop_init(&loop);
  jitsu_ctx_options o = JITSU_CTX_OPTIONS_INIT;
  char sdir[300];
  snprintf(sdir, sizeof(sdir), "%s/state", dir);
  o.state_dir = sdir;
  int r = jitsu_ctx_new(&loop, &o, ctx);
  if (r == 0)
    jitsu_ctx_set_logger(*ctx, bench_log, NULL, JITSU_LOG_WARNING);
  return r;
}

/* First byte of an HTTP answer from 127.0.0.1:(port), retrying until
 * (deadline) (now_ms()); 0, or -1 if none came. */
static inline int http_first_byte(int port, double deadline) {
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  while (now_ms() < deadline) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char c;
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
        write(fd, "GET / HTTP/1.0\r\n\r\n", 18) == 18 && read(fd, &c, 1) == 1) {
      close(fd);
      return 0;
    }
    close(fd);
    usleep(2000);
  }
  return -1;
}

/* The median of v[0..n) (sorts it). */
static inline double p50(double *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  return v[n / 2];
}

static inline void verb_done(jitsu_vm *vm, int status, void *arg) {
  (void)vm;
  *(int *)arg = status == 0 ? 1 : -1;
}

/* Run (fn) on (vm) to completion: 1 on success, -1 on failure. */
static inline int wait_verb(int (*fn)(jitsu_vm *, jitsu_vm_cb, void *),
                            jitsu_vm *vm) {
  int flag = 0;
  if (fn(vm, verb_done, &flag) < 0)
    return -1;
  while (flag == 0)
    uv_run(&loop, UV_RUN_ONCE);
  return flag;
}

/* Destroy (vm)'s guest and wait for it. */
static inline void destroy_vm(jitsu_vm *vm) {
  int flag = 0;
  if (jitsu_vm_stop(vm, JITSU_STOP_DESTROY, verb_done, &flag) < 0)
    return;
  while (flag == 0)
    uv_run(&loop, UV_RUN_ONCE);
}

#endif
