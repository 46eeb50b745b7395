/* The process backend with real programs. */
#include "helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <unistd.h>

static void stop_ok(fixture *f, jitsu_vm *vm, jitsu_stop_mode mode) {
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_stop(vm, mode, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 10000));
  assert_int_equal(o.status, 0);
}

static void test_start_stop_both_modes(void **state) {
  fixture *f = *state;
  int port = free_port();
  assert_int_equal(fixture_load(f,
                                "[vm h]\nexec = %s --listen 127.0.0.1:%d\n"
                                "ready = tcp:127.0.0.1:%d\n"
                                "[vm stubborn]\nexec = /bin/sh -c "
                                "'trap \"\" TERM; echo up; while :; do sleep "
                                "0.05; done'\nstop-grace = 300ms\n",
                                hello_path(), port, port),
                   0);
  jitsu_vm *vm = summon_ok(f, "h", 5000);
  int pid = vm_pid(vm);
  assert_true(pid_alive(pid));
  char body[64];
  assert_int_equal(http_get(port, body, sizeof(body)), 0);
  stop_ok(f, vm, JITSU_STOP_SHUTDOWN);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_STOPPED);
  assert_string_equal(vm_reason(vm), "exited with status 0"); /* SIGTERM */
  assert_false(pid_alive(pid));
  vm = summon_ok(f, "h", 5000);
  pid = vm_pid(vm);
  stop_ok(f, vm, JITSU_STOP_DESTROY);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_STOPPED);
  assert_non_null(strstr(vm_reason(vm), "killed by signal 9"));
  assert_false(pid_alive(pid));
  /* A guest that ignores SIGTERM is killed after its grace. */
  vm = summon_ok(f, "stubborn", 5000);
  pid = vm_pid(vm);
  run_for(f, 100);
  stop_ok(f, vm, JITSU_STOP_SHUTDOWN);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_STOPPED);
  assert_non_null(strstr(vm_reason(vm), "signal 9"));
  assert_false(pid_alive(pid));
}

static int connect_nb(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
  int r = connect(fd, (struct sockaddr *)&sin, sizeof(sin));
  assert_true(r == 0 || errno == EINPROGRESS);
  return fd;
}

/* Connections opened before the guest exists wait in the kernel's queue;
 * the first one summons it, and every one is answered. */
static void test_socket_handoff_loses_nothing(void **state) {
  fixture *f = *state;
  enum { N = 20 };
  int port = free_port();
  char record[300];
  snprintf(record, sizeof(record), "%s/starts", f->dir);
  assert_int_equal(fixture_load(f,
                                "[vm web]\nexec = %s --name web --boot-ms 300 "
                                "--record %s\nsocket = tcp 127.0.0.1:%d "
                                "name=http backlog=64\nready = notify\n",
                                hello_path(), record, port),
                   0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "web");
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_STOPPED);
  int fds[N];
  const char req[] = "GET / HTTP/1.1\r\nHost: web\r\n\r\n";
  for (int i = 0; i < N; i++) {
    fds[i] = connect_nb(port);
    run_for(f, 1);
  }
  /* The connections are queued; the library saw the first and summoned. */
  assert_true(run_until_state(f, vm, JITSU_STATE_STARTING, 2000) ||
              jitsu_vm_state(vm) == JITSU_STATE_READY);
  for (int i = 0; i < N; i++)
    assert_int_equal(write(fds[i], req, sizeof(req) - 1), sizeof(req) - 1);
  assert_true(run_until_state(f, vm, JITSU_STATE_READY, 5000));
  int answered = 0;
  for (int i = 0; i < N; i++) {
    int fl = fcntl(fds[i], F_GETFL);
    fcntl(fds[i], F_SETFL, fl & ~O_NONBLOCK);
    struct timeval tv = {5, 0};
    setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[512];
    size_t got = 0;
    ssize_t n;
    while ((n = read(fds[i], buf + got, sizeof(buf) - 1 - got)) > 0)
      got += (size_t)n;
    buf[got] = '\0';
    answered += strstr(buf, "hello from web") != NULL;
    close(fds[i]);
  }
  assert_int_equal(answered, N);
  assert_int_equal(count_lines(record), 1);
}

