/* jitsu-dns: the server. UDP and TCP listeners, the answer logic, holding
 * answers while a guest is summoned, forwarding, rate limits, and the idle
 * policy for the guests that queries started. */
#include "dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TCP_IDLE_MS 10000
/* Per TCP connection: answers owed (held or forwarded queries, and writes
 * not yet done) and bytes of answers the client has not read. Beyond
 * either, the server stops reading that connection until it drains; a
 * client that never reads is closed by the idle timer. */
#define TCP_MAX_QUERIES_INFLIGHT 32
#define TCP_MAX_UNSENT (64 * 1024)
#define RATE_SLOTS 4096
#define SHORT_TTL 1
#define RING 256
/* UDP in batches: libuv reads up to 20 datagrams with one recvmmsg(2)
 * into slots of 64 KiB each; the answers built while they are handled go
 * out with one sendmmsg(2) when the batch ends. */
#define UDP_SLOT (64 * 1024)
#define UDP_SLOTS 20
#define UDP_BATCH 32

typedef struct link {
  struct link *prev, *next;
} link_t;

static void list_init(link_t *h) {
  h->prev = h->next = h;
}
static void list_add(link_t *h, link_t *l) {
  l->prev = h->prev;
  l->next = h;
  h->prev->next = l;
  h->prev = l;
}
static void list_del(link_t *l) {
  if (l->next == NULL)
    return;
  l->prev->next = l->next;
  l->next->prev = l->prev;
  l->next = l->prev = NULL;
}
#define CONTAINER(p, type, m) ((type *)((char *)(p)-offsetof(type, m)))

typedef struct cidr {
  int family;
  uint8_t addr[16];
  unsigned prefix;
} cidr;

/* A token bucket, shared by the sources whose keyed hash lands on it: a
 * collision never refills it (two sources taking turns on one bucket
 * share its rate), and the key is secret, so a collision cannot be aimed. */
typedef struct rate_slot {
  double tokens;
  uint64_t at_ms;
  bool used;
} rate_slot;

typedef struct tcp_conn tcp_conn;

/* Where an answer goes. */
typedef struct origin {
  bool tcp;
  uv_udp_t *udp;
  struct sockaddr_storage peer;
  tcp_conn *conn;
} origin;

typedef struct latency_ring {
  uint32_t us[RING];
  unsigned n, pos;
  uint64_t count;
  double sum_ms;
} latency_ring;

/* Answers to the datagrams of the batch being handled, sent together. */
typedef struct udp_batch {
  uv_udp_t *udp; /* the socket whose batch this is; NULL between batches */
  unsigned n;
  struct mmsghdr msg[UDP_BATCH];
  struct iovec iov[UDP_BATCH];
  struct sockaddr_storage peer[UDP_BATCH];
  uint8_t data[UDP_BATCH][DNS_UDP_MAX];
} udp_batch;

typedef struct stats {
  double queries_udp, queries_tcp, dropped, rcodes[DNS_RCODE_COUNT];
  double summons, forwarded, rate_limited, truncated, held, hold_expired;
  double referrals;
  double not_allowed;
  latency_ring cold, warm;
} stats;

struct dns_server {
  jitsu_ctx *ctx;
  uv_loop_t *loop;
  uint64_t udp_buffer; /* SO_RCVBUF asked for */
  dns_settings set;
  dns_zones zones;
  uv_udp_t **udp;
  uv_tcp_t **tcp;
  size_t n_udp, n_tcp;
  dns_forwarder *fwd;
  cidr *allow;
  size_t n_allow;
  cidr *summon_allow; /* NULL: anyone may summon */
  size_t n_summon_allow;
  uint64_t rate_key[2]; /* the rate limit's hash key, random */
  link_t pending;
  unsigned n_pending, n_conns;
  rate_slot rate[RATE_SLOTS];
  uv_timer_t idle;
  uv_timer_t *rebuild_timer;
  uint32_t serial;
  uint8_t *udp_in; /* UDP_SLOTS slots for recvmmsg */
  udp_batch *out;
  stats st;
};

struct tcp_conn {
  dns_server *srv;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uint8_t buf[2 + DNS_TCP_MAX];
  size_t len;
  unsigned refs; /* handles (2) + answers owed */
  bool closing;
  bool paused;     /* reading stopped: too much owed or unsent */
  bool in_process; /* conn_process() is running */
};

/* A query whose answer waits for its guest. */
typedef struct pending {
  link_t link;
  dns_server *srv;
  origin to;
  dns_query q;
  jitsu_vm *vm;
  uv_timer_t *timer;
  uint64_t begin_ns;
  bool held;     /* libjitsu still owes the summon callback */
  bool answered; /* the client has its answer */
} pending;

/* --- sending --- */

typedef struct send_req {
  uv_udp_send_t udp;
  uv_write_t tcp;
  tcp_conn *conn;
  uint8_t data[];
} send_req;

static void conn_unref(tcp_conn *c);

static void udp_sent(uv_udp_send_t *r, int status) {
  (void)status;
  free(CONTAINER(r, send_req, udp));
}

static void tcp_sent(uv_write_t *w, int status) {
  (void)status;
  send_req *r = CONTAINER(w, send_req, tcp);
  conn_unref(r->conn);
  free(r);
}

/* One datagram now, or queued by libuv (a copy) if the socket is full. */
static void udp_send_now(uv_udp_t *u, const uint8_t *msg, size_t len,
                         const struct sockaddr *peer) {
  uv_buf_t b = uv_buf_init((char *)msg, (unsigned)len);
  if (uv_udp_try_send(u, &b, 1, peer) >= 0)
    return;
  send_req *r = malloc(sizeof(*r) + len);
  if (r == NULL)
    return;
  memcpy(r->data, msg, len);
  b = uv_buf_init((char *)r->data, (unsigned)len);
  if (uv_udp_send(&r->udp, u, &b, 1, peer, udp_sent) < 0)
    free(r);
}

static socklen_t peer_len(const struct sockaddr_storage *ss) {
  return ss->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                  : sizeof(struct sockaddr_in6);
}

/* Sends the batch's answers: one sendmmsg(2) while the socket takes them;
 * an answer it refuses (an unreachable peer) is dropped, as a single send
 * would drop it; when the socket is full, libuv queues the rest. */
