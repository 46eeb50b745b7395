/* The configuration file: INI (parsed by inih), checked whole, then applied.
 *
 * inih hands us (section, key, value) without line numbers, so we read the
 * file for it line by line (counting lines and noting section headers,
 * including empty ones) and keep every entry with its line. Only when the
 * whole file checks out is anything applied. */
#include "config_int.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_entry(cfg *c, const header *hd, size_t i, const jitsu_key *k,
                       jitsu_error *err) {
  entry *e = &c->e[i];
  int r = jitsu__keys_check_value(k, e->value, err);
  if (r < 0 || (k->flags & JITSU_KEY_MULTI))
    return r;
  for (size_t j = hd->first; j < i; j++)
    if (strcmp(c->e[j].key, e->key) == 0)
      return jitsu_error_set(err, -EINVAL, e->key,
                             "given more than once (first at line %u)",
                             c->e[j].line);
  return 0;
}

/* One [vm NAME] section, gathered. */
typedef struct vmsec {
  jitsu__hnode node;   /* in the file's table of vms, keyed by name */
  const header *hd;    /* its header and entries */
  const char *section; /* "vm NAME" as inih spells it */
  const char *name;
  unsigned line;
  const jitsu_backend_ops *backend;
  jitsu_vm_def def;
  jitsu_param *params;
  size_t n_params;
} vmsec;

static const char *vm_name_of(const char *section) {
  if (strncmp(section, "vm", 2) != 0 ||
      (section[2] != ' ' && section[2] != '\t'))
    return NULL;
  const char *p = section + 2;
  while (*p == ' ' || *p == '\t')
    p++;
  return p;
}

/* A header in the table of names seen (duplicates, in O(1) each). */
typedef struct hnamed {
  jitsu__hnode node;
  const header *hd;
} hnamed;

static int check_each_header(jitsu_ctx *ctx, cfg *c, jitsu__table *seen,
                             hnamed *nodes, jitsu_error *err) {
  for (size_t i = 0; i < c->nh; i++) {
    const char *name = c->h[i].name;
    jitsu__err_at(err, c->h[i].line);
    const char *vm = vm_name_of(name);
    if (vm != NULL) {
      if (jitsu__check_vm_name(vm) < 0)
        return jitsu_error_set(err, -EINVAL, NULL,
                               "invalid vm name '%s' in [%s]: use 1 to 63 of "
                               "[A-Za-z0-9_.-], not starting with '.' nor "
                               "ending in .spareN (pools' spares)",
                               vm, name);
    } else if (strcmp(name, "jitsu") != 0 &&
               (strcmp(name, "vm") == 0 || !jitsu__keys_declared(ctx, name))) {
      return jitsu_error_set(err, -EINVAL, NULL,
                             strcmp(name, "vm") == 0
                                 ? "section [vm] needs a name: [vm NAME]"
                                 : "unknown section [%s]",
                             name);
    }
    jitsu__hnode *dup = jitsu__table_find(seen, name);
    if (dup != NULL)
      return jitsu_error_set(err, -EINVAL, NULL,
                             vm ? "duplicate vm '%s' (first defined at line %u)"
                                : "duplicate section [%s] (first at line %u)",
                             vm ? vm : name,
                             JITSU_CONTAINER_OF(dup, hnamed, node)->hd->line);
    nodes[i].node.key = name;
    nodes[i].hd = &c->h[i];
    if (jitsu__table_insert(seen, &nodes[i].node) < 0)
      return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  }
  return 0;
}

static int check_headers(jitsu_ctx *ctx, cfg *c, jitsu_error *err) {
  jitsu__table seen;
  jitsu__table_init(&seen);
  hnamed *nodes = calloc(c->nh ? c->nh : 1, sizeof(*nodes));
  int r = nodes == NULL ? jitsu_error_set(err, -ENOMEM, NULL, "out of memory")
                        : check_each_header(ctx, c, &seen, nodes, err);
  jitsu__table_free(&seen);
  free(nodes);
  return r;
}

