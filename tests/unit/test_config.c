/* The config file: every kind of error with its line, and nothing applied
 * unless the whole file is right. */
#include "helpers.h"
#include "internal.h"
#include "module_names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Load (text); expect failure at (line) naming (key) (or NULL), with
 * (words) in the message, and no vm defined. */
static void expect_error(fixture *f, const char *text, unsigned line,
                         const char *key, const char *words) {
  int r = fixture_load(f, "%s", text);
  if (r == 0 || f->err.line != line || strstr(f->err.message, words) == NULL)
    fprintf(stderr, "config:\n%s\ngot %d: %s (line %u)\n", text, r,
            f->err.message, f->err.line);
  assert_true(r < 0);
  assert_int_equal(f->err.line, line);
  char prefix[400];
  if (key != NULL) {
    snprintf(prefix, sizeof(prefix), "%s:%u: %s: ", f->config, line, key);
    assert_string_equal(f->err.key, key);
  } else {
    snprintf(prefix, sizeof(prefix), "%s:%u: ", f->config, line);
  }
  assert_memory_equal(f->err.message, prefix, strlen(prefix));
  assert_non_null(strstr(f->err.message, words));
  /* One place for the detail: the context's last error says the same. */
  assert_string_equal(jitsu_ctx_last_error(f->ctx), f->err.message);
  size_t defined;
  jitsu_ctx_counts(f->ctx, &defined, NULL, NULL);
  assert_int_equal(defined, 0);
}

