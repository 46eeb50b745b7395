/*
 * The qemu backend: guests under QEMU (KVM where a hardware KVM module is
 * loaded, else TCG), driven over QMP on the library's loop. Suspend is a
 * pause in memory or a save to disk (migrate to a file, quit; resume
 * restores it); a vm may name a snapshot image that its cold starts
 * restore instead of booting.
 */
#include "qemu.h"
#include <arpa/inet.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define QMP_TIMEOUT_MS 5000
#define MIGRATE_TIMEOUT_MS 120000 /* one save or restore */
#define MIGRATE_POLL_MS 2
#define KILL_AFTER_QUIT_MS 3000

static const jitsu_key qemu_keys[] = {
    {"kernel", JITSU_KEY_STRING, JITSU_KEY_REQUIRED,
     "the guest kernel (an ELF with a PVH note, or a bzImage)"},
    {"initrd", JITSU_KEY_STRING, 0, "the initial ramdisk"},
    {"cmdline", JITSU_KEY_STRING, 0, "the kernel command line"},
    {"qemu", JITSU_KEY_STRING, 0, "the QEMU binary (qemu-system-x86_64)"},
    {"machine", JITSU_KEY_STRING, 0, "machine type and options (microvm)"},
    {"accel", JITSU_KEY_STRING, 0, "auto | kvm | tcg (auto)"},
    {"cpu", JITSU_KEY_STRING, 0, "CPU model (host under KVM, max under TCG)"},
    {"memory", JITSU_KEY_SIZE, 0, "guest memory, whole MiB (128M)"},
    {"vcpus", JITSU_KEY_UINT, 0, "virtual CPUs (1)"},
    {"tsc-hint", JITSU_KEY_BOOL, 0,
     "under TCG, tell a Linux guest the host's TSC rate (no)"},
    {"net", JITSU_KEY_STRING, 0, "user | tap | none (user)"},
    {"forward", JITSU_KEY_STRING, JITSU_KEY_MULTI,
     "user networking: tcp:HOSTADDR:PORT-:GUESTPORT"},
    {"bridge", JITSU_KEY_STRING, 0, "tap: the bridge to join"},
    {"netns", JITSU_KEY_STRING, 0, "tap: a named network namespace"},
    {"mac", JITSU_KEY_STRING, 0, "the NIC's MAC (derived from the name)"},
    {"console-marker", JITSU_KEY_STRING, 0,
     "the readiness marker on the serial console (JITSU_READY)"},
    {"suspend", JITSU_KEY_STRING, 0, "memory | disk (memory)"},
    {"snapshot", JITSU_KEY_STRING, 0, "a saved image that cold starts restore"},
    {"snapshot-auto", JITSU_KEY_BOOL, 0,
     "save the snapshot image after the first boot (no)"},
    {"qemu-arg", JITSU_KEY_STRING, JITSU_KEY_MULTI,
     "more QEMU arguments, split like a shell"},
    {"pool", JITSU_KEY_UINT, 0,
     "spare QEMUs kept paused at the ready point, 0 to 8 (0)"},
};

static void qmp_opened(void *arg);
static void qmp_event(void *arg, const char *name, json_t *data);
static void qmp_closed(void *arg, const char *why);
static const qmp_handlers handlers = {qmp_opened, qmp_event, qmp_closed};

static void close_handle(void *hp) {
  uv_handle_t **h = hp;
  if (*h != NULL) {
    (*h)->data = NULL;
    uv_close(*h, jitsu__free_handle);
    *h = NULL;
  }
}

/* ---- configuration ---------------------------------------------------- */

void qemu_free(qvm *q) {
  if (q == NULL)
    return;
  for (size_t i = 0; q->extra && q->extra[i]; i++)
    free(q->extra[i]);
  free(q->extra);
  free(q);
}

/* "tcp:[ADDR]:PORT-[ADDR]:PORT" as QEMU's hostfwd wants it; no commas. */
static int check_forward(const char *v) {
  if (strncmp(v, "tcp:", 4) != 0 && strncmp(v, "udp:", 4) != 0)
    return -EINVAL;
  if (strchr(v, ',') != NULL || strchr(v, ' ') != NULL)
    return -EINVAL;
  const char *dash = strchr(v + 4, '-');
  if (dash == NULL)
    return -EINVAL;
  const char *c1 = memrchr(v + 4, ':', (size_t)(dash - v - 4));
  const char *c2 = strrchr(dash, ':');
  if (c1 == NULL || c2 == NULL)
    return -EINVAL;
  for (const char *port = c1 + 1; port < dash; port++)
    if (*port < '0' || *port > '9')
      return -EINVAL;
  if (c2[1] == '\0')
    return -EINVAL;
  for (const char *port = c2 + 1; *port; port++)
    if (*port < '0' || *port > '9')
      return -EINVAL;
  return 0;
}

/* A file the guest needs must be there when the config loads (a summon
 * checks again: it may go later). */
static int readable(jitsu_error *err, const char *key, const char *path) {
  if (path == NULL || access(path, R_OK) == 0)
    return 0;
  int e = errno;
  return jitsu_error_set(err, -e, key, "cannot read %s: %s", path, strerror(e));
}

