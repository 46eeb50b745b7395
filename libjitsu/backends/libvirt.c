/*
 * The libvirt backend: guests on one or more hosts through libvirt
 * connections (qemu:///system, qemu+ssh://HOST/system, ...). Domains are
 * transient (virDomainCreateXML): nothing stays defined once a guest ends,
 * except while it is suspended to disk (a managed save, which needs a
 * persistent definition until it is restored). Every libvirt call that
 * talks to a daemon runs in a job on a worker thread; libvirt's events and
 * the console stream come on the loop (libvirt_event.c).
 */
#include "libvirt.h"

#include <stdlib.h>
#include <string.h>
#include <libvirt/virterror.h>

static const jitsu_key lv_keys[] = {
    {"host", JITSU_KEY_STRING, JITSU_KEY_MULTI,
     "a libvirt URI the guest may run on (several: see placement)"},
    {"placement", JITSU_KEY_STRING, 0,
     "first | least-loaded: which host takes a new guest (first)"},
    {"max-guests-per-host", JITSU_KEY_UINT, 0,
     "skip a host running this many domains already (0: no limit)"},
    {"xml", JITSU_KEY_STRING, 0,
     "a libvirt domain XML file (instead of the keys below)"},
    {"type", JITSU_KEY_STRING, 0, "kvm | qemu (kvm)"},
    {"kernel", JITSU_KEY_STRING, 0, "the guest kernel, a path on the host"},
    {"initrd", JITSU_KEY_STRING, 0, "the initial ramdisk, a path on the host"},
    {"cmdline", JITSU_KEY_STRING, 0, "the kernel command line"},
    {"memory", JITSU_KEY_SIZE, 0, "guest memory, whole MiB (128M)"},
    {"vcpus", JITSU_KEY_UINT, 0, "virtual CPUs (1)"},
    {"machine", JITSU_KEY_STRING, 0, "pc | q35 | pc-* (pc)"},
    {"network", JITSU_KEY_STRING, 0,
     "none | user | network:NAME | bridge:NAME (none)"},
    {"forward", JITSU_KEY_STRING, JITSU_KEY_MULTI,
     "with network = user: [ADDR:]HOSTPORT:GUESTPORT (ADDR 127.0.0.1)"},
    {"console-marker", JITSU_KEY_STRING, 0,
     "the readiness marker on the serial console (JITSU_READY)"},
    {"suspend", JITSU_KEY_STRING, 0, "memory | disk (memory)"},
    {"pool", JITSU_KEY_UINT, 0,
     "spare domains kept booted to the marker and paused, 0 to 8 (0)"},
};

extern const jitsu_backend_ops jitsu_backend_libvirt;

enum { ADOPT_WAIT_MS = 5000 };

static void pending_begin(lvvm *v) {
  v->pending++;
}

static void lv_free(lvvm *v) {
  jitsu__timer_drop(&v->pool_timer);
  for (size_t i = 0; i < v->n_hosts; i++)
    if (v->hosts[i] != NULL)
      lv_host_put(v->hosts[i]);
  free(v->xml);
  free(v->kernel);
  free(v->initrd);
  free(v);
}

/* true: (v) was released and is freed now; the caller must not touch it. */
static bool pending_end(lvvm *v) {
  v->pending--;
  if (v->released && v->pending == 0) {
    lv_free(v);
    return true;
  }
  return v->released;
}

static bool live(const lvvm *v) {
  return v->on != NULL && !v->saved;
}

int lv_hosts_get(lvvm *v) {
  for (size_t i = 0; i < v->n_hosts; i++) {
    if (v->hosts[i] != NULL)
      continue;
    v->hosts[i] = lv_host_get(v->ctx, v->uris[i]);
    if (v->hosts[i] == NULL) {
      jitsu_vm_set_reason(v->vm, "out of memory");
      return -ENOMEM;
    }
  }
  return 0;
}

/* The name of (v)'s domain: a spare's once one was taken. */
static const char *dom_name(const lvvm *v) {
  return v->dom[0] ? v->dom : jitsu_vm_name(v->vm);
}

lvvm *lv_vm_of(lvhost *h, const char *name) {
  if (h->ctx == NULL)
    return NULL;
  char base[96];
  snprintf(base, sizeof(base), "%s", name);
  char *dot = strrchr(base, '.');
  jitsu_vm *vm = jitsu_vm_find(h->ctx, base);
  if (vm == NULL && dot != NULL && strncmp(dot, ".spare", 6) == 0) {
    *dot = '\0';
    vm = jitsu_vm_find(h->ctx, base);
  }
  if (vm == NULL || jitsu_vm_backend(vm) != &jitsu_backend_libvirt)
    return NULL;
  return jitsu_vm_data(vm);
}

lvvm *lv_vm_on(lvhost *h, const char *name) {
  lvvm *v = lv_vm_of(h, name);
  return v != NULL && v->on == h && strcmp(dom_name(v), name) == 0 ? v : NULL;
}

/* ---- jobs on one vm ----------------------------------------------------- */

static void console_readable(virStreamPtr st, int events, void *opaque);

