/* libFuzzer target: the config file and the small parsers behind it
 * (durations, argv splitting, addresses, socket specs, notify messages).
 * Checking never applies anything, so no socket is bound and nothing runs. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const jitsu_key frontend_vm_keys[] = {
    {"dns", JITSU_KEY_STRING, JITSU_KEY_MULTI, ""},
    {"ttl", JITSU_KEY_DURATION, 0, ""},
};
static const jitsu_key frontend_keys[] = {
    {"listen", JITSU_KEY_STRING, JITSU_KEY_MULTI | JITSU_KEY_REQUIRED, ""},
    {"forward", JITSU_KEY_BOOL, 0, ""},
    {"max-queue", JITSU_KEY_UINT, 0, ""},
};

static jitsu_ctx *fuzz_ctx(void) {
  static uv_loop_t loop;
  static jitsu_ctx *ctx;
  if (ctx == NULL) {
    jitsu_ctx_options o = JITSU_CTX_OPTIONS_INIT;
    o.state_dir = "/nonexistent/jitsu-fuzz-state"; /* checks write nothing */
    uv_loop_init(&loop);
    if (jitsu_ctx_new(&loop, &o, &ctx) < 0)
      abort();
    jitsu_config_declare_keys(ctx, "vm", frontend_vm_keys, 2);
    jitsu_config_declare_keys(ctx, "dns", frontend_keys, 3);
  }
  return ctx;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  jitsu_ctx *ctx = fuzz_ctx();
  if (size > 0) {
    FILE *f = fmemopen((void *)data, size, "r");
    if (f != NULL) {
      jitsu_error err;
      jitsu__config_load_stream(ctx, f, "fuzz.conf", false, &err);
      fclose(f);
    }
  }
  char *text = malloc(size + 1);
  if (text == NULL)
    return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  uint64_t ms;
  bool b;
  char **argv;
  int argc;
  struct sockaddr_storage ss;
  jitsu_parse_duration(text, &ms);
  jitsu_parse_bool(text, &b);
  jitsu_parse_size(text, &ms);
  if (jitsu_split_argv(text, &argv, &argc) == 0) {
    for (int i = 0; i < argc; i++)
      if (argv[i] == NULL)
        abort();
    if (argv[argc] != NULL)
      abort();
    free(argv);
  }
  if (jitsu__parse_hostport(text, &ss) == 0) {
    char back[80];
    jitsu__format_sockaddr((struct sockaddr *)&ss, back, sizeof(back));
  }
  jitsu__notify_says_ready((const char *)data, size);
  free(text);
  return 0;
}
