/* The unikernel's network stack (examples/guests/unikernel/net.c), built
 * for the host: checksums, ARP, ICMP, and TCP/HTTP over scripted segment
 * sequences, with every frame it sends checked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "net.h"

#define OUR_IP 0x0a00020f   /* 10.0.2.15 */
#define PEER_IP 0x0a000202  /* 10.0.2.2 */
#define OTHER_IP 0x0a000203 /* 10.0.2.3 */

static const uint8_t our_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
static const uint8_t peer_mac[6] = {0x52, 0x55, 0x0a, 0x00, 0x02, 0x02};

typedef struct sent {
  uint8_t frames[256][NET_FRAME_MAX];
  size_t lens[256];
  int n;
} sent;

static sent out;
static net_stack st;

static void capture(void *ctx, const uint8_t *f, size_t len) {
  (void)ctx;
  assert_true(len >= 60 && len <= NET_FRAME_MAX);
  assert_true(out.n < 256);
  memcpy(out.frames[out.n], f, len);
  out.lens[out.n++] = len;
}

static uint16_t g16(const uint8_t *p) {
  return (uint16_t)(p[0] << 8 | p[1]);
}
static uint32_t g32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}
static void p16(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static void p32(uint8_t *p, uint32_t v) {
  p16(p, v >> 16);
  p16(p + 2, v);
}

static int setup(void **state) {
  (void)state;
  memset(&out, 0, sizeof(out));
  net_init(&st, our_mac, OUR_IP, 0xffffff00, PEER_IP, NULL, 0, capture, NULL,
           12345);
  return 0;
}

/* Ethernet + IPv4 header for (payload) bytes of (proto); returns the
 * frame length. */
static size_t ip_frame(uint8_t *f, uint32_t src, uint8_t proto,
                       size_t payload) {
  memcpy(f, our_mac, 6);
  memcpy(f + 6, peer_mac, 6);
  p16(f + 12, 0x0800);
  uint8_t *ip = f + 14;
  memset(ip, 0, 20);
  ip[0] = 0x45;
  p16(ip + 2, (uint32_t)(20 + payload));
  ip[8] = 64;
  ip[9] = proto;
  p32(ip + 12, src);
  p32(ip + 16, OUR_IP);
  p16(ip + 10, net_checksum(ip, 20, 0));
  return 14 + 20 + payload;
}

enum { FIN = 1, SYN = 2, RST = 4, PSH = 8, ACK = 16 };

static size_t tcp_frame(uint8_t *f, uint16_t sport, uint32_t seq, uint32_t ack,
                        uint8_t flags, const char *data) {
  size_t dlen = data ? strlen(data) : 0;
  uint8_t *t = f + 34;
  memset(t, 0, 20);
  p16(t, sport);
  p16(t + 2, 80);
  p32(t + 4, seq);
  p32(t + 8, ack);
  t[12] = 5 << 4;
  t[13] = flags;
  p16(t + 14, 65535);
  memcpy(t + 20, data, dlen);
  uint32_t sum = (PEER_IP >> 16) + (PEER_IP & 0xffff) + (OUR_IP >> 16) +
                 (OUR_IP & 0xffff) + 6 + (uint32_t)(20 + dlen);
  p16(t + 16, net_checksum(t, 20 + dlen, sum));
  return ip_frame(f, PEER_IP, 6, 20 + dlen);
}

typedef struct seg {
  uint32_t seq, ack;
  uint8_t flags;
  const uint8_t *data;
  size_t len;
} seg;

/* Frame (i) of the output as a TCP segment, checking its checksums. */
static seg out_seg(int i) {
  assert_true(i < out.n);
  const uint8_t *f = out.frames[i];
  assert_int_equal(g16(f + 12), 0x0800);
  const uint8_t *ip = f + 14;
  assert_int_equal(net_checksum(ip, 20, 0), 0);
  assert_int_equal(ip[9], 6);
  size_t len = g16(ip + 2) - 20;
  const uint8_t *t = ip + 20;
  uint32_t sum = (OUR_IP >> 16) + (OUR_IP & 0xffff) + (PEER_IP >> 16) +
                 (PEER_IP & 0xffff) + 6 + (uint32_t)len;
  assert_int_equal(net_checksum(t, len, sum), 0);
  assert_memory_equal(f, peer_mac, 6);
  size_t hl = (size_t)(t[12] >> 4) * 4;
  seg s = {g32(t + 4), g32(t + 8), t[13], t + hl, len - hl};
  return s;
}

static void send_seg(uint16_t sport, uint32_t seq, uint32_t ack, uint8_t fl,
                     const char *data, uint64_t now) {
  uint8_t f[NET_FRAME_MAX];
  size_t n = tcp_frame(f, sport, seq, ack, fl, data);
  net_input(&st, f, n, now);
}

/* A completed handshake from (sport); returns our ISS + 1. */
static uint32_t connect_(uint16_t sport, uint32_t cseq) {
  int before = out.n;
  send_seg(sport, cseq, 0, SYN, NULL, 0);
  assert_int_equal(out.n, before + 1);
  seg sa = out_seg(before);
  assert_int_equal(sa.flags, SYN | ACK);
  assert_int_equal(sa.ack, cseq + 1);
  send_seg(sport, cseq + 1, sa.seq + 1, ACK, NULL, 0);
  assert_int_equal(out.n, before + 1); /* a bare ACK gets no answer */
  return sa.seq + 1;
}

static void test_checksum(void **state) {
  (void)state;
  /* RFC 1071's example: the sum of these words is 0xddf2. */
  static const uint8_t d[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  assert_int_equal(net_checksum(d, sizeof(d), 0), 0xffff - 0xddf2);
  static const uint8_t odd[] = {0x01};
  assert_int_equal(net_checksum(odd, 1, 0), 0xffff - 0x0100);
  uint32_t ip;
  assert_int_equal(net_parse_ip("10.0.2.15", 9, &ip), 0);
  assert_int_equal(ip, OUR_IP);
  assert_int_equal(net_parse_ip("10.0.2", 6, &ip), -1);
  assert_int_equal(net_parse_ip("10.0.2.256", 10, &ip), -1);
  assert_int_equal(net_parse_ip("10.0.2.1x", 9, &ip), -1);
}

static void test_arp(void **state) {
  (void)state;
  net_announce(&st);
  assert_int_equal(out.n, 1);
  assert_memory_equal(out.frames[0], "\xff\xff\xff\xff\xff\xff", 6);
  assert_int_equal(g16(out.frames[0] + 12), 0x0806);
  assert_int_equal(g32(out.frames[0] + 14 + 24), OUR_IP); /* who-has us */
  uint8_t f[60] = {0};
  memset(f, 0xff, 6);
  memcpy(f + 6, peer_mac, 6);
  p16(f + 12, 0x0806);
  uint8_t *a = f + 14;
  p16(a, 1);
  p16(a + 2, 0x0800);
  a[4] = 6, a[5] = 4;
  p16(a + 6, 1);
  memcpy(a + 8, peer_mac, 6);
  p32(a + 14, PEER_IP);
  p32(a + 24, OUR_IP);
  net_input(&st, f, sizeof(f), 1);
  assert_int_equal(out.n, 2);
  const uint8_t *r = out.frames[1] + 14;
  assert_int_equal(g16(r + 6), 2);
  assert_memory_equal(r + 8, our_mac, 6);
  assert_int_equal(g32(r + 14), OUR_IP);
  assert_memory_equal(r + 18, peer_mac, 6);
  assert_int_equal(g32(r + 24), PEER_IP);
  p32(a + 24, OTHER_IP); /* not ours: learnt, not answered */
  net_input(&st, f, sizeof(f), 2);
  a[4] = 7; /* malformed */
  p32(a + 24, OUR_IP);
  net_input(&st, f, sizeof(f), 3);
  net_input(&st, f, 20, 4); /* truncated */
  assert_int_equal(out.n, 2);
}

static void test_icmp_echo(void **state) {
  (void)state;
  uint8_t f[NET_FRAME_MAX];
  uint8_t *icmp = f + 34;
  icmp[0] = 8, icmp[1] = 0;
  p16(icmp + 2, 0);
  p16(icmp + 4, 0x1234);
  p16(icmp + 6, 1);
  memcpy(icmp + 8, "ping payload", 12);
  p16(icmp + 2, net_checksum(icmp, 20, 0));
  size_t n = ip_frame(f, PEER_IP, 1, 20);
  net_input(&st, f, n, 1);
  assert_int_equal(out.n, 1);
  const uint8_t *r = out.frames[0] + 34;
  assert_int_equal(r[0], 0);
  assert_int_equal(net_checksum(r, 20, 0), 0);
  assert_memory_equal(r + 8, "ping payload", 12);
  icmp[9] ^= 1; /* a bad checksum: no answer */
  net_input(&st, f, n, 2);
  assert_int_equal(out.n, 1);
  assert_int_equal(st.stats.bad_checksum, 1);
}

static void test_bad_ip(void **state) {
  (void)state;
  uint8_t f[NET_FRAME_MAX];
  size_t n = tcp_frame(f, 40000, 1, 0, SYN, NULL);
  f[14 + 10] ^= 0xff; /* header checksum */
  net_input(&st, f, n, 0);
  n = tcp_frame(f, 40000, 1, 0, SYN, NULL);
  net_input(&st, f, 30, 0); /* truncated */
  p16(f + 14 + 2, 2000);    /* total length past the frame */
  net_input(&st, f, n, 0);
  n = tcp_frame(f, 40000, 1, 0, SYN, NULL);
  f[14 + 6] = 0x20; /* more fragments */
  p16(f + 14 + 10, 0);
  p16(f + 14 + 10, net_checksum(f + 14, 20, 0));
  net_input(&st, f, n, 0);
  n = tcp_frame(f, 40000, 1, 0, SYN, NULL);
  f[34 + 16] ^= 1; /* TCP checksum */
  net_input(&st, f, n, 0);
  n = tcp_frame(f, 40000, 1, 0, SYN, NULL);
  f[34 + 12] = 15 << 4; /* data offset past the segment */
  net_input(&st, f, n, 0);
  assert_int_equal(out.n, 0);
  assert_int_equal(net_conns_live(&st), 0);
}

/* The request split over two segments, answered; a second request on
 * the same connection (keep-alive); then a close. */
static void test_tcp_http_keepalive(void **state) {
  (void)state;
  uint32_t c = 1000, s = connect_(40001, c);
  c++;
  send_seg(40001, c, s, ACK | PSH, "GET / HTTP/1.1\r\nHo", 1);
  assert_int_equal(out.n, 2); /* only an ACK */
  seg a = out_seg(1);
  assert_int_equal(a.len, 0);
  assert_int_equal(a.ack, c + 18);
  c += 18;
  send_seg(40001, c, s, ACK | PSH, "st: x\r\n\r\n", 2);
  c += 9;
  assert_int_equal(out.n, 3);
  seg r = out_seg(2);
  assert_int_equal(r.seq, s);
  assert_int_equal(r.ack, c);
  assert_true(r.len > 0 && memcmp(r.data, "HTTP/1.1 200 OK\r\n", 17) == 0);
  assert_non_null(memmem(r.data, r.len, "Connection: keep-alive", 22));
  assert_non_null(memmem(r.data, r.len, "hello from the jitsu unikernel", 30));
  s += (uint32_t)r.len;
  send_seg(40001, c, s, ACK, NULL, 3);
  send_seg(40001, c, s, ACK | PSH, "HEAD /x HTTP/1.1\r\n\r\n", 4);
  c += 20;
  r = out_seg(out.n - 1);
  assert_true(memcmp(r.data, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
  assert_int_equal(memcmp(r.data + r.len - 4, "\r\n\r\n", 4), 0); /* HEAD */
  s += (uint32_t)r.len;
  /* The peer closes: we close too, and forget it on the last ACK. */
  send_seg(40001, c, s, ACK | FIN, NULL, 5);
  c++;
  seg fin = out_seg(out.n - 1);
  assert_true(fin.flags & FIN);
  assert_int_equal(fin.ack, c);
  send_seg(40001, c, s + 1, ACK, NULL, 6);
  assert_int_equal(net_conns_live(&st), 0);
  assert_int_equal(st.stats.responses_200, 1);
  assert_int_equal(st.stats.responses_404, 1);
}

/* Connection: close: we FIN after the answer; TIME_WAIT ends by timer. */
static void test_tcp_close_and_time_wait(void **state) {
  (void)state;
  uint32_t c = 5000, s = connect_(40002, c);
  c++;
  send_seg(40002, c, s, ACK | PSH,
           "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 1);
  c += 37;
  seg r = out_seg(out.n - 2), fin = out_seg(out.n - 1);
  assert_true(memmem(r.data, r.len, "Connection: close", 17) != NULL);
  assert_true(fin.flags & FIN);
  assert_int_equal(fin.seq, s + r.len);
  send_seg(40002, c, fin.seq + 1, ACK, NULL, 2); /* FIN_WAIT_2 */
  send_seg(40002, c, fin.seq + 1, ACK | FIN, NULL, 3);
  assert_int_equal(out_seg(out.n - 1).ack, c + 1);
  assert_int_equal(net_conns_live(&st), 1); /* TIME_WAIT */
  net_poll(&st, 3 + NET_TIME_WAIT_MS);
  assert_int_equal(net_conns_live(&st), 0);
}

static void test_tcp_retransmission(void **state) {
  (void)state;
  send_seg(40003, 7000, 0, SYN, NULL, 0);
  seg sa = out_seg(0);
  net_poll(&st, NET_RTO_MS - 1);
  assert_int_equal(out.n, 1);
  net_poll(&st, NET_RTO_MS);
  assert_int_equal(out.n, 2);
  seg again = out_seg(1);
  assert_int_equal(again.flags, SYN | ACK);
  assert_int_equal(again.seq, sa.seq);
  /* Handshake, request, and the answer is lost: resent after the RTO,
   * then after twice that, ...; the peer never answers: reset. */
  send_seg(40003, 7001, sa.seq + 1, ACK | PSH, "GET / HTTP/1.1\r\n\r\n", 300);
  seg r = out_seg(out.n - 1);
  assert_true(r.len > 0);
  int before = out.n;
  net_poll(&st, 300 + NET_RTO_MS);
  assert_int_equal(out.n, before + 1);
  seg rr = out_seg(out.n - 1);
  assert_int_equal(rr.seq, r.seq);
  assert_int_equal(rr.len, r.len);
  uint64_t t = 300 + NET_RTO_MS;
  for (int i = 0; i < 20 && net_conns_live(&st) > 0; i++) {
    t += NET_RTO_MAX_MS;
    net_poll(&st, t);
  }
  assert_int_equal(net_conns_live(&st), 0);
  assert_true(out_seg(out.n - 1).flags & RST);
}

static void test_tcp_rst_and_unknown(void **state) {
  (void)state;
  uint32_t s = connect_(40004, 100);
  send_seg(40004, 999, s, RST, NULL, 1); /* out of window: ignored */
  assert_int_equal(net_conns_live(&st), 1);
  send_seg(40004, 101, s, RST, NULL, 2);
  assert_int_equal(net_conns_live(&st), 0);
  /* An ACK for no connection gets a reset with its ack as seq. */
  send_seg(40005, 1, 4242, ACK, NULL, 3);
  seg r = out_seg(out.n - 1);
  assert_int_equal(r.flags, RST);
  assert_int_equal(r.seq, 4242);
}

static void test_tcp_table_full(void **state) {
  (void)state;
  for (int i = 0; i < NET_CONNS; i++)
    send_seg((uint16_t)(41000 + i), 1, 0, SYN, NULL, 0);
  assert_int_equal(net_conns_live(&st), NET_CONNS);
  send_seg(42000, 1, 0, SYN, NULL, 0);
  seg r = out_seg(out.n - 1);
  assert_true(r.flags & RST);
  assert_int_equal(st.stats.table_full, 1);
  assert_int_equal(net_conns_live(&st), NET_CONNS);
}

/* A full table of idle keep-alive connections: the longest idle one is
 * reset to make room. */
static void test_tcp_evicts_idle(void **state) {
  (void)state;
  uint32_t first = 0;
  for (int i = 0; i < NET_CONNS; i++) {
    uint32_t s = connect_((uint16_t)(45000 + i), 1);
    if (i == 0)
      first = s;
  }
  (void)first;
  assert_int_equal(net_conns_live(&st), NET_CONNS);
  send_seg(46000, 1, 0, SYN, NULL, 10);
  seg rst = out_seg(out.n - 2), sa = out_seg(out.n - 1);
  assert_true(rst.flags & RST);
  assert_int_equal(sa.flags, SYN | ACK);
  assert_int_equal(st.stats.evicted, 1);
  assert_int_equal(st.stats.table_full, 0);
  assert_int_equal(net_conns_live(&st), NET_CONNS);
}

static void test_http_bad_requests(void **state) {
  (void)state;
  static const char *const bad[] = {
      "BROKEN\r\n\r\n",
      "GET noslash HTTP/1.1\r\n\r\n",
      "GET / HTTP/2.0\r\n\r\n",
      "GET / HTTP/1.1\r\nno colon here\r\n\r\n",
      "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
      "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    uint16_t port = (uint16_t)(43000 + i);
    uint32_t s = connect_(port, 1);
    send_seg(port, 2, s, ACK | PSH, bad[i], 1);
    seg r = out_seg(out.n - 2), fin = out_seg(out.n - 1);
    if (memcmp(r.data, "HTTP/1.1 400 Bad Request", 24) != 0)
      fail_msg("'%s' was not refused", bad[i]);
    assert_true(fin.flags & FIN);
  }
  /* A request that never ends fills its buffer: 400. */
  uint32_t s = connect_(44000, 1);
  static char big[NET_RX_BUF + 1];
  memset(big, 'a', 1400);
  big[1400] = '\0';
  int before = out.n;
  send_seg(44000, 2, s, ACK, big, 1);
  send_seg(44000, 1402, s, ACK, big, 1); /* only 648 bytes fit */
  int found = 0;
  for (int i = before; i < out.n; i++) {
    seg r = out_seg(i);
    found |= r.len >= 12 && memcmp(r.data, "HTTP/1.1 400", 12) == 0;
  }
  assert_true(found);
  assert_int_equal(st.stats.responses_200, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_checksum, setup),
      cmocka_unit_test_setup(test_arp, setup),
      cmocka_unit_test_setup(test_icmp_echo, setup),
      cmocka_unit_test_setup(test_bad_ip, setup),
      cmocka_unit_test_setup(test_tcp_http_keepalive, setup),
      cmocka_unit_test_setup(test_tcp_close_and_time_wait, setup),
      cmocka_unit_test_setup(test_tcp_retransmission, setup),
      cmocka_unit_test_setup(test_tcp_rst_and_unknown, setup),
      cmocka_unit_test_setup(test_tcp_table_full, setup),
      cmocka_unit_test_setup(test_tcp_evicts_idle, setup),
      cmocka_unit_test_setup(test_http_bad_requests, setup),
  };
  return cmocka_run_group_tests_name("uni-net", tests, NULL, NULL);
}
