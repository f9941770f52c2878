#!/usr/bin/env bash
# apptainer-install.sh - a working apptainer (and `singularity`) on Debian 12, as root.
#
# Usage: scripts/apptainer-install.sh
#
# Debian 12 ships no apptainer. Debian sid does, built against a newer glibc, so this
# takes apptainer and libc6 from sid through a private apt configuration (the
# system's sources stay bookworm-only), unpacks both under /opt/apptainer, points the
# two binaries at the private glibc with patchelf, and links /usr/local/bin/apptainer
# and /usr/local/bin/singularity. It ends by running `apptainer exec tiny.sif true`
# on an image built by build-tiny-image.sh, and exits non-zero with the reason when
# apptainer cannot work here (the container tests then skip). Safe to run again.
set -euo pipefail

readonly PREFIX=/opt/apptainer
readonly SID_SOURCE="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
http://deb.debian.org/debian sid main"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE

say() { printf 'apptainer-install: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

install_host_tools() {
  local missing=() package
  # no squashfuse: with it, apptainer tries FUSE mounts, and /dev/fuse is root-only
  for package in patchelf squashfs-tools uidmap; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null |
      grep -q 'install ok installed' || missing+=("$package")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

download_from_sid() { # apptainer and libc6 .debs into $WORK
  local apt_options
  mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial"
  echo "$SID_SOURCE" >"$WORK/sources.list"
  apt_options=(
    -o "Dir::Etc::sourcelist=$WORK/sources.list"
    -o Dir::Etc::sourceparts=/nonexistent
    -o "Dir::State::Lists=$WORK/lists"
    -o "Dir::Cache=$WORK/cache"
    -o APT::Sandbox::User=root
  )
  say "fetching apptainer and libc6 from Debian sid"
  apt-get "${apt_options[@]}" update -qq ||
    die "apt-get update of Debian sid failed: is deb.debian.org reachable?"
  (cd "$WORK" && apt-get "${apt_options[@]}" download -qq apptainer libc6) ||
    die "Debian sid has no downloadable apptainer/libc6 now"
}

unpack() {
  rm -rf "${PREFIX:?}"
  mkdir -p "$PREFIX/glibc"
  dpkg -x "$WORK"/libc6_*.deb "$PREFIX/glibc"
  dpkg -x "$WORK"/apptainer_*.deb "$PREFIX"

  # the non-setuid layout looks for etc/ and var/ beside usr/lib/, under PREFIX/usr
  mkdir -p "$PREFIX/usr/etc" "$PREFIX/usr/var"
  mv "$PREFIX/etc/apptainer" "$PREFIX/usr/etc/"
  mv "$PREFIX/var/lib" "$PREFIX/usr/var/"
  rm -rf "${PREFIX:?}/etc" "${PREFIX:?}/var"
  ln -s ../etc "$PREFIX/usr/lib/etc"
  ln -s ../var "$PREFIX/usr/lib/var"
}

patch_binaries() {
  local glibc="$PREFIX/glibc/usr/lib/x86_64-linux-gnu" binary
  for binary in "$PREFIX/usr/bin/apptainer" \
    "$PREFIX/usr/lib/x86_64-linux-gnu/apptainer/bin/starter"; do
    [ -f "$binary" ] || die "the sid package no longer has $binary"
    # DT_RPATH, not RUNPATH: apptainer re-executes itself with LD_LIBRARY_PATH set,
    # which would win over a RUNPATH and bring back the system's older glibc
    patchelf --set-interpreter "$glibc/ld-linux-x86-64.so.2" --force-rpath \
      --set-rpath "$glibc:/usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu" "$binary"
  done
}

configure() {
  local conf="$PREFIX/usr/etc/apptainer/apptainer.conf" file
  # root here lacks CAP_SYS_RESOURCE; asking for the full set makes every exec fail
  sed -i 's/^root default capabilities = full/root default capabilities = file/' "$conf"
  for file in /etc/subuid /etc/subgid; do
    grep -q '^root:' "$file" 2>/dev/null || echo root:100000:65536 >>"$file"
  done
  ln -sf "$PREFIX/usr/bin/apptainer" /usr/local/bin/apptainer
  ln -sf "$PREFIX/usr/bin/apptainer" /usr/local/bin/singularity
}

check() { # build the tiny image and run `true` in it
  bash "$HERE/build-tiny-image.sh" "$WORK/tiny.sif" 2>"$WORK/check.log" &&
    apptainer -s exec "$WORK/tiny.sif" true 2>>"$WORK/check.log"
}

[ "$(id -u)" -eq 0 ] || die "run as root (it installs under $PREFIX)"
started=$SECONDS
if [ -x /usr/local/bin/apptainer ] && check; then
  say "already works: $(apptainer --version)"
  exit 0
fi
install_host_tools
download_from_sid
unpack
patch_binaries
configure
check || {
  cat "$WORK/check.log" >&2
  die "apptainer is installed in $PREFIX but cannot run an image here"
}
say "$(apptainer --version) works (installed in $((SECONDS - started)) s)"