static void udp_flush(dns_server *srv) {
  udp_batch *o = srv->out;
  uv_os_fd_t fd;
  unsigned i = 0;
  if (o->n == 0 || uv_fileno((uv_handle_t *)o->udp, &fd) < 0) {
    o->n = 0;
    return;
  }
  for (unsigned k = 0; k < o->n; k++) {
    o->iov[k].iov_base = o->data[k];
    o->msg[k].msg_hdr = (struct msghdr){
        .msg_name = &o->peer[k],
        .msg_namelen = peer_len(&o->peer[k]),
        .msg_iov = &o->iov[k],
        .msg_iovlen = 1,
    };
  }
  while (i < o->n) {
    int r = sendmmsg(fd, o->msg + i, o->n - i, MSG_DONTWAIT);
    if (r > 0) {
      i += (unsigned)r;
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      for (; i < o->n; i++)
        udp_send_now(o->udp, o->data[i], o->iov[i].iov_len,
                     (struct sockaddr *)&o->peer[i]);
    } else {
      i++;
    }
  }
  o->n = 0;
}

static void send_answer(dns_server *srv, origin *to, const uint8_t *msg,
                        size_t len, int rcode) {
  if ((unsigned)rcode < DNS_RCODE_COUNT)
    srv->st.rcodes[rcode]++;
  if (len >= 3 && (msg[2] & 0x02))
    srv->st.truncated++;
  if (!to->tcp) {
    udp_batch *o = srv->out;
    if (o->udp == to->udp && len <= DNS_UDP_MAX) {
      if (o->n == UDP_BATCH)
        udp_flush(srv);
      memcpy(o->data[o->n], msg, len);
      memcpy(&o->peer[o->n], &to->peer, sizeof(to->peer));
      o->iov[o->n].iov_len = len;
      o->n++;
      return;
    }
    udp_send_now(to->udp, msg, len, (struct sockaddr *)&to->peer);
    return;
  }
  tcp_conn *c = to->conn;
  if (c == NULL || c->closing)
    return;
  send_req *r = malloc(sizeof(*r) + len + 2);
  if (r == NULL)
    return;
  r->data[0] = (uint8_t)(len >> 8);
  r->data[1] = (uint8_t)len;
  memcpy(r->data + 2, msg, len);
  r->conn = c;
  c->refs++;
  uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)len + 2);
  if (uv_write(&r->tcp, (uv_stream_t *)&c->tcp, &b, 1, tcp_sent) < 0) {
    conn_unref(c);
    free(r);
  }
}

static size_t limit_for(const origin *to, const dns_query *q) {
  if (to->tcp)
    return DNS_TCP_MAX;
  if (!q->edns)
    return DNS_UDP_PLAIN;
  return q->edns_size < DNS_UDP_MAX ? q->edns_size : DNS_UDP_MAX;
}

/* --- clients --- */

