/* Helpers shared by the fuzz targets that run a real context. */
#ifndef JITSU_FUZZ_UTIL_H
#define JITSU_FUZZ_UTIL_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <jitsu/jitsu.h>

static int fuzz_remove_entry(const char *path, const struct stat *st, int type,
                             struct FTW *ftw) {
  (void)st, (void)type, (void)ftw;
  return remove(path);
}

/* Remove (dir) and everything under it: a target leaves nothing behind. */
static inline void fuzz_rmtree(const char *dir) {
  nftw(dir, fuzz_remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Write (text) to DIR/fuzz.conf and load it into (ctx); a target that
 * cannot set up aborts, naming (who). */
static inline void fuzz_load_config(jitsu_ctx *ctx, const char *dir,
                                    const char *text, const char *who) {
  char path[128];
  snprintf(path, sizeof(path), "%s/fuzz.conf", dir);
  FILE *f = fopen(path, "w");
  if (f == NULL)
    abort();
  fputs(text, f);
  fclose(f);
  jitsu_error err;
  if (jitsu_config_load(ctx, path, &err) < 0) {
    fprintf(stderr, "%s: %s\n", who, err.message);
    abort();
  }
}

/* For coverage builds (gcc --coverage, scripts/fuzz-coverage.sh): GCC
 * turns execve() and execv() into libgcov calls that write the profile
 * first and mark it written. The process backend execs in a child that
 * shares our memory until the exec, so that mark is ours too, and the
 * profile of the whole run was never written (a target that spawned a
 * guest showed only its set-up covered). These plain ones take their
 * place (the system call: GCC would redirect a call to execve() here as
 * well); elsewhere nothing calls them. */
__attribute__((weak)) int __gcov_execve(const char *path, char *const argv[],
                                        char *const envp[]);
__attribute__((weak)) int __gcov_execve(const char *path, char *const argv[],
                                        char *const envp[]) {
  return (int)syscall(SYS_execve, path, argv, envp);
}
__attribute__((weak)) int __gcov_execv(const char *path, char *const argv[]);
__attribute__((weak)) int __gcov_execv(const char *path, char *const argv[]) {
  extern char **environ;
  return (int)syscall(SYS_execve, path, argv, environ);
}

#endif
