/* jitsu-dns: the names and zones it is authoritative for, built from the
 * vms' dns= keys and [dns] zone= keys, looked up in O(1). */
#include "dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libzscanner/scanner.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static size_t bucket_of(const dns_zones *z, const char *key, size_t nb) {
  return (size_t)(jitsu_hash(&z->key, key, strlen(key)) % nb);
}

static size_t vm_bucket(const dns_zones *z, const jitsu_vm *vm) {
  uintptr_t v = (uintptr_t)vm;
  return (size_t)((v >> 4) ^ (v >> 12)) % z->n_vm_buckets;
}

static dns_name *find(const dns_zones *z, const char *key) {
  if (z->n_buckets == 0)
    return NULL;
  for (dns_name *n = z->buckets[bucket_of(z, key, z->n_buckets)]; n;
       n = n->next)
    if (strcmp(n->key, key) == 0)
      return n;
  return NULL;
}

/* Twice the buckets, when the names outnumber them twice (a zone file of
 * 100,000 names would otherwise make chains of thousands). A failed
 * allocation keeps the old table: slower, still right. */
static void grow(dns_zones *z) {
  size_t nb = z->n_buckets * 2;
  dns_name **b = calloc(nb, sizeof(*b));
  if (b == NULL)
    return;
  for (size_t i = 0; i < z->n_buckets; i++)
    while (z->buckets[i]) {
      dns_name *n = z->buckets[i];
      z->buckets[i] = n->next;
      size_t h = bucket_of(z, n->key, nb);
      n->next = b[h];
      b[h] = n;
    }
  free(z->buckets);
  z->buckets = b;
  z->n_buckets = nb;
}

static dns_name *add(dns_zones *z, const char *key) {
  dns_name *n = find(z, key);
  if (n != NULL)
    return n;
  n = calloc(1, sizeof(*n) + strlen(key) + 1);
  if (n == NULL)
    return NULL;
  strcpy(n->key, key);
  size_t b = bucket_of(z, key, z->n_buckets);
  n->next = z->buckets[b];
  z->buckets[b] = n;
  if (++z->n_names > 2 * z->n_buckets)
    grow(z);
  return n;
}

/* An empty table of names: 64 buckets, or about 4 per vm of (ctx). */
static int zones_init(dns_zones *z, size_t vms) {
  memset(z, 0, sizeof(*z));
  jitsu_hash_key_random(&z->key); /* queries choose the names looked up */
  z->n_buckets = 64;
  while (z->n_buckets < vms * 4)
    z->n_buckets *= 2;
  z->n_vm_buckets = z->n_buckets;
  z->buckets = calloc(z->n_buckets, sizeof(*z->buckets));
  z->by_vm = calloc(z->n_vm_buckets, sizeof(*z->by_vm));
  return z->buckets == NULL || z->by_vm == NULL ? -ENOMEM : 0;
}

static const char *parent(const char *key);

static dns_zone *zone_of(const dns_zones *z, const char *key) {
  /* The longest zone apex that (key) is, or is under. */
  for (const char *p = key;; p++) {
    for (dns_zone *zn = z->zones; zn; zn = zn->next)
      if (strcmp(zn->key, p) == 0)
        return zn;
    p = strchr(p, '.');
    if (p == NULL)
      break;
  }
  for (dns_zone *zn = z->zones; zn; zn = zn->next)
    if (zn->key[0] == '\0')
      return zn; /* the root zone holds everything */
  return NULL;
}

/* Parse an address value: IP, IP:PORT, [IPV6]:PORT or IPV6. */
static int parse_ip(const char *text, uint8_t *out, int *family) {
  char buf[80];
  snprintf(buf, sizeof(buf), "%s", text);
  char *host = buf;
  if (buf[0] == '[') {
    char *end = strchr(buf, ']');
    if (end == NULL)
      return -1;
    *end = '\0';
    host = buf + 1;
  } else if (strchr(buf, ':') == strrchr(buf, ':') && strchr(buf, ':')) {
    *strchr(buf, ':') = '\0'; /* IPv4:PORT */
  }
  if (inet_pton(AF_INET, host, out) == 1)
    return *family = AF_INET, 0;
  if (inet_pton(AF_INET6, host, out) == 1)
    return *family = AF_INET6, 0;
  return -1;
}

