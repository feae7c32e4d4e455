-- citysense storage schema (DESIGN.md section 7).
--
-- Natural keys are unique, so a replayed Kafka record can never add a row (DESIGN.md 5.5).
-- Chunk intervals and indexes follow the queries the open-data API and the dashboards run:
--
--   * "current value of every sensor of a kind"        -> <kind>_latest views, served per chunk
--     by the (sensor_id, time) key scanned backwards, over the last day's chunk(s) only;
--   * "one sensor over a time range" (API, Grafana)    -> primary key (sensor_id, time);
--   * "all sensors over the last N hours" (dashboards) -> TimescaleDB's default (time DESC) index;
--   * aggregates "one key, one window size, a range"   -> primary key (key, window_seconds, bucket);
--   * datasets "all keys for one window size, a range" -> (window_seconds, bucket DESC).
--
-- Raw measurement chunks cover one day: at a whole city's rate (~20,000 records/s) a day of
-- noise rows and its indexes stays well inside a quarter of a small server's memory, which is
-- TimescaleDB's sizing advice, and retention drops whole days. Aggregates are small (one row per
-- key and window), so their chunks cover 30 days.

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- The sensor registry (citysense/registry.py), mirrored for joins in SQL.
CREATE TABLE sensors (
    id           text PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('noise', 'air', 'traffic', 'occupancy')),
    codec        text NOT NULL,
    site         text,
    lat          double precision CHECK (lat BETWEEN -90 AND 90),
    lon          double precision CHECK (lon BETWEEN -180 AND 180),
    capacity     integer CHECK (capacity > 0),
    dev_eui      text,
    line_classes jsonb NOT NULL DEFAULT '{}',
    regions      jsonb NOT NULL DEFAULT '{}',
    calibration  jsonb NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sensors_site_idx ON sensors (site);

-- Next Kafka offset to read per (consumer group, topic, partition), written in the same
-- transaction as the rows that consumed the offsets before it.
CREATE TABLE consumer_offsets (
    group_id    text    NOT NULL,
    topic       text    NOT NULL,
    "partition" integer NOT NULL CHECK ("partition" >= 0),
    next_offset bigint  NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, "partition")
);

-- Raw measurements, one hypertable per kind. Typed columns mirror the kind's Avro record
-- (schemas/avsc); any other quantity is kept in other_values.
CREATE TABLE noise_measurements (
    time                timestamptz NOT NULL,
    sensor_id           text        NOT NULL,
    received_at         timestamptz NOT NULL,
    codec               text        NOT NULL,
    partial             boolean     NOT NULL DEFAULT false,
    laeq_db             double precision,
    laf_db              double precision,
    las_db              double precision,
    lafmax_db           double precision,
    lafmin_db           double precision,
    lasmax_db           double precision,
    lasmin_db           double precision,
    lamax_db            double precision,
    lamin_db            double precision,
    lceq_db             double precision,
    lcmax_db            double precision,
    lcpeak_db           double precision,
    lzeq_db             double precision,
    lzmax_db            double precision,
    lzpeak_db           double precision,
    lz_31_5hz_db        double precision,
    lz_63hz_db          double precision,
    lz_125hz_db         double precision,
    lz_250hz_db         double precision,
    lz_500hz_db         double precision,
    lz_1000hz_db        double precision,
    lz_2000hz_db        double precision,
    lz_4000hz_db        double precision,
    lz_8000hz_db        double precision,
    battery_pct         double precision,
    battery_v           double precision,
    board_temperature_c double precision,
    other_values        jsonb,
    network             text,
    gateway_id          text,
    rssi                double precision,
    snr                 double precision,
    f_cnt               bigint,
    PRIMARY KEY (sensor_id, time)
);
SELECT create_hypertable('noise_measurements', by_range('time', INTERVAL '1 day'));

CREATE TABLE air_measurements (
    time                timestamptz NOT NULL,
    sensor_id           text        NOT NULL,
    received_at         timestamptz NOT NULL,
    codec               text        NOT NULL,
    partial             boolean     NOT NULL DEFAULT false,
    pm1_ugm3            double precision,
    pm2_5_ugm3          double precision,
    pm4_ugm3            double precision,
    pm10_ugm3           double precision,
    no2_ugm3            double precision,
    o3_ugm3             double precision,
    so2_ugm3            double precision,
    co_mgm3             double precision,
    co2_ppm             double precision,
    tvoc_ppb            double precision,
    hcho_mgm3           double precision,
    temperature_c       double precision,
    humidity_pct        double precision,
    pressure_hpa        double precision,
    battery_pct         double precision,
    battery_v           double precision,
    board_temperature_c double precision,
    other_values        jsonb,
    network             text,
    gateway_id          text,
    rssi                double precision,
    snr                 double precision,
    f_cnt               bigint,
    PRIMARY KEY (sensor_id, time)
);
SELECT create_hypertable('air_measurements', by_range('time', INTERVAL '1 day'));

