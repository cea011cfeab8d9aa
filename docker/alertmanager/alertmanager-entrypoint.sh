#!/bin/sh
# Alertmanager with its receivers written in at start: monitoring/alertmanager/alertmanager.yml
# (routes, inhibitions) plus the `operators` receiver, into a private tmpfs.
#
# Usage: alertmanager-entrypoint.sh [ALERTMANAGER-OPTIONS...]
#
#   ALERT_WEBHOOK_URL_FILE  a file holding the URL every alert (and its resolution) is
#                           POSTed to; none or empty: no webhook
#   ALERT_EMAIL_TO          the address alerts are mailed to; empty: no e-mail. Through the
#                           service's SMTP settings: SMTP_HOST, SMTP_PORT, SMTP_FROM,
#                           SMTP_USERNAME, SMTP_PASSWORD_FILE, SMTP_SECURITY (starttls,
#                           tls or none)
#
# Alertmanager reads no environment variables in its file, and older releases no URL from a
# file: hence this script. POSIX sh: the official image's shell is BusyBox.
set -o errexit -o nounset

CONFIG=/etc/alertmanager/alertmanager.yml
RENDERED=/run/alertmanager/alertmanager.yml

fail() {
    echo "alertmanager: $*" >&2
    exit 2
}

# A YAML double-quoted scalar of the value: backslashes and quotes escaped.
quoted() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

# A secret file's value as the app reads it: surrounding whitespace and line ends removed.
secret() {
    [ -r "$1" ] || fail "$2=$1 cannot be read"
    tr -d '\r\n' <"$1" | sed 's/^[[:space:]]*//;s/[[:space:]]*$//'
}

webhook=""
if [ -n "${ALERT_WEBHOOK_URL_FILE:-}" ]; then
    webhook=$(secret "$ALERT_WEBHOOK_URL_FILE" ALERT_WEBHOOK_URL_FILE)
    case "$webhook" in
        "" | http://* | https://*) ;;
        *) fail "ALERT_WEBHOOK_URL_FILE must hold an http:// or https:// URL" ;;
    esac
fi
email="${ALERT_EMAIL_TO:-}"
if [ -n "$email" ] && [ -z "${SMTP_HOST:-}" ]; then
    fail "ALERT_EMAIL_TO is set but SMTP_HOST is empty: alerts could not be mailed"
fi

umask 077
mkdir -p "$(dirname "$RENDERED")"
{
    cat "$CONFIG"
    printf '\nreceivers:\n  - name: operators\n'
    if [ -n "$webhook" ]; then
        printf '    webhook_configs:\n      - url: %s\n        send_resolved: true\n' \
            "$(quoted "$webhook")"
    fi
    if [ -n "$email" ]; then
        case "${SMTP_SECURITY:-starttls}" in
            starttls) require_tls=true ;;
            tls | none) require_tls=false ;;
            *) fail "SMTP_SECURITY must be starttls, tls or none" ;;
        esac
        printf '    email_configs:\n'
        printf '      - to: %s\n' "$(quoted "$email")"
        printf '        from: %s\n' "$(quoted "${SMTP_FROM:-alertmanager@localhost}")"
        printf '        smarthost: %s\n' "$(quoted "$SMTP_HOST:${SMTP_PORT:-587}")"
        printf '        require_tls: %s\n' "$require_tls"
        printf '        send_resolved: true\n'
        if [ -n "${SMTP_USERNAME:-}" ]; then
            printf '        auth_username: %s\n' "$(quoted "$SMTP_USERNAME")"
            password=""
            if [ -n "${SMTP_PASSWORD_FILE:-}" ]; then
                password=$(secret "$SMTP_PASSWORD_FILE" SMTP_PASSWORD_FILE)
            fi
            printf '        auth_password: %s\n' "$(quoted "$password")"
        fi
    fi
} >"$RENDERED"

exec /bin/alertmanager --config.file="$RENDERED" "$@"
