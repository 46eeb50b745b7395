/*
 * The xl backend: Xen domains through libxenlight's asynchronous API on
 * the library's loop. Start = create (left paused by libxl, unpaused once
 * readiness is being watched); shutdown = a PV shutdown request, destroy
 * after the grace; suspend = pause, or save to a file and destroy (resume
 * restores it). Readiness is a XenStore key the guest writes or a marker
 * on its console. Domain shutdowns and deaths come as libxl events.
 * Pools of paused spare domains are xl_pool.c's.
 */
#include "xl.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

static const jitsu_key xl_keys[] = {
    {"config", JITSU_KEY_STRING, 0,
     "an xl domain config file (instead of the keys below)"},
    {"type", JITSU_KEY_STRING, 0, "pv | pvh (pv)"},
    {"kernel", JITSU_KEY_STRING, 0, "the guest kernel"},
    {"ramdisk", JITSU_KEY_STRING, 0, "the initial ramdisk"},
    {"cmdline", JITSU_KEY_STRING, 0, "the kernel command line"},
    {"memory", JITSU_KEY_SIZE, 0, "guest memory, whole MiB (128M)"},
    {"maxmem", JITSU_KEY_SIZE, 0,
     "the most it may balloon to, whole MiB (= memory)"},
    {"vcpus", JITSU_KEY_UINT, 0, "virtual CPUs (1)"},
    {"vif", JITSU_KEY_STRING, JITSU_KEY_MULTI,
     "a network interface: bridge=BR,mac=MAC,script=PATH,ip=ADDR"},
    {"disk", JITSU_KEY_STRING, JITSU_KEY_MULTI, "a disk, in xl's disk syntax"},
    {"ready-key", JITSU_KEY_STRING, 0,
     "the marker is this XenStore key (under the domain's home) appearing"},
    {"console-marker", JITSU_KEY_STRING, 0,
     "the readiness marker on the console (JITSU_READY)"},
    {"suspend", JITSU_KEY_STRING, 0, "memory | disk (memory)"},
    {"pool", JITSU_KEY_UINT, 0,
     "spare domains kept paused at the ready point, 0 to 8 (0)"},
};

/* Operations in flight keep the xvm alive past release. */
static void pending_begin(xvm *x);
static bool pending_end(xvm *x); /* true: x was released and is now freed */

static void console_close(xvm *x);
static void watches_drop(xvm *x);
static void destroy_domain(xvm *x);
static void created(xvm *x, int rc);
static void destroy_released(xvm *x);

/* ---- helpers ------------------------------------------------------------ */

/* Why an operation of (x) could not begin: the vm's reason, or for a
 * spare a warning in the vm's log (a spare's failure is not the vm's). */
