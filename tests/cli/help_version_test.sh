#!/usr/bin/env bash
# Usage: help_version_test.sh PROGRAM VERSION
# Checks the command-line promises of proto/fleetpmu/cli/program.h for one binary:
#   --help       exit 0, usage on stdout naming the program and --version
#   --version    exit 0, exactly "<program> <VERSION>" on stdout
#   --no_such_flag_for_test   exit 2, the flag named on stderr
set -uo pipefail

program=${1:?usage: help_version_test.sh PROGRAM VERSION}
version=${2:?usage: help_version_test.sh PROGRAM VERSION}
name=$(basename "$program")
failures=0

fail() {
  echo "FAIL $name: $*" >&2
  failures=$((failures + 1))
}

if [[ ! -x "$program" ]]; then
  echo "FAIL $name: $program is not an executable" >&2
  exit 1
fi

out=$("$program" --help 2>/dev/null); rc=$?
[[ $rc -eq 0 ]] || fail "--help exited $rc, want 0"
grep -q "$name" <<<"$out" || fail "--help does not name the program"
grep -q -- "--version" <<<"$out" || fail "--help does not mention --version"
grep -qi "usage" <<<"$out" || fail "--help has no usage line"

out=$("$program" --version 2>/dev/null); rc=$?
[[ $rc -eq 0 ]] || fail "--version exited $rc, want 0"
[[ "$out" == "$name $version" ]] || fail "--version printed '$out', want '$name $version'"

err=$("$program" --no_such_flag_for_test 2>&1 >/dev/null); rc=$?
[[ $rc -eq 2 ]] || fail "an unknown flag exited $rc, want 2"
grep -q -- "no_such_flag_for_test" <<<"$err" || fail "the unknown flag is not named: $err"

if [[ $failures -gt 0 ]]; then exit 1; fi
echo "ok $name: --help, --version, unknown flag"
