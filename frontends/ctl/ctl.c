/*
 * jitsu-ctl: command-line control of a running libjitsu controller over
 * its control socket (see jitsu-ctl(8) and doc/control-protocol.md).
 *
 * Exit codes: 0 success, 1 the operation failed, 2 usage error, 3 cannot
 * reach the daemon.
 */
#include <jitsu/jitsu.h>

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

#define RESPONSE_MAX (512 * 1024 * 1024) /* list of 1,000,000 vms */

static const char usage_text[] =
    "usage: jitsu-ctl [-s SOCKET | -c CONFIG] [--json] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  list                          every vm, one line each\n"
    "  status NAME                   one vm in detail\n"
    "  summon NAME [--wait] [--timeout MS]\n"
    "  stop NAME [shutdown|destroy] [--timeout MS]\n"
    "  stop --all [shutdown|destroy] every vm that is not stopped\n"
    "  suspend NAME [--timeout MS]\n"
    "  resume NAME [--timeout MS]\n"
    "  snapshot NAME [--timeout MS]  save the image its summons restore\n"
    "  stats [NAME] [--prometheus]   counters and latencies\n"
    "  reload                        re-read the config file\n"
    "  version\n"
    "\n"
    "exit status: 0 success, 1 the operation failed, 2 usage error,\n"
    "3 cannot reach the daemon\n";

static int usage(const char *why) {
  if (why != NULL)
    fprintf(stderr, "jitsu-ctl: %s\n", why);
  fputs(usage_text, stderr);
  return EXIT_USAGE;
}

static int bad(json_t *req, const char *why) {
  json_decref(req);
  return usage(why);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Connect to (path) and send (req): the connection, or -(exit status)
 * after saying why. */
static int send_request(const char *path, json_t *req) {
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sun.sun_path)) {
    fprintf(stderr, "jitsu-ctl: socket path too long: %s\n", path);
    return -EXIT_USAGE;
  }
  memcpy(sun.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
    fprintf(stderr,
            "jitsu-ctl: cannot reach the daemon at %s: %s\n"
            "hint: is the controller running, with this state directory? "
            "Use -s SOCKET or -c CONFIG to name another.\n",
            path, strerror(errno));
    if (fd >= 0)
      close(fd);
    return -EXIT_UNREACHABLE;
  }
  char *text = json_dumps(req, JSON_COMPACT);
  size_t len = strlen(text);
  text = realloc(text, len + 2);
  text[len++] = '\n';
  ssize_t w = write(fd, text, len);
  free(text);
  if (w != (ssize_t)len) {
    fprintf(stderr, "jitsu-ctl: cannot send to %s: %s\n", path,
            strerror(errno));
    close(fd);
    return -EXIT_UNREACHABLE;
  }
  return fd;
}

/* Read one response line from (fd) (connected to (path)) within
 * (timeout_ms), and close it. */
static int read_response(int fd, const char *path, double timeout_ms,
                         json_t **resp) {
  size_t cap = 65536, got = 0;
  char *buf = malloc(cap);
  double deadline = now_ms() + timeout_ms;
  int status = EXIT_FAILED; /* it was reached: whatever fails now */
  for (;;) {
    char *nl = got ? memchr(buf, '\n', got) : NULL;
    if (nl != NULL) {
      json_error_t e;
      *resp = json_loadb(buf, (size_t)(nl - buf), 0, &e);
      status = *resp ? EXIT_OK : EXIT_FAILED;
      if (*resp == NULL)
        fprintf(stderr, "jitsu-ctl: unreadable answer: %s\n", e.text);
      break;
    }
    double left = deadline - now_ms();
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
      fprintf(stderr, "jitsu-ctl: no answer from %s in time\n", path);
      status = EXIT_FAILED;
      break;
    }
    if (got == cap) {
      if (cap >= RESPONSE_MAX) {
        fprintf(stderr, "jitsu-ctl: answer too long\n");
        status = EXIT_FAILED;
        break;
      }
      cap *= 2;
      buf = realloc(buf, cap);
    }
    ssize_t n = read(fd, buf + got, cap - got);
    if (n <= 0) {
      fprintf(stderr,
              "jitsu-ctl: the daemon closed the connection before its "
              "answer was complete (%zu bytes read)\n",
              got);
      break;
    }
    got += (size_t)n;
  }
  free(buf);
  close(fd);
  return status;
}

