/*
 * jitsu-dns: an authoritative DNS server that summons the guest behind a
 * name when the name is looked up, answers with its address, forwards
 * other names for allowed clients, and puts idle guests away. See
 * jitsu-dns(8).
 */
#include "dns.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const jitsu_key dns_section_keys[] = {
    {"listen", JITSU_KEY_STRING, JITSU_KEY_MULTI, "HOST:PORT to serve on"},
    {"zone", JITSU_KEY_STRING, JITSU_KEY_MULTI,
     "a zone we are the authority of"},
    {"ns", JITSU_KEY_STRING, 0, "the name server named in SOA and NS"},
    {"hostmaster", JITSU_KEY_STRING, 0, "the SOA mailbox, as a name"},
    {"ttl", JITSU_KEY_DURATION, 0, "TTL of answers"},
    {"negative-ttl", JITSU_KEY_DURATION, 0, "TTL of NXDOMAIN and NODATA"},
    {"hold", JITSU_KEY_DURATION, 0, "hold answers for cold guests this long"},
    {"hold-expired", JITSU_KEY_ENUM, 0, "answer | servfail"},
    {"delay", JITSU_KEY_DURATION, 0, "wait after ready before answering"},
    {"idle", JITSU_KEY_DURATION, 0, "put away guests unqueried this long"},
    {"idle-action", JITSU_KEY_ENUM, 0, "destroy | shutdown | suspend | none"},
    {"forward", JITSU_KEY_BOOL, 0, "forward other names (default yes)"},
    {"forward-to", JITSU_KEY_STRING, JITSU_KEY_MULTI, "IP[:PORT] upstream"},
    {"forward-allow", JITSU_KEY_STRING, JITSU_KEY_MULTI, "CIDR of clients"},
    {"forward-timeout", JITSU_KEY_DURATION, 0, "per upstream try"},
    {"rate", JITSU_KEY_UINT, 0, "summoning queries per second per client"},
    {"rate-burst", JITSU_KEY_UINT, 0, "... and in a burst"},
    {"rate-prefix6", JITSU_KEY_UINT, 0,
     "IPv6 sources share a rate per this prefix (default 56)"},
    {"summon-allow", JITSU_KEY_STRING, JITSU_KEY_MULTI,
     "CIDR of clients that may summon (default: anyone)"},
    {"max-pending", JITSU_KEY_UINT, 0, "held answers at once"},
    {"max-tcp", JITSU_KEY_UINT, 0, "TCP connections at once"},
    {"udp-buffer", JITSU_KEY_SIZE, 0,
     "receive buffer of each UDP socket (default 4M)"},
    {"user", JITSU_KEY_STRING, 0, "drop to this user after binding"},
    {"workers", JITSU_KEY_UINT, 0,
     "loops answering UDP, a thread each (default 1, at most 64)"},
};

static const jitsu_key dns_vm_keys[] = {
    {"dns", JITSU_KEY_STRING, JITSU_KEY_MULTI, "a name that summons the vm"},
    {"dns-ttl", JITSU_KEY_DURATION, 0, "TTL of its answers"},
    {"dns-hold", JITSU_KEY_DURATION, 0, "hold answers while it starts"},
    {"dns-hold-expired", JITSU_KEY_ENUM, 0, "answer | servfail"},
    {"dns-delay", JITSU_KEY_DURATION, 0, "wait after ready before answering"},
    {"dns-idle", JITSU_KEY_DURATION, 0, "put away when unqueried this long"},
    {"dns-idle-action", JITSU_KEY_ENUM, 0,
     "destroy | shutdown | suspend | none"},
};

