# shellcheck shell=bash
# Sourced by the container and monitoring scripts: installs the Debian packages they need,
# on a fresh Debian 12 CI machine (as root), only when a command is missing.
#
#   ensure_commands promtool:prometheus debootstrap:debootstrap
#
# Each argument is COMMAND:PACKAGE. Packages are installed without recommends and without
# starting their services (a temporary policy-rc.d refuses service starts during the install).

ensure_commands() {
  local want=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || want+=("${pair#*:}")
  done
  [ "${#want[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${want[*]} (run as root, or install them first)" >&2
    return 1
  fi
  echo "== installing ${want[*]}"
  local policy=/usr/sbin/policy-rc.d added=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    added=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
  } || rc=$?
  [ "$added" -eq 1 ] && rm -f "$policy"
  return "$rc"
}