-- Traffic and occupancy reports: the report itself (device health, metadata) and one row per
-- counted (line, direction, class) or region.
CREATE TABLE traffic_measurements (
    time                timestamptz NOT NULL,
    sensor_id           text        NOT NULL,
    received_at         timestamptz NOT NULL,
    codec               text        NOT NULL,
    partial             boolean     NOT NULL DEFAULT false,
    battery_pct         double precision,
    battery_v           double precision,
    board_temperature_c double precision,
    other_values        jsonb,
    network             text,
    gateway_id          text,
    rssi                double precision,
    snr                 double precision,
    f_cnt               bigint,
    PRIMARY KEY (sensor_id, time)
);
SELECT create_hypertable('traffic_measurements', by_range('time', INTERVAL '1 day'));

CREATE TABLE traffic_counts (
    time          timestamptz NOT NULL,
    sensor_id     text        NOT NULL,
    line          integer     NOT NULL,
    direction     text        NOT NULL CHECK (direction IN ('in', 'out')),
    traffic_class text        NOT NULL,
    count         bigint,
    cumulative    bigint,
    PRIMARY KEY (sensor_id, line, direction, traffic_class, time)
);
SELECT create_hypertable('traffic_counts', by_range('time', INTERVAL '1 day'));
-- "one sensor over a time range, all lines and classes": the key leads with its lines.
CREATE INDEX traffic_counts_sensor_time_idx ON traffic_counts (sensor_id, time DESC);

CREATE TABLE occupancy_measurements (
    time                timestamptz NOT NULL,
    sensor_id           text        NOT NULL,
    received_at         timestamptz NOT NULL,
    codec               text        NOT NULL,
    partial             boolean     NOT NULL DEFAULT false,
    battery_pct         double precision,
    battery_v           double precision,
    board_temperature_c double precision,
    other_values        jsonb,
    network             text,
    gateway_id          text,
    rssi                double precision,
    snr                 double precision,
    f_cnt               bigint,
    PRIMARY KEY (sensor_id, time)
);
SELECT create_hypertable('occupancy_measurements', by_range('time', INTERVAL '1 day'));

CREATE TABLE occupancy_regions (
    time      timestamptz NOT NULL,
    sensor_id text        NOT NULL,
    region    integer     NOT NULL,
    count     integer     NOT NULL,
    PRIMARY KEY (sensor_id, region, time)
);
SELECT create_hypertable('occupancy_regions', by_range('time', INTERVAL '1 day'));
CREATE INDEX occupancy_regions_sensor_time_idx ON occupancy_regions (sensor_id, time DESC);

-- Window results (DESIGN.md section 6), one hypertable per kind. Identity is
-- (key, window_seconds, bucket); a higher revision replaces a lower one, and within a revision a
-- final emission replaces an intermediate one (the sink's upsert enforces both).
CREATE TABLE noise_aggregates (
    bucket         timestamptz NOT NULL,
    bucket_end     timestamptz NOT NULL,
    window_seconds bigint      NOT NULL CHECK (window_seconds > 0),
    key            text        NOT NULL,
    revision       integer     NOT NULL CHECK (revision >= 0),
    final          boolean     NOT NULL,
    sample_count   bigint      NOT NULL,
    indicators     jsonb       NOT NULL DEFAULT '{}',
    counts         jsonb,
    regions        jsonb,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, window_seconds, bucket)
);
CREATE TABLE air_aggregates (LIKE noise_aggregates INCLUDING ALL);
CREATE TABLE traffic_aggregates (LIKE noise_aggregates INCLUDING ALL);
CREATE TABLE occupancy_aggregates (LIKE noise_aggregates INCLUDING ALL);
SELECT create_hypertable(t, by_range('bucket', INTERVAL '30 days'))
FROM unnest(ARRAY['noise_aggregates', 'air_aggregates', 'traffic_aggregates',
                  'occupancy_aggregates']) AS t;
CREATE INDEX noise_aggregates_window_bucket_idx ON noise_aggregates (window_seconds, bucket DESC);
CREATE INDEX air_aggregates_window_bucket_idx ON air_aggregates (window_seconds, bucket DESC);
CREATE INDEX traffic_aggregates_window_bucket_idx
    ON traffic_aggregates (window_seconds, bucket DESC);
CREATE INDEX occupancy_aggregates_window_bucket_idx
    ON occupancy_aggregates (window_seconds, bucket DESC);

-- "Current value" per sensor: the newest row of the last day. A sensor silent for longer has
-- no current value; the bound keeps the scan to the newest chunk or two whatever the history.
CREATE VIEW noise_latest AS
    SELECT DISTINCT ON (sensor_id) *
    FROM noise_measurements
    WHERE time > now() - INTERVAL '1 day'
    ORDER BY sensor_id, time DESC;
CREATE VIEW air_latest AS
    SELECT DISTINCT ON (sensor_id) *
    FROM air_measurements
    WHERE time > now() - INTERVAL '1 day'
    ORDER BY sensor_id, time DESC;
CREATE VIEW traffic_latest AS
    SELECT DISTINCT ON (sensor_id, line, direction, traffic_class) *
    FROM traffic_counts
    WHERE time > now() - INTERVAL '1 day'
    ORDER BY sensor_id, line, direction, traffic_class, time DESC;
CREATE VIEW occupancy_latest AS
    SELECT DISTINCT ON (sensor_id, region) *
    FROM occupancy_regions
    WHERE time > now() - INTERVAL '1 day'
    ORDER BY sensor_id, region, time DESC;
