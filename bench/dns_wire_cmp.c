/* dns_wire_cmp: jitsu-dns's hand-written wire code against libknot's
 * packet functions (knot_pkt_*), on the work of jitsu-dns's hot path:
 * parse a query, then write the answer (an A record for a vm's name, or
 * an NXDOMAIN with the zone's SOA), both with EDNS. Each side keeps its
 * buffers between queries, as a server would; each answer is checked
 * against the other side's once (same length, same records).
 *
 *   bench/dns_wire_cmp [ITERATIONS] [ROUNDS]    (ninja -C build bench-dns)
 *
 * Prints ns per query for each, per round, and the median ratio. */
#include "../frontends/dns/dns_wire.h"
#include "bench_stats.h"

#include <libknot/libknot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* vm7.bench.test A, RD, EDNS (4096) */
static size_t make_query(uint8_t *q, const char *name) {
  static const uint8_t head[12] = {0x12, 0x34, 0x01, 0x00, 0, 1,
                                   0,    0,    0,    0,    0, 1};
  size_t n = 12, len;
  memcpy(q, head, 12);
  if (dns_name_from_text(name, q + n, &len) < 0)
    abort();
  n += len;
  static const uint8_t tail[] = {0, 1, 0,  1, /* A IN */
                                 0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0};
  memcpy(q + n, tail, sizeof(tail));
  return n + sizeof(tail);
}

static const uint8_t addr[4] = {192, 0, 2, 7};

/* --- ours ---------------------------------------------------------------- */

typedef struct zone_wire {
  uint8_t apex[DNS_MAX_NAME], ns[DNS_MAX_NAME], mbox[DNS_MAX_NAME];
  size_t apex_len, ns_len, mbox_len;
} zone_wire;

static size_t ours(const uint8_t *pkt, size_t len, uint8_t *out, bool nx,
                   const zone_wire *z) {
  dns_query q;
  dns_msg m;
  if (dns_parse_query(pkt, len, &q) != 0)
    abort();
  if (!nx) {
    dns_msg_begin(&m, out, DNS_UDP_MAX, q.edns_size, &q, DNS_NOERROR, true,
                  false);
    dns_msg_add_addr(&m, 0, DNS_TYPE_A, addr, 60);
    return dns_msg_finish(&m, DNS_NOERROR);
  }
  dns_msg_begin(&m, out, DNS_UDP_MAX, q.edns_size, &q, DNS_NXDOMAIN, true,
                false);
  dns_msg_add_soa(&m, 1, z->apex, z->apex_len, z->ns, z->ns_len, z->mbox,
                  z->mbox_len, 1, 60, 60);
  return dns_msg_finish(&m, DNS_NXDOMAIN);
}

/* --- libknot ------------------------------------------------------------- */

typedef struct knot_side {
  uint8_t qwire[512], awire[DNS_UDP_MAX];
  knot_pkt_t *query, *answer;
  knot_rrset_t a, soa, opt;
} knot_side;

static void knot_setup(knot_side *k, const zone_wire *z) {
  k->query = knot_pkt_new(k->qwire, sizeof(k->qwire), NULL);
  k->answer = knot_pkt_new(k->awire, sizeof(k->awire), NULL);
  if (k->query == NULL || k->answer == NULL)
    abort();
  /* The A record's owner is the query name, written as a pointer to it
   * (KNOT_COMPR_HINT_QNAME); the rrset owner is still needed. */
  static uint8_t owner[DNS_MAX_NAME];
  size_t len;
  dns_name_from_text("vm7.bench.test", owner, &len);
  knot_rrset_init(&k->a, owner, KNOT_RRTYPE_A, KNOT_CLASS_IN, 60);
  knot_rrset_add_rdata(&k->a, addr, 4, NULL);
  uint8_t rd[2 * DNS_MAX_NAME + 20];
  size_t n = 0;
  memcpy(rd, z->ns, z->ns_len), n += z->ns_len;
  memcpy(rd + n, z->mbox, z->mbox_len), n += z->mbox_len;
  static const uint8_t timers[20] = {0,    0,    0, 1, 0,    0, 0x0e,
                                     0x10, 0,    0, 2, 0x58, 0, 1,
                                     0x51, 0x80, 0, 0, 0,    60};
  memcpy(rd + n, timers, 20), n += 20;
  knot_rrset_init(&k->soa, (knot_dname_t *)z->apex, KNOT_RRTYPE_SOA,
                  KNOT_CLASS_IN, 60);
  knot_rrset_add_rdata(&k->soa, rd, (uint16_t)n, NULL);
  if (knot_edns_init(&k->opt, DNS_UDP_MAX, 0, 0, NULL) != KNOT_EOK)
    abort();
}