static int configure_values(qvm *q, jitsu_vm *vm, jitsu_error *err) {
  const char *v;
  q->kernel = jitsu_vm_param(vm, "kernel", 0);
  q->initrd = jitsu_vm_param(vm, "initrd", 0);
  int r;
  if ((r = readable(err, "kernel", q->kernel)) < 0 ||
      (r = readable(err, "initrd", q->initrd)) < 0)
    return r;
  q->cmdline = jitsu_vm_param(vm, "cmdline", 0);
  q->binary = jitsu_vm_param(vm, "qemu", 0);
  if (q->binary == NULL)
    q->binary = "qemu-system-x86_64";
  q->machine = jitsu_vm_param(vm, "machine", 0);
  if (q->machine == NULL)
    q->machine = "microvm";
  q->cpu = jitsu_vm_param(vm, "cpu", 0);
  q->marker = jitsu_vm_param(vm, "console-marker", 0);
  if (q->marker == NULL)
    q->marker = "JITSU_READY";
  if (q->marker[0] == '\0' || strlen(q->marker) > 128)
    return jitsu_error_set(err, -EINVAL, "console-marker",
                           "'%s' is empty or over 128 bytes", q->marker);
  q->accel = QACCEL_AUTO;
  if ((v = jitsu_vm_param(vm, "accel", 0)) != NULL) {
    if (strcmp(v, "kvm") == 0)
      q->accel = QACCEL_KVM;
    else if (strcmp(v, "tcg") == 0)
      q->accel = QACCEL_TCG;
    else if (strcmp(v, "auto") != 0)
      return jitsu_error_set(err, -EINVAL, "accel",
                             "'%s' is not auto, kvm or tcg", v);
  }
  q->memory = 128ull << 20;
  if ((v = jitsu_vm_param(vm, "memory", 0)) != NULL &&
      jitsu__parse_mib(v, &q->memory) < 0)
    return jitsu_error_set(err, -EINVAL, "memory",
                           "'%s' is not a whole number of MiB (>= 1M)", v);
  q->vcpus = 1;
  if ((v = jitsu_vm_param(vm, "vcpus", 0)) != NULL &&
      jitsu__parse_vcpus(v, &q->vcpus) < 0)
    return jitsu_error_set(err, -EINVAL, "vcpus", "'%s' is not 1 to 255", v);
  bool b = false;
  if ((v = jitsu_vm_param(vm, "tsc-hint", 0)) != NULL)
    jitsu_parse_bool(v, &b);
  q->tsc_hint = b;
  b = false;
  if ((v = jitsu_vm_param(vm, "snapshot-auto", 0)) != NULL)
    jitsu_parse_bool(v, &b);
  q->snapshot_auto = b;
  q->snapshot = jitsu_vm_param(vm, "snapshot", 0);
  if (q->snapshot_auto && q->snapshot == NULL)
    return jitsu_error_set(err, -EINVAL, "snapshot-auto",
                           "%s needs a snapshot path", "yes");
  if (q->snapshot != NULL && q->snapshot[0] != '/')
    return jitsu_error_set(err, -EINVAL, "snapshot",
                           "'%s' is not an absolute path", q->snapshot);
  q->suspend_disk = false;
  if ((v = jitsu_vm_param(vm, "suspend", 0)) != NULL) {
    if (strcmp(v, "disk") == 0)
      q->suspend_disk = true;
    else if (strcmp(v, "memory") != 0)
      return jitsu_error_set(err, -EINVAL, "suspend",
                             "'%s' is not memory or disk", v);
  }
  return 0;
}

static int configure_net(qvm *q, jitsu_vm *vm, jitsu_error *err) {
  const char *v = jitsu_vm_param(vm, "net", 0);
  q->net = QNET_USER;
  if (v != NULL) {
    if (strcmp(v, "tap") == 0)
      q->net = QNET_TAP;
    else if (strcmp(v, "none") == 0)
      q->net = QNET_NONE;
    else if (strcmp(v, "user") != 0)
      return jitsu_error_set(err, -EINVAL, "net",
                             "'%s' is not user, tap or none", v);
  }
  for (size_t i = 0; (v = jitsu_vm_param(vm, "forward", i)) != NULL; i++) {
    if (q->net != QNET_USER)
      return jitsu_error_set(err, -EINVAL, "forward",
                             "'%s': forwards need net = user", v);
    if (check_forward(v) < 0)
      return jitsu_error_set(
          err, -EINVAL, "forward",
          "'%s' is not tcp:HOSTADDR:PORT-:GUESTPORT (or udp:)", v);
  }
  q->bridge = jitsu_vm_param(vm, "bridge", 0);
  q->netns = jitsu_vm_param(vm, "netns", 0);
  if ((q->bridge || q->netns) && q->net != QNET_TAP)
    return jitsu_error_set(err, -EINVAL, q->bridge ? "bridge" : "netns",
                           "'%s' needs net = tap",
                           q->bridge ? q->bridge : q->netns);
  if (q->bridge && (strlen(q->bridge) >= 16 || strchr(q->bridge, '/')))
    return jitsu_error_set(err, -EINVAL, "bridge",
                           "'%s' is not an interface name", q->bridge);
  if (q->netns && (q->netns[0] == '\0' || strchr(q->netns, '/') ||
                   strcmp(q->netns, "..") == 0 || strcmp(q->netns, ".") == 0))
    return jitsu_error_set(err, -EINVAL, "netns",
                           "'%s' is not a namespace name", q->netns);
  q->mac = jitsu_vm_param(vm, "mac", 0);
  if (q->mac && jitsu__parse_mac(q->mac, NULL) < 0)
    return jitsu_error_set(err, -EINVAL, "mac",
                           "'%s' is not a unicast MAC as xx:xx:xx:xx:xx:xx",
                           q->mac);
  return 0;
}

/* Words of every qemu-arg, NULL-terminated, each its own copy. */
static int configure_extra(qvm *q, jitsu_vm *vm, jitsu_error *err) {
  const char *v;
  size_t n = 0;
  for (size_t i = 0; (v = jitsu_vm_param(vm, "qemu-arg", i)) != NULL; i++) {
    char **words;
    int argc;
    if (jitsu_split_argv(v, &words, &argc) < 0)
      return jitsu_error_set(err, -EINVAL, "qemu-arg",
                             "'%s' is empty or has unbalanced quotes", v);
    char **all = realloc(q->extra, (n + (size_t)argc + 1) * sizeof(*all));
    if (all != NULL) {
      q->extra = all;
      for (int k = 0; k < argc && all; k++) {
        all[n] = jitsu__strdup(words[k]);
        if (all[n] == NULL)
          all = NULL;
        else
          all[++n] = NULL;
      }
    }
    free(words);
    if (all == NULL)
      return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  }
  return 0;
}

int qemu_configure_copy(qvm *q, jitsu_vm *vm, jitsu_error *err) {
  q->vm = vm;
  q->pidfd = -1;
  q->console_fd = -1;
  int r = configure_values(q, vm, err);
  if (r == 0)
    r = configure_net(q, vm, err);
  if (r == 0)
    r = configure_extra(q, vm, err);
  return r;
}