static const char usage_text[] =
    "usage: jitsu-dns -c CONFIG [options]\n"
    "  -c, --config FILE      vms and [dns] settings (required)\n"
    "  -b, --bind ADDR        address to serve on (default 127.0.0.1)\n"
    "  -l, --listen PORT      port to serve on (default 5353)\n"
    "  -f, --forwarder IP     upstream resolver (repeatable; default: "
    "resolv.conf)\n"
    "  -t, --ttl SECONDS      TTL of answers (default 60)\n"
    "  -m, --mode MODE        idle action: destroy, shutdown, suspend\n"
    "  -d, --delay SECONDS    wait after a guest is ready before answering\n"
    "      --no-control       no control socket\n"
    "      --check            check the config (and its zones) and exit\n"
    "  -v, --verbose          log debug lines\n";

typedef struct app {
  uv_loop_t *loop;
  jitsu_ctx *ctx;
  dns_server *srv;
  uv_signal_t sigint, sigterm, sighup;
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

static uid_t chown_uid;
static gid_t chown_gid;

static int chown_entry(const char *path, const struct stat *st, int type,
                       struct FTW *ftw) {
  (void)st, (void)type, (void)ftw;
  if (lchown(path, chown_uid, chown_gid) < 0)
    fprintf(stderr, "jitsu-dns: chown %s: %s\n", path, strerror(errno));
  return 0;
}

/* After binding: hand the state directory to (user) and become it. */
static int drop_privileges(jitsu_ctx *ctx, const char *user) {
  struct passwd *pw = getpwnam(user);
  if (pw == NULL) {
    fprintf(stderr, "jitsu-dns: user: no such user '%s'\n", user);
    return -1;
  }
  chown_uid = pw->pw_uid;
  chown_gid = pw->pw_gid;
  nftw(jitsu_ctx_state_dir(ctx), chown_entry, 16, FTW_PHYS);
  if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 ||
      setuid(pw->pw_uid) < 0) {
    fprintf(stderr, "jitsu-dns: cannot become %s: %s\n", user, strerror(errno));
    return -1;
  }
  if (access(jitsu_ctx_state_dir(ctx), R_OK | W_OK | X_OK) < 0) {
    fprintf(stderr,
            "jitsu-dns: the state directory %s is not usable by %s: %s "
            "(its parent directories must be searchable by %s)\n",
            jitsu_ctx_state_dir(ctx), user, strerror(errno), user);
    return -1;
  }
  return 0;
}

static void quit(uv_signal_t *s, int signum) {
  app *a = s->data;
  (void)signum;
  fprintf(stderr, "jitsu-dns: exiting; guests keep running for the next "
                  "start to adopt\n");
  jitsu_sd_notify("STOPPING=1");
  uv_signal_stop(&a->sigint);
  uv_signal_stop(&a->sigterm);
  uv_signal_stop(&a->sighup);
  uv_close((uv_handle_t *)&a->sigint, NULL);
  uv_close((uv_handle_t *)&a->sigterm, NULL);
  uv_close((uv_handle_t *)&a->sighup, NULL);
  dns_server_free(a->srv);
  jitsu_ctx_free(a->ctx);
  a->ctx = NULL;
}

static void reload(uv_signal_t *s, int signum) {
  app *a = s->data;
  (void)signum;
  jitsu_error err;
  jitsu_sd_notify("RELOADING=1");
  if (jitsu_config_reload(a->ctx, NULL, NULL, &err) < 0)
    fprintf(stderr, "jitsu-dns: reload refused: %s\n", err.message);
  /* (the server rebuilds its names from the reload's event) */
  jitsu_sd_notify("READY=1");
}

static int parse_action(const char *v, jitsu_idle_action *out) {
  if (strcmp(v, "destroy") == 0)
    *out = JITSU_IDLE_DESTROY;
  else if (strcmp(v, "shutdown") == 0)
    *out = JITSU_IDLE_SHUTDOWN;
  else if (strcmp(v, "suspend") == 0)
    *out = JITSU_IDLE_SUSPEND;
  else if (strcmp(v, "none") == 0)
    *out = JITSU_IDLE_NONE;
  else
    return -1;
  return 0;
}

static int seconds(const char *text, uint64_t *ms) {
  char *end;
  double s = strtod(text, &end);
  if (end == text || *end != '\0' || s < 0 || s > 86400)
    return -1;
  *ms = (uint64_t)(s * 1000 + 0.5);
  return 0;
}

