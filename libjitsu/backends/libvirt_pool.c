/*
 * Pools of spare domains for the libvirt backend (pool = N): each spare
 * is a transient domain of the vm's XML named "<vm>.spareK", created on
 * the vm's hosts as a start would place it, booted to the guest's console
 * marker, warmed up (the vm's readiness check answered through a forward
 * of its own, as the qemu backend's spares are) and paused
 * (virDomainSuspend). A start takes a ready spare: our
 * metadata on the domain is set to "taken" (from then on no controller
 * hands it out again), the vm's host forwards are added through QEMU's
 * monitor (a spare has none: two spares cannot hold one host port), and
 * it is resumed. libvirt cannot rename a running transient domain, so the
 * vm's domain keeps its spare name until it ends.
 *
 * A controller started after a crash adopts a paused "<vm>.spareK" whose
 * metadata holds the fingerprint of its own definition, takes one marked
 * "taken" for the vm's domain, and ends the others.
 */
#include "libvirt.h"

#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL_BACKOFF_MS 500 /* after a spare failed, doubling */
#define POOL_BACKOFF_MAX_MS 60000
#define POOL_ROOM_MS 1000   /* max-live or max-starting left no room: again */
#define POOL_WARM_ROUNDS 10 /* answers through the warm-up forward */
#define POOL_WARM_MS 30000  /* for each */

int lv_pool_configure(lvvm *v, jitsu_vm *vm, jitsu_error *err) {
  if (jitsu__parse_pool(jitsu_vm_param(vm, "pool", 0), LV_POOL_MAX, &v->pool,
                        err) < 0)
    return -EINVAL;
  if (v->pool > 0 && !jitsu_vm_wants_marker(vm))
    return jitsu_error_set(err, -EINVAL, "pool", "%s",
                           "a pool needs a point to pause its spares at: "
                           "ready = marker (its console-marker)");
  return 0;
}

/* ---- what a spare is made from ------------------------------------------ */

