/* The Xen rendezvous in XenStore, as the vchan module (chan_xen.c) and
 * the xl backend (xl_host.c) both keep it. Who may write what:
 *
 *   /conduit                       dom0's; every domain reads it
 *   /conduit/NAME = DOMID or ""    dom0's; every domain reads it; the
 *                                  domain that holds NAME may write it
 *                                  (dom0 grants that: the trusted
 *                                  binding). dom0 holds its own names.
 *   /conduit/NAME/requests         every domain may add to it (not read
 *                                  it); its holder reads it
 *   .../requests/CLIENT/PORT       owned by the domain that wrote it
 *                                  (XenStore sets the owner): read and
 *                                  removed by NAME's holder
 *
 * A domain cannot make a node owned by another one, nor change a node's
 * owner; only the owner (and dom0) may set a node's permissions. So a
 * name's grant and a request's owner are facts that XenStore vouches
 * for, whatever the node's path or value claims. (Names stay dom0's:
 * xenstored removes the nodes a destroyed domain owns, and a name must
 * outlive its holder's domain.) Needs <xenstore.h>.
 */
#ifndef JITSU_CONDUIT_H
#define JITSU_CONDUIT_H

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xenstore.h>

#define CONDUIT_REQUESTS "requests"

/* A XenStore path: at most 3072 bytes (XENSTORE_ABS_PATH_MAX). A request
 * whose path was cut to a buffer could never be removed. */
#define XS_PATH_MAX 3072

/* The owner of (path) (its first permission entry), or -errno (-EACCES:
 * we may not read it; -ENOENT: it is not there). */
static inline int jitsu__xs_owner(struct xs_handle *xs, xs_transaction_t t,
                                  const char *path) {
  unsigned n = 0;
  struct xs_permissions *p = xs_get_permissions(xs, t, path, &n);
  if (p == NULL)
    return errno ? -errno : -EIO;
  int owner = n > 0 ? (int)p[0].id : -EIO;
  free(p);
  return owner;
}

/* Set (path)'s permissions: owned by (owner), (others) for every domain
 * not named, and (peer) (if >= 0) may (peer_perm). */
static inline bool jitsu__xs_perms(struct xs_handle *xs, xs_transaction_t t,
                                   const char *path, unsigned owner,
                                   unsigned others, int peer,
                                   unsigned peer_perm) {
  struct xs_permissions p[2] = {
      {.id = owner, .perms = others},
      {.id = peer < 0 ? 0 : (unsigned)peer, .perms = peer_perm}};
  return xs_set_permissions(xs, t, path, p, peer >= 0 ? 2 : 1);
}

/* The domain that dom0 has granted the name at (base) ("/conduit/NAME")
 * to (it may write the node), or -1. */
static inline int jitsu__conduit_grantee(struct xs_handle *xs,
                                         xs_transaction_t t, const char *base) {
  unsigned n = 0;
  struct xs_permissions *p = xs_get_permissions(xs, t, base, &n);
  int grantee = -1;
  for (unsigned i = 1; p != NULL && i < n && grantee < 0; i++)
    if (p[i].perms & XS_PERM_WRITE)
      grantee = (int)p[i].id;
  free(p);
  return grantee;
}

/* Who holds the name at (base): 0 for dom0, the grantee once it listens
 * (its domid is the value), or -1 (nobody; or a value no grant backs). */
static inline int jitsu__conduit_holder(struct xs_handle *xs,
                                        xs_transaction_t t, const char *base) {
  unsigned len;
  char *v = xs_read(xs, t, base, &len);
  int holder = -1;
  if (v != NULL && v[0] >= '0' && v[0] <= '9')
    holder = atoi(v);
  free(v);
  int grantee = holder >= 0 ? jitsu__conduit_grantee(xs, t, base) : -1;
  if (holder == 0)
    return grantee < 0 && jitsu__xs_owner(xs, t, base) == 0 ? 0 : -1;
  return holder > 0 && holder == grantee ? holder : -1;
}

/* Call (fn) for each request under (reqs) ("/conduit/NAME/requests"):
 * every CLIENT/PORT, then (dir true) its CLIENT directory; a false from
 * (fn) stops the walk. 0, or -errno if (reqs) cannot be listed (-ENOENT:
 * it is not there). */
static inline int jitsu__conduit_each(struct xs_handle *xs, const char *reqs,
                                      bool (*fn)(const char *path, bool dir,
                                                 void *arg),
                                      void *arg) {
  unsigned nc = 0;
  char **clients = xs_directory(xs, XBT_NULL, reqs, &nc);
  if (clients == NULL)
    return errno ? -errno : -EIO;
  bool go = true;
  for (unsigned i = 0; i < nc && go; i++) {
    char dir[XS_PATH_MAX + 1], path[XS_PATH_MAX + 1];
    if (snprintf(dir, sizeof(dir), "%s/%s", reqs, clients[i]) >=
        (int)sizeof(dir))
      continue;
    unsigned np = 0;
    char **ports = xs_directory(xs, XBT_NULL, dir, &np);
    for (unsigned j = 0; ports && j < np && go; j++)
      if (snprintf(path, sizeof(path), "%s/%s", dir, ports[j]) <
          (int)sizeof(path))
        go = fn(path, false, arg);
    free(ports);
    if (go)
      go = fn(dir, true, arg);
  }
  free(clients);
  return 0;
}

/* Make /conduit (dom0 only): dom0's, read by every domain. False with
 * errno on failure. */
static inline bool jitsu__conduit_root(struct xs_handle *xs) {
  return xs_mkdir(xs, XBT_NULL, "/conduit") &&
         jitsu__xs_perms(xs, XBT_NULL, "/conduit", 0, XS_PERM_READ, -1, 0);
}

/* Make NAME's requests node under (base) ("/conduit/NAME"), owned by
 * (owner): every domain may add requests; (holder) (if >= 0 and not the
 * owner) reads and removes them. */
static inline bool jitsu__conduit_requests(struct xs_handle *xs,
                                           const char *base, unsigned owner,
                                           int holder) {
  char path[128];
  snprintf(path, sizeof(path), "%s/" CONDUIT_REQUESTS, base);
  return xs_mkdir(xs, XBT_NULL, path) &&
         jitsu__xs_perms(xs, XBT_NULL, path, owner, XS_PERM_WRITE,
                         holder == (int)owner ? -1 : holder,
                         XS_PERM_READ | XS_PERM_WRITE);
}

/* Declare NAME (dom0 only): /conduit/NAME unheld (dom0's, value "") with
 * its requests node, unless it is there already. False with errno. */
static inline bool jitsu__conduit_declare(struct xs_handle *xs,
                                          const char *name) {
  char base[96];
  snprintf(base, sizeof(base), "/conduit/%s", name);
  unsigned len;
  char *v = xs_read(xs, XBT_NULL, base, &len);
  if (v != NULL) {
    free(v);
    return true;
  }
  return jitsu__conduit_root(xs) && xs_write(xs, XBT_NULL, base, "", 0) &&
         jitsu__xs_perms(xs, XBT_NULL, base, 0, XS_PERM_READ, -1, 0) &&
         jitsu__conduit_requests(xs, base, 0, -1);
}

#endif
