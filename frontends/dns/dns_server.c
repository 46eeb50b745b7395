/* jitsu-dns: the server. UDP and TCP listeners, the answer logic, holding
 * answers while a guest is summoned, forwarding, rate limits, and the idle
 * policy for the guests that queries started. */
#include "dns.h"

#include <arpa/inet.h>
#include <stdatomic.h>
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
/* Queries the workers have handed to the main loop that it has not yet
 * taken; beyond, they are dropped (and counted). */
#define DNS_HANDOFF_MAX 4096

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

/* One loop's share of the server: the main loop's, which owns every vm
 * and does all that changes them, or a worker's (workers = N), which
 * answers over UDP what needs no change: warm vm names, static records,
 * negative answers. */
typedef struct dns_thread {
  dns_server *srv;
  uv_loop_t *loop;
  dns_zones *zones; /* the names this loop answers from now */
  /* A worker's: the names it reads in the batch it is in (NULL between
   * batches); the main loop frees no names a worker holds. */
  _Atomic(dns_zones *) hazard;
  uint8_t *udp_in; /* UDP_SLOTS slots for recvmmsg */
  udp_batch *out;
  stats st;
  bool worker;
} dns_thread;

typedef struct dns_worker dns_worker;

struct dns_server {
  jitsu_ctx *ctx;
  uv_loop_t *loop;
  uint64_t udp_buffer; /* SO_RCVBUF asked for */
  dns_settings set;
  dns_thread main; /* main.zones: the names (the main loop's to change) */
  uv_udp_t **udp;
  uv_tcp_t **tcp;
  size_t n_udp, n_tcp;
  dns_forwarder *fwd;
  cidr *allow;
  size_t n_allow;
  cidr *summon_allow; /* NULL: anyone may summon */
  size_t n_summon_allow;
  uint64_t rate_key[2]; /* the rate limit's hash key, random */
  jitsu_list pending;
  unsigned n_pending, n_conns;
  rate_slot rate[RATE_SLOTS];
  uv_timer_t idle;
  uv_timer_t *rebuild_timer;
  uint32_t serial;
  /* workers = N: N - 1 threads with UDP sockets of their own on the same
   * addresses (SO_REUSEPORT), and what they hand to the main loop. */
  dns_worker **workers;
  unsigned n_workers;             /* threads besides the main loop */
  struct sockaddr_storage *addrs; /* of the listen addresses */
  /* The names the workers take at the start of a batch, and names put
   * out of force that a worker may still hold: the main loop frees each
   * once no worker's hazard is it, and never waits for a worker. */
  _Atomic(dns_zones *) shared;
  dns_zones **retired;
  size_t n_retired;
  uv_timer_t reclaim;
  uv_async_t *handoff_async;
  uv_mutex_t handoff_mu;
  bool handoff_mu_made;
  jitsu_list handoff; /* handoff_msg, oldest first */
  unsigned n_handoff;
  double handed_over; /* main loop only */
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
  jitsu_list link;
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
  free(JITSU_CONTAINER_OF(r, send_req, udp));
}

