#!/usr/bin/env bash
# The .debs (cmake/FleetpmuPackaging.cmake): cpack makes exactly fleetpmu-server and
# fleetpmu-agent for the architecture the binaries were compiled for, with their files, library
# Depends found by dpkg-shlibdeps, conffiles for everything in /etc, maintainer scripts that
# parse, units whose ExecStart and --config are in the same package, no file in both packages
# (they install side by side), and a postinst that makes the fleetpmu user once: run twice
# against stub adduser/getent/systemctl, the second run changes nothing. On the build machine's
# own architecture the packaged programs run and accept the packaged configs.
#
# cpack only packs what the build tree holds (it builds nothing), into a temporary directory.
# Usage: packages_test.sh <build dir> <project version>
set -euo pipefail
build=$1
version=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
check() {  # check <description> <command...>: the command must succeed
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL: $what"
  fi
}
finish() {
  echo "deploy.packages: $passed passed, $failed failed"
  [[ $failed -eq 0 ]]
}

if ! cpack --config "$build/CPackConfig.cmake" -B "$work/out" >"$work/cpack.log" 2>&1; then
  cat "$work/cpack.log"
  echo "FAIL: cpack"
  exit 1
fi

# The Debian architecture of what was compiled (an arm64 cross build must give arm64 .debs).
machine=$(readelf -h "$build/bin/fleetpmu-server" | sed -n 's/^ *Machine: *//p')
case "$machine" in
  AArch64) arch=arm64 ;;
  *X86-64*) arch=amd64 ;;
  *) echo "FAIL: unknown ELF machine '$machine'"; exit 1 ;;
esac

declare -A programs=([server]="fleetpmu-server fleetpmuctl" [agent]="fleetpmu-agent fleetpmu-shim fleetpmu-pmu")
declare -A units=([server]="fleetpmu-server.service" [agent]="fleetpmu-agent.service fleetpmu-shim.service")
declare -A configs=([server]="server.textproto" [agent]="agent.textproto shim.textproto")

made=$(cd "$work/out" && ls -- *.deb | sort | tr '\n' ' ')
check "cpack made '$made', expected the server and agent packages for $arch" \
  test "$made" = "fleetpmu-agent_${version}_${arch}.deb fleetpmu-server_${version}_${arch}.deb "

for component in server agent; do
  package=fleetpmu-$component
  deb="$work/out/${package}_${version}_${arch}.deb"
  [[ -f $deb ]] || continue
  dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's#^\./##' | grep -v '/$' | sort >"$work/$component.files"
  dpkg-deb -e "$deb" "$work/$component.control"
  dpkg-deb -x "$deb" "$work/$component.root"
  field() { dpkg-deb -f "$deb" "$1"; }

  check "$package: Package" test "$(field Package)" = "$package"
  check "$package: Version $(field Version)" test "$(field Version)" = "$version"
  check "$package: Architecture $(field Architecture)" test "$(field Architecture)" = "$arch"
  depends=$(field Depends)
  # dpkg-shlibdeps ran: the C library and gRPC come from the binaries' NEEDED entries.
  for dep in adduser libc6 libgrpc++ libprotobuf libstdc++6; do
    check "$package: Depends lacks $dep ($depends)" grep -q "\\b$dep" <<<"$depends"
  done

  for program in ${programs[$component]}; do
    check "$package: usr/bin/$program missing" grep -qx "usr/bin/$program" "$work/$component.files"
  done
  for unit in ${units[$component]}; do
    check "$package: usr/lib/systemd/system/$unit missing" grep -qx "usr/lib/systemd/system/$unit" "$work/$component.files"
  done
  for config in ${configs[$component]}; do
    check "$package: etc/fleetpmu/$config missing" grep -qx "etc/fleetpmu/$config" "$work/$component.files"
  done
  check "$package: docs/deploy.md missing" grep -qx "usr/share/doc/$package/deploy.md" "$work/$component.files"

  # Every file in /etc, and only those, is a conffile (dpkg keeps the operator's edits).
  grep '^etc/' "$work/$component.files" | sed 's#^#/#' >"$work/$component.etc"
  check "$package: conffiles $(tr '\n' ' ' <"$work/$component.control/conffiles") are not its /etc files" \
    diff <(sort "$work/$component.control/conffiles") "$work/$component.etc"

  for script in postinst prerm postrm; do
    check "$package: $script missing or not executable" test -x "$work/$component.control/$script"
    check "$package: $script does not parse" sh -n "$work/$component.control/$script"
  done
  for unit in ${units[$component]}; do
    check "$package: prerm does not stop $unit" grep -q "$unit" "$work/$component.control/prerm"
  done

  # Each unit runs a program of its own package with one of its own conffiles.
  for unit in ${units[$component]}; do
    exec_start=$(sed -n 's/^ExecStart=//p' "$work/$component.root/usr/lib/systemd/system/$unit")
    read -r program flag config <<<"$exec_start"
    check "$package: $unit runs $program, not in the package" grep -qx "${program#/}" "$work/$component.files"
    check "$package: $unit: $flag $config is no conffile" \
      bash -c "[[ '$flag' == --config ]] && grep -qx '$config' '$work/$component.control/conffiles'"
    if [[ $arch == "$(dpkg --print-architecture)" ]]; then
      # The packaged (stripped) program accepts the packaged config. The shim's config on
      # arm64 is the kvm backend, which only arm64 shims load: this branch runs on arm64 then.
      check "$package: $program --config $config --print_config" \
        "$work/$component.root$program" --config "$work/$component.root$config" --print_config
    fi
  done
  if [[ $arch == "$(dpkg --print-architecture)" ]]; then
    for program in ${programs[$component]}; do
      check "$package: $program --version is not '$program $version'" \
        bash -c "[[ \"\$('$work/$component.root/usr/bin/$program' --version)\" == '$program $version' ]]"
    done
  fi

  # postinst, twice, against stubs that record what it does instead of doing it.
  stubs="$work/$component.stubs"
  mkdir -p "$stubs"
  : >"$stubs/state"
  : >"$stubs/calls"
  cat >"$stubs/getent" <<'STUB'
