/* Pools of spare QEMUs (pool = N): each spare is a QEMU of the vm's
 * command line, booted to the guest's ready point (its console marker,
 * then answers to the vm's readiness check through a forward of its own:
 * warmed up) or restored from the vm's snapshot image, then paused. While
 * the vm is stopped, one ready spare holds the vm's host forwards. A start
 * takes a ready spare (that one first): its record and monitor become the
 * vm's, the vm's forwards are added to it unless it holds them, and it
 * continues. The pool refills one spare at a time, in the background; a
 * spare that dies is replaced after a back-off. */
#include "qemu.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define POOL_QMP_MS 5000
#define POOL_BACKOFF_MS 200 /* after a spare failed, doubling */
#define POOL_BACKOFF_MAX_MS 60000
#define POOL_ROOM_MS 1000   /* max-live or max-starting left no room: again */
#define POOL_WARM_ROUNDS 10 /* answers through the warm-up forward */
#define POOL_WARM_MS 30000  /* for each */

int qemu_pool_configure(qvm *q, jitsu_vm *vm, jitsu_error *err) {
  if (jitsu__parse_pool(jitsu_vm_param(vm, "pool", 0), QEMU_POOL_MAX, &q->pool,
                        err) < 0)
    return -EINVAL;
  if (q->pool > 0 && q->net == QNET_TAP && q->bridge == NULL)
    return jitsu_error_set(err, -EINVAL, "pool",
                           "a pool with net = tap needs a bridge (a spare's "
                           "tap joins it when the spare takes the vm's "
                           "place)");
  if (q->pool > 0 && !jitsu_vm_wants_marker(vm) && q->snapshot == NULL)
    return jitsu_error_set(err, -EINVAL, "pool",
                           "a pool needs a point to pause its spares at: "
                           "ready = marker+... or a snapshot image");
  return 0;
}

/* ---- a spare's fingerprint ----------------------------------------------
 * What a spare was made from, in "<vm>.spareN.args" beside its record: the
 * QEMU command line (without its per-run descriptors), the size and time
 * of its kernel and initrd files, and the console marker it paused at. A
 * controller started after us adopts the spare only if its own definition gives
 * the same text. */

static char *spare_fingerprint(qvm *s) {
  char *args = qemu_describe_args(s);
  if (args == NULL)
    return NULL;
  /* A guest image rebuilt in place is another definition. */
  char kernel[64], initrd[64];
  jitsu__file_stamp(s->kernel, kernel, sizeof(kernel));
  jitsu__file_stamp(s->initrd, initrd, sizeof(initrd));
  const char *bridge = s->net == QNET_TAP && s->bridge ? s->bridge : "";
  const char *netns = s->net == QNET_TAP && s->netns ? s->netns : "";
  size_t len = strlen(args) + strlen(s->marker ? s->marker : "") +
               strlen(bridge) + strlen(netns) + 200;
  char *fp = malloc(len);
  if (fp != NULL)
    snprintf(fp, len,
             "%skernel=%s\ninitrd=%s\nmarker=%s\nbridge=%s\nnetns=%s\n", args,
             kernel, initrd, s->marker ? s->marker : "", bridge, netns);
  free(args);
  return fp;
}

/* Best effort: without the file the spare is not adopted, only ended. */
static void spare_write_fingerprint(qvm *s) {
  char path[600];
  char *fp = spare_fingerprint(s);
  if (fp != NULL && qemu_path(s, "args", path, sizeof(path)) == 0)
    (void)jitsu__file_put(path, fp);
  free(fp);
}

static bool spare_fingerprint_matches(qvm *s) {
  char path[600];
  char *want = spare_fingerprint(s);
  bool ok = qemu_path(s, "args", path, sizeof(path)) == 0 &&
            jitsu__file_holds(path, want);
  free(want);
  return ok;
}

/* ---- filling ------------------------------------------------------------ */

static void fill_one(qvm *q);

static void fill_fired(uv_timer_t *t) {
  qvm *q = t->data;
  if (q != NULL)
    fill_one(q);
}

/* Try again after a back-off that doubles with each failure in a row
 * (none: the limits left no room). */