static int load_zone_file(dns_zones *z, dns_zone *zn, char *why,
                          size_t why_size);

static int add_zone(dns_zones *z, const char *value, const dns_settings *s,
                    char *why, size_t why_size) {
  /* "NAME" or "NAME file=PATH" */
  char text[DNS_KEY_MAX];
  const char *file = NULL, *sp = strchr(value, ' ');
  if (sp != NULL) {
    const char *f = sp;
    while (*f == ' ')
      f++;
    if (strncmp(f, "file=", 5) != 0 || f[5] == '\0' || strchr(f, ' ')) {
      snprintf(why, why_size, "zone '%s': expected NAME [file=PATH]", value);
      return -EINVAL;
    }
    file = f + 5;
  }
  snprintf(text, sizeof(text), "%.*s",
           (int)(sp ? sp - value : (long)strlen(value)), value);
  dns_zone *zn = calloc(1, sizeof(*zn));
  if (zn == NULL)
    return -ENOMEM;
  if (file != NULL && (zn->file = strdup(file)) == NULL) {
    free(zn);
    return -ENOMEM;
  }
  char ns[DNS_KEY_MAX + 8], mbox[DNS_KEY_MAX + 16];
  if (dns_name_from_text(text, zn->apex, &zn->apex_len) < 0 ||
      dns_name_key(zn->apex, zn->apex_len, zn->key, sizeof(zn->key)) < 0) {
    snprintf(why, why_size, "zone '%s' is not a valid name", text);
    free(zn->file);
    free(zn);
    return -EINVAL;
  }
  for (dns_zone *o = z->zones; o; o = o->next)
    if (strcmp(o->key, zn->key) == 0) {
      if (file != NULL) {
        snprintf(why, why_size, "zone '%s' is given twice", text);
        free(zn->file);
        free(zn);
        return -EINVAL;
      }
      free(zn);
      return 0;
    }
  snprintf(ns, sizeof(ns), "%s", s->ns[0] ? s->ns : "ns1.");
  if (!s->ns[0])
    snprintf(ns, sizeof(ns), "ns1.%s", zn->key);
  if (s->hostmaster[0])
    snprintf(mbox, sizeof(mbox), "%s", s->hostmaster);
  else
    snprintf(mbox, sizeof(mbox), "hostmaster.%s", zn->key);
  if (dns_name_from_text(ns, zn->ns, &zn->ns_len) < 0 ||
      dns_name_from_text(mbox, zn->mbox, &zn->mbox_len) < 0) {
    snprintf(why, why_size,
             "zone '%s': its name server or hostmaster name "
             "is too long",
             text);
    free(zn->file);
    free(zn);
    return -EINVAL;
  }
  zn->next = z->zones;
  z->zones = zn;
  dns_name *apex = add(z, zn->key);
  if (apex == NULL)
    return -ENOMEM;
  apex->zone = zn;
  return zn->file ? load_zone_file(z, zn, why, why_size) : 0;
}

/* ---- zone files (Knot's zone scanner) ----------------------------------- */

typedef struct zload {
  dns_zones *z;
  dns_zone *zn;
  char *why;
  size_t why_size;
} zload;

static int zfail(zload *l, unsigned long long line, const char *fmt,
                 const char *arg) {
  char msg[300];
  snprintf(msg, sizeof(msg), fmt, arg);
  snprintf(l->why, l->why_size, "%s:%llu: %s", l->zn->file, line, msg);
  return -EINVAL;
}