static int parse_ready(const char *v, jitsu_vm_def *def, jitsu_error *err) {
  const char *m = v;
  def->ready_marker = false;
  if (strncmp(m, "marker", 6) == 0 && (m[6] == '\0' || m[6] == '+')) {
    def->ready_marker = true;
    m = m[6] == '+' ? m + 7 : "none";
  }
  def->ready_address = NULL;
  if (strcmp(m, "none") == 0)
    def->ready = JITSU_READY_NONE;
  else if (strcmp(m, "notify") == 0)
    def->ready = JITSU_READY_NOTIFY;
  else if (strncmp(m, "tcp:", 4) == 0 || strncmp(m, "http:", 5) == 0) {
    bool http = m[0] == 'h';
    const char *addr = m + (http ? 5 : 4);
    struct sockaddr_storage ss;
    char path[JITSU__READY_PATH_MAX];
    if (jitsu__parse_ready_address(addr, http, &ss, path) < 0)
      return jitsu_error_set(err, -EINVAL, "ready",
                             "'%s' is not %s:HOST:PORT%s or %s:[IPV6]:PORT%s "
                             "with a numeric address%s",
                             v, http ? "http" : "tcp", http ? "[/PATH]" : "",
                             http ? "http" : "tcp", http ? "[/PATH]" : "",
                             http ? " (a path under 40 bytes, no spaces)" : "");
    def->ready = http ? JITSU_READY_HTTP : JITSU_READY_TCP;
    def->ready_address = addr;
  } else
    return jitsu_error_set(err, -EINVAL, "ready",
                           "'%s' is not none, notify, tcp:HOST:PORT, "
                           "http:HOST:PORT[/PATH] or marker[+one of those]",
                           v);
  return 0;
}

static int parse_idle_action(const char *v, jitsu_vm_def *def,
                             jitsu_error *err) {
  static const char *const names[] = {"none", "destroy", "shutdown", "suspend"};
  for (size_t i = 0; i < JITSU__ARRAY_SIZE(names); i++)
    if (strcmp(v, names[i]) == 0)
      return def->idle_action = (jitsu_idle_action)i, 0;
  return jitsu_error_set(err, -EINVAL, "idle-action",
                         "'%s' is not none, destroy, shutdown or suspend", v);
}

/* The line of (key) in the section (hd), or (fallback). */
static unsigned line_in(cfg *c, const header *hd, const char *key,
                        unsigned fallback) {
  for (size_t i = hd->first; key && key[0] && i < hd->first + hd->n; i++)
    if (strcmp(c->e[i].key, key) == 0)
      return c->e[i].line;
  return fallback;
}

/* The line of (key) in (section), or (fallback). */
static unsigned line_of(cfg *c, const char *section, const char *key,
                        unsigned fallback) {
  for (size_t h = 0; h < c->nh; h++)
    if (strcmp(c->h[h].name, section) == 0)
      return line_in(c, &c->h[h], key, fallback);
  return fallback;
}

/* Fill (vs) from the entries of its section; check every key and value. */
static int gather_vm(jitsu_ctx *ctx, cfg *c, vmsec *vs, jitsu_error *err) {
  jitsu_vm_def init = JITSU_VM_DEF_INIT;
  vs->def = init;
  vs->def.name = vs->name;
  const char *bname = "process";
  size_t first = vs->hd->first, end = first + vs->hd->n;
  for (size_t i = first; i < end; i++)
    if (strcmp(c->e[i].key, "backend") == 0) {
      bname = c->e[i].value;
      jitsu__err_at(err, c->e[i].line);
    }
  char why[1400];
  vs->backend = jitsu__backend_find(ctx, bname, why, sizeof(why));
  if (vs->backend == NULL)
    return jitsu_error_set(err, -EINVAL, "backend", "%s", why);
  vs->def.backend = vs->backend->name;
  vs->params = calloc(vs->hd->n ? vs->hd->n : 1, sizeof(*vs->params));
  if (vs->params == NULL)
    return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  for (size_t i = first; i < end; i++) {
    entry *e = &c->e[i];
    jitsu__err_at(err, e->line);
    const jitsu_key *k = jitsu__keys_vm_field(e->key);
    bool field = k != NULL;
    if (k == NULL)
      k = jitsu__keys_vm_key(ctx, vs->backend, e->key);
    if (k == NULL)
      return jitsu__keys_unknown_vm_key(ctx, vs->backend, e->key, err);
    int r = check_entry(c, vs->hd, i, k, err);
    if (r < 0)
      return r;
    if (!field) {
      vs->params[vs->n_params].key = e->key;
      vs->params[vs->n_params++].value = e->value;
      continue;
    }
    if (strcmp(e->key, "ready") == 0)
      r = parse_ready(e->value, &vs->def, err);
    else if (strcmp(e->key, "idle-action") == 0)
      r = parse_idle_action(e->value, &vs->def, err);
    else if (strcmp(e->key, "ready-timeout") == 0)
      jitsu_parse_duration(e->value, &vs->def.ready_timeout_ms);
    else if (strcmp(e->key, "stop-grace") == 0)
      jitsu_parse_duration(e->value, &vs->def.stop_grace_ms);
    else if (strcmp(e->key, "idle-timeout") == 0)
      jitsu_parse_duration(e->value, &vs->def.idle_timeout_ms);
    if (r < 0)
      return r;
  }
  vs->def.params = vs->params;
  vs->def.n_params = vs->n_params;
  jitsu__err_at(err, vs->line);
  int r =
      jitsu__check_vm_params(ctx, vs->backend, vs->params, vs->n_params, err);
  if (r < 0)
    return r;
  if (vs->def.idle_action == JITSU_IDLE_SUSPEND && vs->backend->suspend == NULL)
    return jitsu_error_set(err, -EINVAL, "idle-action",
                           "backend '%s' cannot suspend", vs->backend->name);
  if (vs->def.idle_timeout_ms > 0 && vs->def.idle_action == JITSU_IDLE_NONE &&
      jitsu__err_at(err, line_in(c, vs->hd, "idle-timeout", vs->line)) == 0)
    return jitsu_error_set(err, -EINVAL, "idle-timeout",
                           "given without an idle-action");
  return 0;
}