/* The start of the log of vm (name) into (text). */
static void read_log(fixture *f, const char *name, char *text, size_t size) {
  char path[400];
  snprintf(path, sizeof(path), "%s/state/logs/%s.log", f->dir, name);
  FILE *in = fopen(path, "r");
  assert_non_null(in);
  size_t n = fread(text, 1, size - 1, in);
  text[n] = '\0';
  fclose(in);
}

static void remember_pid(jitsu_vm *vm, jitsu_state old_state,
                         jitsu_state new_state, const char *reason, void *arg) {
  (void)old_state, (void)reason;
  if (new_state == JITSU_STATE_READY)
    *(int *)arg = vm_pid(vm);
}

static void test_handed_environment(void **state) {
  fixture *f = *state;
  int port = free_port();
  char sock[300];
  snprintf(sock, sizeof(sock), "%s/u.sock", f->dir);
  assert_int_equal(fixture_load(f,
                                "[vm envy]\nexec = /usr/bin/env\n"
                                /* the address as ready = writes it */
                                "socket = tcp:127.0.0.1:%d name=web\n"
                                "socket = unix:%s name=admin\n"
                                /* the older spelling, still read */
                                "socket = udp 127.0.0.1:%d\n"
                                "env = GREETING=hi there\n",
                                port, sock, port),
                   0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "envy");
  int pid = 0;
  assert_int_equal(jitsu_ctx_on_state(f->ctx, remember_pid, &pid), 0);
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 5000));
  assert_true(pid > 0);
  assert_true(run_until_state(f, vm, JITSU_STATE_STOPPED, 5000));
  char text[4096];
  read_log(f, "envy", text, sizeof(text));
  char want[64];
  snprintf(want, sizeof(want), "LISTEN_PID=%d\n", pid);
  assert_non_null(strstr(text, want));
  assert_non_null(strstr(text, "LISTEN_FDS=3\n"));
  assert_non_null(strstr(text, "LISTEN_FDNAMES=web:admin:udp\n"));
  assert_non_null(strstr(text, "GREETING=hi there\n"));
  assert_non_null(strstr(text, "JITSU_VM=envy\n"));
  assert_null(strstr(text, "NOTIFY_SOCKET")); /* readiness is none */
}

