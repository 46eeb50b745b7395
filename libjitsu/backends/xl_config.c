/*
 * The xl backend's domain definitions: from the vm's keys, or from an
 * existing xl domain config file read with libxlutil (the subset of xl's
 * keys that a jitsu guest needs; see jitsu.conf(5)). Both become one
 * libxl_domain_config at every start.
 */
#include "xl.h"

#include <libxlutil.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* A domain description, from keys or from an xl file. */
typedef struct xspec {
  libxl_domain_type type;
  char *kernel, *ramdisk, *cmdline;
  long memory_mb, maxmem_mb, vcpus;
  char *vifs[XL_NET_MAX], *disks[XL_DISK_MAX];
  int n_vifs, n_disks;
} xspec;

static void spec_free(xspec *s) {
  free(s->kernel);
  free(s->ramdisk);
  free(s->cmdline);
  for (int i = 0; i < s->n_vifs; i++)
    free(s->vifs[i]);
  for (int i = 0; i < s->n_disks; i++)
    free(s->disks[i]);
  memset(s, 0, sizeof(*s));
}

static int parse_type(const char *v, libxl_domain_type *t) {
  if (strcmp(v, "pv") == 0)
    *t = LIBXL_DOMAIN_TYPE_PV;
  else if (strcmp(v, "pvh") == 0)
    *t = LIBXL_DOMAIN_TYPE_PVH;
  else
    return -EINVAL;
  return 0;
}

/* An xl vif spec: "bridge=BR,mac=MAC,script=PATH,ip=ADDR" (any subset).
 * With (nic) NULL it is only checked. */
static int parse_vif(const char *spec, libxl_device_nic *nic, char *why,
                     size_t size) {
  char *copy = strdup(spec), *save = NULL;
  if (copy == NULL)
    return -ENOMEM;
  int r = 0;
  for (char *tok = strtok_r(copy, ",", &save); tok && r == 0;
       tok = strtok_r(NULL, ",", &save)) {
    while (*tok == ' ')
      tok++;
    char *eq = strchr(tok, '=');
    if (eq == NULL || eq[1] == '\0') {
      snprintf(why, size, "'%s': '%s' is not KEY=VALUE", spec, tok);
      r = -EINVAL;
      break;
    }
    *eq = '\0';
    const char *v = eq + 1;
    libxl_mac mac;
    char **field = NULL;
    if (strcmp(tok, "mac") == 0) {
      if (jitsu__parse_mac(v, mac) < 0) {
        snprintf(why, size, "'%s': '%s' is not a unicast MAC", spec, v);
        r = -EINVAL;
      } else if (nic != NULL) {
        memcpy(nic->mac, mac, sizeof(mac));
      }
      continue;
    }
    if (strcmp(tok, "bridge") == 0)
      field = nic ? &nic->bridge : NULL;
    else if (strcmp(tok, "script") == 0)
      field = nic ? &nic->script : NULL;
    else if (strcmp(tok, "ip") == 0)
      field = nic ? &nic->ip : NULL;
    else {
      snprintf(why, size, "'%s': '%s' is not one of bridge, mac, script, ip",
               spec, tok);
      r = -EINVAL;
      break;
    }
    if (field != NULL) {
      free(*field);
      if ((*field = strdup(v)) == NULL)
        r = -ENOMEM;
    }
  }
  free(copy);
  return r;
}