static uint64_t fnv(uint64_t h, const char *s) {
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

/* The fingerprint of what (v)'s spares are made from: its XML, the
 * kernel and initrd files as they are now (a guest image rebuilt in place
 * is another definition) and its marker. */
static void fingerprint(const lvvm *v, char *out, size_t size) {
  uint64_t h = fnv(14695981039346656037ull, v->xml);
  const char *paths[] = {v->kernel, v->initrd};
  for (size_t i = 0; i < 2; i++) {
    char stamp[64];
    jitsu__file_stamp(paths[i], stamp, sizeof(stamp));
    h = fnv(fnv(h, "\n"), stamp);
  }
  h = fnv(fnv(h, "\n"), v->marker);
  snprintf(out, size, "%016llx", (unsigned long long)h);
}

/* On a worker: the monitor command (cmd) (HMP) on domain (d), whose
 * answer is nothing or begins with (ok) when it worked (HMP answers a
 * failure in words); 0, or -1 with (j)'s error saying (what) failed. */
static int hmp_run(lvjob *j, virDomainPtr d, const char *cmd, const char *ok,
                   const char *what) {
  char *reply = NULL;
  if (virDomainQemuMonitorCommand(d, cmd, &reply,
                                  VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP) < 0) {
    lv_fail(j, what);
    return -1;
  }
  int r = 0;
  if (reply != NULL && reply[strspn(reply, " \r\n")] != '\0' &&
      (ok == NULL || strncmp(reply, ok, strlen(ok)) != 0)) {
    reply[strcspn(reply, "\r\n")] = '\0';
    j->rc = -EIO;
    snprintf(j->err, sizeof(j->err), "%s: %s", what, reply);
    r = -1;
  }
  free(reply);
  return r;
}

/* ---- letting spares go --------------------------------------------------- */

static void fill_one(lvvm *v);

static void fill_fired(uv_timer_t *t) {
  lvvm *v = t->data;
  if (v != NULL)
    fill_one(v);
}

/* Try again after a back-off that doubles with each failure in a row
 * (none: the limits left no room). */
static void fill_later(lvvm *v) {
  if (v->pool_timer == NULL || v->released)
    return;
  uint64_t ms = v->pool_fails
                    ? jitsu__backoff_ms(v->pool_fails, POOL_BACKOFF_MS,
                                        POOL_BACKOFF_MAX_MS)
                    : POOL_ROOM_MS;
  uv_timer_start(v->pool_timer, fill_fired, ms, 0);
}

static void spare_free_if_done(lvspare *sp) {
  if (sp->gone && sp->pending == 0) {
    free(sp->xml);
    free(sp);
  }
}

/* Whether (sp) was let go of while a job or probe of it ran: then it is
 * freed if that was the last. */
static bool spare_went(lvspare *sp) {
  if (!sp->gone)
    return false;
  spare_free_if_done(sp);
  return true;
}

/* A name on a host's list of domains being destroyed. */
typedef struct lvdying {
  jitsu_list link;
  char name[96];
} lvdying;

static lvdying *dying_find(const lvhost *h, const char *name) {
  for (jitsu_list *i = h->dying.next; i != &h->dying; i = i->next) {
    lvdying *d = JITSU_CONTAINER_OF(i, lvdying, link);
    if (strcmp(d->name, name) == 0)
      return d;
  }
  return NULL;
}

static void spare_destroyed(vjob *vj) {
  lvdying *d = dying_find(vj->j.host, vj->name);
  if (d != NULL) {
    jitsu_list_remove(&d->link);
    free(d);
  }
  if (vj->j.rc < 0 && vj->j.rc != -ENOENT && !vj->v->released)
    jitsu_vm_log(vj->v->vm, JITSU_LOG_WARNING,
                 "pool: cannot destroy domain %s on %s: %s", vj->name,
                 vj->j.host->uri, vj->j.err);
  if (vj->sp != NULL)
    spare_free_if_done(vj->sp);
}

/* Destroy the domain called (name) on (h), for (v) (which may be released
 * meanwhile: the job keeps it). */
static void destroy_named(lvvm *v, lvspare *sp, lvhost *h, const char *name) {
  vjob *vj = lv_vjob_new(v, lv_run_destroy, spare_destroyed);
  lvdying *d = dying_find(h, name) ? NULL : calloc(1, sizeof(*d));
  if (d != NULL) { /* without it a new spare may try the name too soon */
    snprintf(d->name, sizeof(d->name), "%s", name);
    jitsu_list_append(&h->dying, &d->link);
  }
  if (vj != NULL) {
    vj->sp = sp;
    snprintf(vj->name, sizeof(vj->name), "%s", name);
    if (lv_vjob_submit(h, vj) == 0)
      return;
  }
  if (d != NULL) {
    jitsu_list_remove(&d->link);
    free(d);
  }
  if (!v->released)
    jitsu_vm_log(v->vm, JITSU_LOG_ERROR,
                 "pool: cannot destroy domain %s: out of memory", name);
}

/* (sp) is let go of: its domain (if it has one yet) is destroyed; it is
 * freed when its last job ends. It no longer counts. */
static void spare_let_go(lvspare *sp) {
  lvvm *v = sp->of;
  jitsu_spare_end(&sp->acct);
  sp->gone = true;
  if (sp->probe != NULL)
    jitsu_probe_cancel(sp->probe); /* its callback lets go of (sp) */
  if (sp->console != NULL) {
    lv_stream_release(sp->on, sp->console);
    sp->console = NULL;
  }
  if (sp->on != NULL) {
    lvhost *h = sp->on;
    sp->on = NULL;
    destroy_named(v, sp, h, sp->name); /* (sp) waits for it */
  }
  spare_free_if_done(sp); /* a create in flight destroys what it made */
}

/* Take (sp) out of its pool and let it go. */
static void spare_discard(lvspare *sp) {
  lvvm *v = sp->of;
  for (unsigned i = 0; i < LV_POOL_MAX; i++)
    if (v->spares[i] == sp)
      v->spares[i] = NULL;
  spare_let_go(sp);
}

/* The library needs the room of (sp) for a summon: it ends now, and the
 * pool fills again when there is room. */
static void spare_reclaim(jitsu_spare *a) {
  lvspare *sp = JITSU_CONTAINER_OF(a, lvspare, acct);
  lvvm *v = sp->of;
  jitsu_vm_log(v->vm, JITSU_LOG_INFO, "pool: %s ends: max-live needs its room",
               sp->name);
  spare_discard(sp);
  fill_later(v);
}

/* A spare failed at (what): replace it after the back-off. */
static void spare_failed(lvspare *sp, const char *what, const char *why) {
  lvvm *v = sp->of;
  jitsu_vm_log(v->vm, JITSU_LOG_WARNING, "pool: %s: %s: %s", sp->name, what,
               why);
  spare_discard(sp);
  v->pool_fails++;
  fill_later(v);
}

/* ---- filling --------------------------------------------------------------
 */

static void spare_paused(vjob *vj) {
  lvspare *sp = vj->sp;
  if (spare_went(sp))
    return;
  lvvm *v = sp->of;
  if (vj->j.rc < 0) {
    spare_failed(sp, "cannot pause its domain", vj->j.err);
    return;
  }
  sp->st = LSP_READY;
  v->pool_fails = 0;
  jitsu_spare_filled(&sp->acct);
  sp->acct.memory = v->memory_kib * 1024;
  if (sp->warmed > 0)
    jitsu_vm_log(v->vm, JITSU_LOG_INFO,
                 "pool: %s ready (paused on %s, warmed up by %u answers)",
                 sp->name, sp->on->uri, sp->warmed);
  else
    jitsu_vm_log(v->vm, JITSU_LOG_INFO, "pool: %s ready (paused on %s)",
                 sp->name, sp->on->uri);
  lv_pool_fill(v); /* the next one */
}

/* On a worker: close the spare's console, remove its warm-up forward (if
 * it has one), pause it, and mark it ready in its metadata (a spare is
 * made "filling": one left paused before its guest ran, in the create's
 * own paused start, is not taken for ready by a later controller). A
 * spare reported paused has no console stream left open in the daemon. */
static void spare_pause_on(vjob *vj, virDomainPtr d) {
  lvjob *j = &vj->j;
  if (vj->hmp[0] != '\0' && hmp_run(j, d, vj->hmp, "host forwarding rule for ",
                                    "cannot remove its warm-up forward") < 0)
    return;
  if (virDomainSuspend(d) < 0)
    lv_fail(j, NULL);
  else if (virDomainSetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, vj->meta,
                                "jitsu", LV_POOL_NS,
                                VIR_DOMAIN_AFFECT_LIVE) < 0)
    lv_fail(j, "cannot mark it ready");
}