static int peer_ip(const struct sockaddr_storage *ss, uint8_t *ip) {
  if (ss->ss_family == AF_INET) {
    memcpy(ip, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    return AF_INET;
  }
  memcpy(ip, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
  return AF_INET6;
}

static bool cidr_match(const cidr *c, int family, const uint8_t *ip) {
  if (c->family != family)
    return false;
  unsigned full = c->prefix / 8, rest = c->prefix % 8;
  if (memcmp(c->addr, ip, full) != 0)
    return false;
  if (rest == 0)
    return true;
  uint8_t mask = (uint8_t)(0xFF << (8 - rest));
  return (c->addr[full] & mask) == (ip[full] & mask);
}

/* Whether (to)'s address is in one of (list, n). */
static bool in_cidrs(const cidr *list, size_t n, const origin *to) {
  uint8_t ip[16];
  int family = peer_ip(&to->peer, ip);
  for (size_t i = 0; i < n; i++)
    if (cidr_match(&list[i], family, ip))
      return true;
  return false;
}

static bool may_recurse(dns_server *srv, const origin *to) {
  return srv->fwd != NULL && in_cidrs(srv->allow, srv->n_allow, to);
}

static int parse_cidr(const char *text, cidr *c) {
  char buf[80];
  snprintf(buf, sizeof(buf), "%s", text);
  char *slash = strchr(buf, '/');
  if (slash)
    *slash = '\0';
  memset(c, 0, sizeof(*c));
  if (inet_pton(AF_INET, buf, c->addr) == 1)
    c->family = AF_INET, c->prefix = 32;
  else if (inet_pton(AF_INET6, buf, c->addr) == 1)
    c->family = AF_INET6, c->prefix = 128;
  else
    return -1;
  if (slash) {
    char *end;
    long p = strtol(slash + 1, &end, 10);
    if (*end || slash[1] == '\0' || p < 0 || p > (long)c->prefix)
      return -1;
    c->prefix = (unsigned)p;
  }
  return 0;
}

/* The rate limit's key of a source: its IPv4 address, or its IPv6
 * address cut to rate-prefix6 bits (one host holds a whole /64 or more),
 * hashed with a random key (splitmix64's mixing, keyed). */
static uint64_t rate_key(const dns_server *srv, int family,
                         const uint8_t ip[16]) {
  uint8_t k[16] = {0};
  unsigned bits = family == AF_INET6 ? srv->set.rate_prefix6 : 32;
  for (unsigned i = 0; i < 16 && bits > 0; i++, bits = bits > 8 ? bits - 8 : 0)
    k[i] = (uint8_t)(ip[i] & (bits >= 8 ? 0xFF : (0xFF00 >> bits) & 0xFF));
  uint64_t h = srv->rate_key[0] ^ (uint64_t)family;
  for (int half = 0; half < 2; half++) {
    uint64_t w;
    memcpy(&w, k + 8 * half, 8);
    h ^= w + srv->rate_key[1];
    h += 0x9E3779B97F4A7C15ull;
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
    h ^= h >> 31;
  }
  return h;
}

/* Whether (to) may cause summons at all ([dns] summon-allow). */
static bool summon_allowed(const dns_server *srv, const origin *to) {
  return srv->summon_allow == NULL ||
         in_cidrs(srv->summon_allow, srv->n_summon_allow, to);
}

/* A token bucket per source (see rate_key), for queries that summon. */
static bool rate_ok(dns_server *srv, const origin *to) {
  uint8_t ip[16] = {0};
  int family = peer_ip(&to->peer, ip);
  rate_slot *s = &srv->rate[rate_key(srv, family, ip) % RATE_SLOTS];
  uint64_t now = uv_now(srv->loop);
  if (!s->used) { /* the first source here starts with a full burst */
    s->used = true;
    s->tokens = srv->set.rate_burst;
    s->at_ms = now;
  }
  s->tokens += (double)(now - s->at_ms) * srv->set.rate_per_s / 1000.0;
  if (s->tokens > srv->set.rate_burst)
    s->tokens = srv->set.rate_burst;
  s->at_ms = now;
  if (s->tokens < 1)
    return false;
  s->tokens -= 1;
  return true;
}

/* --- answers --- */

static void ring_add(latency_ring *r, uint64_t ns) {
  uint64_t us = ns / 1000;
  r->us[r->pos] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
  r->pos = (r->pos + 1) % RING;
  if (r->n < RING)
    r->n++;
  r->count++;
  r->sum_ms += (double)ns / 1e6;
}

/* An error answer. RA only where recursion was available for this query
 * (a SERVFAIL on the way to an upstream), never on FORMERR, NOTIMP,
 * BADVERS or REFUSED. NOTIMP (an opcode we do not know) carries QR and
 * the opcode alone, with empty sections: its RD and CD meant something
 * under an opcode we did not read. */
static void answer_rcode(dns_server *srv, origin *to, const dns_query *q,
                         int rcode, bool aa) {
  uint8_t buf[DNS_UDP_MAX];
  dns_msg m;
  dns_query bare;
  if (rcode == DNS_NOTIMP) {
    memset(&bare, 0, sizeof(bare));
    bare.id = q->id;
    bare.opcode = q->opcode;
    q = &bare;
  }
  dns_msg_begin(&m, buf, sizeof(buf), limit_for(to, q), q, rcode, aa,
                rcode == DNS_SERVFAIL && may_recurse(srv, to));
  send_answer(srv, to, buf, dns_msg_finish(&m, rcode), rcode);
}

/* The zone's SOA: its file's, or one made up. In a negative answer its
 * TTL is the lesser of its own and its minimum (RFC 2308 3). */
static void add_soa(dns_server *srv, dns_msg *m, const dns_zone *z, int sec,
                    uint32_t ttl, bool negative) {
  const dns_rr *soa = z->soa;
  if (soa == NULL) {
    dns_msg_add_soa(m, sec, z->apex, z->apex_len, z->ns, z->ns_len, z->mbox,
                    z->mbox_len, srv->serial, ttl, srv->set.negative_ttl);
    return;
  }
  ttl = soa->ttl;
  if (negative && soa->rdlen >= 4) {
    const uint8_t *mn = soa->rdata + soa->rdlen - 4;
    uint32_t minimum = (uint32_t)mn[0] << 24 | (uint32_t)mn[1] << 16 |
                       (uint32_t)mn[2] << 8 | mn[3];
    ttl = minimum < ttl ? minimum : ttl;
  }
  dns_msg_add_rr(m, sec, z->apex, z->apex_len, DNS_TYPE_SOA, ttl, soa->rdata,
                 soa->rdlen);
}

/* (name)'s static records of (type) into (sec); how many. */
static unsigned add_static(dns_msg *m, int sec, const dns_name *name,
                           uint16_t type) {
  unsigned n = 0;
  for (const dns_rr *rr = name->rrs; rr; rr = rr->next)
    if (rr->type == type) {
      dns_msg_add_rr(m, sec, name->wire, name->wire_len, type, rr->ttl,
                     rr->rdata, rr->rdlen);
      n++;
    }
  return n;
}

/* The static answer for (q) at (name): its records of the type (ANY: its
 * first RRset, RFC 8482), or its CNAME and, while the chain stays in our
 * zone files, what the target has (eight links at most). */
static void answer_static(dns_server *srv, dns_msg *m, const dns_query *q,
                          const dns_name *name) {
  uint16_t t = q->qtype == DNS_TYPE_ANY ? name->rrs->type : q->qtype;
  const dns_name *seen[8];
  for (int hops = 0; name != NULL && hops < 8; hops++) {
    for (int i = 0; i < hops; i++)
      if (seen[i] == name)
        return; /* a loop: each link once */
    seen[hops] = name;
    if (add_static(m, DNS_ANSWER, name, t) > 0 || t == DNS_TYPE_CNAME)
      return;
    const dns_rr *cn = name->rrs;
    if (cn == NULL || cn->type != DNS_TYPE_CNAME)
      return;
    add_static(m, DNS_ANSWER, name, DNS_TYPE_CNAME);
    char key[DNS_KEY_MAX];
    dns_name *next;
    dns_zone *zone;
    if (dns_name_key(cn->rdata, cn->rdlen, key, sizeof(key)) < 0 ||
        dns_zones_lookup(&srv->zones, key, &next, &zone) <= 0 ||
        dns_zones_cut(&srv->zones, zone, key) != NULL || next->rrs == NULL)
      return; /* the resolver follows it from here */
    name = next;
  }
}

/* A referral to the delegation (cut): its NS records, not authoritative,
 * with the addresses we have of the servers named under it (glue). */
static void answer_referral(dns_server *srv, origin *to, const dns_query *q,
                            const dns_name *cut) {
  uint8_t buf[DNS_TCP_MAX];
  dns_msg m;
  dns_msg_begin(&m, buf, sizeof(buf), limit_for(to, q), q, DNS_NOERROR, false,
                may_recurse(srv, to));
  add_static(&m, DNS_AUTHORITY, cut, DNS_TYPE_NS);
  for (const dns_rr *rr = cut->rrs; rr; rr = rr->next) {
    char key[DNS_KEY_MAX];
    dns_name *ns;
    dns_zone *zone;
    if (rr->type != DNS_TYPE_NS ||
        dns_name_key(rr->rdata, rr->rdlen, key, sizeof(key)) < 0 ||
        dns_zones_lookup(&srv->zones, key, &ns, &zone) <= 0)
      continue;
    add_static(&m, DNS_ADDITIONAL, ns, DNS_TYPE_A);
    add_static(&m, DNS_ADDITIONAL, ns, DNS_TYPE_AAAA);
  }
  srv->st.referrals++;
  send_answer(srv, to, buf, dns_msg_finish(&m, DNS_NOERROR), DNS_NOERROR);
}

/* The authoritative answer for (q) about (name) in (zone); (ttl_cap) caps
 * the TTL of address records (a short answer at a hold's limit). */
static void answer_name(dns_server *srv, origin *to, const dns_query *q,
                        dns_name *name, dns_zone *zone, uint32_t ttl_cap) {
  uint8_t buf[DNS_TCP_MAX];
  dns_msg m;
  dns_msg_begin(&m, buf, sizeof(buf), limit_for(to, q), q, DNS_NOERROR, true,
                may_recurse(srv, to));
  dns_vm *dv = name ? name->dv : NULL;
  uint16_t t = q->qtype;
  if (dv != NULL &&
      (t == DNS_TYPE_A || t == DNS_TYPE_AAAA || t == DNS_TYPE_ANY)) {
    uint32_t ttl = dv->ttl < ttl_cap ? dv->ttl : ttl_cap;
    /* ANY is answered minimally (RFC 8482): one RRset. */
    if (t == DNS_TYPE_A || (t == DNS_TYPE_ANY && dv->n_a > 0))
      for (unsigned i = 0; i < dv->n_a; i++)
        dns_msg_add_addr(&m, DNS_ANSWER, DNS_TYPE_A, dv->a[i], ttl);
    else
      for (unsigned i = 0; i < dv->n_aaaa; i++)
        dns_msg_add_addr(&m, DNS_ANSWER, DNS_TYPE_AAAA, dv->aaaa[i], ttl);
  } else if (name != NULL && name->rrs != NULL) {
    answer_static(srv, &m, q, name);
  }
  if (m.counts[DNS_ANSWER] == 0 && zone != NULL && name != NULL &&
      name->zone == zone && strcmp(name->key, zone->key) == 0) {
    /* The apex: what the file does not give is made up. */
    if ((t == DNS_TYPE_SOA || t == DNS_TYPE_ANY) && zone->soa == NULL)
      add_soa(srv, &m, zone, DNS_ANSWER, srv->set.ttl, false);
    else if (t == DNS_TYPE_NS && !zone->has_ns)
      dns_msg_add_ns(&m, DNS_ANSWER, zone->apex, zone->apex_len, zone->ns,
                     zone->ns_len, srv->set.ttl);
  }
  if (m.counts[DNS_ANSWER] == 0 && !m.overflow && zone != NULL)
    add_soa(srv, &m, zone, DNS_AUTHORITY, srv->set.negative_ttl,
            true); /* NODATA */
  send_answer(srv, to, buf, dns_msg_finish(&m, DNS_NOERROR), DNS_NOERROR);
}

/* Answer (p) now from the current names (a reload may have moved them). */
static void answer_pending(pending *p, uint32_t ttl_cap, bool cold) {
  dns_server *srv = p->srv;
  dns_name *name;
  dns_zone *zone;
  int r = dns_zones_lookup(&srv->zones, p->q.key, &name, &zone);
  if (r > 0 && name->dv != NULL && name->dv->vm == p->vm)
    answer_name(srv, &p->to, &p->q, name, zone, ttl_cap);
  else
    answer_rcode(srv, &p->to, &p->q, DNS_SERVFAIL, false);
  if (cold)
    ring_add(&srv->st.cold, uv_hrtime() - p->begin_ns);
  p->answered = true;
}

static void pending_timer_closed(uv_handle_t *h) {
  free(h);
}

static void pending_free(pending *p) {
  list_del(&p->link);
  p->srv->n_pending--;
  if (p->timer != NULL)
    uv_close((uv_handle_t *)p->timer, pending_timer_closed);
  if (p->to.conn != NULL)
    conn_unref(p->to.conn);
  free(p);
}

static void delay_done(uv_timer_t *t) {
  pending *p = t->data;
  if (!p->answered)
    answer_pending(p, UINT32_MAX, true);
  if (!p->held)
    pending_free(p);
}

/* The summon of (vm) finished. */
static void summoned(jitsu_vm *vm, int status, void *arg) {
  pending *p = arg;
  p->held = false;
  dns_server *srv = p->srv;
  if (!p->answered) {
    dns_vm *dv = dns_zones_vm(&srv->zones, vm);
    if (status == 0 && dv != NULL && dv->delay_ms > 0 && p->timer != NULL) {
      /* Mask the guest's own warm-up, as the original's --delay did. */
      uv_timer_start(p->timer, delay_done, dv->delay_ms, 0);
      return;
    }
    if (status == 0)
      answer_pending(p, UINT32_MAX, true);
    else {
      answer_rcode(srv, &p->to, &p->q, DNS_SERVFAIL, false);
      p->answered = true;
    }
  }
  pending_free(p);
}

static void hold_expired(uv_timer_t *t) {
  pending *p = t->data;
  if (p->answered)
    return;
  dns_server *srv = p->srv;
  srv->st.hold_expired++;
  dns_vm *dv = dns_zones_vm(&srv->zones, p->vm);
  if (dv == NULL || dv->hold_servfail) {
    answer_rcode(srv, &p->to, &p->q, DNS_SERVFAIL, false);
    p->answered = true;
  } else {
    answer_pending(p, SHORT_TTL, true);
  }
  if (!p->held)
    pending_free(p);
}

/* A query for a vm's name: answer at once if it is ready, else summon it
 * and hold the answer (or not, per the vm's policy). */
static void query_vm(dns_server *srv, origin *to, const dns_query *q,
                     dns_name *name, dns_zone *zone) {
  dns_vm *dv = name->dv;
  jitsu_vm *vm = dv->vm;
  uint64_t begin = uv_hrtime();
  dv->last_query_ms = uv_now(srv->loop);
  jitsu_vm_touch(vm);
  jitsu_state st = jitsu_vm_state(vm);
  if (st == JITSU_STATE_READY) {
    answer_name(srv, to, q, name, zone, UINT32_MAX);
    ring_add(&srv->st.warm, uv_hrtime() - begin);
    return;
  }
  /* A query that starts or resumes the guest costs its client a token;
   * one that joins a start under way costs nothing. */
  bool wakes = st == JITSU_STATE_STOPPED || st == JITSU_STATE_FAILED ||
               st == JITSU_STATE_SUSPENDED || st == JITSU_STATE_SUSPENDING;
  if (wakes && !summon_allowed(srv, to)) {
    srv->st.not_allowed++;
    answer_rcode(srv, to, q, DNS_REFUSED, false);
    return;
  }
  if (wakes && !rate_ok(srv, to)) {
    srv->st.rate_limited++;
    answer_rcode(srv, to, q, DNS_REFUSED, false);
    return;
  }
  if (wakes)
    dv->ours = true; /* a query woke it: our idle policy may put it away */
  if (dv->hold_ms == 0 || srv->n_pending >= srv->set.max_pending) {
    /* Answer now, and let the guest come up behind the answer: one
     * summon for all such answers, so that they do not count against
     * max-waiters. */
    if (!dv->coming) {
      int r = jitsu_vm_summon(vm, NULL, NULL);
      if (r < 0) {
        answer_rcode(srv, to, q, DNS_SERVFAIL, false);
        return;
      }
      dv->coming = true;
      srv->st.summons++;
    }
    answer_name(srv, to, q, name, zone, dv->hold_ms ? SHORT_TTL : UINT32_MAX);
    return;
  }
  pending *p = calloc(1, sizeof(*p));
  if (p == NULL) {
    answer_rcode(srv, to, q, DNS_SERVFAIL, false);
    return;
  }
  p->srv = srv;
  p->to = *to;
  p->q = *q;
  p->vm = vm;
  p->begin_ns = begin;
  int r = jitsu_vm_summon(vm, summoned, p);
  if (r < 0) {
    free(p);
    answer_rcode(srv, to, q, DNS_SERVFAIL, false);
    return;
  }
  srv->st.summons++;
  srv->st.held++;
  p->held = true;
  if (to->conn != NULL)
    to->conn->refs++;
  list_add(&srv->pending, &p->link);
  srv->n_pending++;
  p->timer = malloc(sizeof(*p->timer));
  if (p->timer != NULL) {
    uv_timer_init(srv->loop, p->timer);
    p->timer->data = p;
    uv_timer_start(p->timer, hold_expired, dv->hold_ms, 0);
  }
}

typedef struct fwd_arg {
  dns_server *srv;
  origin to;
  size_t limit;
  dns_query q; /* to answer SERVFAIL with its question */
} fwd_arg;

static void forwarded(void *arg, const uint8_t *answer, size_t len) {
  fwd_arg *a = arg;
  dns_server *srv = a->srv;
  uint8_t buf[DNS_TCP_MAX];
  size_t n = 0;
  if (answer != NULL && len <= sizeof(buf)) {
    memcpy(buf, answer, len);
    n = dns_fit_response(buf, len, a->q.id, a->limit);
  }
  if (srv->fwd == NULL) {
    /* Shutting down: no answer. */
  } else if (n > 0) {
    send_answer(srv, &a->to, buf, n, buf[3] & 0xF);
  } else {
    /* Upstream failed or sent nonsense: SERVFAIL, promptly. */
    answer_rcode(srv, &a->to, &a->q, DNS_SERVFAIL, false);
  }
  if (a->to.conn != NULL)
    conn_unref(a->to.conn);
  free(a);
}

static void handle_query(dns_server *srv, origin *to, const uint8_t *pkt,
                         size_t len) {
  dns_query q;
  int r = dns_parse_query(pkt, len, &q);
  if (to->tcp)
    srv->st.queries_tcp++;
  else
    srv->st.queries_udp++;
  if (r < 0) {
    srv->st.dropped++;
    return;
  }
  if (r > 0) {
    answer_rcode(srv, to, &q, r, false);
    return;
  }
  if (q.tsig) {
    /* No key is known here (RFC 8945 5.2.2): NOTAUTH with BADKEY in an
     * unsigned TSIG record; nothing is summoned or forwarded. */
    uint8_t buf[DNS_UDP_MAX];
    dns_msg m;
    dns_msg_begin(&m, buf, sizeof(buf), limit_for(to, &q), &q, DNS_NOTAUTH,
                  false, false);
    size_t n = dns_msg_finish(&m, DNS_NOTAUTH);
    n = dns_msg_append_tsig_error(buf, n, sizeof(buf), &q, DNS_TSIG_BADKEY);
    send_answer(srv, to, buf, n, DNS_NOTAUTH);
    return;
  }
  if (q.qclass != DNS_CLASS_IN) {
    answer_rcode(srv, to, &q, DNS_REFUSED, false);
    return;
  }
  dns_name *name;
  dns_zone *zone;
  int found = dns_zones_lookup(&srv->zones, q.key, &name, &zone);
  if (found < 0) {
    if (!may_recurse(srv, to)) {
      answer_rcode(srv, to, &q, DNS_REFUSED, false);
      return;
    }
    fwd_arg *a = malloc(sizeof(*a));
    if (a == NULL) {
      answer_rcode(srv, to, &q, DNS_SERVFAIL, false);
      return;
    }
    a->srv = srv;
    a->to = *to;
    a->q = q;
    a->limit = limit_for(to, &q);
    if (to->conn != NULL)
      to->conn->refs++;
    srv->st.forwarded++;
    dns_forward(srv->fwd, pkt, len, forwarded, a);
    return;
  }
  dns_name *cut = dns_zones_cut(&srv->zones, zone, q.key);
  if (cut != NULL && !(q.qtype == DNS_TYPE_DS && cut == name)) {
    answer_referral(srv, to, &q, cut); /* (DS is the parent's to answer) */
    return;
  }
  if (found == 0) {
    uint8_t buf[DNS_UDP_MAX];
    dns_msg m;
    dns_msg_begin(&m, buf, sizeof(buf), limit_for(to, &q), &q, DNS_NXDOMAIN,
                  true, may_recurse(srv, to));
    add_soa(srv, &m, zone, DNS_AUTHORITY, srv->set.negative_ttl, true);
    send_answer(srv, to, buf, dns_msg_finish(&m, DNS_NXDOMAIN), DNS_NXDOMAIN);
    return;
  }
  if (name->dv != NULL && (q.qtype == DNS_TYPE_A || q.qtype == DNS_TYPE_AAAA ||
                           q.qtype == DNS_TYPE_ANY))
    query_vm(srv, to, &q, name, zone);
  else
    answer_name(srv, to, &q, name, zone, UINT32_MAX);
}

/* --- UDP --- */

/* One buffer per server for libuv's recvmmsg: the loop handles one
 * socket's batch at a time, and a batch ends (UV_UDP_MMSG_FREE, or a read
 * of nothing) before the next read begins. */
static void udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  dns_server *srv = h->data;
  (void)suggested;
  *buf = uv_buf_init((char *)srv->udp_in, UDP_SLOT * UDP_SLOTS);
}

static void udp_read(uv_udp_t *h, ssize_t n, const uv_buf_t *buf,
                     const struct sockaddr *addr, unsigned flags) {
  dns_server *srv = h->data;
  (void)buf;
  if (addr == NULL) { /* the end of a batch, or nothing to read */
    if (srv->out->udp == h)
      udp_flush(srv);
    srv->out->udp = NULL;
    return;
  }
  if (n <= 0 || (flags & UV_UDP_PARTIAL))
    return;
  if (flags & UV_UDP_MMSG_CHUNK)
    srv->out->udp = h;
  origin to = {.tcp = false, .udp = h};
  memcpy(&to.peer, addr,
         addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                    : sizeof(struct sockaddr_in6));
  handle_query(srv, &to, (const uint8_t *)buf->base, (size_t)n);
}

/* --- TCP --- */

static void conn_handle_closed(uv_handle_t *h) {
  conn_unref(h->data);
}

static void conn_process(tcp_conn *c);
static bool conn_full(tcp_conn *c);

static void conn_unref(tcp_conn *c) {
  if (--c->refs == 0) {
    c->srv->n_conns--;
    free(c);
    return;
  }
  if (c->paused && !c->closing && !conn_full(c))
    conn_process(c); /* something drained: room again */
}

static void conn_close(tcp_conn *c) {
  if (c->closing)
    return;
  c->closing = true;
  uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void conn_idle(uv_timer_t *t) {
  conn_close(t->data);
}

static void tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  tcp_conn *c = h->data;
  (void)suggested;
  *buf =
      uv_buf_init((char *)c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

/* Whether (c) owes too much to take another query (its references beyond
 * its two handles and conn_process()'s own). */
static bool conn_full(tcp_conn *c) {
  return c->refs - 2 - c->in_process >= TCP_MAX_QUERIES_INFLIGHT ||
         uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) >=
             TCP_MAX_UNSENT;
}

/* Answer the complete queries in (c)'s buffer while there is room; read
 * more only when all of them were taken. */
static void conn_process(tcp_conn *c) {
  if (c->in_process)
    return;
  c->in_process = true;
  c->refs++; /* (c) stays while its queries are handled */
  size_t at = 0;
  bool full = false;
  while (c->len - at >= 2 && !c->closing) {
    if (conn_full(c)) {
      full = true;
      break;
    }
    size_t mlen = (size_t)(c->buf[at] << 8 | c->buf[at + 1]);
    if (mlen < DNS_HEADER_LEN) { /* nonsense framing: hang up */
      conn_close(c);
      break;
    }
    if (c->len - at - 2 < mlen)
      break;
    origin to = {.tcp = true, .conn = c};
    int len = sizeof(to.peer);
    uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&to.peer, &len);
    handle_query(c->srv, &to, c->buf + at + 2, mlen);
    at += 2 + mlen;
  }
  if (!c->closing) {
    if (at > 0)
      memmove(c->buf, c->buf + at, c->len - at);
    c->len -= at;
    if (full && !c->paused)
      uv_read_stop((uv_stream_t *)&c->tcp);
    else if (!full && c->paused)
      uv_read_start((uv_stream_t *)&c->tcp, tcp_alloc, tcp_read);
    c->paused = full;
    if (!full || at > 0) /* progress: the idle clock starts again */
      uv_timer_start(&c->timer, conn_idle, TCP_IDLE_MS, 0);
  }
  c->in_process = false;
  conn_unref(c);
}

static void tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  tcp_conn *c = s->data;
  (void)buf;
  if (n < 0) {
    conn_close(c);
    return;
  }
  c->len += (size_t)n;
  conn_process(c);
}