static void tcp_sent(uv_write_t *w, int status) {
  (void)status;
  send_req *r = JITSU_CONTAINER_OF(w, send_req, tcp);
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

static socklen_t peer_len(const struct sockaddr *sa) {
  return sa->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                  : sizeof(struct sockaddr_in6);
}

/* Sends the batch's answers: one sendmmsg(2) while the socket takes them;
 * an answer it refuses (an unreachable peer) is dropped, as a single send
 * would drop it; when the socket is full, libuv queues the rest. */
static void udp_flush(dns_thread *t) {
  udp_batch *o = t->out;
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
        .msg_namelen = peer_len((const struct sockaddr *)&o->peer[k]),
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

static void send_answer(dns_thread *t, origin *to, const uint8_t *msg,
                        size_t len, int rcode) {
  if ((unsigned)rcode < DNS_RCODE_COUNT)
    t->st.rcodes[rcode]++;
  if (len >= 3 && (msg[2] & 0x02))
    t->st.truncated++;
  if (!to->tcp) {
    udp_batch *o = t->out;
    if (o->udp == to->udp && len <= DNS_UDP_MAX) {
      if (o->n == UDP_BATCH)
        udp_flush(t);
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
static void answer_rcode(dns_thread *t, origin *to, const dns_query *q,
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
                rcode == DNS_SERVFAIL && may_recurse(t->srv, to));
  send_answer(t, to, buf, dns_msg_finish(&m, rcode), rcode);
}

/* The zone's SOA: its file's, or one made up. In a negative answer its
 * TTL is the lesser of its own and its minimum (RFC 2308 3). */
static void add_soa(dns_thread *t, dns_msg *m, const dns_zone *z, int sec,
                    uint32_t ttl, bool negative) {
  const dns_server *srv = t->srv;
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
static void answer_static(dns_thread *th, dns_msg *m, const dns_query *q,
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
        dns_zones_lookup(th->zones, key, &next, &zone) <= 0 ||
        dns_zones_cut(th->zones, zone, key) != NULL || next->rrs == NULL)
      return; /* the resolver follows it from here */
    name = next;
  }
}

/* A referral to the delegation (cut): its NS records, not authoritative,
 * with the addresses we have of the servers named under it (glue). */
static void answer_referral(dns_thread *t, origin *to, const dns_query *q,
                            const dns_name *cut) {
  uint8_t buf[DNS_TCP_MAX];
  dns_msg m;
  dns_msg_begin(&m, buf, sizeof(buf), limit_for(to, q), q, DNS_NOERROR, false,
                may_recurse(t->srv, to));
  add_static(&m, DNS_AUTHORITY, cut, DNS_TYPE_NS);
  for (const dns_rr *rr = cut->rrs; rr; rr = rr->next) {
    char key[DNS_KEY_MAX];
    dns_name *ns;
    dns_zone *zone;
    if (rr->type != DNS_TYPE_NS ||
        dns_name_key(rr->rdata, rr->rdlen, key, sizeof(key)) < 0 ||
        dns_zones_lookup(t->zones, key, &ns, &zone) <= 0)
      continue;
    add_static(&m, DNS_ADDITIONAL, ns, DNS_TYPE_A);
    add_static(&m, DNS_ADDITIONAL, ns, DNS_TYPE_AAAA);
  }
  t->st.referrals++;
  send_answer(t, to, buf, dns_msg_finish(&m, DNS_NOERROR), DNS_NOERROR);
}

/* The authoritative answer for (q) about (name) in (zone); (ttl_cap) caps
 * the TTL of address records (a short answer at a hold's limit). */
static void answer_name(dns_thread *th, origin *to, const dns_query *q,
                        dns_name *name, dns_zone *zone, uint32_t ttl_cap) {
  uint8_t buf[DNS_TCP_MAX];
  dns_msg m;
  dns_msg_begin(&m, buf, sizeof(buf), limit_for(to, q), q, DNS_NOERROR, true,
                may_recurse(th->srv, to));
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
    answer_static(th, &m, q, name);
  }
  if (m.counts[DNS_ANSWER] == 0 && zone != NULL && name != NULL &&
      name->zone == zone && strcmp(name->key, zone->key) == 0) {
    /* The apex: what the file does not give is made up. */
    if ((t == DNS_TYPE_SOA || t == DNS_TYPE_ANY) && zone->soa == NULL)
      add_soa(th, &m, zone, DNS_ANSWER, th->srv->set.ttl, false);
    else if (t == DNS_TYPE_NS && !zone->has_ns)
      dns_msg_add_ns(&m, DNS_ANSWER, zone->apex, zone->apex_len, zone->ns,
                     zone->ns_len, th->srv->set.ttl);
  }
  if (m.counts[DNS_ANSWER] == 0 && !m.overflow && zone != NULL)
    add_soa(th, &m, zone, DNS_AUTHORITY, th->srv->set.negative_ttl,
            true); /* NODATA */
  send_answer(th, to, buf, dns_msg_finish(&m, DNS_NOERROR), DNS_NOERROR);
}

/* Answer (p) now from the current names (a reload may have moved them). */
static void answer_pending(pending *p, uint32_t ttl_cap, bool cold) {
  dns_server *srv = p->srv;
  dns_name *name;
  dns_zone *zone;
  int r = dns_zones_lookup(srv->main.zones, p->q.key, &name, &zone);
  if (r > 0 && name->dv != NULL && name->dv->vm == p->vm)
    answer_name(&srv->main, &p->to, &p->q, name, zone, ttl_cap);
  else
    answer_rcode(&srv->main, &p->to, &p->q, DNS_SERVFAIL, false);
  if (cold)
    ring_add(&srv->main.st.cold, uv_hrtime() - p->begin_ns);
  p->answered = true;
}

static void pending_timer_closed(uv_handle_t *h) {
  free(h);
}

static void pending_free(pending *p) {
  jitsu_list_remove(&p->link);
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
    dns_vm *dv = dns_zones_vm(srv->main.zones, vm);
    if (status == 0 && dv != NULL && dv->delay_ms > 0 && p->timer != NULL) {
      /* Mask the guest's own warm-up, as the original's --delay did. */
      uv_timer_start(p->timer, delay_done, dv->delay_ms, 0);
      return;
    }
    if (status == 0)
      answer_pending(p, UINT32_MAX, true);
    else {
      answer_rcode(&srv->main, &p->to, &p->q, DNS_SERVFAIL, false);
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
  srv->main.st.hold_expired++;
  dns_vm *dv = dns_zones_vm(srv->main.zones, p->vm);
  if (dv == NULL || dv->hold_servfail) {
    answer_rcode(&srv->main, &p->to, &p->q, DNS_SERVFAIL, false);
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
    answer_name(&srv->main, to, q, name, zone, UINT32_MAX);
    ring_add(&srv->main.st.warm, uv_hrtime() - begin);
    return;
  }
  /* A query that starts or resumes the guest costs its client a token;
   * one that joins a start under way costs nothing. */
  bool wakes = st == JITSU_STATE_STOPPED || st == JITSU_STATE_FAILED ||
               st == JITSU_STATE_SUSPENDED || st == JITSU_STATE_SUSPENDING;
  if (wakes && !summon_allowed(srv, to)) {
    srv->main.st.not_allowed++;
    answer_rcode(&srv->main, to, q, DNS_REFUSED, false);
    return;
  }
  if (wakes && !rate_ok(srv, to)) {
    srv->main.st.rate_limited++;
    answer_rcode(&srv->main, to, q, DNS_REFUSED, false);
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
        answer_rcode(&srv->main, to, q, DNS_SERVFAIL, false);
        return;
      }
      dv->coming = true;
      srv->main.st.summons++;
    }
    answer_name(&srv->main, to, q, name, zone,
                dv->hold_ms ? SHORT_TTL : UINT32_MAX);
    return;
  }
  pending *p = calloc(1, sizeof(*p));
  if (p == NULL) {
    answer_rcode(&srv->main, to, q, DNS_SERVFAIL, false);
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
    answer_rcode(&srv->main, to, q, DNS_SERVFAIL, false);
    return;
  }
  srv->main.st.summons++;
  srv->main.st.held++;
  p->held = true;
  if (to->conn != NULL)
    to->conn->refs++;
  jitsu_list_append(&srv->pending, &p->link);
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
    send_answer(&srv->main, &a->to, buf, n, buf[3] & 0xF);
  } else {
    /* Upstream failed or sent nonsense: SERVFAIL, promptly. */
    answer_rcode(&srv->main, &a->to, &a->q, DNS_SERVFAIL, false);
  }
  if (a->to.conn != NULL)
    conn_unref(a->to.conn);
  free(a);
}