/* Whether the wire name (w, len) is (apex) or under it. */
static bool in_zone(const char *key, const dns_zone *zn) {
  size_t kl = strlen(key), al = strlen(zn->key);
  if (al == 0)
    return true;
  return kl == al ? strcmp(key, zn->key) == 0
                  : kl > al && key[kl - al - 1] == '.' &&
                        strcmp(key + kl - al, zn->key) == 0;
}

static int take_record(zload *l, const zs_scanner_t *sc) {
  unsigned long long line = sc->line_counter;
  char key[DNS_KEY_MAX];
  if (sc->r_class != DNS_CLASS_IN)
    return zfail(l, line, "%s", "only class IN is served");
  if (sc->r_owner_length > DNS_MAX_NAME || sc->r_data_length > 0xFFFF ||
      dns_name_key(sc->r_owner, sc->r_owner_length, key, sizeof(key)) < 0)
    return zfail(l, line, "%s", "the owner name is too long");
  if (!in_zone(key, l->zn))
    return zfail(l, line, "'%s' is outside the zone", key);
  bool apex = strcmp(key, l->zn->key) == 0;
  if (sc->r_type == DNS_TYPE_SOA && (!apex || l->zn->soa != NULL))
    return zfail(l, line, "%s",
                 apex ? "a second SOA record" : "an SOA record below the apex");
  dns_name *n = add(l->z, key);
  dns_rr *rr = calloc(1, sizeof(*rr) + sc->r_data_length);
  if (n == NULL || rr == NULL) {
    free(rr);
    return -ENOMEM;
  }
  if (n->wire == NULL) {
    if ((n->wire = malloc(sc->r_owner_length)) == NULL) {
      free(rr);
      return -ENOMEM;
    }
    memcpy(n->wire, sc->r_owner, sc->r_owner_length);
    n->wire_len = sc->r_owner_length;
    n->line = (unsigned)line;
  }
  /* RFC 1034 3.6.2: a CNAME is the only data of its name. */
  bool cname = sc->r_type == DNS_TYPE_CNAME;
  for (dns_rr *o = n->rrs; o; o = o->next)
    if (cname || o->type == DNS_TYPE_CNAME) {
      free(rr);
      return zfail(l, line, "'%s' has a CNAME and other data", key);
    }
  rr->type = sc->r_type;
  rr->ttl = sc->r_ttl;
  rr->rdlen = (uint16_t)sc->r_data_length;
  memcpy(rr->rdata, sc->r_data, sc->r_data_length);
  dns_rr **tail = &n->rrs;
  while (*tail)
    tail = &(*tail)->next;
  *tail = rr;
  if (rr->type == DNS_TYPE_SOA)
    l->zn->soa = rr;
  if (rr->type == DNS_TYPE_NS && apex)
    l->zn->has_ns = true;
  if (rr->type == DNS_TYPE_NS && !apex)
    n->cut = l->zn->has_cuts = true;
  return 0;
}

/* Read (zn)'s file: bounded, a regular file, no $INCLUDE; the first error
 * is FILE:LINE: reason. */