static void run_spare_pause(lvjob *j) {
  vjob *vj = JITSU_CONTAINER_OF(j, vjob, j);
  if (vj->stream != NULL) {
    if (virStreamAbort(vj->stream) < 0)
      virResetLastError();
    virStreamFree(vj->stream);
    vj->stream = NULL;
  }
  lv_on_domain(j, spare_pause_on);
}

/* (sp) is at its ready point, warmed up or not: it waits, paused, from
 * here (without its warm-up forward). */
static void spare_pause(lvspare *sp) {
  virStreamPtr st = sp->console;
  sp->console = NULL;
  if (st != NULL)
    virStreamEventRemoveCallback(st);
  sp->st = LSP_PAUSING;
  vjob *vj = lv_vjob_new(sp->of, run_spare_pause, spare_paused);
  if (vj != NULL) {
    vj->sp = sp;
    vj->stream = st;
    snprintf(vj->name, sizeof(vj->name), "%s", sp->name);
    snprintf(vj->meta, sizeof(vj->meta),
             "<pool state=\"ready\" fp=\"%s\" warmed=\"%u\"/>", sp->fp,
             sp->warmed);
    if (sp->warm_rule[0] != '\0')
      snprintf(vj->hmp, sizeof(vj->hmp), "hostfwd_remove jitsunet0 %s",
               sp->warm_rule);
    if (lv_vjob_submit(sp->on, vj) == 0)
      return;
  }
  if (st != NULL)
    lv_stream_release(sp->on, st);
  spare_failed(sp, "cannot pause its domain", "out of memory");
}