static void test_errors_have_lines(void **state) {
  fixture *f = *state;
  expect_error(f, "[vm a]\nexec = /bin/true\nbogus = 1\n", 3, "bogus",
               "unknown key");
  /* A near miss names the key that was meant (a vm's, a backend's, a
   * section's). */
  expect_error(f, "[vm a]\nexec = /bin/true\nidle-timout = 1s\n", 3,
               "idle-timout", "unknown key; did you mean 'idle-timeout'?");
  expect_error(f, "[vm a]\nexc = /bin/true\n", 2, "exc",
               "unknown key; did you mean 'exec'?");
  expect_error(f, "[jitsu]\nmax-lve = 3\n", 2, "max-lve",
               "unknown key in [jitsu]; did you mean 'max-live'?");
  /* An enumerated key takes one of its words, or names them. */
  expect_error(f, "[vm a]\nexec = /bin/true\nidle-action = suspnd\n", 3,
               "idle-action",
               "'suspnd' is not one of: none | destroy | shutdown | suspend");
  expect_error(f, "[jitsu]\nmax-live = lots\n", 2, "max-live",
               "not a whole number");
  expect_error(f, "[vm a]\nexec = /bin/true\nready-timeout = 5\n", 3,
               "ready-timeout", "not a duration");
  expect_error(f, "[vm a]\nexec = /bin/true\nready-timeout = 5x\n", 3,
               "ready-timeout", "not a duration");
  expect_error(f, "[vm a]\nexec = /bin/true\n\n[vm a]\nexec = /bin/false\n", 4,
               NULL, "duplicate vm 'a' (first defined at line 1)");
  expect_error(f, "[vm a]\nready = none\n", 1, "exec", "missing");
  expect_error(f, "; comment\n[nonsense]\nx = 1\n", 2, NULL,
               "unknown section [nonsense]");
  expect_error(f, "x = 1\n", 1, "x", "outside of any section");
  expect_error(f, "[vm a]\nexec = /bin/true\nexec = /bin/false\n", 3, "exec",
               "given more than once (first at line 2)");
  expect_error(f,
               "[jitsu]\nmax-live = 3\n[vm a]\nexec = /bin/true\n"
               "[jitsu]\nmax-live = 4\n",
               5, NULL, "duplicate section [jitsu] (first at line 1)");
  expect_error(f, "[jitsu]\nmax-live = 3\nmax-live = 4\n[vm a]\n", 3,
               "max-live", "given more than once (first at line 2)");
  expect_error(f, "[vm a]\nexec = /bin/true\nsocket = tcp nowhere\n", 3,
               "socket", "numeric HOST:PORT");
  expect_error(f, "[vm a]\nexec = /bin/true\nsocket = sctp 1.2.3.4:5\n", 3,
               "socket", "expected");
  expect_error(f, "[vm a]\nexec = /bin/true\nready = tcp:localhost\n", 3,
               "ready", "tcp:HOST:PORT");
  expect_error(f, "[vm a]\nexec = /bin/true\nready = maybe\n", 3, "ready",
               "not none, notify, tcp:HOST:PORT, http:HOST:PORT[/PATH] or "
               "marker");
  expect_error(f, "[vm a]\nexec = /bin/true\nready = http:127.0.0.1:80/a b\n",
               3, "ready", "http:HOST:PORT[/PATH]");
  expect_error(f, "[vm a]\nexec = /bin/true\nready = markers\n", 3, "ready",
               "is not none");
  expect_error(f, "[vm a]\nexec = /bin/true\nready = marker+http:1.2.3.4\n", 3,
               "ready", "http:HOST:PORT");
  expect_error(f, "[vm a]\nexec = /bin/true\nready = marker\n", 3, "ready",
               "process backend has no console marker");
  expect_error(f, "[vm a]\nexec = \"/bin/true\n", 2, "exec", "quotes");
  expect_error(f, "[vm a]\nexec = /bin/true\nthis line has no equals\n", 3,
               NULL, "syntax error");
  expect_error(f, "[vm a]\nexec = /bin/true\nbackend = warp\n", 3, "backend",
               "unknown backend 'warp'");
  expect_error(f, "[vm a]\nexec = /bin/true\nidle-timeout = 1s\n", 3,
               "idle-timeout", "without an idle-action");
  expect_error(f, "[vm a]\nexec = /bin/true\nidle-action = nap\n", 3,
               "idle-action", "'nap' is not one of: none | destroy");
  expect_error(f, "[vm bad/name]\nexec = /bin/true\n", 1, NULL,
               "invalid vm name");
  expect_error(f, "[vm web.spare2]\nexec = /bin/true\n", 1, NULL,
               "ending in .spareN");
  expect_error(f, "[vm]\nexec = /bin/true\n", 1, NULL, "needs a name");
  expect_error(f, "[vm a]\nexec = /bin/true\nenv = =x\n", 3, "env",
               "NAME=VALUE");
  expect_error(f, "[vm a]\nexec = /bin/true\nworkdir = tmp\n", 3, "workdir",
               "absolute");
  expect_error(f, "[vm a]\nexec = /bin/true\nuser = no-such-user-here\n", 3,
               "user", "no such user");
  expect_error(f, "[jitsu]\nstate-dir = relative\n", 2, "state-dir",
               "absolute");
  expect_error(f, "[vm a]\nexec = /bin/true\nmemory-max = 64MB\n", 3,
               "memory-max", "not a size");
  expect_error(f, "[vm a]\nexec = /bin/true\nmemory-max = 100K\n", 3,
               "memory-max", "below the 1M");
  expect_error(f, "[vm a]\nexec = /bin/true\nfiles-max = 3\n", 3, "files-max",
               "from 16 to 1048576");
}

static void test_nul_byte_and_long_line(void **state) {
  fixture *f = *state;
  FILE *out = fopen(f->config, "w");
  fputs("[vm a]\nexec = /bin/true\n", out);
  fputc('\0', out);
  fputs("\n", out);
  fclose(out);
  assert_true(jitsu_config_load(f->ctx, f->config, &f->err) < 0);
  assert_int_equal(f->err.line, 3);
  assert_non_null(strstr(f->err.message, "NUL byte"));
  out = fopen(f->config, "w");
  fputs("[vm a]\nexec = /bin/true ", out);
  for (int i = 0; i < 70000; i++)
    fputc('x', out);
  fputs("\n", out);
  fclose(out);
  assert_true(jitsu_config_load(f->ctx, f->config, &f->err) < 0);
  assert_int_equal(f->err.line, 2);
  assert_non_null(strstr(f->err.message, "line too long"));
}

static void test_missing_file(void **state) {
  fixture *f = *state;
  assert_int_equal(jitsu_config_load(f->ctx, "/nonexistent/x.conf", &f->err),
                   -ENOENT);
  assert_non_null(strstr(f->err.message, "/nonexistent/x.conf"));
}