/* An xl disk spec through libxlutil's own parser. */
static int parse_disk(const char *spec, libxl_device_disk *disk, char *why,
                      size_t size) {
  char *report = NULL;
  size_t report_len = 0;
  FILE *f = open_memstream(&report, &report_len);
  XLU_Config *xcfg = f ? xlu_cfg_init(f, "disk") : NULL;
  int r = -ENOMEM;
  if (xcfg != NULL) {
    libxl_device_disk scratch;
    libxl_device_disk_init(&scratch);
    r = xlu_disk_parse(xcfg, 1, &spec, disk ? disk : &scratch);
    libxl_device_disk_dispose(&scratch);
    r = r ? -EINVAL : 0;
    xlu_cfg_destroy(xcfg);
  }
  if (f != NULL)
    fclose(f);
  if (r < 0) {
    char *nl = report ? strchr(report, '\n') : NULL;
    if (nl)
      *nl = '\0';
    snprintf(why, size, "'%s': %s", spec,
             report && report[0] ? report : "not an xl disk spec");
  }
  free(report);
  return r;
}

static int spec_add(char **list, int *n, int max, const char *v) {
  if (*n >= max)
    return -E2BIG;
  if ((list[*n] = strdup(v)) == NULL)
    return -ENOMEM;
  (*n)++;
  return 0;
}

#define XL_FILE_MAX (1 << 20)

/* Read an xl config file into (s). */
static int spec_from_file(const char *path, xspec *s, char *why, size_t size) {
  char *report = NULL;
  size_t report_len = 0;
  FILE *f = open_memstream(&report, &report_len);
  XLU_Config *xcfg = f ? xlu_cfg_init(f, path) : NULL;
  int r = 0;
  if (xcfg == NULL) {
    r = -ENOMEM;
    snprintf(why, size, "out of memory");
    goto out;
  }
  /* Read it ourselves: libxlutil's scanner exits the process when it
   * cannot read its input (a directory, a FIFO), and a file is bounded. */
  char *text = NULL;
  size_t len = 0;
  r = jitsu__read_bounded(path, XL_FILE_MAX, &text, &len, why, size);
  if (r < 0)
    goto out;
  int e = xlu_cfg_readdata(xcfg, text, (int)len);
  free(text);
  if (e != 0) {
    fflush(f);
    char *nl = report ? strchr(report, '\n') : NULL;
    if (nl)
      *nl = '\0';
    if (report != NULL && report[0]) /* it names the file and line */
      snprintf(why, size, "%s", report);
    else
      snprintf(why, size, "%s: %s", path, strerror(e));
    r = -EINVAL;
    goto out;
  }
  const char *v;
  s->type = LIBXL_DOMAIN_TYPE_PV;
  if (!xlu_cfg_get_string(xcfg, "type", &v, 1) && parse_type(v, &s->type) < 0) {
    snprintf(why, size, "%s: type '%s' is not pv or pvh", path, v);
    r = -EINVAL;
    goto out;
  }
  if (!xlu_cfg_get_string(xcfg, "kernel", &v, 1))
    s->kernel = strdup(v);
  if (!xlu_cfg_get_string(xcfg, "ramdisk", &v, 1))
    s->ramdisk = strdup(v);
  const char *root = NULL, *extra = "";
  xlu_cfg_get_string(xcfg, "root", &root, 1);
  xlu_cfg_get_string(xcfg, "extra", &extra, 1);
  if (!xlu_cfg_get_string(xcfg, "cmdline", &v, 1))
    s->cmdline = strdup(v);
  else if (root != NULL) /* as xl does */
    r = asprintf(&s->cmdline, "root=%s %s", root, extra) < 0 ? -ENOMEM : 0;
  else
    s->cmdline = strdup(extra);
  s->memory_mb = 128;
  s->vcpus = 1;
  if (xlu_cfg_get_bounded_long(xcfg, "memory", 1, 1L << 24, &s->memory_mb, 1) ==
          EINVAL ||
      xlu_cfg_get_bounded_long(xcfg, "maxmem", 1, 1L << 24, &s->maxmem_mb, 1) ==
          EINVAL ||
      xlu_cfg_get_bounded_long(xcfg, "vcpus", 1, 255, &s->vcpus, 1) == EINVAL) {
    snprintf(why, size, "%s: memory or vcpus is out of range", path);
    r = -EINVAL;
    goto out;
  }
  XLU_ConfigList *list;
  int n;
  for (int pass = 0; pass < 2 && r == 0; pass++) {
    const char *key = pass ? "disk" : "vif";
    if (xlu_cfg_get_list(xcfg, key, &list, &n, 1) != 0)
      continue;
    for (int i = 0; i < n && r == 0; i++) {
      const char *item = xlu_cfg_get_listitem(list, i);
      if (item == NULL)
        continue;
      r = pass ? spec_add(s->disks, &s->n_disks, XL_DISK_MAX, item)
               : spec_add(s->vifs, &s->n_vifs, XL_NET_MAX, item);
      if (r == -E2BIG)
        snprintf(why, size, "%s: more than %d %s entries", path,
                 pass ? XL_DISK_MAX : XL_NET_MAX, key);
    }
  }
  if (r == 0 && s->kernel == NULL) {
    snprintf(why, size, "%s: no kernel (bootloaders are not supported)", path);
    r = -EINVAL;
  }
out:
  if (xcfg != NULL)
    xlu_cfg_destroy(xcfg);
  if (f != NULL)
    fclose(f);
  free(report);
  if (r < 0 && why[0] == '\0')
    snprintf(why, size, "%s: %s", path, strerror(-r));
  return r;
}

