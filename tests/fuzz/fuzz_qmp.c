/* libFuzzer target: bytes from "QEMU" on a QMP connection, through the
 * QMP client (line splitting, JSON, greeting, reply matching, events).
 * The owner queues two commands before the greeting and one more on open. */
#include "backends/qemu.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t loop;
static qmp *conn;
static int closed, replies;

static void reply(void *arg, json_t *ret, const char *error) {
  (void)arg;
  if (ret == NULL && error == NULL)
    abort(); /* a reply is a value or a reason */
  replies++;
}

static void on_open(void *arg) {
  (void)arg;
  qmp_send(conn, "query-status", NULL, -1, 1000, reply, NULL);
}

static void on_event(void *arg, const char *name, json_t *d) {
  (void)arg, (void)d;
  if (name == NULL)
    abort();
}

static void on_closed(void *arg, const char *why) {
  (void)arg;
  if (why == NULL)
    abort();
  closed = 1;
  conn = NULL;
}

static const qmp_handlers handlers = {on_open, on_event, on_closed};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static bool init;
  if (!init) {
    uv_loop_init(&loop);
    init = true;
  }
  if (size > 65536)
    return 0;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    abort();
  int big = 1 << 20;
  setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
  closed = replies = 0;
  conn = qmp_open(&loop, sv[0], &handlers, NULL, 1000);
  if (conn == NULL)
    abort();
  qmp_send(conn, "stop", NULL, -1, 1000, reply, NULL);
  json_t *a = json_pack("{s:s}", "uri", "fd:6");
  qmp_send(conn, "migrate-incoming", a, -1, 1000, reply, NULL);
  json_decref(a);
  size_t off = 0;
  while (off < size) {
    ssize_t n = write(sv[1], data + off, size - off);
    if (n <= 0)
      break;
    off += (size_t)n;
  }
  shutdown(sv[1], SHUT_WR);
  for (int i = 0; i < 10000 && !closed; i++)
    uv_run(&loop, UV_RUN_ONCE);
  if (!closed)
    abort(); /* EOF must end the connection */
  qmp_close(conn);
  uv_run(&loop, UV_RUN_NOWAIT);
  uv_run(&loop, UV_RUN_NOWAIT);
  close(sv[1]);
  return 0;
}
