/*
 * chan_echo: a channel endpoint that echoes. It listens on a name (its
 * argument, else $JITSU_VM) through the rendezvous ($JITSU_RENDEZVOUS, set
 * by the process backend), sends everything it reads on each channel back,
 * and shuts down its side when the peer does. With the notify readiness it
 * tells the controller once it listens, so a connect that summoned it
 * completes then. A peer that sends faster than it reads the echo is slowed
 * down: past 1 MiB of echo not yet in the ring, reading stops until the
 * queue is half drained (so memory stays bounded whatever the peer does).
 *
 *   [vm echo]
 *   exec = build/examples/chan_echo
 *   ready = notify
 */
#include <jitsu/jitsu.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#define HIGH_WATER (1024 * 1024)

static void on_read(jitsu_chan *c, const void *data, size_t len, int err,
                    void *arg);

/* A write reached the ring: read again once the queue has drained enough.
 * (The channel's data marks it paused.) */
static void on_written(jitsu_chan *c, int err, void *arg) {
  (void)arg;
  if (err == 0 && jitsu_chan_data(c) != NULL &&
      jitsu_chan_write_queue_size(c) < HIGH_WATER / 2) {
    jitsu_chan_set_data(c, NULL);
    jitsu_chan_read_start(c, on_read, NULL);
  }
}

static void on_read(jitsu_chan *c, const void *data, size_t len, int err,
                    void *arg) {
  (void)arg;
  if (len > 0) {
    if (jitsu_chan_write(c, data, len, on_written, NULL) < 0) {
      jitsu_chan_close(c);
      return;
    }
    if (jitsu_chan_write_queue_size(c) > HIGH_WATER) {
      jitsu_chan_set_data(c, c); /* paused: on_written resumes */
      jitsu_chan_read_start(c, NULL, NULL);
    }
    return;
  }
  /* The peer is done: so are we, after the echo (a vchan, which has no
   * half-close, just closes). */
  if (err != 0 || jitsu_chan_shutdown(c) < 0)
    jitsu_chan_close(c);
}

static void on_accept(jitsu_chan_listener *l, jitsu_chan *c, const char *port,
                      int err, void *arg) {
  (void)port, (void)arg;
  if (c != NULL) {
    jitsu_chan_read_start(c, on_read, NULL);
  } else if (err == 0) {
    jitsu_sd_notify("READY=1"); /* registered: connects reach us now */
  } else {
    fprintf(stderr, "chan_echo: cannot listen: %s\n", jitsu_strerror(err));
    jitsu_chan_listener_close(l);
    exit(1);
  }
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  const char *name = argc > 1 ? argv[1] : getenv("JITSU_VM");
  if (name == NULL) {
    fprintf(stderr, "usage: chan_echo NAME (or set JITSU_VM)\n");
    return 2;
  }
  uv_loop_t *loop = uv_default_loop();
  jitsu_chan_listener *l;
  int r = jitsu_chan_listen(loop, name, NULL, on_accept, NULL, &l);
  if (r < 0) {
    fprintf(stderr, "chan_echo: cannot listen on %s: %s\n", name,
            jitsu_strerror(r));
    return 1;
  }
  return uv_run(loop, UV_RUN_DEFAULT);
}
