/* The keys a configuration may use: the library's own, and those that
 * backends and frontends declare; the checks of their values. vm
 * definitions (define.c) and configuration files (config.c) both use them. */
#include "internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The keys of [vm] sections that fill jitsu_vm_def's fields. */
static const jitsu_key vm_field_keys[] = {
    {"backend", JITSU_KEY_STRING, 0, "the backend that runs the guest"},
    {"ready", JITSU_KEY_STRING, 0,
     "[marker+]none | notify | tcp:HOST:PORT | http:HOST:PORT[/PATH]"},
    {"ready-timeout", JITSU_KEY_DURATION, 0, "time to become ready"},
    {"stop-grace", JITSU_KEY_DURATION, 0, "shutdown grace before destroy"},
    {"idle-timeout", JITSU_KEY_DURATION, 0, "idle time before idle-action"},
    {"idle-action", JITSU_KEY_ENUM, 0, "none | destroy | shutdown | suspend"},
};

/* Keys of [vm] sections that go to params, for frontends. */
static const jitsu_key vm_common_keys[] = {
    {"address", JITSU_KEY_STRING, JITSU_KEY_MULTI,
     "an address of the guest's service, for frontends"},
    {"channel", JITSU_KEY_STRING, JITSU_KEY_MULTI,
     "a channel name whose connects summon this vm"},
    {"socket", JITSU_KEY_STRING, JITSU_KEY_MULTI,
     "tcp:HOST:PORT [to=HOST:PORT]: connections summon the vm and are "
     "relayed to the guest"},
    {"socket-queue", JITSU_KEY_UINT, 0,
     "connections held while the vm starts (default 256)"},
    {"socket-max-conns", JITSU_KEY_UINT, 0,
     "connections held or relayed at once (default 1024)"},
    {"socket-udp-timeout", JITSU_KEY_DURATION, 0,
     "a udp flow without traffic ends (default 30s)"},
    {"socket-guest-conns", JITSU_KEY_UINT, 0,
     "connections relayed to the guest at once; the rest wait (default: no "
     "limit)"},
};

static const jitsu_key global_keys[] = {
    {"state-dir", JITSU_KEY_STRING, 0, "records, logs and sockets"},
    {"max-live", JITSU_KEY_UINT, 0, "live guests at once"},
    {"max-starting", JITSU_KEY_UINT, 0, "guests starting at once"},
    {"max-waiters", JITSU_KEY_UINT, 0, "summons waiting on one vm"},
    {"control-socket", JITSU_KEY_STRING, 0, "the control socket's path"},
    {"control-group", JITSU_KEY_STRING, 0, "a group that may use it"},
    {"rendezvous", JITSU_KEY_BOOL, 0,
     "serve the channel rendezvous (frontends; default no)"},
    {"rendezvous-socket", JITSU_KEY_STRING, 0,
     "its path (default STATE/rendezvous.sock)"},
};

/* A copy of (e) at the head of the context's declarations. */
static int add_section_entry(jitsu_ctx *ctx, const jitsu__section_keys *e) {
  jitsu__section_keys *s = malloc(sizeof(*s));
  if (s == NULL)
    return -ENOMEM;
  *s = *e;
  s->next = ctx->keys;
  ctx->keys = s;
  return 0;
}

int jitsu_config_declare_keys(jitsu_ctx *ctx, const char *section,
                              const jitsu_key *keys, size_t n) {
  if (section == NULL || section[0] == '\0' || (keys == NULL && n > 0))
    return jitsu__fail(ctx, -EINVAL, "declare keys: no section or no keys");
  for (size_t i = 0; i < n; i++) {
    if (keys[i].name == NULL || (unsigned)keys[i].type > JITSU_KEY_ENUM)
      return jitsu__fail(ctx, -EINVAL, "declare keys: key %zu of [%s] has %s",
                         i, section,
                         keys[i].name ? "an unknown type" : "no name");
    for (jitsu__section_keys *s = ctx->keys; s != NULL; s = s->next)
      if (strcmp(s->section, section) == 0)
        for (size_t j = 0; j < s->n; j++)
          if (strcmp(s->keys[j].name, keys[i].name) == 0)
            return jitsu__fail(ctx, -EEXIST, "key '%s' of [%s] declared twice",
                               keys[i].name, section);
  }
  jitsu__section_keys add = {.section = section, .keys = keys, .n = n};
  return add_section_entry(ctx, &add);
}

int jitsu_config_check_values(jitsu_ctx *ctx, const char *section,
                              jitsu_value_check_fn fn, void *arg) {
  if (section == NULL || fn == NULL || strcmp(section, "vm") == 0 ||
      strcmp(section, "jitsu") == 0)
    return jitsu__fail(ctx, -EINVAL,
                       "check values: a section of the caller's own, and a "
                       "check");
  if (!jitsu__keys_declared(ctx, section))
    return jitsu__fail(ctx, -ENOENT, "check values: [%s] has no keys", section);
  jitsu__section_keys add = {.section = section, .check = fn, .check_arg = arg};
  return add_section_entry(ctx, &add);
}

