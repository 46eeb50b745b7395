# Shared by the tests that run the unikernel behind jitsu-http (sourced
# after tests/integration/lib.sh).
#
# uni_begin NAME JITSU_HTTP JITSU_CTL UNIKERNEL: sets http, ctl, hpid,
# hp (jitsu-http's port) and dir (a temporary directory that holds a copy
# of the unikernel; at exit jitsu-http, every QEMU started from it and the
# directory go).
uni_begin() {
  http=$2
  ctl=$3
  dir=$(mktemp -d "/tmp/jitsu-$1-XXXXXX")
  hpid=0
  trap uni_cleanup EXIT
  cp "$4" "$dir/uni.elf"
  hp=$(free_port)
}

uni_cleanup() {
  [ "$hpid" -gt 0 ] && kill -9 "$hpid" 2>/dev/null || true
  kill_marked "$dir" # QEMU's command line holds the kernel's path in $dir
  rm -rf "$dir"
}

fail() {
  echo "FAIL: $*" >&2
  tail -n 40 "$dir/http.log" >&2 || true
  exit 1
}

# uni_vm NAME BODY PORT HOST [KEY = VALUE]...: the [vm NAME] section of a
# unikernel that answers BODY (URL-encoded) on guest port 80, forwarded
# from 127.0.0.1:PORT, ready at its marker and an HTTP answer, reached by
# jitsu-http for Host: HOST.
uni_vm() {
  printf '[vm %s]\nbackend = qemu\nkernel = %s\ncmdline = jitsu.body=%s\n' \
    "$1" "$dir/uni.elf" "$2"
  printf 'memory = 16M\ntsc-hint = yes\nforward = tcp:127.0.0.1:%s-:80\n' "$3"
  printf 'ready = marker+http:127.0.0.1:%s/\nstop-grace = 200ms\n' "$3"
  printf 'address = 127.0.0.1:%s\nhttp-host = %s\n' "$3" "$4"
  shift 4
  for kv in "$@"; do printf '%s\n' "$kv"; done
}
