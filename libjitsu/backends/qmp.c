/* A QMP (QEMU Machine Protocol) client on the libuv loop. */
#include "qemu.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define QMP_LINE_MAX (1024 * 1024) /* a longer message is a broken peer */

typedef struct qcmd {
  struct qcmd *next;
  char *text; /* the JSON line */
  size_t len;
  int fd;
  uint64_t timeout_ms;
  qmp_reply_cb cb;
  void *arg;
  unsigned long id;
} qcmd;

struct qmp {
  uv_pipe_t pipe;
  uv_timer_t timer;
  int fd;
  int handles; /* open handles, for the last close */
  const qmp_handlers *h;
  void *arg;
  bool greeted, opened, closing;
  bool failing, owner_gone; /* in fail(); qmp_close() called meanwhile */
  qcmd *queue, **tail;
  qcmd *inflight;
  unsigned long next_id;
  char *buf;
  size_t len, cap;
};

static void free_cmd(qcmd *c) {
  if (c == NULL)
    return;
  if (c->fd >= 0)
    close(c->fd);
  free(c->text);
  free(c);
}

static void handle_closed(uv_handle_t *h) {
  qmp *q = h->data;
  if (--q->handles == 0) {
    free(q->buf);
    free(q);
  }
}

void qmp_close(qmp *q) {
  if (q != NULL && q->failing)
    q->owner_gone = true;
  if (q == NULL || q->closing)
    return;
  q->closing = true;
  free_cmd(q->inflight);
  q->inflight = NULL;
  while (q->queue != NULL) {
    qcmd *c = q->queue;
    q->queue = c->next;
    free_cmd(c);
  }
  uv_close((uv_handle_t *)&q->pipe, handle_closed);
  uv_close((uv_handle_t *)&q->timer, handle_closed);
}

/* The connection failed: fail every command, then tell the owner. */
static void fail(qmp *q, const char *why) {
  if (q->closing)
    return;
  q->closing = q->failing = true; /* no sends from the callbacks below */
  qcmd *list = q->inflight;
  q->inflight = NULL;
  if (list != NULL)
    list->next = q->queue;
  else
    list = q->queue;
  q->queue = NULL;
  while (list != NULL) {
    qcmd *c = list;
    list = c->next;
    if (c->cb != NULL)
      c->cb(c->arg, NULL, why);
    free_cmd(c);
  }
  if (!q->owner_gone && q->h->closed != NULL)
    q->h->closed(q->arg, why);
  q->closing = q->failing = false;
  qmp_close(q);
}

static void timed_out(uv_timer_t *t) {
  qmp *q = t->data;
  fail(q, q->greeted ? "QMP command timed out" : "no QMP greeting in time");
}

static void send_next(qmp *q) {
  if (q->inflight != NULL || q->queue == NULL || q->closing || !q->greeted)
    return;
  qcmd *c = q->queue;
  q->queue = c->next;
  if (q->queue == NULL)
    q->tail = &q->queue;
  c->next = NULL;
  q->inflight = c;
  union {
    struct cmsghdr align;
    char space[CMSG_SPACE(sizeof(int))];
  } control;
  struct iovec iov = {c->text, c->len};
  struct msghdr mh = {0};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (c->fd >= 0) {
    memset(&control, 0, sizeof(control));
    mh.msg_control = &control;
    mh.msg_controllen = sizeof(control);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &c->fd, sizeof(int));
  }
  /* Commands are small and go one at a time: the socket's buffer holds
   * a whole one, so a short write means a broken monitor. */
  ssize_t n = sendmsg(q->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n != (ssize_t)c->len) {
    fail(q, "cannot write to the QMP socket");
    return;
  }
  uv_timer_start(&q->timer, timed_out, c->timeout_ms, 0);
}

int qmp_send(qmp *q, const char *cmd, json_t *args, int pass_fd,
             uint64_t timeout_ms, qmp_reply_cb cb, void *arg) {
  if (q == NULL || q->closing)
    return -ENOTCONN;
  qcmd *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return -ENOMEM;
  c->id = ++q->next_id;
  json_t *msg =
      json_pack("{s:s, s:I}", "execute", cmd, "id", (json_int_t)c->id);
  if (msg != NULL && args != NULL)
    json_object_set(msg, "arguments", args);
  char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
  json_decref(msg);
  if (text == NULL) {
    free(c);
    return -ENOMEM;
  }
  c->len = strlen(text) + 1;
  c->text = realloc(text, c->len + 1);
  if (c->text == NULL) {
    free(text);
    free(c);
    return -ENOMEM;
  }
  c->text[c->len - 1] = '\n';
  c->text[c->len] = '\0';
  c->fd = -1;
  if (pass_fd >= 0 && (c->fd = fcntl(pass_fd, F_DUPFD_CLOEXEC, 3)) < 0) {
    int e = -errno;
    free_cmd(c);
    return e;
  }
  c->timeout_ms = timeout_ms;
  c->cb = cb;
  c->arg = arg;
  *q->tail = c;
  q->tail = &c->next;
  send_next(q);
  return 0;
}