static void vjob_done(lvjob *j) {
  vjob *vj = JITSU_CONTAINER_OF(j, vjob, j);
  lvvm *v = vj->v;
  if (vj->sp != NULL) {
    vj->sp->pending--;
    vj->then(vj); /* a spare's job: its (then) knows whether it is let go */
    pending_end(v);
    free(vj);
    return;
  }
  if (v->released && vj->stream != NULL) {
    /* A start that ended after its vm was released: the domain lives on
     * for a later controller; its console goes. */
    lv_stream_release(j->host, vj->stream);
    vj->stream = NULL;
  }
  if (!pending_end(v))
    vj->then(vj);
  free(vj);
}

vjob *lv_vjob_new(lvvm *v, void (*run)(lvjob *), void (*then)(vjob *)) {
  vjob *vj = calloc(1, sizeof(*vj));
  if (vj == NULL)
    return NULL;
  vj->v = v;
  vj->j.run = run;
  vj->j.done = vjob_done;
  vj->then = then;
  vj->console_cb = console_readable;
  vj->console_arg = v;
  /* A released vm's name is gone with it: its spares' jobs name theirs. */
  snprintf(vj->name, sizeof(vj->name), "%s", v->released ? "" : dom_name(v));
  return vj;
}

int lv_vjob_submit(lvhost *h, vjob *vj) {
  pending_begin(vj->v);
  if (vj->sp != NULL)
    vj->sp->pending++;
  int r = lv_job_submit(h, &vj->j);
  if (r < 0) {
    vj->v->pending--;
    if (vj->sp != NULL)
      vj->sp->pending--;
    free(vj);
  }
  return r;
}

/* Whether the last error says the domain is not there (any more). */
static bool gone_now(void) {
  virErrorPtr e = virGetLastError();
  return e != NULL && e->code == VIR_ERR_NO_DOMAIN;
}

/* On a worker: the domain (name) on the job's host, NULL with j->rc set;
 * j->rc = -ENOENT when there is no such domain. */
static virDomainPtr lookup(vjob *vj, virConnectPtr *conn) {
  *conn = lv_conn(&vj->j);
  if (*conn == NULL)
    return NULL;
  virDomainPtr d = virDomainLookupByName(*conn, vj->name);
  if (d == NULL) {
    bool gone = gone_now();
    lv_fail(&vj->j, NULL);
    if (gone)
      vj->j.rc = -ENOENT;
  }
  return d;
}

void lv_on_domain(lvjob *j, void (*fn)(vjob *vj, virDomainPtr d)) {
  vjob *vj = JITSU_CONTAINER_OF(j, vjob, j);
  virConnectPtr c;
  virDomainPtr d = lookup(vj, &c);
  if (d != NULL) {
    fn(vj, d);
    virDomainFree(d);
  }
  if (c != NULL)
    virConnectClose(c);
}

/* A job of one call on the vm's domain: (call) returns < 0 on failure. */
#define DOMAIN_JOB(fn, call)                                                   \
  void fn(lvjob *j) {                                                          \
    vjob *vj = JITSU_CONTAINER_OF(j, vjob, j);                                 \
    virConnectPtr c;                                                           \
    virDomainPtr d = lookup(vj, &c);                                           \
    if (d != NULL) {                                                           \
      if ((call) < 0 && lv_fail(j, NULL) && gone_now())                        \
        j->rc = -ENOENT;                                                       \
      virDomainFree(d);                                                        \
    }                                                                          \
    if (c != NULL)                                                             \
      virConnectClose(c);                                                      \
  }

static void run_pause(lvjob *j);
static void run_unpause(lvjob *j);
static void run_discard(lvjob *j);
static void run_shutdown(lvjob *j);
static void run_restore(lvjob *j);
DOMAIN_JOB(lv_run_destroy, virDomainDestroy(d))
DOMAIN_JOB(run_pause, virDomainSuspend(d))
DOMAIN_JOB(run_unpause, virDomainResume(d))
DOMAIN_JOB(run_discard,
           virDomainUndefineFlags(d, VIR_DOMAIN_UNDEFINE_MANAGED_SAVE))

static int shutdown_domain(virDomainPtr d) {
  int state = 0, reason = 0;
  if (virDomainGetState(d, &state, &reason, 0) == 0 &&
      state == VIR_DOMAIN_PAUSED && virDomainResume(d) < 0)
    return -1; /* a paused guest does not hear the power button */
  return virDomainShutdown(d);
}
DOMAIN_JOB(run_shutdown, shutdown_domain(d))

/* Suspend to disk: a managed save needs a persistent definition, made
 * from the running domain's own XML (same uuid); if the save fails the
 * domain is made transient again. */
