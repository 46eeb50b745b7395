/* Summon semantics with real processes: one spawn for many summons,
 * readiness time-outs, limits and the idle policy. */
#include "helpers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

enum { MANY = 1000 };

typedef struct many {
  int inside; /* set while jitsu_vm_summon() runs */
  int reentrant;
  int done;
  int ok;
} many;

static void many_cb(jitsu_vm *vm, int status, void *arg) {
  (void)vm;
  many *m = arg;
  if (m->inside)
    m->reentrant++;
  m->done++;
  m->ok += status == 0;
}

/* A logger that counts the lines saying a summon was refused. */
static void count_refusals(jitsu_log_level level, const char *msg, void *arg) {
  if (level == JITSU_LOG_WARNING && strstr(msg, "cannot summon") != NULL)
    (*(int *)arg)++;
}

static void test_thousand_summons_one_spawn(void **state) {
  fixture *f = *state;
  char record[300];
  snprintf(record, sizeof(record), "%s/starts", f->dir);
  assert_int_equal(fixture_load(f,
                                "[vm one]\nexec = %s --name one --boot-ms 100 "
                                "--record %s\nsocket = tcp 127.0.0.1:%d\n"
                                "ready = notify\n",
                                hello_path(), record, free_port()),
                   0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "one");
  static many m;
  m = (many){0};
  for (int i = 0; i < MANY; i++) {
    m.inside = 1;
    assert_int_equal(jitsu_vm_summon(vm, many_cb, &m), 0);
    m.inside = 0;
  }
  assert_int_equal(m.done, 0);
  for (int i = 0; i < 1000 && m.done < MANY; i++)
    run_for(f, 10);
  assert_int_equal(m.done, MANY);
  assert_int_equal(m.ok, MANY);
  assert_int_equal(m.reentrant, 0);
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  assert_int_equal(info.spawns, 1);
  assert_int_equal(info.summons, MANY);
  assert_int_equal(count_lines(record), 1);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_READY);
  /* A summon of a ready vm answers at once, still not re-entrantly. */
  m.inside = 1;
  m.done = 0;
  assert_int_equal(jitsu_vm_summon(vm, many_cb, &m), 0);
  m.inside = 0;
  run_for(f, 5);
  assert_int_equal(m.done, 1);
  assert_int_equal(m.reentrant, 0);
}

static void test_readiness_timeout(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f,
                                "[vm slow]\nexec = %s --boot-ms 10000 "
                                "--listen 127.0.0.1:%d\n"
                                "ready = notify\nready-timeout = 300ms\n",
                                hello_path(), free_port()),
                   0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "slow");
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &o), 0);
  /* Its start reports from libuv's thread pool: wait for the pid. */
  int pid = 0;
  for (int i = 0; i < 1000 && (pid = vm_pid(vm)) == 0; i++)
    run_for(f, 5);
  assert_true(pid > 0);
  assert_true(run_until(f, &o.done, 5000));
  assert_int_equal(o.status, JITSU_ETIMEDOUT);
  assert_true(run_until_state(f, vm, JITSU_STATE_FAILED, 5000));
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  assert_non_null(strstr(info.reason, "not ready within 300 ms"));
  assert_false(pid_alive(pid)); /* destroyed, and reaped */
  /* A later summon tries again (and times out again). */
  static outcome again;
  again = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &again), 0);
  assert_true(run_until_state(f, vm, JITSU_STATE_STARTING, 1000));
  assert_true(run_until(f, &again.done, 5000));
  assert_int_equal(again.status, JITSU_ETIMEDOUT);
}

static void test_tcp_readiness(void **state) {
  fixture *f = *state;
  int port = free_port();
  assert_int_equal(fixture_load(f,
                                "[vm t]\nexec = %s --boot-ms 200 --listen "
                                "127.0.0.1:%d\nready = tcp:127.0.0.1:%d\n",
                                hello_path(), port, port),
                   0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "t");
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 5000));
  assert_int_equal(o.status, 0);
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  assert_true(info.last_start_ms >= 200); /* it did wait for the port */
  char body[128];
  assert_int_equal(http_get(port, body, sizeof(body)), 0);
  assert_string_equal(body, "hello from hello");
}

