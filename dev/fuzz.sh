#!/usr/bin/env bash
# Runs every fuzz target of every module for FUZZTIME each (go test -fuzz
# takes one target of one package at a time). Their seed corpora already run
# in `make test`; this explores beyond them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FUZZTIME=${FUZZTIME:-20s}
for m in "$@"; do
  while IFS= read -r file; do
    pkg=./$(dirname "${file#"$m"/}")
    for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
      echo "== $m $pkg $target ($FUZZTIME)"
      (cd "$m" && go test -run '^$' -fuzz "^$target\$" -fuzztime "$FUZZTIME" "$pkg")
    done
  done < <(grep -rl --include='*_test.go' '^func Fuzz' "$m" || true)
done