/* The caller's checks of entry (e) of section (name). */
int jitsu__keys_run_checks(jitsu_ctx *ctx, const char *name, const char *key,
                           const char *value, jitsu_error *err) {
  for (jitsu__section_keys *s = ctx->keys; s != NULL; s = s->next) {
    if (s->check == NULL || strcmp(s->section, name) != 0)
      continue;
    char why[sizeof(err->message)] = "";
    int r = s->check(ctx, name, key, value, why, sizeof(why), s->check_arg);
    if (r < 0)
      return jitsu_error_set(err, r, key, "%s",
                             why[0] ? why : jitsu_strerror(r));
  }
  return 0;
}

static const jitsu_key *find_key(const jitsu_key *keys, size_t n,
                                 const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(keys[i].name, name) == 0)
      return &keys[i];
  return NULL;
}

const jitsu_key *jitsu__keys_find(jitsu_ctx *ctx, const char *section,
                                  const char *name) {
  if (strcmp(section, "jitsu") == 0) {
    const jitsu_key *k =
        find_key(global_keys, JITSU__ARRAY_SIZE(global_keys), name);
    if (k != NULL)
      return k;
  }
  if (strcmp(section, "vm") == 0) {
    const jitsu_key *k =
        find_key(vm_common_keys, JITSU__ARRAY_SIZE(vm_common_keys), name);
    if (k != NULL)
      return k;
  }
  for (jitsu__section_keys *s = ctx->keys; s != NULL; s = s->next)
    if (strcmp(s->section, section) == 0) {
      const jitsu_key *k = find_key(s->keys, s->n, name);
      if (k != NULL)
        return k;
    }
  return NULL;
}

bool jitsu__keys_declared(jitsu_ctx *ctx, const char *section) {
  for (jitsu__section_keys *s = ctx->keys; s != NULL; s = s->next)
    if (strcmp(s->section, section) == 0)
      return true;
  return false;
}

/* Check (value) against the type of (k). */
/* Whether (value) is one of the words "a | b | c-*" that (help) lists
 * before any "(". */
static bool enum_allows(const char *help, const char *value) {
  const char *end = strchr(help, '(');
  if (end == NULL)
    end = help + strlen(help);
  size_t vl = strlen(value);
  for (const char *p = help; p < end;) {
    while (p < end && (*p == ' ' || *p == '|'))
      p++;
    const char *w = p;
    while (p < end && *p != ' ' && *p != '|')
      p++;
    size_t wl = (size_t)(p - w);
    if (wl > 0 && w[wl - 1] == '*' && vl >= wl - 1 &&
        strncmp(w, value, wl - 1) == 0)
      return true;
    if (wl > 0 && wl == vl && strncmp(w, value, vl) == 0)
      return true;
  }
  return false;
}

int jitsu__keys_check_value(const jitsu_key *k, const char *value,
                            jitsu_error *err) {
  uint64_t ms;
  unsigned u;
  bool b;
  switch (k->type) {
  case JITSU_KEY_ENUM:
    if (!enum_allows(k->help ? k->help : "", value)) {
      const char *h = k->help ? k->help : "";
      const char *paren = strchr(h, '(');
      int n = paren ? (int)(paren - h) : (int)strlen(h);
      while (n > 0 && h[n - 1] == ' ')
        n--;
      return jitsu_error_set(err, -EINVAL, k->name, "'%s' is not one of: %.*s",
                             value, n, h);
    }
    return 0;
  case JITSU_KEY_DURATION:
    if (jitsu_parse_duration(value, &ms) < 0)
      return jitsu_error_set(err, -EINVAL, k->name,
                             "'%s' is not a duration (a number with ms, s, "
                             "m or h, e.g. 500ms or 30s)",
                             value);
    return 0;
  case JITSU_KEY_UINT:
    if (jitsu__parse_uint(value, &u) < 0)
      return jitsu_error_set(err, -EINVAL, k->name,
                             "'%s' is not a whole number from 0 to %u", value,
                             UINT_MAX);
    return 0;
  case JITSU_KEY_SIZE:
    if (jitsu_parse_size(value, &ms) < 0)
      return jitsu_error_set(err, -EINVAL, k->name,
                             "'%s' is not a size (bytes, or a number with K, "
                             "M, G or T)",
                             value);
    return 0;
  case JITSU_KEY_BOOL:
    if (jitsu_parse_bool(value, &b) < 0)
      return jitsu_error_set(err, -EINVAL, k->name,
                             "'%s' is not a boolean (yes or no)", value);
    return 0;
  default:
    if (value[0] == '\0')
      return jitsu_error_set(err, -EINVAL, k->name, "empty value");
    return 0;
  }
}