static int qemu_configure(jitsu_vm *vm, jitsu_error *err) {
  qvm *q = calloc(1, sizeof(*q));
  if (q == NULL)
    return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  int r = qemu_configure_copy(q, vm, err);
  if (r == 0)
    r = qemu_pool_configure(q, vm, err);
  if (r < 0) {
    qemu_free(q);
    return r;
  }
  jitsu_vm_set_data(vm, q);
  return 0;
}

/* ---- the live guest ---------------------------------------------------- */

static bool file_exists(const char *path) {
  return path != NULL && access(path, F_OK) == 0;
}

static int suspend_image(qvm *q, char *path, size_t size) {
  return qemu_path(q, "suspend", path, size);
}

/* Forget the live QEMU (it exited, or we are going away). */
void qemu_instance_drop(qvm *q) {
  qmp_close(q->qmp);
  q->qmp = NULL;
  close_handle(&q->serial);
  close_handle(&q->exit_poll);
  close_handle(&q->exit_timer);
  close_handle(&q->timer);
  if (q->pidfd >= 0)
    close(q->pidfd);
  if (q->console_fd >= 0)
    close(q->console_fd);
  q->pidfd = q->console_fd = -1;
  q->pid = 0;
  q->line_len = 0;
  q->quit_sent = false;
}

static void save_free(qvm *q);

static void qemu_release(jitsu_vm *vm) {
  qvm *q = jitsu_vm_data(vm);
  if (q == NULL)
    return;
  qemu_pool_drain(q);
  qemu_instance_drop(q); /* a live QEMU keeps running, for adoption */
  save_free(q);
  qemu_free(q);
  jitsu_vm_set_data(vm, NULL);
}

void qemu_kill_now(qvm *q) {
  if (q->pid > 0)
    kill(q->pid, SIGKILL);
}

static void timer_fired_kill(uv_timer_t *t) {
  qvm *q = t->data;
  if (q == NULL || q->pid <= 0)
    return;
  jitsu_vm_log(q->vm, JITSU_LOG_WARNING, "QEMU did not quit: killing it");
  qemu_kill_now(q);
}

static void quit_replied(void *arg, json_t *ret, const char *error) {
  (void)arg, (void)ret, (void)error; /* the exit tells */
}

/* Ask QEMU to quit; kill it if it has not after a while. */
static void quit_then_kill(qvm *q) {
  if (q->quit_sent || q->pid <= 0)
    return;
  q->quit_sent = true;
  if (q->qmp == NULL ||
      qmp_send(q->qmp, "quit", NULL, -1, QMP_TIMEOUT_MS, quit_replied, q) < 0)
    qemu_kill_now(q);
  if (q->timer != NULL)
    uv_timer_start(q->timer, timer_fired_kill, KILL_AFTER_QUIT_MS, 0);
}

static void describe_exit(qvm *q, char *how, size_t size, int *clean) {
  siginfo_t si;
  char msg[200];
  qemu_last_message(q, msg, sizeof(msg));
  bool stopping = q->op == QOP_STOP || q->op == QOP_SUSPEND_DISK;
  const char *sr = q->shutdown_reason;
  bool guest_off = strcmp(sr, "guest-shutdown") == 0;
  /* Reap it if it is our child: spawned here, or adopted by a context of
   * this same process (waitid fails with ECHILD otherwise). */
  if (jitsu__reap(q->pid, q->pidfd, &si) == 0 && si.si_pid != 0) {
    if (si.si_code == CLD_EXITED && si.si_status == 0) {
      if (guest_off)
        snprintf(how, size, "the guest powered off");
      else if (strncmp(sr, "host-", 5) == 0)
        snprintf(how, size, "QEMU quit (%s)", sr);
      else if (sr[0])
        snprintf(how, size, "QEMU stopped: %s", sr);
      else
        snprintf(how, size, "QEMU exited");
      *clean = stopping || guest_off;
    } else if (si.si_code == CLD_EXITED) {
      snprintf(how, size, "QEMU exited with status %d%s%s", si.si_status,
               msg[0] ? ": " : "", msg);
      *clean = 0;
    } else {
      snprintf(how, size, "QEMU killed by signal %d (%s)", si.si_status,
               strsignal(si.si_status));
      *clean = stopping;
    }
    return;
  }
  snprintf(how, size, "QEMU exited%s%s", sr[0] ? ": " : "", sr);
  *clean = stopping || guest_off;
}

static void exit_seen(qvm *q) {
  if (q->spare != QSPARE_NO) {
    qemu_pool_spare_exited(q);
    return;
  }
  char how[300];
  int clean = 0;
  describe_exit(q, how, sizeof(how), &clean);
  qop op = q->op;
  q->op = QOP_NONE;
  qemu_record_remove(q);
  qemu_instance_drop(q);
  save_free(q); /* an unfinished image is removed */
  q->shutdown_reason[0] = '\0';
  jitsu_vm *vm = q->vm;
  char path[600];
  if (op == QOP_SUSPEND_DISK && q->suspended_disk) {
    jitsu_backend_suspended(vm, 0);
    return;
  }
  if (op == QOP_RESUME_DISK && suspend_image(q, path, sizeof(path)) == 0) {
    unlink(path); /* failed means no guest: its saved state goes too */
    q->suspended_disk = false;
  }
  jitsu_backend_exited(vm, clean, how);
}

static void exit_readable(uv_poll_t *h, int status, int events) {
  (void)status, (void)events;
  if (h->data != NULL)
    exit_seen(h->data);
}

static void exit_timer_fired(uv_timer_t *t) {
  qvm *q = t->data;
  if (q != NULL && jitsu__pid_ended(q->pid, q->starttime))
    exit_seen(q);
}

/* Watch for the end of QEMU: its pidfd turns readable, or without one a
 * look every 20 ms. */
static int watch_exit(qvm *q, uv_loop_t *loop) {
  if (q->pidfd < 0) {
    q->exit_timer = calloc(1, sizeof(*q->exit_timer));
    if (q->exit_timer == NULL)
      return -ENOMEM;
    uv_timer_init(loop, q->exit_timer);
    q->exit_timer->data = q;
    return uv_timer_start(q->exit_timer, exit_timer_fired, 20, 20);
  }
  q->exit_poll = calloc(1, sizeof(*q->exit_poll));
  if (q->exit_poll == NULL)
    return -ENOMEM;
  int r = uv_poll_init(loop, q->exit_poll, q->pidfd);
  if (r < 0) {
    free(q->exit_poll);
    q->exit_poll = NULL;
    return r;
  }
  q->exit_poll->data = q;
  return uv_poll_start(q->exit_poll, UV_READABLE, exit_readable);
}