static size_t with_knot(knot_side *k, const uint8_t *pkt, size_t len, bool nx) {
  knot_pkt_clear(k->query);
  memcpy(k->qwire, pkt, len);
  k->query->size = len;
  if (knot_pkt_parse(k->query, 0) != KNOT_EOK)
    abort();
  if (knot_pkt_init_response(k->answer, k->query) != KNOT_EOK)
    abort();
  knot_wire_set_aa(k->answer->wire);
  knot_wire_clear_ra(k->answer->wire);
  if (!nx) {
    knot_pkt_begin(k->answer, KNOT_ANSWER);
    knot_pkt_put(k->answer, KNOT_COMPR_HINT_QNAME, &k->a, 0);
  } else {
    knot_wire_set_rcode(k->answer->wire, KNOT_RCODE_NXDOMAIN);
    knot_pkt_begin(k->answer, KNOT_AUTHORITY);
    knot_pkt_put(k->answer, KNOT_COMPR_HINT_NONE, &k->soa, 0);
  }
  knot_pkt_begin(k->answer, KNOT_ADDITIONAL);
  knot_pkt_put(k->answer, KNOT_COMPR_HINT_NONE, &k->opt, 0);
  return k->answer->size;
}

int main(int argc, char **argv) {
  long iters = argc > 1 ? atol(argv[1]) : 2000000;
  int rounds = argc > 2 ? atoi(argv[2]) : 3;
  uint8_t hit[512], miss[512], out[DNS_UDP_MAX];
  size_t hit_len = make_query(hit, "vm7.bench.test");
  size_t miss_len = make_query(miss, "nope.bench.test");
  zone_wire z;
  dns_name_from_text("bench.test", z.apex, &z.apex_len);
  dns_name_from_text("ns1.bench.test", z.ns, &z.ns_len);
  dns_name_from_text("hostmaster.bench.test", z.mbox, &z.mbox_len);
  knot_side k;
  knot_setup(&k, &z);
  /* Both sides must write the same answers, byte for byte. */
  size_t a1 = ours(hit, hit_len, out, false, &z);
  size_t a2 = with_knot(&k, hit, hit_len, false);
  if (a1 != a2 || memcmp(out, k.awire, a1) != 0) {
    fprintf(stderr, "dns_wire_cmp: the A answers differ (%zu, %zu bytes)\n", a1,
            a2);
    return 1;
  }
  size_t n1 = ours(miss, miss_len, out, true, &z);
  size_t n2 = with_knot(&k, miss, miss_len, true);
  if (n1 != n2 || memcmp(out, k.awire, n1) != 0) {
    fprintf(stderr,
            "dns_wire_cmp: the NXDOMAIN answers differ (%zu, %zu bytes)\n", n1,
            n2);
    return 1;
  }
  printf("the same answers from both: A %zu bytes, NXDOMAIN with SOA %zu "
         "bytes; ours' parse also makes the lookup key\n",
         a1, n1);
  double r_hit[16], r_miss[16];
  if (rounds > 16)
    rounds = 16;
  for (int r = 0; r < rounds; r++) {
    double t[4];
    for (int side = 0; side < 4; side++) {
      bool nx = side >= 2, kn = side % 2;
      double t0 = now_ms();
      volatile size_t sink = 0;
      for (long i = 0; i < iters; i++)
        sink +=
            kn ? with_knot(&k, nx ? miss : hit, nx ? miss_len : hit_len, nx)
               : ours(nx ? miss : hit, nx ? miss_len : hit_len, out, nx, &z);
      (void)sink;
      t[side] = (now_ms() - t0) * 1e6 / (double)iters;
    }
    printf("round %d: A answer: ours %.0f ns, libknot %.0f ns; NXDOMAIN: "
           "ours %.0f ns, libknot %.0f ns per query\n",
           r + 1, t[0], t[1], t[2], t[3]);
    r_hit[r] = t[1] / t[0];
    r_miss[r] = t[3] / t[2];
  }
  printf("median of %d rounds: libknot / ours, A answer %.2f, NXDOMAIN "
         "%.2f (time per query)\n",
         rounds, pct(r_hit, rounds, 0.5), pct(r_miss, rounds, 0.5));
  knot_pkt_free(k.query);
  knot_pkt_free(k.answer);
  return 0;
}