static void tcp_accept(uv_stream_t *server, int status) {
  dns_server *srv = server->data;
  if (status < 0)
    return;
  tcp_conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return;
  c->srv = srv;
  c->refs = 2;
  srv->n_conns++;
  uv_tcp_init(srv->loop, &c->tcp);
  uv_timer_init(srv->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 ||
      srv->n_conns > srv->set.max_tcp) {
    conn_close(c);
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, tcp_alloc, tcp_read);
  uv_timer_start(&c->timer, conn_idle, TCP_IDLE_MS, 0);
}

/* --- idle, events, stats --- */

static void idle_tick(uv_timer_t *t) {
  dns_server *srv = t->data;
  uint64_t now = uv_now(srv->loop);
  for (dns_vm *dv = srv->zones.vms; dv; dv = dv->next) {
    if (!dv->ours || dv->idle_ms == 0 || dv->idle_action == JITSU_IDLE_NONE ||
        jitsu_vm_state(dv->vm) != JITSU_STATE_READY ||
        now - dv->last_query_ms < dv->idle_ms)
      continue;
    jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
    jitsu_vm_info_get(dv->vm, &info);
    if (info.holds > 0)
      continue;
    int r = dv->idle_action == JITSU_IDLE_SUSPEND
                ? jitsu_vm_suspend(dv->vm, NULL, NULL)
                : jitsu_vm_stop(dv->vm,
                                dv->idle_action == JITSU_IDLE_SHUTDOWN
                                    ? JITSU_STOP_SHUTDOWN
                                    : JITSU_STOP_DESTROY,
                                NULL, NULL);
    (void)r;
  }
}