/* ---- serial console ----------------------------------------------------- */

static void serial_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  static char bytes[4096]; /* consumed before the next read */
  (void)h, (void)hint;
  *buf = uv_buf_init(bytes, sizeof(bytes));
}

static void serial_line(qvm *q) {
  q->line[q->line_len] = '\0';
  if (strstr(q->line, q->marker) != NULL) {
    if (q->spare != QSPARE_NO)
      qemu_pool_spare_marker(q);
    else
      jitsu_backend_marker(q->vm);
  }
  q->line_len = 0;
}

static void serial_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  qvm *q = s->data;
  if (q == NULL || n == 0)
    return;
  if (n < 0) {
    close_handle(&q->serial);
    return;
  }
  if (q->console_fd >= 0 && write(q->console_fd, buf->base, (size_t)n) < 0) {
    close(q->console_fd); /* the log is best effort */
    q->console_fd = -1;
  }
  for (ssize_t i = 0; i < n; i++) {
    char c = buf->base[i];
    if (c == '\n') {
      serial_line(q);
    } else if (c != '\r') {
      if (q->line_len + 1 >= sizeof(q->line))
        serial_line(q); /* a long line is matched in pieces */
      q->line[q->line_len++] = c;
    }
  }
}

/* QEMU greets on its monitor once it has set its machine up: under TCG
 * on a busy host that can take several seconds, and a monitor given up on
 * is lost for the guest's life (no suspend, no clean quit). An adoption
 * asks a QEMU that is already up: it gets QMP_TIMEOUT_MS. */
#define QMP_GREETING_MS 30000

static int watch(qvm *q, int qmp_fd, int serial_fd, uint64_t greeting_ms) {
  uv_loop_t *loop = jitsu_ctx_loop(jitsu_vm_ctx(q->vm));
  q->timer = calloc(1, sizeof(*q->timer));
  int r = q->timer == NULL ? -ENOMEM : 0;
  if (r == 0) {
    uv_timer_init(loop, q->timer);
    q->timer->data = q;
    r = watch_exit(q, loop);
  }
  if (r < 0) {
    close_handle(&q->timer);
    close(qmp_fd);
    if (serial_fd >= 0)
      close(serial_fd);
    return r;
  }
  if (serial_fd >= 0) {
    char path[600];
    if (qemu_path(q, "console", path, sizeof(path)) == 0) {
      struct stat st;
      int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW;
      if (stat(path, &st) == 0 && st.st_size > 8 * 1024 * 1024)
        flags |= O_TRUNC;
      q->console_fd = open(path, flags, 0600);
    }
    q->serial = calloc(1, sizeof(*q->serial));
    if (q->serial == NULL || uv_pipe_init(loop, q->serial, 0) < 0 ||
        uv_pipe_open(q->serial, serial_fd) < 0) {
      free(q->serial);
      q->serial = NULL;
      close(serial_fd);
    } else {
      q->serial->data = q;
      uv_read_start((uv_stream_t *)q->serial, serial_alloc, serial_read);
    }
  }
  q->qmp = qmp_open(loop, qmp_fd, &handlers, q, greeting_ms);
  return q->qmp ? 0 : -ENOMEM;
}

/* ---- QMP flows ------------------------------------------------------------
 */

/* A QMP command of ours failed in (op): say why, and end QEMU. */
void qemu_op_failed(qvm *q, const char *what, const char *error) {
  jitsu_vm *vm = q->vm;
  qop op = q->op;
  if (q->spare != QSPARE_NO) { /* not the vm's guest: its exit refills */
    jitsu_vm_log(vm, JITSU_LOG_WARNING, "pool: %s: %s: %s", q->tag, what,
                 error);
    quit_then_kill(q);
    return;
  }
  jitsu_vm_log(vm, JITSU_LOG_ERROR, "%s: %s", what, error);
  if (op == QOP_SUSPEND_MEM || op == QOP_RESUME_MEM) {
    q->op = QOP_NONE;
    jitsu_vm_set_reason(vm, "%s: %s", what, error);
    if (op == QOP_SUSPEND_MEM)
      jitsu_backend_suspended(vm, -EIO);
    else
      jitsu_backend_resumed(vm, -EIO);
    return;
  }
  if (op == QOP_SUSPEND_DISK) { /* keep running: the suspend failed */
    q->op = QOP_NONE;
    jitsu_vm_set_reason(vm, "%s: %s", what, error);
    qmp_send(q->qmp, "cont", NULL, -1, QMP_TIMEOUT_MS, NULL, NULL);
    jitsu_backend_suspended(vm, -EIO);
    return;
  }
  /* Starting or restoring: the exit reports it, with this reason. */
  snprintf(q->shutdown_reason, sizeof(q->shutdown_reason), "%s", what);
  jitsu_vm_set_reason(vm, "%s: %s", what, error);
  quit_then_kill(q);
}

static void restored_running(void *arg, json_t *ret, const char *error) {
  qvm *q = arg;
  if (ret == NULL) {
    qemu_op_failed(q, "cannot continue the restored guest", error);
    return;
  }
  char path[600];
  if (q->op == QOP_START) {
    q->op = QOP_NONE;
    jitsu_vm *vm = q->vm;
    jitsu_backend_started(vm, 0);
    jitsu_backend_marker(vm); /* it was shown before the image was made */
  } else if (q->op == QOP_RESUME_DISK) {
    q->op = QOP_NONE;
    q->suspended_disk = false;
    if (suspend_image(q, path, sizeof(path)) == 0)
      unlink(path);
    jitsu_backend_resumed(q->vm, 0);
  }
}

static void incoming_status(void *arg, json_t *ret, const char *error);

static void poll_incoming(uv_timer_t *t) {
  qvm *q = t->data;
  if (q != NULL && q->qmp != NULL)
    qmp_send(q->qmp, "query-status", NULL, -1, QMP_TIMEOUT_MS, incoming_status,
             q);
}