static bool addr_query(const dns_query *q) {
  return q->qtype == DNS_TYPE_A || q->qtype == DNS_TYPE_AAAA ||
         q->qtype == DNS_TYPE_ANY;
}

/* Whether only the main loop may answer (q): a forward, or a vm's name
 * whose guest is not ready (summons and held answers are the main loop's).
 * A worker hands such a query over. */
static bool main_only(dns_thread *t, const origin *to, const dns_query *q,
                      int found, const dns_name *name) {
  if (found < 0)
    return may_recurse(t->srv, to);
  return found > 0 && name->dv != NULL && addr_query(q) &&
         !atomic_load_explicit(&name->dv->ready, memory_order_acquire);
}

/* A worker's answer about a ready guest; the main loop's idle tick passes
 * the query's time on to the vm (jitsu_vm_touch). */
static void worker_warm(dns_thread *t, origin *to, const dns_query *q,
                        dns_name *name, dns_zone *zone) {
  uint64_t begin = uv_hrtime();
  atomic_store_explicit(&name->dv->worker_query_ms, uv_now(t->loop),
                        memory_order_relaxed);
  answer_name(t, to, q, name, zone, UINT32_MAX);
  ring_add(&t->st.warm, uv_hrtime() - begin);
}

/* Answer (pkt) on loop (t). False, with nothing done, when a worker must
 * hand it to the main loop (main_only). */
static bool handle_query(dns_thread *t, origin *to, const uint8_t *pkt,
                         size_t len) {
  dns_server *srv = t->srv;
  dns_query q;
  dns_name *name = NULL;
  dns_zone *zone = NULL;
  int found = -1;
  int r = dns_parse_query(pkt, len, &q);
  if (r == 0 && !q.tsig && q.qclass == DNS_CLASS_IN) {
    found = dns_zones_lookup(t->zones, q.key, &name, &zone);
    if (t->worker && main_only(t, to, &q, found, name))
      return false;
  }
  if (to->tcp)
    t->st.queries_tcp++;
  else
    t->st.queries_udp++;
  if (r < 0) {
    t->st.dropped++;
    return true;
  }
  if (r > 0) {
    answer_rcode(t, to, &q, r, false);
    return true;
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
    send_answer(t, to, buf, n, DNS_NOTAUTH);
    return true;
  }
  if (q.qclass != DNS_CLASS_IN) {
    answer_rcode(t, to, &q, DNS_REFUSED, false);
    return true;
  }
  if (found < 0) {
    if (!may_recurse(srv, to)) {
      answer_rcode(t, to, &q, DNS_REFUSED, false);
      return true;
    }
    fwd_arg *a = malloc(sizeof(*a));
    if (a == NULL) {
      answer_rcode(t, to, &q, DNS_SERVFAIL, false);
      return true;
    }
    a->srv = srv;
    a->to = *to;
    a->q = q;
    a->limit = limit_for(to, &q);
    if (to->conn != NULL)
      to->conn->refs++;
    t->st.forwarded++;
    dns_forward(srv->fwd, pkt, len, forwarded, a);
    return true;
  }
  dns_name *cut = dns_zones_cut(t->zones, zone, q.key);
  if (cut != NULL && !(q.qtype == DNS_TYPE_DS && cut == name)) {
    answer_referral(t, to, &q, cut); /* (DS is the parent's to answer) */
    return true;
  }
  if (found == 0) {
    uint8_t buf[DNS_UDP_MAX];
    dns_msg m;
    dns_msg_begin(&m, buf, sizeof(buf), limit_for(to, &q), &q, DNS_NXDOMAIN,
                  true, may_recurse(srv, to));
    add_soa(t, &m, zone, DNS_AUTHORITY, srv->set.negative_ttl, true);
    send_answer(t, to, buf, dns_msg_finish(&m, DNS_NXDOMAIN), DNS_NXDOMAIN);
    return true;
  }
  if (name->dv != NULL && addr_query(&q)) {
    if (t->worker)
      worker_warm(t, to, &q, name, zone);
    else
      query_vm(srv, to, &q, name, zone);
  } else {
    answer_name(t, to, &q, name, zone, UINT32_MAX);
  }
  return true;
}