/* The second vm's socket cannot be bound: the first vm, already defined
 * by this load, is undone, and the globals are as before. */
static void test_failure_while_applying_undoes_all(void **state) {
  fixture *f = *state;
  int port = free_port();
  int r = fixture_load(f,
                       "[jitsu]\nmax-live = 3\n"
                       "[vm a]\nexec = /bin/true\nsocket = tcp 127.0.0.1:%d\n"
                       "[vm b]\nexec = /bin/true\nsocket = tcp 127.0.0.1:%d\n",
                       port, port);
  assert_true(r < 0);
  assert_non_null(strstr(f->err.message, "vm 'b': socket trigger"));
  assert_non_null(strstr(f->err.message, "already summons vm 'a'"));
  assert_string_equal(f->err.key, "socket");
  assert_int_equal(f->err.line, 8);
  size_t defined;
  jitsu_ctx_counts(f->ctx, &defined, NULL, NULL);
  assert_int_equal(defined, 0);
  unsigned max_live;
  jitsu_ctx_limits(f->ctx, &max_live, NULL, NULL);
  assert_int_equal(max_live, JITSU_DEFAULT_MAX_LIVE);
  /* The port is free again: a correct file now loads. */
  assert_int_equal(fixture_load(f,
                                "[vm a]\nexec = /bin/true\n"
                                "socket = tcp 127.0.0.1:%d\n",
                                port),
                   0);
}

static const jitsu_key dns_vm_keys[] = {
    {"dns", JITSU_KEY_STRING, JITSU_KEY_MULTI, "a name"},
    {"ttl", JITSU_KEY_DURATION, 0, "answer ttl"},
};
static const jitsu_key dns_keys[] = {
    {"listen", JITSU_KEY_STRING, JITSU_KEY_MULTI | JITSU_KEY_REQUIRED, ""},
    {"forward", JITSU_KEY_BOOL, 0, ""},
};

static void test_declared_keys(void **state) {
  fixture *f = *state;
  assert_int_equal(jitsu_config_declare_keys(f->ctx, "vm", dns_vm_keys, 2), 0);
  assert_int_equal(jitsu_config_declare_keys(f->ctx, "dns", dns_keys, 2), 0);
  assert_int_equal(jitsu_config_declare_keys(f->ctx, "dns", dns_keys, 1),
                   -EEXIST);
  expect_error(f, "[dns]\nforward = perhaps\n", 2, "forward", "boolean");
  expect_error(f, "[dns]\nforward = yes\n", 1, "listen", "missing in [dns]");
  expect_error(f, "[vm a]\nexec = /bin/true\nttl = 1\n", 3, "ttl", "duration");
  assert_int_equal(fixture_load(f,
                                "# a full file\n"
                                "[jitsu]\nmax-live = 5\nmax-starting = 2\n"
                                "[dns]\nlisten = 127.0.0.1:5353\n"
                                "listen = [::1]:5353\nforward = no\n"
                                "[vm web]\nexec = /bin/sleep 1000 ; comment\n"
                                "dns = web.example\ndns = www.example\n"
                                "ttl = 30s\naddress = 127.0.0.1:80\n"
                                "ready = tcp:127.0.0.1:80\n"
                                "ready-timeout = 2m\nstop-grace = 500ms\n"
                                "idle-timeout = 1h\nidle-action = shutdown\n"
                                "env = A=b c\n"),
                   0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "web");
  assert_non_null(vm);
  assert_string_equal(jitsu_vm_param(vm, "dns", 1), "www.example");
  assert_null(jitsu_vm_param(vm, "dns", 2));
  assert_string_equal(jitsu_vm_param(vm, "exec", 0), "/bin/sleep 1000");
  assert_string_equal(jitsu_vm_param(vm, "env", 0), "A=b c");
  assert_string_equal(jitsu_config_get(f->ctx, "dns", "listen", 1),
                      "[::1]:5353");
  assert_string_equal(jitsu_config_get(f->ctx, "jitsu", "max-live", 0), "5");
  assert_int_equal(jitsu_config_uint(f->ctx, "jitsu", "max-live", 9), 5);
  assert_int_equal(jitsu_config_uint(f->ctx, "jitsu", "max-waiters", 9), 9);
  assert_false(jitsu_config_bool(f->ctx, "dns", "forward", true));
  assert_int_equal(jitsu_config_duration(f->ctx, "dns", "absent", 7), 7);
  assert_int_equal(jitsu_config_size(f->ctx, "dns", "absent", 8), 8);
  unsigned ml, ms;
  jitsu_ctx_limits(f->ctx, &ml, &ms, NULL);
  assert_int_equal(ml, 5);
  assert_int_equal(ms, 2);
  assert_int_equal(vm->ready_timeout_ms, 120000);
  assert_int_equal(vm->stop_grace_ms, 500);
  assert_int_equal(vm->idle_timeout_ms, 3600000);
  assert_int_equal(vm->idle_action, JITSU_IDLE_SHUTDOWN);
  /* A second load cannot redefine it. */
  assert_int_equal(fixture_load(f, "[vm web]\nexec = /bin/true\n"), -EEXIST);
}