static void incoming_status(void *arg, json_t *ret, const char *error) {
  qvm *q = arg;
  if (q->op != QOP_START && q->op != QOP_RESUME_DISK)
    return;
  if (ret == NULL) {
    qemu_op_failed(q, "cannot read QEMU's status", error);
    return;
  }
  const char *st = json_string_value(json_object_get(ret, "status"));
  if (st != NULL && strcmp(st, "inmigrate") == 0) {
    uv_timer_start(q->timer, poll_incoming, MIGRATE_POLL_MS, 0);
    return;
  }
  if (q->spare != QSPARE_NO) {
    qemu_pool_spare_restored(q); /* it waits, paused, to be taken */
    return;
  }
  qmp_send(q->qmp, "cont", NULL, -1, QMP_TIMEOUT_MS, restored_running, q);
}

static void incoming_begun(void *arg, json_t *ret, const char *error) {
  qvm *q = arg;
  if (q->op != QOP_START && q->op != QOP_RESUME_DISK)
    return;
  if (ret == NULL) {
    qemu_op_failed(q, "cannot restore the saved state", error);
    return;
  }
  poll_incoming(q->timer);
}

static void qmp_opened(void *arg) {
  qvm *q = arg;
  if ((q->op == QOP_START && q->from_image) || q->op == QOP_RESUME_DISK) {
    json_t *a = json_pack("{s:s}", "uri", "fd:6");
    qmp_send(q->qmp, "migrate-incoming", a, -1, QMP_TIMEOUT_MS, incoming_begun,
             q);
    json_decref(a);
  }
}

static void qmp_event(void *arg, const char *name, json_t *data) {
  qvm *q = arg;
  if (strcmp(name, "SHUTDOWN") == 0) {
    const char *r = json_string_value(json_object_get(data, "reason"));
    if (r != NULL && q->shutdown_reason[0] == '\0')
      snprintf(q->shutdown_reason, sizeof(q->shutdown_reason), "%s", r);
  } else if (strcmp(name, "STOP") == 0 || strcmp(name, "RESUME") == 0) {
    jitsu_vm_log(q->vm, JITSU_LOG_DEBUG, "QEMU: %s", name);
  }
}

static void qmp_closed(void *arg, const char *why) {
  qvm *q = arg;
  q->qmp = NULL; /* closed by qmp.c after this */
  if (q->pid <= 0)
    return;
  if (q->quit_sent)
    return; /* it is quitting: its exit follows */
  /* QEMU closes its monitor as it exits: after the guest powered off
   * (SHUTDOWN came), or on the way out of a stop we asked for. Its exit
   * follows and tells how it went; it is killed only if it does not come
   * (a clean power-off was reported as "killed by signal 9"). */
  if (q->shutdown_reason[0] != '\0' || q->op == QOP_STOP) {
    jitsu_vm_log(q->vm, JITSU_LOG_DEBUG, "QMP closed: %s", why);
    q->quit_sent = true;
    if (q->timer != NULL)
      uv_timer_start(q->timer, timer_fired_kill, KILL_AFTER_QUIT_MS, 0);
    return;
  }
  jitsu_vm_log(q->vm, JITSU_LOG_WARNING, "QMP: %s", why);
  if (q->op != QOP_NONE) {
    /* Whatever was under way cannot finish: end QEMU, the exit reports. */
    if (q->shutdown_reason[0] == '\0')
      snprintf(q->shutdown_reason, sizeof(q->shutdown_reason),
               "monitor lost: %s", why);
    jitsu_vm_set_reason(q->vm, "QEMU's monitor: %s", why);
    qemu_kill_now(q);
  }
}

/* ---- verbs ------------------------------------------------------------------
 */

/* The snapshot image fits this configuration (its fingerprint matches). */
bool qemu_image_fits(qvm *q) {
  char meta[PATH_MAX + 8];
  snprintf(meta, sizeof(meta), "%s.args", q->snapshot);
  char *want = qemu_describe_args(q);
  bool ok = jitsu__file_holds(meta, want);
  if (!ok && want != NULL)
    jitsu_vm_log(q->vm, JITSU_LOG_WARNING,
                 "snapshot image %s was made for another configuration "
                 "(see %s): booting instead",
                 q->snapshot, meta);
  free(want);
  return ok;
}

int qemu_launch(qvm *q, qop op, const char *image) {
  jitsu_vm *vm = q->vm;
  int image_fd = -1, qmp_fd = -1, serial_fd = -1;
  if (image != NULL && (image_fd = open(image, O_RDONLY | O_CLOEXEC)) < 0) {
    int e = -errno;
    jitsu_vm_set_reason(vm, "cannot open the saved image %s: %s", image,
                        strerror(-e));
    return e;
  }
  q->op = op;
  q->shutdown_reason[0] = '\0';
  q->quit_sent = false;
  int r = qemu_spawn(q, image_fd, &qmp_fd, &serial_fd);
  if (image_fd >= 0)
    close(image_fd);
  if (r < 0) {
    q->op = QOP_NONE;
    return r;
  }
  r = watch(q, qmp_fd, serial_fd, QMP_GREETING_MS);
  if (r < 0) {
    qemu_kill_now(q);
    jitsu_vm_set_reason(vm, "cannot watch QEMU: %s", strerror(-r));
    return r; /* the exit is still watched when the poll exists */
  }
  return 0;
}

/* The host side of each forward must be free before QEMU (or a taken
 * spare) binds it: something that listens there already, a guest left by
 * an earlier run or another program, would answer the vm's readiness
 * check in its guest's place, and QEMU refuses the rule only later. 0, or
 * -EADDRINUSE with the reason set. */
static int forwards_free(qvm *q) {
  const char *fw;
  for (size_t i = 0; (fw = jitsu_vm_param(q->vm, "forward", i)) != NULL; i++) {
    const char *dash = strchr(fw + 4, '-');
    const char *colon =
        dash ? memrchr(fw + 4, ':', (size_t)(dash - fw - 4)) : NULL;
    char host[64];
    if (colon == NULL || (size_t)(colon - fw - 4) >= sizeof(host))
      continue; /* checked when the config loaded */
    memcpy(host, fw + 4, (size_t)(colon - fw - 4));
    host[colon - fw - 4] = '\0';
    unsigned port = (unsigned)strtoul(colon + 1, NULL, 10);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port)};
    if (port == 0 ||
        (host[0] != '\0' && inet_pton(AF_INET, host, &sin.sin_addr) != 1))
      continue; /* QEMU says what it makes of it */
    bool udp = strncmp(fw, "udp:", 4) == 0;
    int fd =
        socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
    if (fd < 0)
      continue;
    int one = 1; /* as QEMU binds it: a closing connection does not count */
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    bool busy = bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 &&
                errno == EADDRINUSE;
    close(fd);
    if (busy) {
      jitsu_vm_set_reason(q->vm,
                          "forward %s: %s port %s:%u is in use already (a "
                          "guest left by an earlier run, or another program?)",
                          fw, udp ? "UDP" : "TCP", host[0] ? host : "*", port);
      return -EADDRINUSE;
    }
  }
  return 0;
}

