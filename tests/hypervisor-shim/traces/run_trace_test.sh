#!/bin/sh
# Runs one fleetpmu-pmu trace test: run_trace_test.sh FLEETPMU_PMU DIR/X.trace
#
# Executes the tool on X.trace and compares what it did with the expectations beside the trace:
#   X.expected  required: standard output, compared exactly (diff -u on failure)
#   X.args      optional: extra command-line flags, e.g. --check-invariants (split on whitespace)
#   X.status    optional: expected exit status (default 0)
#   X.stderr    optional: each non-empty line must occur somewhere in standard error
# Exit status 0 if everything matched, 1 otherwise (with the reason on standard error).
set -u

if [ "$#" -ne 2 ]; then
  echo "usage: $0 FLEETPMU_PMU DIR/X.trace" >&2
  exit 2
fi
tool=$1
trace=$2
base=${trace%.trace}
name=$(basename "$base")

if [ ! -f "$trace" ] || [ ! -f "$base.expected" ]; then
  echo "$name: need both $trace and $base.expected" >&2
  exit 1
fi

args=""
if [ -f "$base.args" ]; then
  args=$(cat "$base.args")
fi
want_status=0
if [ -f "$base.status" ]; then
  want_status=$(tr -d ' \t\r\n' < "$base.status")
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fleetpmu-trace.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT INT TERM

# $args is split on purpose: it holds zero or more flags.
# shellcheck disable=SC2086
"$tool" $args "$trace" > "$work/stdout" 2> "$work/stderr"
status=$?

failed=0
if [ "$status" != "$want_status" ]; then
  echo "$name: exit status $status, expected $want_status" >&2
  failed=1
fi
if ! diff -u "$base.expected" "$work/stdout" > "$work/diff"; then
  echo "$name: standard output differs from $base.expected (- expected, + actual):" >&2
  cat "$work/diff" >&2
  failed=1
fi
if [ -f "$base.stderr" ]; then
  while IFS= read -r want || [ -n "$want" ]; do
    [ -z "$want" ] && continue
    if ! grep -qF -- "$want" "$work/stderr"; then
      echo "$name: standard error lacks: $want" >&2
      failed=1
    fi
  done < "$base.stderr"
fi
if [ "$failed" -ne 0 ]; then
  echo "$name: standard error was:" >&2
  cat "$work/stderr" >&2
  exit 1
fi
exit 0
