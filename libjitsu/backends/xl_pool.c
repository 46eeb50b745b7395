/* Pools of spare domains (pool = N), LightVM's pre-created shells: each
 * spare is a domain of the vm's definition named "<vm>.spareN", created,
 * booted to the guest's ready point (its XenStore key or console marker)
 * and paused. A start takes a ready spare: its domain is renamed to the
 * vm's, becomes the vm's domain (its channel names are handed to it) and
 * is unpaused. The pool refills one spare at a time, in the background,
 * after the taken guest is ready; a spare that dies is replaced after a
 * back-off. A ready spare has a file "<vm>.spareN.ready" beside the vm's
 * state, holding what it was made from: a controller started after a
 * crash adopts a paused "<vm>.spareN" only when that file matches its own
 * definition, and ends the others. */
#include "xl.h"

#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POOL_BACKOFF_MS 200 /* after a spare failed, doubling */
#define POOL_BACKOFF_MAX_MS 60000
#define POOL_ROOM_MS 1000 /* max-live or max-starting left no room: again */

int xl_pool_configure(xvm *x, jitsu_vm *vm, jitsu_error *err) {
  if (jitsu__parse_pool(jitsu_vm_param(vm, "pool", 0), XL_POOL_MAX, &x->pool,
                        err) < 0)
    return -EINVAL;
  if (x->pool == 0)
    return 0;
  if (!jitsu_vm_wants_marker(vm))
    return jitsu_error_set(err, -EINVAL, "pool",
                           "a pool needs a point to pause its spares at: "
                           "ready = marker (ready-key or console-marker)");
  /* Spares are made from one definition: a vif's ip= would be claimed by
   * each of them (a routed vif's hotplug script gives each domain the
   * address's route), so a spare taken later could not be reached. */
  libxl_domain_config dc;
  char why[512];
  if (xl_build_config(x, &dc, why, sizeof(why)) < 0)
    return 0; /* the start says why; the pool does not fill meanwhile */
  const char *ip = NULL;
  for (int i = 0; i < dc.num_nics && ip == NULL; i++)
    ip = dc.nics[i].ip;
  int r = ip == NULL ? 0
                     : jitsu_error_set(err, -EINVAL, "pool",
                                       "the spares of a pool would share the "
                                       "vif address ip=%s: give the guest its "
                                       "address itself (e.g. on a bridge), "
                                       "or pool = 0",
                                       ip);
  libxl_domain_config_dispose(&dc);
  return r;
}

/* ---- a spare's ready file ------------------------------------------------ */

/* What spare (s) is made from: its domain configuration as libxl writes
 * it (JSON), the kernel and ramdisk files as they are now (a guest image
 * rebuilt in place is another definition) and its readiness marker; NULL
 * if it cannot be said. */
static char *spare_fingerprint(xvm *s) {
  libxl_domain_config dc;
  char why[512];
  if (s->host == NULL || xl_build_config(s, &dc, why, sizeof(why)) < 0)
    return NULL;
  char *json = libxl_domain_config_to_json(s->host->lx, &dc);
  char files[2][64] = {"", ""};
  const char *paths[2] = {dc.b_info.kernel, dc.b_info.ramdisk};
  for (int i = 0; i < 2; i++)
    jitsu__file_stamp(paths[i], files[i], sizeof(files[i]));
  libxl_domain_config_dispose(&dc);
  if (json == NULL)
    return NULL;
  const char *key = s->ready_key ? s->ready_key : "";
  const char *marker = s->marker ? s->marker : "";
  size_t len = strlen(json) + strlen(key) + strlen(marker) + 200;
  char *fp = malloc(len);
  if (fp != NULL)
    snprintf(fp, len, "%s\nkernel=%s\nramdisk=%s\nready-key=%s\nmarker=%s\n",
             json, files[0], files[1], key, marker);
  free(json);
  return fp;
}

/* The path of spare (s)'s file "<vm>.spareN.(what)": "ready" (what it was
 * made from) or "bridges" (its vifs' bridges). */