static void test_limits(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f,
                                "[jitsu]\nmax-live = 2\nmax-starting = 1\n"
                                "[vm a]\nexec = /bin/sleep 100\n"
                                "[vm b]\nexec = %s --boot-ms 300 --listen "
                                "127.0.0.1:%d\nready = notify\n"
                                "[vm c]\nexec = /bin/sleep 100\n",
                                hello_path(), free_port()),
                   0);
  jitsu_vm *a = jitsu_vm_find(f->ctx, "a"), *b = jitsu_vm_find(f->ctx, "b"),
           *c = jitsu_vm_find(f->ctx, "c");
  static int refusal_lines;
  refusal_lines = 0;
  jitsu_ctx_set_logger(f->ctx, count_refusals, &refusal_lines,
                       JITSU_LOG_WARNING);
  static outcome oa, ob;
  oa = ob = (outcome){0};
  assert_int_equal(jitsu_vm_summon(b, outcome_cb, &ob), 0);
  /* b is starting: max-starting = 1 queues a behind it; a starts once b
   * is ready. */
  assert_int_equal(jitsu_vm_summon(a, outcome_cb, &oa), 0);
  assert_int_equal(jitsu_vm_state(a), JITSU_STATE_STOPPED);
  /* b live and a queued count against max-live = 2: c is refused. */
  assert_int_equal(jitsu_vm_summon(c, outcome_cb, NULL), JITSU_ELIMIT);
  assert_non_null(strstr(jitsu_ctx_last_error(f->ctx), "max-live is 2"));
  run_for(f, 100); /* b boots for 300 ms: a still waits */
  assert_int_equal(jitsu_vm_state(a), JITSU_STATE_STOPPED);
  assert_int_equal(oa.done, 0);
  assert_true(run_until(f, &ob.done, 5000));
  assert_int_equal(ob.status, 0);
  assert_true(run_until(f, &oa.done, 5000));
  assert_int_equal(oa.status, 0);
  /* A stop of a queued vm cancels its summons; it never starts. */
  static outcome oq, ost;
  ost = (outcome){0};
  assert_int_equal(jitsu_vm_stop(a, JITSU_STOP_DESTROY, outcome_cb, &ost), 0);
  assert_true(run_until(f, &ost.done, 5000));
  ost = (outcome){0};
  assert_int_equal(jitsu_vm_stop(b, JITSU_STOP_DESTROY, outcome_cb, &ost), 0);
  assert_true(run_until(f, &ost.done, 5000));
  ob = oq = ost = (outcome){0};
  assert_int_equal(jitsu_vm_summon(b, outcome_cb, &ob), 0);
  assert_int_equal(jitsu_vm_summon(a, outcome_cb, &oq), 0);
  assert_int_equal(jitsu_vm_stop(a, JITSU_STOP_DESTROY, outcome_cb, &ost), 0);
  assert_true(run_until(f, &oq.done, 1000));
  assert_int_equal(oq.status, JITSU_ECANCELED);
  assert_true(run_until(f, &ob.done, 5000));
  assert_int_equal(ob.status, 0);
  assert_int_equal(jitsu_vm_state(a), JITSU_STATE_STOPPED);
  oa = (outcome){0};
  assert_int_equal(jitsu_vm_summon(a, outcome_cb, &oa), 0);
  assert_true(run_until(f, &oa.done, 5000));
  assert_int_equal(oa.status, 0);
  /* a and b live: max-live = 2 refuses c at once. */
  assert_int_equal(jitsu_vm_summon(c, outcome_cb, NULL), JITSU_ELIMIT);
  assert_non_null(strstr(jitsu_ctx_last_error(f->ctx), "max-live is 2"));
  assert_int_equal(jitsu_vm_state(c), JITSU_STATE_STOPPED);
  /* Both refusals counted; logged once (the next line in 10 s at most). */
  uint64_t refused_live, refused_waiters;
  jitsu_ctx_refusals(f->ctx, &refused_live, &refused_waiters);
  assert_int_equal(refused_live, 2);
  assert_int_equal(refused_waiters, 0);
  assert_int_equal(refusal_lines, 1);
  size_t live;
  jitsu_ctx_counts(f->ctx, NULL, &live, NULL);
  assert_int_equal(live, 2);
  /* Once one stops, c may start. */
  static outcome os, oc;
  os = oc = (outcome){0};
  assert_int_equal(jitsu_vm_stop(a, JITSU_STOP_DESTROY, outcome_cb, &os), 0);
  assert_true(run_until(f, &os.done, 5000));
  assert_int_equal(jitsu_vm_summon(c, outcome_cb, &oc), 0);
  assert_true(run_until(f, &oc.done, 5000));
  assert_int_equal(oc.status, 0);
}