/* A backend's own check of a vm, without side effects. */
static int backend_check(jitsu_ctx *ctx, cfg *c, vmsec *vs, jitsu_error *err) {
  jitsu_vm probe;
  memset(&probe, 0, sizeof(probe));
  probe.ctx = ctx;
  probe.backend = vs->backend;
  probe.name = (char *)vs->name;
  probe.params = vs->params;
  probe.n_params = vs->n_params;
  probe.ready = vs->def.ready;
  probe.ready_marker = vs->def.ready_marker;
  if (err != NULL)
    err->key[0] = '\0';
  jitsu_error local;
  memset(&local, 0, sizeof(local));
  int r = vs->backend->configure ? vs->backend->configure(&probe, &local) : 0;
  if (r >= 0) {
    if (vs->backend->configure != NULL && vs->backend->release != NULL)
      vs->backend->release(&probe);
    r = jitsu__proxy_check(&probe, &local); /* the sockets we relay */
  }
  if (r >= 0)
    return 0;
  jitsu__err_at(err, line_of(c, vs->section, local.key, vs->line));
  /* (local) says "KEY: TEXT"; the key is said again with the line. */
  const char *text = local.message[0] ? local.message : jitsu_strerror(r);
  size_t klen = strlen(local.key);
  if (klen > 0 && strncmp(text, local.key, klen) == 0 &&
      strncmp(text + klen, ": ", 2) == 0)
    text += klen + 2;
  return jitsu_error_set(err, r, local.key[0] ? local.key : NULL, "%s", text);
}

static int check_globals(jitsu_ctx *ctx, cfg *c, jitsu_error *err) {
  size_t before = c->nh > 0 ? c->h[0].first : c->n;
  if (before > 0) {
    jitsu__err_at(err, c->e[0].line);
    return jitsu_error_set(err, -EINVAL, c->e[0].key,
                           "outside of any section (start with [jitsu] "
                           "or [vm NAME])");
  }
  for (size_t h = 0; h < c->nh; h++) {
    const header *hd = &c->h[h];
    if (vm_name_of(hd->name) != NULL)
      continue;
    for (size_t i = hd->first; i < hd->first + hd->n; i++) {
      entry *e = &c->e[i];
      jitsu__err_at(err, e->line);
      const jitsu_key *k = jitsu__keys_find(ctx, hd->name, e->key);
      const char *near =
          k == NULL ? jitsu__keys_did_you_mean(ctx, NULL, hd->name, e->key)
                    : NULL;
      if (k == NULL && near != NULL)
        return jitsu_error_set(err, -EINVAL, e->key,
                               "unknown key in [%s]; did you mean '%s'?",
                               hd->name, near);
      if (k == NULL)
        return jitsu_error_set(err, -EINVAL, e->key, "unknown key in [%s]",
                               hd->name);
      int r = check_entry(c, hd, i, k, err);
      if (r < 0 || (r = jitsu__keys_run_checks(ctx, hd->name, e->key, e->value,
                                               err)) < 0)
        return r;
      if (strcmp(hd->name, "jitsu") == 0 && strcmp(e->key, "state-dir") == 0 &&
          e->value[0] != '/')
        return jitsu_error_set(err, -EINVAL, e->key,
                               "'%s' is not an absolute path", e->value);
    }
    /* Required keys of a declared section that is present. */
    for (jitsu__section_keys *s = ctx->keys; s != NULL; s = s->next) {
      if (strcmp(s->section, hd->name) != 0)
        continue;
      for (size_t k = 0; k < s->n; k++)
        if ((s->keys[k].flags & JITSU_KEY_REQUIRED) &&
            line_in(c, hd, s->keys[k].name, 0) == 0) {
          jitsu__err_at(err, hd->line);
          return jitsu_error_set(err, -EINVAL, s->keys[k].name,
                                 "missing in [%s]", s->section);
        }
    }
  }
  return 0;
}

