#!/bin/sh
# nginx start hook (/docker-entrypoint.d/): wait for a certificate, then keep nginx on the
# newest one.
#
# Usage: run by the nginx image's entrypoint before nginx starts; no arguments.
#   DOMAIN                  the host name (certbot's lineage: /etc/letsencrypt/live/$DOMAIN)
#   CERT_WATCH_INTERVAL     seconds between certificate checks (default 60)
#   CERT_WAIT_SECONDS       how long to wait for a first certificate (default 120)
#
# /etc/nginx/certs/current links to certbot's certificate when there is one, else to the
# self-signed bootstrap certificate that the tls-bootstrap service writes into
# /etc/letsencrypt/bootstrap/$DOMAIN, so nginx can start (and serve the ACME challenge)
# before the first certificate is issued. Nothing here makes a certificate: the official
# nginx Alpine image has no openssl command. A background loop relinks and runs
# `nginx -s reload` — a graceful reload that drops no connection — whenever certbot issues or
# renews the certificate.
set -o errexit -o nounset

domain="${DOMAIN:?DOMAIN is required}"
interval="${CERT_WATCH_INTERVAL:-60}"
wait_seconds="${CERT_WAIT_SECONDS:-120}"
live="/etc/letsencrypt/live/$domain"
bootstrap="/etc/letsencrypt/bootstrap/$domain"
current="/etc/nginx/certs/current"

log() {
    printf '{"level":"%s","logger":"nginx.certificates","message":"%s"}\n' "$1" "$2"
}

# The folder of the certificate to serve: certbot's, else the bootstrap one, else none.
chosen() {
    for dir in "$live" "$bootstrap"; do
        if [ -r "$dir/fullchain.pem" ] && [ -r "$dir/privkey.pem" ]; then
            echo "$dir"
            return
        fi
    done
}

fingerprint() {
    # Changes whenever certbot (or tls-bootstrap) writes a new certificate.
    dir="$(chosen)"
    if [ -n "$dir" ]; then echo "$dir $(cksum < "$dir/fullchain.pem")"; else echo none; fi
}

point_at() {
    # -n replaces the link itself rather than following it into the directory.
    ln -sfn "$1" "$current"
}

mkdir -p /etc/nginx/certs
waited=0
while [ -z "$(chosen)" ]; do
    if [ "$waited" -ge "$wait_seconds" ]; then
        log error "no certificate for $domain after ${waited}s: neither certbot's ($live) nor the bootstrap one ($bootstrap, written by the tls-bootstrap service)"
        exit 1
    fi
    [ "$waited" -gt 0 ] || log info "waiting for a certificate for $domain"
    sleep 1
    waited=$((waited + 1))
done
point_at "$(chosen)"
if [ "$(chosen)" = "$live" ]; then
    log info "using the certificate for $domain"
else
    log warning "no certificate for $domain yet: serving the self-signed bootstrap certificate"
fi

(
    seen="$(fingerprint)"
    while sleep "$interval"; do
        now="$(fingerprint)"
        if [ "$now" != "$seen" ] && [ "$now" != none ]; then
            point_at "$(chosen)"
            if nginx -t >/dev/null 2>&1 && nginx -s reload; then
                log info "certificate for $domain changed: nginx reloaded"
                seen="$now"
            else
                log error "certificate for $domain changed but the configuration test failed"
            fi
        fi
    done
) &
