/* The DNS wire format: parsing queries, writing responses. Every length
 * read from the wire is checked against the packet before it is used. */
#include "dns_wire.h"

#include <stdio.h>
#include <string.h>

#define MAX_POINTERS 64

static uint16_t get16(const uint8_t *p) {
  return (uint16_t)((p[0] << 8) | p[1]);
}

static void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v) {
  put16(p, (uint16_t)(v >> 16));
  put16(p + 2, (uint16_t)v);
}

/* Read the name at (*off) of (pkt, len), following compression pointers
 * (each must point before the label that holds it), into (out, *out_len).
 * (*off) moves past the name as it stands at (*off). 0 or -1. */
static int read_name(const uint8_t *pkt, size_t len, size_t *off, uint8_t *out,
                     size_t *out_len) {
  size_t pos = *off, n = 0, end = 0;
  int jumps = 0;
  for (;;) {
    if (pos >= len)
      return -1;
    uint8_t c = pkt[pos];
    if ((c & 0xC0) == 0xC0) {
      if (pos + 1 >= len || ++jumps > MAX_POINTERS)
        return -1;
      size_t target = (size_t)((c & 0x3F) << 8 | pkt[pos + 1]);
      if (target >= pos) /* forward or self: a loop in the making */
        return -1;
      if (end == 0)
        end = pos + 2;
      pos = target;
      continue;
    }
    if ((c & 0xC0) != 0) /* 0x40 and 0x80: reserved label types */
      return -1;
    if (c > DNS_MAX_LABEL || pos + 1 + c > len || n + 1 + c > DNS_MAX_NAME)
      return -1;
    memcpy(out + n, pkt + pos, (size_t)c + 1);
    n += (size_t)c + 1;
    pos += (size_t)c + 1;
    if (c == 0)
      break;
  }
  *out_len = n;
  *off = end ? end : pos;
  return 0;
}

/* Skip a resource record at (*off); return its type and class, or -1. */
static int skip_rr(const uint8_t *pkt, size_t len, size_t *off, uint16_t *type,
                   uint16_t *klass, uint32_t *ttl, size_t *rdata,
                   uint16_t *rdlen) {
  uint8_t name[DNS_MAX_NAME];
  size_t nlen;
  if (read_name(pkt, len, off, name, &nlen) < 0 || *off + 10 > len)
    return -1;
  const uint8_t *p = pkt + *off;
  *type = get16(p);
  *klass = get16(p + 2);
  *ttl = (uint32_t)get16(p + 4) << 16 | get16(p + 6);
  *rdlen = get16(p + 8);
  *rdata = *off + 10;
  if (*rdata + *rdlen > len)
    return -1;
  *off = *rdata + *rdlen;
  return nlen == 1 ? 1 : 0; /* 1: the owner is the root */
}

int dns_name_key(const uint8_t *wire, size_t len, char *out, size_t size) {
  size_t pos = 0, o = 0;
  while (pos < len && wire[pos] != 0) {
    uint8_t c = wire[pos++];
    if (pos + c > len)
      return -1;
    if (o > 0) {
      if (o + 1 >= size)
        return -1;
      out[o++] = '.';
    }
    for (uint8_t i = 0; i < c; i++) {
      uint8_t b = wire[pos++];
      if (b >= 'A' && b <= 'Z')
        b = (uint8_t)(b - 'A' + 'a');
      if ((b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') || b == '-' ||
          b == '_') {
        if (o + 1 >= size)
          return -1;
        out[o++] = (char)b;
      } else {
        if (o + 4 >= size)
          return -1;
        o += (size_t)snprintf(out + o, size - o, "\\%03u", b);
      }
    }
  }
  if (o >= size)
    return -1;
  out[o] = '\0';
  return 0;
}

int dns_name_from_text(const char *text, uint8_t *out, size_t *len) {
  size_t n = 0;
  const char *p = text;
  if (strcmp(p, ".") == 0)
    p++;
  while (*p) {
    const char *dot = strchr(p, '.');
    size_t l = dot ? (size_t)(dot - p) : strlen(p);
    if (l == 0 || l > DNS_MAX_LABEL || n + 1 + l + 1 > DNS_MAX_NAME)
      return -1;
    for (size_t i = 0; i < l; i++) {
      char c = p[i];
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '-' || c == '_'))
        return -1;
    }
    out[n++] = (uint8_t)l;
    memcpy(out + n, p, l);
    n += l;
    p += l;
    if (*p == '.')
      p++;
  }
  out[n++] = 0;
  *len = n;
  return 0;
}

