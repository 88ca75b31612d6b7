#!/usr/bin/env bash
# Makes the dev stack's throwaway TLS material and passwords in $TLS_STATE
# ($SLUICE_DEV_STATE/tls), once: dev/up.sh calls it before starting Kafka and
# ClickHouse, and a later call finds it all there and does nothing. Nothing
# here is a secret worth keeping; it exists so that the secured listeners and
# the tests that use them run on every machine without a real PKI.
#
#   ca.pem, ca.key                the dev CA; the listeners' certificates chain to it
#   server.pem, server.key        127.0.0.1 and localhost, for Kafka's SSL and
#                                 SASL_SSL listeners and ClickHouse's secure port
#   server-keystore.pem           server.key then server.pem: Kafka's PEM key store
#   client.pem, client.key        a client certificate for mTLS (CN=sluice-client)
#   other-ca.pem, other-ca.key    an unrelated CA, for the "untrusted CA" tests
#   scram.password                password of $SLUICE_DEV_SCRAM_USER (SCRAM-SHA-256 and -512)
#   plain.password                password of $SLUICE_DEV_PLAIN_USER (SASL PLAIN)
#   clickhouse.password           password of ClickHouse's $SLUICE_DEV_CLICKHOUSE_TLS_USER
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v openssl >/dev/null || die "openssl is needed to make the dev CA (dev/install.sh installs it)"
[ -f "$TLS_STATE/.complete" ] && exit 0

log "making the dev CA, certificates and passwords in $TLS_STATE"
# A half-made directory (an interrupted run) is made again whole.
rm -rf "$TLS_STATE"
mkdir -p "$TLS_STATE"
cd "$TLS_STATE"
umask 077

# ten years: the material lives as long as the state directory does.
days=3650
key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }
ca() { # name subject
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days $days -subj "$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$1.pem" 2>/dev/null
}
leaf() { # name subject extensions
  key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days $days \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "/CN=Sluice dev CA"
ca other-ca "/CN=Unrelated CA (Sluice tests of an untrusted certificate)"
leaf server "/CN=localhost" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
leaf client "/CN=sluice-client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
# Kafka's PEM key store is the PKCS#8 key followed by its certificate chain
# (ssl.keystore.type=PEM); genpkey writes PKCS#8 already.
cat server.key server.pem ca.pem > server-keystore.pem
rm -f ca.srl

for f in scram plain clickhouse; do openssl rand -hex 16 > "$f.password"; done
# The broker and ClickHouse run as this user; the files only need to be
# readable by it, and the directory by nobody else.
chmod 600 ./*.key ./*.password server-keystore.pem
chmod 644 ./*.pem
chmod 600 server-keystore.pem
touch .complete
