#!/usr/bin/env bash
# Builds Sluice's container images (make images): one per binary, from
# dev/images/Containerfile, with buildah on the vfs storage driver, so no
# Docker daemon, no registry and no privileged mounts are needed.
#
#   dev/images/build.sh [--context-only] [IMAGE…]
#
# IMAGE is sluice-ingest, sluice-sender, sluice-logwriter or sluice-topics
# (all when none is named). For each architecture it builds the static
# binaries on the host, prepares the build context under the cache, builds
# and tags $SLUICE_IMAGE_REPO/<image>:$SLUICE_IMAGE_VERSION, writes an OCI
# archive of it, and prints a table of sizes. --context-only stops after the
# context, for docker buildx in CI (README, "Container images").
#
# Idempotent: Go's build cache makes the binaries cheap to rebuild, and an
# image whose inputs (context files and labels) are unchanged since its last
# build is neither rebuilt nor re-archived. The cache keeps only the images
# of the last build.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

# Settings; README "Container images" documents each.
SLUICE_IMAGE_REPO=${SLUICE_IMAGE_REPO:-ghcr.io/sluicehq}
SLUICE_IMAGE_ARCHS=${SLUICE_IMAGE_ARCHS:-amd64}
SLUICE_IMAGE_DIR=${SLUICE_IMAGE_DIR:-$SLUICE_CACHE/images}
SLUICE_IMAGE_OCI_DIR=${SLUICE_IMAGE_OCI_DIR:-$SLUICE_IMAGE_DIR/oci}
if [ -z "${SLUICE_IMAGE_VERSION:-}" ]; then
  SLUICE_IMAGE_VERSION=$(git -C "$REPO_DIR" describe --tags --always --dirty) \
    || die "cannot tell the version: git describe failed (set SLUICE_IMAGE_VERSION)"
fi

# image → module directory and package of its binary.
declare -A module=(
  [sluice-ingest]=services/ingest [sluice-sender]=services/sender
  [sluice-logwriter]=services/logwriter [sluice-topics]=pkg
)
declare -A package=(
  [sluice-ingest]=. [sluice-sender]=. [sluice-logwriter]=. [sluice-topics]=./cmd/sluice-topics
)
all_images=(sluice-ingest sluice-sender sluice-logwriter sluice-topics)

context_only=false
images=()
for arg in "$@"; do
  case $arg in
    --context-only) context_only=true ;;
    -h|--help) sed -n '2,/^source/{/^source/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) die "unknown option $arg (see $0 --help)" ;;
    *) [ -n "${module[$arg]:-}" ] || die "unknown image $arg (want one of: ${all_images[*]})"
       images+=("$arg") ;;
  esac
