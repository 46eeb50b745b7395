/* examples/embed.c: libjitsu inside a program of one's own. A vm defined
 * in code runs PROGRAM, socket-activated on 127.0.0.1:PORT and ready when
 * it says so (sd_notify); a trigger of our own kind ("line") summons it
 * when its name arrives on stdin; the idle helper puts it away after a
 * second without activity. State changes are printed as they happen; the
 * program ends once the vm has been put away and stdin is closed.
 *
 *   cc embed.c $(pkg-config --cflags --libs jitsu) -o embed
 *   echo web | ./embed /path/to/a/socket-activated/server 8095 [STATE-DIR]
 *
 * (build/examples/hello is such a server.) */
#include <jitsu/jitsu.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct app {
  jitsu_ctx *ctx;
  uv_pipe_t input;
  uv_timer_t quit_timer;
  char line[256];
  size_t len;
  int put_away, input_done, quit;
} app;

static void quit_now(uv_timer_t *t) {
  app *a = t->data;
  jitsu_ctx_free(a->ctx); /* the guest is down: nothing is left running */
  uv_close((uv_handle_t *)t, NULL); /* the loop ends with the last handle */
}

/* Done once the vm was put away and stdin is closed (not from inside a
 * callback of the context: from the loop, a moment later). */
static void maybe_quit(app *a) {
  if (a->put_away && a->input_done && !a->quit++)
    uv_timer_start(&a->quit_timer, quit_now, 0, 0);
}

static void on_state(jitsu_vm *vm, jitsu_state old, jitsu_state new_state,
                     const char *reason, void *arg) {
  app *a = arg;
  printf("%s: %s -> %s%s%s\n", jitsu_vm_name(vm), jitsu_state_name(old),
         jitsu_state_name(new_state), reason[0] ? ": " : "", reason);
  fflush(stdout);
  if (new_state == JITSU_STATE_STOPPED && old == JITSU_STATE_STOPPING)
    a->put_away = 1;
  maybe_quit(a);
}

static void summoned(jitsu_vm *vm, int status, void *arg) {
  (void)arg;
  printf("%s: summon done: %s\n", jitsu_vm_name(vm),
         status == 0 ? "ready" : jitsu_strerror(status));
  fflush(stdout);
}

static void alloc_cb(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  app *a = h->data;
  (void)size;
  *buf = uv_buf_init(a->line + a->len, (unsigned)(sizeof(a->line) - a->len));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  app *a = s->data;
  (void)buf;
  if (n < 0) { /* stdin is done: end once the vm is put away */
    uv_close((uv_handle_t *)s, NULL);
    a->input_done = 1;
    maybe_quit(a);
    return;
  }
  a->len += (size_t)n;
  char *nl;
  while ((nl = memchr(a->line, '\n', a->len)) != NULL) {
    *nl = '\0';
    /* Each line names a vm: our trigger kind "line" maps it to a summon. */
    if (jitsu_trigger_fire(a->ctx, "line", a->line, summoned, a, NULL) < 0)
      printf("%s: %s\n", a->line, jitsu_ctx_last_error(a->ctx));
    a->len -= (size_t)(nl + 1 - a->line);
    memmove(a->line, nl + 1, a->len);
  }
  if (a->len == sizeof(a->line))
    a->len = 0; /* an over-long line is dropped */
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: embed PROGRAM PORT [STATE-DIR]\n");
    return 2;
  }
  app a = {0};
  uv_loop_t *loop = uv_default_loop();
  jitsu_ctx_options opts = JITSU_CTX_OPTIONS_INIT;
  opts.state_dir = argc > 3 ? argv[3] : NULL;
  char socket[64];
  snprintf(socket, sizeof(socket), "tcp:127.0.0.1:%s", argv[2]);
  /* The same keys as a config file's [vm web] section. */
  jitsu_param params[] = {{"exec", argv[1]}, {"socket", socket}};
  jitsu_vm_def def = JITSU_VM_DEF_INIT;
  def.name = "web";
  def.ready = JITSU_READY_NOTIFY;
  def.idle_timeout_ms = 1000;
  def.idle_action = JITSU_IDLE_SHUTDOWN;
  def.params = params;
  def.n_params = 2;
  jitsu_vm *vm;
  jitsu_error err;
  if (jitsu_ctx_new(loop, &opts, &a.ctx) < 0 ||
      jitsu_vm_define(a.ctx, &def, &vm, &err) < 0 ||
      jitsu_trigger_add(a.ctx, "line", "web", vm) < 0 ||
      jitsu_ctx_on_state(a.ctx, on_state, &a) < 0 ||
      jitsu_idle_attach(a.ctx, NULL) < 0) {
    fprintf(stderr, "embed: %s\n", a.ctx ? jitsu_ctx_last_error(a.ctx) : "");
    return 1;
  }
  uv_timer_init(loop, &a.quit_timer);
  a.quit_timer.data = a.input.data = &a;
  uv_pipe_init(loop, &a.input, 0);
  if (uv_pipe_open(&a.input, 0) == 0)
    uv_read_start((uv_stream_t *)&a.input, alloc_cb, read_cb);
  else
    a.input_done = 1;
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop) == 0 ? 0 : 1;
}
