/*
 * controller: a short custom controller that embeds libjitsu.
 *
 * It loads a config file, attaches the idle policy, opens the control
 * socket (for jitsu-ctl), and summons, stops, suspends and resumes vms
 * when asked on standard input, one command a line. Sockets declared in the
 * config summon their vm on a connection by themselves. SIGINT or SIGTERM stop
 * the guests and exit (--keep-guests leaves them running for the next
 * controller to adopt).
 *
 *   controller [--keep-guests] [-v] CONFIG
 *   commands: summon NAME | stop NAME [shutdown|destroy] | suspend NAME
 *             | resume NAME | status [NAME] | quit
 */
#include <jitsu/jitsu.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct app {
  uv_loop_t *loop;
  jitsu_ctx *ctx;
  uv_signal_t sigint, sigterm;
  uv_stream_t *input;
  char line[1024];
  size_t len;
  int keep_guests;
  int quitting;
} app;

typedef struct pending {
  char verb[16];
  uint64_t begin;
  app *a;
} pending;

/* Handles this program allocates on their own are freed when closed. */
static void free_handle(uv_handle_t *h) {
  free(h);
}

static void done(jitsu_vm *vm, int status, void *arg) {
  pending *p = arg;
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  if (status == 0)
    printf("ok %s %s %llums\n", p->verb, jitsu_vm_name(vm),
           (unsigned long long)(uv_now(p->a->loop) - p->begin));
  else
    printf("error %s %s: %s (%s)\n", p->verb, jitsu_vm_name(vm),
           jitsu_strerror(status), info.reason);
  fflush(stdout);
  free(p);
}

static int print_status(jitsu_vm *vm, void *arg) {
  (void)arg;
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  printf("status %s %s instance='%s' adopted=%d spawns=%llu resumes=%llu "
         "failures=%llu last_start_ms=%llu reason='%s'\n",
         info.name, jitsu_state_name(info.state), info.instance, info.adopted,
         (unsigned long long)info.spawns, (unsigned long long)info.resumes,
         (unsigned long long)info.failures,
         (unsigned long long)info.last_start_ms, info.reason);
  return 0;
}

static void quit(app *a);

static void command(app *a, char *line) {
  char *verb = strtok(line, " \t\r"), *name = strtok(NULL, " \t\r");
  char *mode = strtok(NULL, " \t\r");
  if (verb == NULL)
    return;
  if (strcmp(verb, "quit") == 0) {
    quit(a);
    return;
  }
  static const char *const verbs[] = {"status", "summon", "stop", "suspend",
                                      "resume"};
  size_t v = 0;
  while (v < sizeof(verbs) / sizeof(*verbs) && strcmp(verb, verbs[v]) != 0)
    v++;
  if (v == sizeof(verbs) / sizeof(*verbs)) {
    printf("error %s: unknown command (status, summon, stop, suspend, "
           "resume, quit)\n",
           verb);
    fflush(stdout);
    return;
  }
  if (v == 0 && name == NULL) {
    jitsu_vm_foreach(a->ctx, print_status, NULL);
    printf("end\n");
    fflush(stdout);
    return;
  }
  jitsu_vm *vm = name ? jitsu_vm_find(a->ctx, name) : NULL;
  if (vm == NULL) {
    printf("error %s: no vm '%s'\n", verb, name ? name : "");
    fflush(stdout);
    return;
  }
  if (v == 0) {
    print_status(vm, NULL);
    fflush(stdout);
    return;
  }
  pending *p = calloc(1, sizeof(*p));
  if (p == NULL) {
    printf("error %s %s: out of memory\n", verb, name);
    fflush(stdout);
    return;
  }
  snprintf(p->verb, sizeof(p->verb), "%s", verb);
  p->begin = uv_now(a->loop);
  p->a = a;
  int r;
  if (v == 1)
    r = jitsu_vm_summon(vm, done, p);
  else if (v == 2)
    r = jitsu_vm_stop(vm,
                      mode && strcmp(mode, "destroy") == 0
                          ? JITSU_STOP_DESTROY
                          : JITSU_STOP_SHUTDOWN,
                      done, p);
  else if (v == 3)
    r = jitsu_vm_suspend(vm, done, p);
  else
    r = jitsu_vm_resume(vm, done, p);
  if (r < 0) {
    printf("error %s %s: %s\n", verb, name, jitsu_ctx_last_error(a->ctx));
    fflush(stdout);
    free(p);
  }
}

static void alloc_cb(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  app *a = h->data;
  (void)size;
  *buf = uv_buf_init(a->line + a->len, (unsigned)(sizeof(a->line) - a->len));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  app *a = s->data;
  (void)buf;
  if (n < 0) { /* EOF: keep serving socket triggers */
    uv_close((uv_handle_t *)s, free_handle);
    a->input = NULL;
    return;
  }
  a->len += (size_t)n;
  char *nl;
  while (!a->quitting && (nl = memchr(a->line, '\n', a->len)) != NULL) {
    *nl = '\0';
    command(a, a->line);
    size_t used = (size_t)(nl - a->line) + 1;
    memmove(a->line, nl + 1, a->len - used);
    a->len -= used;
  }
  if (a->len == sizeof(a->line))
    a->len = 0; /* an over-long line is dropped */
}