static void on_state(jitsu_vm *vm, jitsu_state old, jitsu_state new_state,
                     const char *reason, void *arg) {
  dns_server *srv = arg;
  (void)old, (void)reason;
  dns_vm *dv = dns_zones_vm(&srv->zones, vm);
  if (dv == NULL)
    return;
  if (new_state == JITSU_STATE_READY || new_state == JITSU_STATE_STOPPED ||
      new_state == JITSU_STATE_FAILED || new_state == JITSU_STATE_SUSPENDED)
    dv->coming = false; /* the summon it waited for is over */
  if (new_state == JITSU_STATE_STOPPED || new_state == JITSU_STATE_FAILED)
    dv->ours = false; /* whoever starts it next decides */
}

static void rebuild_fired(uv_timer_t *t) {
  dns_server_rebuild(t->data);
}

static void rebuild(dns_server *srv, jitsu_vm *skip) {
  dns_zones fresh;
  char why[1024] = "";
  int r = dns_zones_build(&fresh, srv->ctx, &srv->set, skip, why, sizeof(why));
  if (r < 0) {
    fprintf(stderr, "jitsu-dns: names not rebuilt, the old ones stay: %s\n",
            why[0] ? why : strerror(-r));
    dns_zones_free(&fresh);
    return;
  }
  /* Carry over what we know of each guest. */
  for (dns_vm *dv = fresh.vms; dv; dv = dv->next) {
    dns_vm *old = dns_zones_vm(&srv->zones, dv->vm);
    if (old != NULL) {
      dv->ours = old->ours;
      dv->coming = old->coming;
      dv->last_query_ms = old->last_query_ms;
    }
  }
  dns_zones_free(&srv->zones);
  srv->zones = fresh;
}

