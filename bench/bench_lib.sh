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

# ticks PID: the CPU ticks (user system) of a process and its threads, and
# of the processes under it (nginx's worker). A child gone between pgrep
# and /proc (socat's, one per connection) is not an error.
ticks() {
  local p all=$1
  for p in $(pgrep -P "$1"); do all="$all $p"; done
  for p in $all; do cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null || true; done |
    awk '{u += $1; s += $2} END {print u + 0, s + 0}'
}
