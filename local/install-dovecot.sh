#!/usr/bin/env bash
# Installs Dovecot's IMAP server (Debian's dovecot-imapd) for the tests, which run their own
# instance on a free port. Idempotent: does nothing when dovecot is already there. Never leaves the
# package's system service running on port 143.
set -euo pipefail

if command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo -n)  # non-interactive: fail rather than wait for a password prompt
else
  echo "install-dovecot: need root or sudo to install dovecot-imapd" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# policy-rc.d answering 101 tells the package scripts not to start the service at all.
# An existing policy is someone else's: leave it, and stop the service afterwards instead.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  own_policy=true
fi
remove_policy() { if [ "$own_policy" = true ]; then "${SUDO[@]}" rm -f "$policy"; fi; }
trap remove_policy EXIT

echo "install-dovecot: installing dovecot-imapd"
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends dovecot-imapd >/dev/null

# Under systemd, socket activation can still start it: disable both units.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  "${SUDO[@]}" systemctl disable --now dovecot.socket dovecot.service >/dev/null 2>&1 || true
fi
# A system instance that started anyway is the one whose pid the package's own pidfile names.
if [ -f /run/dovecot/master.pid ]; then
  "${SUDO[@]}" kill "$(cat /run/dovecot/master.pid)" 2>/dev/null || true
fi

command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ]