static int load_zone_file(dns_zones *z, dns_zone *zn, char *why,
                          size_t why_size) {
  zload l = {z, zn, why, why_size};
  FILE *f = fopen(zn->file, "re");
  struct stat st;
  if (f == NULL || fstat(fileno(f), &st) < 0) {
    int e = errno;
    if (f != NULL)
      fclose(f);
    snprintf(why, why_size, "zone '%s': cannot read %s: %s", zn->key, zn->file,
             strerror(e));
    return -EINVAL;
  }
  if (!S_ISREG(st.st_mode) || st.st_size > (off_t)DNS_ZONE_FILE_MAX) {
    fclose(f);
    snprintf(why, why_size, "zone '%s': %s is %s", zn->key, zn->file,
             S_ISREG(st.st_mode) ? "larger than 16 MiB" : "not a regular file");
    return -EINVAL;
  }
  char *text = malloc((size_t)st.st_size + 1);
  size_t len = text ? fread(text, 1, (size_t)st.st_size, f) : 0;
  fclose(f);
  zs_scanner_t *sc = malloc(sizeof(*sc));
  char origin[DNS_KEY_MAX + 2];
  snprintf(origin, sizeof(origin), "%s.", zn->key);
  int r = 0;
  if (text == NULL || sc == NULL || zs_init(sc, origin, DNS_CLASS_IN, 3600)) {
    free(text);
    free(sc);
    return -ENOMEM;
  }
  if (zs_set_input_string(sc, text, len) != 0)
    r = zfail(&l, 0, "%s", zs_strerror(sc->error.code));
  while (r == 0 && zs_parse_record(sc) == 0) {
    if (sc->state == ZS_STATE_DATA)
      r = take_record(&l, sc);
    else if (sc->state == ZS_STATE_ERROR)
      r = zfail(&l, sc->line_counter, "%s", zs_strerror(sc->error.code));
    else if (sc->state == ZS_STATE_INCLUDE)
      r = zfail(&l, sc->line_counter, "%s is not supported", "$INCLUDE");
    else
      break; /* ZS_STATE_EOF, ZS_STATE_STOP */
  }
  if (r == 0 && sc->state == ZS_STATE_ERROR)
    r = zfail(&l, sc->line_counter, "%s", zs_strerror(sc->error.code));
  zs_deinit(sc);
  free(sc);
  free(text);
  return r;
}

dns_name *dns_zones_cut(const dns_zones *z, const dns_zone *zone,
                        const char *key) {
  if (zone == NULL || !zone->has_cuts)
    return NULL;
  /* From the apex down: the highest cut wins (what is under it is not
   * ours). */
  dns_name *cut = NULL;
  for (const char *p = key; p != NULL && strcmp(p, zone->key) != 0;
       p = parent(p)) {
    dns_name *n = find(z, p);
    if (n != NULL && n->cut)
      cut = n;
  }
  return cut;
}

typedef struct build {
  dns_zones *z;
  const dns_settings *s;
  jitsu_vm *skip;
  char *why;
  size_t why_size;
  int err;
} build;

/* The parent of (key): "b.c" for "a.b.c", "" for "c", NULL for "". */
static const char *parent(const char *key) {
  if (key[0] == '\0')
    return NULL;
  const char *dot = strchr(key, '.');
  return dot ? dot + 1 : "";
}