static int spec_from_keys(xvm *x, xspec *s) {
  s->type = LIBXL_DOMAIN_TYPE_PV;
  if (x->type != NULL)
    parse_type(x->type, &s->type);
  s->kernel = strdup(x->kernel);
  s->ramdisk = x->ramdisk ? strdup(x->ramdisk) : NULL;
  s->cmdline = strdup(x->cmdline ? x->cmdline : "");
  s->memory_mb = (long)(x->memory >> 20);
  s->maxmem_mb = (long)(x->maxmem >> 20);
  s->vcpus = x->vcpus;
  int r = 0;
  for (size_t i = 0; i < x->n_nics && r == 0; i++)
    r = spec_add(s->vifs, &s->n_vifs, XL_NET_MAX, x->nics[i]);
  for (size_t i = 0; i < x->n_disks && r == 0; i++)
    r = spec_add(s->disks, &s->n_disks, XL_DISK_MAX, x->disks[i]);
  if (s->kernel == NULL || s->cmdline == NULL)
    r = -ENOMEM;
  return r;
}

static int spec_check(const xspec *s, char *why, size_t size) {
  for (int i = 0; i < s->n_vifs; i++)
    if (parse_vif(s->vifs[i], NULL, why, size) < 0)
      return -EINVAL;
  for (int i = 0; i < s->n_disks; i++)
    if (parse_disk(s->disks[i], NULL, why, size) < 0)
      return -EINVAL;
  return 0;
}

/* A vif of a pooled vm without a mac= gets one made from the vm's name
 * and the vif's index, in Xen's range (00:16:3e): every spare and every
 * cold start of the vm shows the same MAC, so that its neighbours' ARP
 * entries stay right when a spare is taken. */
static void pooled_mac(xvm *x, libxl_device_nic *nic) {
  static const libxl_mac none;
  if (x->vm == NULL || memcmp(nic->mac, none, sizeof(none)) != 0)
    return;
  uint32_t h = 2166136261u; /* FNV-1a */
  for (const char *c = jitsu_vm_name(x->vm); *c != '\0'; c++)
    h = (h ^ (uint8_t)*c) * 16777619u;
  h = (h ^ (uint8_t)nic->devid) * 16777619u;
  const uint8_t mac[6] = {
      0x00,      0x16, 0x3e, (uint8_t)(h >> 16) & 0x7f, (uint8_t)(h >> 8),
      (uint8_t)h};
  memcpy(nic->mac, mac, sizeof(mac));
}