static int spare_path(xvm *s, const char *what, char *out, size_t size) {
  char suffix[32];
  snprintf(suffix, sizeof(suffix), "%s.%s", s->tag, what);
  return xl_path(s, suffix, out, size);
}

/* Best effort: without the file a later controller ends the spare. */
static void ready_file_put(xvm *s) {
  char path[PATH_MAX];
  if (spare_path(s, "ready", path, sizeof(path)) == 0)
    (void)jitsu__file_put(path, s->fp);
}

static void spare_file_remove(xvm *s, const char *what) {
  char path[PATH_MAX];
  if (spare_path(s, what, path, sizeof(path)) == 0)
    unlink(path);
}

static void ready_file_remove(xvm *s) {
  spare_file_remove(s, "ready");
  spare_file_remove(s, "bridges");
}

/* ---- a spare's vifs off their bridges ------------------------------------ */

/* Spares are made from one definition: on a bridge they would all show
 * the vm's MAC (and the address its guest gives itself). So each vif of a
 * spare is taken off its Linux bridge once the domain exists (paused, its
 * hotplug script done, not a frame sent yet), and put back when the spare
 * is taken. The bridges are kept in "<vm>.spareN.bridges" ("I BRIDGE"
 * lines) for a controller that adopts the spare. */
static void vif_name(xvm *s, unsigned i, char *out, size_t size) {
  snprintf(out, size, "vif%u.%u", s->domid, i);
}

/* The Linux bridge that (ifname) is a port of, in (out); "" if none. */
static void bridge_of(const char *ifname, char *out, size_t size) {
  char path[128], target[PATH_MAX];
  out[0] = '\0';
  snprintf(path, sizeof(path), "/sys/class/net/%s/brport", ifname);
  if (access(path, F_OK) != 0)
    return; /* routed, or another kind of switch */
  snprintf(path, sizeof(path), "/sys/class/net/%s/master", ifname);
  ssize_t n = readlink(path, target, sizeof(target) - 1);
  if (n <= 0)
    return;
  target[n] = '\0';
  const char *base = strrchr(target, '/');
  snprintf(out, size, "%s", base != NULL ? base + 1 : target);
}

/* Put vif (i) of spare (s) on its bridge (join) or take it off: 0, or -1
 * with (why). */
static int vif_port(xvm *s, unsigned i, bool join, char *why, size_t size) {
  char name[32];
  vif_name(s, i, name, sizeof(name));
  const char *what;
  int e = jitsu__bridge_port(s->vif_bridge[i], name, join, &what);
  if (e == 0)
    return 0;
  snprintf(why, size, "%s: %s (bridge %s): %s", name, what, s->vif_bridge[i],
           strerror(e));
  return -1;
}

/* Take the vifs of new spare (s) off their bridges: 0, or -1 with (why). */
static int vifs_leave(xvm *s, char *why, size_t size) {
  char text[XL_NET_MAX * 40] = "", name[32], path[PATH_MAX];
  size_t len = 0;
  for (unsigned i = 0; i < XL_NET_MAX; i++) {
    vif_name(s, i, name, sizeof(name));
    bridge_of(name, s->vif_bridge[i], sizeof(s->vif_bridge[i]));
    if (s->vif_bridge[i][0] == '\0')
      continue;
    if (vif_port(s, i, false, why, size) < 0)
      return -1;
    len += (size_t)snprintf(text + len, sizeof(text) - len, "%u %s\n", i,
                            s->vif_bridge[i]);
  }
  if (len > 0 && (spare_path(s, "bridges", path, sizeof(path)) < 0 ||
                  !jitsu__file_put(path, text))) {
    snprintf(why, size, "cannot write %s", path);
    return -1;
  }
  return 0;
}