/* Levenshtein's edit distance of (a) and (b) (keys: under 64 bytes; a
 * longer one is far from everything). */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b), row[64];
  if (la >= 64 || lb >= 64)
    return SIZE_MAX;
  for (size_t j = 0; j <= lb; j++)
    row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

/* The nearest of (keys) to (key) so far, in (*best) at (*d). */
static void nearest_in(const jitsu_key *keys, size_t n, const char *key,
                       const char **best, size_t *d) {
  for (size_t i = 0; i < n; i++) {
    size_t e = edit_distance(keys[i].name, key);
    if (e < *d)
      *d = e, *best = keys[i].name;
  }
}

/* A known key of (section) (and of (b), for a vm) close enough to (key)
 * to be what was meant (two edits, or one in a short key), or NULL. */
const char *jitsu__keys_did_you_mean(jitsu_ctx *ctx, const jitsu_backend_ops *b,
                                     const char *section, const char *key) {
  const char *best = NULL;
  size_t d = SIZE_MAX;
  if (strcmp(section, "jitsu") == 0)
    nearest_in(global_keys, JITSU__ARRAY_SIZE(global_keys), key, &best, &d);
  if (strcmp(section, "vm") == 0) {
    nearest_in(vm_common_keys, JITSU__ARRAY_SIZE(vm_common_keys), key, &best,
               &d);
    nearest_in(vm_field_keys, JITSU__ARRAY_SIZE(vm_field_keys), key, &best, &d);
  }
  if (b != NULL)
    nearest_in(b->keys, b->n_keys, key, &best, &d);
  for (jitsu__section_keys *s = ctx->keys; s != NULL; s = s->next)
    if (strcmp(s->section, section) == 0)
      nearest_in(s->keys, s->n, key, &best, &d);
  return d <= (strlen(key) > 4 ? 2 : 1) ? best : NULL;
}

/* The declaration of (key) for a vm of (backend): backend keys first. */
const jitsu_key *jitsu__keys_vm_key(jitsu_ctx *ctx, const jitsu_backend_ops *b,
                                    const char *key) {
  const jitsu_key *k = b ? find_key(b->keys, b->n_keys, key) : NULL;
  return k ? k : jitsu__keys_find(ctx, "vm", key);
}

int jitsu__keys_unknown_vm_key(jitsu_ctx *ctx, const jitsu_backend_ops *b,
                               const char *key, jitsu_error *err) {
  const char *near = jitsu__keys_did_you_mean(ctx, b, "vm", key);
  if (near != NULL)
    return jitsu_error_set(err, -EINVAL, key, "unknown key; did you mean '%s'?",
                           near);
  char list[256] = "";
  size_t o = 0;
  for (size_t i = 0; b && i < b->n_keys && o < sizeof(list) - 1; i++)
    o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "",
                          b->keys[i].name);
  return jitsu_error_set(err, -EINVAL, key,
                         "unknown key (backend '%s' accepts: %s; see "
                         "jitsu.conf(5) for the keys of every vm)",
                         b ? b->name : "?", list);
}

int jitsu__check_vm_params(jitsu_ctx *ctx, const jitsu_backend_ops *backend,
                           const jitsu_param *params, size_t n,
                           jitsu_error *err) {
  for (size_t i = 0; i < n; i++) {
    if (params[i].key == NULL || params[i].value == NULL)
      return jitsu_error_set(err, -EINVAL, NULL, "a param without key/value");
    const jitsu_key *k = jitsu__keys_vm_key(ctx, backend, params[i].key);
    if (k == NULL)
      return jitsu__keys_unknown_vm_key(ctx, backend, params[i].key, err);
    int r = jitsu__keys_check_value(k, params[i].value, err);
    if (r < 0)
      return r;
    if (!(k->flags & JITSU_KEY_MULTI))
      for (size_t j = 0; j < i; j++)
        if (strcmp(params[j].key, params[i].key) == 0)
          return jitsu_error_set(err, -EINVAL, params[i].key,
                                 "given more than once");
  }
  for (size_t i = 0; i < backend->n_keys; i++) {
    if (!(backend->keys[i].flags & JITSU_KEY_REQUIRED))
      continue;
    size_t j = 0;
    while (j < n && strcmp(params[j].key, backend->keys[i].name) != 0)
      j++;
    if (j == n)
      return jitsu_error_set(err, -EINVAL, backend->keys[i].name,
                             "missing (backend '%s' requires it)",
                             backend->name);
  }
  return 0;
}

/* Check entry (i) of section (hd) against its declaration (k): the
 * value's type, and that a key that does not repeat was not given before
 * in the section (a section's few entries: not the whole file). */

const jitsu_key *jitsu__keys_vm_field(const char *name) {
  return find_key(vm_field_keys, JITSU__ARRAY_SIZE(vm_field_keys), name);
}
