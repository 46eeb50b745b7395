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
#include "../boot/guest.h"

void guest_main(uint32_t start_info) {
  const char *cmdline = guest_cmdline(start_info);
  size_t len = 0;
  const char *exit_code = option(cmdline, "jitsu.exit", &len);
  if (exit_code)
    outl(DEBUG_EXIT, (uint32_t)parse_uint(exit_code, len));

  serial_init();
  const char *marker = option(cmdline, "jitsu.marker", &len);
  if (marker && len > 0)
    serial_puts(marker, len);
  else
    serial_puts("JITSU_READY", 64);
  serial_puts("\n", 1);
  for (;;)
    __asm__ volatile("cli; hlt");
}