/* --- UDP --- */

/* A query a worker hands to the main loop. */
typedef struct handoff_msg {
  jitsu_list link;
  size_t sock; /* the listen address it came to */
  struct sockaddr_storage peer;
  size_t len;
  uint8_t pkt[];
} handoff_msg;

struct dns_worker {
  dns_thread t;
  uv_loop_t loop;
  uv_thread_t thread;
  bool started;
  uv_async_t stop;
  uv_timer_t publish; /* copies t.st to pub for the stats */
  uv_udp_t **udp;     /* one per listen address, as srv->udp */
  size_t n_udp;
  uv_mutex_t mu; /* guards pub */
  stats pub;
};

static void handoff_push(dns_thread *t, uv_udp_t *h, const uint8_t *pkt,
                         size_t len, const struct sockaddr_storage *peer) {
  dns_server *srv = t->srv;
  dns_worker *w = JITSU_CONTAINER_OF(t, dns_worker, t);
  size_t sock = 0;
  while (sock + 1 < w->n_udp && w->udp[sock] != h)
    sock++;
  handoff_msg *m = malloc(sizeof(*m) + len);
  if (m == NULL) {
    t->st.dropped++;
    return;
  }
  m->sock = sock;
  m->peer = *peer;
  m->len = len;
  memcpy(m->pkt, pkt, len);
  uv_mutex_lock(&srv->handoff_mu);
  bool full = srv->n_handoff >= DNS_HANDOFF_MAX;
  if (!full) {
    jitsu_list_append(&srv->handoff, &m->link);
    srv->n_handoff++;
  }
  uv_mutex_unlock(&srv->handoff_mu);
  if (full) {
    free(m);
    t->st.dropped++;
    return;
  }
  uv_async_send(srv->handoff_async);
}

/* The main loop answers what the workers handed over, from its own socket
 * on the same address. */
static void handoff_run(uv_async_t *a) {
  dns_server *srv = a->data;
  jitsu_list got;
  jitsu_list_init(&got);
  uv_mutex_lock(&srv->handoff_mu);
  if (srv->handoff.next != &srv->handoff) {
    got.next = srv->handoff.next;
    got.prev = srv->handoff.prev;
    got.next->prev = got.prev->next = &got;
    jitsu_list_init(&srv->handoff);
  }
  srv->n_handoff = 0;
  uv_mutex_unlock(&srv->handoff_mu);
  while (got.next != &got) {
    handoff_msg *m = JITSU_CONTAINER_OF(got.next, handoff_msg, link);
    jitsu_list_remove(&m->link);
    origin to = {.tcp = false, .udp = srv->udp[m->sock], .peer = m->peer};
    srv->handed_over++;
    handle_query(&srv->main, &to, m->pkt, m->len);
    free(m);
  }
}

/* One buffer per loop for libuv's recvmmsg: a loop handles one socket's
 * batch at a time, and a batch ends (UV_UDP_MMSG_FREE, or a read of
 * nothing) before the next read begins. */
static void udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  dns_thread *t = h->data;
  (void)suggested;
  *buf = uv_buf_init((char *)t->udp_in, UDP_SLOT * UDP_SLOTS);
}

/* A worker reads one set of names for a whole batch: it announces them
 * in its hazard, then checks that they are still the ones in force (a
 * hazard pointer: the main loop, which puts new names in force and then
 * reads the hazards, either sees this one or this check sees the new
 * names). Neither side ever waits for the other. */
static void batch_begin(dns_thread *t, uv_udp_t *h) {
  t->out->udp = h;
  if (t->worker) {
    dns_zones *z = atomic_load(&t->srv->shared);
    for (;;) {
      atomic_store(&t->hazard, z);
      dns_zones *now = atomic_load(&t->srv->shared);
      if (now == z)
        break;
      z = now;
    }
    t->zones = z;
  }
}

static void batch_end(dns_thread *t) {
  if (t->worker) {
    t->zones = NULL;
    atomic_store(&t->hazard, NULL);
  }
  udp_flush(t);
  t->out->udp = NULL;
}