static void x_reason(xvm *x, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void x_reason(xvm *x, const char *fmt, ...) {
  char text[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  if (x->spare != XSPARE_NO)
    jitsu_vm_log(x->vm, JITSU_LOG_WARNING, "pool: %s: %s", x->tag, text);
  else
    jitsu_vm_set_reason(x->vm, "%s", text);
}

int xl_ensure_host(xvm *x) {
  if (x->host != NULL)
    return 0;
  char why[256] = "";
  x->host = xl_host_get(jitsu_vm_ctx(x->vm), why, sizeof(why));
  if (x->host == NULL) {
    x_reason(x, "xl: %s", why);
    return -ENODEV;
  }
  jitsu_list_append(&x->host->vms, &x->link);
  return 0;
}

/* libxl's own message for the last failure, else (fallback). */
const char *xl_libxl_why(xvm *x, const char *fallback) {
  return x->host->error[0] ? x->host->error : fallback;
}

typedef void (*ao_done)(xvm *x, int rc);

typedef struct aoreq {
  xvm *x;
  ao_done done;
} aoreq;

static void ao_callback(libxl_ctx *lx, int rc, void *arg) {
  aoreq *req = arg;
  xvm *x = req->x;
  ao_done done = req->done;
  free(req);
  if (x->doomed && done == created && rc == 0)
    destroy_released(x); /* a spare let go of while it was being made */
  if (pending_end(x))
    return;
  done(x, rc);
}

/* Fill (how) for an operation of (x) that ends in (done). */
static int ao_how(xvm *x, ao_done done, libxl_asyncop_how *how) {
  aoreq *req = malloc(sizeof(*req));
  if (req == NULL)
    return -ENOMEM;
  req->x = x;
  req->done = done;
  how->callback = ao_callback;
  how->u.for_callback = req;
  pending_begin(x);
  xl_host_clear_error(x->host);
  return 0;
}

/* The initiating call failed: the callback will not come. */
static void ao_abandon(xvm *x, libxl_asyncop_how *how) {
  free(how->u.for_callback);
  pending_end(x);
}

int xl_ao_how(xvm *x, void (*done)(xvm *x, int rc), libxl_asyncop_how *how) {
  return ao_how(x, done, how);
}

void xl_ao_abandon(xvm *x, libxl_asyncop_how *how) {
  ao_abandon(x, how);
}

/* ---- the domain ends ---------------------------------------------------- */

static void domain_gone(xvm *x) {
  if (!x->live)
    return;
  x->live = false;
  if (x->death != NULL) {
    libxl_evdisable_domain_death(x->host->lx, x->death);
    x->death = NULL;
  }
  console_close(x);
  watches_drop(x);
  xl_conduit_forget(x->host, x->domid);
  if (x->timer != NULL)
    uv_timer_stop(x->timer);
  jitsu_vm *vm = x->vm;
  xop op = x->op;
  x->op = XOP_NONE;
  if (x->spare != XSPARE_NO) {
    xl_pool_spare_gone(x); /* (x) is freed */
    return;
  }
  if (op == XOP_SUSPEND_DISK) {
    x->suspended_disk = true;
    jitsu_backend_suspended(vm, 0);
    return;
  }
  bool clean = x->exit_clean || op == XOP_STOP;
  const char *how = x->exit_how[0]   ? x->exit_how
                    : op == XOP_STOP ? "destroyed"
                                     : "destroyed from outside";
  char text[128];
  snprintf(text, sizeof(text), "%s", how);
  x->exit_how[0] = '\0';
  x->exit_clean = false;
  jitsu_backend_exited(vm, clean, text);
}

static void destroyed(xvm *x, int rc) {
  x->destroying = false;
  if (rc != 0) {
    jitsu_vm_log(x->vm, JITSU_LOG_ERROR, "cannot destroy domain %u: %s",
                 x->domid, xl_libxl_why(x, "libxl_domain_destroy failed"));
    return;
  }
  domain_gone(x);
}

void xl_destroy_domain(xvm *x) {
  destroy_domain(x);
}

static void destroy_domain(xvm *x) {
  if (!x->live || x->destroying)
    return;
  libxl_asyncop_how how;
  if (ao_how(x, destroyed, &how) < 0)
    return;
  x->destroying = true;
  int rc = libxl_domain_destroy(x->host->lx, x->domid, &how);
  if (rc != 0) {
    x->destroying = false;
    ao_abandon(x, &how);
    jitsu_vm_log(x->vm, JITSU_LOG_ERROR, "cannot destroy domain %u: %s",
                 x->domid, xl_libxl_why(x, "libxl_domain_destroy failed"));
  }
}

void xl_domain_event(xvm *x, libxl_event *ev) {
  if (ev->type == LIBXL_EVENT_TYPE_DOMAIN_DEATH) {
    domain_gone(x);
    return;
  }
  if (ev->type != LIBXL_EVENT_TYPE_DOMAIN_SHUTDOWN)
    return;
  int reason = ev->u.domain_shutdown.shutdown_reason;
  if (reason == LIBXL_SHUTDOWN_REASON_SUSPEND && x->op == XOP_SUSPEND_DISK)
    return; /* our save: it destroys the domain when the image is written */
  switch (reason) {
  case LIBXL_SHUTDOWN_REASON_POWEROFF:
    snprintf(x->exit_how, sizeof(x->exit_how), "powered off");
    x->exit_clean = true;
    break;
  case LIBXL_SHUTDOWN_REASON_REBOOT:
    snprintf(x->exit_how, sizeof(x->exit_how),
             "rebooted (a summon starts it again)");
    x->exit_clean = true;
    break;
  case LIBXL_SHUTDOWN_REASON_CRASH:
    snprintf(x->exit_how, sizeof(x->exit_how), "crashed");
    break;
  case LIBXL_SHUTDOWN_REASON_WATCHDOG:
    snprintf(x->exit_how, sizeof(x->exit_how), "its watchdog fired");
    break;
  default:
    snprintf(x->exit_how, sizeof(x->exit_how), "shut down (reason %d)", reason);
  }
  jitsu_vm_log(x->vm, JITSU_LOG_INFO, "%s%sdomain %u %s",
               x->spare != XSPARE_NO ? "pool: " : "", x->tag, x->domid,
               x->exit_how);
  destroy_domain(x); /* as xl does for on_poweroff = destroy */
}

/* ---- readiness: a XenStore key or the console -------------------------- */

static void console_close(xvm *x) {
  if (x->console != NULL) {
    x->console->data = NULL;
    uv_close((uv_handle_t *)x->console, jitsu__free_handle);
    x->console = NULL;
  }
  if (x->console_fd >= 0) {
    close(x->console_fd);
    x->console_fd = -1;
  }
  x->line_len = 0;
}

static void watches_drop(xvm *x) {
  if (x->watched_key[0]) {
    xl_unwatch(x, x->watched_key, "ready");
    x->watched_key[0] = '\0';
  }
  if (x->watched_tty[0]) {
    xl_unwatch(x, x->watched_tty, "tty");
    x->watched_tty[0] = '\0';
  }
}

static void unpaused(xvm *x, int rc) {
  if (rc != 0 && x->live)
    jitsu_vm_log(x->vm, JITSU_LOG_ERROR, "cannot unpause domain %u: %s",
                 x->domid, xl_libxl_why(x, "libxl_domain_unpause failed"));
}

static void unpause_new(xvm *x) {
  if (x->unpaused || !x->live)
    return;
  x->unpaused = true;
  libxl_asyncop_how how;
  if (ao_how(x, unpaused, &how) == 0 &&
      libxl_domain_unpause(x->host->lx, x->domid, &how) != 0) {
    ao_abandon(x, &how);
    unpaused(x, -1);
  }
}

static void console_line(xvm *x) {
  x->line[x->line_len] = '\0';
  if (strstr(x->line, x->marker) != NULL) {
    if (x->spare != XSPARE_NO) {
      console_close(x);
      xl_pool_spare_marker(x);
      return;
    }
    jitsu_vm *vm = x->vm;
    jitsu_backend_marker(vm);
    if (jitsu_vm_data(vm) == x) /* (x) is gone if vm was undefined */
      console_close(x);         /* the rest goes to xenconsoled's log */
  }
}

static void console_readable(uv_poll_t *p, int status, int events) {
  xvm *x = p->data;
  if (x == NULL)
    return;
  char buf[512];
  ssize_t n = read(x->console_fd, buf, sizeof(buf));
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      return;
    console_close(x);
    return;
  }
  for (ssize_t i = 0; i < n && x->console != NULL; i++) {
    if (buf[i] == '\n' || buf[i] == '\r' ||
        x->line_len == sizeof(x->line) - 1) {
      console_line(x);
      x->line_len = 0;
    } else {
      x->line[x->line_len++] = buf[i];
    }
  }
  if (x->console != NULL && x->line_len > 0)
    console_line(x); /* a marker without its newline yet */
}

static int console_open(xvm *x, const char *tty) {
  int fd = open(tty, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  struct termios t;
  if (tcgetattr(fd, &t) == 0) { /* no echo back into the guest */
    cfmakeraw(&t);
    tcsetattr(fd, TCSANOW, &t);
  }
  x->console = malloc(sizeof(*x->console));
  if (x->console == NULL || uv_poll_init(x->host->loop, x->console, fd) != 0) {
    free(x->console);
    x->console = NULL;
    close(fd);
    return -ENOMEM;
  }
  x->console_fd = fd;
  x->console->data = x;
  uv_poll_start(x->console, UV_READABLE, console_readable);
  return 0;
}

void xl_watch_fired(xvm *x, const char *what, const char *path) {
  if (!x->live)
    return;
  struct xs_handle *xs = x->host->xs;
  unsigned len = 0;
  if (strcmp(what, "ready") == 0 && x->watched_key[0] &&
      strcmp(path, x->watched_key) == 0) {
    char *v = xs_read(xs, XBT_NULL, path, &len);
    if (v == NULL)
      return;
    free(v);
    xl_unwatch(x, x->watched_key, "ready");
    x->watched_key[0] = '\0';
    if (x->spare != XSPARE_NO)
      xl_pool_spare_marker(x);
    else
      jitsu_backend_marker(x->vm);
  } else if (strcmp(what, "tty") == 0 && x->watched_tty[0] &&
             strcmp(path, x->watched_tty) == 0) {
    char *tty = xs_read(xs, XBT_NULL, path, &len);
    if (tty == NULL || tty[0] == '\0') {
      free(tty);
      return;
    }
    xl_unwatch(x, x->watched_tty, "tty");
    x->watched_tty[0] = '\0';
    int r = console_open(x, tty);
    if (r < 0)
      jitsu_vm_log(x->vm, JITSU_LOG_ERROR, "cannot open the console %s: %s",
                   tty, strerror(-r));
    free(tty);
    unpause_new(x); /* nothing it prints is lost now */
  }
}

/* The new domain exists (paused): watch for readiness, then let it run. */
void xl_readiness_begin(xvm *x) {
  x->unpaused = false;
  if (jitsu_vm_wants_marker(x->vm)) {
    char base[64];
    snprintf(base, sizeof(base), "/local/domain/%u", x->domid);
    if (x->ready_key != NULL) {
      snprintf(x->watched_key, sizeof(x->watched_key), "%s/%s", base,
               x->ready_key);
      if (xl_watch(x, x->watched_key, "ready") < 0) {
        jitsu_vm_log(x->vm, JITSU_LOG_ERROR, "cannot watch %s: %s",
                     x->watched_key, strerror(errno));
        x->watched_key[0] = '\0';
      }
    } else {
      snprintf(x->watched_tty, sizeof(x->watched_tty), "%s/console/tty", base);
      if (xl_watch(x, x->watched_tty, "tty") == 0)
        return; /* unpaused once the console is open */
      x->watched_tty[0] = '\0';
    }
  }
  unpause_new(x);
}

/* ---- create and restore ------------------------------------------------- */

static void config_free(xvm *x) {
  if (x->dc != NULL) {
    libxl_domain_config_dispose(x->dc);
    free(x->dc);
    x->dc = NULL;
  }
  if (x->save_fd >= 0) {
    close(x->save_fd);
    x->save_fd = -1;
  }
}

void xl_went_live(xvm *x) {
  x->live = true;
  x->exit_how[0] = '\0';
  x->exit_clean = false;
  if (libxl_evenable_domain_death(x->host->lx, x->domid, 0, &x->death) != 0)
    jitsu_vm_log(x->vm, JITSU_LOG_WARNING,
                 "cannot follow domain %u's death: %s", x->domid,
                 xl_libxl_why(x, "libxl_evenable_domain_death failed"));
  if (x->spare == XSPARE_NO) /* a spare gets them when it is taken */
    xl_conduit_grant(x->host, x->vm, x->domid); /* its "channel" names */
}

static void created(xvm *x, int rc) {
  xop op = x->op;
  config_free(x);
  if (x->spare != XSPARE_NO) {
    x->op = XOP_NONE;
    xl_pool_spare_created(x, rc);
    return;
  }
  if (rc != 0) {
    x->op = XOP_NONE;
    jitsu_vm_set_reason(x->vm, "%s: %s",
                        op == XOP_RESUME_DISK ? "cannot restore the domain"
                                              : "cannot create the domain",
                        xl_libxl_why(x, "libxl failed"));
    if (op == XOP_RESUME_DISK)
      jitsu_backend_resumed(x->vm, -EIO);
    else
      jitsu_backend_started(x->vm, -EIO);
    return;
  }
  xl_went_live(x);
  x->op = XOP_NONE;
  if (op == XOP_RESUME_DISK) {
    x->suspended_disk = false;
    unlink(x->image);
    x->unpaused = false;
    unpause_new(x);
    jitsu_vm_log(x->vm, JITSU_LOG_INFO, "domain %u restored", x->domid);
    jitsu_backend_resumed(x->vm, 0);
    return;
  }
  jitsu_vm_log(x->vm, JITSU_LOG_INFO, "domain %u created", x->domid);
  jitsu_vm *vm = x->vm;
  jitsu_backend_started(vm, 0);
  if (jitsu_vm_data(vm) == x && x->live) /* (x) is gone if vm was undefined */
    xl_readiness_begin(x);
}

int xl_launch(xvm *x, xop op) {
  int r = xl_ensure_host(x);
  if (r < 0)
    return r;
  char why[512];
  x->dc = calloc(1, sizeof(*x->dc));
  if (x->dc == NULL)
    return -ENOMEM;
  r = xl_build_config(x, x->dc, why, sizeof(why));
  if (r < 0) {
    free(x->dc);
    x->dc = NULL;
    x_reason(x, "%s", why);
    return r;
  }
  if (op == XOP_RESUME_DISK) {
    x->save_fd = open(x->image, O_RDONLY | O_CLOEXEC);
    if (x->save_fd < 0) {
      r = -errno;
      jitsu_vm_set_reason(x->vm, "cannot open %s: %s", x->image,
                          strerror(errno));
      config_free(x);
      return r;
    }
  }
  libxl_asyncop_how how;
  if ((r = ao_how(x, created, &how)) < 0) {
    config_free(x);
    return r;
  }
  x->op = op;
  int rc;
  if (op == XOP_RESUME_DISK) {
    libxl_domain_restore_params params;
    libxl_domain_restore_params_init(&params);
    params.checkpointed_stream = LIBXL_CHECKPOINTED_STREAM_NONE;
    params.stream_version = 2; /* libxl_domain_suspend writes v2 */
    rc = libxl_domain_create_restore(x->host->lx, x->dc, &x->domid, x->save_fd,
                                     -1, &params, &how, NULL);
    libxl_domain_restore_params_dispose(&params);
  } else {
    rc = libxl_domain_create_new(x->host->lx, x->dc, &x->domid, &how, NULL);
  }
  if (rc != 0) {
    x->op = XOP_NONE;
    ao_abandon(x, &how);
    config_free(x);
    x_reason(x, "cannot create the domain: %s",
             xl_libxl_why(x, "libxl refused"));
    return -EIO;
  }
  return 0;
}

static int xl_start(jitsu_vm *vm) {
  xvm *x = jitsu_vm_data(vm);
  x->suspended_disk = false;
  if (xl_pool_take(x))
    return 0;
  return xl_launch(x, XOP_CREATE);
}

/* ---- stop --------------------------------------------------------------- */

static void grace_expired(uv_timer_t *t) {
  xvm *x = t->data;
  if (x != NULL && x->live && x->op == XOP_STOP) {
    jitsu_vm_log(x->vm, JITSU_LOG_INFO,
                 "domain %u did not shut down within the grace: destroying",
                 x->domid);
    destroy_domain(x);
  }
}

static void shutdown_asked(xvm *x, int rc) {
  if (rc != 0 && x->live && x->op == XOP_STOP) {
    jitsu_vm_log(x->vm, JITSU_LOG_WARNING,
                 "shutdown request refused (%s): destroying",
                 xl_libxl_why(x, "no PV control"));
    destroy_domain(x);
  }
}

static int xl_stop(jitsu_vm *vm, jitsu_stop_mode mode, uint64_t grace_ms) {
  xvm *x = jitsu_vm_data(vm);
  if (x->suspended_disk) {
    unlink(x->image);
    x->suspended_disk = false;
    jitsu_backend_exited(vm, 1, "its saved state was removed");
    return 0;
  }
  if (!x->live) {
    jitsu_backend_exited(vm, 1, "no domain");
    return 0;
  }
  x->op = XOP_STOP;
  if (mode == JITSU_STOP_DESTROY) {
    destroy_domain(x);
    return 0;
  }
  libxl_dominfo info;
  libxl_dominfo_init(&info);
  if (libxl_domain_info(x->host->lx, &info, x->domid) == 0 && info.paused)
    libxl_domain_unpause(x->host->lx, x->domid, NULL); /* to hear the request */
  libxl_dominfo_dispose(&info);
  libxl_asyncop_how how;
  if (ao_how(x, shutdown_asked, &how) == 0 &&
      libxl_domain_shutdown(x->host->lx, x->domid, &how) != 0) {
    ao_abandon(x, &how);
    shutdown_asked(x, -1);
  }
  xl_timer_start(x, grace_expired, grace_ms);
  return 0;
}

int xl_timer_start(xvm *x, uv_timer_cb cb, uint64_t ms) {
  if (jitsu__timer_get(&x->timer, x->host->loop, x) == NULL)
    return -ENOMEM;
  uv_timer_start(x->timer, cb, ms, 0);
  return 0;
}

/* ---- suspend and resume ------------------------------------------------- */

static void toggled(xvm *x, int rc) {
  xop op = x->op;
  if (op != XOP_SUSPEND_MEM && op != XOP_RESUME_MEM)
    return;
  x->op = XOP_NONE;
  if (rc != 0)
    jitsu_vm_set_reason(x->vm, "%s: %s",
                        op == XOP_SUSPEND_MEM ? "cannot pause the domain"
                                              : "cannot unpause the domain",
                        xl_libxl_why(x, "libxl failed"));
  if (op == XOP_SUSPEND_MEM)
    jitsu_backend_suspended(x->vm, rc ? -EIO : 0);
  else
    jitsu_backend_resumed(x->vm, rc ? -EIO : 0);
}

static void saved(xvm *x, int rc) {
  if (x->op != XOP_SUSPEND_DISK)
    return;
  int fd = x->save_fd;
  x->save_fd = -1;
  if (rc == 0 && fd >= 0 && fsync(fd) < 0)
    rc = -1;
  if (fd >= 0)
    close(fd);
  if (rc == 0 && rename(x->image_tmp, x->image) < 0)
    rc = -1;
  if (rc != 0) {
    unlink(x->image_tmp);
    x->op = XOP_NONE;
    jitsu_vm_set_reason(x->vm, "cannot save the domain: %s",
                        xl_libxl_why(x, "libxl_domain_suspend failed"));
    /* A failed save may leave the domain suspended: let it go on. */
    libxl_domain_resume(x->host->lx, x->domid, 1, NULL);
    jitsu_backend_suspended(x->vm, -EIO);
    return;
  }
  jitsu_vm_log(x->vm, JITSU_LOG_INFO, "domain %u saved to %s", x->domid,
               x->image);
  destroy_domain(x); /* its death completes the suspend */
}

static int xl_suspend(jitsu_vm *vm) {
  xvm *x = jitsu_vm_data(vm);
  if (!x->live)
    return -ESRCH;
  libxl_asyncop_how how;
  int r;
  if (!x->suspend_disk) {
    if ((r = ao_how(x, toggled, &how)) < 0)
      return r;
    x->op = XOP_SUSPEND_MEM;
    if (libxl_domain_pause(x->host->lx, x->domid, &how) != 0) {
      x->op = XOP_NONE;
      ao_abandon(x, &how);
      jitsu_vm_set_reason(vm, "cannot pause: %s", xl_libxl_why(x, "refused"));
      return -EIO;
    }
    return 0;
  }
  if ((r = xl_path(x, "save", x->image, sizeof(x->image))) < 0)
    return r;
  snprintf(x->image_tmp, sizeof(x->image_tmp), "%s.tmp", x->image);
  x->save_fd =
      open(x->image_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (x->save_fd < 0) {
    r = -errno;
    jitsu_vm_set_reason(vm, "cannot create %s: %s", x->image_tmp,
                        strerror(errno));
    return r;
  }
  if ((r = ao_how(x, saved, &how)) < 0) {
    close(x->save_fd);
    x->save_fd = -1;
    unlink(x->image_tmp);
    return r;
  }
  x->op = XOP_SUSPEND_DISK;
  if (libxl_domain_suspend(x->host->lx, x->domid, x->save_fd, 0, &how) != 0) {
    x->op = XOP_NONE;
    ao_abandon(x, &how);
    close(x->save_fd);
    x->save_fd = -1;
    unlink(x->image_tmp);
    jitsu_vm_set_reason(vm, "cannot save: %s", xl_libxl_why(x, "refused"));
    return -EIO;
  }
  return 0;
}

static int xl_resume(jitsu_vm *vm) {
  xvm *x = jitsu_vm_data(vm);
  if (x->suspended_disk)
    return xl_launch(x, XOP_RESUME_DISK);
  if (!x->live)
    return -ESRCH;
  libxl_asyncop_how how;
  int r = ao_how(x, toggled, &how);
  if (r < 0)
    return r;
  x->op = XOP_RESUME_MEM;
  if (libxl_domain_unpause(x->host->lx, x->domid, &how) != 0) {
    x->op = XOP_NONE;
    ao_abandon(x, &how);
    jitsu_vm_set_reason(vm, "cannot unpause: %s", xl_libxl_why(x, "refused"));
    return -EIO;
  }
  return 0;
}

/* ---- definition, adoption, release ------------------------------------- */

static int xl_configure(jitsu_vm *vm, jitsu_error *err) {
  xvm *x = calloc(1, sizeof(*x));
  if (x == NULL)
    return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  x->vm = vm;
  x->save_fd = -1;
  x->console_fd = -1;
  jitsu_list_init(&x->link);
  int r = xl_configure_settings(x, vm, err);
  if (r == 0)
    r = xl_pool_configure(x, vm, err);
  if (r < 0) {
    free(x);
    return r;
  }
  xl_path(x, "save", x->image, sizeof(x->image));
  jitsu_vm_set_data(vm, x);
  return 0;
}

static int xl_adopt(jitsu_vm *vm, jitsu_state *state) {
  xvm *x = jitsu_vm_data(vm);
  if (xl_ensure_host(x) < 0) {
    jitsu_vm_log(vm, JITSU_LOG_DEBUG, "nothing to adopt: no Xen here");
    return 0;
  }
  xl_conduit_declare(x->host, vm); /* requests may come before it runs */
  xl_pool_adopt(x);
  uint32_t domid;
  if (libxl_name_to_domid(x->host->lx, jitsu_vm_name(vm), &domid) == 0) {
    libxl_dominfo info;
    libxl_dominfo_init(&info);
    int found = libxl_domain_info(x->host->lx, &info, domid) == 0 &&
                !info.dying && !info.shutdown;
    bool paused = info.paused;
    libxl_dominfo_dispose(&info);
    if (found) {
      x->domid = domid;
      xl_went_live(x);
      x->unpaused = true;
      *state = paused ? JITSU_STATE_SUSPENDED : JITSU_STATE_READY;
      jitsu_vm_log(vm, JITSU_LOG_INFO, "adopted domain %u (%s)", domid,
                   paused ? "paused" : "running");
      return 1;
    }
  }
  if (access(x->image, F_OK) == 0) {
    x->suspended_disk = true;
    *state = JITSU_STATE_SUSPENDED;
    jitsu_vm_log(vm, JITSU_LOG_INFO, "adopted its saved state %s", x->image);
    return 1;
  }
  return 0;
}

static void xvm_free(xvm *x) {
  xlhost *h = x->host;
  jitsu_list_remove(&x->link);
  config_free(x);
  free(x->fp);
  free(x);
  /* Spares let go of may still be destroying their domains: when only
   * they are left, the ctx may go before them. */
  if (h != NULL)
    xl_host_orphan(h);
  xl_host_put(h);
}

static void pending_begin(xvm *x) {
  x->pending++;
}

static bool pending_end(xvm *x) {
  x->pending--;
  if (x->released && x->pending == 0) {
    xvm_free(x);
    return true;
  }
  return x->released;
}

/* A released spare's domain goes: libxl destroys it, and the last
 * callback frees (x). */
static void released_done(xvm *x, int rc) {
  (void)x, (void)rc; /* never called: (x) is released */
}

static void destroy_released(xvm *x) {
  libxl_asyncop_how how;
  if (ao_how(x, released_done, &how) < 0)
    return;
  if (libxl_domain_destroy(x->host->lx, x->domid, &how) != 0) {
    ao_abandon(x, &how);
    jitsu_vm_log(x->vm, JITSU_LOG_ERROR, "pool: cannot destroy domain %u: %s",
                 x->domid, xl_libxl_why(x, "libxl_domain_destroy failed"));
  }
}

void xl_spare_drop(xvm *x) {
  console_close(x);
  if (x->live)
    watches_drop(x);
  if (x->death != NULL) {
    libxl_evdisable_domain_death(x->host->lx, x->death);
    x->death = NULL;
  }
  bool live = x->live;
  x->live = false; /* its events are no one's now */
  x->of = NULL;
  x->released = true;
  x->doomed = true;
  if (x->host == NULL) {
    free(x->fp);
    free(x);
    return;
  }
  if (live)
    destroy_released(x);
  if (x->pending == 0)
    xvm_free(x);
}

static void xl_release(jitsu_vm *vm) {
  xvm *x = jitsu_vm_data(vm);
  if (x == NULL)
    return;
  xl_pool_drain(x);
  jitsu_vm_set_data(vm, NULL);
  console_close(x);
  if (x->live && x->host != NULL) {
    watches_drop(x);
    if (x->death != NULL)
      libxl_evdisable_domain_death(x->host->lx, x->death);
    x->death = NULL;
    x->live = false; /* the domain lives on, for a later controller */
  }
  if (x->timer != NULL) {
    x->timer->data = NULL;
    uv_close((uv_handle_t *)x->timer, jitsu__free_handle);
    x->timer = NULL;
  }
  if (x->pending > 0) {
    x->released = true; /* freed when its last operation ends */
    if (x->host != NULL)
      xl_host_orphan(x->host);
    return;
  }
  config_free(x);
  if (x->host == NULL) {
    free(x);
    return;
  }
  xvm_free(x);
}

static void xl_state_changed(jitsu_vm *vm, jitsu_state old_state,
                             jitsu_state new_state) {
  xvm *x = jitsu_vm_data(vm);
  if (x != NULL && x->host != NULL)
    xl_publish(x, jitsu_state_name(new_state));
  if (new_state == JITSU_STATE_STOPPED || new_state == JITSU_STATE_FAILED)
    xl_pool_fill(x); /* the next summon takes a spare again */
  else if (new_state == JITSU_STATE_READY)
    xl_pool_fill_after(x, XL_POOL_AFTER_READY_MS); /* after a take */
}

/* A definition, or a reload's, is in place: its pool fills from the loop. */
static int xl_attach(jitsu_vm *vm, jitsu_error *err) {
  (void)err;
  xl_pool_fill(jitsu_vm_data(vm));
  return 0;
}

static void xl_describe(jitsu_vm *vm, char *buf, size_t size) {
  xvm *x = jitsu_vm_data(vm);
  unsigned ready = 0;
  for (unsigned i = 0; i < x->pool; i++)
    ready += x->spares[i] != NULL && x->spares[i]->spare == XSPARE_READY;
  if (x->live && x->pool > 0)
    snprintf(buf, size, "domain %u, pool %u/%u ready, %llu taken", x->domid,
             ready, x->pool, x->pool_takes);
  else if (x->live)
    snprintf(buf, size, "domain %u", x->domid);
  else if (x->suspended_disk)
    snprintf(buf, size, "saved in %s", x->image);
  else
    snprintf(buf, size, "no domain");
}

const jitsu_backend_ops jitsu_backend_xl = {
    .version = JITSU_BACKEND_OPS_VERSION,
    .name = "xl",
    .keys = xl_keys,
    .n_keys = JITSU__ARRAY_SIZE(xl_keys),
    .configure = xl_configure,
    .release = xl_release,
    .adopt = xl_adopt,
    .attach = xl_attach,
    .start = xl_start,
    .stop = xl_stop,
    .suspend = xl_suspend,
    .resume = xl_resume,
    .state_changed = xl_state_changed,
    .describe = xl_describe,
};

JITSU__MODULE("xl", &jitsu_backend_xl, NULL);
