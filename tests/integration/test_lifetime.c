/* The lifetime contract (libjitsu(3), "Callbacks and lifetimes"), with real
 * processes: every completion runs exactly once, also when its vm or its
 * context goes away first; a callback may undefine the vm it was called
 * for; one controller per state directory. Run under valgrind too: the
 * bad reads these tests catch happen inside libuv as often as in ours. */
#include "helpers.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static const char *const hello_conf = "[vm one]\nexec = %s --name one "
                                      "--listen 127.0.0.1:%d\nready = tcp:"
                                      "127.0.0.1:%d\n";

static jitsu_vm *load_one(fixture *f) {
  int port = free_port();
  assert_int_equal(fixture_load(f, hello_conf, hello_path(), port, port), 0);
  return jitsu_vm_find(f->ctx, "one");
}

/* A state subscriber that undefines the vm once it is down. */
typedef struct undefiner {
  int undefined;
  int result;
} undefiner;

static void undefine_when_down(jitsu_vm *vm, jitsu_state old, jitsu_state now,
                               const char *reason, void *arg) {
  undefiner *u = arg;
  (void)old, (void)reason;
  if (now == JITSU_STATE_STOPPED || now == JITSU_STATE_FAILED) {
    u->result = jitsu_vm_undefine(vm);
    u->undefined++;
  }
}

/* The vm is undefined from inside the backend's exit report (a crash):
 * the report goes on with a vm that no longer exists. */
static void test_undefine_in_subscriber_on_crash(void **state) {
  fixture *f = *state;
  jitsu_vm *vm = load_one(f);
  summon_ok(f, "one", 5000);
  int pid = vm_pid(vm);
  assert_true(pid > 0);
  static undefiner u;
  u = (undefiner){0};
  assert_int_equal(jitsu_ctx_on_state(f->ctx, undefine_when_down, &u), 0);
  kill(pid, SIGKILL);
  assert_int_equal(run_until(f, &u.undefined, 5000), 1);
  assert_int_equal(u.result, 0);
  assert_null(jitsu_vm_find(f->ctx, "one"));
  run_for(f, 20);
  jitsu_ctx_off_state(f->ctx, undefine_when_down, &u);
}

/* The same during a stop that has callers waiting: they still get their
 * callbacks, with the vm pointer they gave, once. */
static void test_undefine_in_subscriber_on_stop(void **state) {
  fixture *f = *state;
  jitsu_vm *vm = load_one(f);
  summon_ok(f, "one", 5000);
  static undefiner u;
  u = (undefiner){0};
  static outcome stops[3];
  memset(stops, 0, sizeof(stops));
  assert_int_equal(jitsu_ctx_on_state(f->ctx, undefine_when_down, &u), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(
        jitsu_vm_stop(vm, JITSU_STOP_SHUTDOWN, outcome_cb, &stops[i]), 0);
  assert_int_equal(run_until(f, &stops[2].done, 5000), 1);
  run_for(f, 20);
  assert_int_equal(u.undefined, 1);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(stops[i].calls, 1);
    assert_int_equal(stops[i].status, 0);
  }
  jitsu_ctx_off_state(f->ctx, undefine_when_down, &u);
}

/* Completions queued in one turn of the loop: the first undefines the vm,
 * the next ones still run, once, with a vm that the verbs refuse. */
typedef struct chain {
  int calls, undefine_result, later_verb, names_ok;
} chain;

static void undefine_first(jitsu_vm *vm, int status, void *arg) {
  chain *c = arg;
  (void)status;
  if (c->calls++ == 0)
    c->undefine_result = jitsu_vm_undefine(vm);
  else
    c->later_verb = jitsu_vm_summon(vm, NULL, NULL);
  c->names_ok += strcmp(jitsu_vm_name(vm), "one") == 0;
}

static void test_undefine_between_queued_completions(void **state) {
  fixture *f = *state;
  jitsu_vm *vm = load_one(f);
  static chain c;
  c = (chain){0};
  /* A stopped vm completes stops at once, from the loop: three queued. */
  for (int i = 0; i < 3; i++)
    assert_int_equal(jitsu_vm_stop(vm, JITSU_STOP_DESTROY, undefine_first, &c),
                     0);
  run_for(f, 20);
  assert_int_equal(c.calls, 3);
  assert_int_equal(c.undefine_result, 0);
  assert_int_equal(c.later_verb, -ENOENT);
  assert_int_equal(c.names_ok, 3);
  assert_null(jitsu_vm_find(f->ctx, "one"));
}

/* A summon waiting on a starting guest when the context is freed: its
 * callback runs once, from the loop, with -ECANCELED. */
