-- Two roles (DESIGN.md section 7): citysense_writer for the sinks, citysense_reader for the
-- open-data API. They are created without LOGIN; `citysense db migrate` gives them a login and
-- a password when the [sink] writer_password / reader_password settings are set. Roles belong
-- to the cluster, so another database of the same server may already have created them.

DO $$
BEGIN
    CREATE ROLE citysense_writer NOLOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$;

DO $$
BEGIN
    CREATE ROLE citysense_reader NOLOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO citysense_writer, citysense_reader;

-- The writer appends rows, upserts aggregate revisions and its offsets; it never deletes.
-- TEMPORARY: the write path stages each batch in a temporary table.
GRANT SELECT, INSERT ON
    noise_measurements, air_measurements, traffic_measurements, traffic_counts,
    occupancy_measurements, occupancy_regions
    TO citysense_writer;
GRANT SELECT, INSERT, UPDATE ON
    noise_aggregates, air_aggregates, traffic_aggregates, occupancy_aggregates,
    consumer_offsets, sensors
    TO citysense_writer;
GRANT SELECT ON schema_migrations TO citysense_writer, citysense_reader;
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO citysense_writer',
                   current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO citysense_reader', current_database());
END
$$;

-- The reader sees data and the registry, never the sink's offsets.
GRANT SELECT ON
    noise_measurements, air_measurements, traffic_measurements, traffic_counts,
    occupancy_measurements, occupancy_regions,
    noise_aggregates, air_aggregates, traffic_aggregates, occupancy_aggregates,
    noise_latest, air_latest, traffic_latest, occupancy_latest,
    sensors
    TO citysense_reader;