static void open_input(app *a) {
  uv_handle_type t = uv_guess_handle(0);
  if (t == UV_TTY) {
    uv_tty_t *tty = malloc(sizeof(*tty));
    uv_tty_init(a->loop, tty, 0, 1);
    a->input = (uv_stream_t *)tty;
  } else if (t == UV_NAMED_PIPE || t == UV_TCP) {
    uv_pipe_t *pipe = malloc(sizeof(*pipe));
    uv_pipe_init(a->loop, pipe, 0);
    uv_pipe_open(pipe, 0);
    a->input = (uv_stream_t *)pipe;
  } else {
    return; /* /dev/null or a file: no commands */
  }
  a->input->data = a;
  uv_read_start(a->input, alloc_cb, read_cb);
}

static int stop_one(jitsu_vm *vm, void *arg) {
  (void)arg;
  jitsu_vm_stop(vm, JITSU_STOP_SHUTDOWN, NULL, NULL);
  return 0;
}

static void check_all_stopped(uv_idle_t *idle) {
  app *a = idle->data;
  size_t live;
  jitsu_ctx_counts(a->ctx, NULL, &live, NULL);
  if (live > 0)
    return;
  uv_close((uv_handle_t *)idle, free_handle);
  jitsu_ctx_free(a->ctx);
  a->ctx = NULL;
}

static void quit(app *a) {
  if (a->quitting++)
    return;
  uv_close((uv_handle_t *)&a->sigint, NULL);
  uv_close((uv_handle_t *)&a->sigterm, NULL);
  if (a->input != NULL) {
    uv_close((uv_handle_t *)a->input, free_handle);
    a->input = NULL;
  }
  if (a->keep_guests) {
    jitsu_ctx_free(a->ctx);
    a->ctx = NULL;
    return;
  }
  jitsu_vm_foreach(a->ctx, stop_one, NULL);
  uv_idle_t *idle = malloc(sizeof(*idle));
  uv_idle_init(a->loop, idle);
  idle->data = a;
  uv_idle_start(idle, check_all_stopped);
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)signum;
  quit(s->data);
}

int main(int argc, char **argv) {
  app a = {.loop = uv_default_loop()};
  /* A peer that goes away must not kill us: libuv reports EPIPE. */
  signal(SIGPIPE, SIG_IGN);
  const char *config = NULL;
  jitsu_log_level level = JITSU_LOG_INFO;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--keep-guests") == 0)
      a.keep_guests = 1;
    else if (strcmp(argv[i], "-v") == 0)
      level = JITSU_LOG_DEBUG;
    else if (argv[i][0] != '-' && config == NULL)
      config = argv[i];
    else
      config = NULL, i = argc;
  }
  if (config == NULL) {
    fprintf(stderr, "usage: controller [--keep-guests] [-v] CONFIG\n");
    return 2;
  }
  if (jitsu_ctx_new(a.loop, NULL, &a.ctx) < 0)
    return 1;
  jitsu_ctx_set_logger(a.ctx, jitsu_log_stderr, (void *)"jitsu", level);
  jitsu_error err;
  if (jitsu_config_load(a.ctx, config, &err) < 0) {
    fprintf(stderr, "controller: %s\n", err.message);
    jitsu_ctx_free(a.ctx);
    uv_run(a.loop, UV_RUN_DEFAULT);
    return 1;
  }
  jitsu_idle_attach(a.ctx, NULL);
  /* Channels: guests and host programs meet by name through it, and a
   * connect to a stopped vm's name summons it. */
  if (jitsu_rendezvous_listen(a.ctx, NULL) < 0 ||
      jitsu_control_listen(a.ctx, NULL) < 0) {
    fprintf(stderr, "controller: %s\n", jitsu_ctx_last_error(a.ctx));
    jitsu_ctx_free(a.ctx);
    uv_run(a.loop, UV_RUN_DEFAULT);
    return 1;
  }
  uv_signal_init(a.loop, &a.sigint);
  uv_signal_init(a.loop, &a.sigterm);
  a.sigint.data = a.sigterm.data = &a;
  uv_signal_start(&a.sigint, on_signal, SIGINT);
  uv_signal_start(&a.sigterm, on_signal, SIGTERM);
  open_input(&a);
  size_t n;
  jitsu_ctx_counts(a.ctx, &n, NULL, NULL);
  printf("ready %zu vm(s), state in %s, control socket %s\n", n,
         jitsu_ctx_state_dir(a.ctx), jitsu_control_path(a.ctx));
  fflush(stdout);
  uv_run(a.loop, UV_RUN_DEFAULT);
  uv_loop_close(a.loop);
  return 0;
}
