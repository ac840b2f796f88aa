#!/bin/sh
# Runs once, when the database volume is first created (docker-entrypoint-initdb.d): the login
# Grafana connects with. It is a member of the group role ironsight_grafana, to which IronSight's
# migration core/0003_grafana_reader grants SELECT (and nothing else); the login is read-only at
# the session level too. The group role is created here if the migration has not run yet.
set -eu
: "${IRONSIGHT_GRAFANA_DB_USER:=grafana}"
: "${IRONSIGHT_GRAFANA_DB_PASSWORD:?set IRONSIGHT_GRAFANA_DB_PASSWORD}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v login="$IRONSIGHT_GRAFANA_DB_USER" -v password="$IRONSIGHT_GRAFANA_DB_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE ironsight_grafana NOLOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ironsight_grafana') \gexec
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE ironsight_grafana', :'login', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'login') \gexec
ALTER ROLE :"login" SET default_transaction_read_only = on;
ALTER ROLE :"login" SET statement_timeout = '60s';
SQL
