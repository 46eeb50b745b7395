# Shared by the integration scripts and the benchmarks: sourced, not run.

# free_port: a TCP and UDP port nothing uses, below the ephemeral range
# (32768-), so that no outgoing connection takes it before a guest binds it.
free_port() {
  local p
  while :; do
    p=$((10000 + RANDOM % 20000))
    ss -Htuan "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
}

# kill_marked MARK: end every process whose command line holds MARK (the
# test's temporary directory), with the process group it leads (guests lead
# their own).
kill_marked() {
  local p
  for p in $(pgrep -f -- "$1" || true); do
    kill -9 -- "-$p" 2>/dev/null || kill -9 "$p" 2>/dev/null || true
  done
}