/* A reload applied: [dns] zones and their files may have changed even if
 * no vm did. */
static void on_reloaded(jitsu_ctx *ctx, void *arg) {
  dns_server *srv = arg;
  (void)ctx;
  uv_timer_start(srv->rebuild_timer, rebuild_fired, 0, 0);
}

static void on_vm(jitsu_vm *vm, jitsu_vm_event ev, void *arg) {
  dns_server *srv = arg;
  if (ev != JITSU_VM_UNDEFINING) {
    /* Names follow the vms; a reload defines many: rebuild once, soon. */
    uv_timer_start(srv->rebuild_timer, rebuild_fired, 0, 0);
    return;
  }
  if (ev == JITSU_VM_UNDEFINING) {
    /* Its summon callbacks will never come: answer and free them. */
    link_t *l = srv->pending.next;
    while (l != &srv->pending) {
      pending *p = CONTAINER(l, pending, link);
      l = l->next;
      if (p->vm != vm)
        continue;
      if (!p->answered)
        answer_rcode(srv, &p->to, &p->q, DNS_SERVFAIL, false);
      pending_free(p);
    }
    /* Its names go now: nothing may reach the vm after this. */
    rebuild(srv, vm);
  }
}

static double ring_pct(const latency_ring *r, double pct) {
  if (r->n == 0)
    return 0;
  uint32_t sorted[RING];
  memcpy(sorted, r->us, r->n * sizeof(uint32_t));
  for (unsigned i = 1; i < r->n; i++) /* small: insertion sort */
    for (unsigned j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
      uint32_t x = sorted[j];
      sorted[j] = sorted[j - 1];
      sorted[j - 1] = x;
    }
  size_t rank = (size_t)(pct * r->n + 0.999999);
  return sorted[rank ? rank - 1 : 0] / 1000.0;
}

