#!/bin/sh
# tls-bootstrap service: a self-signed certificate for DOMAIN, so that nginx can start (and
# answer the first ACME challenge) before certbot has issued the real one.
#
# Usage: the entrypoint of a one-shot container of the certbot image, which has openssl
# (the official nginx Alpine image has only the libraries, not the command); no arguments.
#   DOMAIN          the host name the certificate is for
#   BOOTSTRAP_DIR   where it goes (default /etc/letsencrypt/bootstrap)
#
# Writes /etc/letsencrypt/bootstrap/$DOMAIN/fullchain.pem and privkey.pem (the letsencrypt
# volume, which nginx mounts read-only) unless the certificate there is good for 30 more
# days, then exits 0. nginx uses it until certbot's /etc/letsencrypt/live/$DOMAIN exists.
set -o errexit -o nounset

domain="${DOMAIN:?DOMAIN is required}"
dir="${BOOTSTRAP_DIR:-/etc/letsencrypt/bootstrap}/$domain"

log() {
    printf '{"level":"%s","logger":"tls-bootstrap","message":"%s"}\n' "$1" "$2"
}

if [ -r "$dir/fullchain.pem" ] && [ -r "$dir/privkey.pem" ] \
    && openssl x509 -checkend 2592000 -noout -in "$dir/fullchain.pem" >/dev/null 2>&1; then
    log info "the bootstrap certificate for $domain is good for 30 more days"
    exit 0
fi

umask 077
mkdir -p "$dir"
rm -rf "$dir/.new"
mkdir "$dir/.new"
# A server certificate, not a CA: openssl's default configuration gives a self-signed
# certificate CA:TRUE, which TLS scanners (sslyze) refuse as a leaf. The extensions come
# from a configuration of our own, the same for every openssl version.
cat > "$dir/.new/openssl.cnf" <<EOF
[req]
distinguished_name = subject
x509_extensions = leaf
prompt = no
[subject]
CN = $domain
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:$domain
subjectKeyIdentifier = hash
EOF
openssl req -x509 -nodes -newkey rsa:2048 -days 90 -config "$dir/.new/openssl.cnf" \
    -keyout "$dir/.new/privkey.pem" -out "$dir/.new/fullchain.pem" 2>/dev/null
rm "$dir/.new/openssl.cnf"
# The key first: nginx notices a change by the certificate, which is written last.
mv "$dir/.new/privkey.pem" "$dir/privkey.pem"
mv "$dir/.new/fullchain.pem" "$dir/fullchain.pem"
rmdir "$dir/.new"
log info "made a self-signed bootstrap certificate for $domain (90 days)"
