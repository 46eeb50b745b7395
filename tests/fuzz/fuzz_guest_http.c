/* libFuzzer target: the request parser of the small Linux guest's HTTP
 * server (examples/guests/linux/request.c), as a client sends it. A name
 * it accepts must be a plain name under the document root. */
#include "request.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > REQ_HEAD_MAX)
    size = REQ_HEAD_MAX;
  char *buf = malloc(size ? size : 1); /* exactly: ASan sees overreads */
  if (buf == NULL)
    return 0;
  memcpy(buf, data, size);
  size_t head = request_head_length(buf, size);
  if (head > size)
    abort();
  request r;
  int status = request_parse(buf, head ? head : size, &r);
  if (status == 200) {
    size_t n = strnlen(r.name, sizeof(r.name));
    if (n == 0 || n == sizeof(r.name) || r.name[0] == '.' ||
        strchr(r.name, '/') != NULL)
      abort();
  } else if (status != 400 && status != 404 && status != 405 && status != 505) {
    abort();
  }
  free(buf);
  return 0;
}