static void test_max_waiters(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f,
                                "[jitsu]\nmax-waiters = 3\n"
                                "[vm w]\nexec = %s --boot-ms 200 --listen "
                                "127.0.0.1:%d\nready = notify\n",
                                hello_path(), free_port()),
                   0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "w");
  static many m;
  m = (many){0};
  for (int i = 0; i < 3; i++)
    assert_int_equal(jitsu_vm_summon(vm, many_cb, &m), 0);
  assert_int_equal(jitsu_vm_summon(vm, many_cb, &m), JITSU_ELIMIT);
  uint64_t refused_waiters;
  jitsu_ctx_refusals(f->ctx, NULL, &refused_waiters);
  assert_int_equal(refused_waiters, 1);
  for (int i = 0; i < 300 && m.done < 3; i++)
    run_for(f, 10);
  assert_int_equal(m.ok, 3);
}

static void test_idle_policy(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f,
                                "[vm s]\nexec = /bin/sleep 100\n"
                                "idle-timeout = 200ms\nidle-action = suspend\n"
                                "[vm d]\nexec = /bin/sleep 100\n"
                                "idle-timeout = 200ms\nidle-action = destroy\n"
                                "[vm h]\nexec = /bin/sleep 100\n"
                                "idle-timeout = 200ms\nidle-action = destroy\n"
                                "[vm n]\nexec = /bin/sleep 100\n"),
                   0);
  jitsu_idle_options io = JITSU_IDLE_OPTIONS_INIT;
  io.check_interval_ms = 50;
  assert_int_equal(jitsu_idle_attach(f->ctx, &io), 0);
  assert_int_equal(jitsu_idle_attach(f->ctx, &io), -EEXIST);
  const char *names[] = {"s", "d", "h", "n"};
  jitsu_vm *vm[4];
  static outcome o[4];
  memset(o, 0, sizeof(o));
  for (int i = 0; i < 4; i++) {
    vm[i] = jitsu_vm_find(f->ctx, names[i]);
    assert_int_equal(jitsu_vm_summon(vm[i], outcome_cb, &o[i]), 0);
  }
  for (int i = 0; i < 4; i++)
    assert_true(run_until(f, &o[i].done, 2000));
  jitsu_vm_hold(vm[2]); /* work in flight: never put away */
  assert_true(run_until_state(f, vm[0], JITSU_STATE_SUSPENDED, 3000));
  assert_true(run_until_state(f, vm[1], JITSU_STATE_STOPPED, 3000));
  run_for(f, 400);
  assert_int_equal(jitsu_vm_state(vm[2]), JITSU_STATE_READY);
  assert_int_equal(jitsu_vm_state(vm[3]), JITSU_STATE_READY);
  jitsu_vm_release(vm[2]);
  assert_true(run_until_state(f, vm[2], JITSU_STATE_STOPPED, 3000));
  jitsu_idle_detach(f->ctx);
}

/* The test holds spares as a backend would (jitsu_spare_*): they count
 * against max-live and max-starting, and a summon that needs their room
 * ends them through their reclaim callback, other vms' first. */
typedef struct test_spare {
  jitsu_spare acct;
  int reclaimed;
} test_spare;

static void reclaim_spare(jitsu_spare *a) {
  test_spare *t = JITSU_CONTAINER_OF(a, test_spare, acct);
  t->reclaimed++;
  jitsu_spare_end(a);
}