/* The bridges of adopted spare (s), from its file. */
static void vifs_read(xvm *s) {
  char path[PATH_MAX], line[64], bridge[16];
  if (spare_path(s, "bridges", path, sizeof(path)) < 0)
    return;
  FILE *f = fopen(path, "re");
  unsigned i;
  while (f != NULL && fgets(line, sizeof(line), f) != NULL)
    if (sscanf(line, "%u %15s", &i, bridge) == 2 && i < XL_NET_MAX)
      snprintf(s->vif_bridge[i], sizeof(s->vif_bridge[i]), "%s", bridge);
  if (f != NULL)
    fclose(f);
}

/* Put the vifs of taken spare (s) back on their bridges: 0, or -1 with
 * (why). */
static int vifs_join(xvm *s, char *why, size_t size) {
  for (unsigned i = 0; i < XL_NET_MAX; i++)
    if (s->vif_bridge[i][0] != '\0' && vif_port(s, i, true, why, size) < 0)
      return -1;
  return 0;
}

/* ---- filling ------------------------------------------------------------- */

static void fill_one(xvm *x);

static void fill_fired(uv_timer_t *t) {
  xvm *x = t->data;
  if (x != NULL)
    fill_one(x);
}

/* Try again after a back-off that doubles with each failure in a row
 * (none: the limits left no room). */
static void fill_later(xvm *x) {
  if (x->pool_timer == NULL)
    return;
  uint64_t ms = x->pool_fails
                    ? jitsu__backoff_ms(x->pool_fails, POOL_BACKOFF_MS,
                                        POOL_BACKOFF_MAX_MS)
                    : POOL_ROOM_MS;
  uv_timer_start(x->pool_timer, fill_fired, ms, 0);
}

/* Take spare (s) out of its pool and let it go (its domain is destroyed,
 * its ready file removed). */
static void spare_discard(xvm *s) {
  xvm *x = s->of;
  for (unsigned i = 0; i < XL_POOL_MAX; i++)
    if (x->spares[i] == s)
      x->spares[i] = NULL;
  if (s->spare == XSPARE_READY) {
    ready_file_remove(s);
  } else {
    spare_file_remove(s, "bridges"); /* written when its domain was made */
  }
  jitsu_spare_end(&s->acct);
  xl_spare_drop(s);
}

/* The library needs the room of spare (s) for a summon: it ends now, and
 * its pool fills again when there is room. */
static void spare_reclaim(jitsu_spare *a) {
  xvm *s = JITSU_CONTAINER_OF(a, xvm, acct);
  xvm *x = s->of;
  jitsu_vm_log(s->vm, JITSU_LOG_INFO,
               "pool: %s (domain %u) ends: max-live needs its room", s->tag,
               s->domid);
  spare_discard(s);
  fill_later(x);
}

/* A new spare of (x) for (slot), with the vm's settings: NULL if there is
 * no memory. */
static xvm *spare_new(xvm *x, unsigned slot) {
  xvm *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return NULL;
  /* The settings point into the vm's params, which outlive the spare in
   * the pool: xl_release() drains the pool first. */
  memcpy(s, x, offsetof(xvm, domid));
  jitsu_list_init(&s->link);
  s->host = NULL;
  s->save_fd = -1;
  s->console_fd = -1;
  s->spare = XSPARE_FILLING;
  s->of = x;
  snprintf(s->tag, sizeof(s->tag), "spare%u", slot + 1);
  return s;
}

