/*
 * The libvirt backend's definitions, on any host and without a daemon:
 * keys and XML files are checked when the configuration loads, each bad
 * value with a message naming it; a summon against hosts that cannot be
 * reached (a refused port, a socket that is not there: no name lookups,
 * which would leave the machine) fails with libvirt's message for each
 * host and leaves nothing.
 */
#include "helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define VM "[vm d]\nbackend = libvirt\n"
#define HOST "host = qemu+tcp://127.0.0.1:1/system\n"

static void test_bad_keys(void **state) {
  fixture *f = *state;
  config_fails(f, VM "kernel = /k\n", "at least one host");
  config_fails(f, VM "host = localhost\nkernel = /k\n", "not a libvirt URI");
  config_fails(f, VM HOST HOST "kernel = /k\n", "twice");
  config_fails(f, VM HOST, "needs kernel (or xml)");
  config_fails(f, VM HOST "kernel = vmlinux\n", "absolute path");
  config_fails(f, VM HOST "kernel = /k\ninitrd = i.gz\n", "absolute path");
  config_fails(f, VM HOST "kernel = /k\ntype = xen\n", "kvm or qemu");
  config_fails(f, VM HOST "kernel = /k\nmachine = microvm\n", "machine");
  /* Bytes that are not UTF-8 text would make a domain XML no parser reads
   * (found by the libvirt_args fuzz target). */
  config_fails(f, VM HOST "kernel = /k\nnetwork = network:u\xf7\xff\n",
               "network: not UTF-8 text");
  config_fails(f, VM HOST "kernel = /k\nmachine = pc-\xff\n",
               "machine: not UTF-8 text");
  config_fails(f, VM HOST "kernel = /k\ncmdline = a\x01b\n",
               "cmdline: not UTF-8 text");
  config_fails(f, VM HOST "kernel = /k\nmemory = 1500K\n", "memory");
  config_fails(f, VM HOST "kernel = /k\nvcpus = 0\n", "vcpus");
  config_fails(f, VM HOST "kernel = /k\nnetwork = tap\n", "network: expected");
  config_fails(f, VM HOST "kernel = /k\nforward = 8080:80\n",
               "only with network = user");
  config_fails(f, VM HOST "kernel = /k\nnetwork = user\nforward = 8080\n",
               "not [ADDR:]HOSTPORT:GUESTPORT");
  config_fails(f, VM HOST "kernel = /k\nnetwork = user\nforward = 0:80\n",
               "not [ADDR:]HOSTPORT:GUESTPORT");
  config_fails(f, VM HOST "kernel = /k\nnetwork = user\nforward = x:1:80\n",
               "not [ADDR:]HOSTPORT:GUESTPORT");
  config_fails(f, VM HOST "kernel = /k\nnetwork = user\nforward = 1:2:3:4\n",
               "not [ADDR:]HOSTPORT:GUESTPORT");
  config_fails(f, VM HOST "kernel = /k\nplacement = random\n", "placement");
  config_fails(f, VM HOST "kernel = /k\nmax-guests-per-host = -1\n",
               "max-guests-per-host");
  config_fails(f, VM HOST "kernel = /k\nsuspend = swap\n", "suspend");
  config_fails(f, VM HOST "kernel = /k\nconsole-marker = \n", "console-marker");
  config_fails(f, VM HOST "xml = /nonexistent.xml\n", "nonexistent.xml");
  config_fails(f, VM HOST "xml = /tmp\n", "not a regular file");
  config_fails(f, VM HOST "xml = /etc/hostname\nkernel = /k\n", "not with xml");
  /* nothing was defined by the failures */
  assert_null(jitsu_vm_find(f->ctx, "d"));
}

static void write_file(const char *path, const char *text) {
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(text, fp);
  fclose(fp);
}

static void test_xml_files(void **state) {
  fixture *f = *state;
  char path[400], text[800];
  snprintf(path, sizeof(path), "%s/g.xml", f->dir);
  write_file(path, "<domain type='kvm'>\n<name>g</name>\n<memory>1\n");
  snprintf(text, sizeof(text), VM HOST "xml = %s\n", path);
  config_fails(f, text, "g.xml:4: Premature end of data");
  write_file(path, "<network><name>n</name></network>\n");
  config_fails(f, text, "the root element is <network>, not <domain>");
  write_file(path, "<domain type='kvm'><name>g</name></domain>\n");
  snprintf(text, sizeof(text), VM HOST "xml = %s\nready = marker\n", path);
  config_fails(f, text, "no <serial> or <console> device");
  /* A good file, with an entity that must not be expanded from disk. */
  write_file(path, "<!DOCTYPE d [<!ENTITY x SYSTEM '/etc/passwd'>]>\n"
                   "<domain type='kvm'><name>g</name><uuid>"
                   "6f1a2c1e-1111-2222-3333-444455556666</uuid>"
                   "<memory unit='MiB'>256</memory><devices><serial "
                   "type='pty'/></devices><description>&x;</description>"
                   "</domain>\n");
  assert_int_equal(fixture_load(f, "%s", text), 0);
  assert_non_null(jitsu_vm_find(f->ctx, "d"));
}

/* Hosts that refuse or do not resolve: the summon fails with each host's
 * own message, quickly, and the vm is failed. */
static void test_unreachable_hosts(void **state) {
  fixture *f = *state;
  assert_int_equal(
      fixture_load(f, VM HOST
                   "host = qemu+unix:///system?socket=/nonexistent/sock\n"
                   "kernel = /k\nready = marker\n"),
      0);
  summon_fails(f, "d", "127.0.0.1:1", 30000);
  const char *why = vm_reason(jitsu_vm_find(f->ctx, "d"));
  assert_non_null(strstr(why, "/nonexistent/sock"));
  assert_non_null(strstr(why, "no host could take the guest"));
}

/* A loopback port whose accept queue is full: a connect to it gets no
 * answer (the SYN is dropped), as from a host that drops packets. The
 * listener and the connection filling the queue go in (fds). */
static int blackhole(int fds[2]) {
  struct sockaddr_in sin = {.sin_family = AF_INET};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sin);
  fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_int_equal(bind(fds[0], (struct sockaddr *)&sin, sizeof(sin)), 0);
  assert_int_equal(listen(fds[0], 0), 0);
  assert_int_equal(getsockname(fds[0], (struct sockaddr *)&sin, &len), 0);
  fds[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_int_equal(connect(fds[1], (struct sockaddr *)&sin, sizeof(sin)), 0);
  return ntohs(sin.sin_port);
}

/* libvirt's own connect has no time limit; the backend's probe gives up
 * on a host that does not answer after 3 s, instead of holding a worker
 * thread for minutes. */
static void test_silent_host(void **state) {
  fixture *f = *state;
  int fds[2], port = blackhole(fds);
  assert_int_equal(fixture_load(f,
                                VM "host = qemu+tcp://127.0.0.1:%d/system\n"
                                   "kernel = /k\nready = marker\n",
                                port),
                   0);
  /* Without the probe libvirt would wait for TCP's own time-out
   * (minutes) and this would not end within its 20 s. */
  summon_fails(f, "d", "no answer from 127.0.0.1 port", 20000);
  close(fds[1]);
  close(fds[0]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_bad_keys, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_xml_files, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_unreachable_hosts, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_silent_host, fixture_setup,
                                      fixture_teardown),
  };
  return cmocka_run_group_tests_name("libvirt-config", tests, NULL, NULL);
}
