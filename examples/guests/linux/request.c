/* The request line of the small Linux guest's HTTP server. */
#include "request.h"

#include <string.h>

size_t request_head_length(const char *buf, size_t len) {
  for (size_t i = 0; i + 3 < len; i++)
    if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' &&
        buf[i + 3] == '\n')
      return i + 4;
  return 0;
}

static bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

int request_parse(const char *buf, size_t len, request *r) {
  memset(r, 0, sizeof(*r));
  const char *end = memchr(buf, '\r', len);
  if (end == NULL || (size_t)(end - buf) + 1 >= len || end[1] != '\n')
    return 400;
  /* METHOD SP TARGET SP VERSION, nothing else on the line */
  const char *sp1 = memchr(buf, ' ', (size_t)(end - buf));
  if (sp1 == NULL)
    return 400;
  const char *target = sp1 + 1;
  const char *sp2 = memchr(target, ' ', (size_t)(end - target));
  if (sp2 == NULL || sp2 == target ||
      memchr(sp2 + 1, ' ', (size_t)(end - sp2 - 1)))
    return 400;
  size_t mlen = (size_t)(sp1 - buf), vlen = (size_t)(end - sp2 - 1);
  if (vlen != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0)
    return vlen >= 5 && memcmp(sp2 + 1, "HTTP/", 5) == 0 ? 505 : 400;
  if (sp2[8] != '0' && sp2[8] != '1')
    return 505;
  if (mlen == 4 && memcmp(buf, "HEAD", 4) == 0)
    r->head = true;
  else if (mlen != 3 || memcmp(buf, "GET", 3) != 0)
    return 405;
  if (*target != '/')
    return 400;
  target++;
  size_t tlen = (size_t)(sp2 - target);
  const char *q = memchr(target, '?', tlen); /* a query is ignored */
  if (q != NULL)
    tlen = (size_t)(q - target);
  if (tlen == 0) {
    strcpy(r->name, "index.html");
    return 200;
  }
  if (tlen >= sizeof(r->name) || target[0] == '.')
    return 404;
  for (size_t i = 0; i < tlen; i++)
    if (!name_char(target[i]))
      return 404;
  memcpy(r->name, target, tlen);
  r->name[tlen] = '\0';
  return 200;
}
