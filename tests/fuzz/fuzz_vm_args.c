/* libFuzzer targets: a vm's keys, as a config file gives them, turned into
 * what a backend hands the hypervisor: QEMU's argument vector (a start
 * and a restore; qemu_args), libxl's domain config (from the keys, or
 * from an xl file with the input's text; xl_args), and libvirt's domain
 * XML and a spare's (from the keys, or from a domain XML file with the
 * input's text; libvirt_args), where the input is also read as a spare's
 * pool metadata as libvirt gives it back. Each input line is
 * "KEY = VALUE"; "@K@" is a kernel file that exists, "@F@" the file with
 * the input's text.
 *
 * The QEMU check is for injection: walking the vector as QEMU parses it,
 * every option must be one the backend writes, each value must be one
 * word in its place, the comma-separated ones (-name, -netdev, -device)
 * must have exactly the parts the backend writes (a forward is one
 * hostfwd=, whatever it holds), and only the qemu-arg words, at the end,
 * may add anything else. Nothing is started. */
#include "fuzz_util.h"
#include "internal.h"
#ifdef FUZZ_QEMU
#include "backends/qemu.h"
#endif
#ifdef FUZZ_XL
#include "backends/xl.h"
#endif
#ifdef FUZZ_LIBVIRT
#include "backends/libvirt.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifdef FUZZ_QEMU
extern const jitsu_backend_ops jitsu_backend_qemu;
#define BACKEND jitsu_backend_qemu
#elif defined(FUZZ_LIBVIRT)
extern const jitsu_backend_ops jitsu_backend_libvirt;
#define BACKEND jitsu_backend_libvirt
#else
extern const jitsu_backend_ops jitsu_backend_xl;
#define BACKEND jitsu_backend_xl
#endif

#define MAX_PARAMS 48

static uv_loop_t loop;
static jitsu_ctx *ctx;
static char dir[64], kernel[128], xlfile[128];

