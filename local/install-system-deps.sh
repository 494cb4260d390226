#!/usr/bin/env bash
# Installs the Debian packages the tests drive for real: Dovecot (IMAP) and Chromium (browser).
# Idempotent and quiet when both are already there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

bash "$here/install-dovecot.sh"

if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); else
  echo "install-system-deps: need root or sudo to install chromium" >&2; exit 1; fi
echo "install-system-deps: installing chromium"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
