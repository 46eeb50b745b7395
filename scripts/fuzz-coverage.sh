#!/bin/sh
# Line coverage of the code that handles outside input, per fuzz target
# and file: each target's corpus (committed, or grown by FUZZ_SECONDS of
# libFuzzer first) is replayed alone through a gcc --coverage build, and
# gcovr reports the files that target is meant to reach.
#
#   scripts/fuzz-coverage.sh                  # the committed corpora
#   FUZZ_SECONDS=240 scripts/fuzz-coverage.sh # after 4 minutes of fuzzing
#                                             # each (needs build-fuzz, as
#                                             # scripts/setup.sh test makes)
#   scripts/fuzz-coverage.sh chan http        # only these targets
#
# Needs gcovr (apt-get install gcovr). Builds build-cov; prints a table.
set -eu
cd "$(dirname "$0")/.."
command -v gcovr >/dev/null || { echo "fuzz-coverage: gcovr is missing (apt-get install gcovr)" >&2; exit 1; }
secs=${FUZZ_SECONDS:-0}
if [ -f build-cov/build.ninja ]; then
  meson setup --reconfigure build-cov -Db_coverage=true >/dev/null
else
  CC=gcc meson setup build-cov -Db_coverage=true -Dfuzz=disabled >/dev/null
fi
# The replays and the modules only (the rest of the tree need not build
# with --coverage: GCC's object-size analysis then misfires in places).
ninja -C build-cov $(ninja -C build-cov -t targets all |
  sed -n 's,^\(tests/fuzz/replay_[a-z_]*\|libjitsu/backends/[a-z]*\.so\):.*,\1,p' |
  sort -u) >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# target: the files it is meant to reach
files_of() {
  case $1 in
  config) echo "libjitsu/config/config.c libjitsu/config/config_read.c libjitsu/core/keys.c" ;;
  control) echo "libjitsu/control/control.c libjitsu/control/control_cmd.c" ;;
  chan) echo "libjitsu/chan/chan_ring.c libjitsu/chan/chan.c libjitsu/chan/chan_rendezvous.c libjitsu/chan/chan_connect.c" ;;
  dns) echo "frontends/dns/dns_wire.c" ;;
  dns_server) echo "frontends/dns/dns_server.c frontends/dns/dns_zones.c frontends/dns/dns_forward.c" ;;
  http) echo "frontends/http/http_proxy.c frontends/http/http_upstream.c frontends/http/http_server.c" ;;
  qmp) echo "libjitsu/backends/qmp.c" ;;
  qemu_args) echo "libjitsu/backends/qemu_spawn.c:build_argv libjitsu/backends/qemu.c" ;;
  xl_args) echo "libjitsu/backends/xl_config.c:xl_build_config libjitsu/backends/xl_config.c" ;;
  uni_net) echo "examples/guests/unikernel/net.c" ;;
  esac
}
printf '| target | inputs | file | lines | covered |\n| --- | --- | --- | --- | --- |\n'
for replay in build-cov/tests/fuzz/replay_*; do
  [ -f "$replay" ] && [ -x "$replay" ] || continue
  name=${replay##*/replay_}
  if [ $# -gt 0 ]; then
    case " $* " in *" $name "*) ;; *) continue ;; esac
  fi
  corpus=tests/fuzz/corpus/$name
  if [ "$secs" -gt 0 ] && [ -x "build-fuzz/tests/fuzz/fuzz_$name" ]; then
    mkdir "$work/$name"
    cp "$corpus"/* "$work/$name"/
    JITSU_BACKEND_DIR=build-fuzz/libjitsu/backends \
      "build-fuzz/tests/fuzz/fuzz_$name" -max_total_time="$secs" -max_len=8192 \
      "$work/$name" >"$work/$name.log" 2>&1 || true
    corpus=$work/$name
  fi
  find build-cov -name '*.gcda' -delete
  JITSU_BACKEND_DIR=build-cov/libjitsu/backends "$replay" "$corpus" >/dev/null 2>&1 || true
  n=$(find "$corpus" -type f | wc -l)
  for f in $(files_of "$name"); do
    case $f in
    *:*) # FILE:FUNCTION, the lines of that function only
      line=$(gcovr -r . build-cov --filter "${f%%:*}" --json 2>/dev/null |
        python3 -c '
import json, re, sys
path, fn = sys.argv[1].split(":")
src = open(path).read().split("\n")
start = next(i for i, l in enumerate(src) if re.match(r"^\S.*\b%s\(" % fn, l)) + 1
end = next(i for i in range(start, len(src)) if src[i] == "}") + 1
lines = [l for f in json.load(sys.stdin)["files"] if f["file"] == path
         for l in f["lines"] if start <= l["line_number"] <= end and not l.get("gcovr/noncode")]
hit = sum(1 for l in lines if l["count"] > 0)
print(len(lines), "%d%%" % (100 * hit // len(lines)) if lines else "-")' "$f")
      ;;
    *)
      line=$(gcovr -r . build-cov --filter "$f" --txt 2>/dev/null | awk -v f="$f" '$1 == f {print $2, $4}')
      ;;
    esac
    lines=${line%% *} cov=${line#* }
    printf '| %s | %s | %s | %s | %s |\n' "$name" "$n" "$f" "${lines:-0}" "${cov:--}"
  done
done