static void caps_done(void *arg, json_t *ret, const char *error) {
  qmp *q = arg;
  if (ret == NULL)
    return; /* fail() tells the owner */
  q->opened = true;
  if (q->h->open != NULL)
    q->h->open(q->arg);
}

static void handle_message(qmp *q, json_t *m) {
  if (!q->greeted) {
    if (json_object_get(m, "QMP") == NULL) {
      fail(q, "QEMU's monitor did not greet with QMP");
      return;
    }
    q->greeted = true;
    uv_timer_stop(&q->timer);
    /* Our own handshake goes before anything the owner queued. */
    qcmd *queued = q->queue;
    q->queue = NULL;
    q->tail = &q->queue;
    qmp_send(q, "qmp_capabilities", NULL, -1, 5000, caps_done, q);
    if (queued != NULL) { /* caps is in flight: the queue is empty */
      q->queue = queued;
      q->tail = &queued->next;
      while (*q->tail != NULL)
        q->tail = &(*q->tail)->next;
    }
    return;
  }
  const char *event = json_string_value(json_object_get(m, "event"));
  if (event != NULL) {
    if (q->h->event != NULL)
      q->h->event(q->arg, event, json_object_get(m, "data"));
    return;
  }
  json_t *id = json_object_get(m, "id");
  qcmd *c = q->inflight;
  if (c == NULL || !json_is_integer(id) ||
      (unsigned long)json_integer_value(id) != c->id)
    return; /* a reply to a command that timed out */
  q->inflight = NULL;
  uv_timer_stop(&q->timer);
  json_t *ret = json_object_get(m, "return");
  if (c->cb != NULL) {
    if (ret != NULL) {
      c->cb(c->arg, ret, NULL);
    } else {
      json_t *e = json_object_get(m, "error");
      const char *desc = json_string_value(json_object_get(e, "desc"));
      c->cb(c->arg, NULL, desc ? desc : "QMP error without a description");
    }
  }
  free_cmd(c);
  send_next(q);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  qmp *q = h->data;
  (void)hint;
  if (q->cap - q->len < 4096) {
    size_t cap = q->cap ? q->cap * 2 : 8192;
    char *b = cap <= QMP_LINE_MAX * 2 ? realloc(q->buf, cap) : NULL;
    if (b == NULL) {
      *buf = uv_buf_init(NULL, 0);
      return;
    }
    q->buf = b;
    q->cap = cap;
  }
  *buf = uv_buf_init(q->buf + q->len, (unsigned)(q->cap - q->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  qmp *q = s->data;
  (void)buf;
  if (n == 0)
    return;
  if (n < 0) {
    fail(q, n == UV_EOF ? "QEMU closed its monitor" : uv_strerror((int)n));
    return;
  }
  q->len += (size_t)n;
  size_t start = 0;
  for (;;) {
    char *nl = memchr(q->buf + start, '\n', q->len - start);
    if (nl == NULL)
      break;
    size_t line = (size_t)(nl - (q->buf + start));
    json_error_t je;
    json_t *m = json_loadb(q->buf + start, line, 0, &je);
    start += line + 1;
    if (m == NULL) {
      if (line > 0 && !(line == 1 && q->buf[start - 2] == '\r')) {
        fail(q, "QEMU sent a malformed QMP message");
        return;
      }
      continue;
    }
    handle_message(q, m);
    json_decref(m);
    if (q->closing)
      return;
  }
  memmove(q->buf, q->buf + start, q->len - start);
  q->len -= start;
  if (q->len > QMP_LINE_MAX)
    fail(q, "QEMU sent an over-long QMP message");
}

qmp *qmp_open(uv_loop_t *loop, int fd, const qmp_handlers *h, void *arg,
              uint64_t timeout_ms) {
  qmp *q = calloc(1, sizeof(*q));
  if (q == NULL || uv_pipe_init(loop, &q->pipe, 0) < 0) {
    free(q);
    close(fd);
    return NULL;
  }
  q->pipe.data = q;
  q->handles = 2;
  uv_timer_init(loop, &q->timer);
  q->timer.data = q;
  q->fd = fd;
  q->h = h;
  q->arg = arg;
  q->tail = &q->queue;
  if (uv_pipe_open(&q->pipe, fd) < 0) {
    close(fd);
    q->closing = true;
    uv_close((uv_handle_t *)&q->pipe, handle_closed);
    uv_close((uv_handle_t *)&q->timer, handle_closed);
    return NULL;
  }
  uv_read_start((uv_stream_t *)&q->pipe, on_alloc, on_read);
  uv_timer_start(&q->timer, timed_out, timeout_ms, 0);
  return q;
}