static int add_vm_names(jitsu_vm *vm, void *arg) {
  build *b = arg;
  if (vm == b->skip || jitsu_vm_param(vm, "dns", 0) == NULL)
    return 0;
  const dns_settings *s = b->s;
  dns_vm *dv = calloc(1, sizeof(*dv));
  if (dv == NULL)
    return b->err = -ENOMEM;
  dv->vm = vm;
  dv->next = b->z->vms;
  b->z->vms = dv;
  size_t h = vm_bucket(b->z, vm);
  dv->by_vm_next = b->z->by_vm[h];
  b->z->by_vm[h] = dv;
  const char *v;
  uint64_t ms;
  dv->ttl = s->ttl;
  if ((v = jitsu_vm_param(vm, "dns-ttl", 0)) &&
      jitsu_parse_duration(v, &ms) == 0)
    dv->ttl = (uint32_t)(ms / 1000);
  dv->hold_ms = s->hold_ms;
  if ((v = jitsu_vm_param(vm, "dns-hold", 0)) &&
      jitsu_parse_duration(v, &ms) == 0)
    dv->hold_ms = ms;
  dv->hold_servfail = s->hold_servfail;
  if ((v = jitsu_vm_param(vm, "dns-hold-expired", 0)))
    dv->hold_servfail = strcmp(v, "servfail") == 0;
  dv->delay_ms = s->delay_ms;
  if ((v = jitsu_vm_param(vm, "dns-delay", 0)) &&
      jitsu_parse_duration(v, &ms) == 0)
    dv->delay_ms = ms;
  dv->idle_ms = s->idle_ms >= 0 ? (uint64_t)s->idle_ms : 2000ull * dv->ttl;
  if ((v = jitsu_vm_param(vm, "dns-idle", 0)) &&
      jitsu_parse_duration(v, &ms) == 0)
    dv->idle_ms = ms;
  dv->idle_action = s->idle_action;
  if ((v = jitsu_vm_param(vm, "dns-idle-action", 0))) {
    dv->idle_action = strcmp(v, "suspend") == 0    ? JITSU_IDLE_SUSPEND
                      : strcmp(v, "shutdown") == 0 ? JITSU_IDLE_SHUTDOWN
                      : strcmp(v, "none") == 0     ? JITSU_IDLE_NONE
                                                   : JITSU_IDLE_DESTROY;
  }
  for (size_t i = 0; (v = jitsu_vm_param(vm, "address", i)); i++) {
    uint8_t ip[16];
    int family;
    if (parse_ip(v, ip, &family) < 0) {
      snprintf(b->why, b->why_size, "vm '%s': address '%s' has no IP address",
               jitsu_vm_name(vm), v);
      jitsu_vm_blame(vm, b->why, b->why_size);
      return b->err = -EINVAL;
    }
    if (family == AF_INET && dv->n_a < DNS_MAX_ADDRS)
      memcpy(dv->a[dv->n_a++], ip, 4);
    else if (family == AF_INET6 && dv->n_aaaa < DNS_MAX_ADDRS)
      memcpy(dv->aaaa[dv->n_aaaa++], ip, 16);
  }
  for (size_t i = 0; (v = jitsu_vm_param(vm, "dns", i)); i++) {
    uint8_t wire[DNS_MAX_NAME];
    size_t len;
    char key[DNS_KEY_MAX];
    if (dns_name_from_text(v, wire, &len) < 0 ||
        dns_name_key(wire, len, key, sizeof(key)) < 0 || key[0] == '\0') {
      snprintf(b->why, b->why_size, "vm '%s': dns '%s' is not a host name",
               jitsu_vm_name(vm), v);
      jitsu_vm_blame(vm, b->why, b->why_size);
      return b->err = -EINVAL;
    }
    dns_name *n = find(b->z, key);
    const char *clash = NULL;
    unsigned line = n ? n->line : 0;
    for (dns_rr *rr = n ? n->rrs : NULL; rr && !clash; rr = rr->next)
      clash = rr->type == DNS_TYPE_CNAME ? "a CNAME"
              : rr->type == DNS_TYPE_A || rr->type == DNS_TYPE_AAAA
                  ? "an address record"
                  : NULL;
    dns_zone *zn = zone_of(b->z, key);
    dns_name *cut = dns_zones_cut(b->z, zn, key);
    if (clash == NULL && cut != NULL)
      clash = "delegated", line = cut->line;
    if (clash != NULL) {
      snprintf(b->why, b->why_size, "vm '%s': dns '%s' is %s in %s:%u",
               jitsu_vm_name(vm), v, clash, zn->file, line);
      jitsu_vm_blame(vm, b->why, b->why_size);
      return b->err = -EINVAL;
    }
    if (n != NULL && n->dv != NULL && n->dv != dv) {
      snprintf(b->why, b->why_size, "vm '%s': dns '%s' is already vm '%s''s",
               jitsu_vm_name(vm), v, jitsu_vm_name(n->dv->vm));
      jitsu_vm_blame(vm, b->why, b->why_size);
      return b->err = -EINVAL;
    }
    /* Without a [dns] zone over it, the name's parent is its zone. */
    if (zone_of(b->z, key) == NULL) {
      const char *p = parent(key);
      int r = add_zone(b->z, p[0] ? p : ".", s, b->why, b->why_size);
      if (r < 0)
        return b->err = r;
    }
    if ((n = add(b->z, key)) == NULL)
      return b->err = -ENOMEM;
    n->dv = dv;
  }
  return 0;
}