/* ---- warming a spare up before it is paused ------------------------------
 * As for the qemu backend's spares: a guest's first answer is its slowest
 * (its code runs for the first time; under TCG it is translated first),
 * so a spare whose vm has a tcp or http readiness check, reached through
 * one of its forward rules, gets a forward of its own after its marker,
 * on the rule's host address and a port free there; the check runs
 * through it POOL_WARM_ROUNDS times, then the pause job removes the
 * forward. A spare that cannot be warmed (its host is not this one: the
 * address is not ours) or does not answer is paused as it is. */

static void warm_answered(jitsu_probe *p, int status, void *arg);

static void warm_probe(lvspare *sp) {
  sp->pending++; /* the probe's callback may come after a let-go */
  if (jitsu_vm_probe(sp->of->vm, (struct sockaddr *)&sp->warm_addr,
                     POOL_WARM_MS, warm_answered, sp, &sp->probe) < 0) {
    sp->pending--;
    spare_pause(sp);
  }
}

static void warm_answered(jitsu_probe *p, int status, void *arg) {
  lvspare *sp = arg;
  (void)p;
  sp->probe = NULL;
  sp->pending--;
  if (spare_went(sp))
    return;
  if (status == 0 && ++sp->warmed < POOL_WARM_ROUNDS) {
    warm_probe(sp);
    return;
  }
  if (status != 0)
    jitsu_vm_log(sp->of->vm, JITSU_LOG_WARNING,
                 "pool: %s did not answer through %s within %d s: paused "
                 "after %u answers",
                 sp->name, sp->warm_rule, POOL_WARM_MS / 1000, sp->warmed);
  spare_pause(sp);
}

/* On a worker: add the spare's warm-up forward. */
static void warm_forward_on(vjob *vj, virDomainPtr d) {
  hmp_run(&vj->j, d, vj->hmp, NULL, "hostfwd_add");
}

static void run_warm_forward(lvjob *j) {
  lv_on_domain(j, warm_forward_on);
}

static void warm_forwarded(vjob *vj) {
  lvspare *sp = vj->sp;
  if (spare_went(sp))
    return;
  if (vj->j.rc < 0) {
    jitsu_vm_log(sp->of->vm, JITSU_LOG_WARNING,
                 "pool: %s: cannot add its warm-up forward (%s): paused "
                 "without warming up",
                 sp->name, vj->j.err);
    sp->warm_rule[0] = '\0';
    spare_pause(sp);
    return;
  }
  warm_probe(sp);
}

/* The guest side of (v)'s forward rule ("tcp:ADDR:HP-:GP") whose host
 * port is (port), its host address into (addr); NULL if there is none. */
static const char *ready_forward(const lvvm *v, unsigned port, char *addr,
                                 size_t size) {
  for (size_t i = 0; i < v->n_fwd; i++) {
    unsigned host_port;
    const char *guest = jitsu__hostfwd_parts(v->fwd[i], addr, size, &host_port);
    if (guest != NULL && host_port == port)
      return guest;
  }
  return NULL;
}

/* Begin warming (sp) up: 0, or -1 when it cannot be. */
static int warm_begin(lvspare *sp) {
  lvvm *v = sp->of;
  char addr[INET_ADDRSTRLEN];
  const char *guest =
      ready_forward(v, jitsu_vm_ready_port(v->vm), addr, sizeof(addr));
  if (guest == NULL)
    return -1;
  sp->warm_addr = (struct sockaddr_in){.sin_family = AF_INET};
  if (inet_pton(AF_INET, addr, &sp->warm_addr.sin_addr) != 1 ||
      jitsu__free_tcp_port(&sp->warm_addr) < 0)
    return -1; /* not an address of ours: the spare is on another host */
  vjob *vj = lv_vjob_new(v, run_warm_forward, warm_forwarded);
  if (vj == NULL)
    return -1;
  snprintf(sp->warm_rule, sizeof(sp->warm_rule), "tcp:%s:%u", addr,
           (unsigned)ntohs(sp->warm_addr.sin_port));
  vj->sp = sp;
  snprintf(vj->name, sizeof(vj->name), "%s", sp->name);
  snprintf(vj->hmp, sizeof(vj->hmp), "hostfwd_add jitsunet0 %s-%s",
           sp->warm_rule, guest);
  if (lv_vjob_submit(sp->on, vj) < 0) {
    sp->warm_rule[0] = '\0';
    return -1;
  }
  sp->st = LSP_WARMING;
  return 0;
}