int dns_parse_query(const uint8_t *pkt, size_t len, dns_query *q) {
  memset(q, 0, sizeof(*q));
  if (len < DNS_HEADER_LEN)
    return -1;
  q->id = get16(pkt);
  q->flags = get16(pkt + 2);
  q->opcode = (uint8_t)((q->flags >> 11) & 0xF);
  if (q->flags & 0x8000) /* QR: a response, never answer it */
    return -1;
  uint16_t qd = get16(pkt + 4), an = get16(pkt + 6), ns = get16(pkt + 8),
           ar = get16(pkt + 10);
  if (q->opcode != 0)
    return DNS_NOTIMP;
  if (qd != 1)
    return DNS_FORMERR;
  size_t off = DNS_HEADER_LEN;
  if (read_name(pkt, len, &off, q->qname, &q->qname_len) < 0 || off + 4 > len)
    return DNS_FORMERR;
  q->qtype = get16(pkt + off);
  q->qclass = get16(pkt + off + 2);
  off += 4;
  if (dns_name_key(q->qname, q->qname_len, q->key, sizeof(q->key)) < 0)
    return DNS_FORMERR;
  q->have_question = true;
  /* Answer and authority records have no place in a query, but are
   * allowed: skip them, then look for one OPT in the additional section. */
  uint32_t total = (uint32_t)an + ns + ar;
  for (uint32_t i = 0; i < total; i++) {
    uint16_t type, klass, rdlen;
    uint32_t ttl;
    size_t rdata, owner = off;
    int root = skip_rr(pkt, len, &off, &type, &klass, &ttl, &rdata, &rdlen);
    if (root < 0)
      return DNS_FORMERR;
    if (type == DNS_TYPE_TSIG) {
      /* RFC 8945 5.1: the last record, class ANY, or the query is bad. */
      if (i != total - 1 || i < (uint32_t)an + ns || klass != 255)
        return DNS_FORMERR;
      size_t o = owner, a = rdata;
      if (read_name(pkt, len, &o, q->tsig_key, &q->tsig_key_len) < 0 ||
          read_name(pkt, rdata + rdlen, &a, q->tsig_alg, &q->tsig_alg_len) <
              0 ||
          a + 8 > rdata + rdlen)
        return DNS_FORMERR;
      memcpy(q->tsig_time, pkt + a, 6);
      memcpy(q->tsig_fudge, pkt + a + 6, 2);
      q->tsig = true;
      continue;
    }
    if (type != DNS_TYPE_OPT)
      continue;
    if (i < (uint32_t)an + ns || q->edns || root != 1)
      return DNS_FORMERR; /* RFC 6891: one OPT, owned by the root */
    q->edns = true;
    q->edns_size = klass < DNS_UDP_PLAIN ? DNS_UDP_PLAIN : klass;
    q->edns_version = (uint8_t)(ttl >> 16);
    q->edns_do = (ttl & 0x8000) != 0;
  }
  if (q->edns && q->edns_version != 0)
    return DNS_BADVERS;
  return DNS_NOERROR;
}

size_t dns_msg_append_tsig_error(uint8_t *buf, size_t len, size_t cap,
                                 const dns_query *q, uint16_t error) {
  size_t rdlen = q->tsig_alg_len + 6 + 2 + 2 + 2 + 2 + 2;
  size_t need = q->tsig_key_len + 10 + rdlen;
  if (!q->tsig || len < DNS_HEADER_LEN || len + need > cap)
    return len;
  uint8_t *p = buf + len;
  memcpy(p, q->tsig_key, q->tsig_key_len);
  p += q->tsig_key_len;
  put16(p, DNS_TYPE_TSIG);
  put16(p + 2, 255);   /* ANY */
  memset(p + 4, 0, 4); /* TTL */
  put16(p + 8, (uint16_t)rdlen);
  p += 10;
  memcpy(p, q->tsig_alg, q->tsig_alg_len);
  p += q->tsig_alg_len;
  memcpy(p, q->tsig_time, 6);
  memcpy(p + 6, q->tsig_fudge, 2);
  put16(p + 8, 0); /* no MAC: the answer is unsigned */
  put16(p + 10, q->id);
  put16(p + 12, error);
  put16(p + 14, 0); /* no other data */
  put16(buf + 10, (uint16_t)(get16(buf + 10) + 1));
  return len + need;
}

