/*
 * virtio-mmio network device for the unikernel: the transports QEMU's
 * microvm machine places at 0xfeb00000 + n * 0x200 are probed for one of
 * device type 1 (network), legacy (version 1) or modern (version 2). Two
 * queues (receive, transmit) of QSIZE descriptors, polled.
 */
#include "virtio.h"

#include <string.h>

#define MMIO_BASE 0xfeb00000ul
#define MMIO_STRIDE 0x200
#define MMIO_SLOTS 32
#define QSIZE 64
#define BUF_SIZE 2048

/* Registers. */
#define R_MAGIC 0x000
#define R_VERSION 0x004
#define R_DEVICE_ID 0x008
#define R_DEV_FEATURES 0x010
#define R_DEV_FEATURES_SEL 0x014
#define R_DRV_FEATURES 0x020
#define R_DRV_FEATURES_SEL 0x024
#define R_GUEST_PAGE_SIZE 0x028 /* legacy */
#define R_QUEUE_SEL 0x030
#define R_QUEUE_NUM_MAX 0x034
#define R_QUEUE_NUM 0x038
#define R_QUEUE_ALIGN 0x03c /* legacy */
#define R_QUEUE_PFN 0x040   /* legacy */
#define R_QUEUE_READY 0x044
#define R_QUEUE_NOTIFY 0x050
#define R_INTERRUPT_STATUS 0x060
#define R_INTERRUPT_ACK 0x064
#define R_STATUS 0x070
#define R_QUEUE_DESC_LOW 0x080
#define R_QUEUE_DESC_HIGH 0x084
#define R_QUEUE_DRIVER_LOW 0x090
#define R_QUEUE_DRIVER_HIGH 0x094
#define R_QUEUE_DEVICE_LOW 0x0a0
#define R_QUEUE_DEVICE_HIGH 0x0a4
#define R_CONFIG 0x100

#define S_ACK 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define F_MAC (1u << 5)
#define F_VERSION_1_HI 1u /* bit 32 */
#define D_WRITE 2

struct desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags, next;
};
struct avail {
  uint16_t flags, idx, ring[QSIZE], used_event;
};
struct used_elem {
  uint32_t id, len;
};
struct used {
  uint16_t flags, idx;
  struct used_elem ring[QSIZE];
  uint16_t avail_event;
};

/* The legacy layout: descriptors and the available ring, then the used
 * ring on the next 4 KiB boundary. */
struct vq {
  struct desc desc[QSIZE];
  struct avail avail;
  uint8_t pad[4096 - sizeof(struct desc) * QSIZE - sizeof(struct avail)];
  struct used used;
  uint16_t last_used;
} __attribute__((aligned(4096)));

static struct vq rxq, txq;
static uint8_t rx_buf[QSIZE][BUF_SIZE] __attribute__((aligned(64)));
static uint8_t tx_buf[QSIZE][BUF_SIZE] __attribute__((aligned(64)));
static uintptr_t base;
static size_t hdr_len;               /* 10 (legacy) or 12 (modern) */
static uint16_t rx_pending = 0xffff; /* used index of the frame handed out */

static uint32_t rd(uint32_t reg) {
  return *(volatile uint32_t *)(base + reg);
}
static void wr(uint32_t reg, uint32_t v) {
  *(volatile uint32_t *)(base + reg) = v;
}
static void barrier(void) {
  __asm__ volatile("mfence" ::: "memory");
}

static int queue_setup(int index, struct vq *q, int version) {
  wr(R_QUEUE_SEL, (uint32_t)index);
  uint32_t max = rd(R_QUEUE_NUM_MAX);
  if (max < QSIZE)
    return -1;
  wr(R_QUEUE_NUM, QSIZE);
  uintptr_t a = (uintptr_t)q;
  if (version == 1) {
    wr(R_QUEUE_ALIGN, 4096);
    wr(R_QUEUE_PFN, (uint32_t)(a >> 12));
  } else {
    wr(R_QUEUE_DESC_LOW, (uint32_t)a);
    wr(R_QUEUE_DESC_HIGH, (uint32_t)(a >> 32));
    wr(R_QUEUE_DRIVER_LOW, (uint32_t)(uintptr_t)&q->avail);
    wr(R_QUEUE_DRIVER_HIGH, (uint32_t)((uintptr_t)&q->avail >> 32));
    wr(R_QUEUE_DEVICE_LOW, (uint32_t)(uintptr_t)&q->used);
    wr(R_QUEUE_DEVICE_HIGH, (uint32_t)((uintptr_t)&q->used >> 32));
    wr(R_QUEUE_READY, 1);
  }
  return 0;
}

