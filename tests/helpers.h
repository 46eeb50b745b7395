/* Shared helpers of the tests: a fixture with a loop, a context and a
 * temporary state directory that is removed, with every guest, on
 * teardown (also when a test fails). */
#ifndef JITSU_TEST_HELPERS_H
#define JITSU_TEST_HELPERS_H

#include <jitsu/jitsu.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

typedef struct fixture {
  uv_loop_t loop;
  uv_timer_t timer; /* run_until() and friends */
  jitsu_ctx *ctx;
  char dir[256];    /* temporary directory: state, configs, records */
  char config[300]; /* dir/jitsu.conf */
  jitsu_error err;
} fixture;

/* cmocka setup/teardown for a fresh fixture. */
int fixture_setup(void **state);
int fixture_teardown(void **state);

/* A context on (f)'s loop with its state in f->dir/state (where the
 * fixture's own keeps it) and the tests' logger: a controller restarted,
 * or a second one. 0 or a negative errno value. */
int fixture_ctx_new(fixture *f, jitsu_ctx **ctx);

/* Write (text) (printf format) to f->config and load it. */
int fixture_load(fixture *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Run the loop until (*flag) is non-zero or (ms) pass; returns *flag. */
int run_until(fixture *f, const int *flag, uint64_t ms);

/* Run the loop until (vm) is in (state) or (ms) pass; 1 if it is. */
int run_until_state(fixture *f, jitsu_vm *vm, jitsu_state state, uint64_t ms);

/* Skip the running test, saying (why) in the TAP output (meson's log shows
 * the skip; a program whose tests all skip shows as SKIP). */
void skip_because(const char *why);

/* Whether this is a run under memcheck (meson test --setup valgrind). */
int under_valgrind(void);

/* Run the loop for (ms). */
void run_for(fixture *f, uint64_t ms);

/* The hello service built alongside the tests. */
const char *hello_path(void);

/* Lines in (path) (0 if missing): hello --record writes one per start. */
int count_lines(const char *path);

/* The pid of (vm)'s live guest from its instance string, or 0. */
int vm_pid(jitsu_vm *vm);

/* Whether (pid) is alive (and not a zombie). */
int pid_alive(int pid);

/* An HTTP GET of / on 127.0.0.1:(port); returns the body's first line
 * in (out) or -1. Blocks up to 20 s; use while the guest runs on its own. */
int http_get(int port, char *out, size_t size);

/* The first line (without its newline) that the shell command (cmd)
 * prints, into (out); "" if none. */
void command_output(const char *cmd, char *out, size_t size);

/* Run the loop until (vm)'s pool holds (n) spares, none of them filling,
 * or (ms) pass; whether it does. */
bool wait_spares(fixture *f, jitsu_vm *vm, size_t n, uint64_t ms);

/* A free TCP port on 127.0.0.1. */
int free_port(void);

/* A summon callback that counts completions and keeps the last status.
 * Tests keep what callbacks write to in static storage, never on the
 * stack: a callback still pending when a test fails runs at teardown
 * (with -ECANCELED), after the test's frame is gone. */
typedef struct outcome {
  int done;
  int status;
  int calls;
} outcome;
void outcome_cb(jitsu_vm *vm, int status, void *arg);

/* How many descriptors this process has open (for leak checks). */
int open_fds(void);

/* The reason of (vm)'s last state change (static storage: the next call
 * replaces it). */
const char *vm_reason(jitsu_vm *vm);

/* Loading (text) as the config must fail with (words) in the message;
 * the text and the message are printed when it does not. */
void config_fails(fixture *f, const char *text, const char *words);

/* Summon (name) and wait up to (ms): asserts that it fails, the vm ends
 * failed and its reason holds (words); prints the reason. Returns the
 * summon's status. */
int summon_fails(fixture *f, const char *name, const char *words, uint64_t ms);

/* Summon (name) and wait (ms) for its callback: asserts it succeeded (the
 * guest may have gone since, if it is one that exits). */
jitsu_vm *summon_done(fixture *f, const char *name, uint64_t ms);

/* Summon (name) and wait (ms) for it: asserts it became ready. */
jitsu_vm *summon_ok(fixture *f, const char *name, uint64_t ms);

/* Run a verb (suspend, resume, snapshot) on (vm) within (ms): asserts
 * it worked. */
typedef int (*verb_fn)(jitsu_vm *, jitsu_vm_cb, void *);
void verb_ok(fixture *f, jitsu_vm *vm, verb_fn fn, uint64_t ms);

#endif