int dns_msg_begin(dns_msg *m, uint8_t *buf, size_t cap, size_t limit,
                  const dns_query *q, int rcode, bool aa, bool ra) {
  memset(m, 0, sizeof(*m));
  m->buf = buf;
  m->cap = cap;
  m->limit = limit < cap ? limit : cap;
  m->q = q;
  uint16_t flags = 0x8000 | (uint16_t)(q->opcode << 11) | (q->flags & 0x0100) |
                   (q->flags & 0x0010) | (uint16_t)(rcode & 0xF);
  if (aa)
    flags |= 0x0400;
  if (ra)
    flags |= 0x0080;
  put16(buf, q->id);
  put16(buf + 2, flags);
  memset(buf + 4, 0, 8);
  m->len = DNS_HEADER_LEN;
  if (q->have_question && m->len + q->qname_len + 4 <= cap) {
    put16(buf + 4, 1);
    memcpy(buf + m->len, q->qname, q->qname_len);
    m->len += q->qname_len;
    put16(buf + m->len, q->qtype);
    put16(buf + m->len + 2, q->qclass);
    m->len += 4;
  }
  m->records_at = m->len;
  return 0;
}

/* Room for (n) more bytes and an OPT record (11 bytes) within the limit. */
static bool room(dns_msg *m, size_t n) {
  size_t opt = m->q->edns ? 11 : 0;
  if (m->overflow || m->len + n + opt > m->limit) {
    m->overflow = true;
    return false;
  }
  return true;
}

/* Write an owner name: a pointer into the question when (name) is a
 * suffix of the query name, else the name itself. */
static size_t owner_len(dns_msg *m, const uint8_t *name, size_t len,
                        uint16_t *ptr) {
  const dns_query *q = m->q;
  *ptr = 0;
  if (q->have_question && len <= q->qname_len) {
    size_t at = q->qname_len - len;
    /* The suffix must start at a label boundary of the query name. */
    size_t pos = 0;
    while (pos < at)
      pos += (size_t)q->qname[pos] + 1;
    if (pos == at) {
      char a[DNS_KEY_MAX], b[DNS_KEY_MAX];
      if (dns_name_key(q->qname + at, len, a, sizeof(a)) == 0 &&
          dns_name_key(name, len, b, sizeof(b)) == 0 && strcmp(a, b) == 0 &&
          DNS_HEADER_LEN + at < 0x3FFF) {
        *ptr = (uint16_t)(0xC000 | (DNS_HEADER_LEN + at));
        return 2;
      }
    }
  }
  return len;
}

static void write_owner(dns_msg *m, const uint8_t *name, size_t len,
                        uint16_t ptr) {
  if (ptr != 0) {
    put16(m->buf + m->len, ptr);
    m->len += 2;
  } else {
    memcpy(m->buf + m->len, name, len);
    m->len += len;
  }
}

static int add_rr(dns_msg *m, int section, const uint8_t *owner,
                  size_t owner_wire_len, uint16_t type, uint32_t ttl,
                  const uint8_t *rdata, size_t rdlen) {
  uint16_t ptr;
  size_t olen = owner_len(m, owner, owner_wire_len, &ptr);
  if (!room(m, olen + 10 + rdlen))
    return -1;
  write_owner(m, owner, owner_wire_len, ptr);
  uint8_t *p = m->buf + m->len;
  put16(p, type);
  put16(p + 2, DNS_CLASS_IN);
  put32(p + 4, ttl);
  put16(p + 8, (uint16_t)rdlen);
  memcpy(p + 10, rdata, rdlen);
  m->len += 10 + rdlen;
  m->counts[section]++;
  return 0;
}

int dns_msg_add_rr(dns_msg *m, int section, const uint8_t *owner,
                   size_t owner_len, uint16_t type, uint32_t ttl,
                   const uint8_t *rdata, size_t rdlen) {
  return add_rr(m, section, owner, owner_len, type, ttl, rdata, rdlen);
}