int virtio_net_init(uint8_t mac[6], int *slot, int *version) {
  for (int i = 0; i < MMIO_SLOTS; i++) {
    base = MMIO_BASE + (uintptr_t)i * MMIO_STRIDE;
    if (rd(R_MAGIC) != 0x74726976 || rd(R_DEVICE_ID) != 1)
      continue;
    uint32_t v = rd(R_VERSION);
    if (v != 1 && v != 2)
      continue;
    *slot = i;
    *version = (int)v;
    wr(R_STATUS, 0);
    wr(R_STATUS, S_ACK);
    wr(R_STATUS, S_ACK | S_DRIVER);
    wr(R_DEV_FEATURES_SEL, 0);
    uint32_t f = rd(R_DEV_FEATURES) & F_MAC;
    wr(R_DRV_FEATURES_SEL, 0);
    wr(R_DRV_FEATURES, f);
    if (v == 2) {
      wr(R_DEV_FEATURES_SEL, 1);
      if (!(rd(R_DEV_FEATURES) & F_VERSION_1_HI))
        return -1;
      wr(R_DRV_FEATURES_SEL, 1);
      wr(R_DRV_FEATURES, F_VERSION_1_HI);
      wr(R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
      if (!(rd(R_STATUS) & S_FEATURES_OK))
        return -1;
      hdr_len = 12;
    } else {
      wr(R_GUEST_PAGE_SIZE, 4096);
      hdr_len = 10;
    }
    if (queue_setup(0, &rxq, (int)v) < 0 || queue_setup(1, &txq, (int)v) < 0)
      return -1;
    for (uint16_t d = 0; d < QSIZE; d++) {
      rxq.desc[d].addr = (uintptr_t)rx_buf[d];
      rxq.desc[d].len = BUF_SIZE;
      rxq.desc[d].flags = D_WRITE;
      rxq.avail.ring[d] = d;
      txq.desc[d].addr = (uintptr_t)tx_buf[d];
    }
    barrier();
    rxq.avail.idx = QSIZE;
    barrier();
    wr(R_STATUS, rd(R_STATUS) | S_DRIVER_OK);
    wr(R_QUEUE_NOTIFY, 0);
    for (int k = 0; k < 6; k++)
      mac[k] = f & F_MAC ? *(volatile uint8_t *)(base + R_CONFIG + k)
                         : (uint8_t)(k == 0   ? 0x52
                                     : k == 1 ? 0x54
                                              : k);
    return 0;
  }
  return -1;
}

const uint8_t *virtio_net_recv(size_t *len) {
  if (base == 0 || rx_pending != 0xffff)
    return NULL;
  barrier();
  if (rxq.last_used == *(volatile uint16_t *)&rxq.used.idx)
    return NULL;
  struct used_elem e = rxq.used.ring[rxq.last_used % QSIZE];
  rx_pending = rxq.last_used;
  if (e.id >= QSIZE || e.len < hdr_len || e.len > BUF_SIZE) {
    virtio_net_done(); /* a device that lies: skip the entry */
    return NULL;
  }
  *len = e.len - hdr_len;
  return rx_buf[e.id] + hdr_len;
}

void virtio_net_done(void) {
  if (rx_pending == 0xffff)
    return;
  struct used_elem e = rxq.used.ring[rx_pending % QSIZE];
  rxq.last_used++;
  rx_pending = 0xffff;
  if (e.id < QSIZE) { /* give the buffer back */
    rxq.avail.ring[rxq.avail.idx % QSIZE] = (uint16_t)e.id;
    barrier();
    rxq.avail.idx++;
    barrier();
    wr(R_QUEUE_NOTIFY, 0);
  }
  virtio_net_ack();
}

void virtio_net_ack(void) {
  uint32_t st = base ? rd(R_INTERRUPT_STATUS) : 0;
  if (st)
    wr(R_INTERRUPT_ACK, st);
}

int virtio_net_send(const uint8_t *frame, size_t len) {
  if (base == 0 || len + hdr_len > BUF_SIZE)
    return -1;
  barrier();
  txq.last_used = *(volatile uint16_t *)&txq.used.idx; /* reclaim */
  if ((uint16_t)(txq.avail.idx - txq.last_used) >= QSIZE)
    return -1;
  uint16_t d = txq.avail.idx % QSIZE;
  memset(tx_buf[d], 0, hdr_len);
  memcpy(tx_buf[d] + hdr_len, frame, len);
  txq.desc[d].len = (uint32_t)(len + hdr_len);
  txq.desc[d].flags = 0;
  txq.avail.ring[d] = d;
  barrier();
  txq.avail.idx++;
  barrier();
  wr(R_QUEUE_NOTIFY, 1);
  return 0;
}
