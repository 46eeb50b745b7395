/* libFuzzer target: the config file and the small parsers behind it
 * (durations, argv splitting, addresses, socket specs, notify messages).
 * Checking never applies anything, so no socket is bound and nothing runs.
 * Then the same input is applied: it replaces the file of a live context
 * (vms defined, one of them running, a socket trigger bound) and is
 * reloaded. A reload that fails must leave every vm and limit as it was
 * (its undo); one that succeeds is followed by a reload of the original
 * file, which must succeed. */
#include "fuzz_util.h"
#include "config_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const jitsu_key frontend_vm_keys[] = {
    {"dns", JITSU_KEY_STRING, JITSU_KEY_MULTI, ""},
    {"ttl", JITSU_KEY_DURATION, 0, ""},
};
static const jitsu_key frontend_keys[] = {
    {"listen", JITSU_KEY_STRING, JITSU_KEY_MULTI | JITSU_KEY_REQUIRED, ""},
    {"forward", JITSU_KEY_BOOL, 0, ""},
    {"max-queue", JITSU_KEY_UINT, 0, ""},
};

static jitsu_ctx *fuzz_ctx(void) {
  static uv_loop_t loop;
  static jitsu_ctx *ctx;
  if (ctx == NULL) {
    jitsu_ctx_options o = JITSU_CTX_OPTIONS_INIT;
    o.state_dir = "/nonexistent/jitsu-fuzz-state"; /* checks write nothing */
    uv_loop_init(&loop);
    if (jitsu_ctx_new(&loop, &o, &ctx) < 0)
      abort();
    jitsu_config_declare_keys(ctx, "vm", frontend_vm_keys, 2);
    jitsu_config_declare_keys(ctx, "dns", frontend_keys, 3);
  }
  return ctx;
}

/* ---- reload over a live context --------------------------------------- */

static uv_loop_t live_loop;
static jitsu_ctx *live;
static char live_dir[64], live_conf[128];
static int busy_fd; /* holds a port that no reload can bind */
static char port_busy[8], port_base[8], port_free[8];

/* The original file: "@BASE@" is a port its socket trigger holds. */
static const char base_conf[] =
    "[jitsu]\nmax-live = 8\n"
    "[vm run]\nexec = /bin/sleep 300\nready = none\nidle-timeout = 1h\n"
    "idle-action = destroy\n"
    "[vm web]\nexec = /bin/true\nsocket = tcp:127.0.0.1:@BASE@\n"
    "address = 127.0.0.1\n"
    "[vm spare]\nexec = /bin/true --spare\nstop-grace = 1s\n";

static int free_port(int *keep) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sin);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
      getsockname(fd, (struct sockaddr *)&sin, &len) < 0 ||
      (keep != NULL && listen(fd, 1) < 0))
    abort();
  if (keep != NULL)
    *keep = fd;
  else
    close(fd);
  return ntohs(sin.sin_port);
}

/* (in) with the tokens replaced: @BUSY@ a port in use, @BASE@ the one the
 * original file's trigger holds, @FREE@ one that is free, @DIR@ the state
 * directory; NULL for an input that must not be applied here: another
 * backend than process (they reach for hypervisors and remote hosts) or a
 * Unix socket outside the state directory. */
static char *substitute(const uint8_t *in, size_t n) {
  static const char *const tok[] = {"@BUSY@", "@BASE@", "@FREE@", "@DIR@"};
  const char *val[] = {port_busy, port_base, port_free, live_dir};
  size_t cap = n * 16 + 1, o = 0;
  char *out = malloc(cap);
  if (out == NULL)
    return NULL;
  for (size_t i = 0; i < n;) {
    size_t k = 0;
    while (k < 4 && (n - i < strlen(tok[k]) ||
                     memcmp(in + i, tok[k], strlen(tok[k])) != 0))
      k++;
    if (k < 4) {
      o += (size_t)sprintf(out + o, "%s", val[k]);
      i += strlen(tok[k]);
    } else {
      out[o++] = in[i] == '\0' ? ' ' : (char)in[i];
      i++;
    }
  }
  out[o] = '\0';
  for (const char *p = out; (p = strstr(p, "unix:")) != NULL; p++)
    if (strncmp(p + 5, live_dir, strlen(live_dir)) != 0 ||
        p[5 + strlen(live_dir)] != '/' || strstr(p, "..") != NULL)
      goto refuse;
  for (const char *p = out; (p = strstr(p, "backend")) != NULL; p++) {
    const char *v = p + 7;
    while (*v == ' ' || *v == '\t' || *v == '=' || *v == ':')
      v++;
    if (strncmp(v, "process", 7) != 0)
      goto refuse;
  }
  return out;
refuse:
  free(out);
  return NULL;
}

static void write_conf(const char *text) {
  FILE *f = fopen(live_conf, "w");
  if (f == NULL)
    abort();
  fputs(text, f);
  fclose(f);
}

static void live_cleanup(void) {
  jitsu_vm *run = jitsu_vm_find(live, "run");
  if (run != NULL)
    jitsu_vm_stop(run, JITSU_STOP_DESTROY, NULL, NULL);
  for (int i = 0;
       i < 200 && run != NULL && jitsu_vm_state(run) != JITSU_STATE_STOPPED &&
       jitsu_vm_state(run) != JITSU_STATE_FAILED;
       i++)
    uv_run(&live_loop, UV_RUN_ONCE);
  jitsu_ctx_free(live);
  uv_run(&live_loop, UV_RUN_DEFAULT);
  close(busy_fd);
  fuzz_rmtree(live_dir);
}