static void fill_later(qvm *q) {
  if (q->pool_timer == NULL)
    return;
  uint64_t ms = q->pool_fails
                    ? jitsu__backoff_ms(q->pool_fails, POOL_BACKOFF_MS,
                                        POOL_BACKOFF_MAX_MS)
                    : POOL_ROOM_MS;
  uv_timer_start(q->pool_timer, fill_fired, ms, 0);
}

/* End spare (s)'s QEMU (at once, if it still runs: a QEMU that exited is
 * our unreaped child, so its pid names nobody else), reap it and drop its
 * record and handles. Its pidfd does not block: wait for it to turn
 * readable (SIGKILL takes milliseconds; at most SPARE_REAP_MS, after which
 * init reaps it once we are gone). */
#define SPARE_REAP_MS 2000
static void warm_cancel(qvm *s);
static void spare_end(qvm *s) {
  warm_cancel(s);
  if (s->pid > 0) {
    kill(s->pid, SIGKILL);
    siginfo_t si;
    if (s->pidfd >= 0) {
      struct pollfd p = {.fd = s->pidfd, .events = POLLIN};
      (void)poll(&p, 1, SPARE_REAP_MS);
      (void)waitid((idtype_t)P_PIDFD, (id_t)s->pidfd, &si, WEXITED | WNOHANG);
    } else {
      (void)waitpid(s->pid, NULL, 0);
    }
  }
  qemu_record_remove(s);
  qemu_instance_drop(s);
  jitsu_spare_end(&s->acct);
}

/* Take spare (s) out of its pool, end it and free it. */
static void spare_discard(qvm *s) {
  qvm *q = s->of;
  for (unsigned i = 0; i < QEMU_POOL_MAX; i++)
    if (q->spares[i] == s)
      q->spares[i] = NULL;
  spare_end(s);
  qemu_free(s);
}

/* The library needs the room of spare (s) for a summon: it ends now, and
 * its pool fills again when there is room. */
static void spare_reclaim(jitsu_spare *a) {
  qvm *s = JITSU_CONTAINER_OF(a, qvm, acct);
  qvm *q = s->of;
  jitsu_vm_log(s->vm, JITSU_LOG_INFO,
               "pool: %s (QEMU pid %d) ends: max-live needs its room", s->tag,
               (int)s->pid);
  spare_discard(s);
  qemu_pool_hold(q); /* in its place, if it held the forwards */
  fill_later(q);
}

/* A new spare of (q) for (slot), filling: NULL with (e) set. */
static qvm *spare_new(qvm *q, unsigned slot, jitsu_error *e) {
  qvm *s = calloc(1, sizeof(*s));
  memset(e, 0, sizeof(*e));
  if (s == NULL || qemu_configure_copy(s, q->vm, e) < 0) {
    if (s == NULL)
      jitsu_error_set(e, -ENOMEM, NULL, "out of memory");
    qemu_free(s);
    return NULL;
  }
  s->spare = QSPARE_FILLING;
  s->of = q;
  snprintf(s->tag, sizeof(s->tag), "spare%u", slot + 1);
  return s;
}

static void fill_one(qvm *q) {
  unsigned slot = q->pool;
  for (unsigned i = 0; i < q->pool; i++) {
    if (q->spares[i] != NULL && q->spares[i]->spare == QSPARE_FILLING)
      return; /* one at a time */
    if (q->spares[i] == NULL && slot == q->pool)
      slot = i;
  }
  if (slot == q->pool)
    return; /* full */
  jitsu_vm *vm = q->vm;
  bool image = q->snapshot != NULL && access(q->snapshot, R_OK) == 0 &&
               qemu_image_fits(q);
  if (!image && !jitsu_vm_wants_marker(vm))
    return; /* no point to pause at until the snapshot image exists */
  jitsu_error e;
  qvm *s = spare_new(q, slot, &e);
  if (s == NULL) {
    jitsu_vm_log(vm, JITSU_LOG_ERROR, "pool: %s", e.message);
    return;
  }
  s->from_image = image;
  if (jitsu_spare_begin(vm, &s->acct, spare_reclaim) < 0) {
    /* Live guests and spares fill max-live, or starts max-starting, or
     * summons wait: they come first. */
    jitsu_vm_log(vm, JITSU_LOG_DEBUG, "pool: no room for %s yet", s->tag);
    qemu_free(s);
    fill_later(q);
    return;
  }
  int r = qemu_launch(s, QOP_START, image ? q->snapshot : NULL);
  if (r < 0) {
    jitsu_vm_log(vm, JITSU_LOG_WARNING, "pool: %s: QEMU did not start: %s",
                 s->tag, strerror(-r));
    spare_end(s);
    qemu_free(s);
    q->pool_fails++;
    fill_later(q);
    return;
  }
  q->spares[slot] = s;
  spare_write_fingerprint(s);
  jitsu_vm_log(vm, JITSU_LOG_DEBUG, "pool: %s filling (QEMU pid %d)", s->tag,
               (int)s->pid);
}

