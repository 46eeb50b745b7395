/*
 * jitsu-http: an activating reverse proxy. A request for a vm that is not
 * ready summons it and waits (bounded, in order) until it is; then it is
 * streamed to the guest. See jitsu-http(8).
 */
#include "http.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: jitsu-http -c CONFIG [-l IP:PORT]... [--no-control] [-v]\n"
    "       jitsu-http -c CONFIG --check   (check the config and exit)\n";

typedef struct app {
  uv_loop_t *loop;
  jitsu_ctx *ctx;
  http_proxy *px;
  uv_signal_t sigint, sigterm, sighup;
  int quitting;
} app;

/* A start that fails leaves nothing behind: the control socket and the
 * state directory's empty subdirectories go with the context (guests
 * that an earlier run left are not touched). */
static int give_up(app *a, int status) {
  jitsu_ctx_free(a->ctx);
  a->ctx = NULL;
  for (int i = 0; i < 8 && uv_run(a->loop, UV_RUN_NOWAIT) != 0; i++)
    ;
  return status;
}

static void drained(void *arg) {
  app *a = arg;
  jitsu_ctx_free(a->ctx);
  a->ctx = NULL;
}

static void quit(uv_signal_t *s, int signum) {
  app *a = s->data;
  (void)signum;
  if (a->quitting++)
    return;
  fprintf(stderr, "jitsu-http: draining; guests keep running\n");
  jitsu_sd_notify("STOPPING=1");
  uv_close((uv_handle_t *)&a->sigint, NULL);
  uv_close((uv_handle_t *)&a->sigterm, NULL);
  uv_close((uv_handle_t *)&a->sighup, NULL);
  jitsu_control_close(a->ctx);
  http_proxy_drain(a->px, drained, a);
}