static void cleanup(void) {
  jitsu_ctx_free(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  fuzz_rmtree(dir);
}

static void setup(void) {
  snprintf(dir, sizeof(dir), "/tmp/jitsu-fuzz-args-%d", (int)getpid());
  if (mkdir(dir, 0700) < 0)
    abort();
  /* "@K@" in a value is a kernel file that exists. */
  snprintf(kernel, sizeof(kernel), "%s/vmlinux", dir);
  snprintf(xlfile, sizeof(xlfile), "%s/guest.cfg", dir);
  FILE *f = fopen(kernel, "w");
  if (f == NULL)
    abort();
  fclose(f);
  uv_loop_init(&loop);
  jitsu_ctx_options o = JITSU_CTX_OPTIONS_INIT;
  o.state_dir = dir;
  /* The backend linked into this program, not its module loaded again. */
  if (jitsu_ctx_new(&loop, &o, &ctx) < 0 ||
      jitsu_backend_register(ctx, &BACKEND) < 0)
    abort();
  atexit(cleanup);
}

#ifdef FUZZ_QEMU
/* Options the backend writes that take a value, and those that do not. */
static const char *const with_value[] = {
    "-name",    "-machine", "-accel",  "-cpu",      "-m",       "-smp",
    "-display", "-kernel",  "-initrd", "-append",   "-chardev", "-mon",
    "-serial",  "-netdev",  "-device", "-incoming", NULL};
static const char *const alone[] = {"-nodefaults", "-no-user-config",
                                    "-no-reboot", NULL};

static bool listed(const char *const *l, const char *s) {
  for (; *l; l++)
    if (strcmp(*l, s) == 0)
      return true;
  return false;
}

static size_t commas(const char *s) {
  size_t n = 0;
  for (; *s; s++)
    n += *s == ',';
  return n;
}

static void check_argv(qvm *q, char **v) {
  size_t n = 0, extra = 0, forwards = 0;
  while (v[n] != NULL)
    n++;
  while (q->extra && q->extra[extra])
    extra++;
  for (size_t i = 0;
       q->net == QNET_USER && jitsu_vm_param(q->vm, "forward", i) != NULL; i++)
    forwards++;
  if (n < extra + 1 || strcmp(v[0], q->binary) != 0)
    abort();
  /* The qemu-arg words come last, as given. */
  for (size_t i = 0; i < extra; i++)
    if (strcmp(v[n - extra + i], q->extra[i]) != 0)
      abort();
  for (size_t i = 1; i < n - extra; i++) {
    const char *opt = v[i];
    if (listed(alone, opt))
      continue;
    if (!listed(with_value, opt) || i + 1 >= n - extra)
      abort(); /* a value became an option, or an option lost its value */
    const char *val = v[++i];
    if (strcmp(opt, "-kernel") == 0 && strcmp(val, q->kernel) != 0)
      abort();
    if (strcmp(opt, "-machine") == 0 && strcmp(val, q->machine) != 0)
      abort();
    if (strcmp(opt, "-name") == 0 && commas(val) != 1)
      abort();
    if (strcmp(opt, "-device") == 0 && commas(val) != 2)
      abort();
    if (strcmp(opt, "-netdev") == 0 &&
        commas(val) != (q->net == QNET_TAP ? 2 : 1 + forwards))
      abort();
    if (strcmp(opt, "-append") == 0 && q->cmdline != NULL &&
        strncmp(val, q->cmdline, strlen(q->cmdline)) != 0)
      abort();
  }
}

#endif

/* The input's lines as params; "@K@" is the kernel file, "@F@" the xl
 * file. Returns how many; the strings are in (store). */
static size_t parse(const uint8_t *data, size_t size, jitsu_param *p,
                    char *store) {
  size_t n = 0, o = 0;
  for (size_t i = 0; i < size && n < MAX_PARAMS;) {
    size_t end = i;
    while (end < size && data[end] != '\n')
      end++;
    const uint8_t *eq = memchr(data + i, '=', end - i);
    if (eq != NULL && eq > data + i) {
      const uint8_t *k = data + i, *ke = eq, *val = eq + 1, *ve = data + end;
      while (k < ke && *k == ' ')
        k++;
      while (ke > k && ke[-1] == ' ')
        ke--;
      while (val < ve && *val == ' ')
        val++;
      p[n].key = store + o;
      memcpy(store + o, k, (size_t)(ke - k));
      o += (size_t)(ke - k);
      store[o++] = '\0';
      p[n].value = store + o;
      size_t vl = (size_t)(ve - val);
      if (vl == 3 && memcmp(val, "@K@", 3) == 0)
        o += (size_t)sprintf(store + o, "%s", kernel);
      else if (vl == 3 && memcmp(val, "@F@", 3) == 0)
        o += (size_t)sprintf(store + o, "%s", xlfile);
      else {
        memcpy(store + o, val, vl);
        o += vl;
      }
      store[o++] = '\0';
      /* (a NUL inside cannot come from a config line) */
      if (memchr(k, '\0', (size_t)(ke - k)) == NULL &&
          memchr(val, '\0', vl) == NULL)
        n++;
    }
    i = end + 1;
  }
  return n;
}

#ifndef FUZZ_LIBVIRT
static jitsu_vm *define(const char *backend, jitsu_param *p, size_t n) {
  jitsu_vm_def def = JITSU_VM_DEF_INIT;
  def.name = "g";
  def.backend = backend;
  def.params = p;
  def.n_params = n;
  jitsu_vm *vm = NULL;
  jitsu_error err;
  return jitsu_vm_define(ctx, &def, &vm, &err) == 0 ? vm : NULL;
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (ctx == NULL)
    setup();
  if (size > 4096)
    return 0;
  jitsu_param p[MAX_PARAMS];
  char *store = malloc(size * 2 + 2 * MAX_PARAMS * 128 + 2);
  if (store == NULL)
    return 0;
  size_t n = parse(data, size, p, store);
#ifdef FUZZ_QEMU
  jitsu_vm *vm = define("qemu", p, n);
  if (vm != NULL) {
    qvm *q = jitsu_vm_data(vm);
    for (int incoming = 0; incoming < 2; incoming++) {
      char **v = qemu_argv(q, incoming);
      if (v != NULL)
        check_argv(q, v);
      qemu_argv_free(v);
    }
    free(qemu_describe_args(q));
    jitsu_vm_undefine(vm);
  }
#elif defined(FUZZ_LIBVIRT)
  /* The input as a domain XML file too (key xml = @F@). The backend's own
   * check, as a config load runs it: a definition would also begin an
   * adoption, which asks the hosts. */
  FILE *f = fopen(xlfile, "w");
  if (f != NULL) {
    fwrite(data, 1, size, f);
    fclose(f);
  }
  jitsu_vm probe;
  memset(&probe, 0, sizeof(probe));
  probe.ctx = ctx;
  probe.backend = &BACKEND;
  probe.name = "g";
  probe.params = p;
  probe.n_params = n;
  probe.ready_marker = memmem(data, size, "marker", 6) != NULL;
  jitsu_error err;
  if (BACKEND.configure(&probe, &err) == 0) {
    lvvm *v = jitsu_vm_data(&probe);
    if (v == NULL || v->xml == NULL)
      abort();
    char *spare = lv_spare_xml(v, "g.spare1", "0123456789abcdef");
    if (spare == NULL)
      abort(); /* the vm's XML was libxml2's own output: it reads back */
    char state[16];
    lv_meta_attr(spare, "state", state, sizeof(state));
    free(spare);
    BACKEND.release(&probe);
  }
  /* The input as a spare's metadata. */
  char *meta = strndup((const char *)data, size);
  if (meta != NULL) {
    char out[24];
    lv_meta_attr(meta, "fp", out, sizeof(out));
    if (strlen(out) >= sizeof(out))
      abort();
    free(meta);
  }
#else
  /* The input as an xl file too: its text is read at build time. */
  FILE *f = fopen(xlfile, "w");
  if (f != NULL) {
    fwrite(data, 1, size, f);
    fclose(f);
  }
  jitsu_vm *vm = define("xl", p, n);
  if (vm != NULL) {
    char why[512];
    libxl_domain_config dc;
    if (xl_build_config(jitsu_vm_data(vm), &dc, why, sizeof(why)) == 0) {
      if (dc.c_info.name == NULL || strcmp(dc.c_info.name, "g") != 0 ||
          dc.b_info.max_vcpus < 1)
        abort();
      libxl_domain_config_dispose(&dc);
    }
    jitsu_vm_undefine(vm);
  }
#endif
  free(store);
  for (int i = 0; i < 2; i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  return 0;
}