static void test_ctx_free_cancels_waiters(void **state) {
  fixture *f = *state;
  int port = free_port();
  assert_int_equal(fixture_load(f,
                                "[vm slow]\nexec = %s --boot-ms 10000 "
                                "--listen 127.0.0.1:%d\nready = notify\n",
                                hello_path(), port),
                   0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "slow");
  static outcome o, ready;
  o = ready = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &o), 0);
  run_for(f, 50);
  int pid = vm_pid(vm);
  assert_true(pid > 0);
  /* and one already complete but not yet delivered: it keeps its status */
  jitsu_vm *other = NULL;
  jitsu_vm_def def = JITSU_VM_DEF_INIT;
  jitsu_param p[] = {{"exec", "/bin/true"}};
  def.name = "other";
  def.params = p;
  def.n_params = 1;
  assert_int_equal(jitsu_vm_define(f->ctx, &def, &other, NULL), 0);
  assert_int_equal(jitsu_vm_stop(other, JITSU_STOP_DESTROY, outcome_cb, &ready),
                   0);
  jitsu_ctx_free(f->ctx);
  f->ctx = NULL;
  assert_int_equal(o.calls, 0); /* never from inside the call */
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(o.calls, 1);
  assert_int_equal(o.status, JITSU_ECANCELED);
  assert_int_equal(ready.calls, 1);
  assert_int_equal(ready.status, 0);
  /* The guest was left running for a later controller: end it. */
  kill(-pid, SIGKILL);
  assert_int_equal(fixture_ctx_new(f, &f->ctx), 0);
}

/* One controller per state directory: a second is refused, with who holds
 * it; once the first is gone, the directory is free again. */
static void test_state_dir_lock(void **state) {
  fixture *f = *state;
  load_one(f);
  jitsu_ctx *second = NULL;
  assert_int_equal(fixture_ctx_new(f, &second), 0);
  jitsu_error err;
  assert_int_equal(jitsu_config_load(second, f->config, &err), -EBUSY);
  printf("# %s\n", err.message);
  assert_non_null(strstr(err.message, "in use by another controller"));
  char pid[32];
  snprintf(pid, sizeof(pid), "(pid %d)", (int)getpid());
  assert_non_null(strstr(err.message, pid));
  assert_null(jitsu_vm_find(second, "one")); /* nothing changed */
  jitsu_ctx_free(f->ctx);
  f->ctx = second;
  assert_int_equal(jitsu_config_load(f->ctx, f->config, &err), 0);
}

/* A state directory that is not ours is refused before anything is read
 * from it or written to it. */
static void test_state_dir_not_ours(void **state) {
  fixture *f = *state;
  char target[300], link[300];
  snprintf(target, sizeof(target), "%s/elsewhere", f->dir);
  snprintf(link, sizeof(link), "%s/link", f->dir);
  assert_int_equal(mkdir(target, 0700), 0);
  assert_int_equal(symlink(target, link), 0);
  jitsu_error err;
  int port = free_port();
  char text[600];
  snprintf(text, sizeof(text), "[jitsu]\nstate-dir = %s\n", link);
  assert_int_equal(fixture_load(f,
                                "%s[vm one]\nexec = %s --listen "
                                "127.0.0.1:%d\n",
                                text, hello_path(), port),
                   -ENOTDIR);
  printf("# %s\n", f->err.message);
  assert_non_null(strstr(f->err.message, "symlink"));
  assert_int_equal(chmod(target, 0777), 0);
  snprintf(text, sizeof(text), "[jitsu]\nstate-dir = %s\n", target);
  assert_int_equal(fixture_load(f,
                                "%s[vm one]\nexec = %s --listen "
                                "127.0.0.1:%d\n",
                                text, hello_path(), port),
                   -EPERM);
  printf("# %s\n", f->err.message);
  assert_non_null(strstr(f->err.message, "chmod go-w"));
  assert_null(jitsu_vm_find(f->ctx, "one"));
  struct stat st;
  assert_int_equal(lstat(target, &st), 0);
  (void)err;
}

/* A Unix socket trigger never takes over a socket something answers on:
 * the vm is refused, the other program keeps its socket. */
static void test_unix_socket_not_taken(void **state) {
  fixture *f = *state;
  char path[300];
  snprintf(path, sizeof(path), "%s/busy.sock", f->dir);
  int other = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
  assert_int_equal(bind(other, (struct sockaddr *)&sun, sizeof(sun)), 0);
  assert_int_equal(listen(other, 4), 0);
  assert_int_not_equal(fixture_load(f, "[vm u]\nexec = %s\nsocket = unix %s\n",
                                    hello_path(), path),
                       0);
  printf("# %s\n", f->err.message);
  assert_non_null(strstr(f->err.message, "in use"));
  assert_null(jitsu_vm_find(f->ctx, "u"));
  int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_int_equal(connect(probe, (struct sockaddr *)&sun, sizeof(sun)), 0);
  close(probe);
  close(other);
  /* A stale socket file (nobody answers) is replaced. */
  assert_int_equal(fixture_load(f, "[vm u]\nexec = %s\nsocket = unix %s\n",
                                hello_path(), path),
                   0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_undefine_in_subscriber_on_crash,
                                      fixture_setup, fixture_teardown),
      cmocka_unit_test_setup_teardown(test_undefine_in_subscriber_on_stop,
                                      fixture_setup, fixture_teardown),
      cmocka_unit_test_setup_teardown(test_undefine_between_queued_completions,
                                      fixture_setup, fixture_teardown),
      cmocka_unit_test_setup_teardown(test_ctx_free_cancels_waiters,
                                      fixture_setup, fixture_teardown),
      cmocka_unit_test_setup_teardown(test_state_dir_lock, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_state_dir_not_ours, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_unix_socket_not_taken, fixture_setup,
                                      fixture_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