typedef struct loaded {
  cfg c;
  vmsec *vms;
  size_t n_vms;
  jitsu__table names; /* of vms[], by name */
} loaded;

static void loaded_free(loaded *l) {
  for (size_t i = 0; i < l->n_vms; i++)
    free(l->vms[i].params);
  free(l->vms);
  jitsu__table_free(&l->names);
  jitsu__cfg_free(&l->c);
}

static int parse_and_check(jitsu_ctx *ctx, FILE *f, loaded *l, bool reload,
                           jitsu_error *err) {
  cfg *c = &l->c;
  c->ctx = ctx;
  jitsu__table_init(&l->names);
  int r = jitsu__cfg_read(f, c, err);
  if (r < 0)
    return r;
  if ((r = check_headers(ctx, c, err)) < 0 ||
      (r = check_globals(ctx, c, err)) < 0)
    return r;
  l->vms = calloc(c->nh ? c->nh : 1, sizeof(*l->vms));
  if (l->vms == NULL)
    return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  for (size_t h = 0; h < c->nh; h++) {
    const char *name = vm_name_of(c->h[h].name);
    if (name == NULL)
      continue;
    vmsec *vs = &l->vms[l->n_vms++];
    vs->hd = &c->h[h];
    vs->node.key = name;
    if (jitsu__table_insert(&l->names, &vs->node) < 0)
      return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
    vs->section = c->h[h].name;
    vs->name = name;
    vs->line = c->h[h].line;
    jitsu__err_at(err, vs->line);
    if (!reload && jitsu_vm_find(ctx, name) != NULL)
      return jitsu_error_set(err, -EEXIST, NULL, "vm '%s' is already defined",
                             name);
    if ((r = gather_vm(ctx, c, vs, err)) < 0 ||
        (r = backend_check(ctx, c, vs, err)) < 0)
      return r;
  }
  return 0;
}

static int apply_globals(jitsu_ctx *ctx, cfg *c, jitsu_error *err) {
  size_t n = 0, bytes = 0;
  for (size_t i = 0; i < c->n; i++)
    if (vm_name_of(c->e[i].section) == NULL) {
      n++;
      bytes += strlen(c->e[i].section) + strlen(c->e[i].key) +
               strlen(c->e[i].value) + 3;
    }
  jitsu_param *g = malloc(n * sizeof(*g) + bytes + 1);
  unsigned *lines = malloc((n + 1) * sizeof(*lines));
  if (g == NULL || lines == NULL) {
    free(g);
    free(lines);
    return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  }
  char *p = (char *)(g + n);
  size_t k = 0;
  for (size_t i = 0; i < c->n; i++) {
    entry *e = &c->e[i];
    if (vm_name_of(e->section) != NULL)
      continue;
    g[k].key = p;
    p += sprintf(p, "%s/%s", e->section, e->key) + 1;
    g[k].value = p;
    p += sprintf(p, "%s", e->value) + 1;
    lines[k] = e->line;
    k++;
    if (strcmp(e->section, "jitsu") != 0)
      continue;
    unsigned u = 0;
    if (strcmp(e->key, "state-dir") == 0) {
      char *dir = jitsu__strdup(e->value);
      if (dir == NULL) {
        free(g);
        free(lines);
        return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
      }
      if (strcmp(dir, ctx->state_dir) != 0)
        jitsu__state_dir_unlock(ctx); /* taken again where it is used */
      free(ctx->state_dir);
      ctx->state_dir = dir;
    } else if (jitsu__parse_uint(e->value, &u) == 0 && u > 0) {
      if (strcmp(e->key, "max-live") == 0)
        ctx->max_live = u;
      else if (strcmp(e->key, "max-starting") == 0)
        ctx->max_starting = u;
      else if (strcmp(e->key, "max-waiters") == 0)
        ctx->max_waiters = u;
    }
  }
  free(ctx->globals);
  free(ctx->global_lines);
  ctx->globals = g;
  ctx->global_lines = lines;
  ctx->n_globals = n;
  return 0;
}

/* A definition of (vs) failed with (why), which says "key: text" or
 * "text": say it in (err) at the line of that key. */
static void reanchor(jitsu_error *err, cfg *c, const vmsec *vs,
                     const jitsu_error *why, int r) {
  const char *text = why->message;
  size_t kl = strlen(why->key);
  if (kl > 0 && strncmp(text, why->key, kl) == 0 && text[kl] == ':')
    text += kl + 2;
  jitsu__err_at(err, line_of(c, vs->section, why->key, vs->line));
  jitsu_error_set(err, r, why->key[0] ? why->key : NULL, "vm '%s': %s",
                  vs->name, text[0] ? text : jitsu_strerror(r));
}

