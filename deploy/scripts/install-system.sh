#!/usr/bin/env bash
# Install the system packages the embedded stack needs, and build TimescaleDB once.
#
# Debian bookworm ships no TimescaleDB package; trixie's source package (2.19.x, the
# Apache-licensed part) builds against bookworm's postgresql-server-dev-15 in under a minute.
# Idempotent: every step checks whether its result is already there.
set -euo pipefail

PG_MAJOR=15
PROGRESS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/progress.sh"
LOG_DIR="${CITYSENSE_BUILD_LOGS:-$(pwd)/build/logs}"
APT_PACKAGES=(
  chromium  # headless browser for the display page test (driven by Playwright)
  mosquitto mosquitto-clients
  "postgresql-${PG_MAJOR}" "postgresql-server-dev-${PG_MAJOR}" postgresql-client
  prometheus
  cmake build-essential libssl-dev libkrb5-dev dpkg-dev
)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-system: installing ${#missing[@]} Debian packages: ${missing[*]}"
  bash "$PROGRESS" "apt-get update" "$LOG_DIR/apt-update.log" $SUDO apt-get update -q
  bash "$PROGRESS" "apt-get install (a few minutes the first time)" "$LOG_DIR/apt-install.log" \
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}"
  # The Debian packages start system-wide daemons on the standard ports; the project runs its own
  # instances on its own ports, so those are left as the machine had them.
fi

PG_SHAREDIR="$(/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config --sharedir)"
if [ -f "${PG_SHAREDIR}/extension/timescaledb.control" ]; then
  exit 0
fi

echo "install-system: building TimescaleDB from Debian trixie's source package (once, a few minutes)"
SRC_LIST=/etc/apt/sources.list.d/citysense-trixie-src.sources
if [ ! -f "$SRC_LIST" ]; then
  $SUDO tee "$SRC_LIST" >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  bash "$PROGRESS" "apt-get update (trixie sources)" "$LOG_DIR/apt-update-src.log" \
    $SUDO apt-get update -q
fi
CACHE_DIR="${CITYSENSE_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/citysense/timescaledb}"
mkdir -p "$CACHE_DIR"
cd "$CACHE_DIR"
if ! ls -d timescaledb-*/ >/dev/null 2>&1; then
  bash "$PROGRESS" "downloading the source" "$LOG_DIR/timescaledb-source.log" \
    apt-get source -q --download-only timescaledb
  dpkg-source -x ./timescaledb_*.dsc >/dev/null
fi
SRC_DIR="$(ls -d timescaledb-*/ | head -n 1)"
cd "$SRC_DIR"
if [ ! -f build/timescaledb.so ] && [ ! -f build/src/timescaledb.so ]; then
  rm -rf build
  bash "$PROGRESS" "configuring TimescaleDB" "$LOG_DIR/timescaledb-bootstrap.log" \
    ./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
    -DPG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"
  bash "$PROGRESS" "compiling TimescaleDB" "$LOG_DIR/timescaledb-make.log" \
    make -C build -j"$(nproc)"
fi
bash "$PROGRESS" "installing TimescaleDB" "$LOG_DIR/timescaledb-install.log" \
  $SUDO make -C build install
echo "install-system: TimescaleDB installed"
