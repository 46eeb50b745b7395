#!/bin/bash
# Runs a cmocka test program for meson's TAP protocol. cmocka 1.1 marks a
# skipped test "not ok N # SKIP", which TAP consumers (meson) count as a
# failure; it is "ok N # SKIP". Under `meson test --setup valgrind` the
# program runs under memcheck (JITSU_VALGRIND, from tests/valgrind.sh).
# usage: cmocka.sh PROGRAM [ARGS...]
set -o pipefail
# shellcheck disable=SC2086 # JITSU_VALGRIND is words, on purpose
# A failure and its diagnostics go to stderr too: meson shows a TAP test's
# stderr with --print-errorlogs, not its stdout.
${JITSU_VALGRIND:-} "$@" |
  sed -u -e 's/^not ok \([0-9]*\) # SKIP/ok \1 # SKIP/' \
    -e '/^not ok /w /dev/stderr' -e '/^# /w /dev/stderr'
