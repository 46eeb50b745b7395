/*
 * What the project's freestanding guests (pvh, unikernel) share: port I/O,
 * the serial console (COM1), and the PVH start info's command line.
 * Header-only and libc-free: each guest is one freestanding program.
 */
#ifndef JITSU_GUEST_H
#define JITSU_GUEST_H

#include <stddef.h>
#include <stdint.h>

#define COM1 0x3f8
#define DEBUG_EXIT 0xf4 /* -device isa-debug-exit,iobase=0xf4,iosize=0x04 */
#define HVM_START_MAGIC 0x336ec578

struct hvm_start_info {
  uint32_t magic;
  uint32_t version;
  uint32_t flags;
  uint32_t nr_modules;
  uint64_t modlist_paddr;
  uint64_t cmdline_paddr;
  uint64_t rsdp_paddr;
};

/* Called by ../boot/entry.S in long mode. */
void guest_main(uint32_t start_info);

static inline void outb(uint16_t port, uint8_t v) {
  __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port) {
  uint8_t v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}

static inline void outl(uint16_t port, uint32_t v) {
  __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

/* The command line from the start info at (addr), or "" (below 4 GiB:
 * what the boot code maps). */
static inline const char *guest_cmdline(uint32_t addr) {
  const struct hvm_start_info *si =
      (const struct hvm_start_info *)(uintptr_t)addr;
  if (si && si->magic == HVM_START_MAGIC && si->cmdline_paddr != 0 &&
      si->cmdline_paddr < (1ull << 32))
    return (const char *)(uintptr_t)si->cmdline_paddr;
  return "";
}

static inline void serial_init(void) {
  outb(COM1 + 1, 0x00); /* no interrupts */
  outb(COM1 + 3, 0x03); /* 8N1 */
}

static inline void serial_putc(char c) {
  for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
    ;
  outb(COM1, (uint8_t)c);
}

/* Up to (n) bytes of (s), stopping at a NUL. */
static inline void serial_puts(const char *s, size_t n) {
  for (size_t i = 0; i < n && s[i]; i++)
    serial_putc(s[i]);
}

static inline size_t word_len(const char *s) {
  size_t n = 0;
  while (s[n] != '\0' && s[n] != ' ')
    n++;
  return n;
}

/* The value of NAME=VALUE in (cmdline), with (*len) set; "" for a bare
 * NAME; NULL when absent. */
static inline const char *option(const char *cmdline, const char *name,
                                 size_t *len) {
  size_t nl = word_len(name);
  for (const char *p = cmdline; *p;) {
    while (*p == ' ')
      p++;
    size_t wl = word_len(p), i = 0;
    while (i < nl && i < wl && p[i] == name[i])
      i++;
    if (i == nl && (wl == nl || p[nl] == '=')) {
      *len = wl == nl ? 0 : wl - nl - 1;
      return wl == nl ? p + nl : p + nl + 1;
    }
    p += wl;
  }
  return NULL;
}

/* The decimal number at the start of (n) bytes of (s); bounded. */
static inline uint64_t parse_uint(const char *s, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n && s[i] >= '0' && s[i] <= '9' && v < (1ull << 40);
       i++)
    v = v * 10 + (uint64_t)(s[i] - '0');
  return v;
}

#endif
