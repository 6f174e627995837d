#!/usr/bin/env bash
# Idempotent set-up on Debian 12 as root: Debian packages, the venv, pinned Python deps.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: must run as root (it installs Debian packages and starts a Ceph sandbox); re-run with sudo" >&2
  exit 2
fi

mapfile -t want < <(grep -Ev '^\s*(#|$)' apt-packages.txt)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv is made from Debian's python3 so that python3-rados/python3-rbd (built for it) import.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import rados, rbd' 2>/dev/null; then
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || ! cmp -s <(cat requirements.txt pyproject.toml) "$stamp"; then
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  cat requirements.txt pyproject.toml > "$stamp"
fi
