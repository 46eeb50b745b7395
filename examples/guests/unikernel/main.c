/*
 * The jitsu unikernel: a reference guest for the toolstack that serves one
 * small page over HTTP. PVH boot (../boot/entry.S), a serial console, the
 * local APIC timer for sleeping, virtio-mmio networking (virtio.c) and
 * the stack in net.c.
 *
 * Command line (from the PVH start info; words separated by spaces):
 *   jitsu.ip=A.B.C.D/PREFIX   default 10.0.2.15/24 (QEMU user networking)
 *   jitsu.gw=A.B.C.D          default 10.0.2.2
 *   jitsu.body=TEXT           the page, %XX-decoded (default: a greeting)
 *   jitsu.marker=WORD         printed once the NIC is up (JITSU_READY)
 *   jitsu.exit                end QEMU at once (isa-debug-exit, port 0xf4)
 *   tsc_early_khz=N           the TSC rate (else CPUID, else 2 GHz)
 */
#include <stdint.h>
#include <string.h>

#include "../boot/guest.h"
#include "net.h"
#include "virtio.h"

#define LAPIC 0xfee00000ul
#define IOAPIC1 0xfec00000ul
#define IOAPIC2 0xfec10000ul /* QEMU microvm's second I/O APIC */
#define NIC_VECTOR 0x30
#define SPIN_AFTER_ACTIVITY_MS 2 /* poll hot for a while after a frame */
#define SLEEP_NS 1000000         /* then sleep 1 ms at a time, */
#define SLEEP_IRQ_NS 50000000    /* or 50 ms once NIC interrupts are seen */

void isr_eoi(void);
void isr_fault(void);

/* Interrupt entry points: a fault halts (and says so); every other vector
 * (the APIC timer) just acknowledges. */
__asm__(".text\n"
        ".globl isr_eoi\n"
        "isr_eoi:\n"
        "  pushq %rax\n"
        "  movabsq $0xfee000b0, %rax\n"
        "  movl $0, (%rax)\n"
        "  popq %rax\n"
        "  iretq\n"
        ".globl isr_fault\n"
        "isr_fault:\n"
        "  movw $0x3f8, %dx\n"
        "  movb $'!', %al\n"
        "  outb %al, %dx\n"
        "1: cli\n"
        "  hlt\n"
        "  jmp 1b\n");

static struct {
  uint16_t lo, sel;
  uint8_t ist, type;
  uint16_t mid;
  uint32_t hi, zero;
} __attribute__((packed)) idt[256];

static net_stack stack;
static volatile uint32_t nic_irqs;

struct iframe;
__attribute__((interrupt)) static void nic_isr(struct iframe *f) {
  (void)f;
  nic_irqs++;
  virtio_net_ack();
  *(volatile uint32_t *)(LAPIC + 0xb0) = 0;
}
static uint64_t tsc_khz = 2000000;

static inline uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return (uint64_t)hi << 32 | lo;
}
static void cpuid(uint32_t leaf, uint32_t r[4]) {
  __asm__ volatile("cpuid"
                   : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                   : "a"(leaf), "c"(0));
}
static void lapic_wr(uint32_t reg, uint32_t v) {
  *(volatile uint32_t *)(LAPIC + reg) = v;
}

static uint64_t now_ms(void) {
  return rdtsc() / tsc_khz;
}

