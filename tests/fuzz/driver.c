/* Runs a libFuzzer target over files, or over every file of a directory
 * (a corpus), for builds without libFuzzer: the corpus becomes a
 * regression test, with whatever inputs it has gained. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    perror(path);
    return -1;
  }
  uint8_t *buf = malloc(1 << 20);
  size_t n = buf ? fread(buf, 1, 1 << 20, f) : 0;
  fclose(f);
  if (buf == NULL)
    return -1;
  LLVMFuzzerTestOneInput(buf, n);
  free(buf);
  return 1;
}

/* Every regular file of (dir), in name order (a stable replay). */
static int run_dir(const char *dir) {
  struct dirent **names;
  int n = scandir(dir, &names, NULL, alphasort), ran = 0;
  if (n < 0) {
    perror(dir);
    return -1;
  }
  for (int i = 0; i < n; i++) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
      if (run_file(path) < 0)
        ran = -1;
      else if (ran >= 0)
        ran++;
    }
    free(names[i]);
  }
  free(names);
  return ran;
}

int main(int argc, char **argv) {
  int ran = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    int r = stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode) ? run_dir(argv[i])
                                                           : run_file(argv[i]);
    if (r < 0)
      return 1;
    ran += r;
  }
  printf("%d passed, 0 failed\n", ran);
  return ran > 0 ? 0 : 1;
}
