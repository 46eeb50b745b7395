#include "helpers.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* The library's lines, each with the time in seconds since the process's
 * first line (to see where a slow test spends its time). */
static void test_log(jitsu_log_level level, const char *msg, void *arg) {
  static uint64_t t0;
  (void)arg;
  if (t0 == 0)
    t0 = uv_hrtime();
  if (getenv("JITSU_TEST_VERBOSE") != NULL || level <= JITSU_LOG_ERROR)
    fprintf(stderr, "  [%.3f jitsu %s] %s\n", (uv_hrtime() - t0) / 1e9,
            jitsu_log_level_name(level), msg);
}

int fixture_setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  if (f == NULL)
    return -1;
  snprintf(f->dir, sizeof(f->dir), "/tmp/jitsu-test-XXXXXX");
  if (mkdtemp(f->dir) == NULL || uv_loop_init(&f->loop) != 0)
    return -1;
  uv_timer_init(&f->loop, &f->timer);
  snprintf(f->config, sizeof(f->config), "%s/jitsu.conf", f->dir);
  if (fixture_ctx_new(f, &f->ctx) != 0)
    return -1;
  *state = f;
  return 0;
}

int fixture_ctx_new(fixture *f, jitsu_ctx **ctx) {
  jitsu_ctx_options o = JITSU_CTX_OPTIONS_INIT;
  char sdir[300];
  snprintf(sdir, sizeof(sdir), "%s/state", f->dir);
  o.state_dir = sdir;
  int r = jitsu_ctx_new(&f->loop, &o, ctx);
  if (r == 0)
    jitsu_ctx_set_logger(*ctx, test_log, NULL, JITSU_LOG_DEBUG);
  return r;
}

/* (arg): the number of live vms, counted up; negative on entry: kill
 * their guests outright (one that does not answer a destroy, e.g. a
 * stopped QEMU). */
static int kill_live(jitsu_vm *vm, void *arg) {
  int *n = arg;
  bool now = *n < 0;
  jitsu_state s = jitsu_vm_state(vm);
  if (s == JITSU_STATE_STOPPED || s == JITSU_STATE_FAILED)
    return 0;
  if (now && vm_pid(vm) > 0) {
    kill(-vm_pid(vm), SIGKILL);
    kill(vm_pid(vm), SIGKILL);
  }
  if (!now) {
    (*n)++;
    if (jitsu_vm_stop(vm, JITSU_STOP_DESTROY, NULL, NULL) < 0 && vm_pid(vm) > 0)
      kill(-vm_pid(vm), SIGKILL);
  }
  return 0;
}

static int rm_entry(const char *path, const struct stat *st, int type,
                    struct FTW *ftw) {
  (void)st, (void)type, (void)ftw;
  remove(path);
  return 0;
}

