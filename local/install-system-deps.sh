#!/usr/bin/env bash
# Installs the Debian packages the tests drive for real: Dovecot (IMAP) and Chromium (browser).
# Idempotent and quiet when everything is already there.
set -euo pipefail
missing=()
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; fi
else SUDO=""; fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The package starts a system Dovecot on port 143; the tests run their own on a free port.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now dovecot >/dev/null 2>&1 || true; fi
$SUDO pkill -x dovecot >/dev/null 2>&1 || true
