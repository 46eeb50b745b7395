/* Readiness of a start whose guest passed the check before it began
 * (jitsu_backend_checked(), e.g. a pool's spare checked before its pause):
 * ready at once; without it the same start is checked, and a check that
 * nothing answers fails it. The backend is the test's own: its start
 * reports at once and its guest is nothing. */
#include "helpers.h"

#include <jitsu/backend.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int checked_starts; /* how many starts report jitsu_backend_checked */

static int tb_start(jitsu_vm *vm) {
  if (checked_starts > 0) {
    checked_starts--;
    jitsu_backend_marker(vm);
    jitsu_backend_checked(vm);
  }
  jitsu_backend_started(vm, 0);
  return 0;
}

static int tb_stop(jitsu_vm *vm, jitsu_stop_mode mode, uint64_t grace_ms) {
  (void)mode, (void)grace_ms;
  jitsu_backend_exited(vm, 1, "stopped");
  return 0;
}

static const jitsu_backend_ops test_backend = {
    .version = JITSU_BACKEND_OPS_VERSION,
    .name = "checkedtest",
    .start = tb_start,
    .stop = tb_stop,
};

/* A loopback port that refuses connections: bound, never listening. */
static int refusing_port(int *fd) {
  struct sockaddr_in sin = {.sin_family = AF_INET};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sin);
  *fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(*fd >= 0);
  assert_int_equal(bind(*fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
  assert_int_equal(getsockname(*fd, (struct sockaddr *)&sin, &len), 0);
  return ntohs(sin.sin_port);
}

static jitsu_vm *define(fixture *f, const char *name, bool marker, int port) {
  char addr[64];
  snprintf(addr, sizeof(addr), "127.0.0.1:%d/", port);
  jitsu_vm_def def = JITSU_VM_DEF_INIT;
  def.name = name;
  def.backend = "checkedtest";
  def.ready = JITSU_READY_HTTP;
  def.ready_address = addr;
  def.ready_timeout_ms = 300;
  def.ready_marker = marker;
  jitsu_vm *vm = NULL;
  assert_int_equal(jitsu_vm_define(f->ctx, &def, &vm, &f->err), 0);
  return vm;
}

static outcome out;

static void test_checked_is_ready_at_once(void **state) {
  fixture *f = *state;
  int fd;
  int port = refusing_port(&fd);
  assert_int_equal(jitsu_backend_register(f->ctx, &test_backend), 0);
  jitsu_vm *plain = define(f, "plain", false, port);
  jitsu_vm *marked = define(f, "marked", true, port);

  /* Checked: ready as soon as started, with nothing answering. */
  for (int i = 0; i < 2; i++) {
    jitsu_vm *vm = i ? marked : plain;
    checked_starts = 1;
    assert_ptr_equal(summon_ok(f, jitsu_vm_name(vm), 200), vm);
    out = (outcome){0};
    assert_int_equal(jitsu_vm_stop(vm, JITSU_STOP_DESTROY, outcome_cb, &out),
                     0);
    run_until(f, &out.done, 1000);
    assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_STOPPED);
  }

  /* Not checked: the same start is checked, and fails when nothing
   * answers within the ready-timeout (the flag does not carry over). */
  checked_starts = 0;
  summon_fails(f, "plain", "not ready within 300 ms", 5000);
  close(fd);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_checked_is_ready_at_once,
                                      fixture_setup, fixture_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