void qemu_pool_fill(qvm *q) {
  qemu_pool_fill_after(q, 0);
}

void qemu_pool_fill_after(qvm *q, uint64_t ms) {
  if (q == NULL || q->pool == 0 || q->spare != QSPARE_NO)
    return;
  if (jitsu__timer_get(&q->pool_timer, jitsu_ctx_loop(jitsu_vm_ctx(q->vm)),
                       q) == NULL)
    return;
  /* From the loop, never inside the call that asked (a definition, a state
   * change); a back-off under way is kept. */
  if (!uv_is_active((uv_handle_t *)q->pool_timer))
    uv_timer_start(q->pool_timer, fill_fired, ms, 0);
}

/* The spare has reached its ready point and is paused. */
static void spare_ready(qvm *s) {
  qvm *q = s->of;
  s->spare = QSPARE_READY;
  s->op = QOP_NONE;
  q->pool_fails = 0;
  jitsu_spare_filled(&s->acct);
  s->acct.memory = qemu_rss(s->pid); /* paused: it stays so */
  s->hold = QHOLD_NO;
  if (s->warmed > 0)
    jitsu_vm_log(s->vm, JITSU_LOG_INFO,
                 "pool: %s ready (QEMU pid %d, warmed up by %u answers)",
                 s->tag, (int)s->pid, s->warmed);
  else
    jitsu_vm_log(s->vm, JITSU_LOG_INFO, "pool: %s ready (QEMU pid %d)", s->tag,
                 (int)s->pid);
  qemu_pool_hold(q);
  qemu_pool_fill(q); /* the next one */
}

static void spare_paused(void *arg, json_t *ret, const char *error) {
  qvm *s = arg;
  if (s->spare != QSPARE_FILLING)
    return;
  if (ret == NULL) {
    qemu_op_failed(s, "cannot pause", error);
    return;
  }
  spare_ready(s);
}

static void spare_pause(qvm *s) {
  if (qmp_send(s->qmp, "stop", NULL, -1, POOL_QMP_MS, spare_paused, s) < 0)
    qemu_op_failed(s, "cannot pause", "out of memory");
}

/* ---- warming a spare up before it is paused ------------------------------
 * A guest's first answer is its slowest: its code runs for the first time
 * (under TCG, it is translated first) and its server does first-time
 * work. A spare whose vm has a tcp or http readiness check, reached through
 * one of its forward rules, gets a forward of its own on a free loopback
 * port after its marker; the check is run through it POOL_WARM_ROUNDS times
 * (the first answer also proves that its server listens), then the forward
 * is removed and the spare paused. A spare that does not answer is paused
 * as it is, like one that cannot be warmed. */
typedef struct qwarm {
  qvm *s; /* NULL once the spare went: the probe's callback frees this */
  jitsu_probe *probe;
  struct sockaddr_in addr;
  char guest[80]; /* the forward's guest side, "[ADDR]:PORT" */
  char rule[48];  /* "tcp:127.0.0.1:PORT" */
} qwarm;

static void warm_cancel(qvm *s) {
  qwarm *w = s->warm;
  if (w == NULL)
    return;
  s->warm = NULL;
  w->s = NULL;
  if (w->probe != NULL)
    jitsu_probe_cancel(w->probe); /* its callback frees (w) */
  else
    free(w);
}

/* What went wrong with an HMP command: QMP's error, or HMP's own words
 * (it answers errors as text); NULL if nothing. */
