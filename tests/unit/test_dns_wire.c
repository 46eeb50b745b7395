/* jitsu-dns's wire format: parsing and writing, byte by byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dns_wire.h"

/* A query for (name) (text) of (type), with EDNS (size) if non-zero. */
static size_t make_query(uint8_t *p, const char *name, uint16_t type,
                         uint16_t edns) {
  uint8_t wire[DNS_MAX_NAME];
  size_t len;
  assert_int_equal(dns_name_from_text(name, wire, &len), 0);
  memset(p, 0, DNS_HEADER_LEN);
  p[0] = 0xab, p[1] = 0xcd, p[2] = 0x01; /* RD */
  p[5] = 1;
  p[11] = edns ? 1 : 0;
  size_t n = DNS_HEADER_LEN;
  memcpy(p + n, wire, len);
  n += len;
  p[n++] = (uint8_t)(type >> 8), p[n++] = (uint8_t)type;
  p[n++] = 0, p[n++] = 1;
  if (edns) {
    const uint8_t opt[] = {
        0, 0, 41, (uint8_t)(edns >> 8), (uint8_t)edns, 0, 0, 0x80, 0, 0, 0};
    memcpy(p + n, opt, sizeof(opt));
    n += sizeof(opt);
  }
  return n;
}

static void test_parse(void **state) {
  (void)state;
  uint8_t p[512];
  dns_query q;
  size_t n = make_query(p, "Web.Example.TEST", DNS_TYPE_AAAA, 4096);
  assert_int_equal(dns_parse_query(p, n, &q), DNS_NOERROR);
  assert_int_equal(q.id, 0xabcd);
  assert_int_equal(q.qtype, DNS_TYPE_AAAA);
  assert_string_equal(q.key, "web.example.test");
  assert_memory_equal(q.qname, "\3Web\7Example\4TEST", 18); /* case kept */
  assert_true(q.edns);
  assert_int_equal(q.edns_size, 4096);
  assert_true(q.edns_do);
  /* A small EDNS size counts as 512; version 1 is BADVERS. */
  n = make_query(p, "a.test", DNS_TYPE_A, 100);
  assert_int_equal(dns_parse_query(p, n, &q), DNS_NOERROR);
  assert_int_equal(q.edns_size, 512);
  p[n - 5] = 1; /* the version byte of the OPT record */
  assert_int_equal(dns_parse_query(p, n, &q), DNS_BADVERS);
  /* Responses and runts get no answer at all. */
  n = make_query(p, "a.test", DNS_TYPE_A, 0);
  p[2] |= 0x80;
  assert_int_equal(dns_parse_query(p, n, &q), -1);
  assert_int_equal(dns_parse_query(p, 11, &q), -1);
  /* Opcodes other than QUERY: NOTIMP; two questions: FORMERR. */
  n = make_query(p, "a.test", DNS_TYPE_A, 0);
  p[2] = 0x10;
  assert_int_equal(dns_parse_query(p, n, &q), DNS_NOTIMP);
  p[2] = 0, p[5] = 2;
  assert_int_equal(dns_parse_query(p, n, &q), DNS_FORMERR);
}

static void test_names(void **state) {
  (void)state;
  uint8_t p[64] = {0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0};
  dns_query q;
  /* A pointer to itself, forward, and a label too long for the packet. */
  const uint8_t self[] = {0xc0, 12, 0, 1, 0, 1};
  memcpy(p + 12, self, sizeof(self));
  assert_int_equal(dns_parse_query(p, 18, &q), DNS_FORMERR);
  p[13] = 20;
  assert_int_equal(dns_parse_query(p, 18, &q), DNS_FORMERR);
  const uint8_t runt[] = {63, 'a', 'b'};
  memcpy(p + 12, runt, sizeof(runt));
  assert_int_equal(dns_parse_query(p, 15, &q), DNS_FORMERR);
  /* Odd bytes are escaped in key form. */
  const uint8_t odd[] = {3, 'A', '.', 0xff, 0};
  char key[64];
  assert_int_equal(dns_name_key(odd, sizeof(odd), key, sizeof(key)), 0);
  assert_string_equal(key, "a\\046\\255");
  uint8_t wire[DNS_MAX_NAME];
  size_t len;
  assert_int_equal(dns_name_from_text("bad..name", wire, &len), -1);
  assert_int_equal(dns_name_from_text("sp ace.test", wire, &len), -1);
  assert_int_equal(dns_name_from_text(".", wire, &len), 0);
  assert_int_equal(len, 1);
}

static void test_truncation(void **state) {
  (void)state;
  uint8_t p[512], buf[DNS_TCP_MAX];
  dns_query q;
  size_t n = make_query(p, "many.test", DNS_TYPE_A, 0);
  assert_int_equal(dns_parse_query(p, n, &q), DNS_NOERROR);
  dns_msg m;
  dns_msg_begin(&m, buf, sizeof(buf), DNS_UDP_PLAIN, &q, DNS_NOERROR, true,
                false);
  const uint8_t ip[4] = {10, 0, 0, 1};
  int added = 0;
  while (dns_msg_add_addr(&m, DNS_ANSWER, DNS_TYPE_A, ip, 60) == 0)
    added++;
  assert_int_equal(added, (512 - 12 - 15) / 16); /* 30 fit in 512 bytes */
  size_t len = dns_msg_finish(&m, DNS_NOERROR);
  assert_int_equal(len, 12 + 15); /* header and question only */
  assert_true(buf[2] & 0x02);     /* TC */
  assert_true(buf[2] & 0x04);     /* AA */
  assert_int_equal(buf[7], 0);    /* no answers */
  /* The answer's owner is a pointer to the question. */
  dns_msg_begin(&m, buf, sizeof(buf), DNS_UDP_PLAIN, &q, DNS_NOERROR, true,
                false);
  dns_msg_add_addr(&m, DNS_ANSWER, DNS_TYPE_A, ip, 60);
  len = dns_msg_finish(&m, DNS_NOERROR);
  assert_int_equal(len, 12 + 15 + 16);
  assert_int_equal(buf[27], 0xc0);
  assert_int_equal(buf[28], 12);
}

static void test_fit_response(void **state) {
  (void)state;
  uint8_t p[1024];
  size_t n = make_query(p, "far.test", DNS_TYPE_A, 0);
  p[2] |= 0x80; /* make it a response */
  memset(p + n, 0xee, 700);
  p[7] = 40;
  size_t len = dns_fit_response(p, n + 700, 0x4242, 512);
  assert_int_equal(len, n);
  assert_int_equal(p[0], 0x42);
  assert_true(p[2] & 0x02);
  assert_true(p[3] & 0x80); /* RA */
  assert_int_equal(p[7], 0);
  p[2] &= 0x7f; /* a query is not passed on */
  assert_int_equal(dns_fit_response(p, n, 1, 512), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_truncation),
      cmocka_unit_test(test_fit_response),
  };
  return cmocka_run_group_tests_name("dns_wire", tests, NULL, NULL);
}