#!/bin/sh
grep -qx "$1 $2" "$(dirname "$0")/state"
STUB
  cat >"$stubs/addgroup" <<'STUB'
#!/bin/sh
d=$(dirname "$0"); echo "addgroup $*" >>"$d/calls"; for last; do :; done; echo "group $last" >>"$d/state"
STUB
  cat >"$stubs/adduser" <<'STUB'
#!/bin/sh
d=$(dirname "$0"); echo "adduser $*" >>"$d/calls"; for last; do :; done; echo "passwd $last" >>"$d/state"
STUB
  for tool in install systemctl; do
    printf '#!/bin/sh\necho "%s $*" >>"$(dirname "$0")/calls"\n' "$tool" >"$stubs/$tool"
  done
  chmod +x "$stubs"/*
  postinst="$work/$component.control/postinst"
  PATH="$stubs:$PATH" sh "$postinst" configure >/dev/null
  check "$package: first postinst did not make the fleetpmu user" grep -q "^adduser .*fleetpmu$" "$stubs/calls"
  check "$package: first postinst did not make the fleetpmu group" grep -q "^addgroup .*fleetpmu$" "$stubs/calls"
  if [[ $component == agent ]]; then
    check "$package: postinst did not make the kvm group (fleetpmu-shim.service needs it)" \
      grep -q "^addgroup .*kvm$" "$stubs/calls"
  fi
  : >"$stubs/calls"
  PATH="$stubs:$PATH" sh "$postinst" configure "0.0.1" >/dev/null
  check "$package: postinst is not idempotent: $(grep -E '^add(user|group)' "$stubs/calls" | tr '\n' ';')" \
    bash -c "! grep -qE '^add(user|group)' '$stubs/calls'"
  if [[ -d /run/systemd/system ]]; then
    check "$package: an upgrade does not try-restart ${units[$component]}" \
      grep -qx "systemctl try-restart ${units[$component]}" "$stubs/calls"
  else
    check "$package: postinst calls systemctl without systemd" bash -c "! grep -q '^systemctl' '$stubs/calls'"
  fi
done

# The two packages install side by side: no file in both.
if [[ -f $work/server.files && -f $work/agent.files ]]; then
  shared=$(comm -12 "$work/server.files" "$work/agent.files" | tr '\n' ' ')
  check "files in both packages: $shared" test -z "$shared"
fi
finish