/* [dns] values beyond their type, when the config is loaded, checked
 * (--check) or reloaded: a zone's file is read and parsed (a broken one
 * refuses the file at its line and changes nothing); workers in range. */
static int check_dns_value(jitsu_ctx *ctx, const char *section, const char *key,
                           const char *value, char *why, size_t size,
                           void *arg) {
  (void)ctx, (void)section, (void)arg;
  if (strcmp(key, "workers") == 0) {
    unsigned long n = strtoul(value, NULL, 10); /* a number: checked */
    if (n < 1 || n > DNS_WORKERS_MAX) {
      snprintf(why, size, "takes 1 to %d (threads answering UDP)",
               DNS_WORKERS_MAX);
      return -EINVAL;
    }
    return 0;
  }
  return strcmp(key, "zone") == 0 ? dns_zone_check(value, why, size) : 0;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},
      {"bind", required_argument, NULL, 'b'},
      {"listen", required_argument, NULL, 'l'},
      {"forwarder", required_argument, NULL, 'f'},
      {"ttl", required_argument, NULL, 't'},
      {"mode", required_argument, NULL, 'm'},
      {"delay", required_argument, NULL, 'd'},
      {"no-control", no_argument, NULL, 'N'},
      {"check", no_argument, NULL, 'C'},
      {"verbose", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *config = NULL, *bind_addr = NULL, *port = NULL, *ttl_arg = NULL,
             *mode_arg = NULL, *delay_arg = NULL;
  char forwarders[1024] = "";
  int control = 1, check = 0, opt;
  jitsu_log_level level = JITSU_LOG_INFO;
  while ((opt = getopt_long(argc, argv, "c:b:l:f:t:m:d:vh", longopts, NULL)) !=
         -1) {
    switch (opt) {
    case 'c':
      config = optarg;
      break;
    case 'b':
      bind_addr = optarg;
      break;
    case 'l':
      port = optarg;
      break;
    case 'f':
      if (strlen(forwarders) + strlen(optarg) + 2 > sizeof(forwarders)) {
        fprintf(stderr, "jitsu-dns: too many forwarders\n");
        return 2;
      }
      if (forwarders[0])
        strcat(forwarders, ",");
      strcat(forwarders, optarg);
      break;
    case 't':
      ttl_arg = optarg;
      break;
    case 'm':
      mode_arg = optarg;
      break;
    case 'd':
      delay_arg = optarg;
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
    fprintf(stderr, "jitsu-dns: %s\n%s",
            config ? "unexpected arguments" : "a config file is required (-c)",
            usage_text);
    return 2;
  }
  app a = {.loop = uv_default_loop()};
  /* A peer that goes away must not kill us: libuv reports EPIPE. */
  signal(SIGPIPE, SIG_IGN);
  if (jitsu_ctx_new(a.loop, NULL, &a.ctx) < 0)
    return 1;
  jitsu_ctx_set_logger(a.ctx, jitsu_log_stderr, (void *)"jitsu-dns", level);
  if (jitsu_config_declare_keys(a.ctx, "dns", dns_section_keys,
                                sizeof(dns_section_keys) / sizeof(jitsu_key)) <
          0 ||
      jitsu_config_declare_keys(a.ctx, "vm", dns_vm_keys,
                                sizeof(dns_vm_keys) / sizeof(jitsu_key)) < 0) {
    fprintf(stderr, "jitsu-dns: cannot declare its keys: %s\n",
            jitsu_ctx_last_error(a.ctx));
    return give_up(&a, 1);
  }
  if (jitsu_config_check_values(a.ctx, "dns", check_dns_value, NULL) < 0) {
    fprintf(stderr, "jitsu-dns: %s\n", jitsu_ctx_last_error(a.ctx));
    return give_up(&a, 1);
  }
  jitsu_error err;
  if (check) { /* nothing is defined, bound or started */
    if (jitsu_config_check(a.ctx, config, &err) < 0) {
      fprintf(stderr, "jitsu-dns: %s\n", err.message);
      return give_up(&a, 1);
    }
    printf("jitsu-dns: %s: ok\n", config);
    return give_up(&a, 0);
  }
  if (jitsu_config_load(a.ctx, config, &err) < 0) {
    fprintf(stderr, "jitsu-dns: %s\n", err.message);
    return give_up(&a, 1);
  }
  dns_server_config cfg;
  memset(&cfg, 0, sizeof(cfg));
  dns_settings *s = &cfg.settings;
  uint64_t ms;
  s->ttl = (uint32_t)(jitsu_config_duration(a.ctx, "dns", "ttl", 60000) / 1000);
  if (ttl_arg != NULL) {
    if (seconds(ttl_arg, &ms) < 0) {
      fprintf(stderr, "jitsu-dns: --ttl takes seconds\n");
      return give_up(&a, 2);
    }
    s->ttl = (uint32_t)(ms / 1000);
  }
  s->negative_ttl =
      (uint32_t)(jitsu_config_duration(a.ctx, "dns", "negative-ttl", 60000) /
                 1000);
  s->hold_ms = jitsu_config_duration(a.ctx, "dns", "hold", 2000);
  const char *v = jitsu_config_get(a.ctx, "dns", "hold-expired", 0);
  s->hold_servfail = v && strcmp(v, "servfail") == 0;
  s->delay_ms = jitsu_config_duration(a.ctx, "dns", "delay", 0);
  if (delay_arg != NULL && seconds(delay_arg, &s->delay_ms) < 0) {
    fprintf(stderr, "jitsu-dns: --delay takes seconds\n");
    return give_up(&a, 2);
  }
  v = jitsu_config_get(a.ctx, "dns", "idle", 0);
  s->idle_ms = v && jitsu_parse_duration(v, &ms) == 0 ? (int64_t)ms : -1;
  s->idle_action = JITSU_IDLE_DESTROY;
  v = mode_arg ? mode_arg : jitsu_config_get(a.ctx, "dns", "idle-action", 0);
  if (v && parse_action(v, &s->idle_action) < 0) {
    fprintf(stderr,
            "jitsu-dns: idle action '%s' is not destroy, shutdown, "
            "suspend or none\n",
            v);
    return give_up(&a, 2);
  }
  v = jitsu_config_get(a.ctx, "dns", "ns", 0);
  snprintf(s->ns, sizeof(s->ns), "%s", v ? v : "");
  v = jitsu_config_get(a.ctx, "dns", "hostmaster", 0);
  snprintf(s->hostmaster, sizeof(s->hostmaster), "%s", v ? v : "");
  s->rate_per_s = jitsu_config_uint(a.ctx, "dns", "rate", 10);
  s->rate_burst = jitsu_config_uint(a.ctx, "dns", "rate-burst", 20);
  s->rate_prefix6 = jitsu_config_uint(a.ctx, "dns", "rate-prefix6", 56);
  if (s->rate_prefix6 < 1 || s->rate_prefix6 > 128) {
    char why[600] = "rate-prefix6: takes 1 to 128 (bits)";
    jitsu_config_blame(a.ctx, "dns", "rate-prefix6",
                       jitsu_config_get(a.ctx, "dns", "rate-prefix6", 0), why,
                       sizeof(why));
    fprintf(stderr, "jitsu-dns: %s\n", why);
    return give_up(&a, 2);
  }
  s->max_pending = jitsu_config_uint(a.ctx, "dns", "max-pending", 4096);
  s->max_tcp = jitsu_config_uint(a.ctx, "dns", "max-tcp", 128);
  /* Where to serve: -b/-l, else [dns] listen, else 127.0.0.1:5353. */
  const char *listen[65] = {NULL};
  char cli_listen[128];
  if (bind_addr != NULL || port != NULL ||
      jitsu_config_get(a.ctx, "dns", "listen", 0) == NULL) {
    const char *b = bind_addr ? bind_addr : "127.0.0.1";
    snprintf(cli_listen, sizeof(cli_listen),
             strchr(b, ':') ? "[%s]:%s" : "%s:%s", b, port ? port : "5353");
    listen[0] = cli_listen;
  } else {
    for (size_t i = 0;
         i < 64 && (v = jitsu_config_get(a.ctx, "dns", "listen", i)); i++)
      listen[i] = v;
  }
  cfg.listen = listen;
  cfg.udp_buffer = jitsu_config_size(a.ctx, "dns", "udp-buffer", 4 << 20);
  cfg.workers = jitsu_config_uint(a.ctx, "dns", "workers", 1);
  /* Forwarding: on unless forward = no; upstreams from -f, [dns]
   * forward-to, or resolv.conf; only for allowed clients (loopback). */
  cfg.forward = jitsu_config_bool(a.ctx, "dns", "forward", true);
  if (!forwarders[0])
    for (size_t i = 0; (v = jitsu_config_get(a.ctx, "dns", "forward-to", i));
         i++) {
      if (strlen(forwarders) + strlen(v) + 2 > sizeof(forwarders))
        break;
      if (forwarders[0])
        strcat(forwarders, ",");
      strcat(forwarders, v);
    }
  cfg.forwarders = forwarders[0] ? forwarders : NULL;
  cfg.forward_timeout_ms =
      jitsu_config_duration(a.ctx, "dns", "forward-timeout", 1000);
  const char *allow[65] = {NULL};
  static const char *const loopback[] = {"127.0.0.0/8", "::1/128", NULL};
  for (size_t i = 0;
       i < 64 && (v = jitsu_config_get(a.ctx, "dns", "forward-allow", i)); i++)
    allow[i] = v;
  cfg.allow = allow[0] ? allow : loopback;
  const char *summoners[65] = {NULL};
  for (size_t i = 0;
       i < 64 && (v = jitsu_config_get(a.ctx, "dns", "summon-allow", i)); i++)
    summoners[i] = v;
  cfg.summon_allow = summoners[0] ? summoners : NULL;
  char why[512] = "";
  if (control && jitsu_control_listen(a.ctx, NULL) < 0) {
    fprintf(stderr, "jitsu-dns: %s\n", jitsu_ctx_last_error(a.ctx));
    return give_up(&a, 1);
  }
  if (jitsu_rendezvous_from_config(a.ctx) < 0) {
    fprintf(stderr, "jitsu-dns: %s\n", jitsu_ctx_last_error(a.ctx));
    return give_up(&a, 1);
  }
  int r = dns_server_new(a.ctx, &cfg, &a.srv, why, sizeof(why));
  if (r < 0) {
    fprintf(stderr, "jitsu-dns: %s\n", why[0] ? why : strerror(-r));
    return give_up(&a, 1);
  }
  v = jitsu_config_get(a.ctx, "dns", "user", 0);
  if (v != NULL && geteuid() == 0 && drop_privileges(a.ctx, v) < 0)
    return give_up(&a, 1);
  uv_signal_init(a.loop, &a.sigint);
  uv_signal_init(a.loop, &a.sigterm);
  uv_signal_init(a.loop, &a.sighup);
  a.sigint.data = a.sigterm.data = a.sighup.data = &a;
  uv_signal_start(&a.sigint, quit, SIGINT);
  uv_signal_start(&a.sigterm, quit, SIGTERM);
  uv_signal_start(&a.sighup, reload, SIGHUP);
  for (size_t i = 0; listen[i]; i++)
    fprintf(stderr, "jitsu-dns: serving on %s (udp and tcp)\n", listen[i]);
  jitsu_sd_notify("READY=1\nSTATUS=serving");
  uv_run(a.loop, UV_RUN_DEFAULT);
  dns_server_destroy(a.srv);
  uv_run(a.loop, UV_RUN_DEFAULT);
  uv_loop_close(a.loop);
  return 0;
}
