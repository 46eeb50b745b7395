/* The state machine: every pair of states, allowed or refused. */
#include "helpers.h"
#include "internal.h"

#include <string.h>

/* Written out independently of the library's table. */
static const char *const allowed_pairs[] = {
    "stopped>starting",
    "starting>ready",
    "starting>stopping",
    "starting>failed",
    "ready>suspending",
    "ready>stopping",
    "ready>stopped",
    "ready>failed",
    "suspending>suspended",
    "suspending>ready",
    "suspending>stopped",
    "suspending>failed",
    "suspended>resuming",
    "suspended>stopping",
    "suspended>stopped",
    "suspended>failed",
    "resuming>ready",
    "resuming>suspended",
    "resuming>stopped",
    "resuming>failed",
    "stopping>stopped",
    "stopping>failed",
    "failed>starting",
    /* only when an adoption finds out (jitsu_backend_adopted) */
    "starting>suspended",
    "starting>stopped",
};

static int expected(jitsu_state from, jitsu_state to) {
  char pair[64];
  snprintf(pair, sizeof(pair), "%s>%s", jitsu_state_name(from),
           jitsu_state_name(to));
  for (size_t i = 0; i < sizeof(allowed_pairs) / sizeof(*allowed_pairs); i++)
    if (strcmp(pair, allowed_pairs[i]) == 0)
      return 1;
  return 0;
}

static void test_transition_table(void **state) {
  (void)state;
  int allowed = 0;
  for (int from = 0; from < JITSU_STATE_COUNT; from++)
    for (int to = 0; to < JITSU_STATE_COUNT; to++) {
      int want = expected((jitsu_state)from, (jitsu_state)to);
      allowed += want;
      assert_int_equal(
          jitsu_state_transition_allowed((jitsu_state)from, (jitsu_state)to),
          want);
    }
  assert_int_equal(allowed, 25);
  assert_false(
      jitsu_state_transition_allowed(JITSU_STATE_COUNT, JITSU_STATE_STOPPED));
  assert_string_equal(jitsu_state_name(JITSU_STATE_SUSPENDED), "suspended");
  assert_string_equal(jitsu_state_name((jitsu_state)99), "invalid");
}

/* Drive a defined vm through set_state: illegal moves are refused and
 * change nothing; legal ones are applied and announced. */
typedef struct seen {
  int calls;
  jitsu_state last_old, last_new;
} seen;

static void on_state(jitsu_vm *vm, jitsu_state o, jitsu_state n,
                     const char *reason, void *arg) {
  (void)vm, (void)reason;
  seen *s = arg;
  s->calls++;
  s->last_old = o;
  s->last_new = n;
}

static void test_set_state_refuses_illegal(void **state) {
  fixture *f = *state;
  jitsu_vm_def def = JITSU_VM_DEF_INIT;
  jitsu_param params[] = {{"exec", "/bin/true"}};
  def.name = "vm1";
  def.params = params;
  def.n_params = 1;
  jitsu_vm *vm;
  assert_int_equal(jitsu_vm_define(f->ctx, &def, &vm, &f->err), 0);
  seen s = {0};
  assert_int_equal(jitsu_ctx_on_state(f->ctx, on_state, &s), 0);
  for (int from = 0; from < JITSU_STATE_COUNT; from++) {
    for (int to = 0; to < JITSU_STATE_COUNT; to++) {
      vm->state = (jitsu_state)from; /* place it, bypassing the machine */
      int calls = s.calls;
      int r = jitsu__vm_set_state(vm, (jitsu_state)to, "test");
      if (expected((jitsu_state)from, (jitsu_state)to)) {
        assert_int_equal(r, 0);
        assert_int_equal(vm->state, to);
        assert_int_equal(s.calls, calls + 1);
        assert_int_equal(s.last_old, from);
        assert_int_equal(s.last_new, to);
      } else {
        assert_int_equal(r, JITSU_ESTATE);
        assert_int_equal(vm->state, from);
        assert_int_equal(s.calls, calls);
        assert_non_null(strstr(jitsu_ctx_last_error(f->ctx), "illegal"));
      }
      /* Undo the live accounting before the next placement. */
      jitsu_list_remove(&vm->live);
      f->ctx->n_live = 0;
      f->ctx->n_starting = 0;
      vm->state = JITSU_STATE_STOPPED;
    }
  }
  assert_int_equal(jitsu_ctx_off_state(f->ctx, on_state, &s), 0);
  assert_int_equal(jitsu_ctx_off_state(f->ctx, on_state, &s), -ENOENT);
}

static void test_verbs_refused_in_wrong_state(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f, "[vm a]\nexec = /bin/sleep 100\n"), 0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "a");
  assert_non_null(vm);
  assert_int_equal(jitsu_vm_suspend(vm, NULL, NULL), JITSU_ESTATE);
  assert_non_null(strstr(jitsu_ctx_last_error(f->ctx), "it is stopped"));
  assert_int_equal(jitsu_vm_resume(vm, NULL, NULL), JITSU_ESTATE);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_STOPPED);
  assert_int_equal(jitsu_vm_stop(vm, (jitsu_stop_mode)7, NULL, NULL), -EINVAL);
  /* Stopping a stopped vm completes, later, with 0. */
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_stop(vm, JITSU_STOP_SHUTDOWN, outcome_cb, &o), 0);
  assert_int_equal(o.calls, 0); /* never from inside the call */
  assert_true(run_until(f, &o.done, 1000));
  assert_int_equal(o.status, 0);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_STOPPED);
}

/* (r), a verb's return, is 0, and the verb then completes (not from
 * inside the call) within (ms): its status. */
static int completes(fixture *f, int r, outcome *o, int ms) {
  assert_int_equal(r, 0);
  assert_int_equal(o->calls, 0);
  assert_true(run_until(f, &o->done, ms));
  assert_int_equal(o->calls, 1);
  return o->status;
}

/* A verb whose state holds already completes, later, with 0: resume of
 * a ready vm, suspend of a suspended one (as stop of a stopped one). */
static void test_verbs_already_done(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f, "[vm a]\nexec = /bin/sleep 100\n"), 0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "a");
  static outcome o[5];
  assert_int_equal(
      completes(f, jitsu_vm_summon(vm, outcome_cb, &o[0]), &o[0], 5000), 0);
  assert_int_equal(
      completes(f, jitsu_vm_resume(vm, outcome_cb, &o[1]), &o[1], 1000), 0);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_READY);
  assert_int_equal(
      completes(f, jitsu_vm_suspend(vm, outcome_cb, &o[2]), &o[2], 5000), 0);
  assert_int_equal(
      completes(f, jitsu_vm_suspend(vm, outcome_cb, &o[3]), &o[3], 1000), 0);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_SUSPENDED);
  completes(f, jitsu_vm_stop(vm, JITSU_STOP_DESTROY, outcome_cb, &o[4]), &o[4],
            5000);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_STOPPED);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_transition_table),
      cmocka_unit_test_setup_teardown(test_set_state_refuses_illegal,
                                      fixture_setup, fixture_teardown),
      cmocka_unit_test_setup_teardown(test_verbs_refused_in_wrong_state,
                                      fixture_setup, fixture_teardown),
      cmocka_unit_test_setup_teardown(test_verbs_already_done, fixture_setup,
                                      fixture_teardown),
  };
  return cmocka_run_group_tests_name("state", tests, NULL, NULL);
}