int fixture_teardown(void **state) {
  fixture *f = *state;
  if (f == NULL)
    return 0;
  /* End every guest this test left, then the context. */
  for (int round = 0; round < 1000; round++) {
    int live = 0;
    jitsu_vm_foreach(f->ctx, kill_live, &live);
    if (live == 0)
      break;
    if (round % 100 == 99) { /* a second on: not by asking any more */
      live = -1;
      jitsu_vm_foreach(f->ctx, kill_live, &live);
    }
    run_for(f, 10);
  }
  jitsu_ctx_free(f->ctx);
  uv_close((uv_handle_t *)&f->timer, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  uv_loop_close(&f->loop);
  nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

int fixture_load(fixture *f, const char *fmt, ...) {
  FILE *out = fopen(f->config, "w");
  if (out == NULL)
    return -errno;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(out, fmt, ap);
  va_end(ap);
  fclose(out);
  memset(&f->err, 0, sizeof(f->err));
  return jitsu_config_load(f->ctx, f->config, &f->err);
}

static void timer_fired(uv_timer_t *t) {
  int *expired = t->data;
  if (expired != NULL)
    *expired = 1;
}

typedef int (*pred_fn)(void *arg);

static int run_pred(fixture *f, pred_fn pred, void *arg, uint64_t ms) {
  int expired = 0;
  f->timer.data = &expired;
  uv_update_time(&f->loop);
  /* Repeating: should it fire in the timers phase of a UV_RUN_ONCE turn,
   * that turn's poll would otherwise wait with no deadline at all. */
  uv_timer_start(&f->timer, timer_fired, ms, ms ? ms : 1);
  while (!pred(arg) && !expired)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_timer_stop(&f->timer);
  f->timer.data = NULL;
  return pred(arg);
}

static int flag_set(void *arg) {
  return *(const int *)arg;
}

void skip_because(const char *why) {
  printf("# skipped: %s\n", why);
  skip();
}

int under_valgrind(void) {
  return getenv("JITSU_TEST_VALGRIND") != NULL;
}

/* Waits are ceilings, not expectations: under valgrind everything of ours
 * runs 10-50 times slower, the guests' clocks do not. */
static uint64_t ceiling(uint64_t ms) {
  return under_valgrind() ? ms * 10 : ms;
}

int run_until(fixture *f, const int *flag, uint64_t ms) {
  return run_pred(f, flag_set, (void *)flag, ceiling(ms));
}

typedef struct state_wait {
  jitsu_vm *vm;
  jitsu_state state;
} state_wait;

static int in_state(void *arg) {
  state_wait *w = arg;
  return jitsu_vm_state(w->vm) == w->state;
}

int run_until_state(fixture *f, jitsu_vm *vm, jitsu_state state, uint64_t ms) {
  state_wait w = {vm, state};
  return run_pred(f, in_state, &w, ceiling(ms));
}

static int never(void *arg) {
  (void)arg;
  return 0;
}

void run_for(fixture *f, uint64_t ms) {
  run_pred(f, never, NULL, ms);
}

const char *hello_path(void) {
  const char *p = getenv("JITSU_HELLO");
  return p ? p : "examples/hello";
}

int count_lines(const char *path) {
  FILE *in = fopen(path, "r");
  if (in == NULL)
    return 0;
  int n = 0, c;
  while ((c = fgetc(in)) != EOF)
    n += c == '\n';
  fclose(in);
  return n;
}

int vm_pid(jitsu_vm *vm) {
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  int pid = 0;
  if (sscanf(info.instance, "pid %d", &pid) != 1 &&
      sscanf(info.instance, "qemu pid %d", &pid) != 1)
    return 0;
  return pid;
}

int pid_alive(int pid) {
  char path[64], buf[512];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0)
    return 0;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  return p != NULL && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

int http_get(int port, char *out, size_t size) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
  struct timeval tv = {20, 0}; /* a ceiling: guests under TCG are slow */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
    close(fd);
    return -1;
  }
  const char req[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
  if (write(fd, req, sizeof(req) - 1) < 0) {
    close(fd);
    return -1;
  }
  char buf[2048];
  size_t got = 0;
  ssize_t n;
  while (got < sizeof(buf) - 1 &&
         (n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
    got += (size_t)n;
  close(fd);
  buf[got] = '\0';
  char *body = strstr(buf, "\r\n\r\n");
  if (body == NULL)
    return -1;
  body += 4;
  char *nl = strchr(body, '\n');
  if (nl)
    *nl = '\0';
  snprintf(out, size, "%s", body);
  return 0;
}

void command_output(const char *cmd, char *out, size_t size) {
  out[0] = '\0';
  FILE *p = popen(cmd, "r");
  if (p == NULL)
    return;
  if (fgets(out, (int)size, p) == NULL)
    out[0] = '\0';
  out[strcspn(out, "\n")] = '\0';
  pclose(p);
}

bool wait_spares(fixture *f, jitsu_vm *vm, size_t n, uint64_t ms) {
  for (uint64_t t = 0;; t += 100) {
    size_t spares = 0, filling = 0;
    uint64_t memory = 0;
    jitsu_vm_spares(vm, &spares, &filling, &memory);
    if (spares == n && filling == 0)
      return true;
    if (t >= ms)
      return false;
    run_for(f, 100);
  }
}

int free_port(void) {
  /* Below the ephemeral range (32768-): a port the kernel hands to an
   * outgoing connection meanwhile cannot be bound by the guest later. */
  static unsigned seed;
  if (seed == 0)
    seed = (unsigned)getpid() * 2654435761u;
  for (int tries = 0; tries < 1000; tries++) {
    seed = seed * 1103515245u + 12345u;
    int port = 10000 + (int)((seed >> 8) % 20000);
    int ok = 1;
    for (int type = SOCK_STREAM; ok && type <= SOCK_DGRAM; type++) {
      int fd = socket(AF_INET, type, 0);
      struct sockaddr_in sin = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port)};
      inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
      ok = bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
      close(fd);
    }
    if (ok)
      return port;
  }
  return -1;
}

void outcome_cb(jitsu_vm *vm, int status, void *arg) {
  (void)vm;
  outcome *o = arg;
  o->done = 1;
  o->status = status;
  o->calls++;
}

const char *vm_reason(jitsu_vm *vm) {
  static jitsu_vm_info info;
  info.version = JITSU_VM_INFO_VERSION;
  jitsu_vm_info_get(vm, &info);
  return info.reason;
}

jitsu_vm *summon_done(fixture *f, const char *name, uint64_t ms) {
  jitsu_vm *vm = jitsu_vm_find(f->ctx, name);
  assert_non_null(vm);
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, ms));
  if (o.status != 0)
    fprintf(stderr, "summon %s: %s (%s)\n", name, jitsu_strerror(o.status),
            vm_reason(vm));
  assert_int_equal(o.status, 0);
  return vm;
}

jitsu_vm *summon_ok(fixture *f, const char *name, uint64_t ms) {
  jitsu_vm *vm = summon_done(f, name, ms);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_READY);
  return vm;
}

void verb_ok(fixture *f, jitsu_vm *vm, verb_fn fn, uint64_t ms) {
  static outcome o;
  o = (outcome){0};
  assert_int_equal(fn(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, ms));
  if (o.status != 0)
    fprintf(stderr, "%s: %s (%s)\n", jitsu_vm_name(vm),
            jitsu_strerror(o.status), vm_reason(vm));
  assert_int_equal(o.status, 0);
}

int open_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  while (d && readdir(d))
    n++;
  if (d)
    closedir(d);
  return n;
}

void config_fails(fixture *f, const char *text, const char *words) {
  int r = fixture_load(f, "%s", text);
  if (r == 0 || strstr(f->err.message, words) == NULL)
    fprintf(stderr, "config:\n%s\ngave %d: %s\n", text, r, f->err.message);
  assert_int_not_equal(r, 0);
  assert_non_null(strstr(f->err.message, words));
}

int summon_fails(fixture *f, const char *name, const char *words, uint64_t ms) {
  jitsu_vm *vm = jitsu_vm_find(f->ctx, name);
  assert_non_null(vm);
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, ms));
  assert_true(run_until_state(f, vm, JITSU_STATE_FAILED, 30000));
  fprintf(stderr, "%s: %s: %s\n", name, jitsu_strerror(o.status),
          vm_reason(vm));
  assert_int_not_equal(o.status, 0);
  if (strstr(vm_reason(vm), words) == NULL)
    fail_msg("the reason lacks '%s'", words);
  return o.status;
}