/* Send (req) to (path) and read one response line, within (timeout_ms). */
static int call(const char *path, json_t *req, double timeout_ms,
                json_t **resp) {
  int fd = send_request(path, req);
  return fd < 0 ? -fd : read_response(fd, path, timeout_ms, resp);
}

/* stop --all: every vm that is not stopped (suspended ones too), up to
 * 16 at a time (the daemon's limit of requests in flight is per
 * connection: one connection each). */
static int stop_all(const char *path, const char *mode, long timeout) {
  json_t *req = json_pack("{s:i, s:s}", "v", JITSU_CONTROL_PROTOCOL, "cmd",
                          "list"),
         *resp = NULL;
  int status = call(path, req, 30000, &resp);
  json_decref(req);
  if (status != EXIT_OK)
    return status;
  json_t *vms = json_object_get(json_object_get(resp, "result"), "vms");
  if (!json_is_true(json_object_get(resp, "ok")) || !json_is_array(vms)) {
    fprintf(stderr, "jitsu-ctl: list: %s\n",
            json_string_value(
                json_object_get(json_object_get(resp, "error"), "message")));
    json_decref(resp);
    return EXIT_FAILED;
  }
  enum { WINDOW = 16 };
  struct {
    int fd;
    const char *name;
  } open[WINDOW];
  size_t n_open = 0, next = 0, n = json_array_size(vms), stopped = 0;
  double wait_ms = (double)(timeout ? timeout : 30000) + 5000;
  status = EXIT_OK;
  while (next < n || n_open > 0) {
    while (next < n && n_open < WINDOW) {
      json_t *vm = json_array_get(vms, next++);
      const char *st = json_string_value(json_object_get(vm, "state"));
      if (st == NULL || strcmp(st, "stopped") == 0 || strcmp(st, "failed") == 0)
        continue;
      const char *name = json_string_value(json_object_get(vm, "name"));
      json_t *r = json_pack("{s:i, s:s, s:s, s:s}", "v", JITSU_CONTROL_PROTOCOL,
                            "cmd", "stop", "name", name, "mode", mode);
      if (timeout > 0)
        json_object_set_new(r, "timeout_ms", json_integer(timeout));
      int fd = send_request(path, r);
      json_decref(r);
      if (fd < 0) {
        status = -fd;
        next = n; /* the daemon is gone: collect what was sent */
        break;
      }
      open[n_open].fd = fd;
      open[n_open++].name = name;
    }
    if (n_open == 0)
      break;
    /* The oldest first: each answer comes once its stop is done. */
    json_t *a = NULL;
    int s = read_response(open[0].fd, path, wait_ms, &a);
    if (s == EXIT_OK && json_is_true(json_object_get(a, "ok"))) {
      stopped++;
    } else {
      if (s == EXIT_OK)
        fprintf(stderr, "jitsu-ctl: stop %s: %s\n", open[0].name,
                json_string_value(
                    json_object_get(json_object_get(a, "error"), "message")));
      if (status == EXIT_OK)
        status = EXIT_FAILED;
    }
    json_decref(a);
    memmove(&open[0], &open[1], (n_open - 1) * sizeof(open[0]));
    n_open--;
  }
  printf("%zu vm(s) stopped\n", stopped);
  json_decref(resp);
  return status;
}

static void human_ms(double ms, char *out, size_t size) {
  if (ms <= 0)
    snprintf(out, size, "-");
  else if (ms < 1000)
    snprintf(out, size, "%.0fms", ms);
  else if (ms < 60000)
    snprintf(out, size, "%.1fs", ms / 1000);
  else if (ms < 3600000)
    snprintf(out, size, "%.0fm%02.0fs", ms / 60000 - 0.5,
             (double)((long long)(ms / 1000) % 60));
  else
    snprintf(out, size, "%.1fh", ms / 3600000);
}

static void latency(double ms, char *out, size_t size) {
  if (ms <= 0)
    snprintf(out, size, "-");
  else
    snprintf(out, size, "%.1fms", ms);
}

static const char *str(json_t *o, const char *key) {
  const char *s = json_string_value(json_object_get(o, key));
  return s ? s : "";
}

