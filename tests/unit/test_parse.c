/* Small parsers and the hash table. */
#include "helpers.h"
#include "internal.h"

#include <malloc.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_duration(void **state) {
  (void)state;
  uint64_t ms = 1;
  assert_int_equal(jitsu_parse_duration("0", &ms), 0);
  assert_int_equal(ms, 0);
  assert_int_equal(jitsu_parse_duration("250ms", &ms), 0);
  assert_int_equal(ms, 250);
  assert_int_equal(jitsu_parse_duration("5s", &ms), 0);
  assert_int_equal(ms, 5000);
  assert_int_equal(jitsu_parse_duration("2m", &ms), 0);
  assert_int_equal(ms, 120000);
  assert_int_equal(jitsu_parse_duration("1h", &ms), 0);
  assert_int_equal(ms, 3600000);
  const char *bad[] = {"",
                       "5",
                       "s",
                       "-1s",
                       "1.5s",
                       "5 s",
                       "5sec",
                       "1d",
                       "99999999999999999999s",
                       "18446744073709551615ms"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
    assert_int_equal(jitsu_parse_duration(bad[i], &ms), -EINVAL);
}

static void test_size(void **state) {
  (void)state;
  uint64_t b = 0;
  assert_int_equal(jitsu_parse_size("4096", &b), 0);
  assert_int_equal(b, 4096);
  assert_int_equal(jitsu_parse_size("512K", &b), 0);
  assert_int_equal(b, 512 * 1024);
  assert_int_equal(jitsu_parse_size("64M", &b), 0);
  assert_int_equal(b, 64 << 20);
  assert_int_equal(jitsu_parse_size("2G", &b), 0);
  assert_int_equal(b, 2ull << 30);
  const char *bad[] = {"", "M", "1.5G", "1m", "1 G", "1GB", "99999999999T"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
    assert_int_equal(jitsu_parse_size(bad[i], &b), -EINVAL);
}

static void test_bool(void **state) {
  (void)state;
  bool v = false;
  assert_int_equal(jitsu_parse_bool("yes", &v), 0);
  assert_true(v);
  assert_int_equal(jitsu_parse_bool("off", &v), 0);
  assert_false(v);
  assert_int_equal(jitsu_parse_bool("Yes", &v), -EINVAL);
  assert_int_equal(jitsu_parse_bool("", &v), -EINVAL);
}

static void test_split_argv(void **state) {
  (void)state;
  char **argv;
  int argc;
  assert_int_equal(
      jitsu_split_argv("  /bin/prog 'a b' \"c \\\"d\\\"\" e\\ f $HOME ", &argv,
                       &argc),
      0);
  assert_int_equal(argc, 5);
  assert_string_equal(argv[0], "/bin/prog");
  assert_string_equal(argv[1], "a b");
  assert_string_equal(argv[2], "c \"d\"");
  assert_string_equal(argv[3], "e f");
  assert_string_equal(argv[4], "$HOME"); /* no expansion, ever */
  assert_null(argv[5]);
  free(argv);
  assert_int_equal(jitsu_split_argv("a''b \"\"", &argv, &argc), 0);
  assert_int_equal(argc, 2);
  assert_string_equal(argv[0], "ab");
  assert_string_equal(argv[1], "");
  free(argv);
  const char *bad[] = {"", "   ", "'open", "\"open", "trailing\\"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
    assert_int_equal(jitsu_split_argv(bad[i], &argv, &argc), -EINVAL);
}

static void test_hostport(void **state) {
  (void)state;
  struct sockaddr_storage ss;
  char text[64];
  assert_int_equal(jitsu__parse_hostport("127.0.0.1:8080", &ss), 0);
  assert_int_equal(ss.ss_family, AF_INET);
  jitsu__format_sockaddr((struct sockaddr *)&ss, text, sizeof(text));
  assert_string_equal(text, "127.0.0.1:8080");
  assert_int_equal(jitsu__parse_hostport("[::1]:53", &ss), 0);
  assert_int_equal(ss.ss_family, AF_INET6);
  jitsu__format_sockaddr((struct sockaddr *)&ss, text, sizeof(text));
  assert_string_equal(text, "[::1]:53");
  const char *bad[] = {"127.0.0.1",     "127.0.0.1:",    "127.0.0.1:0",
                       "1.2.3.4:65536", "::1:53",        "[::1]53",
                       "localhost:80",  "[127.0.0.1]:5", "1.2.3.4:+5",
                       "[::1]:5x"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
    assert_int_equal(jitsu__parse_hostport(bad[i], &ss), -EINVAL);
}

/* A QEMU host forward rule's parts, as the pools' warm-up reads them. */
static void test_hostfwd_parts(void **state) {
  (void)state;
  char addr[16];
  unsigned port = 0;
  const char *guest =
      jitsu__hostfwd_parts("tcp:127.0.0.1:8080-:80", addr, sizeof(addr), &port);
  assert_non_null(guest);
  assert_string_equal(guest, ":80");
  assert_string_equal(addr, "127.0.0.1");
  assert_int_equal(port, 8080);
  guest =
      jitsu__hostfwd_parts("tcp::53-10.0.2.15:53", addr, sizeof(addr), &port);
  assert_non_null(guest);
  assert_string_equal(guest, "10.0.2.15:53");
  assert_string_equal(addr, "");
  assert_int_equal(port, 53);
  assert_non_null(jitsu__hostfwd_parts("tcp:1.2.3.4:9-:1", NULL, 0, &port));
  assert_int_equal(port, 9);
  /* Not tcp, no guest side, an address that does not fit. */
  assert_null(jitsu__hostfwd_parts("udp:127.0.0.1:53-:53", NULL, 0, &port));
  assert_null(jitsu__hostfwd_parts("tcp:127.0.0.1:8080", NULL, 0, &port));
  assert_null(jitsu__hostfwd_parts("tcp:255.255.255.255:1-:2", addr, 8, &port));
}

static void test_notify_parse(void **state) {
  (void)state;
  assert_true(jitsu__notify_says_ready("READY=1", 7));
  assert_true(jitsu__notify_says_ready("STATUS=x\nREADY=1\n", 17));
  assert_false(jitsu__notify_says_ready("READY=10", 8));
  assert_false(jitsu__notify_says_ready("XREADY=1", 8));
  assert_false(jitsu__notify_says_ready("READY=1", 6)); /* length counts */
  assert_false(jitsu__notify_says_ready("", 0));
}

/* SipHash against the reference: the 2-4 vector of the SipHash paper
 * (key 00..0f, message 00..0e), and the 1-3 that CPython 3.11 computes
 * for hash(b"abc") with PYTHONHASHSEED=0 (a zero key). */
static void test_hash(void **state) {
  (void)state;
  jitsu_hash_key key = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
  uint8_t msg[15];
  for (int i = 0; i < 15; i++)
    msg[i] = (uint8_t)i;
  assert_true(jitsu__siphash(&key, msg, sizeof(msg), 2, 4) ==
              0xa129ca6149be45e5ull);
  jitsu_hash_key zero = {0, 0};
  assert_true(jitsu_hash(&zero, "abc", 3) == 0xc03bc3a0042630f2ull);
  assert_true(jitsu_hash(&zero, "hello, world!", 13) == 0x5592ee19cc36fcd2ull);
  /* Another key, another hash; two random keys differ. */
  assert_true(jitsu_hash(&key, "abc", 3) != jitsu_hash(&zero, "abc", 3));
  jitsu_hash_key a, b;
  jitsu_hash_key_random(&a);
  jitsu_hash_key_random(&b);
  assert_true(a.k0 != b.k0 || a.k1 != b.k1);
}

static void test_table(void **state) {
  (void)state;
  enum { N = 20000 };
  jitsu__table t;
  jitsu__table_init(&t);
  jitsu__hnode *nodes = calloc(N, sizeof(*nodes));
  char(*keys)[16] = calloc(N, 16);
  for (int i = 0; i < N; i++) {
    snprintf(keys[i], 16, "k%d", i);
    nodes[i].key = keys[i];
    assert_int_equal(jitsu__table_insert(&t, &nodes[i]), 0);
  }
  assert_int_equal(t.count, N);
  for (int i = 0; i < N; i++)
    assert_ptr_equal(jitsu__table_find(&t, keys[i]), &nodes[i]);
  assert_null(jitsu__table_find(&t, "absent"));
  for (int i = 0; i < N; i += 2)
    jitsu__table_remove(&t, &nodes[i]);
  for (int i = 0; i < N; i++)
    assert_ptr_equal(jitsu__table_find(&t, keys[i]), i % 2 ? &nodes[i] : NULL);
  jitsu__table_free(&t);
  free(nodes);
  free(keys);
}

/* 10,000 defined vms must be cheap: measure the heap per vm. This is a
 * size, not a timing: the same binary gives the same number. */
static void test_bytes_per_vm(void **state) {
  fixture *f = *state;
  enum { N = 10000 };
#if defined(__SANITIZE_ADDRESS__)
  skip_because("ASan's allocator does not feed mallinfo2()");
#endif
  struct mallinfo2 before = mallinfo2();
  jitsu_param params[] = {{"exec", "/usr/bin/service --port 8080"},
                          {"address", "127.0.0.1:8080"}};
  for (int i = 0; i < N; i++) {
    char name[32];
    snprintf(name, sizeof(name), "vm-%05d", i);
    jitsu_vm_def def = JITSU_VM_DEF_INIT;
    def.name = name;
    def.params = params;
    def.n_params = 2;
    assert_int_equal(jitsu_vm_define(f->ctx, &def, NULL, &f->err), 0);
  }
  struct mallinfo2 after = mallinfo2();
  size_t per_vm = (after.uordblks - before.uordblks) / N;
  printf("# bytes per defined vm (process backend, 2 params): %zu\n", per_vm);
  assert_true(per_vm < 1200);
  assert_non_null(jitsu_vm_find(f->ctx, "vm-09999"));
  assert_null(jitsu_vm_find(f->ctx, "vm-10000"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_duration),
      cmocka_unit_test(test_size),
      cmocka_unit_test(test_bool),
      cmocka_unit_test(test_split_argv),
      cmocka_unit_test(test_hostport),
      cmocka_unit_test(test_hostfwd_parts),
      cmocka_unit_test(test_notify_parse),
      cmocka_unit_test(test_hash),
      cmocka_unit_test(test_table),
      cmocka_unit_test_setup_teardown(test_bytes_per_vm, fixture_setup,
                                      fixture_teardown),
  };
  return cmocka_run_group_tests_name("parse", tests, NULL, NULL);
}
