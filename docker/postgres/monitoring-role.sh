#!/bin/sh
# The monitoring role of the Postgres exporter: LOGIN, member of pg_monitor (reads the
# statistics views and settings, no table), its password from MONITORING_PASSWORD_FILE.
# Created when missing, its password set again at every run. Connects as the owner of the
# database (PGHOST, PGPORT, PGUSER, PGDATABASE; password from DB_PASSWORD_FILE).
#
# Usage: monitoring-role.sh      (the one-shot monitoring-role service of
#                                 docker-compose.monitoring.yml)
set -o errexit -o nounset

secret() {
    if [ ! -r "$1" ]; then
        echo "monitoring-role: $2=$1 cannot be read" >&2
        exit 2
    fi
    tr -d '\r\n' <"$1" | sed 's/^[[:space:]]*//;s/[[:space:]]*$//'
}

PGPASSWORD=$(secret "$DB_PASSWORD_FILE" DB_PASSWORD_FILE)
export PGPASSWORD
password=$(secret "$MONITORING_PASSWORD_FILE" MONITORING_PASSWORD_FILE)
if [ -z "$password" ]; then
    echo "monitoring-role: MONITORING_PASSWORD_FILE is empty" >&2
    exit 2
fi

# The password reaches psql through its environment (\getenv), never a command line, and
# psql quotes it (:'password').
MONITORING_PASSWORD=$password
export MONITORING_PASSWORD
exec psql --no-psqlrc --quiet --set ON_ERROR_STOP=1 <<'SQL'
\getenv password MONITORING_PASSWORD
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'monitoring') AS missing \gset
\if :missing
CREATE ROLE monitoring LOGIN;
\endif
ALTER ROLE monitoring WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password';
GRANT pg_monitor TO monitoring;
SQL