int xl_build_config(xvm *x, libxl_domain_config *dc, char *why, size_t size) {
  xspec s = {0};
  bool inited = false;
  why[0] = '\0';
  int r =
      x->file ? spec_from_file(x->file, &s, why, size) : spec_from_keys(x, &s);
  if (r < 0)
    goto out;
  struct stat st;
  const char *missing = stat(s.kernel, &st) != 0                 ? s.kernel
                        : s.ramdisk && stat(s.ramdisk, &st) != 0 ? s.ramdisk
                                                                 : NULL;
  if (missing != NULL) {
    snprintf(why, size, "cannot read %s: %s", missing, strerror(errno));
    r = -ENOENT;
    goto out;
  }
  libxl_domain_config_init(dc);
  inited = true;
  dc->c_info.type = s.type;
  char name[300];
  xl_domain_name(x, name, sizeof(name));
  dc->c_info.name = strdup(name);
  libxl_domain_build_info *b = &dc->b_info;
  libxl_domain_build_info_init_type(b, s.type);
  b->target_memkb = (uint64_t)s.memory_mb * 1024;
  b->max_memkb =
      (uint64_t)(s.maxmem_mb > s.memory_mb ? s.maxmem_mb : s.memory_mb) * 1024;
  b->max_vcpus = (int)s.vcpus;
  /* libxl_cpu_bitmap_alloc() would want a libxl context only for its
   * allocator: the bitmap is bytes from calloc(), freed by
   * libxl_bitmap_dispose(). */
  b->avail_vcpus.size = (uint32_t)((s.vcpus + 7) / 8);
  b->avail_vcpus.map = calloc(b->avail_vcpus.size, 1);
  if (b->avail_vcpus.map == NULL) {
    snprintf(why, size, "out of memory");
    r = -ENOMEM;
    goto out;
  }
  libxl_bitmap_set_none(&b->avail_vcpus);
  for (long i = 0; i < s.vcpus; i++)
    libxl_bitmap_set(&b->avail_vcpus, (int)i);
  b->kernel = s.kernel;
  b->ramdisk = s.ramdisk;
  b->cmdline = s.cmdline;
  s.kernel = s.ramdisk = s.cmdline = NULL; /* owned by dc now */
  /* The backend acts on shutdowns itself (as xl does). */
  dc->on_poweroff = dc->on_reboot = dc->on_watchdog = dc->on_crash =
      LIBXL_ACTION_ON_SHUTDOWN_DESTROY;
  if (s.n_vifs > 0) {
    dc->nics = calloc((size_t)s.n_vifs, sizeof(*dc->nics));
    if (dc->nics == NULL) {
      r = -ENOMEM;
      goto out;
    }
    for (int i = 0; i < s.n_vifs && r == 0; i++) {
      libxl_device_nic_init(&dc->nics[i]);
      dc->nics[i].devid = i;
      dc->num_nics = i + 1;
      r = parse_vif(s.vifs[i], &dc->nics[i], why, size);
      if (r == 0 && (x->of != NULL ? x->of->pool : x->pool) > 0)
        pooled_mac(x, &dc->nics[i]);
    }
  }
  if (s.n_disks > 0 && r == 0) {
    dc->disks = calloc((size_t)s.n_disks, sizeof(*dc->disks));
    if (dc->disks == NULL) {
      r = -ENOMEM;
      goto out;
    }
    for (int i = 0; i < s.n_disks && r == 0; i++) {
      libxl_device_disk_init(&dc->disks[i]);
      dc->num_disks = i + 1;
      r = parse_disk(s.disks[i], &dc->disks[i], why, size);
    }
  }
out:
  spec_free(&s);
  if (r < 0 && inited) /* a vif or disk of the file that does not parse */
    libxl_domain_config_dispose(dc);
  if (r < 0 && why[0] == '\0')
    snprintf(why, size, "%s", strerror(-r));
  return r;
}

/* ---- configure ---------------------------------------------------------- */