/* Without a jitsu_error, a definition's detail is still in the one place
 * for it: the context's last error. */
static void test_define_error_detail(void **state) {
  fixture *f = *state;
  jitsu_param p[] = {{"exec", "/bin/true"}, {"idle-timout", "1s"}};
  jitsu_vm_def def = JITSU_VM_DEF_INIT;
  def.name = "a";
  def.params = p;
  def.n_params = 2;
  assert_int_equal(jitsu_vm_define(f->ctx, &def, NULL, NULL), -EINVAL);
  assert_string_equal(jitsu_ctx_last_error(f->ctx),
                      "idle-timout: unknown key; did you mean "
                      "'idle-timeout'?");
  def.name = "bad name!";
  def.n_params = 1;
  assert_true(jitsu_vm_define(f->ctx, &def, NULL, NULL) < 0);
  assert_non_null(strstr(jitsu_ctx_last_error(f->ctx), "bad name!"));
}

/* A VM backend is a module, loaded when a vm names it: one that is not
 * there, or not a module, is a clear error on the backend line. */
static void test_backend_modules(void **state) {
  fixture *f = *state;
  expect_error(f, "[vm a]\nexec = /bin/true\nbackend = warp\n", 3, "backend",
               "unknown backend 'warp' (known: process");
  static const char *const names[] = {JITSU__MODULE_NAMES NULL};
  const char *m = names[0];
  if (m == NULL) {
    skip_because("no backend module in this build");
    return;
  }
  char *saved = getenv("JITSU_BACKEND_DIR");
  saved = saved ? strdup(saved) : NULL;
  setenv("JITSU_BACKEND_DIR", f->dir, 1);
  char text[200], words[400], path[400];
  snprintf(text, sizeof(text), "[vm a]\nbackend = %s\n", m);
  snprintf(words, sizeof(words),
           "backend '%s' is not available: its module is not installed "
           "(%s/%s.so: No such file",
           m, f->dir, m);
  expect_error(f, text, 2, "backend", words);
  snprintf(path, sizeof(path), "%s/%s.so", f->dir, m);
  FILE *junk = fopen(path, "w");
  assert_non_null(junk);
  fputs("not an ELF file, but long enough to have a header to read\n", junk);
  fclose(junk);
  snprintf(words, sizeof(words), "cannot load %s: ", path);
  expect_error(f, text, 2, "backend", words);
  unlink(path);
  if (saved != NULL)
    setenv("JITSU_BACKEND_DIR", saved, 1);
  else
    unsetenv("JITSU_BACKEND_DIR");
  free(saved);
}

/* A [dns] value check of the caller's own: "zone" values must not start
 * with "bad"; it counts its calls. */
static int no_bad_zone(jitsu_ctx *ctx, const char *section, const char *key,
                       const char *value, char *why, size_t size, void *arg) {
  (void)ctx;
  assert_string_equal(section, "dns");
  (*(int *)arg)++;
  if (strcmp(key, "listen") == 0 || strncmp(value, "bad", 3) != 0)
    return 0;
  snprintf(why, size, "zone '%s' is bad", value);
  return -EINVAL;
}

static void write_config(fixture *f, const char *text) {
  FILE *out = fopen(f->config, "w");
  assert_non_null(out);
  fputs(text, out);
  fclose(out);
}

