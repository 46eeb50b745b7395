/* jitsu_config_reload() against real processes. */
#include "helpers.h"
#include "internal.h"

#include <stdio.h>
#include <string.h>

typedef struct seen {
  char text[1024];
} seen;

static void note(const char *name, jitsu_reload_action action, void *arg) {
  seen *s = arg;
  size_t n = strlen(s->text);
  snprintf(s->text + n, sizeof(s->text) - n, "%s=%s ", name,
           jitsu_reload_action_name(action));
}

typedef struct events {
  int defined, changed, undefining;
} events;

static void on_vm(jitsu_vm *vm, jitsu_vm_event ev, void *arg) {
  (void)vm;
  events *e = arg;
  e->defined += ev == JITSU_VM_DEFINED;
  e->changed += ev == JITSU_VM_CHANGED;
  e->undefining += ev == JITSU_VM_UNDEFINING;
}

static void test_reload(void **state) {
  fixture *f = *state;
  int p1 = free_port(), p2 = free_port(), p3 = free_port();
  assert_int_equal(fixture_load(f,
                                "[vm keep]\nexec = /bin/sleep 100\n"
                                "[vm run]\nexec = %s --name run\n"
                                "socket = tcp 127.0.0.1:%d\nready = notify\n"
                                "[vm idle]\nexec = %s --name idle\n"
                                "socket = tcp 127.0.0.1:%d\n"
                                "[vm gone]\nexec = /bin/sleep 100\n",
                                hello_path(), p1, hello_path(), p2),
                   0);
  jitsu_vm *keep = summon_ok(f, "keep", 5000);
  jitsu_vm *run = summon_ok(f, "run", 5000);
  jitsu_vm *idle = jitsu_vm_find(f->ctx, "idle");
  jitsu_vm *gone = summon_ok(f, "gone", 5000);
  int keep_pid = vm_pid(keep), run_pid = vm_pid(run);
  events ev = {0};
  assert_int_equal(jitsu_ctx_on_vm(f->ctx, on_vm, &ev), 0);
  /* keep: unchanged; run: exec changes while it runs; idle: its socket
   * moves while stopped; gone: removed; fresh: added. */
  FILE *out = fopen(f->config, "w");
  fprintf(out,
          "[jitsu]\nmax-live = 7\n"
          "[vm keep]\nexec = /bin/sleep 100\n"
          "[vm run]\nexec = %s --name run2\nsocket = tcp 127.0.0.1:%d\n"
          "ready = notify\nready-timeout = 7s\n"
          "[vm idle]\nexec = %s --name idle\nsocket = tcp 127.0.0.1:%d\n"
          "[vm fresh]\nexec = /bin/sleep 100\n",
          hello_path(), p1, hello_path(), p3);
  fclose(out);
  seen s = {""};
  assert_int_equal(jitsu_config_reload(f->ctx, note, &s, &f->err), 0);
  assert_string_equal(s.text, "keep=unchanged run=changed-at-stop "
                              "idle=changed fresh=added gone=removed ");
  assert_int_equal(ev.defined, 1);
  assert_int_equal(ev.changed, 1);
  unsigned ml;
  jitsu_ctx_limits(f->ctx, &ml, NULL, NULL);
  assert_int_equal(ml, 7);
  /* Unchanged and running guests are untouched; settings apply now. */
  assert_int_equal(vm_pid(keep), keep_pid);
  assert_int_equal(vm_pid(run), run_pid);
  assert_int_equal(run->ready_timeout_ms, 7000);
  /* The stopped vm moved in place: same object, new socket trigger. */
  char key[64];
  snprintf(key, sizeof(key), "tcp:127.0.0.1:%d", p3);
  assert_ptr_equal(jitsu_trigger_lookup(f->ctx, "socket", key), idle);
  snprintf(key, sizeof(key), "tcp:127.0.0.1:%d", p2);
  assert_null(jitsu_trigger_lookup(f->ctx, "socket", key));
  /* The removed vm is stopped, then undefined; it cannot be summoned. */
  assert_int_equal(jitsu_vm_summon(gone, NULL, NULL), JITSU_ESTATE);
  for (int i = 0; i < 500 && jitsu_vm_find(f->ctx, "gone"); i++)
    run_for(f, 10);
  assert_null(jitsu_vm_find(f->ctx, "gone"));
  assert_int_equal(ev.undefining, 1);
  /* run's new program takes over at its next start. */
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_stop(run, JITSU_STOP_SHUTDOWN, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 5000));
  run_for(f, 10);
  summon_ok(f, "run", 5000);
  char body[64];
  assert_int_equal(http_get(p1, body, sizeof(body)), 0);
  assert_string_equal(body, "hello from run2");
  jitsu_vm_metrics m = {.version = JITSU_VM_METRICS_VERSION};
  jitsu_vm_metrics_get(run, &m);
  assert_int_equal(m.cold_starts, 2); /* the metrics stayed with the vm */
  assert_int_equal(jitsu_ctx_off_vm(f->ctx, on_vm, &ev), 0);
}