static void run_save(lvjob *j) {
  vjob *vj = JITSU_CONTAINER_OF(j, vjob, j);
  virConnectPtr c;
  virDomainPtr d = lookup(vj, &c);
  if (d == NULL)
    goto out;
  char *xml =
      virDomainGetXMLDesc(d, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
  virDomainPtr p = xml ? virDomainDefineXML(c, xml) : NULL;
  free(xml);
  if (p == NULL) {
    lv_fail(j, "cannot make it persistent");
  } else if (virDomainManagedSave(d, 0) < 0) {
    lv_fail(j, NULL);
    if (virDomainUndefine(d) < 0)
      virResetLastError();
  }
  if (p != NULL)
    virDomainFree(p);
  virDomainFree(d);
out:
  if (c != NULL)
    virConnectClose(c);
}

/* Restore from the managed save image, then drop the definition (the
 * running domain becomes transient again, the image is removed). */
static int restore_domain(virDomainPtr d) {
  if (virDomainCreate(d) < 0)
    return -1;
  if (virDomainUndefineFlags(d, VIR_DOMAIN_UNDEFINE_MANAGED_SAVE) < 0)
    virResetLastError(); /* it runs; a leftover definition is harmless */
  return 0;
}
DOMAIN_JOB(run_restore, restore_domain(d))

static void run_state(lvjob *j) {
  vjob *vj = JITSU_CONTAINER_OF(j, vjob, j);
  virConnectPtr c;
  virDomainPtr d = lookup(vj, &c);
  if (d != NULL) {
    int reason;
    vj->found = true;
    if (virDomainGetState(d, &vj->state, &reason, 0) < 0)
      lv_fail(j, NULL);
    virDomainFree(d);
  } else if (j->rc == -ENOENT) {
    j->rc = 0;
  }
  if (c != NULL)
    virConnectClose(c);
}

/* ---- the console -------------------------------------------------------- */

typedef struct sjob {
  lvjob j;
  virStreamPtr st;
} sjob;

static void run_stream_close(lvjob *j) {
  sjob *s = JITSU_CONTAINER_OF(j, sjob, j);
  if (virStreamAbort(s->st) < 0)
    virResetLastError();
  virStreamFree(s->st);
}

static void stream_closed(lvjob *j) {
  free(JITSU_CONTAINER_OF(j, sjob, j));
}

/* Stop watching (st) now and close it off the loop (closing talks to the
 * daemon). Needs no vm: a released vm's stream goes this way too. */
void lv_stream_release(lvhost *h, virStreamPtr st) {
  virStreamEventRemoveCallback(st);
  sjob *s = calloc(1, sizeof(*s));
  if (s != NULL) {
    s->st = st;
    s->j.run = run_stream_close;
    s->j.done = stream_closed;
    if (lv_job_submit(h, &s->j) == 0)
      return;
    free(s);
  }
  virStreamFree(st); /* the daemon's side goes with the guest */
}

static void console_close(lvvm *v) {
  if (v->console == NULL)
    return;
  virStreamPtr st = v->console;
  v->console = NULL;
  v->line_len = 0;
  lv_stream_release(v->on, st);
}

static void console_line(lvvm *v) {
  if (strstr(v->line, v->marker) == NULL)
    return;
  if (v->op == LOP_CREATE) {
    v->marker_seen = true; /* reported with the start */
    return;
  }
  jitsu_vm *vm = v->vm;
  jitsu_backend_marker(vm);
  if (jitsu_vm_data(vm) == v) /* (v) is gone if a callback undefined vm */
    console_close(v);
}

int lv_console_read(virStreamPtr st, char *line, size_t size, size_t *len,
                    bool (*on_line)(void *arg), void *arg) {
  char buf[1024];
  int n;
  while ((n = virStreamRecv(st, buf, sizeof(buf))) > 0) {
    for (int i = 0; i < n; i++) {
      if (buf[i] == '\n' || buf[i] == '\r' || *len == size - 1) {
        line[*len] = '\0';
        bool go_on = on_line(arg);
        *len = 0;
        if (!go_on)
          return 0; /* seen (and the stream may be closed now) */
      } else {
        line[(*len)++] = buf[i];
      }
    }
    if (*len > 0) { /* a marker without its newline yet */
      line[*len] = '\0';
      if (!on_line(arg))
        return 0;
    }
  }
  if (n == -2)
    return 0; /* nothing more for now */
  virResetLastError();
  return -1; /* the guest went away; the domain event says so */
}

/* A line of the vm's console: false once reading must stop. */
static bool vm_console_line(void *arg) {
  lvvm *v = arg;
  virStreamPtr st = v->console;
  console_line(v);
  return !(v->marker_seen || (v->console != st && v->op != LOP_CREATE));
}

static void console_readable(virStreamPtr st, int events, void *opaque) {
  lvvm *v = opaque;
  (void)events;
  if (v->released)
    return;
  if (lv_console_read(st, v->line, sizeof(v->line), &v->line_len,
                      vm_console_line, v) == 0)
    return;
  if (v->console == st)
    console_close(v);
  else
    virStreamEventUpdateCallback(st, 0);
}

/* ---- the domain ends ---------------------------------------------------- */

static void domain_gone(lvvm *v, bool clean, const char *how) {
  if (!live(v))
    return;
  console_close(v);
  if (v->timer != NULL)
    uv_timer_stop(v->timer);
  v->on = NULL;
  v->dom[0] = '\0';
  bool stopping = v->op == LOP_STOP;
  v->op = LOP_NONE;
  char text[128];
  snprintf(text, sizeof(text), "%s", how);
  jitsu_backend_exited(v->vm, clean || stopping, text);
}

static void destroyed(vjob *vj) {
  lvvm *v = vj->v;
  if (vj->j.rc == 0 || vj->j.rc == -ENOENT) {
    if (live(v) && v->on == vj->j.host)
      domain_gone(v, v->op == LOP_STOP, "destroyed");
    return;
  }
  jitsu_vm_log(v->vm, JITSU_LOG_ERROR, "cannot destroy its domain on %s: %s%s",
               vj->j.host->uri, vj->j.err,
               vj->j.host->down ? " (again when the host is back)" : "");
}

static void destroy_domain(lvvm *v) {
  vjob *vj = lv_vjob_new(v, lv_run_destroy, destroyed);
  if (vj == NULL || lv_vjob_submit(v->on, vj) < 0)
    jitsu_vm_log(v->vm, JITSU_LOG_ERROR, "cannot destroy its domain: %s",
                 "out of memory");
}

void lv_domain_event(lvhost *h, const char *name, int event, int detail) {
  lvvm *v = lv_vm_on(h, name);
  if (v == NULL) {
    lvvm *of = lv_vm_of(h, name);
    if (of != NULL)
      lv_pool_event(of, h, name, event);
    return;
  }
  if (v->op == LOP_CREATE)
    return; /* not ours, or a failed start cleaning up after itself */
  if (event == VIR_DOMAIN_EVENT_CRASHED) {
    jitsu_vm_log(v->vm, JITSU_LOG_WARNING, "its guest crashed on %s", h->uri);
    return;
  }
  if (event != VIR_DOMAIN_EVENT_STOPPED)
    return;
  switch (detail) {
  case VIR_DOMAIN_EVENT_STOPPED_SAVED:
    return; /* our suspend to disk; its job reports */
  case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN:
    domain_gone(v, true, "powered off");
    return;
  case VIR_DOMAIN_EVENT_STOPPED_DESTROYED:
    domain_gone(v, false,
                v->op == LOP_STOP ? "destroyed" : "destroyed from outside");
    return;
  case VIR_DOMAIN_EVENT_STOPPED_CRASHED:
    domain_gone(v, false, "crashed");
    return;
  case VIR_DOMAIN_EVENT_STOPPED_MIGRATED:
    domain_gone(v, false, "migrated away from this controller");
    return;
  default:
    domain_gone(v, false, "failed (its QEMU ended)");
  }
}

/* ---- hosts going and coming --------------------------------------------- */

typedef struct foreach_arg {
  lvhost *h;
  bool back;
} foreach_arg;

static void resynced(vjob *vj) {
  lvvm *v = vj->v;
  if (v->on != vj->j.host || vj->j.rc < 0)
    return;
  if (!vj->found) {
    if (live(v))
      domain_gone(v, v->op == LOP_STOP,
                  "its domain ended while its host was unreachable");
    return;
  }
  if (live(v) && v->op == LOP_STOP)
    destroy_domain(v); /* the stop that could not reach it */
}

static int host_vm(jitsu_vm *vm, void *arg) {
  foreach_arg *fa = arg;
  if (jitsu_vm_backend(vm) != &jitsu_backend_libvirt)
    return 0;
  lvvm *v = jitsu_vm_data(vm);
  if (v == NULL || v->on != fa->h)
    return 0;
  if (!fa->back) {
    jitsu_vm_log(vm, JITSU_LOG_WARNING,
                 "its host %s is unreachable; its guest keeps running there",
                 fa->h->uri);
    return 0;
  }
  vjob *vj = lv_vjob_new(v, run_state, resynced);
  if (vj != NULL)
    lv_vjob_submit(fa->h, vj);
  return 0;
}

void lv_host_back(lvhost *h) {
  foreach_arg fa = {h, true};
  jitsu_vm_foreach(h->ctx, host_vm, &fa);
}

void lv_vms_report(lvhost *h) {
  foreach_arg fa = {h, false};
  jitsu_vm_foreach(h->ctx, host_vm, &fa);
}

/* ---- start -------------------------------------------------------------- */

static void note(vjob *vj, lvhost *h, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(vjob *vj, lvhost *h, const char *fmt, ...) {
  size_t off = strlen(vj->notes);
  if (off + 4 >= sizeof(vj->notes))
    return;
  off += (size_t)snprintf(vj->notes + off, sizeof(vj->notes) - off,
                          "%s%s: ", off ? "; " : "", h->uri);
  if (off >= sizeof(vj->notes))
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(vj->notes + off, sizeof(vj->notes) - off, fmt, ap);
  va_end(ap);
}

/* On a worker: the connection of candidate (i), or NULL with a note. */
static virConnectPtr cand_conn(vjob *vj, size_t i) {
  lvjob probe = {.host = vj->cands[i]};
  virConnectPtr c = lv_conn(&probe);
  vj->host_ok[i] = c ? 1 : -1;
  if (c == NULL) {
    snprintf(vj->host_err[i], sizeof(vj->host_err[i]), "%s", probe.err);
    note(vj, vj->cands[i], "%s", probe.err);
  }
  return c;
}

/* Create the domain on (c), paused while the console is attached when a
 * marker is wanted. true if it runs. */
static bool create_on(vjob *vj, size_t i, virConnectPtr c) {
  lvhost *h = vj->cands[i];
  virDomainPtr d =
      virDomainCreateXML(c, vj->xml, vj->marker ? VIR_DOMAIN_START_PAUSED : 0);
  if (d == NULL) {
    note(vj, h, "%s", virGetLastErrorMessage());
    return false;
  }
  virStreamPtr st = NULL;
  const char *step = NULL;
  if (vj->marker) {
    st = virStreamNew(c, VIR_STREAM_NONBLOCK);
    if (st == NULL)
      step = "cannot make a stream";
    else if (virDomainOpenConsole(d, NULL, st, VIR_DOMAIN_CONSOLE_FORCE) < 0)
      step = "cannot open its console";
    else if (virStreamEventAddCallback(
                 st,
                 VIR_STREAM_EVENT_READABLE | VIR_STREAM_EVENT_ERROR |
                     VIR_STREAM_EVENT_HANGUP,
                 vj->console_cb, vj->console_arg, NULL) < 0)
      step = "cannot watch its console";
    else if (virDomainResume(d) < 0)
      step = "cannot let it run";
  }
  if (step != NULL) {
    note(vj, h, "%s: %s", step, virGetLastErrorMessage());
    if (st != NULL) {
      virStreamEventRemoveCallback(st);
      virStreamAbort(st);
      virStreamFree(st);
    }
    virDomainDestroy(d); /* transient: nothing is left */
    virDomainFree(d);
    virResetLastError();
    return false;
  }
  virDomainFree(d);
  vj->stream = st;
  vj->chosen = h;
  return true;
}

void lv_run_start(lvjob *j) {
  vjob *vj = JITSU_CONTAINER_OF(j, vjob, j);
  size_t order[LV_HOSTS_MAX];
  int load[LV_HOSTS_MAX];
  virConnectPtr conns[LV_HOSTS_MAX] = {0};
  size_t n = 0;
  for (size_t i = 0; i < vj->n_cands; i++) {
    if (vj->skip[i]) {
      note(vj, vj->cands[i], "down (%s)", vj->host_err[i]);
      continue;
    }
    load[i] = 0;
    if (vj->least_loaded || vj->max_per_host > 0) {
      if ((conns[i] = cand_conn(vj, i)) == NULL)
        continue;
      load[i] = virConnectNumOfDomains(conns[i]);
      if (load[i] < 0) {
        note(vj, vj->cands[i], "%s", virGetLastErrorMessage());
        continue;
      }
      if (vj->max_per_host > 0 && (unsigned)load[i] >= vj->max_per_host) {
        note(vj, vj->cands[i], "full (%d domains running)", load[i]);
        continue;
      }
    }
    /* Insertion by load for least-loaded; stable, so ties keep order. */
    size_t k = n;
    while (vj->least_loaded && k > 0 && load[order[k - 1]] > load[i]) {
      order[k] = order[k - 1];
      k--;
    }
    order[k] = i;
    n++;
  }
  for (size_t k = 0; k < n && vj->chosen == NULL; k++) {
    size_t i = order[k];
    if (conns[i] == NULL && (conns[i] = cand_conn(vj, i)) == NULL)
      continue;
    unsigned long long free_b = virNodeGetFreeMemory(conns[i]);
    if (free_b > 0 && vj->memory_kib > 0 && free_b / 1024 < vj->memory_kib) {
      note(vj, vj->cands[i], "not enough free memory (%llu MiB, %llu needed)",
           free_b >> 20, (unsigned long long)vj->memory_kib >> 10);
      continue;
    }
    virResetLastError();
    create_on(vj, i, conns[i]);
  }
  for (size_t i = 0; i < vj->n_cands; i++)
    if (conns[i] != NULL)
      virConnectClose(conns[i]);
  if (vj->chosen == NULL) {
    j->rc = -EIO;
    snprintf(j->err, sizeof(j->err), "no host could take the guest: %s",
             vj->notes[0] ? vj->notes : "no host");
  }
}

/* Tell each host what the job found out about reaching it. */
void lv_hosts_learn(vjob *vj) {
  for (size_t i = 0; i < vj->n_cands; i++) {
    if (vj->host_ok[i] < 0)
      lv_host_lost(vj->cands[i], vj->host_err[i]);
  }
}

static void started(vjob *vj) {
  lvvm *v = vj->v;
  lv_hosts_learn(vj);
  v->op = LOP_NONE;
  if (vj->j.rc < 0) {
    jitsu_vm_set_reason(v->vm, "%s", vj->j.err);
    jitsu_backend_started(v->vm, -EIO);
    return;
  }
  if (vj->notes[0])
    jitsu_vm_log(v->vm, JITSU_LOG_WARNING, "hosts skipped: %s", vj->notes);
  v->on = vj->chosen;
  v->dom[0] = '\0';
  v->saved = false;
  v->console = vj->stream;
  jitsu_vm_log(v->vm, JITSU_LOG_INFO, "domain created on %s", v->on->uri);
  jitsu_vm *vm = v->vm;
  jitsu_backend_started(vm, 0);
  /* (v) is gone if a callback undefined vm */
  if (jitsu_vm_data(vm) == v && v->marker_seen && live(v)) {
    v->marker_seen = false;
    jitsu_backend_marker(vm);
    if (jitsu_vm_data(vm) == v)
      console_close(v);
  }
}

void lv_start_cands(lvvm *v, vjob *vj) {
  vj->least_loaded = v->least_loaded;
  vj->memory_kib = v->memory_kib;
  vj->max_per_host = v->max_per_host;
  vj->n_cands = v->n_hosts;
  bool all_down = true;
  for (size_t i = 0; i < v->n_hosts; i++) {
    vj->cands[i] = v->hosts[i];
    all_down = all_down && v->hosts[i]->down;
  }
  /* Hosts known down are skipped (they reconnect in the background),
   * unless every host is: then each gets a last try. */
  for (size_t i = 0; i < v->n_hosts && !all_down; i++) {
    vj->skip[i] = v->hosts[i]->down;
    snprintf(vj->host_err[i], sizeof(vj->host_err[i]), "%s", v->hosts[i]->why);
  }
}

static int lv_start(jitsu_vm *vm) {
  lvvm *v = jitsu_vm_data(vm);
  int r = lv_hosts_get(v);
  if (r < 0)
    return r;
  if (lv_pool_take(v))
    return 0;
  return lv_start_cold(v);
}

int lv_start_cold(lvvm *v) {
  jitsu_vm *vm = v->vm;
  int r;
  v->dom[0] = '\0'; /* a cold start makes the domain of the vm's name */
  vjob *vj = lv_vjob_new(v, lv_run_start, started);
  if (vj == NULL)
    return -ENOMEM;
  vj->xml = v->xml;
  vj->marker = jitsu_vm_wants_marker(vm);
  lv_start_cands(v, vj);
  v->marker_seen = false;
  v->line_len = 0;
  v->op = LOP_CREATE;
  if ((r = lv_vjob_submit(v->hosts[0], vj)) < 0) {
    v->op = LOP_NONE;
    jitsu_vm_set_reason(vm, "cannot queue the start: %s", uv_strerror(r));
    return -EIO;
  }
  return 0;
}

/* ---- stop --------------------------------------------------------------- */

/* Run (cb) on (v)'s timer after (ms), making the timer at first use. */
static void timer_start(lvvm *v, uv_timer_cb cb, uint64_t ms) {
  if (jitsu__timer_get(&v->timer, jitsu_ctx_loop(v->ctx), v) != NULL)
    uv_timer_start(v->timer, cb, ms, 0);
}

static void grace_expired(uv_timer_t *t) {
  lvvm *v = t->data;
  if (v != NULL && live(v) && v->op == LOP_STOP) {
    jitsu_vm_log(v->vm, JITSU_LOG_INFO,
                 "did not shut down within the grace: destroying");
    destroy_domain(v);
  }
}

static void shutdown_asked(vjob *vj) {
  lvvm *v = vj->v;
  if (vj->j.rc == -ENOENT) {
    domain_gone(v, true, "its domain was gone");
  } else if (vj->j.rc < 0 && live(v) && v->op == LOP_STOP) {
    jitsu_vm_log(v->vm, JITSU_LOG_WARNING,
                 "shutdown request failed (%s): destroying", vj->j.err);
    destroy_domain(v);
  }
}

static void discarded(vjob *vj) {
  lvvm *v = vj->v;
  if (vj->j.rc < 0 && vj->j.rc != -ENOENT)
    jitsu_vm_log(v->vm, JITSU_LOG_WARNING,
                 "cannot remove its saved state on %s: %s", vj->j.host->uri,
                 vj->j.err);
  v->on = NULL;
  v->dom[0] = '\0';
  v->saved = false;
  v->op = LOP_NONE;
  jitsu_backend_exited(v->vm, 1, "its saved state was removed");
}

static int lv_stop(jitsu_vm *vm, jitsu_stop_mode mode, uint64_t grace_ms) {
  lvvm *v = jitsu_vm_data(vm);
  if (v->op == LOP_ADOPT) { /* stopped once the domain is found */
    v->stop_after_adopt = true;
    v->adopt_stop_mode = mode;
    v->adopt_stop_grace_ms = grace_ms;
    return 0;
  }
  if (v->on != NULL && v->saved) {
    v->op = LOP_STOP;
    vjob *vj = lv_vjob_new(v, run_discard, discarded);
    if (vj == NULL || lv_vjob_submit(v->on, vj) < 0)
      return -ENOMEM;
    return 0;
  }
  if (!live(v)) {
    jitsu_backend_exited(vm, 1, "no domain");
    return 0;
  }
  v->op = LOP_STOP;
  if (mode == JITSU_STOP_DESTROY) {
    destroy_domain(v);
    return 0;
  }
  vjob *vj = lv_vjob_new(v, run_shutdown, shutdown_asked);
  if (vj == NULL || lv_vjob_submit(v->on, vj) < 0) {
    destroy_domain(v);
    return 0;
  }
  timer_start(v, grace_expired, grace_ms);
  return 0;
}

/* ---- suspend and resume ------------------------------------------------- */

static void suspended(vjob *vj) {
  lvvm *v = vj->v;
  if (vj->j.rc < 0) {
    jitsu_vm_set_reason(v->vm, "cannot %s the domain on %s: %s",
                        v->suspend_disk ? "save" : "pause", vj->j.host->uri,
                        vj->j.err);
    jitsu_backend_suspended(v->vm, -EIO);
    return;
  }
  if (v->suspend_disk) {
    console_close(v);
    v->saved = true;
  }
  jitsu_backend_suspended(v->vm, 0);
}

static int lv_suspend(jitsu_vm *vm) {
  lvvm *v = jitsu_vm_data(vm);
  if (!live(v)) {
    jitsu_vm_set_reason(vm, "no domain");
    return -ESRCH;
  }
  vjob *vj = lv_vjob_new(v, v->suspend_disk ? run_save : run_pause, suspended);
  if (vj == NULL || lv_vjob_submit(v->on, vj) < 0)
    return -ENOMEM;
  return 0;
}

static void resumed(vjob *vj) {
  lvvm *v = vj->v;
  if (vj->j.rc < 0) {
    jitsu_vm_set_reason(v->vm, "cannot %s the domain on %s: %s",
                        v->saved ? "restore" : "unpause", vj->j.host->uri,
                        vj->j.err);
    jitsu_backend_resumed(v->vm, -EIO);
    return;
  }
  v->saved = false;
  jitsu_backend_resumed(v->vm, 0);
}

static int lv_resume(jitsu_vm *vm) {
  lvvm *v = jitsu_vm_data(vm);
  if (v->on == NULL) {
    jitsu_vm_set_reason(vm, "no domain");
    return -ESRCH;
  }
  vjob *vj = lv_vjob_new(v, v->saved ? run_restore : run_unpause, resumed);
  if (vj == NULL || lv_vjob_submit(v->on, vj) < 0)
    return -ENOMEM;
  return 0;
}

/* ---- adoption ----------------------------------------------------------- */

/* At definition: look for the vm's domain on each of its hosts, on a
 * worker thread; the vm is starting until it is found or not, or until
 * ADOPT_WAIT_MS have passed (the hosts that did not answer are then
 * marked down by the job when it ends). */
static void run_adopt(lvjob *j) {
  vjob *vj = JITSU_CONTAINER_OF(j, vjob, j);
  for (size_t i = 0; i < vj->n_cands; i++) {
    if (vj->skip[i])
      continue;
    virConnectPtr c = cand_conn(vj, i);
    if (c == NULL)
      continue;
    virDomainPtr d = vj->found ? NULL : virDomainLookupByName(c, vj->name);
    if (d != NULL) {
      int reason;
      if (virDomainGetState(d, &vj->state, &reason, 0) == 0) {
        vj->found = true;
        vj->found_at = i;
        vj->image = virDomainHasManagedSaveImage(d, 0) == 1;
      }
      virDomainFree(d);
    }
    virResetLastError();
    lv_pool_scan(vj, i, c);
    virConnectClose(c);
  }
}

/* The adoption is over with (state) (stopped: nothing adopted). */
static void adopt_end(lvvm *v, jitsu_state state, const char *how) {
  v->op = LOP_NONE;
  lv_pool_fill(v); /* (from the loop) what adoption did not find */
  if (v->timer != NULL)
    uv_timer_stop(v->timer);
  if (v->stop_after_adopt) { /* the stop asked meanwhile, now */
    v->stop_after_adopt = false;
    lv_stop(v->vm, v->adopt_stop_mode, v->adopt_stop_grace_ms);
    return;
  }
  jitsu_backend_adopted(v->vm, state, how);
}

static void adopt_timed_out(uv_timer_t *t) {
  lvvm *v = t->data;
  if (v == NULL || v->op != LOP_ADOPT)
    return;
  char how[96];
  snprintf(how, sizeof(how), "no answer from its hosts within %d ms",
           ADOPT_WAIT_MS);
  jitsu_vm_log(v->vm, JITSU_LOG_WARNING, "%s: not adopting", how);
  adopt_end(v, JITSU_STATE_STOPPED, how);
}

static void adopt_found(vjob *vj) {
  lvvm *v = vj->v;
  lv_hosts_learn(vj);
  v->scanning = false;
  if (v->op != LOP_ADOPT) { /* given up on: the spares are still ours */
    if (!v->released) {
      lv_pool_adopt(v, vj, true);
      lv_pool_fill(v);
    }
    return;
  }
  jitsu_state state = JITSU_STATE_STOPPED;
  /* Not its own name: a spare a start took (our metadata says so). */
  for (size_t k = 0; k < vj->n_spares && !vj->found; k++)
    if (vj->spares[k].taken) {
      vj->found = true;
      vj->found_at = vj->spares[k].host;
      vj->state = vj->spares[k].state;
      vj->image = 0;
      snprintf(v->dom, sizeof(v->dom), "%s", vj->spares[k].name);
    }
  if (vj->found) {
    lvhost *h = vj->cands[vj->found_at];
    if (vj->state == VIR_DOMAIN_RUNNING) {
      state = JITSU_STATE_READY;
    } else if (vj->state == VIR_DOMAIN_PAUSED) {
      state = JITSU_STATE_SUSPENDED;
    } else if (vj->state == VIR_DOMAIN_SHUTOFF && vj->image) {
      state = JITSU_STATE_SUSPENDED;
      v->saved = true;
    }
    if (state != JITSU_STATE_STOPPED)
      v->on = h;
    else
      v->dom[0] = '\0';
  }
  lv_pool_adopt(v, vj, false); /* the other spares: adopted or ended */
  char how[300];
  if (v->on != NULL)
    snprintf(how, sizeof(how), "domain %s on %s", v->saved ? "saved" : "live",
             v->on->uri);
  else
    snprintf(how, sizeof(how), "no live or saved domain on its hosts");
  adopt_end(v, state, how);
}

static int lv_adopt(jitsu_vm *vm, jitsu_state *state) {
  lvvm *v = jitsu_vm_data(vm);
  if (lv_hosts_get(v) < 0)
    return 0;
  vjob *vj = lv_vjob_new(v, run_adopt, adopt_found);
  if (vj == NULL)
    return 0;
  vj->n_cands = v->n_hosts; /* the hosts live as long as (v) */
  for (size_t i = 0; i < v->n_hosts; i++) {
    vj->cands[i] = v->hosts[i];
    vj->skip[i] = v->hosts[i]->down;
  }
  if (lv_vjob_submit(v->hosts[0], vj) < 0)
    return 0;
  v->op = LOP_ADOPT;
  v->scanning = true;
  timer_start(v, adopt_timed_out, ADOPT_WAIT_MS);
  *state = JITSU_STATE_STARTING;
  return 1;
}

/* ---- the rest ----------------------------------------------------------- */

static int lv_configure(jitsu_vm *vm, jitsu_error *err) {
  lvvm *v = calloc(1, sizeof(*v));
  if (v == NULL)
    return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  v->vm = vm;
  v->ctx = jitsu_vm_ctx(vm);
  int r = lv_configure_settings(v, vm, err);
  if (r == 0)
    r = lv_pool_configure(v, vm, err);
  if (r < 0) {
    lv_free(v);
    return r;
  }
  jitsu_vm_set_data(vm, v);
  return 0;
}

static void lv_release(jitsu_vm *vm) {
  lvvm *v = jitsu_vm_data(vm);
  if (v == NULL)
    return;
  jitsu_vm_set_data(vm, NULL);
  lv_pool_drain(v); /* its spares are destroyed */
  if (v->console != NULL && v->on != NULL)
    console_close(v);
  jitsu__timer_drop(&v->timer);
  v->on = NULL; /* the domain lives on, for a later controller */
  for (size_t i = 0; i < v->n_hosts; i++)
    if (v->hosts[i] != NULL)
      lv_host_unuse(v->hosts[i]);
  if (v->pending > 0) {
    v->released = true; /* freed when its last job ends */
    return;
  }
  lv_free(v);
}

static void lv_describe(jitsu_vm *vm, char *buf, size_t size) {
  lvvm *v = jitsu_vm_data(vm);
  char pool[128] = "";
  if (v != NULL)
    lv_pool_describe(v, pool, sizeof(pool));
  if (v == NULL || v->on == NULL) {
    snprintf(buf, size, "no domain%s", pool);
    return;
  }
  snprintf(buf, size, "domain %s%s on %s%s%s", dom_name(v),
           v->saved ? " (saved)" : "", v->on->uri,
           v->on->down ? " (host unreachable)" : "", pool);
}

/* A definition, or a reload's, is in place: its pool fills from the loop. */
static int lv_attach(jitsu_vm *vm, jitsu_error *err) {
  (void)err;
  lv_pool_fill(jitsu_vm_data(vm));
  return 0;
}

static void lv_state_changed(jitsu_vm *vm, jitsu_state old_state,
                             jitsu_state new_state) {
  lvvm *v = jitsu_vm_data(vm);
  (void)old_state;
  if (new_state == JITSU_STATE_STOPPED || new_state == JITSU_STATE_FAILED)
    lv_pool_fill(v); /* the next summon takes a spare again */
  else if (new_state == JITSU_STATE_READY)
    lv_pool_fill_after(v, LV_POOL_AFTER_READY_MS); /* after a take */
}

const jitsu_backend_ops jitsu_backend_libvirt = {
    .version = JITSU_BACKEND_OPS_VERSION,
    .name = "libvirt",
    .keys = lv_keys,
    .n_keys = JITSU__ARRAY_SIZE(lv_keys),
    .configure = lv_configure,
    .release = lv_release,
    .adopt = lv_adopt,
    .start = lv_start,
    .stop = lv_stop,
    .suspend = lv_suspend,
    .resume = lv_resume,
    .attach = lv_attach,
    .state_changed = lv_state_changed,
    .describe = lv_describe,
};

JITSU__MODULE("libvirt", &jitsu_backend_libvirt, NULL);