static double num(json_t *o, const char *key) {
  return json_number_value(json_object_get(o, key));
}

static void print_list(json_t *result) {
  json_t *vms = json_object_get(result, "vms");
  size_t i;
  json_t *vm;
  int wname = 4, waddr = 7;
  json_array_foreach(vms, i, vm) {
    int n = (int)strlen(str(vm, "name"));
    int a = (int)strlen(
        json_string_value(json_array_get(json_object_get(vm, "addresses"), 0))
            ?: "-");
    wname = n > wname ? n : wname;
    waddr = a > waddr ? a : waddr;
  }
  printf("%-*s  %-8s  %-10s  %-*s  %8s  %8s  %7s  %5s  %8s  %8s\n", wname,
         "NAME", "BACKEND", "STATE", waddr, "ADDRESS", "UPTIME", "IDLE",
         "SUMMONS", "COLD", "COLD-P50", "COLD-P99");
  json_array_foreach(vms, i, vm) {
    char up[16], idle[16], p50[16], p99[16];
    human_ms(num(vm, "uptime_ms"), up, sizeof(up));
    human_ms(num(vm, "idle_ms"), idle, sizeof(idle));
    latency(num(vm, "cold_start_p50_ms"), p50, sizeof(p50));
    latency(num(vm, "cold_start_p99_ms"), p99, sizeof(p99));
    const char *addr =
        json_string_value(json_array_get(json_object_get(vm, "addresses"), 0));
    printf("%-*s  %-8s  %-10s  %-*s  %8s  %8s  %7.0f  %5.0f  %8s  %8s\n", wname,
           str(vm, "name"), str(vm, "backend"), str(vm, "state"), waddr,
           addr ? addr : "-", up, idle, num(vm, "summons"),
           num(vm, "cold_starts"), p50, p99);
  }
}

static void print_latency(const char *what, json_t *l) {
  char p50[16], p90[16], p99[16];
  latency(num(l, "p50_ms"), p50, sizeof(p50));
  latency(num(l, "p90_ms"), p90, sizeof(p90));
  latency(num(l, "p99_ms"), p99, sizeof(p99));
  printf("  %-12s %6.0f  p50 %s  p90 %s  p99 %s\n", what, num(l, "count"), p50,
         p90, p99);
}

static void print_metrics(json_t *m) {
  printf("  summons %.0f, cold starts %.0f, resumes %.0f, ready failures "
         "%.0f (time-outs %.0f), crashes %.0f\n",
         num(m, "summons"), num(m, "cold_starts"), num(m, "resumes"),
         num(m, "ready_failures"), num(m, "timeouts"), num(m, "crashes"));
  print_latency("cold start", json_object_get(m, "cold_start"));
  print_latency("resume", json_object_get(m, "resume"));
  printf("  time in state:");
  const char *state;
  json_t *v;
  json_object_foreach(json_object_get(m, "state_ms"), state, v) {
    char t[16];
    human_ms(json_number_value(v), t, sizeof(t));
    if (json_number_value(v) > 0)
      printf(" %s %s", state, t);
  }
  printf("\n");
}

/* Its pool, when it has one (status and stats). */
static void print_spares(json_t *vm) {
  if (num(vm, "spares") > 0)
    printf("  spares: %.0f (%.0f filling), holding %.0f MiB\n",
           num(vm, "spares"), num(vm, "spares_filling"),
           num(vm, "spare_memory_bytes") / 1048576);
}

static void print_vm(json_t *vm) {
  char up[16], idle[16];
  human_ms(num(vm, "uptime_ms"), up, sizeof(up));
  human_ms(num(vm, "idle_ms"), idle, sizeof(idle));
  printf("%s: %s", str(vm, "name"), str(vm, "state"));
  if (str(vm, "reason")[0])
    printf(" (%s)", str(vm, "reason"));
  printf("\n  backend %s%s%s%s, uptime %s, idle %s\n", str(vm, "backend"),
         str(vm, "instance")[0] ? ", " : "", str(vm, "instance"),
         json_is_true(json_object_get(vm, "adopted")) ? " (adopted)" : "", up,
         idle);
  size_t i;
  json_t *a;
  json_array_foreach(json_object_get(vm, "addresses"), i, a)
      printf("  address %s\n", json_string_value(a));
  print_spares(vm);
  if (json_object_get(vm, "metrics"))
    print_metrics(json_object_get(vm, "metrics"));
}