static int load_file(jitsu_ctx *ctx, FILE *f, const char *name, bool apply,
                     jitsu_error *err) {
  jitsu_error local;
  if (err == NULL)
    err = &local;
  memset(err, 0, sizeof(*err));
  snprintf(err->file, sizeof(err->file), "%s", name);
  loaded l;
  memset(&l, 0, sizeof(l));
  int r = parse_and_check(ctx, f, &l, false, err);
  if (r < 0 || !apply)
    goto done;
  if (ctx->vms.count > 0 && line_of(&l.c, "jitsu", "state-dir", 0) != 0) {
    jitsu__err_at(err, line_of(&l.c, "jitsu", "state-dir", 0));
    r = jitsu_error_set(err, -EBUSY, "state-dir",
                        "cannot change the state directory of a context "
                        "that has vms");
    goto done;
  }
  /* Everything checks out: apply. A failure from here on (a socket that
   * cannot be bound) undoes the vms this call defined. */
  char *old_dir = jitsu__strdup(ctx->state_dir);
  unsigned limits[3] = {ctx->max_live, ctx->max_starting, ctx->max_waiters};
  if (old_dir == NULL || (r = apply_globals(ctx, &l.c, err)) < 0) {
    free(old_dir);
    goto done;
  }
  size_t i = 0;
  char dir[600];
  if (l.n_vms > 0 &&
      (r = jitsu_ctx_state_subdir(ctx, NULL, dir, sizeof(dir))) < 0) {
    /* at the state-dir line if there is one, else the file's */
    jitsu__err_at(err, line_of(&l.c, "jitsu", "state-dir", 0));
    jitsu_error_set(err, r, NULL, "%s", jitsu_ctx_last_error(ctx));
  }
  for (; r == 0 && i < l.n_vms; i++) {
    jitsu_error why;
    memset(&why, 0, sizeof(why));
    r = jitsu_vm_define(ctx, &l.vms[i].def, NULL, &why);
    if (r < 0) {
      reanchor(err, &l.c, &l.vms[i], &why, r);
      break;
    }
    jitsu_vm_find(ctx, l.vms[i].name)->cfg_line = l.vms[i].line;
  }
  if (r < 0) {
    while (i-- > 0) {
      /* An adopted guest keeps running, as it was before this call. */
      jitsu__vm_forget(jitsu_vm_find(ctx, l.vms[i].name));
    }
    if (strcmp(old_dir, ctx->state_dir) != 0)
      jitsu__state_dir_unlock(ctx);
    free(ctx->state_dir);
    ctx->state_dir = old_dir;
    ctx->max_live = limits[0], ctx->max_starting = limits[1];
    ctx->max_waiters = limits[2];
  } else {
    free(old_dir);
  }
done:
  loaded_free(&l);
  if (r < 0)
    jitsu__fail(ctx, r, "%s", err->message);
  return r;
}

int jitsu__config_load_stream(jitsu_ctx *ctx, FILE *f, const char *name,
                              bool apply, jitsu_error *err) {
  return load_file(ctx, f, name, apply, err);
}

static int open_and_load(jitsu_ctx *ctx, const char *path, bool apply,
                         jitsu_error *err) {
  FILE *f = fopen(path, "re");
  if (f == NULL) {
    int e = -errno;
    return jitsu_error_set(err, e, NULL, "%s: cannot open: %s", path,
                           strerror(-e));
  }
  int r = load_file(ctx, f, path, apply, err);
  fclose(f);
  if (r == 0 && apply) {
    char *copy = jitsu__strdup(path);
    if (copy != NULL) {
      free(ctx->config_path);
      ctx->config_path = copy;
    }
  }
  return r;
}

/* Load (apply) or check the file (path); the detail of a failure in (err)
 * (may be NULL) and in the context's last error. */
static int load_or_check(jitsu_ctx *ctx, const char *path, bool apply,
                         jitsu_error *err) {
  jitsu_error local;
  if (err == NULL)
    err = &local;
  memset(err, 0, sizeof(*err));
  ctx->last_error[0] = '\0';
  return jitsu__fail_error(ctx, open_and_load(ctx, path, apply, err), err);
}

int jitsu_config_load(jitsu_ctx *ctx, const char *path, jitsu_error *err) {
  return load_or_check(ctx, path, true, err);
}

int jitsu_config_check(jitsu_ctx *ctx, const char *path, jitsu_error *err) {
  return load_or_check(ctx, path, false, err);
}