static void fill_one(xvm *x) {
  unsigned slot = x->pool;
  for (unsigned i = 0; i < x->pool; i++) {
    if (x->spares[i] != NULL && x->spares[i]->spare == XSPARE_FILLING)
      return; /* one at a time */
    if (x->spares[i] == NULL && slot == x->pool)
      slot = i;
  }
  if (slot == x->pool)
    return; /* full */
  jitsu_vm *vm = x->vm;
  /* The vm's own xvm is on the host too: its spares' watches are found
   * through it. No Xen here: nothing will fill the pool. */
  if (xl_ensure_host(x) < 0)
    return;
  xvm *s = spare_new(x, slot);
  if (s == NULL) {
    jitsu_vm_log(vm, JITSU_LOG_ERROR, "pool: out of memory");
    return;
  }
  if (jitsu_spare_begin(vm, &s->acct, spare_reclaim) < 0) {
    /* Live guests and spares fill max-live, or starts max-starting, or
     * summons wait: they come first. */
    jitsu_vm_log(vm, JITSU_LOG_DEBUG, "pool: no room for %s yet", s->tag);
    free(s);
    fill_later(x);
    return;
  }
  int r = xl_ensure_host(s);
  if (r == 0) {
    x->spares[slot] = s; /* (s) may be dropped from here on */
    s->fp = spare_fingerprint(s);
    r = xl_launch(s, XOP_CREATE);
  }
  if (r < 0) {
    /* xl_launch() logged why. No Xen here: nothing will fill the pool. */
    spare_discard(s); /* in its slot or not yet */
    if (r == -ENODEV)
      return;
    x->pool_fails++;
    fill_later(x);
    return;
  }
  jitsu_vm_log(vm, JITSU_LOG_DEBUG, "pool: %s filling", s->tag);
}

void xl_pool_fill(xvm *x) {
  xl_pool_fill_after(x, 0);
}

void xl_pool_fill_after(xvm *x, uint64_t ms) {
  if (x == NULL || x->pool == 0 || x->spare != XSPARE_NO || x->released)
    return;
  if (jitsu__timer_get(&x->pool_timer, jitsu_ctx_loop(jitsu_vm_ctx(x->vm)),
                       x) == NULL)
    return;
  /* From the loop, never inside the call that asked (a definition, a state
   * change); a back-off under way is kept. */
  if (!uv_is_active((uv_handle_t *)x->pool_timer))
    uv_timer_start(x->pool_timer, fill_fired, ms, 0);
}

void xl_pool_spare_created(xvm *s, int rc) {
  xvm *x = s->of;
  if (rc != 0) {
    jitsu_vm_log(s->vm, JITSU_LOG_WARNING,
                 "pool: %s: cannot create the domain: %s", s->tag,
                 xl_libxl_why(s, "libxl failed"));
    spare_discard(s);
    x->pool_fails++;
    fill_later(x);
    return;
  }
  xl_went_live(s);
  jitsu_vm_log(s->vm, JITSU_LOG_DEBUG, "pool: %s is domain %u", s->tag,
               s->domid);
  char why[200];
  if (vifs_leave(s, why, sizeof(why)) < 0) {
    snprintf(s->exit_how, sizeof(s->exit_how), "%s", why);
    jitsu_vm_log(s->vm, JITSU_LOG_WARNING, "pool: %s: %s", s->tag, why);
    xl_destroy_domain(s); /* its death replaces it */
    return;
  }
  xl_readiness_begin(s);
}

static void spare_paused(xvm *s, int rc) {
  xvm *x = s->of;
  if (s->spare != XSPARE_FILLING || !s->live)
    return;
  if (rc != 0) {
    jitsu_vm_log(s->vm, JITSU_LOG_WARNING,
                 "pool: %s: cannot pause domain %u: %s", s->tag, s->domid,
                 xl_libxl_why(s, "libxl failed"));
    spare_discard(s);
    x->pool_fails++;
    fill_later(x);
    return;
  }
  s->spare = XSPARE_READY;
  x->pool_fails = 0;
  jitsu_spare_filled(&s->acct);
  libxl_dominfo info;
  libxl_dominfo_init(&info);
  if (libxl_domain_info(s->host->lx, &info, s->domid) == 0)
    s->acct.memory = info.current_memkb * 1024;
  libxl_dominfo_dispose(&info);
  ready_file_put(s);
  jitsu_vm_log(s->vm, JITSU_LOG_INFO, "pool: %s ready (domain %u, paused)",
               s->tag, s->domid);
  xl_pool_fill(x); /* the next one */
}