static void dns_stats(jitsu_stat_fn emit, void *emit_arg, void *arg) {
  dns_server *srv = arg;
  stats *s = &srv->st;
  static const char *const rcode_names[] = {"noerror",  "formerr", "servfail",
                                            "nxdomain", "notimp",  "refused"};
  emit(emit_arg, "queries_udp_total", s->queries_udp);
  emit(emit_arg, "queries_tcp_total", s->queries_tcp);
  emit(emit_arg, "dropped_total", s->dropped);
  for (int i = 0; i < 6; i++) {
    char name[48];
    snprintf(name, sizeof(name), "answers_%s_total", rcode_names[i]);
    emit(emit_arg, name, s->rcodes[i]);
  }
  emit(emit_arg, "answers_notauth_total", s->rcodes[DNS_NOTAUTH]);
  emit(emit_arg, "answers_badvers_total", s->rcodes[DNS_BADVERS]);
  emit(emit_arg, "summons_total", s->summons);
  emit(emit_arg, "held_total", s->held);
  emit(emit_arg, "hold_expired_total", s->hold_expired);
  emit(emit_arg, "forwarded_total", s->forwarded);
  emit(emit_arg, "rate_limited_total", s->rate_limited);
  emit(emit_arg, "summons_not_allowed_total", s->not_allowed);
  emit(emit_arg, "truncated_total", s->truncated);
  emit(emit_arg, "referrals_total", s->referrals);
  emit(emit_arg, "pending", srv->n_pending);
  emit(emit_arg, "tcp_connections", srv->n_conns);
  emit(emit_arg, "cold_answers_total", (double)s->cold.count);
  emit(emit_arg, "cold_answer_p50_ms", ring_pct(&s->cold, 0.5));
  emit(emit_arg, "cold_answer_p99_ms", ring_pct(&s->cold, 0.99));
  emit(emit_arg, "warm_answers_total", (double)s->warm.count);
  emit(emit_arg, "warm_answer_p50_ms", ring_pct(&s->warm, 0.5));
  emit(emit_arg, "warm_answer_p99_ms", ring_pct(&s->warm, 0.99));
}

static const jitsu_stat_help dns_stats_help[] = {
    {"queries_udp_total", "Queries received over UDP."},
    {"queries_tcp_total", "Queries received over TCP."},
    {"dropped_total", "Packets dropped unanswered (malformed or limits)."},
    {"answers_*", "Answers sent with this response code."},
    {"summons_total", "Summons caused by queries."},
    {"held_total", "Queries held until their guest was ready."},
    {"hold_expired_total", "Held queries whose guest was not ready in time."},
    {"forwarded_total", "Queries forwarded upstream."},
    {"rate_limited_total", "Summons refused by the rate limit."},
    {"summons_not_allowed_total", "Summons refused: not in summon-allow."},
    {"truncated_total", "UDP answers truncated (TC)."},
    {"referrals_total", "Referrals to a delegation of a zone file."},
    {"pending", "Queries held or forwarded now."},
    {"tcp_connections", "TCP connections open now."},
    {"cold_answers_total", "Answers that waited for a cold start."},
    {"cold_answer_p50_ms", "Median time to a cold answer (recent ones)."},
    {"cold_answer_p99_ms", "99th percentile time to a cold answer."},
    {"warm_answers_total", "Answers about a ready guest."},
    {"warm_answer_p50_ms", "Median time to a warm answer (recent ones)."},
    {"warm_answer_p99_ms", "99th percentile time to a warm answer."},
};

/* --- set-up ----------------------------------------------------------------
 */

void dns_server_rebuild(dns_server *srv) {
  rebuild(srv, NULL);
}

/* Give (u) the receive buffer asked for: a burst of queries for cold
 * names waits there while the loop works (the kernel's default holds
 * about 250 of them). The kernel caps SO_RCVBUF at net.core.rmem_max;
 * with CAP_NET_ADMIN, SO_RCVBUFFORCE passes the cap. Says so when it got
 * less. */
static void udp_buffer(dns_server *srv, uv_udp_t *u, const char *spec) {
  uv_os_fd_t fd;
  if (srv->udp_buffer == 0 || uv_fileno((uv_handle_t *)u, &fd) < 0)
    return;
  int want = srv->udp_buffer > INT_MAX / 2 ? INT_MAX / 2 : (int)srv->udp_buffer;
  int got = 0;
  socklen_t len = sizeof(got);
  /* The kernel doubles what it is given (for its own bookkeeping) and
   * reports the doubled value. */
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want)) < 0 ||
      getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len) < 0 || got < want)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof(want));
  len = sizeof(got);
  if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len) == 0 && got < want)
    fprintf(stderr,
            "jitsu-dns: warning: %s: UDP receive buffer %d bytes, not the "
            "%d asked for (udp-buffer): the kernel caps it at "
            "net.core.rmem_max without CAP_NET_ADMIN\n",
            spec, got / 2, want);
}