int dns_msg_add_addr(dns_msg *m, int section, uint16_t type,
                     const uint8_t *addr, uint32_t ttl) {
  return add_rr(m, section, m->q->qname, m->q->qname_len, type, ttl, addr,
                type == DNS_TYPE_A ? 4 : 16);
}

/* (name) compressed into (out) (at least (len) bytes): its longest suffix
 * that is a suffix of the query name becomes a pointer there ("ns1" and a
 * pointer to the question's "example.test"). The length written. */
static size_t compress_name(dns_msg *m, const uint8_t *name, size_t len,
                            uint8_t *out) {
  for (size_t at = 0; at < len && name[at] != 0; at += (size_t)name[at] + 1) {
    uint16_t ptr;
    if (owner_len(m, name + at, len - at, &ptr) == 2) {
      memcpy(out, name, at);
      put16(out + at, ptr);
      return at + 2;
    }
  }
  memcpy(out, name, len);
  return len;
}

int dns_msg_add_soa(dns_msg *m, int section, const uint8_t *apex,
                    size_t apex_len, const uint8_t *ns, size_t ns_len,
                    const uint8_t *mbox, size_t mbox_len, uint32_t serial,
                    uint32_t ttl, uint32_t minimum) {
  uint8_t rdata[2 * DNS_MAX_NAME + 20];
  ns_len = compress_name(m, ns, ns_len, rdata);
  mbox_len = compress_name(m, mbox, mbox_len, rdata + ns_len);
  uint8_t *t = rdata + ns_len + mbox_len;
  put32(t, serial);
  put32(t + 4, 3600);   /* refresh */
  put32(t + 8, 600);    /* retry */
  put32(t + 12, 86400); /* expire */
  put32(t + 16, minimum);
  return add_rr(m, section, apex, apex_len, DNS_TYPE_SOA, ttl, rdata,
                ns_len + mbox_len + 20);
}

int dns_msg_add_ns(dns_msg *m, int section, const uint8_t *apex,
                   size_t apex_len, const uint8_t *ns, size_t ns_len,
                   uint32_t ttl) {
  uint8_t rdata[DNS_MAX_NAME];
  return add_rr(m, section, apex, apex_len, DNS_TYPE_NS, ttl, rdata,
                compress_name(m, ns, ns_len, rdata));
}

size_t dns_msg_finish(dns_msg *m, int rcode) {
  if (m->overflow) {
    /* Truncated: the client retries over TCP; send no partial RRsets. */
    m->len = m->records_at;
    memset(m->counts, 0, sizeof(m->counts));
    m->buf[2] |= 0x02;
  }
  if (m->q->edns && m->len + 11 <= m->cap) {
    uint8_t *p = m->buf + m->len;
    p[0] = 0; /* root */
    put16(p + 1, DNS_TYPE_OPT);
    put16(p + 3, DNS_UDP_MAX);
    p[5] = (uint8_t)(rcode >> 4); /* extended rcode */
    p[6] = 0;                     /* version */
    put16(p + 7, m->q->edns_do ? 0x8000 : 0);
    put16(p + 9, 0);
    m->len += 11;
    m->counts[DNS_ADDITIONAL]++;
  }
  put16(m->buf + 6, m->counts[DNS_ANSWER]);
  put16(m->buf + 8, m->counts[DNS_AUTHORITY]);
  put16(m->buf + 10, m->counts[DNS_ADDITIONAL]);
  return m->len;
}

size_t dns_fit_response(uint8_t *pkt, size_t len, uint16_t id, size_t limit) {
  if (len < DNS_HEADER_LEN || !(pkt[2] & 0x80))
    return 0;
  put16(pkt, id);
  pkt[3] |= 0x80; /* RA: we recursed for this client */
  if (len <= limit)
    return len;
  /* Keep the header and the question; set TC. */
  size_t off = DNS_HEADER_LEN;
  uint8_t name[DNS_MAX_NAME];
  size_t nlen;
  if (get16(pkt + 4) == 1) {
    if (read_name(pkt, len, &off, name, &nlen) < 0 || off + 4 > len)
      return 0;
    off += 4;
  } else {
    put16(pkt + 4, 0);
  }
  if (off > limit)
    return 0;
  pkt[2] |= 0x02;
  memset(pkt + 6, 0, 6);
  return off;
}
