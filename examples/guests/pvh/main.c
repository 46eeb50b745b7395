/*
 * The tiny PVH guest: the floor for measuring the toolstack. It boots,
 * prints its readiness marker on the serial console (COM1) and halts.
 *
 * Command line (from the PVH start info):
 *   jitsu.marker=WORD   the marker to print (default JITSU_READY)
 *   jitsu.exit[=N]      instead of waiting, end QEMU at once through
 *                       isa-debug-exit at port 0xf4 (exit status 2N+1)
 *
 * It is freestanding: no libc, no interrupts; one page of code.
 */
#include <stdint.h>

#define COM1 0x3f8
#define DEBUG_EXIT 0xf4
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

static void serial_putc(char c) {
  for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
    ;
  outb(COM1, (uint8_t)c);
}

static void serial_puts(const char *s, int n) {
  for (int i = 0; i < n && s[i]; i++)
    serial_putc(s[i]);
}

static int word_len(const char *s) {
  int n = 0;
  while (s[n] != '\0' && s[n] != ' ')
    n++;
  return n;
}

/* The value of option (name) in (cmdline): its start, with (*len) set;
 * "" for a bare flag; 0 when absent. */
static const char *option(const char *cmdline, const char *name, int *len) {
  int nl = word_len(name);
  for (const char *p = cmdline; p && *p;) {
    while (*p == ' ')
      p++;
    int wl = word_len(p);
    int i = 0;
    while (i < nl && i < wl && p[i] == name[i])
      i++;
    if (i == nl && (wl == nl || p[nl] == '=')) {
      const char *v = wl == nl ? p + nl : p + nl + 1;
      *len = wl == nl ? 0 : wl - nl - 1;
      return v;
    }
    p += wl;
  }
  return 0;
}

static int parse_uint(const char *s, int n) {
  int v = 0;
  for (int i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
    v = v * 10 + (s[i] - '0');
  return v;
}

void guest_main(uint32_t start_info) {
  const struct hvm_start_info *si =
      (const struct hvm_start_info *)(uintptr_t)start_info;
  const char *cmdline = "";
  if (si && si->magic == HVM_START_MAGIC && si->cmdline_paddr != 0 &&
      si->cmdline_paddr < (1ull << 30))
    cmdline = (const char *)(uintptr_t)si->cmdline_paddr;

  int len = 0;
  const char *exit_code = option(cmdline, "jitsu.exit", &len);
  if (exit_code)
    outl(DEBUG_EXIT, (uint32_t)parse_uint(exit_code, len));

  outb(COM1 + 1, 0x00); /* no interrupts */
  outb(COM1 + 3, 0x03); /* 8N1 */
  const char *marker = option(cmdline, "jitsu.marker", &len);
  if (marker && len > 0)
    serial_puts(marker, len);
  else
    serial_puts("JITSU_READY", 64);
  serial_puts("\n", 1);
  for (;;)
    __asm__ volatile("cli; hlt");
}