/* The check refuses a load, a check and a reload at the value's line, and
 * a refused reload changes nothing. */
static void test_value_checks(void **state) {
  fixture *f = *state;
  int calls = 0;
  assert_int_equal(jitsu_config_check_values(f->ctx, "dns", no_bad_zone, NULL),
                   -ENOENT);
  assert_int_equal(jitsu_config_declare_keys(f->ctx, "dns", dns_keys, 2), 0);
  static const jitsu_key zone_key[] = {
      {"zone", JITSU_KEY_STRING, JITSU_KEY_MULTI, "a zone"}};
  assert_int_equal(jitsu_config_declare_keys(f->ctx, "dns", zone_key, 1), 0);
  assert_int_equal(jitsu_config_check_values(f->ctx, "vm", no_bad_zone, NULL),
                   -EINVAL);
  assert_int_equal(
      jitsu_config_check_values(f->ctx, "dns", no_bad_zone, &calls), 0);
  expect_error(f, "[dns]\nlisten = x\nzone = good\nzone = bad.test\n", 4,
               "zone", "zone 'bad.test' is bad");
  assert_int_equal(calls, 3);
  write_config(f, "[dns]\nlisten = x\nzone = bad\n");
  assert_int_equal(jitsu_config_check(f->ctx, f->config, &f->err), -EINVAL);
  assert_non_null(strstr(f->err.message, ":3: zone: zone 'bad' is bad"));
  write_config(f, "[dns]\nlisten = x\nzone = good\n[vm a]\nexec = /bin/true\n");
  assert_int_equal(jitsu_config_load(f->ctx, f->config, &f->err), 0);
  write_config(f, "[dns]\nlisten = x\nzone = bad\n[vm b]\nexec = /bin/true\n");
  assert_int_equal(jitsu_config_reload(f->ctx, NULL, NULL, &f->err), -EINVAL);
  assert_non_null(strstr(f->err.message, ":3: zone: zone 'bad' is bad"));
  assert_string_equal(jitsu_config_get(f->ctx, "dns", "zone", 0), "good");
  assert_non_null(jitsu_vm_find(f->ctx, "a"));
  assert_null(jitsu_vm_find(f->ctx, "b"));
}

static void count_unchanged(const char *name, jitsu_reload_action act,
                            void *arg) {
  (void)name;
  if (act == JITSU_RELOAD_UNCHANGED)
    (*(int *)arg)++;
}

/* 10,000 vms with the same keys load (the same key in two sections is
 * not a repeat), and reload unchanged; each is found by name. */
static void test_many_vms(void **state) {
  fixture *f = *state;
  FILE *out = fopen(f->config, "w");
  assert_non_null(out);
  fprintf(out, "[jitsu]\nmax-live = 5\n");
  for (int i = 0; i < 10000; i++)
    fprintf(out, "[vm v%d]\nexec = /bin/true %d\nenv = A=%d\nenv = B=1\n", i, i,
            i);
  fclose(out);
  assert_int_equal(jitsu_config_load(f->ctx, f->config, &f->err), 0);
  int unchanged = 0;
  assert_int_equal(
      jitsu_config_reload(f->ctx, count_unchanged, &unchanged, &f->err), 0);
  assert_int_equal(unchanged, 10000);
  size_t defined;
  jitsu_ctx_counts(f->ctx, &defined, NULL, NULL);
  assert_int_equal(defined, 10000);
  assert_non_null(jitsu_vm_find(f->ctx, "v9999"));
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  assert_int_equal(jitsu_vm_info_get(jitsu_vm_find(f->ctx, "v42"), &info), 0);
  assert_int_equal(jitsu_config_uint(f->ctx, "jitsu", "max-live", 0), 5);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_define_error_detail, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_errors_have_lines, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_nul_byte_and_long_line,
                                      fixture_setup, fixture_teardown),
      cmocka_unit_test_setup_teardown(test_missing_file, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_failure_while_applying_undoes_all,
                                      fixture_setup, fixture_teardown),
      cmocka_unit_test_setup_teardown(test_declared_keys, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_backend_modules, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_value_checks, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_many_vms, fixture_setup,
                                      fixture_teardown),
  };
  return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
