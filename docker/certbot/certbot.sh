#!/bin/sh
# certbot service: obtain the certificate for DOMAIN by HTTP-01 (webroot), then renew it.
#
# Usage: the certbot container's entrypoint (profile "certbot" of the production stack).
#   DOMAIN, SSL_EMAIL         the host name and the ACME account's contact address
#   CERTBOT_STAGING=true      use Let's Encrypt's staging environment (untrusted test certs)
#   CERTBOT_SERVER=URL        another ACME directory (e.g. a test server); overrides staging
#   CERTBOT_RENEW_INTERVAL    seconds between renewal checks (default 43200, twice a day)
#   CERTBOT_RENEW_DELAY=false renew at once when due: no random wait first (certbot waits
#                             up to 8 minutes by default, so that renewals everywhere do not
#                             hit the ACME server at the same moment; keep it on in production)
#
# The challenge files go to /var/www/certbot, which nginx serves at
# /.well-known/acme-challenge/; the certificates go to /etc/letsencrypt, which nginx reads
# and reloads on change. certbot only renews certificates within 30 days of expiry.
set -o errexit -o nounset

domain="${DOMAIN:?DOMAIN is required}"
email="${SSL_EMAIL:?SSL_EMAIL is required}"
interval="${CERTBOT_RENEW_INTERVAL:-43200}"
case "${CERTBOT_RENEW_DELAY:-true}" in
    true) delay="" ;;
    false) delay="--no-random-sleep-on-renew" ;;
    *) printf 'CERTBOT_RENEW_DELAY must be true or false, not "%s"\n' "$CERTBOT_RENEW_DELAY" >&2; exit 2 ;;
esac

log() {
    printf '{"level":"%s","logger":"certbot","message":"%s"}\n' "$1" "$2"
}

set -- --non-interactive --agree-tos --no-eff-email --email "$email" \
    --webroot --webroot-path /var/www/certbot
if [ -n "${CERTBOT_SERVER:-}" ]; then
    set -- "$@" --server "$CERTBOT_SERVER"
elif [ "${CERTBOT_STAGING:-false}" = "true" ]; then
    set -- "$@" --staging
fi

if [ ! -e "/etc/letsencrypt/live/$domain/fullchain.pem" ]; then
    log info "requesting a certificate for $domain"
    certbot certonly "$@" --domain "$domain" --keep-until-expiring
fi

log info "certificate for $domain present; checking for renewal every ${interval}s"
while :; do
    sleep "$interval" &
    wait $!
    # shellcheck disable=SC2086 # $delay is one flag or none
    certbot renew --non-interactive --webroot --webroot-path /var/www/certbot $delay \
        ${CERTBOT_SERVER:+--server "$CERTBOT_SERVER"} || log error "renewal attempt failed"
done