static const char *hmp_failed(json_t *ret, const char *error) {
  const char *out = ret ? json_string_value(ret) : NULL;
  if (ret == NULL)
    return error;
  return out != NULL && out[0] != '\0' ? out : NULL;
}

static void hmp(qvm *s, const char *line, qmp_reply_cb cb) {
  json_t *a = json_pack("{s:s}", "command-line", line);
  if (a == NULL ||
      qmp_send(s->qmp, "human-monitor-command", a, -1, POOL_QMP_MS, cb, s) < 0)
    qemu_op_failed(s, "cannot send a monitor command", "out of memory");
  json_decref(a);
}

/* Warming is over (or could not begin): pause, without the forward. */
static void warm_end(qvm *s) {
  qwarm *w = s->warm;
  if (w != NULL && w->rule[0] != '\0') {
    char line[96];
    snprintf(line, sizeof(line), "hostfwd_remove jitsu-net %s", w->rule);
    hmp(s, line, NULL);
  }
  warm_cancel(s);
  spare_pause(s);
}

static void warm_answered(jitsu_probe *p, int status, void *arg);

static void warm_probe(qvm *s) {
  qwarm *w = s->warm;
  if (jitsu_vm_probe(s->vm, (struct sockaddr *)&w->addr, POOL_WARM_MS,
                     warm_answered, w, &w->probe) < 0)
    warm_end(s);
}

static void warm_answered(jitsu_probe *p, int status, void *arg) {
  qwarm *w = arg;
  (void)p;
  w->probe = NULL;
  qvm *s = w->s;
  if (s == NULL) {
    free(w);
    return;
  }
  if (status == 0 && ++s->warmed < POOL_WARM_ROUNDS) {
    warm_probe(s);
    return;
  }
  if (status != 0)
    jitsu_vm_log(s->vm, JITSU_LOG_WARNING,
                 "pool: %s did not answer through %s within %d s: paused "
                 "without warming up",
                 s->tag, w->rule, POOL_WARM_MS / 1000);
  warm_end(s);
}

static void warm_forwarded(void *arg, json_t *ret, const char *error) {
  qvm *s = arg;
  if (s->warm == NULL || s->spare != QSPARE_FILLING || s->quit_sent)
    return;
  const char *failed = hmp_failed(ret, error);
  if (failed != NULL) {
    jitsu_vm_log(s->vm, JITSU_LOG_WARNING,
                 "pool: %s: cannot add its warm-up forward (%s): paused "
                 "without warming up",
                 s->tag, failed);
    s->warm->rule[0] = '\0';
    warm_end(s);
    return;
  }
  warm_probe(s);
}

/* The guest side ("[ADDR]:PORT") of the tcp forward rule whose host port
 * is (port), into (out); false if there is none. */
static bool forward_guest_side(jitsu_vm *vm, unsigned port, char *out,
                               size_t size) {
  const char *fw;
  for (size_t i = 0; (fw = jitsu_vm_param(vm, "forward", i)) != NULL; i++) {
    unsigned host_port;
    const char *guest = jitsu__hostfwd_parts(fw, NULL, 0, &host_port);
    if (guest == NULL || host_port != port || strlen(guest) >= size)
      continue;
    snprintf(out, size, "%s", guest);
    return true;
  }
  return false;
}

static void warm_continued(void *arg, json_t *ret, const char *error) {
  qvm *s = arg;
  if (ret == NULL && s->warm != NULL)
    qemu_op_failed(s, "cannot continue the restored spare", error);
}

/* Begin warming spare (s) up, first continuing it if (paused) (a restored
 * one): 0, or -1 when it cannot be warmed. */
static int warm_begin(qvm *s, bool paused) {
  unsigned port = jitsu_vm_ready_port(s->vm);
  qwarm *w;
  if (port == 0 || s->net != QNET_USER || (w = calloc(1, sizeof(*w))) == NULL)
    return -1;
  w->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (!forward_guest_side(s->vm, port, w->guest, sizeof(w->guest)) ||
      jitsu__free_tcp_port(&w->addr) < 0) {
    free(w);
    return -1;
  }
  w->s = s;
  s->warm = w;
  snprintf(w->rule, sizeof(w->rule), "tcp:127.0.0.1:%u",
           (unsigned)ntohs(w->addr.sin_port));
  if (paused &&
      qmp_send(s->qmp, "cont", NULL, -1, POOL_QMP_MS, warm_continued, s) < 0)
    qemu_op_failed(s, "cannot continue the restored spare", "out of memory");
  char line[200];
  snprintf(line, sizeof(line), "hostfwd_add jitsu-net %s-%s", w->rule,
           w->guest);
  hmp(s, line, warm_forwarded);
  return 0;
}

