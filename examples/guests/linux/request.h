/* The request line of the small Linux guest's HTTP server (httpd.c):
 * parsed apart from the server so that a fuzz target reaches it. */
#ifndef GUEST_REQUEST_H
#define GUEST_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

enum {
  REQ_NAME_MAX = 64,   /* a file name under the document root */
  REQ_HEAD_MAX = 4096, /* the whole request head */
};

typedef struct request {
  bool head;               /* HEAD: the answer has no body */
  char name[REQ_NAME_MAX]; /* "index.html" for "/" */
} request;

/* The length of the request head in (buf) (up to and with its blank
 * line), or 0 if it has not all come yet. */
size_t request_head_length(const char *buf, size_t len);

/* Parse the head (buf, len) into (r): 200 when a file is asked for, or the
 * HTTP status to answer instead (400 malformed, 404 no such name, 405 not
 * GET or HEAD, 505 not HTTP/1.x). Only plain names in the document root are
 * served: letters, digits, '.', '-', '_', not starting with '.'. */
int request_parse(const char *buf, size_t len, request *r);

#endif