/* Called from the spare's console or watch handlers: (s) stays. */
void xl_pool_spare_marker(xvm *s) {
  if (s->spare != XSPARE_FILLING || !s->live)
    return;
  libxl_asyncop_how how;
  if (xl_ao_how(s, spare_paused, &how) < 0)
    goto fail;
  if (libxl_domain_pause(s->host->lx, s->domid, &how) != 0) {
    xl_ao_abandon(s, &how);
    goto fail;
  }
  return;
fail:
  snprintf(s->exit_how, sizeof(s->exit_how), "could not be paused: %s",
           xl_libxl_why(s, "libxl refused"));
  xl_destroy_domain(s); /* its death replaces it */
}

void xl_pool_spare_gone(xvm *s) {
  xvm *x = s->of;
  jitsu_vm_log(s->vm, JITSU_LOG_WARNING,
               "pool: %s (domain %u) is gone while %s; replacing it", s->tag,
               s->domid, s->spare == XSPARE_READY ? "ready" : "filling");
  spare_discard(s);
  x->pool_fails++;
  fill_later(x);
}

/* ---- taking a spare ------------------------------------------------------ */

/* The take's outcome, from the loop (libxl may complete the unpause
 * inside the call that asked for it): the vm is started, and past its
 * marker. A stop that came meanwhile took the timer and ends the start. */
static void taken_report(uv_timer_t *t) {
  xvm *x = t->data;
  if (x == NULL || !x->live || x->op != XOP_CREATE)
    return;
  int rc = x->take_rc;
  x->op = XOP_NONE;
  if (rc != 0) {
    snprintf(x->exit_how, sizeof(x->exit_how),
             "the spare domain could not be unpaused: %s",
             xl_libxl_why(x, "libxl failed"));
    xl_destroy_domain(x); /* its death ends the start */
    return;
  }
  jitsu_vm *vm = x->vm;
  jitsu_vm_log(vm, JITSU_LOG_INFO, "domain %u taken from the pool", x->domid);
  jitsu_backend_started(vm, 0);
  if (jitsu_vm_data(vm) == x)
    jitsu_backend_marker(vm); /* shown before it was paused */
}

static void taken_running(xvm *x, int rc) {
  if (!x->live || x->op != XOP_CREATE)
    return;
  x->take_rc = rc;
  if (xl_timer_start(x, taken_report, 0) < 0) {
    x->take_rc = -ENOMEM;
    x->op = XOP_NONE;
    xl_destroy_domain(x); /* its death ends the start */
  }
}

int xl_pool_take(xvm *x) {
  if (x->pool == 0 || xl_ensure_host(x) < 0)
    return 0;
  unsigned slot = 0;
  while (slot < x->pool &&
         (x->spares[slot] == NULL || x->spares[slot]->spare != XSPARE_READY ||
          x->spares[slot]->pending > 0))
    slot++;
  if (slot == x->pool) {
    jitsu_vm_log(x->vm, JITSU_LOG_INFO, "pool: no spare ready: a cold start");
    return 0;
  }
  xvm *s = x->spares[slot];
  char from[300], why[200];
  if (vifs_join(s, why, sizeof(why)) < 0) {
    jitsu_vm_log(x->vm, JITSU_LOG_WARNING, "pool: cannot take %s: %s: %s",
                 s->tag, why, "a cold start");
    spare_discard(s);
    x->pool_fails++;
    fill_later(x);
    return 0;
  }
  xl_domain_name(s, from, sizeof(from));
  /* Without its ready file no controller after us takes it for a spare,
   * whatever happens next: a guest is handed out once. */
  ready_file_remove(s);
  xl_host_clear_error(s->host);
  if (libxl_domain_rename(s->host->lx, s->domid, from, jitsu_vm_name(x->vm)) !=
      0) {
    jitsu_vm_log(x->vm, JITSU_LOG_WARNING,
                 "pool: cannot rename domain %u from %s: %s: a cold start",
                 s->domid, from, xl_libxl_why(s, "libxl failed"));
    spare_discard(s);
    x->pool_fails++;
    fill_later(x);
    return 0;
  }
  /* The domain is the vm's now: (x) follows it, (s) goes. */
  x->domid = s->domid;
  if (s->death != NULL) {
    libxl_evdisable_domain_death(s->host->lx, s->death);
    s->death = NULL;
  }
  s->live = false;
  x->spares[slot] = NULL;
  jitsu_spare_end(&s->acct); /* the vm's guest now, counted as live */
  s->of = NULL;
  xl_spare_drop(s); /* not live: nothing is destroyed */
  x->pool_takes++;
  if (x->pool_timer != NULL) /* a fill due: it waits for the guest's ready */
    uv_timer_stop(x->pool_timer);
  xl_went_live(x);
  x->unpaused = true;
  x->op = XOP_CREATE;
  libxl_asyncop_how how;
  if (xl_ao_how(x, taken_running, &how) < 0) {
    taken_running(x, -1);
  } else if (libxl_domain_unpause(x->host->lx, x->domid, &how) != 0) {
    xl_ao_abandon(x, &how);
    taken_running(x, -1);
  }
  /* The pool refills once the guest is ready (xl_state_changed()). */
  return 1;
}

