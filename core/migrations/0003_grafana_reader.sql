-- The role Grafana reads IronSight as: SELECT only, never a write. Roles belong to the whole
-- PostgreSQL cluster while grants belong to each database, so this runs in every database that
-- is migrated (several share one server in the tests) and is safe to run again:
-- - the role is created when missing (NOLOGIN: a group role; operators give a login role of
--   their own, with its password, membership: CREATE ROLE grafana LOGIN PASSWORD '…' IN ROLE
--   ironsight_grafana); a concurrent migration of another database creating it first is fine;
-- - a migrator without CREATEROLE skips the role with a notice instead of failing the migration,
--   and the grants follow once an operator has created the role and migrations run again;
-- - core's migrations run before the other packages create their tables, so besides SELECT on
--   the dashboards' tables that already exist, the migrator's default privileges give the role
--   SELECT on every table it creates later in this schema (readings, alarms, tickets, …).
DO $$
DECLARE
    reader CONSTANT text := 'ironsight_grafana';
    dashboard_tables CONSTANT text[] := ARRAY[
        'equipment', 'sites', 'readings', 'equipment_state', 'dead_letters', 'ingest_stats', 'faults',
        'fault_events', 'alarms', 'tickets', 'ticket_events', 'ticket_alarms'];
    may_create boolean;
    t text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = reader) THEN
        SELECT rolsuper OR rolcreaterole INTO may_create FROM pg_catalog.pg_roles WHERE rolname = current_user;
        IF NOT may_create THEN
            RAISE NOTICE 'role % does not exist and % may not create roles: create it (NOLOGIN) and migrate again',
                reader, current_user;
            RETURN;
        END IF;
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', reader);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by the migration of another database on this server
        END;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), reader);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), reader);
    FOREACH t IN ARRAY dashboard_tables LOOP
        IF to_regclass(format('%I.%I', current_schema(), t)) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT ON %I.%I TO %I', current_schema(), t, reader);
        END IF;
    END LOOP;
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I GRANT SELECT ON TABLES TO %I',
                   current_user, current_schema(), reader);
END
$$;
