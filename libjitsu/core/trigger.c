/* Triggers: (kind, key) -> vm, resolved in O(1). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct trigger {
  jitsu__hnode node; /* key: "kind\nkey" */
  jitsu_vm *vm;
  char text[];
} trigger;

/* Compose "kind\nkey" into (buf) (or a malloc'd buffer if it is too
 * small); returns NULL for an invalid kind or key. */
static char *compose(const char *kind, const char *key, char *buf,
                     size_t size) {
  if (kind == NULL || key == NULL || kind[0] == '\0' || key[0] == '\0' ||
      strchr(kind, '\n') != NULL)
    return NULL;
  size_t kl = strlen(kind), yl = strlen(key);
  char *p = kl + yl + 2 <= size ? buf : malloc(kl + yl + 2);
  if (p == NULL)
    return NULL;
  memcpy(p, kind, kl);
  p[kl] = '\n';
  memcpy(p + kl + 1, key, yl + 1);
  return p;
}

static trigger *find(jitsu_ctx *ctx, const char *kind, const char *key) {
  char buf[256];
  char *k = compose(kind, key, buf, sizeof(buf));
  if (k == NULL)
    return NULL;
  jitsu__hnode *n = jitsu__table_find(&ctx->triggers, k);
  if (k != buf)
    free(k);
  return n ? JITSU_CONTAINER_OF(n, trigger, node) : NULL;
}

int jitsu_trigger_add(jitsu_ctx *ctx, const char *kind, const char *key,
                      jitsu_vm *vm) {
  if (vm == NULL || kind == NULL || key == NULL || kind[0] == '\0' ||
      key[0] == '\0' || strchr(kind, '\n') != NULL)
    return jitsu__fail(ctx, -EINVAL, "a trigger needs a kind and a key");
  trigger *existing = find(ctx, kind, key);
  if (existing != NULL)
    return jitsu__fail(ctx, -EEXIST, "%s trigger '%s' already summons vm '%s'",
                       kind, key, existing->vm->name);
  size_t len = strlen(kind) + strlen(key) + 2;
  trigger *t = malloc(sizeof(*t) + len);
  if (t == NULL)
    return jitsu__fail(ctx, -ENOMEM, "out of memory");
  compose(kind, key, t->text, len);
  t->node.key = t->text;
  t->vm = vm;
  if (jitsu__table_insert(&ctx->triggers, &t->node) < 0) {
    free(t);
    return jitsu__fail(ctx, -ENOMEM, "out of memory");
  }
  return 0;
}

int jitsu_trigger_remove(jitsu_ctx *ctx, const char *kind, const char *key) {
  trigger *t = find(ctx, kind, key);
  if (t == NULL)
    return jitsu__fail(ctx, -ENOENT, "no %s trigger '%s'", kind, key);
  jitsu__table_remove(&ctx->triggers, &t->node);
  free(t);
  return 0;
}

jitsu_vm *jitsu_trigger_lookup(jitsu_ctx *ctx, const char *kind,
                               const char *key) {
  trigger *t = find(ctx, kind, key);
  return t ? t->vm : NULL;
}

int jitsu_trigger_fire(jitsu_ctx *ctx, const char *kind, const char *key,
                       jitsu_vm_cb cb, void *arg, jitsu_vm **vm_out) {
  jitsu_vm *vm = jitsu_trigger_lookup(ctx, kind, key);
  if (vm_out != NULL)
    *vm_out = vm;
  if (vm == NULL)
    return jitsu__fail(ctx, -ENOENT, "no %s trigger for '%s'", kind ? kind : "",
                       key ? key : "");
  jitsu_vm_touch(vm);
  return jitsu_vm_summon(vm, cb, arg);
}

void jitsu__triggers_drop_vm(jitsu_ctx *ctx, jitsu_vm *vm) {
  jitsu__table *t = &ctx->triggers;
  if (t->buckets == NULL)
    return;
  for (size_t i = 0; i <= t->mask; i++) {
    jitsu__hnode *n = t->buckets[i];
    while (n != NULL) {
      jitsu__hnode *next = n->next;
      trigger *tr = JITSU_CONTAINER_OF(n, trigger, node);
      if (tr->vm == vm) {
        jitsu__table_remove(t, n);
        free(tr);
      }
      n = next;
    }
  }
}