/* (sp)'s marker was seen, and its create job reported. */
static void spare_marked(lvspare *sp) {
  if (warm_begin(sp) < 0)
    spare_pause(sp);
}

/* A line of a spare's console: false once reading must stop. */
static bool spare_line(void *arg) {
  lvspare *sp = arg;
  if (sp->st != LSP_FILLING || strstr(sp->line, sp->of->marker) == NULL)
    return true;
  if (sp->on == NULL) { /* its create job has not reported yet */
    sp->marker_seen = true;
    return false;
  }
  spare_marked(sp);
  return false;
}

static void spare_console(virStreamPtr st, int events, void *opaque) {
  lvspare *sp = opaque;
  (void)events;
  if (sp->gone || sp->marker_seen || sp->st != LSP_FILLING) {
    virStreamEventUpdateCallback(st, 0);
    return;
  }
  if (lv_console_read(st, sp->line, sizeof(sp->line), &sp->line_len, spare_line,
                      sp) == 0)
    return;
  virStreamEventUpdateCallback(st, 0); /* it went away: its event says */
}

static void spare_created(vjob *vj) {
  lvspare *sp = vj->sp;
  lvvm *v = vj->v;
  free(sp->xml);
  sp->xml = NULL;
  if (sp->gone) { /* let go of meanwhile: what the job made goes too */
    if (vj->stream != NULL)
      lv_stream_release(vj->chosen, vj->stream);
    if (vj->j.rc == 0)
      destroy_named(v, sp, vj->chosen, sp->name);
    spare_free_if_done(sp);
    return;
  }
  lv_hosts_learn(vj);
  if (vj->j.rc < 0) {
    spare_failed(sp, "cannot create its domain", vj->j.err);
    return;
  }
  sp->on = vj->chosen;
  sp->console = vj->stream;
  jitsu_vm_log(v->vm, JITSU_LOG_DEBUG, "pool: %s created on %s", sp->name,
               sp->on->uri);
  if (sp->marker_seen)
    spare_marked(sp);
}

/* Whether domain name "<vm>.spareK" is free: no spare of (v) has it, it
 * is not the vm's domain, and no domain of that name is being destroyed
 * on its hosts (a reload's old spares: their destroy and a new create
 * run side by side). */
static bool name_free(const lvvm *v, const char *name) {
  if (strcmp(v->dom, name) == 0)
    return false;
  for (size_t i = 0; i < v->n_hosts; i++)
    if (v->hosts[i] != NULL && dying_find(v->hosts[i], name) != NULL)
      return false;
  for (unsigned i = 0; i < LV_POOL_MAX; i++)
    if (v->spares[i] != NULL && strcmp(v->spares[i]->name, name) == 0)
      return false;
  return true;
}