static void test_unix_socket_trigger(void **state) {
  fixture *f = *state;
  char sock[300];
  snprintf(sock, sizeof(sock), "%s/web.sock", f->dir);
  assert_int_equal(fixture_load(f,
                                "[vm u]\nexec = %s --name u\n"
                                "socket = unix %s\nready = notify\n",
                                hello_path(), sock),
                   0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "u");
  assert_non_null(
      jitsu_trigger_lookup(f->ctx, "socket", "unix:/nope") == NULL ? vm : NULL);
  char key[320];
  snprintf(key, sizeof(key), "unix:%s", sock);
  assert_ptr_equal(jitsu_trigger_lookup(f->ctx, "socket", key), vm);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock);
  assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
  const char req[] = "GET / HTTP/1.0\r\n\r\n";
  assert_int_equal(write(fd, req, sizeof(req) - 1), sizeof(req) - 1);
  assert_true(run_until_state(f, vm, JITSU_STATE_READY, 5000));
  char buf[512];
  size_t got = 0;
  ssize_t n;
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  while ((n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
    got += (size_t)n;
  buf[got] = '\0';
  close(fd);
  assert_non_null(strstr(buf, "hello from u"));
}

static char proc_state(int pid) {
  char path[64], buf[512];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  FILE *in = fopen(path, "r");
  if (in == NULL)
    return '?';
  size_t n = fread(buf, 1, sizeof(buf) - 1, in);
  fclose(in);
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  return p ? p[2] : '?';
}

static void test_suspend_resume_and_wake_on_connect(void **state) {
  fixture *f = *state;
  int port = free_port();
  assert_int_equal(fixture_load(f,
                                "[vm s]\nexec = %s --name s\n"
                                "socket = tcp 127.0.0.1:%d\nready = notify\n",
                                hello_path(), port),
                   0);
  jitsu_vm *vm = summon_ok(f, "s", 5000);
  int pid = vm_pid(vm);
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_suspend(vm, outcome_cb, &o), 0);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_SUSPENDING);
  assert_true(run_until(f, &o.done, 3000));
  assert_int_equal(o.status, 0);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_SUSPENDED);
  assert_int_equal(proc_state(pid), 'T');
  static outcome r;
  r = (outcome){0};
  assert_int_equal(jitsu_vm_resume(vm, outcome_cb, &r), 0);
  assert_true(run_until(f, &r.done, 3000));
  assert_int_equal(r.status, 0);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_READY);
  /* SIGCONT has been sent; the kernel runs the process when it can (under
   * load the old 'T' can still be read for a moment). */
  for (int i = 0; i < 1000 && proc_state(pid) == 'T'; i++)
    usleep(10000);
  char st = proc_state(pid);
  if (st != 'S' && st != 'R')
    fail_msg("state '%c' after the resume", st);
  /* Suspended again, a connection on its socket resumes it. */
  o.done = 0;
  assert_int_equal(jitsu_vm_suspend(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 3000));
  int fd = connect_nb(port);
  assert_true(run_until_state(f, vm, JITSU_STATE_READY, 3000));
  close(fd);
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  assert_int_equal(info.resumes, 2);
  assert_int_equal(info.spawns, 1);
  assert_int_equal(vm_pid(vm), pid);
  /* A suspended guest can be shut down (it gets SIGCONT to hear it). */
  o.done = 0;
  assert_int_equal(jitsu_vm_suspend(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 3000));
  stop_ok(f, vm, JITSU_STOP_SHUTDOWN);
  assert_false(pid_alive(pid));
}

static void test_crash_then_summon_again(void **state) {
  fixture *f = *state;
  char record[300];
  snprintf(record, sizeof(record), "%s/starts", f->dir);
  assert_int_equal(fixture_load(f,
                                "[vm c]\nexec = %s --listen 127.0.0.1:%d "
                                "--exit-after-ready 3 --record %s\n"
                                "[vm early]\nexec = /bin/sh -c 'exit 4'\n"
                                "ready = notify\n",
                                hello_path(), free_port(), record),
                   0);
  /* (it exits right after ready: by the time we look it may be gone) */
  jitsu_vm *vm = summon_done(f, "c", 5000);
  assert_true(run_until_state(f, vm, JITSU_STATE_FAILED, 5000));
  assert_string_equal(vm_reason(vm), "exited with status 3");
  vm = summon_done(f, "c", 5000);
  assert_true(run_until_state(f, vm, JITSU_STATE_FAILED, 5000));
  assert_int_equal(count_lines(record), 2);
  /* A guest that dies before it is ready fails its summons. */
  jitsu_vm *early = jitsu_vm_find(f->ctx, "early");
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_summon(early, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 5000));
  assert_int_equal(o.status, JITSU_EEXITED);
  assert_string_equal(vm_reason(early),
                      "exited with status 4 before it was ready");
}

static void test_external_kill(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f, "[vm k]\nexec = /bin/sleep 100\n"), 0);
  jitsu_vm *vm = summon_ok(f, "k", 5000);
  kill(vm_pid(vm), SIGKILL);
  assert_true(run_until_state(f, vm, JITSU_STATE_FAILED, 5000));
  assert_non_null(strstr(vm_reason(vm), "killed by signal 9"));
}

/* http readiness needs an answer: a server that accepts and closes (as
 * QEMU's user networking does before the guest listens) is not ready,
 * where a bare connect would have been. */
