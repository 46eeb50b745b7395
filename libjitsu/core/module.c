/* Backends as loadable modules: libjitsu.so links only what its core
 * needs; the qemu, xl and libvirt backends (and what they link: the Xen
 * stack, libvirt, libxml2) are modules in a directory of the library,
 * loaded the first time a vm names one. A module is never unloaded: the
 * libraries behind a backend start threads and register handlers. */
#include "internal.h"
#include "module_names.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef JITSU_BACKEND_DIR
#define JITSU_BACKEND_DIR "/usr/local/lib/jitsu/backends"
#endif

const char *jitsu__module_dir(void) {
  const char *dir = secure_getenv("JITSU_BACKEND_DIR");
  return dir != NULL && dir[0] != '\0' ? dir : JITSU_BACKEND_DIR;
}

static bool module_name_ok(const char *name) {
  if (name[0] == '\0' || strlen(name) > 32)
    return false;
  for (const char *c = name; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' ||
          *c == '-'))
      return false;
  return true;
}

const jitsu__module *jitsu__module_load(const char *name, char *err,
                                        size_t size) {
  char path[1024];
  if (!module_name_ok(name)) {
    snprintf(err, size, "'%s' is not a module name", name);
    return NULL;
  }
  const char *dir = jitsu__module_dir();
  if (snprintf(path, sizeof(path), "%s/%s.so", dir, name) >=
      (int)sizeof(path)) {
    snprintf(err, size, "module directory %s: name too long", dir);
    return NULL;
  }
  struct stat st;
  if (stat(path, &st) < 0) {
    snprintf(err, size, "its module is not installed (%s: %s)", path,
             strerror(errno));
    return NULL;
  }
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    const char *e = dlerror();
    snprintf(err, size, "cannot load %s: %s", path, e ? e : "unknown error");
    return NULL;
  }
  const jitsu__module *m = dlsym(h, JITSU__MODULE_SYMBOL);
  if (m == NULL) {
    snprintf(err, size, "%s is not a libjitsu backend module", path);
    dlclose(h);
    return NULL;
  }
  if (strcmp(m->abi, JITSU__MODULE_ABI) != 0) {
    snprintf(err, size, "%s was built for libjitsu %s, this is %s", path,
             m->abi, JITSU__MODULE_ABI);
    dlclose(h);
    return NULL;
  }
  return m;
}

static const char *const module_names[] = {JITSU__MODULE_NAMES NULL};

const jitsu_backend_ops *jitsu__backend_find(jitsu_ctx *ctx, const char *name,
                                             char *err, size_t size) {
  for (size_t i = 0; i < ctx->n_backends; i++)
    if (strcmp(ctx->backends[i]->name, name) == 0)
      return ctx->backends[i];
  bool known = false;
  for (size_t i = 0; module_names[i] != NULL; i++)
    known |= strcmp(module_names[i], name) == 0;
  if (!known) {
    size_t o =
        (size_t)snprintf(err, size, "unknown backend '%s' (known:", name);
    for (size_t i = 0; i < ctx->n_backends && o < size; i++)
      o += (size_t)snprintf(err + o, size - o, " %s", ctx->backends[i]->name);
    for (size_t i = 0; module_names[i] != NULL && o < size; i++)
      o += (size_t)snprintf(err + o, size - o, " %s", module_names[i]);
    if (o < size)
      snprintf(err + o, size - o, ")");
    return NULL;
  }
  char why[1200];
  const jitsu__module *m = jitsu__module_load(name, why, sizeof(why));
  if (m == NULL || m->backend == NULL || strcmp(m->backend->name, name) != 0) {
    snprintf(err, size, "backend '%s' is not available: %s", name,
             m == NULL ? why : "its module holds another backend");
    return NULL;
  }
  int r = jitsu_backend_register(ctx, m->backend);
  if (r < 0) {
    snprintf(err, size, "backend '%s': %s", name, strerror(-r));
    return NULL;
  }
  return m->backend;
}

int jitsu_backend_register(jitsu_ctx *ctx, const jitsu_backend_ops *ops) {
  if (ops == NULL || ops->version != JITSU_BACKEND_OPS_VERSION ||
      ops->name == NULL || ops->start == NULL || ops->stop == NULL)
    return jitsu__fail(ctx, -EINVAL,
                       "a backend needs its version, a name, start and stop");
  for (size_t i = 0; i < ctx->n_backends; i++)
    if (strcmp(ctx->backends[i]->name, ops->name) == 0)
      return jitsu__fail(ctx, -EEXIST, "backend '%s' is registered already",
                         ops->name);
  const jitsu_backend_ops **b =
      realloc(ctx->backends, (ctx->n_backends + 1) * sizeof(*b));
  if (b == NULL)
    return jitsu__fail(ctx, -ENOMEM, "out of memory");
  ctx->backends = b;
  const char **names =
      realloc(ctx->backend_names, (ctx->n_backends + 2) * sizeof(*names));
  if (names == NULL)
    return jitsu__fail(ctx, -ENOMEM, "out of memory");
  ctx->backend_names = names;
  ctx->backends[ctx->n_backends] = ops;
  names[ctx->n_backends] = ops->name;
  names[ctx->n_backends + 1] = NULL;
  ctx->n_backends++;
  return 0;
}

const char *const *jitsu_backend_names(jitsu_ctx *ctx) {
  return ctx->backend_names;
}