void qemu_pool_spare_marker(qvm *s) {
  if (s->spare != QSPARE_FILLING || s->op != QOP_START || s->quit_sent ||
      s->warm != NULL)
    return;
  if (warm_begin(s, false) < 0)
    spare_pause(s);
}

void qemu_pool_spare_restored(qvm *s) {
  if (s->spare != QSPARE_FILLING || s->quit_sent || s->warm != NULL)
    return;
  if (warm_begin(s, true) < 0)
    spare_ready(s); /* a restored guest waits paused (-incoming) */
}

void qemu_pool_spare_exited(qvm *s) {
  qvm *q = s->of;
  jitsu_vm_log(s->vm, JITSU_LOG_WARNING,
               "pool: %s (QEMU pid %d) exited while %s; replacing it", s->tag,
               (int)s->pid, s->spare == QSPARE_READY ? "ready" : "filling");
  spare_discard(s);
  qemu_pool_hold(q);
  q->pool_fails++;
  fill_later(q);
}

/* ---- holding the vm's place on the network --------------------------------
 * Spares share the vm's identity: with net = user its host forwards, with
 * net = tap its MAC and address on its bridge. A spare gets the vm's
 * place when it is taken, or before: a forward is added with HMP's
 * hostfwd_add, about a millisecond a rule under TCG, most of a take's
 * time when it was done then. So while the vm is stopped (its place is
 * free), one ready spare holds it (its forwards; its tap on the bridge,
 * where a spare's tap is not otherwise): a take of that spare only
 * continues it. A connection made meanwhile waits in the paused spare
 * until a summon continues it. The rules are added one at a time;
 * "<vm>.spareN.fwd" says what is held, for a controller after us:
 * "adding" and then "held" on its first line, the rules (or the bridge)
 * after it. A spare that cannot add a rule (the port is taken) drops
 * those it added and is not tried again; a take tries again. */

/* "<state>\n" and the vm's forward rules, one a line (NULL: no memory). */
static char *hold_text(jitsu_vm *vm, const char *state) {
  size_t len = strlen(state) + 2;
  const char *fw;
  for (size_t i = 0; (fw = jitsu_vm_param(vm, "forward", i)) != NULL; i++)
    len += strlen(fw) + 1;
  char *t = malloc(len);
  if (t == NULL)
    return NULL;
  size_t at = (size_t)snprintf(t, len, "%s\n", state);
  for (size_t i = 0; (fw = jitsu_vm_param(vm, "forward", i)) != NULL; i++)
    at += (size_t)snprintf(t + at, len - at, "%s\n", fw);
  return t;
}

/* "<state>\n" and what spare (s) holds. */
static char *hold_state(qvm *s, const char *state) {
  if (s->net != QNET_TAP)
    return hold_text(s->vm, state);
  size_t len = strlen(state) + strlen(s->bridge) + 16;
  char *t = malloc(len);
  if (t != NULL)
    snprintf(t, len, "%s\nbridge=%s\n", state, s->bridge);
  return t;
}

/* Best effort: without the file a controller after us ends the spare. */
static void hold_write(qvm *s, const char *state) {
  char path[600];
  char *t = hold_state(s, state);
  if (t != NULL && qemu_path(s, "fwd", path, sizeof(path)) == 0)
    (void)jitsu__file_put(path, t);
  free(t);
}

static void hold_unlink(qvm *s) {
  char path[600];
  if (qemu_path(s, "fwd", path, sizeof(path)) == 0)
    unlink(path);
}

static void taken_running(void *arg, json_t *ret, const char *error) {
  qvm *s = arg;
  if (s->op != QOP_START || s->quit_sent)
    return;
  if (ret == NULL) {
    qemu_op_failed(s, "cannot continue the spare", error);
    return;
  }
  s->op = QOP_NONE;
  jitsu_vm *vm = s->vm;
  jitsu_backend_marker(vm); /* shown before it was paused */
  if (s->warmed > 0)
    jitsu_backend_checked(vm);  /* it answered the check before its pause */
  jitsu_backend_started(vm, 0); /* last: a report may free (s) */
}