static int bind_one(dns_server *srv, const char *spec, char *why,
                    size_t why_size) {
  struct sockaddr_storage ss;
  char host[80];
  snprintf(host, sizeof(host), "%s", spec);
  char *colon = strrchr(host, ':');
  memset(&ss, 0, sizeof(ss));
  int port = colon ? atoi(colon + 1) : 0;
  if (colon == NULL || port <= 0 || port > 65535) {
    snprintf(why, why_size, "listen '%s': expected HOST:PORT", spec);
    return -EINVAL;
  }
  *colon = '\0';
  char *h = host;
  if (h[0] == '[' && colon[-1] == ']') {
    h++;
    colon[-1] = '\0';
  }
  if (uv_ip4_addr(h, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(h, port, (struct sockaddr_in6 *)&ss) != 0) {
    snprintf(why, why_size, "listen '%s': not a numeric address", spec);
    return -EINVAL;
  }
  uv_udp_t *u = calloc(1, sizeof(*u));
  uv_tcp_t *t = calloc(1, sizeof(*t));
  if (u == NULL || t == NULL) {
    free(u), free(t);
    return -ENOMEM;
  }
  uv_udp_init_ex(srv->loop, u, UV_UDP_RECVMMSG);
  uv_tcp_init(srv->loop, t);
  u->data = t->data = srv;
  srv->udp[srv->n_udp++] = u;
  srv->tcp[srv->n_tcp++] = t;
  unsigned v6only = ss.ss_family == AF_INET6 ? UV_UDP_IPV6ONLY : 0;
  int r = uv_udp_bind(u, (struct sockaddr *)&ss, v6only);
  if (r == 0)
    udp_buffer(srv, u, spec);
  if (r == 0)
    r = uv_udp_recv_start(u, udp_alloc, udp_read);
  if (r == 0)
    r = uv_tcp_bind(t, (struct sockaddr *)&ss,
                    ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
  if (r == 0)
    r = uv_listen((uv_stream_t *)t, 128, tcp_accept);
  if (r < 0) {
    snprintf(why, why_size, "listen '%s': %s", spec, uv_strerror(r));
    return r;
  }
  return 0;
}

int dns_server_new(jitsu_ctx *ctx, const dns_server_config *cfg,
                   dns_server **out, char *why, size_t why_size) {
  dns_server *srv = calloc(1, sizeof(*srv));
  if (srv == NULL)
    return -ENOMEM;
  srv->rebuild_timer = malloc(sizeof(*srv->rebuild_timer));
  srv->udp_in = malloc(UDP_SLOT * UDP_SLOTS);
  srv->out = calloc(1, sizeof(*srv->out));
  if (srv->rebuild_timer == NULL || srv->udp_in == NULL || srv->out == NULL) {
    free(srv->rebuild_timer), free(srv->udp_in), free(srv->out);
    free(srv);
    return -ENOMEM;
  }
  srv->ctx = ctx;
  srv->loop = jitsu_ctx_loop(ctx);
  srv->set = cfg->settings;
  srv->udp_buffer = cfg->udp_buffer;
  srv->serial = (uint32_t)time(NULL);
  list_init(&srv->pending);
  uv_timer_init(srv->loop, &srv->idle);
  srv->idle.data = srv;
  uv_timer_init(srv->loop, srv->rebuild_timer);
  srv->rebuild_timer->data = srv;
  *out = srv;
  size_t n = 0;
  while (cfg->listen && cfg->listen[n])
    n++;
  srv->udp = calloc(n + 1, sizeof(*srv->udp));
  srv->tcp = calloc(n + 1, sizeof(*srv->tcp));
  size_t na = 0;
  while (cfg->allow && cfg->allow[na])
    na++;
  srv->allow = calloc(na + 1, sizeof(*srv->allow));
  if (srv->udp == NULL || srv->tcp == NULL || srv->allow == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < na; i++)
    if (parse_cidr(cfg->allow[i], &srv->allow[srv->n_allow++]) < 0) {
      snprintf(why, why_size, "forward-allow '%s' is not an address or CIDR",
               cfg->allow[i]);
      return -EINVAL;
    }
  size_t ns = 0;
  while (cfg->summon_allow && cfg->summon_allow[ns])
    ns++;
  if (cfg->summon_allow != NULL) {
    srv->summon_allow = calloc(ns + 1, sizeof(*srv->summon_allow));
    if (srv->summon_allow == NULL)
      return -ENOMEM;
  }
  for (size_t i = 0; i < ns; i++)
    if (parse_cidr(cfg->summon_allow[i],
                   &srv->summon_allow[srv->n_summon_allow++]) < 0) {
      snprintf(why, why_size, "summon-allow '%s' is not an address or CIDR",
               cfg->summon_allow[i]);
      jitsu_config_blame(ctx, "dns", "summon-allow", cfg->summon_allow[i], why,
                         why_size);
      return -EINVAL;
    }
  if (getrandom(srv->rate_key, sizeof(srv->rate_key), 0) !=
      (ssize_t)sizeof(srv->rate_key))
    srv->rate_key[0] = uv_hrtime(), srv->rate_key[1] = (uint64_t)getpid();
  int r = dns_zones_build(&srv->zones, ctx, &srv->set, NULL, why, why_size);
  if (r < 0)
    return r;
  if (cfg->forward && (r = dns_forwarder_new(srv->loop, cfg->forwarders,
                                             cfg->forward_timeout_ms, &srv->fwd,
                                             why, why_size)) < 0)
    return r;
  for (size_t i = 0; i < n; i++)
    if ((r = bind_one(srv, cfg->listen[i], why, why_size)) < 0) {
      jitsu_config_blame(ctx, "dns", "listen", cfg->listen[i], why, why_size);
      return r;
    }
  if (jitsu_ctx_on_state(ctx, on_state, srv) < 0 ||
      jitsu_ctx_on_vm(ctx, on_vm, srv) < 0 ||
      jitsu_ctx_on_reloaded(ctx, on_reloaded, srv) < 0)
    return -ENOMEM;
  if (jitsu_control_add_stats(ctx, "dns", dns_stats, srv) == 0)
    jitsu_control_describe_stats(ctx, "dns", dns_stats_help,
                                 sizeof(dns_stats_help) /
                                     sizeof(*dns_stats_help));
  uv_timer_start(&srv->idle, idle_tick, 500, 500);
  return 0;
}

static void free_handle(uv_handle_t *h) {
  free(h);
}

void dns_server_free(dns_server *srv) {
  if (srv == NULL)
    return;
  jitsu_ctx_off_state(srv->ctx, on_state, srv);
  jitsu_ctx_off_vm(srv->ctx, on_vm, srv);
  jitsu_ctx_off_reloaded(srv->ctx, on_reloaded, srv);
  for (size_t i = 0; i < srv->n_udp; i++)
    uv_close((uv_handle_t *)srv->udp[i], free_handle);
  for (size_t i = 0; i < srv->n_tcp; i++)
    uv_close((uv_handle_t *)srv->tcp[i], free_handle);
  /* Held queries: their summons go on; the callbacks still need them. */
  for (link_t *l = srv->pending.next; l != &srv->pending; l = l->next)
    CONTAINER(l, pending, link)->answered = true;
  dns_forwarder *fwd = srv->fwd;
  srv->fwd = NULL; /* its failing callbacks now answer nothing */
  dns_forwarder_free(fwd);
  uv_close((uv_handle_t *)&srv->idle, NULL);
  uv_close((uv_handle_t *)srv->rebuild_timer, free_handle);
  free(srv->udp);
  free(srv->tcp);
  free(srv->allow);
  free(srv->summon_allow);
}

void dns_server_destroy(dns_server *srv) {
  if (srv == NULL)
    return;
  while (srv->pending.next != &srv->pending)
    pending_free(CONTAINER(srv->pending.next, pending, link));
  dns_zones_free(&srv->zones);
  free(srv->udp_in);
  free(srv->out);
  free(srv);
}
