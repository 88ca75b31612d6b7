#!/usr/bin/env bash
# Installs what the dev stack and the build need, and nothing that is already
# there: Debian packages (ClickHouse server, protoc, kcat, JDK, Maven, openssl), the
# Apache Kafka broker jars from Maven Central, and pinned Go tools. Idempotent.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_pkgs=()
command -v clickhouse-server >/dev/null || need_pkgs+=(clickhouse-server)
command -v clickhouse-client >/dev/null || need_pkgs+=(clickhouse-client)
command -v protoc >/dev/null || need_pkgs+=(protobuf-compiler)
command -v kcat >/dev/null || need_pkgs+=(kcat)
command -v java >/dev/null || need_pkgs+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_pkgs+=(maven)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v flock >/dev/null || need_pkgs+=(util-linux)
command -v openssl >/dev/null || need_pkgs+=(openssl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  as_root apt-get update -qq >/dev/null
  # Debian's clickhouse-server postinst would start a system-wide server on
  # the default ports; policy-rc.d 101 tells it not to.
  as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null \
    || die "apt-get install ${need_pkgs[*]} failed"
  as_root rm -f /usr/sbin/policy-rc.d
fi

# buildah builds the container images (make images, dev/images/build.sh).
# The images are FROM scratch with no RUN step, so it needs no OCI runtime
# (runc, crun: only recommended) and no fuse-overlayfs: the build uses the
# vfs storage driver, which copies layers and works inside any container.
# The images' CA bundle is Debian's Mozilla set from ca-certificates.
image_pkgs=()
command -v buildah >/dev/null || image_pkgs+=(buildah)
compgen -G "/usr/share/ca-certificates/mozilla/*.crt" >/dev/null || image_pkgs+=(ca-certificates)
if [ ${#image_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${image_pkgs[*]}"
  as_root apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${image_pkgs[@]}" >/dev/null \
    || die "apt-get install ${image_pkgs[*]} failed"
fi

jars=$(kafka_jars_dir)
if [ ! -f "$jars/.complete" ]; then
  log "fetching the Kafka broker and its runtime dependencies from Maven Central into $jars"
  tmp=$(mktemp -d "$SLUICE_CACHE.jars.XXXXXX" 2>/dev/null || { mkdir -p "$SLUICE_CACHE"; mktemp -d "$SLUICE_CACHE/jars.XXXXXX"; })
  mvn -q -B -f "$DEV_DIR/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.log" 2>&1 \
    || { cat "$tmp.log" >&2; die "mvn could not fetch the Kafka jars (log above)"; }
  rm -f "$tmp.log"
  mkdir -p "$(dirname "$jars")"
  rm -rf "$jars"
  mv "$tmp" "$jars"
  touch "$jars/.complete"
fi

# Go tools pinned to the versions the repository's generated code and lint
# expect, built from the Go module proxy into the cache.
mkdir -p "$SLUICE_CACHE/bin"
install_go_tool() { # name module@version
  local stamp="$SLUICE_CACHE/bin/.$1.version"
  if [ ! -x "$SLUICE_CACHE/bin/$1" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$2" ]; then
    log "installing $2"
    GOBIN="$SLUICE_CACHE/bin" GOWORK=off GOFLAGS=-mod=mod go install "$2" || die "go install $2 failed"
    echo "$2" > "$stamp"
  fi
}
# protoc-gen-go must match the protobuf runtime the generated code is built
# against, so its version is read from proto/go.mod.
pb_version=$(cd "$REPO_DIR/proto" && GOWORK=off go list -m -f '{{.Version}}' google.golang.org/protobuf) \
  || die "cannot read the protobuf version from proto/go.mod"
install_go_tool protoc-gen-go "google.golang.org/protobuf/cmd/protoc-gen-go@$pb_version"
install_go_tool staticcheck honnef.co/go/tools/cmd/staticcheck@v0.8.2

# chDB (PyPI package chdb): the current ClickHouse engine in-process, for the
# tests that run the dashboards' SQL, the schema migrations and the log API's
# queries on today's ClickHouse as well as on the dev stack's 18.16
# (pkg/testenv/chdb.go). Installed with pip --target into the cache, pinned,
# so the system Python stays untouched; the stamp holds the version.
CHDB_VERSION=4.4.0
chdb_dir="$SLUICE_CACHE/chdb"
if [ "$(cat "$chdb_dir/.version" 2>/dev/null)" != "$CHDB_VERSION" ]; then
  command -v python3 >/dev/null || die "python3 is needed for chDB (the dashboard and log API tests)"
  log "installing chdb $CHDB_VERSION into $chdb_dir"
  tmp="$chdb_dir.tmp.$$"
  rm -rf "$tmp"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --no-input --target "$tmp" "chdb==$CHDB_VERSION" \
    || { rm -rf "$tmp"; die "pip install chdb==$CHDB_VERSION failed"; }
  rm -rf "$chdb_dir"
  mv "$tmp" "$chdb_dir"
  echo "$CHDB_VERSION" > "$chdb_dir/.version"
fi
