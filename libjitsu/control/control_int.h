/* The control room's private header (control.c: the socket and its
 * clients; control_cmd.c: the commands). */
#ifndef JITSU_CONTROL_INT_H
#define JITSU_CONTROL_INT_H

#include "internal.h"

/* The control server (control.c: transport; control_cmd.c: commands). */
void jitsu__control_free(jitsu_ctx *ctx);

typedef struct jitsu__creq jitsu__creq;
/* Run the request line (line, len) of a client; the answer comes through
 * jitsu__control_reply() now or later. */
void jitsu__control_run(jitsu__creq *req, const char *line, size_t len);
/* Answer (req) with (json) (a jansson json_t *, stolen) and free it. */
void jitsu__control_reply(jitsu__creq *req, void *json);
/* Answer (req) with an error (err, message) and free it. */
void jitsu__control_fail(jitsu__creq *req, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Run one request line with no client attached (for the fuzz target). */
void jitsu__control_feed(jitsu_ctx *ctx, const char *line, size_t len);
/* The context of (req). */
jitsu_ctx *jitsu__control_ctx(jitsu__creq *req);
/* Let (req) wait on (vm) for (timeout_ms) (0, or above the server's
 * request time-out: that); (on_timeout) answers it then. */
void jitsu__control_wait(jitsu__creq *req, jitsu_vm *vm, uint64_t timeout_ms,
                         void (*on_timeout)(jitsu__creq *req));
/* The request's id (a json_t * or NULL), to echo. */
void *jitsu__control_id(jitsu__creq *req);
void jitsu__control_set_id(jitsu__creq *req, void *id);

#endif
