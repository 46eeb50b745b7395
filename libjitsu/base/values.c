/* Values of the configuration: durations, sizes, booleans, whole numbers,
 * and argv splitting. Public helpers, also for frontends' own keys. */
#include "base.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The decimal digits at (*p) into (*v), (*p) moved past them; -EINVAL
 * without a digit or beyond 64 bits. */
static int leading_number(const char **p, uint64_t *v) {
  if (**p < '0' || **p > '9')
    return -EINVAL;
  *v = 0;
  for (; **p >= '0' && **p <= '9'; (*p)++) {
    if (*v > (UINT64_MAX - 9) / 10)
      return -EINVAL;
    *v = *v * 10 + (uint64_t)(**p - '0');
  }
  return 0;
}

int jitsu_parse_duration(const char *text, uint64_t *ms) {
  const char *p = text;
  uint64_t v;
  if (leading_number(&p, &v) < 0)
    return -EINVAL;
  uint64_t mul;
  if (strcmp(p, "ms") == 0)
    mul = 1;
  else if (strcmp(p, "s") == 0)
    mul = 1000;
  else if (strcmp(p, "m") == 0)
    mul = 60000;
  else if (strcmp(p, "h") == 0)
    mul = 3600000;
  else if (*p == '\0' && v == 0)
    mul = 1;
  else
    return -EINVAL;
  if (v > UINT64_MAX / mul / 2) /* keep room for uv_now() + v */
    return -EINVAL;
  *ms = v * mul;
  return 0;
}

int jitsu_parse_size(const char *text, uint64_t *bytes) {
  static const char units[] = "KMGT";
  const char *p = text;
  uint64_t v;
  if (leading_number(&p, &v) < 0)
    return -EINVAL;
  if (*p != '\0') {
    const char *u = strchr(units, *p);
    if (u == NULL || p[1] != '\0')
      return -EINVAL;
    for (const char *q = units; q <= u; q++) {
      if (v > UINT64_MAX / 1024)
        return -EINVAL;
      v *= 1024;
    }
  }
  *bytes = v;
  return 0;
}

int jitsu_parse_bool(const char *text, bool *value) {
  static const char *const yes[] = {"yes", "true", "on", "1"};
  static const char *const no[] = {"no", "false", "off", "0"};
  for (size_t i = 0; i < JITSU__ARRAY_SIZE(yes); i++) {
    if (strcmp(text, yes[i]) == 0)
      return *value = true, 0;
    if (strcmp(text, no[i]) == 0)
      return *value = false, 0;
  }
  return -EINVAL;
}

int jitsu__parse_uint(const char *text, unsigned *out) {
  if (*text < '0' || *text > '9')
    return -EINVAL;
  char *end;
  errno = 0;
  unsigned long v = strtoul(text, &end, 10);
  if (errno != 0 || *end != '\0' || v > UINT_MAX)
    return -EINVAL;
  *out = (unsigned)v;
  return 0;
}

int jitsu__parse_pool(const char *value, unsigned max, unsigned *out,
                      jitsu_error *err) {
  *out = 0;
  if (value != NULL && (jitsu__parse_uint(value, out) < 0 || *out > max)) {
    *out = 0;
    return jitsu_error_set(err, -EINVAL, "pool", "'%s' is not 0 to %u", value,
                           max);
  }
  return 0;
}

int jitsu__parse_mac(const char *text, uint8_t mac[6]) {
  unsigned b[6];
  char end;
  if (strlen(text) != 17 ||
      sscanf(text, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3],
             &b[4], &b[5], &end) != 6 ||
      (b[0] & 1)) /* a multicast address */
    return -EINVAL;
  for (int i = 0; mac != NULL && i < 6; i++)
    mac[i] = (uint8_t)b[i];
  return 0;
}

int jitsu__parse_mib(const char *text, uint64_t *bytes) {
  uint64_t v;
  if (jitsu_parse_size(text, &v) < 0 || v < (1ull << 20) ||
      (v & ((1ull << 20) - 1)) != 0)
    return -EINVAL;
  *bytes = v;
  return 0;
}

int jitsu__parse_vcpus(const char *text, unsigned *n) {
  char *end;
  unsigned long v = strtoul(text, &end, 10);
  if (*end != '\0' || v < 1 || v > 255)
    return -EINVAL;
  *n = (unsigned)v;
  return 0;
}

int jitsu_split_argv(const char *text, char ***argv_out, int *argc_out) {
  /* Two passes: count words and bytes, then copy. */
  size_t len = strlen(text);
  char *buf = malloc(len + 1);
  if (buf == NULL)
    return -ENOMEM;
  int argc = 0;
  size_t o = 0;
  const char *p = text;
  while (*p) {
    while (*p == ' ' || *p == '\t')
      p++;
    if (*p == '\0')
      break;
    argc++;
    while (*p && *p != ' ' && *p != '\t') {
      if (*p == '\'') {
        const char *end = strchr(p + 1, '\'');
        if (end == NULL)
          goto bad;
        memcpy(buf + o, p + 1, (size_t)(end - p - 1));
        o += (size_t)(end - p - 1);
        p = end + 1;
      } else if (*p == '"') {
        for (p++; *p != '"'; p++) {
          if (*p == '\0')
            goto bad;
          if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
            p++;
          buf[o++] = *p;
        }
        p++;
      } else if (*p == '\\') {
        if (p[1] == '\0')
          goto bad;
        buf[o++] = p[1];
        p += 2;
      } else {
        buf[o++] = *p++;
      }
    }
    buf[o++] = '\0';
  }
  if (argc == 0)
    goto bad;
  char **argv = malloc((size_t)(argc + 1) * sizeof(char *) + o);
  if (argv == NULL) {
    free(buf);
    return -ENOMEM;
  }
  char *s = (char *)(argv + argc + 1);
  memcpy(s, buf, o);
  for (int i = 0; i < argc; i++) {
    argv[i] = s;
    s += strlen(s) + 1;
  }
  argv[argc] = NULL;
  free(buf);
  *argv_out = argv;
  *argc_out = argc;
  return 0;
bad:
  free(buf);
  return -EINVAL;
}
