/* libFuzzer target: jitsu-dns's wire format. A packet is parsed as a
 * query; a parsed one is answered with every kind of record we write
 * (so the writer sees hostile names too); the packet is also passed
 * through dns_fit_response() as if an upstream had sent it. */
#include "dns_wire.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dns_query q;
  int r = dns_parse_query(data, size, &q);
  if (r >= 0) {
    static uint8_t buf[DNS_TCP_MAX];
    static const uint8_t apex[] = {4, 't', 'e', 's', 't', 0};
    static const uint8_t ns[] = {3, 'n', 's', '1', 4, 't', 'e', 's', 't', 0};
    static const uint8_t v4[4] = {192, 0, 2, 1};
    static const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8};
    dns_msg m;
    size_t limit = q.edns ? q.edns_size : DNS_UDP_PLAIN;
    dns_msg_begin(&m, buf, sizeof(buf), limit, &q, r, true, false);
    for (int i = 0; i < 40; i++)
      dns_msg_add_addr(&m, DNS_ANSWER, DNS_TYPE_A, v4, 60);
    dns_msg_add_addr(&m, DNS_ANSWER, DNS_TYPE_AAAA, v6, 60);
    dns_msg_add_ns(&m, DNS_AUTHORITY, apex, sizeof(apex), ns, sizeof(ns), 60);
    dns_msg_add_soa(&m, DNS_AUTHORITY, apex, sizeof(apex), ns, sizeof(ns), ns,
                    sizeof(ns), 1, 60, 60);
    size_t n = dns_msg_finish(&m, r);
    if (n > limit)
      abort(); /* a response larger than the client takes */
    /* The unsigned TSIG of an error answer, after the records. */
    size_t t = dns_msg_append_tsig_error(buf, n, sizeof(buf), &q, 17);
    if (t > sizeof(buf) || (t != n && !q.tsig))
      abort();
  }
  uint8_t *copy = malloc(size ? size : 1);
  if (copy != NULL) {
    memcpy(copy, data, size);
    size_t n = dns_fit_response(copy, size, 0x1234, 512);
    if (n > size)
      abort();
    free(copy);
  }
  return 0;
}
