/* libFuzzer target: the unikernel's network stack as a hostile peer sees
 * it. The input is a sequence of records: flags (1 byte: bit 0 = fix the
 * IPv4 and TCP/ICMP checksums, so that the fuzzer reaches the TCP state
 * machine; bits 1-7 = milliseconds to advance the clock), a length
 * (2 bytes) and that many bytes of Ethernet frame. Every frame the stack
 * sends is checked for size and checksums. */
#include "net.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

static void check_tx(void *ctx, const uint8_t *f, size_t len) {
  (void)ctx;
  if (len < 60 || len > NET_FRAME_MAX)
    abort();
  if (f[12] == 0x08 && f[13] == 0x00) {
    const uint8_t *ip = f + 14;
    size_t total = (size_t)(ip[2] << 8 | ip[3]);
    if (total < 20 || 14 + total > len || net_checksum(ip, 20, 0) != 0)
      abort();
  }
}

static void fix_checksums(uint8_t *f, size_t len) {
  if (len < 34 || f[12] != 0x08 || f[13] != 0x00)
    return;
  uint8_t *ip = f + 14;
  size_t ihl = (size_t)(ip[0] & 0xf) * 4;
  size_t total = (size_t)(ip[2] << 8 | ip[3]);
  if (ihl < 20 || total < ihl || 14 + total > len)
    return;
  ip[10] = ip[11] = 0;
  uint16_t c = net_checksum(ip, ihl, 0);
  ip[10] = (uint8_t)(c >> 8), ip[11] = (uint8_t)c;
  uint8_t *p = ip + ihl;
  size_t plen = total - ihl;
  if (ip[9] == 6 && plen >= 20) {
    p[16] = p[17] = 0;
    uint32_t sum = (uint32_t)(ip[12] << 8 | ip[13]) + (ip[14] << 8 | ip[15]) +
                   (ip[16] << 8 | ip[17]) + (ip[18] << 8 | ip[19]) + 6 +
                   (uint32_t)plen;
    c = net_checksum(p, plen, sum);
    p[16] = (uint8_t)(c >> 8), p[17] = (uint8_t)c;
  } else if (ip[9] == 1 && plen >= 4) {
    p[2] = p[3] = 0;
    c = net_checksum(p, plen, 0);
    p[2] = (uint8_t)(c >> 8), p[3] = (uint8_t)c;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static net_stack s;
  static uint8_t frame[NET_FRAME_MAX + 4];
  net_init(&s, mac, 0x0a00020f, 0xffffff00, 0x0a000202, NULL, 0, check_tx, NULL,
           1);
  uint64_t now = 1;
  size_t i = 0;
  while (i + 3 <= size) {
    uint8_t flags = data[i];
    size_t len = (size_t)(data[i + 1] << 8 | data[i + 2]);
    i += 3;
    if (len > size - i)
      len = size - i;
    if (len > sizeof(frame))
      len = sizeof(frame);
    /* A private copy, as the driver hands the stack its own buffer. */
    memcpy(frame, data + i, len);
    i += len;
    if (flags & 1)
      fix_checksums(frame, len);
    now += (uint64_t)(flags >> 1) * 50;
    net_input(&s, frame, len, now);
    net_poll(&s, now);
  }
  for (int k = 0; k < 12; k++) { /* let the timers run out */
    now += NET_RTO_MAX_MS;
    net_poll(&s, now);
  }
  return 0;
}
