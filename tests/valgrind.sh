#!/bin/sh
# The wrapper of `meson test --setup valgrind`: a test program runs under
# memcheck; a test script runs as it is, with JITSU_VALGRIND set, and runs
# its program (cmocka.sh) or the daemons it starts (lib.sh: vg_init,
# vg_check) under memcheck. ASan cannot see into Debian's libuv; memcheck
# can. --vgdb=no: a daemon the test kills would leave its vgdb FIFOs in
# /tmp.
# usage: valgrind.sh SUPPRESSIONS TEST [ARGS...]
supp=$1
shift
vg="valgrind -q --vgdb=no --error-exitcode=99 --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite --num-callers=40 --suppressions=$supp"
export JITSU_TEST_VALGRIND=1
case "$1" in
*.sh | *.py)
  JITSU_VALGRIND=$vg exec "$@"
  ;;
*)
  exec $vg "$@"
  ;;
esac