static int qemu_start(jitsu_vm *vm) {
  qvm *q = jitsu_vm_data(vm);
  int busy = qemu_pool_holds(q) ? 0 : forwards_free(q); /* a spare has them */
  if (busy < 0)
    return busy;
  if (qemu_pool_take(q))
    return 0; /* a spare runs on: started is reported when it does */
  if (access(q->kernel, R_OK) < 0) {
    int e = -errno;
    jitsu_vm_set_reason(vm, "cannot read the kernel %s: %s", q->kernel,
                        strerror(-e));
    return e;
  }
  if (q->initrd != NULL && access(q->initrd, R_OK) < 0) {
    int e = -errno;
    jitsu_vm_set_reason(vm, "cannot read the initrd %s: %s", q->initrd,
                        strerror(-e));
    return e;
  }
  q->from_image = file_exists(q->snapshot) && qemu_image_fits(q);
  int r = qemu_launch(q, QOP_START, q->from_image ? q->snapshot : NULL);
  if (r == 0 && !q->from_image) {
    /* A boot needs nothing from QMP before it is ready: readiness checks
     * begin now (commands queue until the handshake is done). */
    q->op = QOP_NONE;
    jitsu_backend_started(vm, 0);
  }
  return r;
}

static void grace_expired(uv_timer_t *t) {
  qvm *q = t->data;
  if (q == NULL || q->pid <= 0)
    return;
  jitsu_vm_log(q->vm, JITSU_LOG_INFO,
               "still running after its stop grace: quitting QEMU");
  quit_then_kill(q);
}

static int qemu_stop(jitsu_vm *vm, jitsu_stop_mode mode, uint64_t grace_ms) {
  qvm *q = jitsu_vm_data(vm);
  if (q->pid <= 0 && q->suspended_disk) {
    char path[600];
    if (suspend_image(q, path, sizeof(path)) == 0)
      unlink(path);
    q->suspended_disk = false;
    jitsu_backend_exited(vm, 1, "its saved state was removed");
    return 0;
  }
  if (q->pid <= 0)
    return -ESRCH;
  q->op = QOP_STOP;
  if (mode == JITSU_STOP_DESTROY || q->qmp == NULL) {
    quit_then_kill(q);
    return 0;
  }
  if (q->quit_sent)
    return 0;
  uv_timer_start(q->timer, grace_expired, grace_ms, 0);
  if (qmp_send(q->qmp, "system_powerdown", NULL, -1, QMP_TIMEOUT_MS, NULL,
               NULL) < 0)
    quit_then_kill(q);
  return 0;
}

/* QMP stop (suspend in memory) or cont (resume) answered. */
static void toggled(void *arg, json_t *ret, const char *error) {
  qvm *q = arg;
  qop op = q->op;
  if (op != QOP_SUSPEND_MEM && op != QOP_RESUME_MEM)
    return; /* a stop overtook it */
  if (ret == NULL) {
    qemu_op_failed(
        q, op == QOP_SUSPEND_MEM ? "QMP stop failed" : "QMP cont failed",
        error);
    return;
  }
  q->op = QOP_NONE;
  if (op == QOP_SUSPEND_MEM)
    jitsu_backend_suspended(q->vm, 0);
  else
    jitsu_backend_resumed(q->vm, 0);
}

static int qemu_suspend(jitsu_vm *vm);

static int qemu_resume(jitsu_vm *vm) {
  qvm *q = jitsu_vm_data(vm);
  if (q->suspended_disk) {
    char path[600];
    int r = suspend_image(q, path, sizeof(path));
    return r < 0 ? r : qemu_launch(q, QOP_RESUME_DISK, path);
  }
  if (q->qmp == NULL)
    return -ENOTCONN;
  q->op = QOP_RESUME_MEM;
  return qmp_send(q->qmp, "cont", NULL, -1, QMP_TIMEOUT_MS, toggled, q);
}

/* ---- saving: suspend to disk and snapshot images ----------------------------
 */

typedef struct qsave {
  qvm *q;
  bool keep_running; /* a snapshot: continue afterwards */
  int fd;
  char tmp[PATH_MAX + 8], final[PATH_MAX];
  uint64_t begun_ms;
} qsave;

static void save_free(qvm *q) {
  qsave *s = q->save;
  if (s == NULL)
    return;
  if (s->fd >= 0)
    close(s->fd);
  if (s->tmp[0])
    unlink(s->tmp);
  free(s);
  q->save = NULL;
}

/* Report the snapshot (its error in q->snap_why, "" if none). */
static void snapshot_report(qvm *q) {
  const char *error = q->snap_why[0] ? q->snap_why : NULL;
  if (error != NULL)
    jitsu_vm_set_reason(q->vm, "snapshot failed: %s", error);
  jitsu_backend_snapshotted(q->vm, error ? -EIO : 0);
}

/* QEMU answered the "cont" after a snapshot: only now is the guest
 * running again (a controller killed before would leave it paused). */
static void snapshot_continued(void *arg, json_t *ret, const char *error) {
  qvm *q = arg;
  if (ret == NULL && q->snap_why[0] == '\0')
    snprintf(q->snap_why, sizeof(q->snap_why), "cannot continue the guest: %s",
             error ? error : "no answer");
  snapshot_report(q);
}

