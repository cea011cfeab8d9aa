#!/bin/sh
# nginx start hook (/docker-entrypoint.d/): make sure a certificate exists, then keep
# nginx on the newest one.
#
# Usage: run by the nginx image's entrypoint before nginx starts; no arguments.
#   DOMAIN                  the host name (certbot's lineage: /etc/letsencrypt/live/$DOMAIN)
#   CERT_WATCH_INTERVAL     seconds between certificate checks (default 60)
#
# /etc/nginx/certs/current links to the certbot certificate when there is one, else to a
# self-signed bootstrap certificate made here, so nginx can start (and serve the ACME
# challenge) before the first certificate is issued. A background loop relinks and runs
# `nginx -s reload` — a graceful reload that drops no connection — whenever certbot
# issues or renews the certificate.
set -o errexit -o nounset

domain="${DOMAIN:?DOMAIN is required}"
interval="${CERT_WATCH_INTERVAL:-60}"
live="/etc/letsencrypt/live/$domain"
bootstrap="/etc/nginx/certs/bootstrap"
current="/etc/nginx/certs/current"

log() {
    printf '{"level":"%s","logger":"nginx.certificates","message":"%s"}\n' "$1" "$2"
}

fingerprint() {
    # Changes whenever certbot writes a new certificate into the lineage.
    if [ -r "$live/fullchain.pem" ]; then cksum < "$live/fullchain.pem"; else echo none; fi
}

point_at() {
    # -n replaces the link itself rather than following it into the directory.
    ln -sfn "$1" "$current"
}

mkdir -p /etc/nginx/certs
if [ -r "$live/fullchain.pem" ] && [ -r "$live/privkey.pem" ]; then
    point_at "$live"
    log info "using the certificate for $domain"
else
    if [ ! -r "$bootstrap/fullchain.pem" ]; then
        mkdir -p "$bootstrap"
        openssl req -x509 -nodes -newkey rsa:2048 -days 30 \
            -subj "/CN=$domain" -addext "subjectAltName=DNS:$domain" \
            -keyout "$bootstrap/privkey.pem" -out "$bootstrap/fullchain.pem" 2>/dev/null
    fi
    point_at "$bootstrap"
    log warning "no certificate for $domain yet: serving a self-signed bootstrap certificate"
fi

(
    seen="$(fingerprint)"
    while sleep "$interval"; do
        now="$(fingerprint)"
        if [ "$now" != "$seen" ] && [ "$now" != none ]; then
            point_at "$live"
            if nginx -t >/dev/null 2>&1 && nginx -s reload; then
                log info "certificate for $domain changed: nginx reloaded"
                seen="$now"
            else
                log error "certificate for $domain changed but the configuration test failed"
            fi
        fi
    done
) &
