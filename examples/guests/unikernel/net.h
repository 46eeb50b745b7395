/*
 * The unikernel's network stack: Ethernet, ARP, IPv4, ICMP echo and TCP
 * with an HTTP/1.1 server on port 80. Plain C with no library calls but
 * memcpy/memset/memcmp, so that it builds for the guest and for the host
 * (unit tests and the fuzz target). Every length, offset and checksum from
 * the wire is checked before use.
 */
#ifndef UNI_NET_H
#define UNI_NET_H

#include <stddef.h>
#include <stdint.h>

#define NET_MTU 1500
#define NET_FRAME_MAX 1514 /* Ethernet header + MTU */
#define NET_MSS 1460
#define NET_ARP_ENTRIES 8
#define NET_CONNS 64      /* the bounded connection table */
#define NET_RX_BUF 2048   /* request bytes held per connection */
#define NET_TX_BUF 4096   /* response bytes held for retransmission */
#define NET_BODY_MAX 1024 /* the page */
#define NET_RTO_MS 200    /* first retransmission time-out */
#define NET_RTO_MAX_MS 3000
#define NET_RETRIES 8 /* then the connection is reset */
#define NET_TIME_WAIT_MS 1000
#define NET_IDLE_MS 60000 /* an established connection with no traffic */
#define HTTP_PORT 80

typedef void (*net_tx_fn)(void *ctx, const uint8_t *frame, size_t len);

enum tcp_state {
  TCP_FREE = 0,
  TCP_SYN_RCVD,
  TCP_ESTABLISHED,
  TCP_CLOSE_WAIT, /* peer sent FIN; our FIN goes with the last response */
  TCP_LAST_ACK,
  TCP_FIN_WAIT_1,
  TCP_FIN_WAIT_2,
  TCP_CLOSING,
  TCP_TIME_WAIT,
};

typedef struct tcp_conn {
  enum tcp_state state;
  uint8_t peer_mac[6];
  uint32_t peer_ip;
  uint16_t peer_port;
  uint32_t snd_una, snd_nxt, snd_wnd; /* snd_una is the first byte in tx */
  uint32_t rcv_nxt;
  uint32_t iss;
  uint16_t peer_mss;
  uint8_t rx[NET_RX_BUF];
  size_t rx_len;
  uint8_t tx[NET_TX_BUF]; /* bytes from snd_una on, not yet acknowledged */
  size_t tx_len;
  int fin_queued; /* send FIN after tx (close after the response) */
  int fin_sent;
  uint64_t rto_at, rto_ms, last_ms;
  int retries;
} tcp_conn;

typedef struct net_stats {
  uint64_t rx_frames, tx_frames, dropped, bad_checksum;
  uint64_t arp_replies, icmp_echoes, conns_opened, conns_reset;
  uint64_t retransmits, requests, responses_200, responses_404, responses_400,
      table_full, evicted;
} net_stats;

typedef struct net_stack {
  uint8_t mac[6];
  uint32_t ip, mask, gw; /* host byte order */
  net_tx_fn tx;
  void *tx_ctx;
  char body[NET_BODY_MAX];
  size_t body_len;
  struct {
    uint32_t ip;
    uint8_t mac[6];
    uint64_t at;
  } arp[NET_ARP_ENTRIES];
  tcp_conn conns[NET_CONNS];
  uint32_t isn; /* the next initial sequence number's seed */
  net_stats stats;
  uint8_t frame[NET_FRAME_MAX]; /* the frame being built */
} net_stack;

/* Set up (s); (body) (may be NULL: a default page) of (body_len) bytes. */
void net_init(net_stack *s, const uint8_t mac[6], uint32_t ip, uint32_t mask,
              uint32_t gw, const char *body, size_t body_len, net_tx_fn tx,
              void *tx_ctx, uint32_t seed);

/* Announce our address (a gratuitous ARP request). */
void net_announce(net_stack *s);

/* One received Ethernet frame. */
void net_input(net_stack *s, const uint8_t *frame, size_t len, uint64_t now);

/* Timers: retransmissions, TIME_WAIT, idle connections. */
void net_poll(net_stack *s, uint64_t now);

/* The Internet checksum of (len) bytes, folded, starting from (sum). */
uint16_t net_checksum(const void *data, size_t len, uint32_t sum);

/* Parse "a.b.c.d" (exactly (len) bytes) into (*ip); 0 or -1. */
int net_parse_ip(const char *text, size_t len, uint32_t *ip);

/* Live connections. */
int net_conns_live(const net_stack *s);

#endif
