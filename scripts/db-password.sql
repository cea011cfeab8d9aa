-- Set the application role's password to the one the db container was given (its
-- POSTGRES_PASSWORD_FILE secret, or POSTGRES_PASSWORD in dev): `make db-password`.
-- Fed to psql in the db container, so the password crosses no command line and no host file.
\set password `if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then cat "$POSTGRES_PASSWORD_FILE"; else printenv POSTGRES_PASSWORD; fi`
ALTER ROLE :"role" PASSWORD :'password';