static void fill_one(lvvm *v) {
  if (v->released || v->pool == 0 || v->op == LOP_ADOPT || v->scanning ||
      lv_hosts_get(v) < 0)
    return;
  unsigned slot = v->pool;
  for (unsigned i = 0; i < v->pool; i++) {
    if (v->spares[i] != NULL && v->spares[i]->st != LSP_READY)
      return; /* one at a time */
    if (v->spares[i] == NULL && slot == v->pool)
      slot = i;
  }
  if (slot == v->pool)
    return; /* full */
  lvspare *sp = calloc(1, sizeof(*sp));
  if (sp == NULL) {
    jitsu_vm_log(v->vm, JITSU_LOG_ERROR, "pool: out of memory");
    return;
  }
  sp->of = v;
  for (unsigned k = 1; k <= LV_SPARE_NAMES; k++) {
    snprintf(sp->name, sizeof(sp->name), "%s.spare%u", jitsu_vm_name(v->vm), k);
    if (name_free(v, sp->name))
      break;
  }
  if (jitsu_spare_begin(v->vm, &sp->acct, spare_reclaim) < 0) {
    /* Live guests and spares fill max-live, or starts max-starting, or
     * summons wait: they come first. */
    jitsu_vm_log(v->vm, JITSU_LOG_DEBUG, "pool: no room for %s yet", sp->name);
    free(sp);
    fill_later(v);
    return;
  }
  fingerprint(v, sp->fp, sizeof(sp->fp));
  sp->xml = lv_spare_xml(v, sp->name, sp->fp);
  vjob *vj = sp->xml ? lv_vjob_new(v, lv_run_start, spare_created) : NULL;
  if (vj != NULL) {
    vj->sp = sp;
    snprintf(vj->name, sizeof(vj->name), "%s", sp->name);
    vj->xml = sp->xml;
    vj->marker = true;
    vj->console_cb = spare_console;
    vj->console_arg = sp;
    lv_start_cands(v, vj);
  }
  v->spares[slot] = sp;
  if (vj == NULL || lv_vjob_submit(v->hosts[0], vj) < 0) {
    spare_failed(sp, "cannot queue its create", "out of memory");
    return;
  }
  jitsu_vm_log(v->vm, JITSU_LOG_DEBUG, "pool: %s filling", sp->name);
}

void lv_pool_fill(lvvm *v) {
  lv_pool_fill_after(v, 0);
}

void lv_pool_fill_after(lvvm *v, uint64_t ms) {
  if (v == NULL || v->pool == 0 || v->released)
    return;
  if (jitsu__timer_get(&v->pool_timer, jitsu_ctx_loop(v->ctx), v) == NULL)
    return;
  /* From the loop, never inside the call that asked (a definition, a state
   * change); a back-off under way is kept. */
  if (!uv_is_active((uv_handle_t *)v->pool_timer))
    uv_timer_start(v->pool_timer, fill_fired, ms, 0);
}

bool lv_pool_event(lvvm *v, lvhost *h, const char *name, int event) {
  for (unsigned i = 0; i < LV_POOL_MAX; i++) {
    lvspare *sp = v->spares[i];
    if (sp == NULL || sp->on != h || strcmp(sp->name, name) != 0)
      continue;
    if (event == VIR_DOMAIN_EVENT_STOPPED) {
      if (sp->console != NULL) {
        lv_stream_release(sp->on, sp->console);
        sp->console = NULL;
      }
      sp->on = NULL; /* nothing left to destroy */
      spare_failed(
          sp, sp->st == LSP_READY ? "gone while ready" : "gone while filling",
          "replacing it");
    }
    return true;
  }
  return false;
}

/* ---- taking a spare -------------------------------------------------------
 */

/* On a worker: mark the spare taken, give it the vm's forwards, let it
 * run. */
static void take_on(vjob *vj, virDomainPtr d) {
  lvjob *j = &vj->j;
  if (virDomainSetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT,
                           "<pool state=\"taken\"/>", "jitsu", LV_POOL_NS,
                           VIR_DOMAIN_AFFECT_LIVE) < 0) {
    lv_fail(j, "cannot mark it taken");
    return;
  }
  for (size_t i = 0; i < vj->n_fwd; i++) {
    char cmd[160], what[128];
    snprintf(cmd, sizeof(cmd), "hostfwd_add jitsunet0 %s", vj->fwd[i]);
    snprintf(what, sizeof(what), "forward %s", vj->fwd[i]);
    if (hmp_run(j, d, cmd, NULL, what) < 0)
      return;
  }
  if (virDomainResume(d) < 0)
    lv_fail(j, "cannot let it run");
}

