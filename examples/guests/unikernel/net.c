/* The unikernel's network stack (see net.h). */
#include "net.h"

#include <string.h>

#define ETH_HDR 14
#define ETH_ARP 0x0806
#define ETH_IP 0x0800
#define IP_HDR 20
#define TCP_HDR 20
#define PROTO_ICMP 1
#define PROTO_TCP 6
#define F_FIN 0x01
#define F_SYN 0x02
#define F_RST 0x04
#define F_PSH 0x08
#define F_ACK 0x10
#define WINDOW NET_RX_BUF

static const uint8_t broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
static const char default_body[] = "hello from the jitsu unikernel\n";

static uint16_t get16(const uint8_t *p) {
  return (uint16_t)(p[0] << 8 | p[1]);
}
static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}
static void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}
/* Sequence number comparisons, modulo 2^32. */
static int seq_lt(uint32_t a, uint32_t b) {
  return (int32_t)(a - b) < 0;
}

static uint32_t sum_words(const void *data, size_t len, uint32_t sum) {
  const uint8_t *p = data;
  while (len > 1) {
    sum += (uint32_t)(p[0] << 8 | p[1]);
    p += 2;
    len -= 2;
  }
  if (len)
    sum += (uint32_t)(p[0] << 8);
  return sum;
}