const char *jitsu_config_get(jitsu_ctx *ctx, const char *section,
                             const char *key, size_t index) {
  size_t sl = strlen(section);
  for (size_t i = 0; i < ctx->n_globals; i++) {
    const char *k = ctx->globals[i].key;
    if (strncmp(k, section, sl) == 0 && k[sl] == '/' &&
        strcmp(k + sl + 1, key) == 0 && index-- == 0)
      return ctx->globals[i].value;
  }
  return NULL;
}

int jitsu_config_where(jitsu_ctx *ctx, const char *section, const char *key,
                       size_t index, char *out, size_t size) {
  size_t sl = strlen(section);
  for (size_t i = 0; i < ctx->n_globals && ctx->config_path != NULL; i++) {
    const char *k = ctx->globals[i].key;
    if (strncmp(k, section, sl) == 0 && k[sl] == '/' &&
        strcmp(k + sl + 1, key) == 0 && index-- == 0) {
      snprintf(out, size, "%s:%u", ctx->config_path, ctx->global_lines[i]);
      return 0;
    }
  }
  return -ENOENT;
}

void jitsu_vm_blame(jitsu_vm *vm, char *why, size_t size) {
  if (vm->cfg_line == 0 || vm->ctx->config_path == NULL)
    return;
  char *copy = jitsu__strdup(why);
  if (copy != NULL)
    snprintf(why, size, "%s:%u: %s", vm->ctx->config_path, vm->cfg_line, copy);
  free(copy);
}

void jitsu_config_blame(jitsu_ctx *ctx, const char *section, const char *key,
                        const char *value, char *why, size_t size) {
  const char *v;
  char where[600];
  for (size_t i = 0; (v = jitsu_config_get(ctx, section, key, i)) != NULL; i++)
    if (v == value &&
        jitsu_config_where(ctx, section, key, i, where, sizeof(where)) == 0) {
      char *copy = jitsu__strdup(why);
      if (copy != NULL)
        snprintf(why, size, "%s: [%s] %s", where, section, copy);
      free(copy);
      return;
    }
}

const char *jitsu_reload_action_name(jitsu_reload_action a) {
  static const char *const names[] = {"added", "removed", "changed",
                                      "changed-at-stop", "unchanged"};
  return (unsigned)a < JITSU__ARRAY_SIZE(names) ? names[a] : "unknown";
}

static int undefine_after_stop_cb(jitsu_vm *vm, void *arg);

static void remove_after_stop(jitsu_vm *vm, int status, void *arg) {
  (void)status, (void)arg;
  undefine_after_stop_cb(vm, NULL);
}

/* Undefine a vm that a reload removed, once it is not live. */
static int undefine_after_stop_cb(jitsu_vm *vm, void *arg) {
  (void)arg;
  jitsu_state st = jitsu_vm_state(vm);
  if (st == JITSU_STATE_STOPPED || st == JITSU_STATE_FAILED) {
    jitsu_vm_log(vm, JITSU_LOG_INFO, "removed by a reload");
    return jitsu_vm_undefine(vm);
  }
  return JITSU__BY(
      vm->ctx, "a reload",
      jitsu_vm_stop(vm, JITSU_STOP_SHUTDOWN, remove_after_stop, NULL));
}

typedef struct plan {
  jitsu_vm *vm;   /* existing vm, or NULL for an added one */
  int differs;    /* 0, 1 or 2 (see jitsu__vm_def_differs) */
  bool todo;      /* to define, or to redefine now (phase A) */
  bool added;     /* phase A defined it: undo forgets it */
  bool redefined; /* phase A redefined it: (undo) restores it */
  jitsu__snapshot *undo;
} plan;

static bool in_file(loaded *l, const char *name) {
  return jitsu__table_find(&l->names, name) != NULL;
}

static void undo_reload(jitsu_ctx *ctx, loaded *l, plan *pl) {
  for (size_t i = 0; i < l->n_vms; i++)
    if (pl[i].added) {
      jitsu_vm *vm = jitsu_vm_find(ctx, l->vms[i].name);
      if (vm != NULL)
        jitsu__vm_forget(vm);
    }
  for (size_t i = 0; i < l->n_vms; i++)
    if (pl[i].redefined)
      jitsu__snapshot_restore(pl[i].vm, pl[i].undo);
}

/* Define (i) or redefine it now; 0, or why not in (why). */
static int define_planned(jitsu_ctx *ctx, loaded *l, plan *p, size_t i,
                          jitsu_error *why) {
  vmsec *vs = &l->vms[i];
  memset(why, 0, sizeof(*why));
  if (p->vm == NULL) {
    int r = jitsu_vm_define(ctx, &vs->def, NULL, why);
    p->added = r == 0;
    return r;
  }
  if (p->undo == NULL && (p->undo = jitsu__snapshot_take(p->vm)) == NULL)
    return jitsu_error_set(why, -ENOMEM, NULL, "out of memory");
  int r = jitsu__vm_redefine(p->vm, vs->backend, &vs->def, why);
  p->redefined = r == 0;
  return r;
}