static void test_http_readiness(void **state) {
  fixture *f = *state;
  int mute = free_port(), port = free_port();
  assert_int_equal(
      fixture_load(f,
                   "[vm mute]\nexec = socat TCP-LISTEN:%d,bind=127.0.0.1,"
                   "reuseaddr,fork SYSTEM:true,nofork\n"
                   "ready = http:127.0.0.1:%d/\nready-timeout = 1500ms\n"
                   "[vm h]\nexec = %s --listen 127.0.0.1:%d --boot-ms 200\n"
                   "ready = http:127.0.0.1:%d/health\n",
                   mute, mute, hello_path(), port, port),
      0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "mute");
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 5000));
  assert_int_equal(o.status, JITSU_ETIMEDOUT);
  assert_true(run_until_state(f, vm, JITSU_STATE_FAILED, 5000));
  assert_non_null(strstr(vm_reason(vm), "not ready within 1500 ms"));
  vm = summon_ok(f, "h", 5000);
  char body[64];
  assert_int_equal(http_get(port, body, sizeof(body)), 0);
  stop_ok(f, vm, JITSU_STOP_DESTROY);
}

static void test_missing_binary(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f, "[vm m]\nexec = /nonexistent/prog --x\n"
                                   "[vm p]\nexec = no-such-program-jitsu\n"
                                   "[vm d]\nexec = /etc\n"),
                   0);
  const char *names[] = {"m", "p", "d"};
  const char *words[] = {"exec '/nonexistent/prog': No such file",
                         "exec 'no-such-program-jitsu': No such file",
                         "Permission denied"};
  for (int i = 0; i < 3; i++) {
    jitsu_vm *vm = jitsu_vm_find(f->ctx, names[i]);
    static outcome o;
    o = (outcome){0};
    assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &o), 0);
    assert_int_equal(o.calls, 0);
    assert_true(run_until(f, &o.done, 2000));
    assert_true(o.status < 0);
    assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_FAILED);
    if (strstr(vm_reason(vm), words[i]) == NULL)
      fprintf(stderr, "reason: %s\n", vm_reason(vm));
    assert_non_null(strstr(vm_reason(vm), words[i]));
  }
  /* Nothing left behind: no guest record. */
  char path[400];
  snprintf(path, sizeof(path), "%s/state/process/m.pid", f->dir);
  assert_int_equal(access(path, F_OK), -1);
  size_t live;
  jitsu_ctx_counts(f->ctx, NULL, &live, NULL);
  assert_int_equal(live, 0);
}

/* A step of the child that fails after it wrote the guest record (here its
 * chdir) is reported with its errno, and the record is removed. */
static void test_child_step_fails(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f, "[vm w]\nexec = /bin/true\n"
                                   "workdir = /nonexistent-jitsu-dir\n"
                                   "[vm l]\nexec = /bin/true\n"),
                   0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "w");
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 2000));
  assert_int_equal(o.status, -ENOENT);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_FAILED);
  assert_non_null(
      strstr(vm_reason(vm), "chdir '/bin/true': No such file or directory"));
  char path[400];
  snprintf(path, sizeof(path), "%s/state/process/w.pid", f->dir);
  assert_int_equal(access(path, F_OK), -1);
  /* The log cannot be opened (a directory took its name). */
  vm = jitsu_vm_find(f->ctx, "l");
  snprintf(path, sizeof(path), "%s/state/logs", f->dir);
  mkdir(path, 0700);
  snprintf(path, sizeof(path), "%s/state/logs/l.log", f->dir);
  assert_int_equal(mkdir(path, 0700), 0);
  o = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 2000));
  assert_int_equal(o.status, -EISDIR);
  assert_non_null(strstr(vm_reason(vm), "cannot open the guest's log"));
  size_t live;
  jitsu_ctx_counts(f->ctx, NULL, &live, NULL);
  assert_int_equal(live, 0);
}

/* A stop that comes while the start is still in the worker thread (the
 * same turn as the summon) waits for it, then ends the guest: the summon
 * is cancelled, the stop succeeds, and no process or record is left. */
