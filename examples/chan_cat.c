/*
 * chan_cat: connect to a channel and copy: standard input into it (then
 * shut it down), and what comes back to standard output, until its end.
 * The pair to chan_echo:
 *
 *   build/examples/controller examples/controller.conf   # serves the
 * rendezvous
 *   echo hello | JITSU_RENDEZVOUS=/path/rendezvous.sock \
 *       build/examples/chan_cat echo greeting             # summons "echo"
 *
 * Standard input must be a pipe, a socket or a terminal. Over a transport
 * without half-close (Xen's vchan: JITSU_RENDEZVOUS=xen) it cannot tell
 * the peer its input ended: it then stops once as many bytes came back as
 * it sent, which suits its pair chan_echo.
 *
 * -t SECONDS bounds the connect, a summon included (default 10, at most
 * 120): give a guest that boots slowly (emulation, a loaded host) longer.
 */
#include <jitsu/jitsu.h>

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uv_pipe_t in;
static int status = 1;
static size_t sent, received;
static bool input_done, no_half_close;

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  static char b[65536];
  (void)h, (void)hint;
  *buf = uv_buf_init(b, sizeof(b));
}

static void on_stdin(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  jitsu_chan *c = s->data;
  if (n > 0) {
    if (jitsu_chan_write(c, buf->base, (size_t)n, NULL, NULL) == 0)
      sent += (size_t)n;
  } else if (n < 0) {
    uv_read_stop(s);
    input_done = true;
    no_half_close = jitsu_chan_shutdown(c) == -EOPNOTSUPP;
    if (no_half_close && received >= sent) {
      status = 0;
      jitsu_chan_close(c);
      uv_close((uv_handle_t *)&in, NULL);
    }
  }
}

static void on_read(jitsu_chan *c, const void *data, size_t len, int err,
                    void *arg) {
  (void)arg;
  if (len > 0) {
    received += len;
    if (fwrite(data, 1, len, stdout) != len)
      err = -EIO;
    else if (!(input_done && no_half_close && received >= sent))
      return;
  }
  fflush(stdout);
  if (err < 0)
    fprintf(stderr, "chan_cat: %s\n", jitsu_strerror(err));
  status = err < 0;
  jitsu_chan_close(c);
  uv_close((uv_handle_t *)&in, NULL);
}

static unsigned long timeout_s = 10;

static void on_connect(jitsu_chan *c, int err, void *arg) {
  (void)arg;
  if (err == -ETIMEDOUT) { /* jitsu_strerror() words it for a guest's start */
    fprintf(stderr,
            "chan_cat: cannot connect: no listener took the channel within "
            "%lu s (-t SECONDS for longer)\n",
            timeout_s);
    uv_close((uv_handle_t *)&in, NULL);
    return;
  }
  if (err < 0) {
    fprintf(stderr, "chan_cat: cannot connect: %s\n", jitsu_strerror(err));
    uv_close((uv_handle_t *)&in, NULL);
    return;
  }
  jitsu_chan_read_start(c, on_read, NULL);
  in.data = c;
  uv_read_start((uv_stream_t *)&in, on_alloc, on_stdin);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  jitsu_chan_options o = JITSU_CHAN_OPTIONS_INIT;
  if (argc == 5 && strcmp(argv[1], "-t") == 0) {
    char *end;
    unsigned long s = strtoul(argv[2], &end, 10);
    if (*argv[2] < '0' || *argv[2] > '9' || *end != '\0' || s == 0 || s > 120) {
      fprintf(stderr,
              "chan_cat: -t wants whole seconds from 1 to 120, not "
              "\"%s\"\n",
              argv[2]);
      return 2;
    }
    o.timeout_ms = (uint64_t)s * 1000;
    timeout_s = s;
    argv += 2, argc -= 2;
  }
  if (argc != 3) {
    fprintf(
        stderr,
        "usage: chan_cat [-t SECONDS] NAME PORT (with $JITSU_RENDEZVOUS)\n");
    return 2;
  }
  uv_loop_t *loop = uv_default_loop();
  if (uv_pipe_init(loop, &in, 0) < 0 || uv_pipe_open(&in, 0) < 0) {
    fprintf(stderr, "chan_cat: standard input is not a pipe or socket\n");
    return 2;
  }
  int r =
      jitsu_chan_connect(loop, argv[1], argv[2], &o, on_connect, NULL, NULL);
  if (r < 0) {
    fprintf(stderr, "chan_cat: %s\n", jitsu_strerror(r));
    return 1;
  }
  uv_run(loop, UV_RUN_DEFAULT);
  return status;
}