static int reload(jitsu_ctx *ctx, jitsu_reload_fn fn, void *arg,
                  jitsu_error *err);

int jitsu_config_reload(jitsu_ctx *ctx, jitsu_reload_fn fn, void *arg,
                        jitsu_error *err) {
  jitsu_error local;
  if (err == NULL)
    err = &local;
  memset(err, 0, sizeof(*err));
  ctx->last_error[0] = '\0';
  return jitsu__fail_error(ctx, reload(ctx, fn, arg, err), err);
}

static int reload(jitsu_ctx *ctx, jitsu_reload_fn fn, void *arg,
                  jitsu_error *err) {
  if (ctx->config_path == NULL)
    return jitsu_error_set(err, -ENOENT, NULL,
                           "no configuration file was loaded");
  snprintf(err->file, sizeof(err->file), "%s", ctx->config_path);
  FILE *f = fopen(ctx->config_path, "re");
  if (f == NULL)
    return jitsu_error_set(err, -errno, NULL, "cannot open: %s",
                           strerror(errno));
  loaded l;
  memset(&l, 0, sizeof(l));
  plan *pl = NULL;
  int r = parse_and_check(ctx, f, &l, true, err);
  fclose(f);
  if (r < 0)
    goto done;
  unsigned sd_line = line_of(&l.c, "jitsu", "state-dir", 0);
  for (size_t i = 0; sd_line && i < l.c.n; i++)
    if (strcmp(l.c.e[i].section, "jitsu") == 0 &&
        strcmp(l.c.e[i].key, "state-dir") == 0 &&
        strcmp(l.c.e[i].value, ctx->state_dir) != 0) {
      jitsu__err_at(err, sd_line);
      r = jitsu_error_set(err, -EBUSY, "state-dir",
                          "cannot change on a reload (it is %s)",
                          ctx->state_dir);
      goto done;
    }
  pl = calloc(l.n_vms ? l.n_vms : 1, sizeof(*pl));
  if (pl == NULL) {
    r = jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
    goto done;
  }
  /* Phase A: define the new vms and redefine changed vms that do not run.
   * This can fail (a socket that cannot be bound, or that another vm
   * holds) and is undone. A vm may take a socket that another one gives
   * up in the same file, so those that fail are tried again after the
   * others, as long as each round gets one more done. */
  size_t todo = 0;
  for (size_t i = 0; i < l.n_vms; i++) {
    vmsec *vs = &l.vms[i];
    jitsu_vm *vm = pl[i].vm = jitsu_vm_find(ctx, vs->name);
    if (vm != NULL)
      pl[i].differs = jitsu__vm_def_differs(vm, vs->backend, &vs->def);
    jitsu_state st = vm ? jitsu_vm_state(vm) : JITSU_STATE_STOPPED;
    pl[i].todo =
        vm == NULL || (pl[i].differs == 2 &&
                       (st == JITSU_STATE_STOPPED || st == JITSU_STATE_FAILED));
    todo += pl[i].todo;
  }
  for (size_t done = 1; todo > 0 && done > 0;) {
    jitsu_error why, first;
    size_t first_i = 0;
    int first_r = 0;
    done = 0;
    for (size_t i = 0; i < l.n_vms; i++) {
      if (!pl[i].todo)
        continue;
      if ((r = define_planned(ctx, &l, &pl[i], i, &why)) < 0) {
        if (first_r == 0 || r == -ENOMEM)
          first = why, first_i = i, first_r = r;
        if (r == -ENOMEM)
          break;
        continue;
      }
      pl[i].todo = false;
      todo--;
      done++;
    }
    if (first_r == -ENOMEM || (todo > 0 && done == 0)) {
      r = first_r; /* the first that failed this round says why */
      reanchor(err, &l.c, &l.vms[first_i], &first, r);
      goto undo;
    }
  }
  /* Phase C cannot fail: limits and sections, settings of running vms,
   * stashed definitions, removals. */
  unsigned limits[3] = {ctx->max_live, ctx->max_starting, ctx->max_waiters};
  ctx->max_live = JITSU_DEFAULT_MAX_LIVE;
  ctx->max_starting = JITSU_DEFAULT_MAX_STARTING;
  ctx->max_waiters = JITSU_DEFAULT_MAX_WAITERS;
  if (apply_globals(ctx, &l.c, err) < 0) {
    ctx->max_live = limits[0], ctx->max_starting = limits[1];
    ctx->max_waiters = limits[2];
    r = -ENOMEM;
    goto undo;
  }
  for (size_t i = 0; i < l.n_vms; i++) {
    jitsu_vm *vm = pl[i].vm;
    jitsu_reload_action act = JITSU_RELOAD_ADDED;
    if (vm != NULL && pl[i].differs == 0) {
      act = JITSU_RELOAD_UNCHANGED;
    } else if (vm != NULL && (pl[i].differs == 1 || pl[i].redefined)) {
      if (!pl[i].redefined) {
        jitsu__vm_apply_settings(vm, &l.vms[i].def);
        jitsu__vm_event(vm, JITSU_VM_CHANGED);
      }
      act = JITSU_RELOAD_CHANGED;
    } else if (vm != NULL) {
      jitsu__vm_apply_settings(vm, &l.vms[i].def);
      if (jitsu__vm_stash_def(vm, l.vms[i].backend, &l.vms[i].def) < 0)
        jitsu_vm_log(vm, JITSU_LOG_ERROR, "out of memory: definition kept");
      act = JITSU_RELOAD_CHANGED_AT_STOP;
    }
    if ((vm = jitsu_vm_find(ctx, l.vms[i].name)) != NULL)
      vm->cfg_line = l.vms[i].line; /* where it is now */
    if (fn != NULL)
      fn(l.vms[i].name, act, arg);
  }
  /* Removed vms: collect first, as undefining changes the list. */
  size_t n_gone = 0;
  jitsu_vm **gone = calloc(ctx->vms.count + 1, sizeof(*gone));
  for (jitsu_list *k = ctx->all_vms.next; gone && k != &ctx->all_vms;
       k = k->next) {
    jitsu_vm *vm = JITSU_CONTAINER_OF(k, jitsu_vm, all);
    if (!in_file(&l, vm->name) && !vm->removing)
      gone[n_gone++] = vm;
  }
  for (size_t i = 0; i < n_gone; i++) {
    if (fn != NULL)
      fn(gone[i]->name, JITSU_RELOAD_REMOVED, arg);
    gone[i]->removing = true;
    jitsu__vm_event(gone[i], JITSU_VM_REMOVING);
    undefine_after_stop_cb(gone[i], NULL);
  }
  free(gone);
  for (jitsu__sub *s = ctx->reload_subs; s != NULL;) {
    jitsu__sub *next = s->next; /* fn may unsubscribe itself */
    ((jitsu_reloaded_fn)s->fn)(ctx, s->arg);
    s = next;
  }
  r = 0;
  goto done;
undo:
  undo_reload(ctx, &l, pl);
done:
  for (size_t i = 0; pl != NULL && i < l.n_vms; i++)
    jitsu__snapshot_free(pl[i].undo);
  free(pl);
  loaded_free(&l);
  if (r < 0)
    jitsu__fail(ctx, r, "%s", err->message);
  return r;
}