int xl_configure_settings(xvm *x, jitsu_vm *vm, jitsu_error *err) {
  const char *v;
  char why[512] = "";
  x->file = jitsu_vm_param(vm, "config", 0);
  x->type = jitsu_vm_param(vm, "type", 0);
  x->kernel = jitsu_vm_param(vm, "kernel", 0);
  x->ramdisk = jitsu_vm_param(vm, "ramdisk", 0);
  x->cmdline = jitsu_vm_param(vm, "cmdline", 0);
  x->ready_key = jitsu_vm_param(vm, "ready-key", 0);
  x->marker = jitsu_vm_param(vm, "console-marker", 0);
  if (x->marker == NULL)
    x->marker = "JITSU_READY";
  if (x->marker[0] == '\0' || strlen(x->marker) > 128)
    return jitsu_error_set(err, -EINVAL, "console-marker",
                           "'%s' is empty or over 128 bytes", x->marker);
  if (x->ready_key != NULL &&
      (x->ready_key[0] == '\0' || x->ready_key[0] == '/' ||
       strlen(x->ready_key) > 128 || strstr(x->ready_key, "..") != NULL ||
       strspn(x->ready_key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU"
                            "VWXYZ0123456789-_/@") != strlen(x->ready_key)))
    return jitsu_error_set(
        err, -EINVAL, "ready-key",
        "'%s' is not a XenStore path relative to the domain's home "
        "(e.g. data/ready)",
        x->ready_key);
  bool disk = false;
  if ((v = jitsu_vm_param(vm, "suspend", 0)) != NULL) {
    if (strcmp(v, "disk") == 0)
      disk = true;
    else if (strcmp(v, "memory") != 0)
      return jitsu_error_set(err, -EINVAL, "suspend",
                             "'%s' is not memory or disk", v);
  }
  x->suspend_disk = disk;
  if (x->file != NULL) {
    static const char *const only_keys[] = {"type",    "kernel", "ramdisk",
                                            "cmdline", "memory", "maxmem",
                                            "vcpus",   "vif",    "disk"};
    for (size_t i = 0; i < JITSU__ARRAY_SIZE(only_keys); i++)
      if (jitsu_vm_param(vm, only_keys[i], 0) != NULL)
        return jitsu_error_set(err, -EINVAL, only_keys[i],
                               "'%s' and config (an xl file) exclude each "
                               "other: put it in the file",
                               only_keys[i]);
    xspec s = {0};
    int r = spec_from_file(x->file, &s, why, sizeof(why));
    if (r == 0)
      r = spec_check(&s, why, sizeof(why));
    spec_free(&s);
    if (r < 0)
      return jitsu_error_set(err, -EINVAL, "config", "%s", why);
    return 0;
  }
  if (x->kernel == NULL)
    return jitsu_error_set(err, -EINVAL, "kernel",
                           "an xl vm needs a kernel (or config = an xl file)");
  libxl_domain_type t;
  if (x->type != NULL && parse_type(x->type, &t) < 0)
    return jitsu_error_set(err, -EINVAL, "type", "'%s' is not pv or pvh",
                           x->type);
  x->memory = 128ull << 20;
  if ((v = jitsu_vm_param(vm, "memory", 0)) != NULL &&
      (jitsu__parse_mib(v, &x->memory) < 0 || x->memory > (1ull << 44)))
    return jitsu_error_set(err, -EINVAL, "memory",
                           "'%s' is not a whole number of MiB (>= 1M)", v);
  x->maxmem = 0;
  if ((v = jitsu_vm_param(vm, "maxmem", 0)) != NULL &&
      (jitsu__parse_mib(v, &x->maxmem) < 0 || x->maxmem < x->memory ||
       x->maxmem > (1ull << 44)))
    return jitsu_error_set(err, -EINVAL, "maxmem",
                           "'%s' is not whole MiB, at least memory", v);
  x->vcpus = 1;
  if ((v = jitsu_vm_param(vm, "vcpus", 0)) != NULL &&
      jitsu__parse_vcpus(v, &x->vcpus) < 0)
    return jitsu_error_set(err, -EINVAL, "vcpus", "'%s' is not 1 to 255", v);
  x->n_nics = x->n_disks = 0;
  for (size_t i = 0; (v = jitsu_vm_param(vm, "vif", i)) != NULL; i++) {
    if (i >= XL_NET_MAX)
      return jitsu_error_set(err, -EINVAL, "vif", "'%s': at most 8 vifs", v);
    if (parse_vif(v, NULL, why, sizeof(why)) < 0)
      return jitsu_error_set(err, -EINVAL, "vif", "%s", why);
    x->nics[x->n_nics++] = v;
  }
  for (size_t i = 0; (v = jitsu_vm_param(vm, "disk", i)) != NULL; i++) {
    if (i >= XL_DISK_MAX)
      return jitsu_error_set(err, -EINVAL, "disk", "'%s': at most 8 disks", v);
    if (parse_disk(v, NULL, why, sizeof(why)) < 0)
      return jitsu_error_set(err, -EINVAL, "disk", "%s", why);
    x->disks[x->n_disks++] = v;
  }
  return 0;
}