static void run_take(lvjob *j) {
  lv_on_domain(j, take_on);
}

static void taken(vjob *vj) {
  lvspare *sp = vj->sp;
  lvvm *v = vj->v;
  sp->gone = true;   /* the vm's (or nobody's) from here */
  if (v->released) { /* the guest lives on, for a later controller */
    spare_free_if_done(sp);
    return;
  }
  v->op = LOP_NONE;
  if (vj->j.rc < 0) {
    jitsu_vm_log(v->vm, JITSU_LOG_WARNING,
                 "pool: cannot take %s on %s: %s: a cold start", sp->name,
                 sp->on->uri, vj->j.err);
    lvhost *h = sp->on;
    sp->on = NULL;
    destroy_named(v, sp, h, sp->name);
    spare_free_if_done(sp);
    v->pool_fails++;
    if (lv_start_cold(v) < 0)
      jitsu_backend_started(v->vm, -EIO);
    return;
  }
  v->on = sp->on;
  v->saved = false;
  snprintf(v->dom, sizeof(v->dom), "%s", sp->name);
  v->pool_takes++;
  jitsu_vm *vm = v->vm;
  jitsu_vm_log(vm, JITSU_LOG_INFO, "domain %s on %s taken from the pool",
               v->dom, v->on->uri);
  jitsu_backend_marker(vm); /* seen before it was paused */
  if (sp->warmed > 0)
    jitsu_backend_checked(vm); /* it answered the check before its pause */
  spare_free_if_done(sp);
  jitsu_backend_started(vm, 0); /* last: a report may free (v) */
}

int lv_pool_take(lvvm *v) {
  if (v->pool == 0)
    return 0;
  unsigned slot = 0;
  while (slot < v->pool &&
         (v->spares[slot] == NULL || v->spares[slot]->st != LSP_READY ||
          v->spares[slot]->pending > 0 || v->spares[slot]->on->down))
    slot++;
  if (slot == v->pool) {
    jitsu_vm_log(v->vm, JITSU_LOG_INFO, "pool: no spare ready: a cold start");
    return 0;
  }
  lvspare *sp = v->spares[slot];
  vjob *vj = lv_vjob_new(v, run_take, taken);
  if (vj == NULL)
    return 0;
  vj->sp = sp;
  snprintf(vj->name, sizeof(vj->name), "%s", sp->name);
  vj->fwd = (const char(*)[96])v->fwd;
  vj->n_fwd = v->n_fwd;
  v->spares[slot] = NULL;
  if (lv_vjob_submit(sp->on, vj) < 0) {
    v->spares[slot] = sp;
    return 0;
  }
  jitsu_spare_end(&sp->acct); /* the vm's start, counted as such */
  v->op = LOP_CREATE;
  if (v->pool_timer != NULL) /* a fill due: it waits for the guest's ready */
    uv_timer_stop(v->pool_timer);
  return 1;
}

/* ---- the end --------------------------------------------------------------
 */

void lv_pool_drain(lvvm *v) {
  jitsu__timer_drop(&v->pool_timer);
  for (unsigned i = 0; i < LV_POOL_MAX; i++)
    if (v->spares[i] != NULL)
      spare_discard(v->spares[i]);
}

void lv_pool_describe(lvvm *v, char *buf, size_t size) {
  unsigned ready = 0, warmed = 0;
  for (unsigned i = 0; i < v->pool; i++)
    if (v->spares[i] != NULL && v->spares[i]->st == LSP_READY) {
      ready++;
      warmed += v->spares[i]->warmed > 0;
    }
  if (v->pool > 0)
    snprintf(buf, size, ", pool %u/%u ready (%u warmed up), %llu taken", ready,
             v->pool, warmed, (unsigned long long)v->pool_takes);
}

/* ---- spares left by a controller before us --------------------------------
 */

