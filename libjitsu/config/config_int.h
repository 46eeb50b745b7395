/* The config room's private header (config.c, config_read.c). */
#ifndef JITSU_CONFIG_INT_H
#define JITSU_CONFIG_INT_H

#include "internal.h"

/* Load a config from (f), called (name); (apply) false only checks. */
int jitsu__config_load_stream(jitsu_ctx *ctx, FILE *f, const char *name,
                              bool apply, jitsu_error *err);

/* A configuration file as read (config_read.c), for config.c. */
#define JITSU__MAX_LINE 65536 /* bytes of a config line, with its end */

typedef struct entry {
  const char *section; /* its header's name (not owned), or "" */
  char *key, *value;
  unsigned line;
} entry;

/* A section header; its entries are e[first .. first + n) (inih gives a
 * section's entries in a row; a header given twice is an error). */
typedef struct header {
  char *name;
  unsigned line;
  size_t first, n;
} header;

typedef struct cfg {
  jitsu_ctx *ctx;
  FILE *f;
  entry *e;
  size_t n, cap;
  header *h;
  size_t nh, caph;
  unsigned lineno;
  size_t line_len;
  bool at_line_start;
  int oom;
  const char *read_error; /* a problem the reader found */
  unsigned read_error_line;
} cfg;

/* Read every entry of (f) into (c); 0 or an error in (err). */
int jitsu__cfg_read(FILE *f, cfg *c, jitsu_error *err);
void jitsu__cfg_free(cfg *c);
/* Set (err)'s line to (line); returns 0. */
int jitsu__err_at(jitsu_error *err, unsigned line);

#endif