static void udp_read(uv_udp_t *h, ssize_t n, const uv_buf_t *buf,
                     const struct sockaddr *addr, unsigned flags) {
  dns_thread *t = h->data;
  if (addr == NULL) { /* the end of a batch, or nothing to read */
    if (t->out->udp == h)
      batch_end(t);
    return;
  }
  if (n <= 0 || (flags & UV_UDP_PARTIAL))
    return;
  if (t->out->udp != h)
    batch_begin(t, h);
  origin to = {.tcp = false, .udp = h};
  memcpy(&to.peer, addr, peer_len(addr));
  if (!handle_query(t, &to, (const uint8_t *)buf->base, (size_t)n))
    handoff_push(t, h, (const uint8_t *)buf->base, (size_t)n, &to.peer);
  if (!(flags & UV_UDP_MMSG_CHUNK)) /* read alone, not in a batch */
    batch_end(t);
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
    handle_query(&c->srv->main, &to, c->buf + at + 2, mlen);
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
  for (dns_vm *dv = srv->main.zones->vms; dv; dv = dv->next) {
    /* Queries that workers answered count as activity here. */
    uint64_t w =
        atomic_load_explicit(&dv->worker_query_ms, memory_order_relaxed);
    if (w > dv->last_query_ms) {
      dv->last_query_ms = w;
      jitsu_vm_touch(dv->vm);
    }
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
  dns_vm *dv = dns_zones_vm(srv->main.zones, vm);
  if (dv == NULL)
    return;
  atomic_store_explicit(&dv->ready, new_state == JITSU_STATE_READY,
                        memory_order_release);
  if (new_state == JITSU_STATE_READY || new_state == JITSU_STATE_STOPPED ||
      new_state == JITSU_STATE_FAILED || new_state == JITSU_STATE_SUSPENDED)
    dv->coming = false; /* the summon it waited for is over */
  if (new_state == JITSU_STATE_STOPPED || new_state == JITSU_STATE_FAILED)
    dv->ours = false; /* whoever starts it next decides */
}

static void rebuild_fired(uv_timer_t *t) {
  dns_server_rebuild(t->data);
}

/* New names for the vms and zones as they are now (skipping (skip)) in
 * (*out), with what is known of each guest (none at start-up); 0, or an
 * error with (why) set. */
static int build_names(dns_server *srv, jitsu_vm *skip, dns_zones **out,
                       char *why, size_t why_size) {
  dns_zones *fresh = malloc(sizeof(*fresh));
  int r = fresh
              ? dns_zones_build(fresh, srv->ctx, &srv->set, skip, why, why_size)
              : -ENOMEM;
  if (r < 0) {
    if (fresh != NULL)
      dns_zones_free(fresh);
    free(fresh);
    return r;
  }
  for (dns_vm *dv = fresh->vms; dv; dv = dv->next) {
    dns_vm *old =
        srv->main.zones ? dns_zones_vm(srv->main.zones, dv->vm) : NULL;
    if (old != NULL) {
      dv->ours = old->ours;
      dv->coming = old->coming;
      dv->last_query_ms = old->last_query_ms;
      atomic_store(&dv->worker_query_ms, atomic_load(&old->worker_query_ms));
    }
    atomic_store(&dv->ready, jitsu_vm_state(dv->vm) == JITSU_STATE_READY);
  }
  *out = fresh;
  return 0;
}

static void zones_drop(dns_zones *z) {
  if (z != NULL)
    dns_zones_free(z);
  free(z);
}

/* Whether a worker is in a batch that reads (z). */
static bool zones_held(dns_server *srv, const dns_zones *z) {
  for (unsigned i = 0; srv->workers != NULL && i < srv->n_workers; i++)
    if (srv->workers[i] != NULL && atomic_load(&srv->workers[i]->t.hazard) == z)
      return true;
  return false;
}

/* Free the retired names that no worker holds; look again soon for the
 * others (a batch lasts microseconds). */
static void reclaim_run(uv_timer_t *timer) {
  dns_server *srv = timer->data;
  size_t kept = 0;
  for (size_t i = 0; i < srv->n_retired; i++)
    if (zones_held(srv, srv->retired[i]))
      srv->retired[kept++] = srv->retired[i];
    else
      zones_drop(srv->retired[i]);
  srv->n_retired = kept;
  if (kept > 0 && !uv_is_active((uv_handle_t *)&srv->reclaim))
    uv_timer_start(&srv->reclaim, reclaim_run, 10, 10);
  else if (kept == 0)
    uv_timer_stop(&srv->reclaim);
}

/* Put (fresh) in force (0; or -ENOMEM, and the old names stay); the
 * workers see it from their next batch, and the old names go once no
 * worker holds them. */
static int swap_names(dns_server *srv, dns_zones *fresh) {
  dns_zones *old = srv->main.zones;
  if (srv->workers == NULL || old == NULL) {
    srv->main.zones = fresh;
    zones_drop(old);
    return 0;
  }
  dns_zones **more =
      realloc(srv->retired, (srv->n_retired + 1) * sizeof(*srv->retired));
  if (more == NULL) {
    zones_drop(fresh);
    return -ENOMEM;
  }
  srv->retired = more;
  srv->retired[srv->n_retired++] = old;
  srv->main.zones = fresh;
  atomic_store(&srv->shared, fresh);
  reclaim_run(&srv->reclaim);
  return 0;
}

static void rebuild(dns_server *srv, jitsu_vm *skip) {
  dns_zones *fresh;
  char why[1024] = "";
  int r = build_names(srv, skip, &fresh, why, sizeof(why));
  if (r == 0)
    r = swap_names(srv, fresh);
  if (r < 0)
    fprintf(stderr, "jitsu-dns: names not rebuilt, the old ones stay: %s\n",
            why[0] ? why : strerror(-r));
}

/* A reload applied: [dns] zones and their files may have changed even if
 * no vm did. The new names are in force before the reload's caller hears
 * that it is done (jitsu-ctl reload returns), on every loop: a query sent
 * after it gets the new names. */
static void on_reloaded(jitsu_ctx *ctx, void *arg) {
  dns_server *srv = arg;
  (void)ctx;
  uv_timer_stop(srv->rebuild_timer);
  rebuild(srv, NULL);
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
    jitsu_list *l = srv->pending.next;
    while (l != &srv->pending) {
      pending *p = JITSU_CONTAINER_OF(l, pending, link);
      l = l->next;
      if (p->vm != vm)
        continue;
      if (!p->answered)
        answer_rcode(&srv->main, &p->to, &p->q, DNS_SERVFAIL, false);
      pending_free(p);
    }
    /* Its names go now: nothing may reach the vm after this. */
    rebuild(srv, vm);
  }
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* The (pct) percentile (ms) of the recent samples of rings (r[0..n)). */
static double rings_pct(const latency_ring *const *r, size_t n, double pct) {
  uint32_t all[RING * (DNS_WORKERS_MAX + 1)];
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    memcpy(all + k, r[i]->us, r[i]->n * sizeof(uint32_t));
    k += r[i]->n;
  }
  if (k == 0)
    return 0;
  qsort(all, k, sizeof(*all), cmp_u32);
  size_t rank = (size_t)(pct * (double)k + 0.999999);
  return all[rank ? rank - 1 : 0] / 1000.0;
}