uint16_t net_checksum(const void *data, size_t len, uint32_t sum) {
  sum = sum_words(data, len, sum);
  while (sum >> 16)
    sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

static uint32_t pseudo_sum(uint32_t src, uint32_t dst, uint8_t proto,
                           size_t len) {
  return (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto +
         (uint32_t)len;
}

int net_parse_ip(const char *t, size_t len, uint32_t *ip) {
  uint32_t v = 0;
  size_t i = 0;
  for (int part = 0; part < 4; part++) {
    uint32_t n = 0;
    size_t digits = 0;
    while (i < len && t[i] >= '0' && t[i] <= '9' && digits < 3) {
      n = n * 10 + (uint32_t)(t[i++] - '0');
      digits++;
    }
    if (digits == 0 || n > 255)
      return -1;
    v = v << 8 | n;
    if (part < 3) {
      if (i >= len || t[i] != '.')
        return -1;
      i++;
    }
  }
  if (i != len)
    return -1;
  *ip = v;
  return 0;
}

void net_init(net_stack *s, const uint8_t mac[6], uint32_t ip, uint32_t mask,
              uint32_t gw, const char *body, size_t body_len, net_tx_fn tx,
              void *tx_ctx, uint32_t seed) {
  memset(s, 0, sizeof(*s));
  memcpy(s->mac, mac, 6);
  s->ip = ip;
  s->mask = mask;
  s->gw = gw;
  s->tx = tx;
  s->tx_ctx = tx_ctx;
  s->isn = seed;
  if (body == NULL) {
    body = default_body;
    body_len = sizeof(default_body) - 1;
  }
  if (body_len > NET_BODY_MAX)
    body_len = NET_BODY_MAX;
  memcpy(s->body, body, body_len);
  s->body_len = body_len;
}

int net_conns_live(const net_stack *s) {
  int n = 0;
  for (int i = 0; i < NET_CONNS; i++)
    n += s->conns[i].state != TCP_FREE;
  return n;
}

/* ---- Ethernet and ARP ----------------------------------------------- */

static void send_frame(net_stack *s, const uint8_t dst[6], uint16_t type,
                       size_t payload) {
  memcpy(s->frame, dst, 6);
  memcpy(s->frame + 6, s->mac, 6);
  put16(s->frame + 12, type);
  size_t len = ETH_HDR + payload;
  if (len < 60) { /* the minimum frame, padded with zeros */
    memset(s->frame + len, 0, 60 - len);
    len = 60;
  }
  s->stats.tx_frames++;
  s->tx(s->tx_ctx, s->frame, len);
}

static void arp_learn(net_stack *s, uint32_t ip, const uint8_t mac[6],
                      uint64_t now) {
  if (ip == 0 || ip == s->ip || (mac[0] & 1))
    return;
  int slot = 0;
  for (int i = 0; i < NET_ARP_ENTRIES; i++) {
    if (s->arp[i].ip == ip) {
      slot = i;
      break;
    }
    if (s->arp[i].at < s->arp[slot].at) /* the oldest goes */
      slot = i;
  }
  s->arp[slot].ip = ip;
  memcpy(s->arp[slot].mac, mac, 6);
  s->arp[slot].at = now + 1;
}

static void arp_send(net_stack *s, uint16_t op, const uint8_t tha[6],
                     uint32_t tpa, const uint8_t dst[6]) {
  uint8_t *a = s->frame + ETH_HDR;
  put16(a, 1); /* Ethernet */
  put16(a + 2, ETH_IP);
  a[4] = 6;
  a[5] = 4;
  put16(a + 6, op);
  memcpy(a + 8, s->mac, 6);
  put32(a + 14, s->ip);
  memcpy(a + 18, tha, 6);
  put32(a + 24, tpa);
  send_frame(s, dst, ETH_ARP, 28);
}

void net_announce(net_stack *s) {
  static const uint8_t zero[6];
  arp_send(s, 1, zero, s->ip, broadcast); /* who-has our own address */
}

static void arp_input(net_stack *s, const uint8_t *a, size_t len,
                      uint64_t now) {
  if (len < 28 || get16(a) != 1 || get16(a + 2) != ETH_IP || a[4] != 6 ||
      a[5] != 4) {
    s->stats.dropped++;
    return;
  }
  uint16_t op = get16(a + 6);
  uint32_t spa = get32(a + 14), tpa = get32(a + 24);
  if ((spa & s->mask) == (s->ip & s->mask))
    arp_learn(s, spa, a + 8, now);
  if (op == 1 && tpa == s->ip && spa != s->ip) {
    uint8_t sha[6];
    memcpy(sha, a + 8, 6);
    s->stats.arp_replies++;
    arp_send(s, 2, sha, spa, sha);
  }
}

/* ---- IPv4 ------------------------------------------------------------- */

static uint16_t ip_id;

/* Fill the IP header in s->frame for (payload) bytes to (dst); send. */
static void ip_send(net_stack *s, const uint8_t mac[6], uint32_t dst,
                    uint8_t proto, size_t payload) {
  uint8_t *ip = s->frame + ETH_HDR;
  ip[0] = 0x45;
  ip[1] = 0;
  put16(ip + 2, (uint16_t)(IP_HDR + payload));
  put16(ip + 4, ip_id++);
  put16(ip + 6, 0x4000); /* don't fragment */
  ip[8] = 64;
  ip[9] = proto;
  put16(ip + 10, 0);
  put32(ip + 12, s->ip);
  put32(ip + 16, dst);
  put16(ip + 10, net_checksum(ip, IP_HDR, 0));
  send_frame(s, mac, ETH_IP, IP_HDR + payload);
}

static void icmp_input(net_stack *s, const uint8_t *mac, uint32_t src,
                       const uint8_t *p, size_t len) {
  if (len < 8 || net_checksum(p, len, 0) != 0) {
    s->stats.bad_checksum++;
    return;
  }
  if (p[0] != 8 || p[1] != 0 || len > NET_MTU - IP_HDR)
    return; /* only echo requests */
  uint8_t *r = s->frame + ETH_HDR + IP_HDR;
  memmove(r, p, len);
  r[0] = 0; /* echo reply */
  put16(r + 2, 0);
  put16(r + 2, net_checksum(r, len, 0));
  s->stats.icmp_echoes++;
  ip_send(s, mac, src, PROTO_ICMP, len);
}

/* ---- TCP ---------------------------------------------------------------- */

static void tcp_send(net_stack *s, tcp_conn *c, uint32_t seq, uint8_t flags,
                     const uint8_t *data, size_t len) {
  uint8_t *t = s->frame + ETH_HDR + IP_HDR;
  size_t hdr = (flags & F_SYN) ? TCP_HDR + 4 : TCP_HDR;
  put16(t, HTTP_PORT);
  put16(t + 2, c->peer_port);
  put32(t + 4, seq);
  put32(t + 8, (flags & F_ACK) ? c->rcv_nxt : 0);
  t[12] = (uint8_t)((hdr / 4) << 4);
  t[13] = flags;
  size_t space = NET_RX_BUF - c->rx_len;
  put16(t + 14, (uint16_t)(space > 0xffff ? 0xffff : space));
  put16(t + 16, 0);
  put16(t + 18, 0);
  if (flags & F_SYN) { /* MSS option */
    t[20] = 2;
    t[21] = 4;
    put16(t + 22, NET_MSS);
  }
  if (len > 0)
    memcpy(t + hdr, data, len);
  uint32_t sum = pseudo_sum(s->ip, c->peer_ip, PROTO_TCP, hdr + len);
  put16(t + 16, net_checksum(t, hdr + len, sum));
  ip_send(s, c->peer_mac, c->peer_ip, PROTO_TCP, hdr + len);
}

/* A reset for a segment that belongs to no connection (RFC 793). */
static void tcp_reset_reply(net_stack *s, const uint8_t *mac, uint32_t src,
                            uint16_t sport, uint32_t seq, uint32_t ack,
                            uint8_t flags, size_t seg_len) {
  tcp_conn tmp;
  memset(&tmp, 0, sizeof(tmp));
  memcpy(tmp.peer_mac, mac, 6);
  tmp.peer_ip = src;
  tmp.peer_port = sport;
  tmp.rx_len = NET_RX_BUF; /* window 0 */
  if (flags & F_ACK) {
    tcp_send(s, &tmp, ack, F_RST, NULL, 0);
  } else {
    tmp.rcv_nxt = seq + (uint32_t)seg_len + ((flags & F_SYN) ? 1 : 0) +
                  ((flags & F_FIN) ? 1 : 0);
    tcp_send(s, &tmp, 0, F_RST | F_ACK, NULL, 0);
  }
}

static void conn_free(net_stack *s, tcp_conn *c) {
  (void)s;
  c->state = TCP_FREE;
}

static void conn_reset(net_stack *s, tcp_conn *c) {
  tcp_send(s, c, c->snd_nxt, F_RST, NULL, 0);
  s->stats.conns_reset++;
  conn_free(s, c);
}

static void arm_rto(tcp_conn *c, uint64_t now) {
  if (c->snd_una == c->snd_nxt) {
    c->rto_at = 0;
    return;
  }
  if (c->rto_at == 0) {
    c->rto_ms = NET_RTO_MS;
    c->rto_at = now + c->rto_ms;
  }
}

/* Send what the window allows of the unsent response, then our FIN when
 * it is queued and everything is out; a bare ACK if (ack) and nothing
 * else went. */
static void tcp_output(net_stack *s, tcp_conn *c, int ack, uint64_t now) {
  int sent = 0;
  uint32_t tx_seq = c->snd_una + ((c->state == TCP_SYN_RCVD) ? 1 : 0);
  uint32_t end = tx_seq + (uint32_t)c->tx_len;
  uint32_t wnd_end = c->snd_una + (c->snd_wnd ? c->snd_wnd : 1);
  while (c->state != TCP_SYN_RCVD && seq_lt(c->snd_nxt, end) &&
         seq_lt(c->snd_nxt, wnd_end)) {
    size_t off = c->snd_nxt - tx_seq;
    size_t n = c->tx_len - off;
    if (n > c->peer_mss)
      n = c->peer_mss;
    if (n > (size_t)(wnd_end - c->snd_nxt))
      n = wnd_end - c->snd_nxt;
    tcp_send(s, c, c->snd_nxt, F_ACK | F_PSH, c->tx + off, n);
    c->snd_nxt += (uint32_t)n;
    sent = 1;
  }
  if (c->fin_queued && !c->fin_sent && c->snd_nxt == end &&
      c->state != TCP_SYN_RCVD) {
    tcp_send(s, c, c->snd_nxt, F_FIN | F_ACK, NULL, 0);
    c->snd_nxt++;
    c->fin_sent = 1;
    sent = 1;
    if (c->state == TCP_ESTABLISHED)
      c->state = TCP_FIN_WAIT_1;
    else if (c->state == TCP_CLOSE_WAIT)
      c->state = TCP_LAST_ACK;
  }
  if (!sent && ack)
    tcp_send(s, c, c->snd_nxt, F_ACK, NULL, 0);
  arm_rto(c, now);
}

/* Retransmit from snd_una: the SYN-ACK, or the first unacknowledged
 * segment (and the FIN when it follows). */
static void tcp_retransmit(net_stack *s, tcp_conn *c) {
  s->stats.retransmits++;
  if (c->state == TCP_SYN_RCVD) {
    tcp_send(s, c, c->iss, F_SYN | F_ACK, NULL, 0);
    return;
  }
  size_t n = c->tx_len < c->peer_mss ? c->tx_len : c->peer_mss;
  if (n > 0) {
    tcp_send(s, c, c->snd_una, F_ACK | F_PSH, c->tx, n);
  } else if (c->fin_sent) {
    tcp_send(s, c, c->snd_una, F_FIN | F_ACK, NULL, 0);
  }
}

/* ---- HTTP -----------------------------------------------------------------
 */

static int lower(int ch) {
  return ch >= 'A' && ch <= 'Z' ? ch + 32 : ch;
}

static int ieq(const uint8_t *a, size_t alen, const char *b) {
  size_t n = strlen(b);
  if (alen != n)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (lower(a[i]) != lower((unsigned char)b[i]))
      return 0;
  return 1;
}

static size_t append(uint8_t *out, size_t at, size_t cap, const char *text,
                     size_t len) {
  if (at + len > cap)
    return cap + 1; /* overflow marker */
  memcpy(out + at, text, len);
  return at + len;
}

static size_t append_str(uint8_t *out, size_t at, size_t cap,
                         const char *text) {
  return append(out, at, cap, text, strlen(text));
}

static size_t append_uint(uint8_t *out, size_t at, size_t cap, size_t v) {
  char d[24];
  int n = 0;
  do
    d[n++] = (char)('0' + v % 10);
  while ((v /= 10) && n < 20);
  char r[24];
  for (int i = 0; i < n; i++)
    r[i] = d[n - 1 - i];
  return append(out, at, cap, r, (size_t)n);
}

/* Queue a response on (c); 0, or -1 when the send buffer lacks room. */
static int respond(net_stack *s, tcp_conn *c, int status, int head, int keep) {
  const char *reason = status == 200   ? "OK"
                       : status == 404 ? "Not Found"
                       : status == 405 ? "Method Not Allowed"
                                       : "Bad Request";
  const char *body = status == 200   ? s->body
                     : status == 404 ? "not found\n"
                     : status == 405 ? "method not allowed\n"
                                     : "bad request\n";
  size_t blen = status == 200 ? s->body_len : strlen(body);
  uint8_t *out = c->tx + c->tx_len;
  size_t cap = NET_TX_BUF - c->tx_len, n = 0;
  n = append_str(out, n, cap, "HTTP/1.1 ");
  n = append_uint(out, n, cap, (size_t)status);
  n = append_str(out, n, cap, " ");
  n = append_str(out, n, cap, reason);
  n = append_str(out, n, cap,
                 "\r\nServer: jitsu-unikernel\r\n"
                 "Content-Type: text/plain\r\nContent-Length: ");
  n = append_uint(out, n, cap, blen);
  if (status == 405)
    n = append_str(out, n, cap, "\r\nAllow: GET, HEAD");
  n = append_str(out, n, cap,
                 keep ? "\r\nConnection: keep-alive\r\n\r\n"
                      : "\r\nConnection: close\r\n\r\n");
  if (!head)
    n = append(out, n, cap, body, blen);
  if (n > cap)
    return -1;
  c->tx_len += n;
  s->stats.requests++;
  if (status == 200)
    s->stats.responses_200++;
  else if (status == 404)
    s->stats.responses_404++;
  else
    s->stats.responses_400++;
  if (!keep)
    c->fin_queued = 1;
  return 0;
}

static int is_tchar(uint8_t ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' ||
         ch == '!' || ch == '#' || ch == '$' || ch == '%' || ch == '&' ||
         ch == '\'' || ch == '*' || ch == '+' || ch == '^' || ch == '`' ||
         ch == '|' || ch == '~';
}

/* One request in rx[0, end) (end just past the blank line). Sets
 * (*consume) to the bytes it takes, body included; 0 waits for more. */
static int http_request(net_stack *s, tcp_conn *c, size_t end,
                        size_t *consume) {
  const uint8_t *r = c->rx;
  size_t i = 0;
  while (i < end && is_tchar(r[i]))
    i++;
  size_t mlen = i;
  int bad = mlen == 0 || i >= end || r[i] != ' ';
  size_t path = ++i;
  while (!bad && i < end && r[i] > ' ' && r[i] < 0x7f)
    i++;
  size_t plen = i - path;
  bad = bad || plen == 0 || r[path] != '/' || i + 10 > end || r[i] != ' ';
  int minor = -1;
  if (!bad && memcmp(r + i + 1, "HTTP/1.", 7) == 0 &&
      (r[i + 8] == '0' || r[i + 8] == '1') && r[i + 9] == '\r' &&
      r[i + 10] == '\n')
    minor = r[i + 8] - '0';
  bad = bad || minor < 0;
  int keep = minor == 1;
  size_t content_length = 0;
  if (!bad) {
    /* Headers: NAME ":" VALUE CRLF, until the blank line. */
    size_t line = i + 11;
    while (line + 2 <= end && !(r[line] == '\r' && r[line + 1] == '\n')) {
      size_t e = line;
      while (e + 1 < end && !(r[e] == '\r' && r[e + 1] == '\n'))
        e++;
      size_t colon = line;
      while (colon < e && is_tchar(r[colon]))
        colon++;
      if (colon == line || colon >= e || r[colon] != ':') {
        bad = 1;
        break;
      }
      size_t v = colon + 1;
      while (v < e && (r[v] == ' ' || r[v] == '\t'))
        v++;
      size_t ve = e;
      while (ve > v && (r[ve - 1] == ' ' || r[ve - 1] == '\t'))
        ve--;
      const uint8_t *name = r + line;
      size_t nlen = colon - line;
      if (ieq(name, nlen, "connection")) {
        if (ieq(r + v, ve - v, "close"))
          keep = 0;
        else if (ieq(r + v, ve - v, "keep-alive"))
          keep = 1;
      } else if (ieq(name, nlen, "content-length")) {
        size_t n = 0;
        if (v == ve)
          bad = 1;
        for (size_t k = v; k < ve && !bad; k++) {
          if (r[k] < '0' || r[k] > '9' || n > NET_RX_BUF)
            bad = 1;
          else
            n = n * 10 + (size_t)(r[k] - '0');
        }
        content_length = n;
      } else if (ieq(name, nlen, "transfer-encoding")) {
        bad = 1; /* no request bodies of unknown length */
      }
      line = e + 2;
    }
  }
  if (bad) {
    *consume = c->rx_len;
    return respond(s, c, 400, 0, 0);
  }
  if (end + content_length > NET_RX_BUF) {
    *consume = c->rx_len;
    return respond(s, c, 400, 0, 0);
  }
  if (end + content_length > c->rx_len) {
    *consume = 0; /* the body is still coming */
    return 0;
  }
  *consume = end + content_length;
  int get = mlen == 3 && memcmp(r, "GET", 3) == 0;
  int head = mlen == 4 && memcmp(r, "HEAD", 4) == 0;
  if (!get && !head)
    return respond(s, c, 405, 0, keep);
  int root =
      (plen == 1) || (plen == 11 && memcmp(r + path, "/index.html", 11) == 0);
  return respond(s, c, root ? 200 : 404, head, keep);
}

/* Answer every complete request in rx, in order. */
static void http_serve(net_stack *s, tcp_conn *c) {
  while (c->rx_len > 0 && !c->fin_queued) {
    size_t end = 0;
    for (size_t i = 0; i + 3 < c->rx_len; i++)
      if (c->rx[i] == '\r' && c->rx[i + 1] == '\n' && c->rx[i + 2] == '\r' &&
          c->rx[i + 3] == '\n') {
        end = i + 4;
        break;
      }
    if (end == 0) {
      if (c->rx_len == NET_RX_BUF) { /* a request that cannot fit */
        c->rx_len = 0;
        respond(s, c, 400, 0, 0);
      }
      return;
    }
    size_t consume = 0;
    if (http_request(s, c, end, &consume) < 0 || consume == 0)
      return; /* wait for room to send, or for the body */
    memmove(c->rx, c->rx + consume, c->rx_len - consume);
    c->rx_len -= consume;
  }
  if (c->fin_queued)
    c->rx_len = 0; /* nothing more is read on a closing connection */
}

/* ---- TCP input
 * ------------------------------------------------------------------ */

static tcp_conn *conn_find(net_stack *s, uint32_t ip, uint16_t port) {
  for (int i = 0; i < NET_CONNS; i++)
    if (s->conns[i].state != TCP_FREE && s->conns[i].peer_ip == ip &&
        s->conns[i].peer_port == port)
      return &s->conns[i];
  return NULL;
}

static void conn_reset(net_stack *s, tcp_conn *c);

/* A slot for a new connection: a free one, else one in TIME_WAIT, else
 * the longest idle keep-alive connection (nothing buffered either way),
 * which is reset; NULL when every slot is busy. */
static tcp_conn *conn_new(net_stack *s) {
  tcp_conn *tw = NULL, *idle = NULL;
  for (int i = 0; i < NET_CONNS; i++) {
    tcp_conn *c = &s->conns[i];
    if (c->state == TCP_FREE)
      return c;
    if (c->state == TCP_TIME_WAIT)
      tw = c;
    else if (c->state == TCP_ESTABLISHED && c->rx_len == 0 && c->tx_len == 0 &&
             c->snd_una == c->snd_nxt &&
             (idle == NULL || c->last_ms < idle->last_ms))
      idle = c;
  }
  if (tw != NULL)
    return tw;
  if (idle != NULL) {
    s->stats.evicted++;
    conn_reset(s, idle);
  }
  return idle;
}

static void tcp_listen_input(net_stack *s, const uint8_t *mac, uint32_t src,
                             uint16_t sport, const uint8_t *t, size_t hlen,
                             uint64_t now) {
  uint32_t seq = get32(t + 4);
  tcp_conn *c = conn_new(s);
  if (c == NULL) {
    s->stats.table_full++;
    tcp_reset_reply(s, mac, src, sport, seq, 0, F_SYN, 0);
    return;
  }
  memset(c, 0, sizeof(*c));
  memcpy(c->peer_mac, mac, 6);
  c->peer_ip = src;
  c->peer_port = sport;
  c->peer_mss = 536;
  for (size_t o = TCP_HDR; o < hlen;) { /* options: MSS only */
    uint8_t kind = t[o];
    if (kind == 0)
      break;
    if (kind == 1) {
      o++;
      continue;
    }
    if (o + 1 >= hlen || t[o + 1] < 2 || o + t[o + 1] > hlen)
      break;
    if (kind == 2 && t[o + 1] == 4) {
      uint16_t mss = get16(t + o + 2);
      c->peer_mss = mss < 64 ? 64 : mss > NET_MSS ? NET_MSS : mss;
    }
    o += t[o + 1];
  }
  c->rcv_nxt = seq + 1;
  s->isn += 64000 + (uint32_t)(now * 250);
  c->iss = s->isn;
  c->snd_una = c->iss;
  c->snd_nxt = c->iss + 1;
  c->snd_wnd = get16(t + 14);
  c->state = TCP_SYN_RCVD;
  c->last_ms = now;
  s->stats.conns_opened++;
  tcp_send(s, c, c->iss, F_SYN | F_ACK, NULL, 0);
  arm_rto(c, now);
}

static void tcp_input(net_stack *s, const uint8_t *mac, uint32_t src,
                      uint32_t dst, const uint8_t *t, size_t len,
                      uint64_t now) {
  if (len < TCP_HDR) {
    s->stats.dropped++;
    return;
  }
  size_t hlen = (size_t)(t[12] >> 4) * 4;
  if (hlen < TCP_HDR || hlen > len) {
    s->stats.dropped++;
    return;
  }
  if (net_checksum(t, len, pseudo_sum(src, dst, PROTO_TCP, len)) != 0) {
    s->stats.bad_checksum++;
    return;
  }
  uint16_t sport = get16(t), dport = get16(t + 2);
  uint32_t seq = get32(t + 4), ack = get32(t + 8);
  uint8_t flags = t[13];
  const uint8_t *data = t + hlen;
  size_t dlen = len - hlen;
  tcp_conn *c = conn_find(s, src, sport);
  if (dport != HTTP_PORT || c == NULL) {
    if (flags & F_RST)
      return;
    if (dport == HTTP_PORT && (flags & (F_SYN | F_ACK | F_FIN)) == F_SYN) {
      tcp_listen_input(s, mac, src, sport, t, hlen, now);
      return;
    }
    tcp_reset_reply(s, mac, src, sport, seq, ack, flags, dlen);
    return;
  }
  c->last_ms = now;
  if (flags & F_RST) {
    /* Accepted only at the expected sequence number (RFC 5961). */
    if (seq == c->rcv_nxt) {
      s->stats.conns_reset++;
      conn_free(s, c);
    }
    return;
  }
  if (flags & F_SYN) {
    if (c->state == TCP_SYN_RCVD && seq + 1 == c->rcv_nxt)
      tcp_send(s, c, c->iss, F_SYN | F_ACK, NULL, 0); /* theirs was lost */
    else if (c->state == TCP_TIME_WAIT && seq_lt(c->rcv_nxt, seq)) {
      conn_free(s, c); /* a new connection from the same port */
      tcp_listen_input(s, mac, src, sport, t, hlen, now);
    } else
      tcp_send(s, c, c->snd_nxt, F_ACK, NULL, 0);
    return;
  }
  if (!(flags & F_ACK))
    return;
  /* The acknowledgement. */
  if (seq_lt(c->snd_nxt, ack)) {
    tcp_send(s, c, c->snd_nxt, F_ACK, NULL, 0); /* acks what we never sent */
    return;
  }
  if (seq_lt(c->snd_una, ack)) {
    uint32_t acked = ack - c->snd_una;
    if (c->state == TCP_SYN_RCVD) {
      c->state = TCP_ESTABLISHED;
      acked--; /* the SYN */
    }
    size_t data_acked = acked > c->tx_len ? c->tx_len : acked;
    memmove(c->tx, c->tx + data_acked, c->tx_len - data_acked);
    c->tx_len -= data_acked;
    c->snd_una = ack;
    c->retries = 0;
    c->rto_at = 0;
    if (c->fin_sent && ack == c->snd_nxt) { /* our FIN is acknowledged */
      if (c->state == TCP_FIN_WAIT_1)
        c->state = TCP_FIN_WAIT_2;
      else if (c->state == TCP_CLOSING) {
        c->state = TCP_TIME_WAIT;
        c->rto_at = now + NET_TIME_WAIT_MS;
      } else if (c->state == TCP_LAST_ACK) {
        conn_free(s, c);
        return;
      }
    }
  }
  if (c->state == TCP_SYN_RCVD)
    return; /* a stale ACK before the handshake completed */
  c->snd_wnd = get16(t + 14);
  /* Data and FIN, in order only: anything else is acknowledged again. */
  int need_ack = 0;
  if (dlen > 0 || (flags & F_FIN)) {
    if (seq != c->rcv_nxt) {
      tcp_send(s, c, c->snd_nxt, F_ACK, NULL, 0);
      return;
    }
    need_ack = 1;
  }
  if (dlen > 0 && (c->state == TCP_ESTABLISHED || c->state == TCP_FIN_WAIT_1 ||
                   c->state == TCP_FIN_WAIT_2)) {
    size_t room = NET_RX_BUF - c->rx_len;
    size_t take = dlen < room ? dlen : room;
    if (c->fin_queued)
      take = dlen; /* closing: read and discard */
    else
      memcpy(c->rx + c->rx_len, data, take);
    if (!c->fin_queued)
      c->rx_len += take;
    c->rcv_nxt += (uint32_t)take;
    if (take < dlen)
      flags &= (uint8_t)~F_FIN; /* the FIN comes after what we dropped */
    http_serve(s, c);
  }
  if (flags & F_FIN) {
    c->rcv_nxt++;
    switch (c->state) {
    case TCP_ESTABLISHED:
      c->state = TCP_CLOSE_WAIT;
      c->fin_queued = 1; /* answer what came, then close */
      break;
    case TCP_FIN_WAIT_1:
      c->state = TCP_CLOSING;
      break;
    case TCP_FIN_WAIT_2:
      c->state = TCP_TIME_WAIT;
      c->rto_at = now + NET_TIME_WAIT_MS;
      break;
    default:
      break;
    }
  }
  if (c->state == TCP_TIME_WAIT) {
    tcp_send(s, c, c->snd_nxt, F_ACK, NULL, 0);
    return;
  }
  if (c->rx_len > 0 && dlen == 0)
    http_serve(s, c); /* requests that waited for room to answer */
  tcp_output(s, c, need_ack, now);
}

void net_poll(net_stack *s, uint64_t now) {
  for (int i = 0; i < NET_CONNS; i++) {
    tcp_conn *c = &s->conns[i];
    if (c->state == TCP_FREE)
      continue;
    if (c->state == TCP_TIME_WAIT) {
      if (now >= c->rto_at)
        conn_free(s, c);
      continue;
    }
    if (c->rto_at != 0 && now >= c->rto_at) {
      if (++c->retries > NET_RETRIES) {
        conn_reset(s, c);
        continue;
      }
      tcp_retransmit(s, c);
      c->rto_ms =
          c->rto_ms * 2 > NET_RTO_MAX_MS ? NET_RTO_MAX_MS : c->rto_ms * 2;
      c->rto_at = now + c->rto_ms;
    } else if (c->rto_at == 0 && now - c->last_ms > NET_IDLE_MS) {
      conn_reset(s, c); /* a peer that went away without a word */
    }
  }
}

/* ---- frames
 * ------------------------------------------------------------------------- */

static void ip_input(net_stack *s, const uint8_t *mac, const uint8_t *ip,
                     size_t len, uint64_t now) {
  if (len < IP_HDR || (ip[0] >> 4) != 4) {
    s->stats.dropped++;
    return;
  }
  size_t ihl = (size_t)(ip[0] & 0xf) * 4;
  size_t total = get16(ip + 2);
  if (ihl < IP_HDR || total < ihl || total > len) {
    s->stats.dropped++;
    return;
  }
  if (net_checksum(ip, ihl, 0) != 0) {
    s->stats.bad_checksum++;
    return;
  }
  if ((get16(ip + 6) & 0x3fff) != 0) { /* fragments: not for us */
    s->stats.dropped++;
    return;
  }
  uint32_t src = get32(ip + 12), dst = get32(ip + 16);
  if (dst != s->ip) {
    s->stats.dropped++;
    return;
  }
  if ((src & s->mask) == (s->ip & s->mask))
    arp_learn(s, src, mac, now);
  else if (s->gw != 0)
    arp_learn(s, s->gw, mac, now);
  if (ip[9] == PROTO_ICMP)
    icmp_input(s, mac, src, ip + ihl, total - ihl);
  else if (ip[9] == PROTO_TCP)
    tcp_input(s, mac, src, dst, ip + ihl, total - ihl, now);
}

void net_input(net_stack *s, const uint8_t *frame, size_t len, uint64_t now) {
  s->stats.rx_frames++;
  if (len < ETH_HDR || len > NET_FRAME_MAX + 4) {
    s->stats.dropped++;
    return;
  }
  if (memcmp(frame, s->mac, 6) != 0 && memcmp(frame, broadcast, 6) != 0)
    return;
  uint8_t src[6];
  memcpy(src, frame + 6, 6);
  if (src[0] & 1) { /* a multicast source is never valid */
    s->stats.dropped++;
    return;
  }
  uint16_t type = get16(frame + 12);
  if (type == ETH_ARP)
    arp_input(s, frame + ETH_HDR, len - ETH_HDR, now);
  else if (type == ETH_IP)
    ip_input(s, src, frame + ETH_HDR, len - ETH_HDR, now);
}