/* A number as written: a whole one exactly (a counter of 3963820 is
 * not 3.96382e+06), else in as few digits as read back the same. */
static void print_number(double v) {
  if (v == (double)(long long)v && v > -9e15 && v < 9e15) {
    printf("%lld", (long long)v);
    return;
  }
  char buf[64];
  for (int digits = 6; digits <= 17; digits++) {
    snprintf(buf, sizeof(buf), "%.*g", digits, v);
    if (strtod(buf, NULL) == v)
      break;
  }
  fputs(buf, stdout);
}

static void prom_label(const char *v) {
  for (; *v; v++) {
    if (*v == '\\' || *v == '"')
      printf("\\%c", *v);
    else if (*v == '\n')
      printf("\\n");
    else
      putchar(*v);
  }
}

static void prom_hist(json_t *vms, const char *key, const char *metric,
                      json_t *bounds) {
  printf("# HELP %s Summon-to-ready time of a %s.\n# TYPE %s histogram\n",
         metric, strcmp(key, "resume") ? "cold start" : "resume", metric);
  size_t i, b;
  json_t *vm;
  json_array_foreach(vms, i, vm) {
    json_t *l = json_object_get(json_object_get(vm, "metrics"), key);
    json_t *buckets = json_object_get(l, "buckets");
    double cum = 0;
    for (b = 0; b < json_array_size(buckets); b++) {
      cum += json_number_value(json_array_get(buckets, b));
      printf("%s_bucket{vm=\"", metric);
      prom_label(str(vm, "name"));
      if (b < json_array_size(bounds))
        printf("\",le=\"%g\"} %.0f\n",
               json_number_value(json_array_get(bounds, b)) / 1000, cum);
      else
        printf("\",le=\"+Inf\"} %.0f\n", cum);
    }
    printf("%s_sum{vm=\"", metric);
    prom_label(str(vm, "name"));
    printf("\"} ");
    print_number(num(l, "sum_ms") / 1000);
    printf("\n%s_count{vm=\"", metric);
    prom_label(str(vm, "name"));
    printf("\"} %.0f\n", num(l, "count"));
  }
}

/* The description of (name) in (help) (exact, or a "prefix*" entry). */
static const char *help_of(json_t *help, const char *name) {
  const char *key;
  json_t *v;
  if (json_is_string(json_object_get(help, name)))
    return json_string_value(json_object_get(help, name));
  json_object_foreach(help, key, v) {
    size_t l = strlen(key);
    if (l > 0 && key[l - 1] == '*' && strncmp(key, name, l - 1) == 0)
      return json_string_value(v);
  }
  return NULL;
}

/* Frontends' own statistics: "group": {"name": value}; for Prometheus
 * with HELP and TYPE each, and "_ms" ones in seconds. */
static void print_frontends(json_t *result, int prometheus) {
  const char *group, *name;
  json_t *stats, *v;
  json_object_foreach(json_object_get(result, "frontends"), group, stats) {
    json_t *help =
        json_object_get(json_object_get(result, "frontends_help"), group);
    if (!prometheus)
      printf("%s:\n", group);
    json_object_foreach(stats, name, v) {
      double value = json_number_value(v);
      if (!prometheus) {
        printf("  %-24s ", name);
        print_number(value);
        printf("\n");
        continue;
      }
      char metric[256];
      size_t n = strlen(name);
      int counter = n > 6 && strcmp(name + n - 6, "_total") == 0;
      if (n > 3 && strcmp(name + n - 3, "_ms") == 0) {
        snprintf(metric, sizeof(metric), "jitsu_%s_%.*s_seconds", group,
                 (int)(n - 3), name);
        value /= 1000;
      } else {
        snprintf(metric, sizeof(metric), "jitsu_%s_%s", group, name);
      }
      const char *h = help_of(help, name);
      printf("# HELP %s ", metric);
      if (h != NULL)
        printf("%s\n", h);
      else
        printf("The %s statistic %s.\n", group, name);
      printf("# TYPE %s %s\n%s ", metric, counter ? "counter" : "gauge",
             metric);
      print_number(value);
      printf("\n");
    }
  }
}

