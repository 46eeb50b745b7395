/* jitsu-dns: the DNS wire format (RFC 1035, RFC 6891), parsed and written
 * by hand: small, bounded, and fuzzed (tests/fuzz/fuzz_dns.c). */
#ifndef JITSU_DNS_WIRE_H
#define JITSU_DNS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_HEADER_LEN 12
#define DNS_MAX_NAME 255 /* wire octets of a name */
#define DNS_MAX_LABEL 63
#define DNS_KEY_MAX 1024  /* a name in key form, escapes and all */
#define DNS_UDP_PLAIN 512 /* without EDNS */
#define DNS_UDP_MAX 1232  /* what we send over UDP at most (DNS flag day) */
#define DNS_TCP_MAX 65535

enum {
  DNS_TYPE_A = 1,
  DNS_TYPE_NS = 2,
  DNS_TYPE_CNAME = 5,
  DNS_TYPE_SOA = 6,
  DNS_TYPE_DS = 43,
  DNS_TYPE_AAAA = 28,
  DNS_TYPE_OPT = 41,
  DNS_TYPE_TSIG = 250,
  DNS_TYPE_ANY = 255,
  DNS_CLASS_IN = 1,
  DNS_CLASS_ANY = 255,
};

enum {
  DNS_NOERROR = 0,
  DNS_FORMERR = 1,
  DNS_SERVFAIL = 2,
  DNS_NXDOMAIN = 3,
  DNS_NOTIMP = 4,
  DNS_REFUSED = 5,
  DNS_NOTAUTH = 9,
  DNS_BADVERS = 16, /* extended: needs EDNS */
  DNS_RCODE_COUNT = 17,
};

typedef struct dns_query {
  uint16_t id;
  uint16_t flags; /* as received */
  uint8_t opcode;
  bool have_question;
  uint8_t qname[DNS_MAX_NAME]; /* uncompressed wire form, case as sent */
  size_t qname_len;
  char key[DNS_KEY_MAX]; /* lower case, dotted, escaped; "" for the root */
  uint16_t qtype, qclass;
  bool edns;
  uint16_t edns_size; /* the client's UDP payload size (at least 512) */
  /* A TSIG record (RFC 8945), the additional section's last: its key and
   * algorithm names (uncompressed wire form), time signed and fudge. */
  bool tsig;
  uint8_t tsig_key[DNS_MAX_NAME], tsig_alg[DNS_MAX_NAME];
  size_t tsig_key_len, tsig_alg_len;
  uint8_t tsig_time[6], tsig_fudge[2];
  uint8_t edns_version;
  bool edns_do;
} dns_query;

/*
 * Parse the query (pkt, len) into (q). Returns DNS_NOERROR; -1 when the
 * packet deserves no answer (shorter than a header, or a response); or an
 * rcode to answer with (DNS_FORMERR, DNS_NOTIMP, DNS_BADVERS) with as much
 * of (q) filled in as could be read (at least the id).
 */
int dns_parse_query(const uint8_t *pkt, size_t len, dns_query *q);

/* Turn the wire name (wire, len) into key form (lower case, dotted, bytes
 * other than [a-z0-9_-] as \DDD) in (out); 0 or -1 if it does not fit. */
int dns_name_key(const uint8_t *wire, size_t len, char *out, size_t size);

/* Turn a name in text form ("Web.Example.", "example.test") into wire
 * form (out, *len); -1 if it is not a valid name. */
int dns_name_from_text(const char *text, uint8_t *out, size_t *len);

/* A response being written into a caller's buffer. */
typedef struct dns_msg {
  uint8_t *buf;
  size_t cap;   /* the buffer's size */
  size_t limit; /* the largest message the client takes */
  size_t len;
  size_t records_at;  /* where the answer section starts */
  uint16_t counts[3]; /* answer, authority, additional */
  bool overflow;      /* a record did not fit within (limit) */
  const dns_query *q;
} dns_msg;

/*
 * Begin a response to (q) in (buf, cap) with (rcode) (the low 4 bits; an
 * extended rcode goes in the OPT record), the AA and RA flags, for a client
 * that takes (limit) bytes. The question is echoed as received. Returns 0.
 */
int dns_msg_begin(dns_msg *m, uint8_t *buf, size_t cap, size_t limit,
                  const dns_query *q, int rcode, bool aa, bool ra);

/* Add an A (4-byte addr) or AAAA (16-byte addr) record owned by the query
 * name; 0, or -1 when it does not fit (the message is then truncated). */
int dns_msg_add_addr(dns_msg *m, int section, uint16_t type,
                     const uint8_t *addr, uint32_t ttl);

/* Add the SOA record of the zone (apex, apex_len) (wire form) with
 * (ns, hostmaster) (wire form) and the timers. */
int dns_msg_add_soa(dns_msg *m, int section, const uint8_t *apex,
                    size_t apex_len, const uint8_t *ns, size_t ns_len,
                    const uint8_t *mbox, size_t mbox_len, uint32_t serial,
                    uint32_t ttl, uint32_t minimum);

/* Add a record of (owner) (wire form) with (rdata) as it is. */
int dns_msg_add_rr(dns_msg *m, int section, const uint8_t *owner,
                   size_t owner_len, uint16_t type, uint32_t ttl,
                   const uint8_t *rdata, size_t rdlen);

/* Add an NS record of (apex) naming (ns). */
int dns_msg_add_ns(dns_msg *m, int section, const uint8_t *apex,
                   size_t apex_len, const uint8_t *ns, size_t ns_len,
                   uint32_t ttl);

/*
 * Finish: add the OPT record if the client used EDNS (with (rcode)'s upper
 * bits), and if any record did not fit, drop every record and set TC.
 * Returns the message length.
 */
size_t dns_msg_finish(dns_msg *m, int rcode);

/*
 * Append to the finished response (buf, len) (of at most cap bytes) the
 * unsigned TSIG record of an error answer to (q)'s TSIG (RFC 8945 5.3.2):
 * its key and algorithm, time signed and fudge, no MAC, (error) (e.g. 17,
 * BADKEY). Returns the new length (len when it does not fit).
 */
size_t dns_msg_append_tsig_error(uint8_t *buf, size_t len, size_t cap,
                                 const dns_query *q, uint16_t error);
#define DNS_TSIG_BADKEY 17

/* Sections for the add functions. */
enum { DNS_ANSWER = 0, DNS_AUTHORITY = 1, DNS_ADDITIONAL = 2 };

/*
 * Make the upstream response (pkt, len) fit a client: set its id to (id)
 * and RA (we recursed for it);
 * if it is longer than (limit), cut it to header and question with TC set.
 * Returns the new length, or 0 if (pkt) is not a response worth passing on.
 */
size_t dns_fit_response(uint8_t *pkt, size_t len, uint16_t id, size_t limit);

#endif