/* A taken spare (s) holds the vm's forwards: it continues. */
static void taken_continue(qvm *s) {
  if (qmp_send(s->qmp, "cont", NULL, -1, POOL_QMP_MS, taken_running, s) < 0)
    qemu_op_failed(s, "cannot continue the spare", "out of memory");
}

static void hold_next(qvm *s);
static void hold_failed(qvm *s, const char *what, const char *why);

static void hold_added(void *arg, json_t *ret, const char *error) {
  qvm *s = arg;
  if (s->hold != QHOLD_ADDING || s->quit_sent ||
      (s->spare == QSPARE_NO && s->op != QOP_START))
    return;
  const char *failed = hmp_failed(ret, error);
  if (failed == NULL) {
    s->held++;
    hold_next(s);
    return;
  }
  if (s->spare == QSPARE_NO) { /* taken: the vm's start fails */
    qemu_op_failed(s, "cannot add a host forward", failed);
    return;
  }
  hold_failed(s, jitsu_vm_param(s->vm, "forward", s->held), failed);
}

/* Spare (s) could not take (what) of the vm's place: it keeps none. */
static void hold_failed(qvm *s, const char *what, const char *why) {
  jitsu_vm_log(s->vm, JITSU_LOG_WARNING,
               "pool: %s cannot hold %s (%s): a take tries again", s->tag, what,
               why);
  for (unsigned i = 0; i < s->held; i++) {
    const char *fw = jitsu_vm_param(s->vm, "forward", i);
    const char *dash = strchr(fw, '-');
    char line[300];
    snprintf(line, sizeof(line), "hostfwd_remove jitsu-net %.*s",
             (int)(dash ? dash - fw : (ptrdiff_t)strlen(fw)), fw);
    hmp(s, line, NULL);
  }
  s->hold = QHOLD_FAILED;
  s->held = 0;
  hold_unlink(s);
}

/* Add the next of the vm's forwards to spare (s), or, when all are
 * added, note it (a spare) or continue it (taken meanwhile). */
static void hold_next(qvm *s) {
  const char *fw =
      s->net == QNET_USER ? jitsu_vm_param(s->vm, "forward", s->held) : NULL;
  if (fw != NULL) {
    char line[300];
    snprintf(line, sizeof(line), "hostfwd_add jitsu-net %s", fw);
    hmp(s, line, hold_added);
    return;
  }
  s->hold = QHOLD_HELD;
  if (s->spare == QSPARE_NO)
    taken_continue(s);
  else
    hold_write(s, "held");
}

/* Begin adding the vm's forwards to spare (s). */
static void hold_begin(qvm *s) {
  s->hold = QHOLD_ADDING;
  s->held = 0;
  if (s->spare != QSPARE_NO)
    hold_write(s, "adding");
  char why[400];
  if (s->net == QNET_TAP && qemu_tap_join(s, why, sizeof(why)) < 0) {
    if (s->spare == QSPARE_NO)
      qemu_op_failed(s, "cannot put the spare's tap on the bridge", why);
    else
      hold_failed(s, "the vm's place on its bridge", why);
    return;
  }
  hold_next(s);
}

bool qemu_pool_holds(const qvm *q) {
  for (unsigned i = 0; i < QEMU_POOL_MAX; i++)
    if (q->spares[i] != NULL && (q->spares[i]->hold == QHOLD_ADDING ||
                                 q->spares[i]->hold == QHOLD_HELD))
      return true;
  return false;
}

void qemu_pool_hold(qvm *q) {
  if (q == NULL || q->pool == 0 || q->spare != QSPARE_NO || q->pid > 0 ||
      qemu_pool_holds(q))
    return;
  if (!(q->net == QNET_USER && jitsu_vm_param(q->vm, "forward", 0) != NULL) &&
      !(q->net == QNET_TAP && q->bridge != NULL))
    return; /* nothing to hold */
  jitsu_state st = jitsu_vm_state(q->vm);
  if (st != JITSU_STATE_STOPPED && st != JITSU_STATE_FAILED)
    return; /* its guest, or its saved state, has the forwards */
  for (unsigned i = 0; i < q->pool; i++) {
    qvm *s = q->spares[i];
    if (s != NULL && s->spare == QSPARE_READY && s->hold == QHOLD_NO &&
        !s->quit_sent) {
      hold_begin(s);
      return;
    }
  }
}

