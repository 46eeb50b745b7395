/* Helpers shared by the fuzz targets that run a real context. */
#ifndef JITSU_FUZZ_UTIL_H
#define JITSU_FUZZ_UTIL_H

#include <ftw.h>
#include <stdio.h>

static int fuzz_remove_entry(const char *path, const struct stat *st, int type,
                             struct FTW *ftw) {
  (void)st, (void)type, (void)ftw;
  return remove(path);
}

/* Remove (dir) and everything under it: a target leaves nothing behind. */
static inline void fuzz_rmtree(const char *dir) {
  nftw(dir, fuzz_remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

#endif
