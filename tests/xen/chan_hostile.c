/*
 * A hostile guest for the xen suite: run in a PV guest (not dom0), it
 * attacks the channel rendezvous in XenStore (libjitsu/chan/conduit.h) and
 * reports what XenStore let it do, one "KEY=RESULT" per attack, in its
 * data/hostile-result:
 *
 *   hijack    write its own domid into /conduit/NAME (to receive NAME's
 *             connections)
 *   remove    remove /conduit/NAME
 *   perms     make /conduit/NAME its own
 *   squat     make /conduit/SQUAT, a name of its own
 *   summon    request /conduit/SECRET, the name of a vm that declares no
 *             channel (so that dom0 would start it)
 *   requests  remove /conduit/NAME/requests (clients' pending requests);
 *             then "repaired" says whether it came back within 10 s
 *   as0       N requests for NAME that claim to come from dom0
 *   flood     N requests for NAME as itself (each would cost the listener
 *             a vchan server)
 *
 * RESULT is "ok" (it was allowed) or the errno name; for as0 and flood the
 * number written. The tests decide which results are acceptable.
 *
 *   chan_hostile NAME SECRET SQUAT N
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xenstore.h>

static char out[1024];

static void note(const char *key, bool ok) {
  size_t n = strlen(out);
  snprintf(out + n, sizeof(out) - n, "%s%s=%s", n ? " " : "", key,
           ok                ? "ok"
           : errno == EACCES ? "EACCES"
           : errno == ENOENT ? "ENOENT"
           : errno == EPERM  ? "EPERM"
                             : strerror(errno));
}

static void note_count(const char *key, int count) {
  size_t n = strlen(out);
  snprintf(out + n, sizeof(out) - n, "%s%s=%d", n ? " " : "", key, count);
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: chan_hostile NAME SECRET SQUAT N\n");
    return 2;
  }
  struct xs_handle *xs = xs_open(0);
  if (xs == NULL) {
    perror("chan_hostile: xs_open");
    return 1;
  }
  unsigned len;
  char *me = xs_read(xs, XBT_NULL, "domid", &len);
  if (me == NULL) {
    perror("chan_hostile: domid");
    return 1;
  }
  int n = atoi(argv[4]);
  char base[128], path[256];
  snprintf(base, sizeof(base), "/conduit/%s", argv[1]);

  note("hijack", xs_write(xs, XBT_NULL, base, me, strlen(me)));
  note("remove", xs_rm(xs, XBT_NULL, base));
  struct xs_permissions mine = {.id = (unsigned)atoi(me),
                                .perms = XS_PERM_READ};
  note("perms", xs_set_permissions(xs, XBT_NULL, base, &mine, 1));
  snprintf(path, sizeof(path), "/conduit/%s", argv[3]);
  note("squat", xs_write(xs, XBT_NULL, path, me, strlen(me)));
  snprintf(path, sizeof(path), "/conduit/%s/requests/%s/p", argv[2], me);
  note("summon", xs_write(xs, XBT_NULL, path, "", 0));

  snprintf(path, sizeof(path), "%s/requests", base);
  note("requests", xs_rm(xs, XBT_NULL, path));
  /* It may add to the node, not read it: EACCES means it is there. */
  bool back = false;
  for (int i = 0; i < 100 && !back; i++) {
    char *v = xs_read(xs, XBT_NULL, path, &len);
    back = v != NULL || errno == EACCES;
    free(v);
    if (!back)
      usleep(100000);
  }
  errno = ENOENT;
  note("repaired", back);

  int as0 = 0, flood = 0;
  for (int i = 0; i < n; i++) {
    snprintf(path, sizeof(path), "%s/requests/0/h%d", base, i);
    as0 += xs_write(xs, XBT_NULL, path, "", 0);
  }
  note_count("as0", as0);
  for (int i = 0; i < n; i++) {
    snprintf(path, sizeof(path), "%s/requests/%s/f%d", base, me, i);
    flood += xs_write(xs, XBT_NULL, path, "", 0);
  }
  note_count("flood", flood);

  printf("%s\n", out);
  bool ok = xs_write(xs, XBT_NULL, "data/hostile-result", out, strlen(out));
  free(me);
  xs_close(xs);
  return ok ? 0 : 1;
}