/* ---- taking a spare ----------------------------------------------------- */

/* Make the spare (s) in (slot) of (q) the vm's qvm; (q) goes. */
static int adopt_spare(qvm *q, qvm *s, unsigned slot) {
  char from[600], to[600];
  /* Without its fingerprint no controller after us takes it for a spare,
   * whatever happens next: a guest is handed out once. */
  if (qemu_path(s, "args", from, sizeof(from)) == 0)
    unlink(from);
  hold_unlink(s); /* what it holds is the vm's guest's now */
  const char *files[] = {"pid", "qmp"};
  for (size_t i = 0; i < 2; i++)
    if (qemu_path(s, files[i], from, sizeof(from)) < 0 ||
        qemu_path(q, files[i], to, sizeof(to)) < 0 || rename(from, to) < 0) {
      jitsu_vm_log(q->vm, JITSU_LOG_WARNING,
                   "pool: cannot take %s (its %s file: %s): a cold start",
                   s->tag, files[i], strerror(errno));
      return -1;
    }
  jitsu_spare_end(&s->acct); /* the vm's guest now, counted as live */
  s->spare = QSPARE_NO;
  s->tag[0] = '\0';
  s->of = NULL;
  s->pool = q->pool;
  memcpy(s->spares, q->spares, sizeof(s->spares));
  s->spares[slot] = NULL;
  for (unsigned i = 0; i < QEMU_POOL_MAX; i++)
    if (s->spares[i] != NULL)
      s->spares[i]->of = s;
  s->pool_fails = q->pool_fails;
  s->pool_takes = q->pool_takes + 1;
  s->pool_timer = q->pool_timer;
  if (s->pool_timer != NULL)
    s->pool_timer->data = s;
  q->pool_timer = NULL;
  memset(q->spares, 0, sizeof(q->spares));
  jitsu_vm_set_data(q->vm, s);
  qemu_free(q); /* nothing of it is live: a start comes from stopped */
  return 0;
}

int qemu_pool_take(qvm *q) {
  if (q->pool == 0)
    return 0;
  /* The spare that holds the vm's forwards, else any ready one. */
  unsigned slot = q->pool;
  for (unsigned i = 0; i < q->pool; i++) {
    qvm *s = q->spares[i];
    if (s == NULL || s->spare != QSPARE_READY)
      continue;
    if (slot == q->pool || s->hold == QHOLD_ADDING || s->hold == QHOLD_HELD)
      slot = i;
  }
  if (slot == q->pool) {
    jitsu_vm_log(q->vm, JITSU_LOG_INFO, "pool: no spare ready: a cold start");
    return 0;
  }
  qvm *s = q->spares[slot];
  if (adopt_spare(q, s, slot) < 0) {
    if (s->hold != QHOLD_NO)
      spare_discard(s); /* the cold start needs the forwards it holds */
    return 0;
  }
  s->op = QOP_START;
  if (s->hold == QHOLD_HELD)
    taken_continue(s);
  else if (s->hold != QHOLD_ADDING) /* adding: it continues when done */
    hold_begin(s);
  /* The pool refills once the guest is ready (qemu_state_changed()): a
   * QEMU spawned and booting now would compete for the CPU with the
   * guest's first answers. */
  return 1;
}

/* ---- the end ------------------------------------------------------------ */

void qemu_pool_drain(qvm *q) {
  jitsu__timer_drop(&q->pool_timer);
  for (unsigned i = 0; i < QEMU_POOL_MAX; i++)
    if (q->spares[i] != NULL)
      spare_discard(q->spares[i]);
}

/* ---- spares left by a controller before us ------------------------------ */

/* The adopted spare's answer to query-status: only a QEMU paused at its
 * ready point (stopped after its marker, or restored and not continued)
 * is a spare; anything else is ended, and its slot fills again. */