void lv_pool_scan(vjob *vj, size_t i, virConnectPtr c) {
  virDomainPtr *list = NULL;
  int n = virConnectListAllDomains(c, &list, 0);
  char prefix[300];
  snprintf(prefix, sizeof(prefix), "%s.spare", vj->name);
  size_t pl = strlen(prefix);
  for (int k = 0; k < n; k++) {
    const char *name = virDomainGetName(list[k]);
    size_t cap = sizeof(vj->spares) / sizeof(vj->spares[0]);
    if (name != NULL && strncmp(name, prefix, pl) == 0 && name[pl] != '\0' &&
        strspn(name + pl, "0123456789") == strlen(name + pl) &&
        strlen(name) < sizeof(vj->spares[0].name) && vj->n_spares < cap) {
      struct lvfound *f = &vj->spares[vj->n_spares];
      int reason;
      memset(f, 0, sizeof(*f));
      snprintf(f->name, sizeof(f->name), "%s", name);
      f->host = i;
      if (virDomainGetState(list[k], &f->state, &reason, 0) < 0)
        f->state = -1;
      char *meta = virDomainGetMetadata(list[k], VIR_DOMAIN_METADATA_ELEMENT,
                                        LV_POOL_NS, 0);
      if (meta != NULL) {
        char state[16];
        f->ours = true;
        lv_meta_attr(meta, "state", state, sizeof(state));
        f->taken = strcmp(state, "taken") == 0;
        f->ready = strcmp(state, "ready") == 0;
        lv_meta_attr(meta, "fp", f->fp, sizeof(f->fp));
        char warmed[16];
        lv_meta_attr(meta, "warmed", warmed, sizeof(warmed));
        f->warmed = (unsigned)strtoul(warmed, NULL, 10);
        free(meta);
      }
      vj->n_spares++;
    }
    virDomainFree(list[k]);
  }
  free(list);
  virResetLastError();
}

void lv_pool_adopt(lvvm *v, vjob *vj, bool late) {
  char fp[24];
  fingerprint(v, fp, sizeof(fp));
  for (size_t k = 0; k < vj->n_spares; k++) {
    struct lvfound *f = &vj->spares[k];
    lvhost *h = vj->cands[f->host];
    if (strcmp(f->name, v->dom) == 0 && v->on == h)
      continue; /* the vm's own domain, a spare taken before */
    if (late && f->taken) {
      jitsu_vm_log(v->vm, JITSU_LOG_WARNING,
                   "pool: domain %s on %s, the vm's guest under an earlier "
                   "controller, answered after the adoption gave up: left "
                   "running (destroy it: it holds the vm's forwards)",
                   f->name, h->uri);
      continue;
    }
    unsigned slot = 0;
    while (slot < v->pool && v->spares[slot] != NULL)
      slot++;
    const char *why = NULL;
    lvspare *sp = NULL;
    if (f->taken)
      why = "a start took it, and the vm has another domain";
    else if (!f->ours || strcmp(f->fp, fp) != 0)
      why = "it was not made for this definition";
    else if (f->state != VIR_DOMAIN_PAUSED || !f->ready)
      why = "it is not paused at its ready point";
    else if (slot >= v->pool)
      why = "the pool is smaller now";
    else if ((sp = calloc(1, sizeof(*sp))) == NULL)
      why = "out of memory";
    else if (jitsu_spare_adopt(v->vm, &sp->acct, spare_reclaim) < 0)
      why = "max-live leaves no room for it";
    if (why == NULL) {
      sp->of = v;
      sp->on = h;
      sp->st = LSP_READY;
      sp->warmed = f->warmed;
      sp->acct.memory = v->memory_kib * 1024;
      snprintf(sp->name, sizeof(sp->name), "%s", f->name);
      v->spares[slot] = sp;
      jitsu_vm_log(v->vm, JITSU_LOG_INFO,
                   "pool: %s adopted (paused at its ready point on %s)",
                   f->name, h->uri);
      continue;
    }
    free(sp);
    jitsu_vm_log(v->vm, JITSU_LOG_INFO,
                 "pool: ending domain %s on %s, left by an earlier "
                 "controller: %s",
                 f->name, h->uri, why);
    destroy_named(v, NULL, h, f->name);
  }
}
