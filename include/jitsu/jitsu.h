/* libjitsu: summon guests just in time. The one header to include. */
#ifndef JITSU_JITSU_H
#define JITSU_JITSU_H

#include "common.h"
#include "ctx.h"
#include "vm.h"
#include "config.h"
#include "trigger.h"
#include "idle.h"
#include "metrics.h"
#include "control.h"
#include "channel.h"
#include "backend.h"

/* Not about guests: value parsers, argv splitting, sd_notify, a logger, a
 * list and a hash (helpers.h). */
#include "helpers.h"

#endif
