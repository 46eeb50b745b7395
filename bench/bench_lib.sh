# Shell helpers of the benchmarks (sourced).

# median_ratio FILE COLUMN WHAT: the median of column COLUMN of FILE (one
# round's ratio per line) and the spread of the rounds, as
# "median of N rounds: WHAT M (rounds LO-HI)".
median_ratio() {
  awk -v c="$2" '{print $c}' "$1" | sort -n | awk -v what="$3" '
    { v[NR] = $1 }
    END { printf "median of %d rounds: %s %.2f (rounds %.2f-%.2f)\n",
          NR, what, v[int((NR + 1) / 2)], v[1], v[NR] }'
}

# descendants PID DEPTH: the PID and the processes under it, DEPTH
# levels down.
descendants() {
  local p
  echo "$1"
  [ "$2" -gt 0 ] || return 0
  for p in $(pgrep -P "$1"); do descendants "$p" $(($2 - 1)); done
}

# ticks PID [DEPTH]: the CPU ticks (user system) of a process and its
# threads, and of the processes DEPTH levels under it (default 0): the
# ones that do a server's work (nginx's worker: 1; NSD's server, under its
# xfrd and main: 2; socat's child per connection: 1), never a controller's
# guests. A child gone between pgrep and /proc is not an error. Fields are
# counted after the command name, which may hold spaces ("nsd: server 1").
ticks() {
  local p
  for p in $(descendants "$1" "${2:-0}"); do
    sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f12,13 || true
  done | awk '{u += $1; s += $2} END {print u + 0, s + 0}'
}

# cores_busy CMD...: run CMD (its output dropped), then say how busy each
# core was meanwhile, from /proc/stat: all but idle and iowait, so time
# stolen by the hypervisor counts as busy ("cpu0 99%, cpu1 98%"). A
# benchmark whose load generator and server fill their cores measures the
# machine, not the server.
cores_busy() {
  local before after
  before=$(grep '^cpu[0-9]' /proc/stat)
  "$@" >/dev/null 2>&1 || true
  after=$(grep '^cpu[0-9]' /proc/stat)
  paste -d' ' <(echo "$before") <(echo "$after") | awk '{
    n = NF / 2; b = 0; a = 0
    for (i = 2; i <= n; i++) { b += $i; a += $(i + n) }
    idle = $(n + 5) + $(n + 6) - $5 - $6
    busy = (a > b) ? 100 * (1 - idle / (a - b)) : 0
    printf "%s%s %.0f%%", sep, $1, busy
    sep = ", " } END { print "" }'
}
