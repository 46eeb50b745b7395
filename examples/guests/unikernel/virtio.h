/* The unikernel's virtio-mmio network device (legacy and modern). */
#ifndef UNI_VIRTIO_H
#define UNI_VIRTIO_H

#include <stddef.h>
#include <stdint.h>

/* Probe the microvm transport window for a network device and set it up:
 * 0 with (mac) filled, or -1. (slot) gets the transport's index. */
int virtio_net_init(uint8_t mac[6], int *slot, int *version);

/* The next received frame, or NULL; hand it back with virtio_net_done(). */
const uint8_t *virtio_net_recv(size_t *len);
void virtio_net_done(void);

/* Acknowledge the device's interrupt. Called from the interrupt handler:
 * it saves every register it uses (clang requires it of such callees;
 * GCC saves the caller's registers in the handler either way). */
__attribute__((no_caller_saved_registers)) void virtio_net_ack(void);

/* Queue one frame (copied); -1 when the ring is full. */
int virtio_net_send(const uint8_t *frame, size_t len);

#endif
