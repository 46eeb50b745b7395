#!/bin/bash
# The manual pages: every page renders without a warning from man/groff,
# every jitsu page that one names exists in man/ (a .so page points at an
# existing one), and meson installs each of them.
# usage: manpages.sh SRC
set -euo pipefail
. "$(dirname "$0")/lib.sh"
src=$1
cd "$src/man"
for page in *.[358]; do
  if head -n 1 "$page" | grep '^\.so ' >/dev/null; then
    target=$(head -n 1 "$page" | sed 's|^\.so man[0-9]/||')
    [ -f "$target" ] || { echo "FAIL: $page points at a missing $target" >&2; exit 1; }
    grep -q "man/$page'" "$src/meson.build" ||
      { echo "FAIL: $page is not installed (install_man)" >&2; exit 1; }
    tap_ok "$page: a link to $target"
    continue
  fi
  warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null || true)
  [ -z "$warnings" ] || { echo "FAIL: $page: $warnings" >&2; exit 1; }
  # The jitsu pages it names ("jitsu-ctl (8)", "jitsu_idle_attach (3)").
  for ref in $(grep -E '^\.(BR|RB|IR|RI)' "$page" |
    grep -oE '(^|[ (])(lib)?jitsu[-_.a-z0-9]* \([358]\)' | tr -d ' ()'); do
    name=${ref%?} sec=${ref: -1}
    [ -f "$name.$sec" ] || { echo "FAIL: $page names $name($sec), which does not exist" >&2; exit 1; }
  done
  grep -q "man/$page'" "$src/meson.build" "$src/frontends/"*/meson.build ||
    { echo "FAIL: $page is not installed (install_man)" >&2; exit 1; }
  tap_ok "$page"
done
tap_end