/* (sum) += the counters of (s). */
static void stats_add(stats *sum, const stats *s) {
  sum->queries_udp += s->queries_udp;
  sum->queries_tcp += s->queries_tcp;
  sum->dropped += s->dropped;
  for (int i = 0; i < DNS_RCODE_COUNT; i++)
    sum->rcodes[i] += s->rcodes[i];
  sum->truncated += s->truncated;
  sum->referrals += s->referrals;
  sum->warm.count += s->warm.count;
}

static void dns_stats(jitsu_stat_fn emit, void *emit_arg, void *arg) {
  dns_server *srv = arg;
  /* The main loop's counters, and the workers' as they last published
   * them (every 200 ms). */
  stats *pub = calloc(srv->n_workers + 1, sizeof(*pub));
  const latency_ring *warm[DNS_WORKERS_MAX + 1] = {&srv->main.st.warm};
  stats total = srv->main.st, *s = &total;
  size_t n_warm = 1;
  double by_workers = 0;
  for (unsigned i = 0; pub != NULL && i < srv->n_workers; i++) {
    dns_worker *w = srv->workers[i];
    if (w == NULL || !w->started)
      continue;
    uv_mutex_lock(&w->mu);
    pub[i] = w->pub;
    uv_mutex_unlock(&w->mu);
    stats_add(&total, &pub[i]);
    by_workers += pub[i].queries_udp;
    warm[n_warm++] = &pub[i].warm;
  }
  const latency_ring *cold[1] = {&srv->main.st.cold};
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
  emit(emit_arg, "cold_answer_p50_ms", rings_pct(cold, 1, 0.5));
  emit(emit_arg, "cold_answer_p99_ms", rings_pct(cold, 1, 0.99));
  emit(emit_arg, "warm_answers_total", (double)s->warm.count);
  emit(emit_arg, "warm_answer_p50_ms", rings_pct(warm, n_warm, 0.5));
  emit(emit_arg, "warm_answer_p99_ms", rings_pct(warm, n_warm, 0.99));
  emit(emit_arg, "workers", srv->n_workers + 1);
  emit(emit_arg, "worker_queries_udp_total", by_workers);
  emit(emit_arg, "handed_over_total", srv->handed_over);
  free(pub);
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
    {"workers", "Loops answering UDP (workers = N)."},
    {"worker_queries_udp_total",
     "UDP queries that the worker threads answered (published every 200 ms)."},
    {"handed_over_total",
     "UDP queries a worker handed to the main loop (summons, forwards)."},
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

/* A UDP socket on (ss) for loop (t), reading in batches, in (*out) (also
 * on failure, for the caller to close; NULL only if none was made). With
 * workers, all sockets of an address are one SO_REUSEPORT group: the
 * kernel spreads the clients over them by their address and port. */
static int udp_listen(dns_server *srv, dns_thread *t,
                      const struct sockaddr_storage *ss, const char *spec,
                      uv_udp_t **out) {
  uv_udp_t *u = calloc(1, sizeof(*u));
  *out = u;
  if (u == NULL)
    return -ENOMEM;
  uv_udp_init_ex(t->loop, u, UV_UDP_RECVMMSG);
  u->data = t;
  int r;
  if (srv->n_workers > 0) {
    int fd =
        socket(ss->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
      return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        (ss->ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, (const struct sockaddr *)ss,
             peer_len((const struct sockaddr *)ss)) < 0) {
      r = -errno;
      close(fd);
      return r;
    }
    if ((r = uv_udp_open(u, fd)) < 0) {
      close(fd);
      return r;
    }
  } else {
    r = uv_udp_bind(u, (const struct sockaddr *)ss,
                    ss->ss_family == AF_INET6 ? UV_UDP_IPV6ONLY : 0);
  }
  if (r == 0)
    udp_buffer(srv, u, spec);
  if (r == 0)
    r = uv_udp_recv_start(u, udp_alloc, udp_read);
  return r;
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
  uv_tcp_t *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return -ENOMEM;
  uv_tcp_init(srv->loop, t);
  t->data = srv;
  srv->tcp[srv->n_tcp++] = t;
  srv->addrs[srv->n_udp] = ss;
  int r = udp_listen(srv, &srv->main, &ss, spec, &srv->udp[srv->n_udp]);
  if (srv->udp[srv->n_udp] != NULL)
    srv->n_udp++;
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

/* --- workers --- */

static void free_handle(uv_handle_t *h) {
  free(h);
}

static void worker_publish(uv_timer_t *timer) {
  dns_worker *w = timer->data;
  uv_mutex_lock(&w->mu);
  w->pub = w->t.st;
  uv_mutex_unlock(&w->mu);
}

static void worker_stop(uv_async_t *a) {
  dns_worker *w = a->data;
  worker_publish(&w->publish);
  for (size_t i = 0; i < w->n_udp; i++)
    uv_close((uv_handle_t *)w->udp[i], free_handle);
  uv_close((uv_handle_t *)&w->stop, NULL);
  uv_close((uv_handle_t *)&w->publish, NULL);
}

static void worker_run(void *arg) {
  dns_worker *w = arg;
  uv_run(&w->loop, UV_RUN_DEFAULT);
}

/* Ends worker (w) (its loop closes its sockets and returns) and frees it. */
static void worker_free(dns_worker *w) {
  if (w->started) {
    uv_async_send(&w->stop);
    uv_thread_join(&w->thread);
  } else {
    worker_stop(&w->stop);
    uv_run(&w->loop, UV_RUN_DEFAULT);
  }
  uv_loop_close(&w->loop);
  uv_mutex_destroy(&w->mu);
  free(w->udp);
  free(w->t.udp_in);
  free(w->t.out);
  free(w);
}

/* A worker with sockets on every listen address, running. */
static int worker_new(dns_server *srv, const char *const *listen,
                      dns_worker **out, char *why, size_t why_size) {
  dns_worker *w = calloc(1, sizeof(*w));
  *out = w;
  if (w == NULL || uv_loop_init(&w->loop) < 0) {
    free(w);
    *out = NULL;
    return -ENOMEM;
  }
  uv_mutex_init(&w->mu);
  uv_async_init(&w->loop, &w->stop, worker_stop);
  uv_timer_init(&w->loop, &w->publish);
  w->stop.data = w->publish.data = w;
  w->t = (dns_thread){.srv = srv, .loop = &w->loop, .worker = true};
  w->t.udp_in = malloc(UDP_SLOT * UDP_SLOTS);
  w->t.out = calloc(1, sizeof(*w->t.out));
  w->udp = calloc(srv->n_udp + 1, sizeof(*w->udp));
  if (w->t.udp_in == NULL || w->t.out == NULL || w->udp == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < srv->n_udp; i++) {
    int r = udp_listen(srv, &w->t, &srv->addrs[i], listen[i], &w->udp[i]);
    if (w->udp[i] != NULL)
      w->n_udp++;
    if (r < 0) {
      snprintf(why, why_size, "listen '%s' (a worker's socket): %s", listen[i],
               uv_strerror(r));
      return r;
    }
  }
  uv_timer_start(&w->publish, worker_publish, 200, 200);
  int r = uv_thread_create(&w->thread, worker_run, w);
  if (r < 0) {
    snprintf(why, why_size, "workers: cannot start a thread: %s",
             uv_strerror(r));
    return r;
  }
  w->started = true;
  return 0;
}

static int workers_start(dns_server *srv, const char *const *listen, unsigned n,
                         char *why, size_t why_size) {
  int r;
  atomic_store(&srv->shared, srv->main.zones);
  uv_mutex_init(&srv->handoff_mu);
  srv->handoff_mu_made = true;
  srv->handoff_async = malloc(sizeof(*srv->handoff_async));
  srv->workers = calloc(n, sizeof(*srv->workers));
  if (srv->handoff_async == NULL || srv->workers == NULL)
    return -ENOMEM;
  uv_async_init(srv->loop, srv->handoff_async, handoff_run);
  srv->handoff_async->data = srv;
  for (unsigned i = 0; i < n; i++) {
    r = worker_new(srv, listen, &srv->workers[i], why, why_size);
    if (r < 0)
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
  srv->main.udp_in = malloc(UDP_SLOT * UDP_SLOTS);
  srv->main.out = calloc(1, sizeof(*srv->main.out));
  if (srv->rebuild_timer == NULL || srv->main.udp_in == NULL ||
      srv->main.out == NULL) {
    free(srv->rebuild_timer), free(srv->main.udp_in), free(srv->main.out);
    free(srv);
    return -ENOMEM;
  }
  srv->ctx = ctx;
  srv->loop = jitsu_ctx_loop(ctx);
  srv->main.srv = srv;
  srv->main.loop = srv->loop;
  srv->n_workers = cfg->workers > 1 ? cfg->workers - 1 : 0;
  jitsu_list_init(&srv->handoff);
  srv->set = cfg->settings;
  srv->udp_buffer = cfg->udp_buffer;
  srv->serial = (uint32_t)time(NULL);
  jitsu_list_init(&srv->pending);
  uv_timer_init(srv->loop, &srv->idle);
  srv->idle.data = srv;
  uv_timer_init(srv->loop, srv->rebuild_timer);
  srv->rebuild_timer->data = srv;
  uv_timer_init(srv->loop, &srv->reclaim);
  srv->reclaim.data = srv;
  *out = srv;
  size_t n = 0;
  while (cfg->listen && cfg->listen[n])
    n++;
  srv->udp = calloc(n + 1, sizeof(*srv->udp));
  srv->tcp = calloc(n + 1, sizeof(*srv->tcp));
  srv->addrs = calloc(n + 1, sizeof(*srv->addrs));
  if (srv->udp == NULL || srv->tcp == NULL || srv->addrs == NULL)
    return -ENOMEM;
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
  int r = build_names(srv, NULL, &srv->main.zones, why, why_size);
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
  if (srv->n_workers > 0 &&
      (r = workers_start(srv, cfg->listen, srv->n_workers, why, why_size)) < 0)
    return r;
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

void dns_server_free(dns_server *srv) {
  if (srv == NULL)
    return;
  jitsu_ctx_off_state(srv->ctx, on_state, srv);
  jitsu_ctx_off_vm(srv->ctx, on_vm, srv);
  jitsu_ctx_off_reloaded(srv->ctx, on_reloaded, srv);
  /* The workers first: they hand queries over and read the names. */
  for (unsigned i = 0; srv->workers != NULL && i < srv->n_workers; i++)
    if (srv->workers[i] != NULL)
      worker_free(srv->workers[i]);
  free(srv->workers);
  srv->workers = NULL;
  if (srv->handoff_async != NULL)
    uv_close((uv_handle_t *)srv->handoff_async, free_handle);
  for (size_t i = 0; i < srv->n_udp; i++)
    uv_close((uv_handle_t *)srv->udp[i], free_handle);
  for (size_t i = 0; i < srv->n_tcp; i++)
    uv_close((uv_handle_t *)srv->tcp[i], free_handle);
  /* Held queries: their summons go on; the callbacks still need them. */
  for (jitsu_list *l = srv->pending.next; l != &srv->pending; l = l->next)
    JITSU_CONTAINER_OF(l, pending, link)->answered = true;
  dns_forwarder *fwd = srv->fwd;
  srv->fwd = NULL; /* its failing callbacks now answer nothing */
  dns_forwarder_free(fwd);
  uv_close((uv_handle_t *)&srv->idle, NULL);
  uv_close((uv_handle_t *)&srv->reclaim, NULL);
  uv_close((uv_handle_t *)srv->rebuild_timer, free_handle);
  free(srv->udp);
  free(srv->tcp);
  free(srv->addrs);
  free(srv->allow);
  free(srv->summon_allow);
}

void dns_server_destroy(dns_server *srv) {
  if (srv == NULL)
    return;
  while (srv->pending.next != &srv->pending)
    pending_free(JITSU_CONTAINER_OF(srv->pending.next, pending, link));
  while (srv->handoff.next != &srv->handoff && srv->handoff.next != NULL) {
    jitsu_list *l = srv->handoff.next;
    jitsu_list_remove(l);
    free(JITSU_CONTAINER_OF(l, handoff_msg, link));
  }
  if (srv->handoff_mu_made)
    uv_mutex_destroy(&srv->handoff_mu);
  for (size_t i = 0; i < srv->n_retired; i++) /* the workers have ended */
    zones_drop(srv->retired[i]);
  free(srv->retired);
  if (srv->main.zones != NULL)
    dns_zones_free(srv->main.zones);
  free(srv->main.zones);
  free(srv->main.udp_in);
  free(srv->main.out);
  free(srv);
}
