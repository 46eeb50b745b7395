/* jitsu-dns: the internal header of the DNS frontend. */
#ifndef JITSU_DNS_H
#define JITSU_DNS_H

#include <jitsu/jitsu.h>

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "dns_wire.h"

#define DNS_MAX_ADDRS 64
#define DNS_WORKERS_MAX 64 /* workers = N: at most this many */

/* What jitsu-dns knows of one vm with names. */
typedef struct dns_vm {
  struct dns_vm *next;
  struct dns_vm *by_vm_next; /* in dns_zones.by_vm */
  jitsu_vm *vm;
  uint8_t a[DNS_MAX_ADDRS][4];
  uint8_t aaaa[DNS_MAX_ADDRS][16];
  unsigned n_a, n_aaaa;
  uint32_t ttl;       /* seconds */
  uint64_t hold_ms;   /* hold answers this long for a cold guest; 0: none */
  bool hold_servfail; /* at the hold limit: SERVFAIL, not a short answer */
  uint64_t delay_ms;  /* wait this long after ready before answering */
  uint64_t idle_ms;   /* put away after this long without queries; 0: never */
  jitsu_idle_action idle_action;
  bool ours; /* a query summoned it: our idle policy applies */
  /* An unheld answer's summon waits (from a stopped, failed or suspended
   * guest until it is ready or ends): more unheld answers need none. */
  bool coming;
  uint64_t last_query_ms;
  /* Shared with the workers: the main loop sets (ready) as the guest's
   * state changes; a worker answers from it and notes when it did. */
  atomic_bool ready;
  _Atomic uint64_t worker_query_ms;
} dns_vm;

/* A static record of a zone file, as read (uncompressed wire rdata). */
typedef struct dns_rr {
  struct dns_rr *next;
  uint16_t type;
  uint16_t rdlen;
  uint32_t ttl;
  uint8_t rdata[];
} dns_rr;

/* A zone we are authoritative for. */
typedef struct dns_zone {
  struct dns_zone *next;
  char key[DNS_KEY_MAX];
  uint8_t apex[DNS_MAX_NAME], ns[DNS_MAX_NAME], mbox[DNS_MAX_NAME];
  size_t apex_len, ns_len, mbox_len;
  char *file;    /* its zone file, or NULL */
  dns_rr *soa;   /* the file's SOA (else one is made up), at the apex */
  bool has_ns;   /* the file has NS records at the apex */
  bool has_cuts; /* and NS records below it: delegations */
} dns_zone;

/* The names: (key) -> vm, and the static records of a zone file (none of
 * either: a name that only has children). */
typedef struct dns_name {
  struct dns_name *next;
  dns_vm *dv; /* NULL: no vm */
  dns_zone *zone;
  dns_rr *rrs;   /* static records, in file order */
  uint8_t *wire; /* the owner in wire form, when it has static records */
  size_t wire_len;
  unsigned line; /* the line of its first static record */
  bool cut;      /* NS records below the apex: a delegation point */
  char key[];
} dns_name;

/* The largest zone file read (bytes). */
#define DNS_ZONE_FILE_MAX (16u << 20)

typedef struct dns_zones {
  dns_name **buckets; /* doubled when the names outnumber them twice */
  size_t n_buckets, n_names;
  jitsu_hash_key key; /* of the names' hash */
  dns_zone *zones;
  dns_vm *vms;
  dns_vm **by_vm; /* n_vm_buckets buckets, keyed by the jitsu_vm pointer */
  size_t n_vm_buckets;
} dns_zones;

/* Defaults and global settings, from [dns] and the command line. */
typedef struct dns_settings {
  uint32_t ttl;
  uint64_t hold_ms;
  bool hold_servfail;
  uint64_t delay_ms;
  int64_t idle_ms; /* -1: twice the ttl */
  jitsu_idle_action idle_action;
  uint32_t negative_ttl;
  char ns[DNS_KEY_MAX], hostmaster[DNS_KEY_MAX]; /* "" = derived per zone */
  unsigned rate_per_s, rate_burst;
  unsigned rate_prefix6; /* IPv6 sources share a bucket per this prefix */
  unsigned max_pending, max_tcp;
} dns_settings;

/* Build (z) from the vms of (ctx) and the [dns] zones, skipping (skip);
 * log problems through (ctx). 0 or -ENOMEM; -EINVAL with (why) set. */
int dns_zones_build(dns_zones *z, jitsu_ctx *ctx, const dns_settings *s,
                    jitsu_vm *skip, char *why, size_t why_size);
void dns_zones_free(dns_zones *z);

/* Check one [dns] zone value ("NAME" or "NAME file=PATH") as
 * dns_zones_build() takes it, its zone file read and parsed; nothing is
 * kept. 0, or a negative errno value with (why) set. */
int dns_zone_check(const char *value, char *why, size_t why_size);

/* Look (key) up: 1 with (*name) when it exists, 0 with (*zone) set when it
 * is inside a zone of ours but does not exist, -1 when it is not ours. */
int dns_zones_lookup(const dns_zones *z, const char *key, dns_name **name,
                     dns_zone **zone);

/* The delegation point that (key) of (zone) is at or under, or NULL. */
dns_name *dns_zones_cut(const dns_zones *z, const dns_zone *zone,
                        const char *key);

/* The dns_vm of (vm), or NULL; O(1). */
dns_vm *dns_zones_vm(const dns_zones *z, const jitsu_vm *vm);

/* Forwarding through c-ares (dns_forward.c). */
typedef struct dns_forwarder dns_forwarder;
typedef void (*dns_forward_cb)(void *arg, const uint8_t *answer, size_t len);
/* (servers): "IP[:PORT]" list, comma-separated, or NULL for resolv.conf. */
int dns_forwarder_new(uv_loop_t *loop, const char *servers, uint64_t timeout_ms,
                      dns_forwarder **out, char *why, size_t why_size);
/* Send (query, len); (cb) gets the answer, or NULL on failure. */
void dns_forward(dns_forwarder *f, const uint8_t *query, size_t len,
                 dns_forward_cb cb, void *arg);
void dns_forwarder_free(dns_forwarder *f);

#endif

/* The server (dns_server.c). */
typedef struct dns_server dns_server;

typedef struct dns_server_config {
  dns_settings settings;
  const char *const *listen; /* "HOST:PORT" / "[V6]:PORT", NULL-terminated */
  const char *forwarders;    /* comma-separated "IP[:PORT]", or NULL */
  bool forward;              /* forward at all */
  uint64_t forward_timeout_ms;
  const char *const *allow;        /* CIDRs that may use forwarding */
  const char *const *summon_allow; /* CIDRs that may summon; NULL: all */
  uint64_t udp_buffer;             /* SO_RCVBUF asked for each UDP socket */
  unsigned workers; /* loops answering UDP (0 or 1: the main loop alone) */
} dns_server_config;

/* Create the server on (ctx)'s loop and bind its sockets; 0 or an error
 * with (why) set. */
int dns_server_new(jitsu_ctx *ctx, const dns_server_config *cfg,
                   dns_server **out, char *why, size_t why_size);
/* Close the sockets; held queries get no answer. Then, once the context is
 * freed (no libjitsu callback can come any more), dns_server_destroy()
 * frees the rest. */
void dns_server_free(dns_server *srv);
void dns_server_destroy(dns_server *srv);

/* Rebuild the names and zones (after a reload); logs a problem and keeps
 * the old ones then. */
void dns_server_rebuild(dns_server *srv);
