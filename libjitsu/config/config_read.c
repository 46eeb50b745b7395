/* Reading a configuration file: inih parses it, we count its lines and
 * note its section headers (inih gives neither), and keep every entry
 * with its line for the checks of config.c. */
#include "config_int.h"

#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int jitsu__err_at(jitsu_error *err, unsigned line) {
  if (err != NULL)
    err->line = line;
  return 0;
}

/* Note a section header at the start of (line), even of an empty
 * section, with its line number. */
static void note_header(cfg *c, const char *line) {
  const char *p = line;
  while (*p == ' ' || *p == '\t')
    p++;
  const char *end = *p == '[' ? strchr(p, ']') : NULL;
  if (end == NULL || c->oom)
    return;
  if (c->nh == c->caph) {
    size_t cap = c->caph ? c->caph * 2 : 8;
    header *h = realloc(c->h, cap * sizeof(*h));
    if (h == NULL) {
      c->oom = 1;
      return;
    }
    c->h = h;
    c->caph = cap;
  }
  c->h[c->nh].name = strndup(p + 1, (size_t)(end - p - 1));
  c->h[c->nh].line = c->lineno;
  c->h[c->nh].first = c->n;
  c->h[c->nh].n = 0;
  if (c->h[c->nh].name == NULL)
    c->oom = 1;
  else
    c->nh++;
}

/* Reading the file: count lines, note headers, refuse NULs and long lines. */
static char *reader(char *str, int num, void *stream) {
  cfg *c = stream;
  int i = 0;
  if (c->read_error != NULL)
    return NULL;
  while (i < num - 1) {
    int ch = getc(c->f);
    if (ch == EOF)
      break;
    if (ch == '\0') {
      c->read_error = "NUL byte in the file";
      c->read_error_line = c->lineno + (c->at_line_start ? 1 : 0);
      return NULL;
    }
    str[i++] = (char)ch;
    if (ch == '\n')
      break;
  }
  if (i == 0)
    return NULL;
  str[i] = '\0';
  if (c->at_line_start) {
    c->lineno++;
    c->line_len = 0;
    note_header(c, str);
  }
  c->line_len += (size_t)i;
  c->at_line_start = str[i - 1] == '\n';
  if (c->line_len > JITSU__MAX_LINE - 3 ||
      (!c->at_line_start && i == num - 1)) {
    c->read_error = "line too long (at most 65533 bytes)";
    c->read_error_line = c->lineno;
    return NULL;
  }
  return str;
}

static int handler(void *user, const char *section, const char *name,
                   const char *value) {
  cfg *c = user;
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 32;
    entry *e = realloc(c->e, cap * sizeof(*e));
    if (e == NULL)
      return c->oom = 1, 0;
    c->e = e;
    c->cap = cap;
  }
  entry *e = &c->e[c->n];
  /* Our own header record, not inih's (section), which it truncates. */
  (void)section;
  e->section = c->nh ? c->h[c->nh - 1].name : "";
  e->key = strdup(name);
  e->value = strdup(value ? value : "");
  e->line = c->lineno;
  if (!e->key || !e->value) {
    free(e->key), free(e->value);
    return c->oom = 1, 0;
  }
  if (c->nh > 0)
    c->h[c->nh - 1].n++;
  c->n++;
  return 1;
}

void jitsu__cfg_free(cfg *c) {
  for (size_t i = 0; i < c->n; i++) {
    free(c->e[i].key);
    free(c->e[i].value);
  }
  for (size_t i = 0; i < c->nh; i++)
    free(c->h[i].name);
  free(c->e);
  free(c->h);
}
/* Read every entry of (f) into (c); 0 or an error in (err). */
int jitsu__cfg_read(FILE *f, cfg *c, jitsu_error *err) {
  c->f = f;
  c->at_line_start = true;
  /* One heap buffer that holds any line we accept: inih never has to grow
   * it (its growing path overran its buffer under fuzzing), and the
   * reader refuses longer lines before inih sees a part of one. inih's
   * options are process-wide variables in Debian's build: set the ones we
   * rely on for this call and put them back. */
  bool ml = ini_allow_multiline, st = ini_use_stack, ra = ini_allow_realloc,
       so = ini_stop_on_first_error, nv = ini_allow_no_value;
  int mx = ini_max_line, ia = ini_initial_alloc;
  ini_allow_multiline = false;
  ini_use_stack = false;
  ini_allow_realloc = false;
  ini_initial_alloc = JITSU__MAX_LINE;
  ini_max_line = JITSU__MAX_LINE;
  ini_stop_on_first_error = true;
  ini_allow_no_value = false;
  int r = ini_parse_stream(reader, c, handler, c);
  ini_allow_multiline = ml, ini_use_stack = st, ini_allow_realloc = ra;
  ini_stop_on_first_error = so, ini_allow_no_value = nv, ini_max_line = mx;
  ini_initial_alloc = ia;
  if (c->oom || r == -2)
    return jitsu_error_set(err, -ENOMEM, NULL, "out of memory");
  if (c->read_error != NULL) {
    jitsu__err_at(err, c->read_error_line);
    return jitsu_error_set(err, -EINVAL, NULL, "%s", c->read_error);
  }
  if (r > 0) {
    jitsu__err_at(err, (unsigned)r);
    return jitsu_error_set(err, -EINVAL, NULL,
                           "syntax error: expected [section], key = value "
                           "or a comment");
  }
  return 0;
}

int jitsu_config_peek(const char *path, const char *section, const char *key,
                      char *out, size_t size) {
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return -errno;
  cfg c;
  memset(&c, 0, sizeof(c));
  jitsu_error err;
  memset(&err, 0, sizeof(err));
  int r = jitsu__cfg_read(f, &c, &err);
  fclose(f);
  for (size_t i = 0; r == 0 && i < c.n; i++)
    if (strcmp(c.e[i].section, section) == 0 && strcmp(c.e[i].key, key) == 0) {
      snprintf(out, size, "%s", c.e[i].value);
      jitsu__cfg_free(&c);
      return 0;
    }
  jitsu__cfg_free(&c);
  return r < 0 ? r : -ENOENT;
}