static void test_spares_count(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f, "[jitsu]\nmax-live = 3\nmax-starting = 2\n"
                                   "[vm a]\nexec = /bin/sleep 100\n"
                                   "[vm b]\nexec = /bin/sleep 100\n"),
                   0);
  jitsu_vm *a = jitsu_vm_find(f->ctx, "a"), *b = jitsu_vm_find(f->ctx, "b");
  static test_spare sa1, sa2, sb1, extra;
  sa1 = sa2 = sb1 = extra = (test_spare){0};
  size_t n, filling;
  /* Two may fill at once (max-starting 2), not three. */
  assert_int_equal(jitsu_spare_begin(a, &sa1.acct, reclaim_spare), 0);
  assert_int_equal(jitsu_spare_begin(a, &sa2.acct, reclaim_spare), 0);
  assert_int_equal(jitsu_spare_begin(b, &sb1.acct, reclaim_spare),
                   JITSU_ELIMIT);
  jitsu_spare_filled(&sa1.acct);
  assert_int_equal(jitsu_spare_begin(b, &sb1.acct, reclaim_spare), 0);
  jitsu_spare_filled(&sa2.acct);
  jitsu_spare_filled(&sb1.acct);
  jitsu_ctx_spares(f->ctx, &n, &filling);
  assert_int_equal(n, 3);
  assert_int_equal(filling, 0);
  /* Per vm, with the memory their backend says they hold. */
  sa1.acct.memory = 1000, sa2.acct.memory = 24, sb1.acct.memory = 7;
  uint64_t mem;
  jitsu_vm_spares(a, &n, &filling, &mem);
  assert_int_equal(n, 2);
  assert_int_equal(filling, 0);
  assert_int_equal(mem, 1024);
  jitsu_vm_spares(b, &n, NULL, &mem);
  assert_int_equal(n, 1);
  assert_int_equal(mem, 7);
  /* Three spares fill max-live 3: no fourth. */
  assert_int_equal(jitsu_spare_begin(b, &extra.acct, reclaim_spare),
                   JITSU_ELIMIT);
  /* b's summon needs a room: a spare of a (the oldest) gives way, not
   * b's own. */
  static outcome ob, oa;
  ob = oa = (outcome){0};
  assert_int_equal(jitsu_vm_summon(b, outcome_cb, &ob), 0);
  assert_int_equal(sa1.reclaimed, 1);
  assert_int_equal(sa2.reclaimed + sb1.reclaimed, 0);
  assert_true(run_until(f, &ob.done, 5000));
  assert_int_equal(ob.status, 0);
  /* a's summon: b's spare goes (other vms' first), not a's own. */
  assert_int_equal(jitsu_vm_summon(a, outcome_cb, &oa), 0);
  assert_int_equal(sb1.reclaimed, 1);
  assert_int_equal(sa2.reclaimed, 0);
  assert_true(run_until(f, &oa.done, 5000));
  jitsu_ctx_spares(f->ctx, &n, NULL);
  assert_int_equal(n, 1); /* 2 live + 1 spare = max-live */
  /* Ending twice, or a spare never counted, changes nothing. */
  jitsu_spare_end(&sa2.acct);
  jitsu_spare_end(&sa2.acct);
  jitsu_spare_end(&extra.acct);
  jitsu_ctx_spares(f->ctx, &n, NULL);
  assert_int_equal(n, 0);
  assert_int_equal(jitsu_spare_begin(a, NULL, reclaim_spare), -EINVAL);
  /* A spare made already (adopted) needs no start slot: with max-starting
   * full of filling spares it is still counted, as made; max-live still
   * bounds it. */
  static test_spare f1, f2, f3, adopted, over;
  f1 = f2 = f3 = adopted = over = (test_spare){0};
  assert_int_equal(jitsu_vm_stop(a, JITSU_STOP_DESTROY, NULL, NULL), 0);
  assert_int_equal(jitsu_vm_stop(b, JITSU_STOP_DESTROY, NULL, NULL), 0);
  assert_true(run_until_state(f, a, JITSU_STATE_STOPPED, 3000));
  assert_true(run_until_state(f, b, JITSU_STATE_STOPPED, 3000));
  assert_int_equal(jitsu_spare_begin(b, &f1.acct, reclaim_spare), 0);
  assert_int_equal(jitsu_spare_begin(b, &f2.acct, reclaim_spare), 0);
  assert_int_equal(jitsu_spare_begin(b, &f3.acct, reclaim_spare),
                   JITSU_ELIMIT); /* max-starting 2 */
  assert_int_equal(jitsu_spare_adopt(a, &adopted.acct, reclaim_spare), 0);
  jitsu_ctx_spares(f->ctx, &n, &filling);
  assert_int_equal(n, 3);
  assert_int_equal(filling, 2);
  assert_int_equal(jitsu_spare_adopt(a, &over.acct, reclaim_spare),
                   JITSU_ELIMIT); /* 3 spares = max-live */
  assert_int_equal(jitsu_spare_adopt(a, &adopted.acct, reclaim_spare),
                   -EINVAL); /* counted already */
  jitsu_spare_end(&adopted.acct);
  jitsu_spare_end(&f1.acct);
  jitsu_spare_end(&f2.acct);
  jitsu_ctx_spares(f->ctx, &n, &filling);
  assert_int_equal(n + filling, 0);
}

/* jitsu_vm_probe(): a vm's http check run against another address (as a
 * backend warms a spare up through a forward of its own). */
typedef struct probed {
  int calls, status;
} probed;

