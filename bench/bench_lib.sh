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
