#!/bin/bash
# Embedding, as a user would: install the library (meson install into a
# temporary root), build examples/embed.c with the installed pkg-config
# file, run it: a trigger of its own summons a socket-activated vm, a real
# client gets its answer, the idle helper puts it away, and it exits.
# usage: embed.sh SRC BUILD HELLO
set -euo pipefail
. "$(dirname "$0")/lib.sh"
src=$1 build=$2 hello=$3
test_dir embed
fail() {
  echo "FAIL: $*" >&2
  cat "$dir/embed.out" >&2 2>/dev/null || true
  exit 1
}
root=$dir/root
meson install -C "$build" --destdir "$root" --no-rebuild --quiet >"$dir/install.log" 2>&1 ||
  fail "meson install: $(tail -n 5 "$dir/install.log")"
pc=$(dirname "$(find "$root" -name jitsu.pc | head -n 1)")
[ -f "$pc/jitsu.pc" ] || fail "no jitsu.pc installed"
libdir=$(dirname "$(find "$root" -name 'libjitsu.so*' | head -n 1)")
export PKG_CONFIG_PATH=$pc PKG_CONFIG_SYSROOT_DIR=$root
flags=()
if is_asan "$build/libjitsu.so"; then flags+=(-fsanitize=address,undefined); fi
# shellcheck disable=SC2046
cc -Wall -Wextra -Werror "${flags[@]}" "$src/examples/embed.c" \
  $(pkg-config --cflags --libs jitsu) -o "$dir/embed" 2>"$dir/cc.log" ||
  fail "building embed.c against the installed jitsu.pc: $(cat "$dir/cc.log")"
tap_ok "embed.c builds with pkg-config --cflags --libs jitsu"
port=$(free_port)
mkfifo "$dir/in"
LD_LIBRARY_PATH=$libdir JITSU_BACKEND_DIR=$(dirname "$(find "$root" -name qemu.so | head -n 1)") \
  "$dir/embed" "$hello" "$port" "$dir/state" <"$dir/in" >"$dir/embed.out" 2>&1 &
pids+=($!)
exec {in}>"$dir/in"
echo web >&$in
for _ in $(seq 1 200); do grep -q "summon done: ready" "$dir/embed.out" && break; sleep 0.05; done
grep -q "summon done: ready" "$dir/embed.out" || fail "the trigger did not summon web"
[ "$(curl -s -m 5 "http://127.0.0.1:$port/")" = "hello from hello" ] || fail "web does not answer"
exec {in}>&-
wait "${pids[0]}" || fail "embed exited with an error"
grep -q "ready -> stopping: shutdown requested by the idle policy" "$dir/embed.out" ||
  fail "the idle helper did not put web away"
grep -q "stopping -> stopped" "$dir/embed.out" || fail "web did not stop"
tap_ok "a trigger summons, a client is answered, the idle helper puts it away"
tap_end