/* One metric family with a sample per vm: (field) of each vm's object, or
 * of its "metrics" object when (in_metrics). */
static void prom_per_vm(json_t *vms, const char *metric, const char *help,
                        const char *type, const char *field, bool in_metrics) {
  size_t i;
  json_t *vm;
  printf("# HELP %s %s\n# TYPE %s %s\n", metric, help, metric, type);
  json_array_foreach(vms, i, vm) {
    printf("%s{vm=\"", metric);
    prom_label(str(vm, "name"));
    printf("\"} %.0f\n",
           num(in_metrics ? json_object_get(vm, "metrics") : vm, field));
  }
}

static void print_prometheus(json_t *result) {
  json_t *vms = json_object_get(result, "vms");
  static const char *const counters[][3] = {
      {"summons", "jitsu_summons_total", "Summons accepted."},
      {"cold_starts", "jitsu_cold_starts_total", "Guests started cold."},
      {"resumes", "jitsu_resumes_total", "Guests resumed."},
      {"ready_failures", "jitsu_ready_failures_total",
       "Starts that never became ready."},
      {"timeouts", "jitsu_ready_timeouts_total", "Readiness time-outs."},
      {"crashes", "jitsu_crashes_total", "Guests that failed when ready."},
  };
  size_t i;
  json_t *vm;
  for (size_t c = 0; c < sizeof(counters) / sizeof(*counters); c++)
    prom_per_vm(vms, counters[c][1], counters[c][2], "counter", counters[c][0],
                true);
  printf("# HELP jitsu_state_seconds_total Time spent in each state.\n"
         "# TYPE jitsu_state_seconds_total counter\n");
  json_array_foreach(vms, i, vm) {
    const char *state;
    json_t *v;
    json_object_foreach(
        json_object_get(json_object_get(vm, "metrics"), "state_ms"), state, v) {
      printf("jitsu_state_seconds_total{vm=\"");
      prom_label(str(vm, "name"));
      printf("\",state=\"%s\"} ", state);
      print_number(json_number_value(v) / 1000);
      printf("\n");
    }
  }
  static const char *const per_vm[][3] = {
      {"spares", "jitsu_vm_spares", "Spares kept for the vm (its pool)."},
      {"spare_memory_bytes", "jitsu_vm_spare_memory_bytes",
       "Memory the vm's waiting spares hold (resident bytes)."},
  };
  for (size_t g = 0; g < sizeof(per_vm) / sizeof(*per_vm); g++)
    prom_per_vm(vms, per_vm[g][1], per_vm[g][2], "gauge", per_vm[g][0], false);
  printf("# HELP jitsu_vm_state The current state (1 for the state it is "
         "in).\n# TYPE jitsu_vm_state gauge\n");
  json_array_foreach(vms, i, vm) {
    printf("jitsu_vm_state{vm=\"");
    prom_label(str(vm, "name"));
    printf("\",state=\"%s\"} 1\n", str(vm, "state"));
  }
  json_t *bounds = json_object_get(result, "latency_bounds_ms");
  prom_hist(vms, "cold_start", "jitsu_cold_start_seconds", bounds);
  prom_hist(vms, "resume", "jitsu_resume_seconds", bounds);
  json_t *ctx = json_object_get(result, "ctx");
  static const char *const gauges[][3] = {
      {"defined", "jitsu_vms_defined", "Vms defined."},
      {"live", "jitsu_guests_live", "Guests live."},
      {"starting", "jitsu_guests_starting", "Guests starting or resuming."},
      {"max_live", "jitsu_max_live", "The max-live limit."},
      {"max_starting", "jitsu_max_starting", "The max-starting limit."},
      {"spares", "jitsu_spares", "Spares (pool members), counted as live."},
      {"spares_filling", "jitsu_spares_filling",
       "Spares being made, counted as starting."},
  };
  for (size_t g = 0; g < sizeof(gauges) / sizeof(*gauges); g++)
    printf("# HELP %s %s\n# TYPE %s gauge\n%s %.0f\n", gauges[g][1],
           gauges[g][2], gauges[g][1], gauges[g][1], num(ctx, gauges[g][0]));
  printf("# HELP jitsu_summons_refused_total Summons refused for a limit.\n"
         "# TYPE jitsu_summons_refused_total counter\n"
         "jitsu_summons_refused_total{limit=\"max-live\"} %.0f\n"
         "jitsu_summons_refused_total{limit=\"max-waiters\"} %.0f\n",
         num(ctx, "refused_max_live"), num(ctx, "refused_max_waiters"));
  print_frontends(result, 1);
}