/* The save ended with (error) (NULL: it worked). */
static void save_done(qvm *q, const char *error) {
  qsave *s = q->save;
  jitsu_vm *vm = q->vm;
  if (s == NULL)
    return;
  if (error == NULL && rename(s->tmp, s->final) < 0)
    error = strerror(errno);
  if (error == NULL)
    s->tmp[0] = '\0';
  bool keep = s->keep_running;
  if (keep && error == NULL) {
    char meta[PATH_MAX + 8];
    snprintf(meta, sizeof(meta), "%s.args", s->final);
    char *args = qemu_describe_args(q);
    if (!jitsu__file_put(meta, args))
      error = "cannot write the image's fingerprint";
    else
      jitsu_vm_log(
          vm, JITSU_LOG_INFO, "snapshot image saved to %s in %llu ms", s->final,
          (unsigned long long)(uv_now(jitsu_ctx_loop(jitsu_vm_ctx(vm))) -
                               s->begun_ms));
    free(args);
  }
  save_free(q);
  if (keep) {
    snprintf(q->snap_why, sizeof(q->snap_why), "%s", error ? error : "");
    if (q->qmp == NULL || qmp_send(q->qmp, "cont", NULL, -1, QMP_TIMEOUT_MS,
                                   snapshot_continued, q) < 0) {
      if (q->snap_why[0] == '\0')
        snprintf(q->snap_why, sizeof(q->snap_why), "cannot continue the guest");
      snapshot_report(q);
    }
    return;
  }
  if (error != NULL) {
    qemu_op_failed(q, "cannot save the guest", error);
    return;
  }
  q->suspended_disk = true; /* the exit completes the suspend */
  quit_then_kill(q);
}

static void migrate_status(void *arg, json_t *ret, const char *error);

static void poll_migrate(uv_timer_t *t) {
  qvm *q = t->data;
  if (q != NULL && q->qmp != NULL && q->save != NULL)
    qmp_send(q->qmp, "query-migrate", NULL, -1, QMP_TIMEOUT_MS, migrate_status,
             q);
}

static void migrate_status(void *arg, json_t *ret, const char *error) {
  qvm *q = arg;
  if (q->save == NULL)
    return;
  if (ret == NULL) {
    save_done(q, error);
    return;
  }
  const char *st = json_string_value(json_object_get(ret, "status"));
  const char *why = json_string_value(json_object_get(ret, "error-desc"));
  if (st != NULL && strcmp(st, "completed") == 0)
    save_done(q, NULL);
  else if (st != NULL &&
           (strcmp(st, "failed") == 0 || strcmp(st, "cancelled") == 0))
    save_done(q, why ? why : "migration failed");
  else if (uv_now(jitsu_ctx_loop(jitsu_vm_ctx(q->vm))) - q->save->begun_ms >
           MIGRATE_TIMEOUT_MS)
    save_done(q, "the save took too long");
  else
    uv_timer_start(q->timer, poll_migrate, MIGRATE_POLL_MS, 0);
}

static void save_step(void *arg, json_t *ret, const char *error) {
  qvm *q = arg;
  if (q->save == NULL)
    return;
  if (ret == NULL)
    save_done(q, error);
}

static void migrate_begun(void *arg, json_t *ret, const char *error) {
  qvm *q = arg;
  if (q->save == NULL)
    return;
  if (ret == NULL) {
    save_done(q, error);
    return;
  }
  poll_migrate(q->timer);
}

/* Pause, then write the guest's state to (path) with a migration to a
 * descriptor (QEMU 7.2 has no file: URI), bandwidth unlimited. */
