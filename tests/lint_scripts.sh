#!/bin/bash
# The project's shell scripts: each parses (bash -n), and none pipes into
# `grep -q` (under pipefail a writer that grep left early dies of SIGPIPE
# and the pipeline fails though it matched: a red CI run once; see
# tests/integration/lib.sh). TAP on stdout.
set -euo pipefail
root=${1:?usage: lint_scripts.sh SOURCE_ROOT}
cd "$root"
n=0 bad=0
while IFS= read -r f; do
  n=$((n + 1))
  why=""
  if ! out=$(bash -n "$f" 2>&1); then
    why="does not parse: $out"
  elif hits=$(grep -nE '(^|[^|])\|[[:space:]]*grep[[:space:]]+-[a-zA-Z]*q' "$f" |
    grep -vE '^[0-9]+:[[:space:]]*#' || true) && [ -n "$hits" ]; then
    why="pipes into grep -q (write 'grep PATTERN >/dev/null'): $hits"
  fi
  if [ -n "$why" ]; then
    bad=$((bad + 1))
    echo "not ok $n - $f: $why"
  else
    echo "ok $n - $f"
  fi
done < <(find tests bench scripts .ci examples -type f \( -name '*.sh' -o -path '.ci/run' \) | sort)
echo "1..$n"
[ "$bad" -eq 0 ]