done
[ ${#images[@]} -gt 0 ] || images=("${all_images[@]}")

# A tag is at most 128 characters of [A-Za-z0-9_.-], not starting with . or -.
[[ $SLUICE_IMAGE_VERSION =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] \
  || die "SLUICE_IMAGE_VERSION=$SLUICE_IMAGE_VERSION is not a valid image tag"
for arch in $SLUICE_IMAGE_ARCHS; do
  case $arch in amd64|arm64) ;; *) die "SLUICE_IMAGE_ARCHS: unsupported architecture $arch (want amd64 and/or arm64)" ;; esac
done

revision=$(git -C "$REPO_DIR" rev-parse HEAD) || die "git rev-parse HEAD failed"
# The commit time stamps the image and every file in it: rebuilding a
# commit gives the same image, byte for byte. SOURCE_DATE_EPOCH overrides it,
# as for other reproducible builds.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$REPO_DIR" log -1 --format=%ct HEAD)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

mkdir -p "$SLUICE_IMAGE_DIR"
# One build at a time: make images and the image test share the context
# and the storage.
exec 9>"$SLUICE_IMAGE_DIR/.lock"
if ! flock -n 9; then
  log "images: waiting for another build in $SLUICE_IMAGE_DIR to finish"
  flock 9
fi

# The context: Containerfile, CA bundle, bin/linux_<arch>/<binary>.
ctx=$SLUICE_IMAGE_DIR/context
mkdir -p "$ctx"
cp "$DEV_DIR/images/Containerfile" "$ctx/Containerfile"

# The CA bundle is Debian's copy of the Mozilla set (package
# ca-certificates), not the host's /etc/ssl/certs/ca-certificates.crt:
# that one also holds whatever CAs this machine added locally
# (/usr/local/share/ca-certificates), which an image must not ship.
mozilla=/usr/share/ca-certificates/mozilla
compgen -G "$mozilla/*.crt" >/dev/null || die "no CA certificates in $mozilla (install the Debian package ca-certificates: make deps)"
(export LC_ALL=C; for f in "$mozilla"/*.crt; do cat "$f"; echo; done) | sed '/^$/d' > "$ctx/ca-certificates.crt.new"
chmod 0644 "$ctx/ca-certificates.crt.new"
mv "$ctx/ca-certificates.crt.new" "$ctx/ca-certificates.crt"

ldflags="-s -w -X github.com/sluicehq/sluice/pkg/buildinfo.version=$SLUICE_IMAGE_VERSION"
ldflags+=" -X github.com/sluicehq/sluice/pkg/buildinfo.revision=$revision"
for arch in $SLUICE_IMAGE_ARCHS; do
  mkdir -p "$ctx/bin/linux_$arch"
  for img in "${images[@]}"; do
    # Each module alone (GOWORK=off), as its tests build it; -s -w drops
    # the symbol table and DWARF (a third of the size; panics keep their
    # stack traces). The version is in the linker flags, so Go's own VCS
    # stamp adds nothing.
    (cd "$REPO_DIR/${module[$img]}" && CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOWORK=off \
      go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$ctx/bin/linux_$arch/$img" "${package[$img]}") \
      || die "building $img for linux/$arch failed"
    # COPY keeps the mode, and user 65532 must be able to run it whatever
    # the umask here.
    chmod 0755 "$ctx/bin/linux_$arch/$img"
  done
done

if $context_only; then
  log "images: context ready in $ctx (architectures: $SLUICE_IMAGE_ARCHS)"
  echo "$ctx"
  exit 0
fi

command -v buildah >/dev/null || die "buildah is not installed (make deps installs the Debian package buildah)"
# The storage lives in the cache, not in /var/lib/containers: nothing
# outside the cache is written, a system storage.conf set to overlay cannot
# clash with vfs on the same directory, and rm -rf of the cache reclaims
# all of it. vfs copies layers instead of mounting them, so it works
# unprivileged and inside containers (no overlayfs, no fuse).
bah=(buildah --root "$SLUICE_IMAGE_DIR/storage" --runroot "$SLUICE_IMAGE_DIR/run" --storage-driver vfs)
platforms=$(for a in $SLUICE_IMAGE_ARCHS; do printf 'linux/%s,' "$a"; done)
platforms=${platforms%,}
multi=false
[ "$(wc -w <<<"$SLUICE_IMAGE_ARCHS")" -gt 1 ] && multi=true

mkdir -p "$SLUICE_IMAGE_OCI_DIR" "$SLUICE_IMAGE_DIR/stamps"
keep=()
for img in "${images[@]}"; do
  tag=$SLUICE_IMAGE_REPO/$img:$SLUICE_IMAGE_VERSION
  archive=$SLUICE_IMAGE_OCI_DIR/$img.tar
  keep+=("$tag")
  stamp=$SLUICE_IMAGE_DIR/stamps/$img
  inputs=$( {
    printf '%s\n' "$tag" "$revision" "$created" "$platforms" "$archive"
    sha256sum "$ctx/Containerfile" "$ctx/ca-certificates.crt"
    for a in $SLUICE_IMAGE_ARCHS; do sha256sum "$ctx/bin/linux_$a/$img"; done
  } | sha256sum | cut -c1-64)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$inputs" ] && [ -s "$archive" ] \
     && "${bah[@]}" inspect --type "$($multi && echo manifest || echo image)" "$tag" >/dev/null 2>&1; then
    log "images: $tag is up to date"
    continue
  fi
  log "images: building $tag ($platforms)"
  rm -f "$stamp"
  args=(--target "$img" --timestamp "$epoch"
        --build-arg "VERSION=$SLUICE_IMAGE_VERSION" --build-arg "REVISION=$revision" --build-arg "CREATED=$created"
        -f "$ctx/Containerfile")
  out=$SLUICE_IMAGE_DIR/build-$img.log
  if $multi; then
    # Several architectures: a manifest list under the tag, one image per
    # platform inside it (what docker buildx --platform makes).
    "${bah[@]}" manifest rm "$tag" >/dev/null 2>&1 || true
    "${bah[@]}" rmi "$tag" >/dev/null 2>&1 || true
    "${bah[@]}" bud "${args[@]}" --platform "$platforms" --manifest "$tag" "$ctx" >"$out" 2>&1 \
      || { cat "$out" >&2; die "buildah bud of $img failed (log above)"; }
    "${bah[@]}" manifest push --all --format oci --quiet "$tag" "oci-archive:$archive.new:$SLUICE_IMAGE_VERSION" >>"$out" 2>&1 \
      || { cat "$out" >&2; die "writing the OCI archive of $img failed (log above)"; }
  else
    "${bah[@]}" manifest rm "$tag" >/dev/null 2>&1 || true
    "${bah[@]}" bud "${args[@]}" --platform "$platforms" -t "$tag" "$ctx" >"$out" 2>&1 \
      || { cat "$out" >&2; die "buildah bud of $img failed (log above)"; }
    "${bah[@]}" push --quiet "$tag" "oci-archive:$archive.new:$SLUICE_IMAGE_VERSION" >>"$out" 2>&1 \
      || { cat "$out" >&2; die "writing the OCI archive of $img failed (log above)"; }
  fi
  mv "$archive.new" "$archive"
  echo "$inputs" > "$stamp"
done

# Keep the storage to the images just built: every commit builds a new tag,
# and vfs keeps a full copy of each layer.
if [ ${#images[@]} -eq ${#all_images[@]} ]; then
  while read -r name; do
    [[ " ${keep[*]} " == *" $name "* ]] && continue
    "${bah[@]}" manifest rm "$name" >/dev/null 2>&1 || "${bah[@]}" rmi -f "$name" >/dev/null 2>&1 || true
  done < <("${bah[@]}" images --noheading --format '{{.Name}}:{{.Tag}}' | grep -v '<none>' || true)
  "${bah[@]}" rmi --prune >/dev/null 2>&1 || true
fi

# Sizes: what is in the image (binary and CA bundle, per architecture) and
# the compressed OCI archive, which is what a registry stores and a node
# pulls (all architectures together).
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
ca_size=$(stat -c %s "$ctx/ca-certificates.crt")
printf '%-48s %-7s %12s %12s  %s\n' IMAGE ARCH UNCOMPRESSED COMPRESSED "OCI ARCHIVE"
for img in "${images[@]}"; do
  archive=$SLUICE_IMAGE_OCI_DIR/$img.tar
  for arch in $SLUICE_IMAGE_ARCHS; do
    files=$(( $(stat -c %s "$ctx/bin/linux_$arch/$img") + ca_size ))
    printf '%-48s %-7s %12s %12s  %s\n' "$SLUICE_IMAGE_REPO/$img:$SLUICE_IMAGE_VERSION" "$arch" \
      "$(mib "$files")" "$(mib "$(stat -c %s "$archive")")" "$archive"
  done
done
