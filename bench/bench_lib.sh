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

# descendants PID: the PID and every process under it, at any depth.
descendants() {
  local p
  echo "$1"
  for p in $(pgrep -P "$1"); do descendants "$p"; done
}

# ticks PID: the CPU ticks (user system) of a process and its threads, and
# of the processes under it at any depth (nginx's worker; NSD's server,
# two levels down). A child gone between pgrep and /proc (socat's, one per
# connection) is not an error. Fields are counted after the command name,
# which may hold spaces ("nsd: server 1").
ticks() {
  local p
  for p in $(descendants "$1"); do sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f12,13 || true; done |
    awk '{u += $1; s += $2} END {print u + 0, s + 0}'
}