static void print_stats(json_t *result) {
  json_t *ctx = json_object_get(result, "ctx");
  printf("%.0f vms defined, %.0f live (max %.0f), %.0f starting (max %.0f); "
         "summons refused: %.0f for max-live, %.0f for max-waiters\n",
         num(ctx, "defined"), num(ctx, "live"), num(ctx, "max_live"),
         num(ctx, "starting"), num(ctx, "max_starting"),
         num(ctx, "refused_max_live"), num(ctx, "refused_max_waiters"));
  size_t i;
  json_t *vm;
  json_array_foreach(json_object_get(result, "vms"), i, vm) {
    printf("%s (%s)\n", str(vm, "name"), str(vm, "state"));
    print_spares(vm);
    print_metrics(json_object_get(vm, "metrics"));
  }
  print_frontends(result, 0);
}

static const char *default_socket(const char *config, char *buf, size_t size) {
  char dir[512];
  if (config != NULL) {
    FILE *f = fopen(config, "re"); /* a missing one is an error, not "none" */
    if (f == NULL) {
      fprintf(stderr, "jitsu-ctl: cannot read %s: %s\n", config,
              strerror(errno));
      return NULL;
    }
    fclose(f);
    if (jitsu_config_peek(config, "jitsu", "control-socket", buf, size) == 0)
      return buf;
    int r = jitsu_config_peek(config, "jitsu", "state-dir", dir, sizeof(dir));
    if (r < 0 && r != -ENOENT) {
      fprintf(stderr, "jitsu-ctl: cannot read %s: %s\n", config, strerror(-r));
      return NULL;
    }
    if (r == 0) {
      snprintf(buf, size, "%s/control.sock", dir);
      return buf;
    }
  }
  jitsu_default_state_dir(dir, sizeof(dir));
  snprintf(buf, size, "%s/control.sock", dir);
  return buf;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"socket", required_argument, NULL, 's'},
      {"config", required_argument, NULL, 'c'},
      {"json", no_argument, NULL, 'j'},
      {"all", no_argument, NULL, 'a'},
      {"wait", no_argument, NULL, 'w'},
      {"timeout", required_argument, NULL, 't'},
      {"prometheus", no_argument, NULL, 'p'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  signal(SIGPIPE, SIG_IGN); /* a daemon that hangs up: EPIPE, not death */
  const char *sock = NULL, *config = NULL;
  int json_out = 0, wait = 0, prometheus = 0, all = 0, opt;
  long timeout = 0;
  while ((opt = getopt_long(argc, argv, "s:c:jwt:ph", longopts, NULL)) != -1) {
    switch (opt) {
    case 's':
      sock = optarg;
      break;
    case 'c':
      config = optarg;
      break;
    case 'j':
      json_out = 1;
      break;
    case 'a':
      all = 1;
      break;
    case 'w':
      wait = 1;
      break;
    case 't': {
      char *end;
      timeout = strtol(optarg, &end, 10);
      if (*end != '\0' || timeout <= 0 || timeout > 86400000)
        return usage("--timeout takes milliseconds, from 1 to 86400000");
      break;
    }
    case 'p':
      prometheus = 1;
      break;
    case 'h':
      fputs(usage_text, stdout);
      return EXIT_OK;
    default:
      return usage(NULL);
    }
  }
  if (sock != NULL && config != NULL)
    return usage("-s and -c exclude each other");
  if (optind >= argc)
    return usage("no command");
  const char *cmd = argv[optind];
  const char *name = optind + 1 < argc ? argv[optind + 1] : NULL;
  int nargs = argc - optind - 1;
  json_t *req =
      json_pack("{s:i, s:s}", "v", JITSU_CONTROL_PROTOCOL, "cmd", cmd);
  if (strcmp(cmd, "list") == 0 || strcmp(cmd, "version") == 0 ||
      strcmp(cmd, "reload") == 0) {
    if (nargs != 0)
      return bad(req, "this command takes no arguments");
  } else if (strcmp(cmd, "stats") == 0) {
    if (nargs > 1)
      return bad(req, "stats takes at most a vm name");
    if (name != NULL)
      json_object_set_new(req, "name", json_string(name));
  } else if (strcmp(cmd, "status") == 0 || strcmp(cmd, "summon") == 0 ||
             strcmp(cmd, "suspend") == 0 || strcmp(cmd, "resume") == 0 ||
             strcmp(cmd, "snapshot") == 0 || strcmp(cmd, "stop") == 0) {
    int max = strcmp(cmd, "stop") == 0 ? 2 : 1;
    if (strcmp(cmd, "stop") == 0 && all) {
      const char *mode = nargs == 1 ? name : "shutdown";
      json_decref(req);
      if (nargs > 1 ||
          (strcmp(mode, "shutdown") != 0 && strcmp(mode, "destroy") != 0))
        return usage("stop --all takes optionally shutdown or destroy");
      char path[600];
      if (wait || prometheus || json_out)
        return usage("stop --all takes only --timeout");
      if (sock == NULL &&
          (sock = default_socket(config, path, sizeof(path))) == NULL)
        return EXIT_USAGE;
      return stop_all(sock, mode, timeout);
    }
    if (nargs < 1 || nargs > max)
      return bad(req, max == 2 ? "stop takes a vm name and optionally "
                                 "shutdown or destroy"
                               : "this command takes a vm name");
    json_object_set_new(req, "name", json_string(name));
    if (nargs == 2) {
      const char *mode = argv[optind + 2];
      if (strcmp(mode, "shutdown") != 0 && strcmp(mode, "destroy") != 0)
        return bad(req, "the stop mode is shutdown or destroy");
      json_object_set_new(req, "mode", json_string(mode));
    }
    if (strcmp(cmd, "summon") == 0 && wait)
      json_object_set_new(req, "wait", json_true());
    if (timeout > 0 && strcmp(cmd, "status") != 0)
      json_object_set_new(req, "timeout_ms", json_integer(timeout));
  } else {
    char why[128];
    snprintf(why, sizeof(why), "unknown command '%s'", cmd);
    return bad(req, why);
  }
  if (all)
    return bad(req, "--all goes with stop");
  if ((wait && strcmp(cmd, "summon") != 0) ||
      (prometheus && strcmp(cmd, "stats") != 0))
    return bad(req, wait ? "--wait goes with summon"
                         : "--prometheus goes with stats");
  char path[600];
  if (sock == NULL &&
      (sock = default_socket(config, path, sizeof(path))) == NULL) {
    json_decref(req);
    return EXIT_USAGE;
  }
  json_t *resp = NULL;
  int status =
      call(sock, req, (double)(timeout ? timeout : 30000) + 5000, &resp);
  json_decref(req);
  if (status != EXIT_OK)
    return status;
  json_t *result = json_object_get(resp, "result");
  if (!json_is_true(json_object_get(resp, "ok"))) {
    json_t *err = json_object_get(resp, "error");
    if (json_out) {
      json_dumpf(resp, stdout,
                 JSON_INDENT(2) | JSON_PRESERVE_ORDER |
                     JSON_REAL_PRECISION(15));
      printf("\n");
    }
    fprintf(stderr, "jitsu-ctl: %s: %s\n", cmd, str(err, "message"));
    json_decref(resp);
    return EXIT_FAILED;
  }
  if (json_out) {
    json_dumpf(result, stdout,
               JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    printf("\n");
  } else if (strcmp(cmd, "list") == 0) {
    print_list(result);
  } else if (strcmp(cmd, "version") == 0) {
    printf("jitsu-ctl %s, daemon %s (protocol %.0f)\n", jitsu_version(),
           str(result, "version"), num(result, "protocol"));
  } else if (strcmp(cmd, "stats") == 0) {
    if (prometheus)
      print_prometheus(result);
    else
      print_stats(result);
  } else if (strcmp(cmd, "reload") == 0) {
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(result, "changes"), i, c)
        printf("%-20s %s\n", str(c, "name"), str(c, "action"));
  } else {
    print_vm(result);
  }
  json_decref(resp);
  return EXIT_OK;
}