static void test_bad_reload_changes_nothing(void **state) {
  fixture *f = *state;
  int p1 = free_port(), taken = free_port();
  assert_int_equal(fixture_load(f,
                                "[vm a]\nexec = /bin/sleep 100\n"
                                "socket = tcp 127.0.0.1:%d\n",
                                p1),
                   0);
  /* A syntax error: refused, with its line. */
  FILE *out = fopen(f->config, "w");
  fprintf(out,
          "[vm a]\nexec = /bin/sleep 100\nsocket = tcp 127.0.0.1:%d\n"
          "[vm b]\nexec = /bin/true\nready-timeout = soon\n",
          p1);
  fclose(out);
  assert_int_equal(jitsu_config_reload(f->ctx, NULL, NULL, &f->err), -EINVAL);
  assert_int_equal(f->err.line, 6);
  assert_null(jitsu_vm_find(f->ctx, "b"));
  /* A socket that cannot be bound: the vm added and the vm changed before
   * it are undone. */
  uv_tcp_t holder;
  struct sockaddr_in sin;
  uv_ip4_addr("127.0.0.1", taken, &sin);
  uv_tcp_init(&f->loop, &holder);
  assert_int_equal(uv_tcp_bind(&holder, (struct sockaddr *)&sin, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&holder, 1, NULL), 0);
  int p2 = free_port();
  out = fopen(f->config, "w");
  fprintf(out,
          "[vm a]\nexec = /bin/sleep 100\nsocket = tcp 127.0.0.1:%d\n"
          "[vm b]\nexec = /bin/true\nsocket = tcp 127.0.0.1:%d\n",
          p2, taken);
  fclose(out);
  jitsu_vm *a = jitsu_vm_find(f->ctx, "a");
  assert_true(jitsu_config_reload(f->ctx, NULL, NULL, &f->err) < 0);
  assert_non_null(strstr(f->err.message, "Address already in use"));
  assert_null(jitsu_vm_find(f->ctx, "b"));
  assert_ptr_equal(jitsu_vm_find(f->ctx, "a"), a);
  char key[64];
  snprintf(key, sizeof(key), "tcp:127.0.0.1:%d", p1);
  assert_ptr_equal(jitsu_trigger_lookup(f->ctx, "socket", key), a);
  uv_close((uv_handle_t *)&holder, NULL);
  run_for(f, 1); /* the handle lives on this stack: finish closing it */
}

/* A socket that one stopped vm gives up and another takes in the same
 * file moves, whatever the order of the sections; two vms that exchange
 * their sockets cannot (each waits for the other) and change nothing. */
static void test_socket_moves(void **state) {
  fixture *f = *state;
  int p1 = free_port(), p2 = free_port(), p3 = free_port();
  assert_int_equal(fixture_load(f,
                                "[vm a]\nexec = /bin/true\n"
                                "socket = tcp 127.0.0.1:%d\n"
                                "[vm b]\nexec = /bin/true\n"
                                "socket = tcp 127.0.0.1:%d\n",
                                p2, p3),
                   0);
  jitsu_vm *a = jitsu_vm_find(f->ctx, "a"), *b = jitsu_vm_find(f->ctx, "b");
  /* a (first) takes b's port, which b (second) gives up for p1. */
  FILE *out = fopen(f->config, "w");
  fprintf(out,
          "[vm a]\nexec = /bin/true\nsocket = tcp 127.0.0.1:%d\n"
          "[vm b]\nexec = /bin/true\nsocket = tcp 127.0.0.1:%d\n",
          p3, p1);
  fclose(out);
  assert_int_equal(jitsu_config_reload(f->ctx, NULL, NULL, &f->err), 0);
  char key[64];
  snprintf(key, sizeof(key), "tcp:127.0.0.1:%d", p3);
  assert_ptr_equal(jitsu_trigger_lookup(f->ctx, "socket", key), a);
  snprintf(key, sizeof(key), "tcp:127.0.0.1:%d", p1);
  assert_ptr_equal(jitsu_trigger_lookup(f->ctx, "socket", key), b);
  /* A swap: refused with the first vm's reason, and undone. */
  out = fopen(f->config, "w");
  fprintf(out,
          "[vm a]\nexec = /bin/true\nsocket = tcp 127.0.0.1:%d\n"
          "[vm b]\nexec = /bin/true\nsocket = tcp 127.0.0.1:%d\n"
          "[vm c]\nexec = /bin/true\nsocket = tcp 127.0.0.1:%d\n",
          p1, p3, p2);
  fclose(out);
  assert_true(jitsu_config_reload(f->ctx, NULL, NULL, &f->err) < 0);
  assert_int_equal(f->err.line, 3);
  assert_non_null(strstr(f->err.message, "vm 'a'"));
  assert_null(jitsu_vm_find(f->ctx, "c"));
  snprintf(key, sizeof(key), "tcp:127.0.0.1:%d", p3);
  assert_ptr_equal(jitsu_trigger_lookup(f->ctx, "socket", key), a);
  snprintf(key, sizeof(key), "tcp:127.0.0.1:%d", p1);
  assert_ptr_equal(jitsu_trigger_lookup(f->ctx, "socket", key), b);
  snprintf(key, sizeof(key), "tcp:127.0.0.1:%d", p2);
  assert_null(jitsu_trigger_lookup(f->ctx, "socket", key));
}

int main(void) {
#define T(fn)                                                                  \
  cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)
  const struct CMUnitTest tests[] = {
      T(test_reload),
      T(test_bad_reload_changes_nothing),
      T(test_socket_moves),
  };
  return cmocka_run_group_tests_name("reload", tests, NULL, NULL);
}
