#!/usr/bin/env bash
# build-tiny-image.sh - build a tiny busybox SIF image without any container registry.
#
# Usage: scripts/build-tiny-image.sh OUTPUT.sif
#
# Takes Debian's busybox-static package (from apt's cache, else `apt-get download`),
# lays out a root folder with busybox and its applets (sh, ls, cat, env, pwd, ...)
# and has apptainer (or singularity) build OUTPUT.sif from it: about 1 MB, under 1 s.
# The image is what the container tests run `singularity exec` on.
set -euo pipefail

readonly OUTPUT="${1:-}"

say() { printf 'build-tiny-image: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ -n "$OUTPUT" ] || die "usage: $0 OUTPUT.sif (got no argument)"
RUNTIME="$(command -v apptainer || command -v singularity || true)"
[ -n "$RUNTIME" ] ||
  die "neither apptainer nor singularity is on PATH; run scripts/apptainer-install.sh"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

fetch_busybox() { # the path of busybox-static's .deb, downloaded when not cached
  local cached
  cached="$(find /var/cache/apt/archives -maxdepth 1 -name 'busybox-static_*.deb' \
    2>/dev/null | head -n 1)"
  if [ -n "$cached" ]; then
    echo "$cached"
    return
  fi
  (cd "$WORK" && apt-get download -qq -o APT::Sandbox::User=root busybox-static) ||
    die "apt-get download busybox-static failed: is the Debian mirror reachable?"
  find "$WORK" -maxdepth 1 -name 'busybox-static_*.deb' | head -n 1
}

lay_out_root() { # lay_out_root DEB ROOT
  local busybox applet
  dpkg -x "$1" "$WORK/deb"
  busybox="$WORK/deb/bin/busybox"
  [ -x "$busybox" ] || die "busybox-static's package holds no bin/busybox"

  mkdir -p "$2"/{bin,etc,tmp,root,home,proc,sys,dev,usr}
  install -m 0755 "$busybox" "$2/bin/busybox"
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$2/bin/$applet"
  done
  ln -s ../bin "$2/usr/bin"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' \
    >"$2/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$2/etc/group"
  chmod 1777 "$2/tmp"
}

deb="$(fetch_busybox)"
lay_out_root "$deb" "$WORK/root"
mkdir -p "$(dirname "$OUTPUT")"
"$RUNTIME" -s build --force "$OUTPUT" "$WORK/root" >"$WORK/build.log" 2>&1 || {
  tail -n 20 "$WORK/build.log" >&2
  die "$RUNTIME build $OUTPUT failed"
}
say "built $OUTPUT ($(du -h "$OUTPUT" | cut -f1)) with $("$RUNTIME" --version)"