static void spare_adopt_status(void *arg, json_t *ret, const char *error) {
  qvm *s = arg;
  if (s->spare != QSPARE_FILLING || s->op != QOP_ADOPT)
    return;
  const char *st = json_string_value(json_object_get(ret, "status"));
  if (st == NULL || strcmp(st, "paused") != 0) {
    s->op = QOP_NONE;
    qemu_op_failed(s, "not adopted: it is not paused at its ready point",
                   st != NULL ? st : error);
    return;
  }
  s->spare = QSPARE_READY;
  s->op = QOP_NONE;
  s->acct.memory = qemu_rss(s->pid);
  jitsu_vm_log(s->vm, JITSU_LOG_INFO,
               "pool: %s adopted (QEMU pid %d, paused at its ready point)",
               s->tag, (int)s->pid);
  qemu_pool_hold(s->of);
  qemu_pool_fill(s->of); /* the slots that are still empty */
}

/* Whether spare (s) holds what its file says it holds: no file, none; the
 * vm's forwards all added, held. */
static bool hold_adoptable(qvm *s) {
  char path[600];
  if (qemu_path(s, "fwd", path, sizeof(path)) < 0 || access(path, F_OK) < 0)
    return true;
  char *want = hold_state(s, "held");
  bool ok = jitsu__file_holds(path, want);
  free(want);
  if (ok)
    s->hold = QHOLD_HELD;
  return ok;
}

/* Take the QEMU of record (t) (pid, pidfd set) into slot (slot) of (q):
 * 0, or -1 with (e) saying why it cannot be (the caller ends it). */
static int spare_adopt_one(qvm *q, qvm *t, unsigned slot, jitsu_error *e) {
  qvm *s = spare_new(q, slot, e); /* filling until its status says paused */
  if (s == NULL)
    return -1;
  const char *why = NULL;
  if (slot >= q->pool)
    why = "the pool is smaller now";
  else if (!spare_fingerprint_matches(s))
    why = "it was made for another definition";
  else if (!hold_adoptable(s))
    why = "it was adding the vm's forwards, or holds others";
  else if (jitsu_spare_adopt(q->vm, &s->acct, spare_reclaim) < 0)
    why = "max-live leaves no room for it";
  if (why != NULL) {
    jitsu_error_set(e, -EINVAL, NULL, "%s", why);
    qemu_free(s);
    return -1;
  }
  s->pid = t->pid, s->pidfd = t->pidfd, s->starttime = t->starttime;
  t->pidfd = -1;
  int r = qemu_watch_live(s);
  if (r < 0 || qmp_send(s->qmp, "query-status", NULL, -1, POOL_QMP_MS,
                        spare_adopt_status, s) < 0) {
    jitsu_error_set(e, r < 0 ? r : -ENOMEM, NULL,
                    "its monitor cannot be reached");
    s->pid = 0; /* the caller ends it */
    t->pidfd = s->pidfd;
    s->pidfd = -1;
    qemu_instance_drop(s);
    jitsu_spare_end(&s->acct);
    qemu_free(s);
    return -1;
  }
  s->op = QOP_ADOPT;
  q->spares[slot] = s;
  return 0;
}

void qemu_pool_adopt(qvm *q) {
  for (unsigned i = 1; i <= QEMU_POOL_MAX; i++) {
    qvm t = {.vm = q->vm, .pidfd = -1};
    snprintf(t.tag, sizeof(t.tag), "spare%u", i);
    char path[600];
    if (qemu_path(&t, "pid", path, sizeof(path)) < 0)
      return;
    jitsu_error e;
    if (jitsu__record_adopt(path, &t.pid, &t.pidfd, &t.starttime) <= 0) {
      qemu_record_remove(&t); /* nothing lives there */
      continue;
    }
    if (spare_adopt_one(q, &t, i - 1, &e) == 0)
      continue;
    jitsu_vm_log(q->vm, JITSU_LOG_INFO,
                 "pool: ending %s (QEMU pid %d), left by an earlier "
                 "controller: %s",
                 t.tag, (int)t.pid, e.message);
    kill(t.pid, SIGKILL);
    if (t.pidfd >= 0)
      close(t.pidfd);
    qemu_record_remove(&t);
  }
}