static int hexval(char c) {
  return c >= '0' && c <= '9'   ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

/* %XX-decode (n) bytes of (s) into (out); the decoded length. */
static size_t decode(const char *s, size_t n, char *out, size_t cap) {
  size_t k = 0;
  for (size_t i = 0; i < n && k < cap; i++) {
    if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 &&
        hexval(s[i + 2]) >= 0) {
      out[k++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
      i += 2;
    } else {
      out[k++] = s[i];
    }
  }
  return k;
}

static void idt_init(void) {
  for (int v = 0; v < 256; v++) {
    uintptr_t h = (uintptr_t)(v < 32            ? isr_fault
                              : v == NIC_VECTOR ? (void (*)(void))nic_isr
                                                : isr_eoi);
    idt[v].lo = (uint16_t)h;
    idt[v].sel = 0x08;
    idt[v].type = 0x8e; /* present, interrupt gate */
    idt[v].mid = (uint16_t)(h >> 16);
    idt[v].hi = (uint32_t)(h >> 32);
  }
  struct {
    uint16_t limit;
    uint64_t base;
  } __attribute__((packed)) d = {sizeof(idt) - 1, (uintptr_t)idt};
  __asm__ volatile("lidt %0" : : "m"(d));
}

static void lapic_init(void) {
  lapic_wr(0xf0, 0x1ff); /* enabled, spurious vector 0xff */
  lapic_wr(0x3e0, 0xb);  /* timer divide by 1 */
  lapic_wr(0x320, 0x20); /* one-shot, vector 0x20 */
}

static uint32_t ioapic_rd(uintptr_t base, uint32_t reg) {
  *(volatile uint32_t *)base = reg;
  return *(volatile uint32_t *)(base + 0x10);
}
static void ioapic_wr(uintptr_t base, uint32_t reg, uint32_t v) {
  *(volatile uint32_t *)base = reg;
  *(volatile uint32_t *)(base + 0x10) = v;
}

/* Route the NIC's interrupt: microvm wires virtio-mmio transport n to
 * pin n of its second I/O APIC when it has one, else to GSI 5 + n. If the
 * guess is wrong, no interrupt comes and the loop keeps its 1 ms sleeps. */
static void nic_irq_init(int slot) {
  uint32_t ver = ioapic_rd(IOAPIC2, 1);
  uintptr_t base = IOAPIC2;
  uint32_t pin = (uint32_t)slot;
  if (ver == 0 || ver == 0xffffffff) {
    base = IOAPIC1;
    pin = 5 + (uint32_t)slot;
    ver = ioapic_rd(base, 1);
  }
  if (pin > ((ver >> 16) & 0xff))
    return;
  ioapic_wr(base, 0x11 + 2 * pin, 0);                     /* to APIC 0 */
  ioapic_wr(base, 0x10 + 2 * pin, NIC_VECTOR | 1u << 15); /* level */
}

/* Sleep until the APIC timer (about (ns): QEMU's APIC bus runs at 1 GHz)
 * or another interrupt. */
static void sleep_ns(uint32_t ns) {
  lapic_wr(0x380, ns);
  __asm__ volatile("sti; hlt; cli");
}

static void tx(void *ctx, const uint8_t *frame, size_t len) {
  (void)ctx;
  virtio_net_send(frame, len);
}

static void fail(const char *why) {
  serial_puts("JITSU_FAIL ", 64);
  serial_puts(why, 128);
  serial_putc('\n');
  for (;;)
    __asm__ volatile("cli; hlt");
}

void guest_main(uint32_t start_info) {
  const char *cmdline = guest_cmdline(start_info);
  size_t len;
  if (option(cmdline, "jitsu.exit", &len) != NULL)
    outl(DEBUG_EXIT, 0);
  serial_init();

  const char *v;
  if ((v = option(cmdline, "tsc_early_khz", &len)) != NULL)
    tsc_khz = parse_uint(v, len);
  else {
    uint32_t r[4];
    cpuid(0, r);
    if (r[0] >= 0x16) {
      cpuid(0x16, r);
      if ((r[0] & 0xffff) != 0)
        tsc_khz = (uint64_t)(r[0] & 0xffff) * 1000;
    }
  }
  if (tsc_khz < 1000)
    tsc_khz = 2000000;

  uint32_t ip = 0x0a00020f, gw = 0x0a000202, mask = 0xffffff00;
  if ((v = option(cmdline, "jitsu.ip", &len)) != NULL) {
    size_t slash = 0;
    while (slash < len && v[slash] != '/')
      slash++;
    uint64_t prefix =
        slash < len ? parse_uint(v + slash + 1, len - slash - 1) : 24;
    if (net_parse_ip(v, slash, &ip) < 0 || prefix < 1 || prefix > 30)
      fail("bad jitsu.ip");
    mask = (uint32_t)(0xffffffffull << (32 - prefix));
  }
  if ((v = option(cmdline, "jitsu.gw", &len)) != NULL &&
      net_parse_ip(v, len, &gw) < 0)
    fail("bad jitsu.gw");
  static char body[NET_BODY_MAX];
  size_t body_len = 0;
  const char *b = option(cmdline, "jitsu.body", &len);
  if (b != NULL)
    body_len = decode(b, len, body, sizeof(body));

  idt_init();
  lapic_init();
  uint8_t mac[6];
  int slot, version;
  if (virtio_net_init(mac, &slot, &version) < 0)
    fail("no virtio-net device");
  net_init(&stack, mac, ip, mask, gw, b ? body : NULL, body_len, tx, NULL,
           (uint32_t)rdtsc());
  nic_irq_init(slot);
  net_announce(&stack);
  const char *marker = option(cmdline, "jitsu.marker", &len);
  if (marker != NULL && len > 0)
    serial_puts(marker, len);
  else
    serial_puts("JITSU_READY", 64);
  serial_putc('\n');

  uint64_t last_activity = now_ms();
  for (;;) {
    const uint8_t *frame;
    size_t flen;
    uint64_t now = now_ms();
    while ((frame = virtio_net_recv(&flen)) != NULL) {
      net_input(&stack, frame, flen, now);
      virtio_net_done();
      last_activity = now;
    }
    net_poll(&stack, now);
    if (now - last_activity > SPIN_AFTER_ACTIVITY_MS)
      sleep_ns(nic_irqs ? SLEEP_IRQ_NS : SLEEP_NS);
    else
      __asm__ volatile("pause");
  }
}