void xl_domain_name(xvm *x, char *out, size_t size) {
  if (x->spare != XSPARE_NO)
    snprintf(out, size, "%s.%s", jitsu_vm_name(x->vm), x->tag);
  else
    snprintf(out, size, "%s", jitsu_vm_name(x->vm));
}

int xl_path(xvm *x, const char *suffix, char *out, size_t size) {
  char dir[512];
  int r = jitsu_ctx_state_subdir(jitsu_vm_ctx(x->vm), "xl", dir, sizeof(dir));
  if (r < 0)
    return r;
  if (snprintf(out, size, "%s/%s.%s", dir, jitsu_vm_name(x->vm), suffix) >=
      (int)size)
    return -ENAMETOOLONG;
  return 0;
}

/* ---- state in XenStore -------------------------------------------------- */

void xl_publish(xvm *x, const char *state) {
  struct xs_handle *xs = x->host ? x->host->xs : NULL;
  if (xs == NULL)
    return;
  char path[256], val[32];
  const char *name = jitsu_vm_name(x->vm);
  snprintf(path, sizeof(path), "/jitsu/%s", name);
  xs_transaction_t t = XBT_NULL;
  /* Owner dom0, readable by every domain. */
  struct xs_permissions perms[1] = {{.id = 0, .perms = XS_PERM_READ}};
  if (!xs_write(xs, t, path, "", 0) ||
      !xs_set_permissions(xs, t, path, perms, 1)) {
    jitsu_vm_log(x->vm, JITSU_LOG_WARNING, "cannot publish to XenStore %s: %s",
                 path, strerror(errno));
    return;
  }
  snprintf(path, sizeof(path), "/jitsu/%s/state", name);
  xs_write(xs, t, path, state, strlen(state));
  snprintf(path, sizeof(path), "/jitsu/%s/domid", name);
  if (x->live)
    snprintf(val, sizeof(val), "%u", x->domid);
  else
    snprintf(val, sizeof(val), "none");
  xs_write(xs, t, path, val, strlen(val));
  snprintf(path, sizeof(path), "/jitsu/%s/changed", name);
  snprintf(val, sizeof(val), "%lld", (long long)time(NULL));
  xs_write(xs, t, path, val, strlen(val));
  const char *addr = jitsu_vm_param(x->vm, "address", 0);
  if (addr != NULL) {
    snprintf(path, sizeof(path), "/jitsu/%s/address", name);
    xs_write(xs, t, path, addr, strlen(addr));
  }
}

void xl_unpublish(xvm *x) {
  if (x->host == NULL || x->host->xs == NULL)
    return;
  char path[256];
  snprintf(path, sizeof(path), "/jitsu/%s", jitsu_vm_name(x->vm));
  xs_rm(x->host->xs, XBT_NULL, path);
}