static void reload(uv_signal_t *s, int signum) {
  app *a = s->data;
  (void)signum;
  jitsu_error err;
  if (jitsu_config_reload(a->ctx, NULL, NULL, &err) < 0)
    fprintf(stderr, "jitsu-http: reload refused: %s\n", err.message);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},
      {"listen", required_argument, NULL, 'l'},
      {"no-control", no_argument, NULL, 'N'},
      {"check", no_argument, NULL, 'C'},
      {"verbose", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *config = NULL, *cli_listen[17] = {NULL};
  int n_cli = 0, control = 1, check = 0, opt;
  jitsu_log_level level = JITSU_LOG_INFO;
  while ((opt = getopt_long(argc, argv, "c:l:vh", longopts, NULL)) != -1) {
    switch (opt) {
    case 'c':
      config = optarg;
      break;
    case 'l':
      if (n_cli < 16)
        cli_listen[n_cli++] = optarg;
      break;
    case 'N':
      control = 0;
      break;
    case 'C':
      check = 1;
      break;
    case 'v':
      level = JITSU_LOG_DEBUG;
      break;
    case 'h':
      fputs(usage_text, stdout);
      return 0;
    default:
      fputs(usage_text, stderr);
      return 2;
    }
  }
  if (config == NULL || optind != argc) {
    fputs(usage_text, stderr);
    return 2;
  }
  app a = {.loop = uv_default_loop()};
  /* A peer that goes away must not kill us: libuv reports EPIPE. */
  signal(SIGPIPE, SIG_IGN);
  if (jitsu_ctx_new(a.loop, NULL, &a.ctx) < 0)
    return 1;
  jitsu_ctx_set_logger(a.ctx, jitsu_log_stderr, (void *)"jitsu-http", level);
  if (http_declare_keys(a.ctx) < 0) {
    fprintf(stderr, "jitsu-http: cannot declare its keys: %s\n",
            jitsu_ctx_last_error(a.ctx));
    return give_up(&a, 1);
  }
  jitsu_error err;
  if (check) { /* nothing is defined, bound or started */
    if (jitsu_config_check(a.ctx, config, &err) < 0) {
      fprintf(stderr, "jitsu-http: %s\n", err.message);
      return give_up(&a, 1);
    }
    printf("jitsu-http: %s: ok\n", config);
    return give_up(&a, 0);
  }
  if (jitsu_config_load(a.ctx, config, &err) < 0) {
    fprintf(stderr, "jitsu-http: %s\n", err.message);
    return give_up(&a, 1);
  }
  http_config cfg;
  memset(&cfg, 0, sizeof(cfg));
  http_settings *s = &cfg.settings;
  s->max_header = (size_t)jitsu_config_size(a.ctx, "http", "max-header", 16384);
  s->max_body = jitsu_config_size(a.ctx, "http", "max-body", 2ull << 30);
  s->header_timeout =
      jitsu_config_duration(a.ctx, "http", "header-timeout", 10000);
  s->idle_timeout = jitsu_config_duration(a.ctx, "http", "idle-timeout", 60000);
  s->body_timeout = jitsu_config_duration(a.ctx, "http", "body-timeout", 60000);
  s->body_min_rate = jitsu_config_size(a.ctx, "http", "body-min-rate", 500);
  s->response_timeout =
      jitsu_config_duration(a.ctx, "http", "response-timeout", 60000);
  s->send_timeout = jitsu_config_duration(a.ctx, "http", "send-timeout", 60000);
  s->max_conns = jitsu_config_uint(a.ctx, "http", "max-connections", 1024);
  s->queue = jitsu_config_uint(a.ctx, "http", "queue", 256);
  s->hold_ms = jitsu_config_duration(a.ctx, "http", "hold", 30000);
  s->retry_after =
      (unsigned)(jitsu_config_duration(a.ctx, "http", "retry-after", 5000) /
                 1000);
  s->drain_ms = jitsu_config_duration(a.ctx, "http", "drain", 10000);
  s->default_vm = jitsu_config_get(a.ctx, "http", "default-vm", 0);
  const char *listen[17] = {NULL};
  const char *v;
  if (n_cli > 0)
    memcpy(listen, cli_listen, sizeof(listen));
  else
    for (size_t i = 0;
         i < 16 && (v = jitsu_config_get(a.ctx, "http", "listen", i)); i++)
      listen[i] = v;
  if (listen[0] == NULL)
    listen[0] = "127.0.0.1:8080";
  cfg.listen = listen;
  if (control && jitsu_control_listen(a.ctx, NULL) < 0) {
    fprintf(stderr, "jitsu-http: %s\n", jitsu_ctx_last_error(a.ctx));
    return give_up(&a, 1);
  }
  if (jitsu_rendezvous_from_config(a.ctx) < 0) {
    fprintf(stderr, "jitsu-http: %s\n", jitsu_ctx_last_error(a.ctx));
    return give_up(&a, 1);
  }
  char why[512] = "";
  int r = http_proxy_new(a.ctx, &cfg, &a.px, why, sizeof(why));
  if (r < 0) {
    fprintf(stderr, "jitsu-http: %s\n", why[0] ? why : strerror(-r));
    return give_up(&a, 1);
  }
  jitsu_idle_attach(a.ctx, NULL);
  uv_signal_init(a.loop, &a.sigint);
  uv_signal_init(a.loop, &a.sigterm);
  uv_signal_init(a.loop, &a.sighup);
  a.sigint.data = a.sigterm.data = a.sighup.data = &a;
  uv_signal_start(&a.sigint, quit, SIGINT);
  uv_signal_start(&a.sigterm, quit, SIGTERM);
  uv_signal_start(&a.sighup, reload, SIGHUP);
  for (size_t i = 0; listen[i]; i++)
    fprintf(stderr, "jitsu-http: serving on %s\n", listen[i]);
  jitsu_sd_notify("READY=1\nSTATUS=serving");
  uv_run(a.loop, UV_RUN_DEFAULT);
  http_proxy_destroy(a.px);
  uv_run(a.loop, UV_RUN_DEFAULT);
  uv_loop_close(a.loop);
  return 0;
}