int jitsu_ctx_on_reloaded(jitsu_ctx *ctx, jitsu_reloaded_fn fn, void *arg) {
  return jitsu__sub_add(&ctx->reload_subs, (jitsu__any_fn)fn, arg);
}

int jitsu_ctx_off_reloaded(jitsu_ctx *ctx, jitsu_reloaded_fn fn, void *arg) {
  return jitsu__sub_remove(&ctx->reload_subs, (jitsu__any_fn)fn, arg);
}

uint64_t jitsu_config_duration(jitsu_ctx *ctx, const char *section,
                               const char *key, uint64_t def) {
  const char *v = jitsu_config_get(ctx, section, key, 0);
  uint64_t ms;
  return v != NULL && jitsu_parse_duration(v, &ms) == 0 ? ms : def;
}

uint64_t jitsu_config_size(jitsu_ctx *ctx, const char *section, const char *key,
                           uint64_t def) {
  const char *v = jitsu_config_get(ctx, section, key, 0);
  uint64_t bytes;
  return v != NULL && jitsu_parse_size(v, &bytes) == 0 ? bytes : def;
}

unsigned jitsu_config_uint(jitsu_ctx *ctx, const char *section, const char *key,
                           unsigned def) {
  const char *v = jitsu_config_get(ctx, section, key, 0);
  unsigned u;
  return v != NULL && jitsu__parse_uint(v, &u) == 0 ? u : def;
}

bool jitsu_config_bool(jitsu_ctx *ctx, const char *section, const char *key,
                       bool def) {
  const char *v = jitsu_config_get(ctx, section, key, 0);
  bool b;
  return v != NULL && jitsu_parse_bool(v, &b) == 0 ? b : def;
}