static void test_stop_while_spawning(void **state) {
  fixture *f = *state;
  assert_int_equal(fixture_load(f, "[vm s]\nexec = /bin/sleep 100000\n"
                                   "[vm t]\nexec = /bin/sleep 100000\n"),
                   0);
  jitsu_stop_mode modes[2] = {JITSU_STOP_DESTROY, JITSU_STOP_SHUTDOWN};
  const char *names[2] = {"s", "t"};
  for (int i = 0; i < 2; i++) {
    jitsu_vm *vm = jitsu_vm_find(f->ctx, names[i]);
    static outcome summoned, stopped;
    summoned = stopped = (outcome){0};
    assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &summoned), 0);
    assert_int_equal(jitsu_vm_stop(vm, modes[i], outcome_cb, &stopped), 0);
    assert_true(run_until(f, &stopped.done, 5000));
    assert_true(run_until(f, &summoned.done, 5000));
    assert_int_equal(summoned.status, JITSU_ECANCELED);
    assert_int_equal(stopped.status, 0);
    assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_STOPPED);
    char path[400];
    snprintf(path, sizeof(path), "%s/state/process/%s.pid", f->dir, names[i]);
    assert_int_equal(access(path, F_OK), -1);
  }
  size_t live;
  jitsu_ctx_counts(f->ctx, NULL, &live, NULL);
  assert_int_equal(live, 0);
}

/* A context that goes away leaves its guests; a new one adopts them. */
static void test_adopt_after_ctx_free(void **state) {
  fixture *f = *state;
  int probe = (int)syscall(SYS_pidfd_open, getpid(), 0);
  if (probe < 0 && errno == ENOSYS)
    skip_because("no pidfd_open(2) here (valgrind 3.19 lacks it): an "
                 "adopted guest's sockets cannot be shared");
  if (probe >= 0)
    close(probe);
  int port = free_port();
  char record[300];
  snprintf(record, sizeof(record), "%s/starts", f->dir);
  const char *conf = "[vm a]\nexec = %s --name a --record %s\n"
                     "socket = tcp 127.0.0.1:%d\nready = notify\n"
                     "[vm z]\nexec = /bin/sleep 100\n";
  assert_int_equal(fixture_load(f, conf, hello_path(), record, port), 0);
  jitsu_vm *vm = summon_ok(f, "a", 5000);
  int pid = vm_pid(vm);
  jitsu_vm *z = summon_ok(f, "z", 5000);
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_suspend(z, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 3000));
  int zpid = vm_pid(z);
  jitsu_ctx_free(f->ctx);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_true(pid_alive(pid));
  assert_int_equal(fixture_ctx_new(f, &f->ctx), 0);
  assert_int_equal(fixture_load(f, conf, hello_path(), record, port), 0);
  vm = jitsu_vm_find(f->ctx, "a");
  z = jitsu_vm_find(f->ctx, "z");
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_READY);
  assert_int_equal(jitsu_vm_state(z), JITSU_STATE_SUSPENDED);
  assert_int_equal(vm_pid(vm), pid);
  assert_int_equal(vm_pid(z), zpid);
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  assert_true(info.adopted);
  char body[64];
  assert_int_equal(http_get(port, body, sizeof(body)), 0);
  assert_string_equal(body, "hello from a");
  assert_int_equal(count_lines(record), 1);
  /* Its socket is shared with the new context: suspended, a connection
   * resumes it. */
  o.done = 0;
  assert_int_equal(jitsu_vm_suspend(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 3000));
  int wake = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
  connect(wake, (struct sockaddr *)&sin, sizeof(sin));
  assert_true(run_until_state(f, vm, JITSU_STATE_READY, 3000));
  close(wake);
  assert_int_equal(vm_pid(vm), pid);
  /* The adopted guest is stopped like any other, and its exit seen. */
  stop_ok(f, vm, JITSU_STOP_SHUTDOWN);
  assert_false(pid_alive(pid));
  /* Its socket is ours again: a connection summons a new guest. */
  int fd = connect_nb(port);
  assert_true(run_until_state(f, vm, JITSU_STATE_READY, 5000));
  close(fd);
  assert_int_equal(count_lines(record), 2);
}