/* ---- the end ------------------------------------------------------------- */

void xl_pool_drain(xvm *x) {
  jitsu__timer_drop(&x->pool_timer);
  for (unsigned i = 0; i < XL_POOL_MAX; i++)
    if (x->spares[i] != NULL)
      spare_discard(x->spares[i]);
}

/* ---- spares left by a controller before us ------------------------------- */

/* Adopt or end the domain (domid) named like spare (s) of (x) in (slot):
 * only a paused domain whose ready file matches (s)'s definition is
 * adopted; the reason it is not, else. */
static const char *adopt_one(xvm *x, xvm *s, unsigned slot, uint32_t domid,
                             const libxl_dominfo *info) {
  bool paused = info->paused && !info->dying && !info->shutdown;
  uint64_t memory = info->current_memkb * 1024;
  char path[PATH_MAX];
  const char *why = NULL;
  if (slot >= x->pool)
    why = "the pool is smaller now";
  else if (!paused)
    why = "it is not paused at its ready point";
  else if (s->fp == NULL || spare_path(s, "ready", path, sizeof(path)) < 0 ||
           !jitsu__file_holds(path, s->fp))
    why = "it was not made ready for this definition";
  else if (jitsu_spare_adopt(x->vm, &s->acct, spare_reclaim) < 0)
    why = "max-live leaves no room for it";
  if (why != NULL)
    return why;
  s->domid = domid;
  s->spare = XSPARE_READY;
  s->acct.memory = memory;
  vifs_read(s);
  x->spares[slot] = s;
  xl_went_live(s);
  return NULL;
}

void xl_pool_adopt(xvm *x) {
  for (unsigned i = 0; i < XL_POOL_MAX; i++) {
    xvm *s = spare_new(x, i);
    if (s == NULL)
      return;
    char name[300];
    xl_domain_name(s, name, sizeof(name));
    uint32_t domid;
    libxl_dominfo info;
    libxl_dominfo_init(&info);
    if (xl_ensure_host(s) < 0 ||
        libxl_name_to_domid(x->host->lx, name, &domid) != 0 ||
        libxl_domain_info(x->host->lx, &info, domid) != 0) {
      libxl_dominfo_dispose(&info);
      ready_file_remove(s); /* nothing lives there */
      xl_spare_drop(s);
      continue;
    }
    s->fp = spare_fingerprint(s);
    const char *why = adopt_one(x, s, i, domid, &info);
    libxl_dominfo_dispose(&info);
    if (why == NULL) {
      jitsu_vm_log(x->vm, JITSU_LOG_INFO,
                   "pool: %s adopted (domain %u, paused at its ready point)",
                   s->tag, domid);
      continue;
    }
    jitsu_vm_log(x->vm, JITSU_LOG_INFO,
                 "pool: ending domain %u (%s), left by an earlier controller: "
                 "%s",
                 domid, name, why);
    ready_file_remove(s);
    s->domid = domid;
    s->live = true; /* so that the drop destroys it */
    xl_spare_drop(s);
  }
}