static void probe_cb(jitsu_probe *p, int status, void *arg) {
  probed *o = arg;
  (void)p;
  o->calls++;
  o->status = status;
}

static void test_probe(void **state) {
  fixture *f = *state;
  int own = free_port(), srv_port = free_port(), none = free_port();
  assert_int_equal(fixture_load(f,
                                "[vm t]\nexec = /bin/sleep 100\n"
                                "ready = http:127.0.0.1:%d/x\n"
                                "[vm srv]\nexec = %s --listen 127.0.0.1:%d\n"
                                "ready = tcp:127.0.0.1:%d\n"
                                "[vm plain]\nexec = /bin/sleep 100\n",
                                own, hello_path(), srv_port, srv_port),
                   0);
  jitsu_vm *t = jitsu_vm_find(f->ctx, "t"), *srv = jitsu_vm_find(f->ctx, "srv");
  assert_int_equal(jitsu_vm_ready_port(t), own);
  assert_int_equal(jitsu_vm_ready_port(jitsu_vm_find(f->ctx, "plain")), 0);
  static outcome up;
  up = (outcome){0};
  assert_int_equal(jitsu_vm_summon(srv, outcome_cb, &up), 0);
  assert_true(run_until(f, &up.done, 5000));
  assert_int_equal(up.status, 0);
  struct sockaddr_in at = {.sin_family = AF_INET};
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  jitsu_probe *p = NULL;
  static probed answered, silent, canceled, refused;
  answered = silent = canceled = refused = (probed){0};
  /* A server that answers HTTP: 0, once, never from inside the call. */
  at.sin_port = htons((uint16_t)srv_port);
  assert_int_equal(
      jitsu_vm_probe(t, (struct sockaddr *)&at, 5000, probe_cb, &answered, &p),
      0);
  assert_int_equal(answered.calls, 0);
  for (int i = 0; i < 500 && answered.calls == 0; i++)
    run_for(f, 10);
  assert_int_equal(answered.calls, 1);
  assert_int_equal(answered.status, 0);
  /* Nothing listens: retried until its time-out. */
  at.sin_port = htons((uint16_t)none);
  assert_int_equal(
      jitsu_vm_probe(t, (struct sockaddr *)&at, 300, probe_cb, &silent, &p), 0);
  for (int i = 0; i < 500 && silent.calls == 0; i++)
    run_for(f, 10);
  assert_int_equal(silent.calls, 1);
  assert_int_equal(silent.status, JITSU_ETIMEDOUT);
  /* Canceled: JITSU_ECANCELED once, from the loop. */
  assert_int_equal(
      jitsu_vm_probe(t, (struct sockaddr *)&at, 60000, probe_cb, &canceled, &p),
      0);
  run_for(f, 30);
  jitsu_probe_cancel(p);
  assert_int_equal(canceled.calls, 0);
  run_for(f, 50);
  assert_int_equal(canceled.calls, 1);
  assert_int_equal(canceled.status, JITSU_ECANCELED);
  /* Only tcp and http checks can be run elsewhere. */
  assert_int_equal(jitsu_vm_probe(jitsu_vm_find(f->ctx, "plain"),
                                  (struct sockaddr *)&at, 100, probe_cb,
                                  &refused, &p),
                   -EINVAL);
  assert_int_equal(jitsu_vm_probe(t, NULL, 100, probe_cb, &refused, &p),
                   -EINVAL);
  run_for(f, 20);
  assert_int_equal(refused.calls, 0);
  /* A probe under way when its vm goes still completes (canceled by the
   * backend that owns it; here, by the test). */
  assert_int_equal(
      jitsu_vm_probe(t, (struct sockaddr *)&at, 60000, probe_cb, &refused, &p),
      0);
  assert_int_equal(jitsu_vm_undefine(t), 0);
  run_for(f, 20);
  jitsu_probe_cancel(p);
  run_for(f, 20);
  assert_int_equal(refused.calls, 1);
  assert_int_equal(refused.status, JITSU_ECANCELED);
}

int main(void) {
#define T(fn)                                                                  \
  cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)
  const struct CMUnitTest tests[] = {
      T(test_thousand_summons_one_spawn),
      T(test_readiness_timeout),
      T(test_tcp_readiness),
      T(test_limits),
      T(test_max_waiters),
      T(test_idle_policy),
      T(test_spares_count),
      T(test_probe),
  };
  return cmocka_run_group_tests_name("summon", tests, NULL, NULL);
}