static void live_setup(void) {
  snprintf(live_dir, sizeof(live_dir), "/tmp/jitsu-fuzz-reload-%d",
           (int)getpid());
  if (mkdir(live_dir, 0700) < 0)
    abort();
  snprintf(live_conf, sizeof(live_conf), "%s/fuzz.conf", live_dir);
  snprintf(port_busy, sizeof(port_busy), "%d", free_port(&busy_fd));
  snprintf(port_base, sizeof(port_base), "%d", free_port(NULL));
  snprintf(port_free, sizeof(port_free), "%d", free_port(NULL));
  uv_loop_init(&live_loop);
  jitsu_ctx_options o = JITSU_CTX_OPTIONS_INIT;
  o.state_dir = live_dir;
  if (jitsu_ctx_new(&live_loop, &o, &live) < 0)
    abort();
  char *text = substitute((const uint8_t *)base_conf, strlen(base_conf));
  if (text == NULL)
    abort();
  fuzz_load_config(live, live_dir, text, "fuzz_config");
  free(text);
  atexit(live_cleanup);
}

/* Everything a reload may change: each vm's definition and settings, in
 * order, and the limits. */
static char *live_state(void) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (f == NULL)
    abort();
  fprintf(f, "limits %u %u %u\n", live->max_live, live->max_starting,
          live->max_waiters);
  for (jitsu_list *k = live->all_vms.next; k != &live->all_vms; k = k->next) {
    jitsu_vm *vm = JITSU_CONTAINER_OF(k, jitsu_vm, all);
    fprintf(f, "vm %s %s %d %d %d %llu %llu %llu %d %s\n", vm->name,
            vm->backend->name, vm->removing, vm->ready, vm->ready_marker,
            (unsigned long long)vm->ready_timeout_ms,
            (unsigned long long)vm->stop_grace_ms,
            (unsigned long long)vm->idle_timeout_ms, vm->idle_action,
            vm->ready_path);
    for (size_t i = 0; i < vm->n_params; i++)
      fprintf(f, "  %s=%s\n", vm->params[i].key, vm->params[i].value);
  }
  fclose(f);
  return buf;
}

static void fuzz_reload(const uint8_t *data, size_t size) {
  if (live == NULL)
    live_setup();
  /* The running vm runs (an input may have removed or changed it). */
  jitsu_vm *run = jitsu_vm_find(live, "run");
  if (run != NULL && jitsu_vm_state(run) != JITSU_STATE_READY &&
      jitsu_vm_summon(run, NULL, NULL) == 0)
    for (int i = 0; i < 200 && jitsu_vm_state(run) != JITSU_STATE_READY &&
                    jitsu_vm_state(run) != JITSU_STATE_FAILED;
         i++)
      uv_run(&live_loop, UV_RUN_ONCE);
  char *text = substitute(data, size);
  if (text == NULL)
    return;
  char *before = live_state();
  write_conf(text);
  jitsu_error err;
  int r = jitsu_config_reload(live, NULL, NULL, &err);
  if (r < 0) {
    char *after = live_state();
    if (strcmp(before, after) != 0) {
      fprintf(stderr, "a failed reload (%s) changed the context:\n%s---\n%s",
              err.message, before, after);
      abort();
    }
    free(after);
  }
  free(before);
  free(text);
  for (int i = 0; i < 4; i++)
    uv_run(&live_loop, UV_RUN_NOWAIT);
  /* Back to the original file: that must always work. */
  text = substitute((const uint8_t *)base_conf, strlen(base_conf));
  write_conf(text);
  free(text);
  if (jitsu_config_reload(live, NULL, NULL, &err) < 0) {
    /* A reload cannot apply a file in which vms exchange sockets (each
     * waits for the other to let go: "already summons vm ..."), and an
     * input that moved the original's socket to another vm may make the
     * original such a file: it is then undone in two steps, the file
     * without that socket first. */
    text = substitute((const uint8_t *)base_conf, strlen(base_conf));
    char *sock = strstr(text, "socket = ");
    memset(sock, ' ', strcspn(sock, "\n"));
    sock[0] = '#';
    write_conf(text);
    free(text);
    if (jitsu_config_reload(live, NULL, NULL, &err) < 0) {
      fprintf(stderr, "the original file without its socket: %s\n",
              err.message);
      abort();
    }
    text = substitute((const uint8_t *)base_conf, strlen(base_conf));
    write_conf(text);
    free(text);
    if (jitsu_config_reload(live, NULL, NULL, &err) < 0) {
      fprintf(stderr, "the original file no longer reloads: %s\n", err.message);
      abort();
    }
  }
  for (int i = 0; i < 4; i++)
    uv_run(&live_loop, UV_RUN_NOWAIT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_reload(data, size);
  jitsu_ctx *ctx = fuzz_ctx();
  if (size > 0) {
    FILE *f = fmemopen((void *)data, size, "r");
    if (f != NULL) {
      jitsu_error err;
      jitsu__config_load_stream(ctx, f, "fuzz.conf", false, &err);
      fclose(f);
    }
  }
  char *text = malloc(size + 1);
  if (text == NULL)
    return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  uint64_t ms;
  bool b;
  char **argv;
  int argc;
  struct sockaddr_storage ss;
  jitsu_parse_duration(text, &ms);
  jitsu_parse_bool(text, &b);
  jitsu_parse_size(text, &ms);
  if (jitsu_split_argv(text, &argv, &argc) == 0) {
    for (int i = 0; i < argc; i++)
      if (argv[i] == NULL)
        abort();
    if (argv[argc] != NULL)
      abort();
    free(argv);
  }
  if (jitsu__parse_hostport(text, &ss) == 0) {
    char back[80];
    jitsu__format_sockaddr((struct sockaddr *)&ss, back, sizeof(back));
  }
  jitsu__notify_says_ready((const char *)data, size);
  free(text);
  return 0;
}