/* A record whose pid now belongs to another process is not adopted. */
static void test_stale_record_not_adopted(void **state) {
  fixture *f = *state;
  char dir[400], path[450];
  snprintf(dir, sizeof(dir), "%s/state/process", f->dir);
  snprintf(path, sizeof(path), "%s/x.pid", dir);
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "mkdir -p %s", dir);
  assert_int_equal(system(cmd), 0);
  FILE *out = fopen(path, "w");
  fprintf(out, "%d 12345\n", (int)getpid()); /* our pid, wrong start time */
  fclose(out);
  assert_int_equal(fixture_load(f, "[vm x]\nexec = /bin/sleep 100\n"), 0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "x");
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_STOPPED);
  assert_int_equal(access(path, F_OK), -1);
}

static void test_resource_limits(void **state) {
  fixture *f = *state;
  if (under_valgrind())
    skip_because("memcheck itself runs between fork and exec, where "
                 "memory-max already applies");
  assert_int_equal(fixture_load(f, "[vm lim]\nexec = /bin/sh -c 'ulimit -v; "
                                   "ulimit -n'\nmemory-max = 64M\n"
                                   "files-max = 100\n"),
                   0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "lim");
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 5000));
  assert_true(run_until_state(f, vm, JITSU_STATE_STOPPED, 5000));
  char text[256];
  read_log(f, "lim", text, sizeof(text));
  assert_string_equal(text, "65536\n100\n"); /* ulimit -v counts KiB */
}

/* A datagram on an IPv6 UDP socket summons the guest, which answers it. */
static void test_udp_ipv6_trigger(void **state) {
  fixture *f = *state;
  int port = free_port();
  assert_int_equal(fixture_load(f,
                                "[vm dgram]\nexec = %s --name dgram\n"
                                "socket = udp [::1]:%d\nready = notify\n",
                                hello_path(), port),
                   0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "dgram");
  char key[64];
  snprintf(key, sizeof(key), "udp:[::1]:%d", port);
  assert_ptr_equal(jitsu_trigger_lookup(f->ctx, "socket", key), vm);
  int fd = socket(AF_INET6, SOCK_DGRAM, 0);
  struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6,
                              .sin6_port = htons((uint16_t)port)};
  inet_pton(AF_INET6, "::1", &sin6.sin6_addr);
  assert_int_equal(
      sendto(fd, "hi", 2, 0, (struct sockaddr *)&sin6, sizeof(sin6)), 2);
  assert_true(run_until_state(f, vm, JITSU_STATE_READY, 5000));
  char buf[128];
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
  close(fd);
  assert_true(n > 0);
  buf[n] = '\0';
  assert_string_equal(buf, "hello from dgram\n");
}

/* user= and group= drop the guest's privileges (needs root). */
static void test_user_and_group(void **state) {
  fixture *f = *state;
  if (geteuid() != 0) {
    skip_because("user= and group= need root (run the suite as root)");
  }
  assert_int_equal(fixture_load(f, "[vm who]\nexec = /usr/bin/id\n"
                                   "user = nobody\ngroup = nogroup\n"),
                   0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "who");
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 5000));
  assert_true(run_until_state(f, vm, JITSU_STATE_STOPPED, 5000));
  char text[512];
  read_log(f, "who", text, sizeof(text));
  assert_non_null(strstr(text, "uid=65534(nobody) gid=65534(nogroup)"));
  assert_non_null(strstr(text, "groups=65534(nogroup)"));
}

int main(void) {
#define T(fn)                                                                  \
  cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)
  const struct CMUnitTest tests[] = {
      T(test_start_stop_both_modes),
      T(test_socket_handoff_loses_nothing),
      T(test_handed_environment),
      T(test_unix_socket_trigger),
      T(test_suspend_resume_and_wake_on_connect),
      T(test_crash_then_summon_again),
      T(test_external_kill),
      T(test_missing_binary),
      T(test_http_readiness),
      T(test_adopt_after_ctx_free),
      T(test_stale_record_not_adopted),
      T(test_user_and_group),
      T(test_child_step_fails),
      T(test_stop_while_spawning),
      T(test_resource_limits),
      T(test_udp_ipv6_trigger),
  };
  return cmocka_run_group_tests_name("process", tests, NULL, NULL);
}
