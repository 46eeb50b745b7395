/* The Linux guest's HTTP request parser (examples/guests/linux/request.c):
 * what each request is answered with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "request.h"

static int parse(const char *text, request *r) {
  size_t len = strlen(text);
  size_t head = request_head_length(text, len);
  assert_int_equal(head, len); /* each case is one whole head */
  return request_parse(text, head, r);
}

static void test_served(void **state) {
  (void)state;
  request r;
  assert_int_equal(parse("GET / HTTP/1.1\r\nHost: g\r\n\r\n", &r), 200);
  assert_string_equal(r.name, "index.html");
  assert_false(r.head);
  assert_int_equal(parse("HEAD /index.html HTTP/1.0\r\n\r\n", &r), 200);
  assert_string_equal(r.name, "index.html");
  assert_true(r.head);
  assert_int_equal(parse("GET /a-b_c.txt?x=/../y HTTP/1.1\r\n\r\n", &r), 200);
  assert_string_equal(r.name, "a-b_c.txt");
}

static void test_refused(void **state) {
  (void)state;
  request r;
  assert_int_equal(parse("GET /../etc/passwd HTTP/1.1\r\n\r\n", &r), 404);
  assert_int_equal(parse("GET /.hidden HTTP/1.1\r\n\r\n", &r), 404);
  assert_int_equal(parse("GET /a/b HTTP/1.1\r\n\r\n", &r), 404);
  char longname[200] = "GET /";
  memset(longname + 5, 'a', 100);
  strcpy(longname + 105, " HTTP/1.1\r\n\r\n");
  assert_int_equal(parse(longname, &r), 404);
  assert_int_equal(parse("POST / HTTP/1.1\r\n\r\n", &r), 405);
  assert_int_equal(parse("GET / HTTP/2.0\r\n\r\n", &r), 505);
  assert_int_equal(parse("GET / HTTP/1.9\r\n\r\n", &r), 505);
  assert_int_equal(parse("GET / FTP/1.1\r\n\r\n", &r), 400);
  assert_int_equal(parse("GET  / HTTP/1.1\r\n\r\n", &r), 400);
  assert_int_equal(parse("GET / HTTP/1.1 x\r\n\r\n", &r), 400);
  assert_int_equal(parse("GET index.html HTTP/1.1\r\n\r\n", &r), 400);
  assert_int_equal(parse("garbage\r\n\r\n", &r), 400);
}

static void test_head_length(void **state) {
  (void)state;
  const char *partial = "GET / HTTP/1.1\r\nHost: g\r\n";
  assert_int_equal(request_head_length(partial, strlen(partial)), 0);
  const char *more = "GET / HTTP/1.1\r\n\r\nbody";
  assert_int_equal(request_head_length(more, strlen(more)), 18);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_served),
      cmocka_unit_test(test_refused),
      cmocka_unit_test(test_head_length),
  };
  return cmocka_run_group_tests_name("guest-http", tests, NULL, NULL);
}