int dns_zones_build(dns_zones *z, jitsu_ctx *ctx, const dns_settings *s,
                    jitsu_vm *skip, char *why, size_t why_size) {
  size_t defined;
  jitsu_ctx_counts(ctx, &defined, NULL, NULL);
  if (zones_init(z, defined) < 0)
    return -ENOMEM;
  const char *v;
  for (size_t i = 0; (v = jitsu_config_get(ctx, "dns", "zone", i)); i++) {
    int r = add_zone(z, v, s, why, why_size);
    if (r < 0)
      return r;
  }
  build b = {z, s, skip, why, why_size, 0};
  jitsu_vm_foreach(ctx, add_vm_names, &b);
  if (b.err < 0)
    return b.err;
  /* Names between a zone apex and a vm's name or a record's owner exist,
   * with no data. Adding them may grow the table: walk a list of the names
   * with data, not the table. */
  size_t n_data = 0;
  dns_name **data = malloc((z->n_names + 1) * sizeof(*data));
  if (data == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < z->n_buckets; i++)
    for (dns_name *n = z->buckets[i]; n; n = n->next)
      if (n->dv != NULL || n->rrs != NULL)
        data[n_data++] = n;
  for (size_t i = 0; i < n_data; i++) {
    dns_name *n = data[i];
    dns_zone *zn = zone_of(z, n->key);
    for (const char *p = parent(n->key); p && zn; p = parent(p)) {
      if (strcmp(p, zn->key) == 0)
        break;
      if (find(z, p) == NULL && add(z, p) == NULL) {
        free(data);
        return -ENOMEM;
      }
    }
  }
  free(data);
  for (size_t i = 0; i < z->n_buckets; i++)
    for (dns_name *n = z->buckets[i]; n; n = n->next)
      n->zone = zone_of(z, n->key);
  return 0;
}

void dns_zones_free(dns_zones *z) {
  for (size_t i = 0; i < z->n_buckets; i++)
    while (z->buckets[i]) {
      dns_name *n = z->buckets[i];
      z->buckets[i] = n->next;
      while (n->rrs) {
        dns_rr *rr = n->rrs;
        n->rrs = rr->next;
        free(rr);
      }
      free(n->wire);
      free(n);
    }
  free(z->buckets);
  free(z->by_vm);
  while (z->zones) {
    dns_zone *zn = z->zones;
    z->zones = zn->next;
    free(zn->file);
    free(zn);
  }
  while (z->vms) {
    dns_vm *dv = z->vms;
    z->vms = dv->next;
    free(dv);
  }
  memset(z, 0, sizeof(*z));
}

int dns_zone_check(const char *value, char *why, size_t why_size) {
  dns_zones z;
  dns_settings s;
  memset(&s, 0, sizeof(s));
  int r = zones_init(&z, 0);
  if (r == 0)
    r = add_zone(&z, value, &s, why, why_size);
  dns_zones_free(&z);
  return r;
}

int dns_zones_lookup(const dns_zones *z, const char *key, dns_name **name,
                     dns_zone **zone) {
  *name = find(z, key);
  if (*name != NULL) {
    *zone = (*name)->zone;
    return 1;
  }
  *zone = zone_of(z, key);
  return *zone ? 0 : -1;
}

dns_vm *dns_zones_vm(const dns_zones *z, const jitsu_vm *vm) {
  if (z->n_vm_buckets == 0)
    return NULL;
  for (dns_vm *dv = z->by_vm[vm_bucket(z, vm)]; dv; dv = dv->by_vm_next)
    if (dv->vm == vm)
      return dv;
  return NULL;
}