static int save_begin(qvm *q, const char *path, bool keep_running) {
  if (q->qmp == NULL)
    return -ENOTCONN;
  if (q->save != NULL)
    return -EBUSY;
  qsave *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return -ENOMEM;
  s->q = q;
  s->keep_running = keep_running;
  snprintf(s->final, sizeof(s->final), "%s", path);
  snprintf(s->tmp, sizeof(s->tmp), "%s.tmp", path);
  s->fd = open(s->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (s->fd < 0) {
    int e = -errno;
    jitsu_vm_set_reason(q->vm, "cannot write %s: %s", s->tmp, strerror(-e));
    s->tmp[0] = '\0';
    free(s);
    return e;
  }
  s->begun_ms = uv_now(jitsu_ctx_loop(jitsu_vm_ctx(q->vm)));
  q->save = s;
  json_t *bw = json_pack("{s:I}", "max-bandwidth", (json_int_t)1 << 40);
  json_t *fdname = json_pack("{s:s}", "fdname", "jitsu-save");
  json_t *uri = json_pack("{s:s}", "uri", "fd:jitsu-save");
  int r = qmp_send(q->qmp, "stop", NULL, -1, QMP_TIMEOUT_MS, save_step, q);
  if (r == 0)
    r = qmp_send(q->qmp, "migrate-set-parameters", bw, -1, QMP_TIMEOUT_MS,
                 save_step, q);
  if (r == 0)
    r = qmp_send(q->qmp, "getfd", fdname, s->fd, QMP_TIMEOUT_MS, save_step, q);
  if (r == 0)
    r = qmp_send(q->qmp, "migrate", uri, -1, QMP_TIMEOUT_MS, migrate_begun, q);
  json_decref(bw);
  json_decref(fdname);
  json_decref(uri);
  close(s->fd);
  s->fd = -1;
  if (r < 0) {
    save_free(q);
    return r;
  }
  return 0;
}

static int qemu_suspend(jitsu_vm *vm) {
  qvm *q = jitsu_vm_data(vm);
  if (q->qmp == NULL)
    return -ENOTCONN;
  if (q->save != NULL) {
    jitsu_vm_set_reason(vm, "a snapshot is being saved");
    return -EBUSY;
  }
  if (!q->suspend_disk) {
    q->op = QOP_SUSPEND_MEM;
    return qmp_send(q->qmp, "stop", NULL, -1, QMP_TIMEOUT_MS, toggled, q);
  }
  char path[600];
  int r = suspend_image(q, path, sizeof(path));
  if (r < 0)
    return r;
  q->op = QOP_SUSPEND_DISK;
  r = save_begin(q, path, false);
  if (r < 0)
    q->op = QOP_NONE;
  return r;
}

static int qemu_snapshot(jitsu_vm *vm) {
  qvm *q = jitsu_vm_data(vm);
  if (q->snapshot == NULL) {
    jitsu_vm_set_reason(vm, "vm '%s' names no snapshot image (key snapshot)",
                        jitsu_vm_name(vm));
    return -EINVAL;
  }
  if (q->op != QOP_NONE || q->save != NULL) {
    jitsu_vm_set_reason(vm, "the guest is busy");
    return -EBUSY;
  }
  return save_begin(q, q->snapshot, true);
}

static void qemu_state_changed(jitsu_vm *vm, jitsu_state old_state,
                               jitsu_state new_state) {
  qvm *q = jitsu_vm_data(vm);
  (void)old_state;
  if (new_state == JITSU_STATE_STOPPED || new_state == JITSU_STATE_FAILED) {
    qemu_pool_hold(q); /* its forwards are free */
    qemu_pool_fill(q); /* the next summon takes a spare again */
  } else if (new_state == JITSU_STATE_READY)
    qemu_pool_fill_after(q, QEMU_POOL_AFTER_READY_MS); /* after a take */
  /* The first boot that reaches ready makes the image, when asked. */
  if (new_state == JITSU_STATE_READY && q->snapshot_auto && !q->from_image &&
      q->save == NULL && !file_exists(q->snapshot) &&
      save_begin(q, q->snapshot, true) == 0)
    jitsu_vm_log(vm, JITSU_LOG_INFO, "saving the snapshot image %s",
                 q->snapshot);
}

/* ---- adoption
 * ------------------------------------------------------------------ */

/* The adopted QEMU's answer to query-status. */
static void adopt_status(void *arg, json_t *ret, const char *error) {
  qvm *q = arg;
  if (q->op != QOP_ADOPT)
    return; /* a stop overtook it */
  const char *st = json_string_value(json_object_get(ret, "status"));
  if (st == NULL) {
    jitsu_vm_log(q->vm, JITSU_LOG_ERROR,
                 "QEMU (pid %d) is running but its monitor does not answer "
                 "(%s): killing it",
                 (int)q->pid, error != NULL ? error : "no status");
    q->op = QOP_STOP; /* its exit reports: nothing adopted */
    snprintf(q->shutdown_reason, sizeof(q->shutdown_reason),
             "killed: its monitor did not answer");
    qemu_kill_now(q);
    return;
  }
  q->op = QOP_NONE;
  jitsu_vm_log(q->vm, JITSU_LOG_INFO,
               "adopted QEMU pid %d (%s); its console is not followed",
               (int)q->pid, st);
  jitsu_backend_adopted(q->vm,
                        strcmp(st, "running") == 0 ? JITSU_STATE_READY
                                                   : JITSU_STATE_SUSPENDED,
                        st);
}

int qemu_watch_live(qvm *q) {
  int fd = qemu_connect_qmp(q);
  return fd < 0 ? fd : watch(q, fd, -1, QMP_TIMEOUT_MS);
}

/* A live QEMU is asked its status over its monitor on the loop (a hung
 * one must not hold the definition up): the vm is starting until it
 * answers, or is killed when it does not within QMP_TIMEOUT_MS. */
static int qemu_adopt(jitsu_vm *vm, jitsu_state *state) {
  qvm *q = jitsu_vm_data(vm);
  char path[600];
  qemu_pool_adopt(q);
  if (qemu_record_adopt(q) <= 0) {
    if (suspend_image(q, path, sizeof(path)) == 0 && file_exists(path)) {
      q->suspended_disk = true;
      *state = JITSU_STATE_SUSPENDED;
      return 1;
    }
    return 0;
  }
  int r = qemu_watch_live(q);
  if (r < 0 || qmp_send(q->qmp, "query-status", NULL, -1, QMP_TIMEOUT_MS,
                        adopt_status, q) < 0) {
    jitsu_vm_log(vm, JITSU_LOG_ERROR,
                 "QEMU (pid %d) is running but its monitor cannot be "
                 "reached (%s): killing it",
                 (int)q->pid, strerror(r < 0 ? -r : ENOMEM));
    kill(q->pid, SIGKILL);
    qemu_instance_drop(q);
    qemu_record_remove(q);
    return 0;
  }
  q->op = QOP_ADOPT;
  *state = JITSU_STATE_STARTING;
  return 1;
}

/* A definition, or a reload's, is in place: its pool fills from the loop. */
static int qemu_attach(jitsu_vm *vm, jitsu_error *err) {
  (void)err;
  qemu_pool_fill(jitsu_vm_data(vm));
  return 0;
}

uint64_t qemu_rss(pid_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
  FILE *f = fopen(path, "r");
  unsigned long long total = 0, resident = 0;
  int n = f ? fscanf(f, "%llu %llu", &total, &resident) : 0;
  if (f)
    fclose(f);
  return n == 2 ? resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

static void qemu_describe(jitsu_vm *vm, char *buf, size_t size) {
  qvm *q = jitsu_vm_data(vm);
  unsigned ready = 0;
  uint64_t rss = 0;
  for (unsigned i = 0; i < q->pool; i++) {
    qvm *s = q->spares[i];
    ready += s != NULL && s->spare == QSPARE_READY;
    rss += s != NULL && s->pid > 0 ? qemu_rss(s->pid) : 0;
  }
  if (q->pid > 0 && q->pool > 0)
    snprintf(buf, size,
             "qemu pid %d, pool %u/%u ready (resident %llu MiB), %llu taken",
             (int)q->pid, ready, q->pool, (unsigned long long)(rss >> 20),
             (unsigned long long)q->pool_takes);
  else if (q->pid > 0)
    snprintf(buf, size, "qemu pid %d", (int)q->pid);
  else if (q->suspended_disk)
    snprintf(buf, size, "saved to disk");
}

const jitsu_backend_ops jitsu_backend_qemu = {
    .version = JITSU_BACKEND_OPS_VERSION,
    .name = "qemu",
    .keys = qemu_keys,
    .n_keys = JITSU__ARRAY_SIZE(qemu_keys),
    .configure = qemu_configure,
    .release = qemu_release,
    .attach = qemu_attach,
    .adopt = qemu_adopt,
    .start = qemu_start,
    .stop = qemu_stop,
    .suspend = qemu_suspend,
    .resume = qemu_resume,
    .state_changed = qemu_state_changed,
    .describe = qemu_describe,
    .snapshot = qemu_snapshot,
};

JITSU__MODULE("qemu", &jitsu_backend_qemu, NULL);
