#!/usr/bin/env bash
# Idempotent set-up on Debian 12 as root: Debian packages, the venv, pinned Python deps.
# Each step says what it does and how long it took; a step with nothing to do says so and takes ~0 s.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: must run as root (it installs Debian packages and starts a Ceph sandbox); re-run with sudo" >&2
  exit 2
fi

setup_start=$(date +%s.%N)
step_start=$setup_start
begin() {  # begin "what this step does"
  step_start=$(date +%s.%N)
  echo "setup: $1 ..."
}
elapsed() {  # seconds since $1 (awk: bc is not on a fresh machine)
  awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}
done_step() {  # done_step "what it did"
  printf 'setup: %s in %s s\n' "$1" "$(elapsed "$step_start")"
}

# --- Debian packages: one dpkg-query for all of them, one apt-get update, one apt-get install -------------
mapfile -t want < <(grep -Ev '^\s*(#|$)' apt-packages.txt | awk '{print $1}')
begin "apt: checking ${#want[@]} Debian packages from apt-packages.txt"
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${want[@]}" 2>/dev/null | awk '/ install ok installed$/ {print $1}' || true)
missing=()
for p in "${want[@]}"; do
  grep -qxF "$p" <<<"$installed" || missing+=("$p")
done
done_step "apt: ${#missing[@]} of ${#want[@]} packages missing${missing:+ (${missing[*]})}"
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # No translations: package descriptions in other languages are never read here.
  begin "apt: apt-get update (package lists)"
  apt-get update -qq -o Acquire::Languages=none
  done_step "apt: package lists updated"
  # --force-unsafe-io: dpkg skips its fsync per unpacked file (a fresh install that a crash would
  # simply re-run); on this kind of disk it is most of dpkg's time.
  begin "apt: installing ${#missing[@]} packages and their dependencies"
  apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-unsafe-io "${missing[@]}" >/dev/null
  done_step "apt: installed ${missing[*]}"
fi

# --- the venv: made from Debian's python3 so that python3-rados/python3-rbd (built for it) import --------
# --without-pip: the venv runs Debian's pip (python3-pip, seen through --system-site-packages; it installs
# into the venv) instead of ensurepip unpacking and byte-compiling a private pip and setuptools into it.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import rados, rbd, pip' 2>/dev/null; then
  begin "venv: creating .venv (Debian's python3, --system-site-packages, Debian's pip)"
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages --without-pip .venv
  done_step "venv: created .venv"
else
  echo "setup: venv: .venv exists and imports rados, rbd and pip: kept"
fi

# --- pinned Python packages: one pip call for the pins and the project itself --------------------------
stamp=.venv/.installed
if [ ! -f "$stamp" ] || ! cmp -s <(cat requirements.txt pyproject.toml) "$stamp"; then
  begin "pip: installing requirements.txt ($(grep -cEv '^\s*(#|$)' requirements.txt) pins) and the project (editable)"
  # One resolver run for both (the project's own ranges are met by the pins); the editable build uses
  # Debian's setuptools and wheel (python3-pip depends on them) instead of downloading setuptools into an
  # isolated build env; --no-compile leaves byte-compiling to the first import of what is used (most of
  # boto3/botocore never is). pip keeps its wheel cache (~/.cache/pip): a re-run after a pin changes
  # downloads only what changed.
  .venv/bin/python -m pip install -q --disable-pip-version-check --progress-bar off --no-compile \
    --no-build-isolation -r requirements.txt -e .
  cat requirements.txt pyproject.toml > "$stamp"
  done_step "pip: installed"
else
  echo "setup: pip: requirements.txt and pyproject.toml unchanged since the last install: nothing to do"
fi
printf 'setup: done in %s s\n' "$(elapsed "$setup_start")"
