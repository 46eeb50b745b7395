/* placeholder replaced below */
#include "internal.h"
void jitsu__control_free(jitsu_ctx *ctx) {
  (void)ctx;
}
