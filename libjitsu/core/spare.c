/* Spares: guests that backends make ahead of summons (jitsu_spare in
 * <jitsu/backend.h>) count against max-live while they exist and against
 * max-starting while they fill; summons come first. */
#include "internal.h"

/* Link (s) to (vm)'s context, filling or made. */
static int spare_count(jitsu_vm *vm, jitsu_spare *s,
                       void (*reclaim)(jitsu_spare *s), bool filling) {
  if (vm == NULL || s == NULL || reclaim == NULL || s->counted)
    return -EINVAL;
  jitsu_ctx *ctx = vm->ctx;
  if (ctx->n_live + ctx->n_queued_new + ctx->n_spares >= ctx->max_live ||
      (filling &&
       (ctx->n_starting + ctx->n_spares_filling >= ctx->max_starting ||
        ctx->start_queue.next != &ctx->start_queue)))
    return JITSU_ELIMIT;
  s->vm = vm;
  s->reclaim = reclaim;
  s->filling = filling;
  s->counted = true;
  jitsu_list_append(&ctx->spares, &s->link);
  ctx->n_spares++;
  ctx->n_spares_filling += filling;
  return 0;
}

int jitsu_spare_begin(jitsu_vm *vm, jitsu_spare *s,
                      void (*reclaim)(jitsu_spare *s)) {
  return spare_count(vm, s, reclaim, true);
}

int jitsu_spare_adopt(jitsu_vm *vm, jitsu_spare *s,
                      void (*reclaim)(jitsu_spare *s)) {
  return spare_count(vm, s, reclaim, false);
}

void jitsu_spare_filled(jitsu_spare *s) {
  if (s == NULL || !s->counted || !s->filling)
    return;
  s->filling = false;
  s->vm->ctx->n_spares_filling--;
}

void jitsu_spare_end(jitsu_spare *s) {
  if (s == NULL || !s->counted)
    return;
  jitsu_ctx *ctx = s->vm->ctx;
  jitsu_spare_filled(s);
  jitsu_list_remove(&s->link);
  ctx->n_spares--;
  s->counted = false;
}

void jitsu_ctx_spares(jitsu_ctx *ctx, size_t *spares, size_t *filling) {
  if (spares)
    *spares = ctx ? ctx->n_spares : 0;
  if (filling)
    *filling = ctx ? ctx->n_spares_filling : 0;
}

void jitsu_vm_spares(const jitsu_vm *vm, size_t *spares, size_t *filling,
                     uint64_t *memory) {
  size_t n = 0, f = 0;
  uint64_t m = 0;
  for (jitsu_list *l = vm ? vm->ctx->spares.next : NULL;
       l != NULL && l != &vm->ctx->spares; l = l->next) {
    jitsu_spare *s = JITSU_CONTAINER_OF(l, jitsu_spare, link);
    if (s->vm != vm)
      continue;
    n++;
    f += s->filling;
    m += s->memory;
  }
  if (spares)
    *spares = n;
  if (filling)
    *filling = f;
  if (memory)
    *memory = m;
}

/* (vm) is about to join (live) live guests: end spares until live guests
 * and spares fit under max-live, other vms' first, then (vm)'s own that
 * still fill (its ready ones are what its start takes), oldest first.
 * Reclaim callbacks run here, inside the summon. */
void jitsu__spares_make_room(jitsu_vm *vm, size_t live) {
  jitsu_ctx *ctx = vm->ctx;
  for (int pass = 0; pass < 2; pass++) {
    jitsu_list *l = ctx->spares.next;
    while (l != &ctx->spares && live + ctx->n_spares >= ctx->max_live) {
      jitsu_spare *s = JITSU_CONTAINER_OF(l, jitsu_spare, link);
      l = l->next;
      if (pass == 0 ? s->vm == vm : !(s->vm == vm && s->filling))
        continue;
      size_t before = ctx->n_spares;
      s->reclaim(s); /* ends it, calls jitsu_spare_end(), may free it */
      if (ctx->n_spares >= before)
        return;             /* it did not end: no more from this backend now */
      l = ctx->spares.next; /* the list may have changed */
    }
  }
}
