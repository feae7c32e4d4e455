-- The open-data publication's storage side (docs/architecture.md#publication): the registry's sites, change
-- positions on the window results for the live feed, one read-only view per published dataset
-- in schema `opendata`, and the API role that can read those views and nothing else.
--
-- Datasets are built from window results (the *_aggregates tables) and the registry only, never
-- from raw measurements. Each view's column names are exactly its dataset's field names
-- (sinks/opendata/_datasets.py); columns starting with `_` are hidden from the API. Field types
-- are the portal's: text, int (integer/bigint), double (double precision), date, datetime
-- (timestamptz) and geo_point_2d (jsonb {"lon": x, "lat": y}).

-- The registry's sites (citysense/registry.py Site), mirrored at every sink start and
-- `db migrate` like `sensors`: views name sites and take pool capacities from here.
CREATE TABLE sites (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    lat           double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon           double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    capacity      integer CHECK (capacity > 0),
    opening_hours text[] NOT NULL DEFAULT '{}',
    updated_at    timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON sites TO citysense_writer;
GRANT SELECT ON sites TO citysense_reader;

-- Live feed positions. Every insert or update of a window result records the writing
-- transaction's id. A reader that takes only rows below pg_snapshot_xmin(pg_current_snapshot())
-- (every transaction below it has ended) in (change_txid, change key) order never sees a row
-- appear behind its position later. Rows written before this migration have no position and
-- are never sent by the live feed (they are still in the datasets).
CREATE FUNCTION set_change_txid() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_txid := pg_current_xact_id();
    RETURN NEW;
END
$$;

ALTER TABLE noise_aggregates ADD COLUMN change_txid xid8;
ALTER TABLE air_aggregates ADD COLUMN change_txid xid8;
ALTER TABLE traffic_aggregates ADD COLUMN change_txid xid8;
ALTER TABLE occupancy_aggregates ADD COLUMN change_txid xid8;
CREATE INDEX noise_aggregates_change_txid_idx ON noise_aggregates (change_txid);
CREATE INDEX air_aggregates_change_txid_idx ON air_aggregates (change_txid);
CREATE INDEX traffic_aggregates_change_txid_idx ON traffic_aggregates (change_txid);
CREATE INDEX occupancy_aggregates_change_txid_idx ON occupancy_aggregates (change_txid);
CREATE TRIGGER noise_aggregates_change_txid BEFORE INSERT OR UPDATE ON noise_aggregates
    FOR EACH ROW EXECUTE FUNCTION set_change_txid();
CREATE TRIGGER air_aggregates_change_txid BEFORE INSERT OR UPDATE ON air_aggregates
    FOR EACH ROW EXECUTE FUNCTION set_change_txid();
CREATE TRIGGER traffic_aggregates_change_txid BEFORE INSERT OR UPDATE ON traffic_aggregates
    FOR EACH ROW EXECUTE FUNCTION set_change_txid();
CREATE TRIGGER occupancy_aggregates_change_txid BEFORE INSERT OR UPDATE ON occupancy_aggregates
    FOR EACH ROW EXECUTE FUNCTION set_change_txid();

-- A position as the portal writes it: {"lon": x, "lat": y}; NULL when either is unknown.
CREATE FUNCTION geo_point_2d(lat double precision, lon double precision) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN lat IS NULL OR lon IS NULL THEN NULL
                ELSE jsonb_build_object('lon', lon, 'lat', lat) END
$$;

-- A window result's change key, unique within a view built one row per result:
-- key|window_seconds|bucket as µs since the epoch. The views give it the "C" collation (byte
-- order, the same on every server), so "(txid, key) > (last txid, last key)" resumes exactly
-- where a reader was.
CREATE FUNCTION change_key(key text, window_seconds bigint, bucket timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT key || '|' || window_seconds::text || '|'
           || (extract(epoch FROM bucket) * 1000000)::bigint::text
$$;

CREATE SCHEMA opendata;

-- 1. bruit-horaire: hourly noise per sensor (closed per-sensor 1-hour windows).
CREATE VIEW opendata.noise_hourly AS
SELECT a.key AS sensor_id,
       se.site AS site_id,
       st.name AS site_name,
       a.bucket AS start_time,
       a.bucket_end AS end_time,
       (a.indicators ->> 'laeq_db')::double precision AS laeq_db,
       (a.indicators ->> 'lamax_db')::double precision AS lamax_db,
       (a.indicators ->> 'l10_db')::double precision AS l10_db,
       (a.indicators ->> 'l50_db')::double precision AS l50_db,
       (a.indicators ->> 'l90_db')::double precision AS l90_db,
       (a.indicators ->> 'coverage')::double precision AS coverage,
       a.sample_count,
       geo_point_2d(se.lat, se.lon) AS geo_point_2d,
       a.change_txid AS _change_txid,
       change_key(a.key, a.window_seconds, a.bucket) COLLATE "C" AS _change_key
FROM noise_aggregates AS a
LEFT JOIN sensors AS se ON se.id = a.key
LEFT JOIN sites AS st ON st.id = se.site
WHERE a.window_seconds = 3600 AND a.final AND NOT starts_with(a.key, 'site:');

-- 2. bruit-lden-journalier: Lden per sensor and local day. The rollup stage writes a sensor's
-- day as window_seconds 86400 with the real bounds of the Europe/Paris day (23 or 25 hours on
-- DST days); the date is the Paris date of the day's midpoint, right whatever the bounds.
CREATE VIEW opendata.noise_daily AS
SELECT a.key AS sensor_id,
       se.site AS site_id,
       st.name AS site_name,
       ((a.bucket + (a.bucket_end - a.bucket) / 2) AT TIME ZONE 'Europe/Paris')::date AS date,
       (a.indicators ->> 'lden_db')::double precision AS lden_db,
       (a.indicators ->> 'ld_db')::double precision AS ld_db,
       (a.indicators ->> 'le_db')::double precision AS le_db,
       (a.indicators ->> 'ln_db')::double precision AS ln_db,
       geo_point_2d(se.lat, se.lon) AS geo_point_2d
FROM noise_aggregates AS a
LEFT JOIN sensors AS se ON se.id = a.key
LEFT JOIN sites AS st ON st.id = se.site
WHERE a.window_seconds = 86400 AND a.final AND NOT starts_with(a.key, 'site:');

-- 3. qualite-air-horaire: hourly means per sensor and the European Air Quality Index band
-- (EEA 2024 bands, computed by the aggregator; labels are the EEA's).
CREATE VIEW opendata.air_hourly AS
SELECT a.key AS sensor_id,
       se.site AS site_id,
       st.name AS site_name,
       a.bucket AS start_time,
       a.bucket_end AS end_time,
       (a.indicators ->> 'pm2_5_ugm3_mean')::double precision AS pm2_5_ugm3,
       (a.indicators ->> 'pm10_ugm3_mean')::double precision AS pm10_ugm3,
       (a.indicators ->> 'no2_ugm3_mean')::double precision AS no2_ugm3,
       (a.indicators ->> 'o3_ugm3_mean')::double precision AS o3_ugm3,
       (a.indicators ->> 'so2_ugm3_mean')::double precision AS so2_ugm3,
       band.eaqi_band,
       (ARRAY['Good', 'Fair', 'Moderate', 'Poor', 'Very poor', 'Extremely poor'])[band.eaqi_band]
           AS eaqi_label,
       geo_point_2d(se.lat, se.lon) AS geo_point_2d,
       a.change_txid AS _change_txid,
       change_key(a.key, a.window_seconds, a.bucket) COLLATE "C" AS _change_key
FROM air_aggregates AS a
CROSS JOIN LATERAL (
    SELECT round((a.indicators ->> 'eaqi_band')::numeric)::integer AS eaqi_band
) AS band
LEFT JOIN sensors AS se ON se.id = a.key
LEFT JOIN sites AS st ON st.id = se.site
WHERE a.window_seconds = 3600 AND a.final AND NOT starts_with(a.key, 'site:');

-- 5. comptage-horaire-par-mode: a site's crossings per traffic class and hour, both directions
-- and every line of the site's sensors (the rollup writes them as line 0). A class the site's
-- sensors did not report in an hour has no row: absent is "no measurement", never 0.
CREATE VIEW opendata.counts_hourly AS
SELECT substr(a.key, 6) AS site_id,
       st.name AS site_name,
       a.bucket AS start_time,
       a.bucket_end AS end_time,
       c.mode,
       c.count,
       geo_point_2d(st.lat, st.lon) AS geo_point_2d,
       a.change_txid AS _change_txid,
       (change_key(a.key, a.window_seconds, a.bucket) || '|' || c.mode) COLLATE "C"
           AS _change_key
FROM traffic_aggregates AS a
CROSS JOIN LATERAL (
    SELECT e ->> 'traffic_class' AS mode, sum((e ->> 'count')::bigint)::bigint AS count
    FROM jsonb_array_elements(coalesce(a.counts, '[]')) AS e
    WHERE e ->> 'count' IS NOT NULL
    GROUP BY e ->> 'traffic_class'
) AS c
LEFT JOIN sites AS st ON st.id = substr(a.key, 6)
WHERE a.window_seconds = 3600 AND a.final AND starts_with(a.key, 'site:');

-- 6. affluence-piscine-15min: a pool's people per 15 minutes (site rollups: sums over the
-- site's cameras), against the site's capacity from the registry.
CREATE VIEW opendata.pool_15min AS
SELECT substr(a.key, 6) AS site_id,
       st.name AS site_name,
       a.bucket AS start_time,
       a.bucket_end AS end_time,
       (a.indicators ->> 'people_mean')::double precision AS people_mean,
       round((a.indicators ->> 'people_max')::numeric)::integer AS people_max,
       st.capacity,
       (a.indicators ->> 'occupancy_pct')::double precision AS occupancy_pct,
       round((a.indicators ->> 'affluence')::numeric)::integer AS affluence,
       geo_point_2d(st.lat, st.lon) AS geo_point_2d,
       a.change_txid AS _change_txid,
       change_key(a.key, a.window_seconds, a.bucket) COLLATE "C" AS _change_key
FROM occupancy_aggregates AS a
LEFT JOIN sites AS st ON st.id = substr(a.key, 6)
WHERE a.window_seconds = 900 AND a.final AND starts_with(a.key, 'site:');

-- 7. affluence-piscine-temps-reel: each pool's newest 1-minute window (final or not: the
-- freshest state), people rounded to the nearest whole person (halves away from zero). One
-- index probe per site (the primary key read backwards), however long the history.
CREATE VIEW opendata.pool_now AS
SELECT st.id AS site_id,
       st.name AS site_name,
       a.bucket_end AS observed_at,
       round((a.indicators ->> 'people_mean')::numeric)::integer AS people,
       st.capacity,
       (a.indicators ->> 'occupancy_pct')::double precision AS occupancy_pct,
       round((a.indicators ->> 'affluence')::numeric)::integer AS affluence,
       geo_point_2d(st.lat, st.lon) AS geo_point_2d,
       a.change_txid AS _change_txid,
       change_key(a.key, a.window_seconds, a.bucket) COLLATE "C" AS _change_key
FROM sites AS st
CROSS JOIN LATERAL (
    SELECT o.*
    FROM occupancy_aggregates AS o
    WHERE o.key = 'site:' || st.id AND o.window_seconds = 60
    ORDER BY o.bucket DESC
    LIMIT 1
) AS a;

-- 4. "Comptage des mobilités", the French national schema (schema.data.gouv.fr,
-- etalab/schema-comptage-mobilites-{site,channel,measure} v0.2.0): sites, channels, measures.
--
-- A counter is a registered traffic sensor; its site is its registry site (the sensor itself,
-- at its own position, when it has none). A channel is one (sensor, line, direction, class) the
-- sensor's closed hourly results have counted, id `<sensor>-<line>-<direction>-<class>`.
-- Unregistered devices have no position and are left out.
CREATE VIEW mobility_counters AS
SELECT se.id AS sensor_id,
       se.codec,
       coalesce(se.site, se.id) AS site_id,
       coalesce(st.name, se.site, se.id) AS site_name,
       coalesce(st.lat, se.lat) AS lat,
       coalesce(st.lon, se.lon) AS lon
FROM sensors AS se
LEFT JOIN sites AS st ON st.id = se.site
WHERE se.kind = 'traffic';

-- Measures have every hourly slot of a channel from its first to its last counted hour, the
-- empty ones included, so they are kept in a table as the hours arrive rather than computed
-- from the whole history at every query (a year of a few cameras is ~200,000 slots): queries
-- by time use the slots' own index, and the live feed reads the slots changed since its
-- position. A slot's change_txid is the transaction that last changed its count (an empty slot:
-- the one that created it, by counting a later or earlier hour of its channel).
CREATE TABLE mobility_channel_spans (
    channel_id    text PRIMARY KEY,
    sensor_id     text        NOT NULL,
    line          integer     NOT NULL,
    direction     text        NOT NULL,
    traffic_class text        NOT NULL,
    -- Starts of the channel's first and last counted hours.
    first_hour    timestamptz NOT NULL,
    last_hour     timestamptz NOT NULL
);

CREATE TABLE mobility_measure_slots (
    channel_id  text        NOT NULL REFERENCES mobility_channel_spans,
    sensor_id   text        NOT NULL,
    start_time  timestamptz NOT NULL,
    -- NULL: no measurement in this hour; 0: nothing passed.
    count       bigint CHECK (count >= 0),
    change_txid xid8        NOT NULL,
    PRIMARY KEY (channel_id, start_time)
);
CREATE INDEX mobility_measure_slots_start_idx ON mobility_measure_slots (start_time DESC);
CREATE INDEX mobility_measure_slots_change_txid_idx ON mobility_measure_slots (change_txid);

-- Record one closed per-sensor hourly traffic result: its key, its hour and its counts
-- (`old_counts`: the counts it replaces, on an update). For each (line, direction, class) with
-- a count: the channel's span grows to this hour, the empty slots between it and the span are
-- created, and the hour's slot takes the count. A channel the replaced result counted and this
-- one does not gets an empty slot. Any order of arrival gives the same slots.
CREATE FUNCTION mobility_record_hour(
    sensor text, hour_start timestamptz, counts jsonb, old_counts jsonb
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    entry   record;
    span    mobility_channel_spans%ROWTYPE;
    txid    xid8 := pg_current_xact_id();
    counted text[] := '{}';
BEGIN
    FOR entry IN
        SELECT sensor || '-' || (e ->> 'line') || '-' || (e ->> 'direction') || '-'
                   || (e ->> 'traffic_class') AS channel_id,
               (e ->> 'line')::integer AS line,
               e ->> 'direction' AS direction,
               e ->> 'traffic_class' AS traffic_class,
               sum((e ->> 'count')::bigint) AS count
        FROM jsonb_array_elements(coalesce(counts, '[]')) AS e
        WHERE e ->> 'count' IS NOT NULL
        GROUP BY 1, 2, 3, 4
    LOOP
        counted := counted || entry.channel_id;
        SELECT * INTO span FROM mobility_channel_spans
        WHERE channel_id = entry.channel_id FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO mobility_channel_spans
            VALUES (entry.channel_id, sensor, entry.line, entry.direction, entry.traffic_class,
                    hour_start, hour_start);
        ELSE
            INSERT INTO mobility_measure_slots (channel_id, sensor_id, start_time, change_txid)
            SELECT entry.channel_id, sensor, slot, txid
            FROM generate_series(span.last_hour + INTERVAL '1 hour',
                                 hour_start - INTERVAL '1 hour', INTERVAL '1 hour') AS slot
            UNION ALL
            SELECT entry.channel_id, sensor, slot, txid
            FROM generate_series(hour_start + INTERVAL '1 hour',
                                 span.first_hour - INTERVAL '1 hour', INTERVAL '1 hour') AS slot
            ON CONFLICT DO NOTHING;
            UPDATE mobility_channel_spans
            SET first_hour = least(first_hour, hour_start),
                last_hour = greatest(last_hour, hour_start)
            WHERE channel_id = entry.channel_id
              AND (hour_start < first_hour OR hour_start > last_hour);
        END IF;
        INSERT INTO mobility_measure_slots AS s (channel_id, sensor_id, start_time, count,
                                                 change_txid)
        VALUES (entry.channel_id, sensor, hour_start, entry.count, txid)
        ON CONFLICT (channel_id, start_time) DO UPDATE
            SET count = EXCLUDED.count, change_txid = EXCLUDED.change_txid
            WHERE s.count IS DISTINCT FROM EXCLUDED.count;
    END LOOP;
    UPDATE mobility_measure_slots
    SET count = NULL, change_txid = txid
    WHERE start_time = hour_start
      AND count IS NOT NULL
      AND channel_id IN (
          SELECT sensor || '-' || (e ->> 'line') || '-' || (e ->> 'direction') || '-'
                     || (e ->> 'traffic_class')
          FROM jsonb_array_elements(coalesce(old_counts, '[]')) AS e
      )
      AND NOT channel_id = ANY (counted);
END
$$;
REVOKE ALL ON FUNCTION mobility_record_hour(text, timestamptz, jsonb, jsonb) FROM PUBLIC;

-- The sink writes as citysense_writer, which has no right on the slot tables: the trigger runs
-- with its owner's.
CREATE FUNCTION mobility_record_hour_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM mobility_record_hour(
        NEW.key, NEW.bucket, NEW.counts, CASE WHEN TG_OP = 'UPDATE' THEN OLD.counts END
    );
    RETURN NULL;
END
$$;
CREATE TRIGGER traffic_aggregates_mobility AFTER INSERT OR UPDATE ON traffic_aggregates
    FOR EACH ROW
    WHEN (NEW.window_seconds = 3600 AND NEW.final AND NOT starts_with(NEW.key, 'site:'))
    EXECUTE FUNCTION mobility_record_hour_trigger();

-- The results already stored, in one pass (the same slots as the trigger would make, ~1 ms a
-- result faster than calling it for each).
WITH hours AS (
    SELECT a.key || '-' || (e ->> 'line') || '-' || (e ->> 'direction') || '-'
               || (e ->> 'traffic_class') AS channel_id,
           a.key AS sensor_id,
           (e ->> 'line')::integer AS line,
           e ->> 'direction' AS direction,
           e ->> 'traffic_class' AS traffic_class,
           a.bucket,
           sum((e ->> 'count')::bigint) AS count
    FROM traffic_aggregates AS a
    CROSS JOIN LATERAL jsonb_array_elements(coalesce(a.counts, '[]')) AS e
    WHERE a.window_seconds = 3600 AND a.final AND NOT starts_with(a.key, 'site:')
      AND e ->> 'count' IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6
), spans AS (
    INSERT INTO mobility_channel_spans
    SELECT channel_id, sensor_id, line, direction, traffic_class, min(bucket), max(bucket)
    FROM hours
    GROUP BY 1, 2, 3, 4, 5
    RETURNING *
)
INSERT INTO mobility_measure_slots (channel_id, sensor_id, start_time, count, change_txid)
SELECT s.channel_id, s.sensor_id, slot, h.count, pg_current_xact_id()
FROM spans AS s
CROSS JOIN LATERAL generate_series(s.first_hour, s.last_hour, INTERVAL '1 hour') AS slot
LEFT JOIN hours AS h ON h.channel_id = s.channel_id AND h.bucket = slot;

-- Sites (schema-comptage-mobilites-site): position in WGS84 decimal degrees.
CREATE VIEW opendata.mobility_sites AS
SELECT c.site_id,
       NULL::text AS parent_site_id,
       min(c.site_name) AS site_name,
       NULL::text AS fr_insee_code,
       avg(c.lon) AS xlong,
       avg(c.lat) AS ylat,
       NULL::text AS external_ids,
       NULL::text AS infrastructure_type
FROM mobility_counters AS c
GROUP BY c.site_id;

-- Channels (schema-comptage-mobilites-channel). Traffic classes map onto the schema's
-- mobility types (docs/architecture.md#canonical-measurement); `direction` is a compass heading the registry does not
-- know, so it stays empty and the sensor's in/out goes to provider_direction_code/_name, as the
-- schema's description of those fields says. Counter types follow the codecs' devices: the
-- Milesight VS133/VS135 is a time-of-flight camera, the Parametric PCR2 a radar.
CREATE VIEW opendata.mobility_channels AS
SELECT h.channel_id,
       NULL::text AS channel_provider_id,
       NULL::text AS site_provider_id,
       c.site_id,
       CASE h.traffic_class
           WHEN 'pedestrian' THEN 'PEDESTRIAN'
           WHEN 'bicycle' THEN 'BIKE'
           WHEN 'two_wheeler' THEN 'TWO WHEELS MOTORIZED'
           WHEN 'car' THEN 'CAR'
           WHEN 'bus' THEN 'BUS'
           WHEN 'truck' THEN 'TRUCK'
           ELSE 'UNDEFINED'
       END AS mobility_type,
       NULL::text AS comment,
       'REMOTE TRANSMISSION' AS counter_transmission_type,
       'API' AS publication_transmission_type,
       CASE
           WHEN c.codec IN ('milesight-vs133', 'milesight-vs135') THEN 'VIDEO SENSOR'
           WHEN c.codec = 'parametric-pcr2' THEN 'RADAR SENSOR'
           ELSE 'OTHER'
       END AS counter_type,
       NULL::text AS direction,
       upper(h.direction) AS provider_direction_code,
       'Ligne ' || h.line || ', sens ' || CASE h.direction WHEN 'in' THEN 'entrant'
                                                           ELSE 'sortant' END
           || ' du capteur ' || h.sensor_id AS provider_direction_name,
       NULL::text AS data_provider_name,
       'PERMANENT' AS temporality,
       h.first_hour AS started_at,
       NULL::timestamptz AS ended_at,
       h.last_hour + INTERVAL '1 hour' AS last_updated_at,
       3600::double precision AS time_step,
       NULL::text AS provider_portal_url
FROM mobility_channel_spans AS h
JOIN mobility_counters AS c ON c.sensor_id = h.sensor_id;

-- Measures (schema-comptage-mobilites-measure): start inclusive, end exclusive; an empty count
-- is no measurement, 0 is nothing passed.
CREATE VIEW opendata.mobility_measures AS
SELECT s.channel_id,
       s.sensor_id AS counter_id,
       s.start_time AS start_datetime,
       s.start_time + INTERVAL '1 hour' AS end_datetime,
       s.count::double precision AS count,
       s.change_txid AS _change_txid,
       (s.channel_id || '|' || (extract(epoch FROM s.start_time) * 1000000)::bigint::text)
           COLLATE "C" AS _change_key
FROM mobility_measure_slots AS s
JOIN sensors AS se ON se.id = s.sensor_id AND se.kind = 'traffic';

-- The open-data API's role: it reads the datasets' views and nothing else. Views run with
-- their owner's rights, so a query through them reads the tables below, while the role itself
-- has no right on any table (not even the registry): nothing the API sends can read another
-- table. `citysense db migrate` gives it a login when [sink] api_password is set.
DO $$
BEGIN
    CREATE ROLE citysense_api NOLOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$;
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO citysense_api', current_database());
END
$$;
GRANT USAGE ON SCHEMA opendata TO citysense_api, citysense_reader;
GRANT SELECT ON
    opendata.noise_hourly, opendata.noise_daily, opendata.air_hourly, opendata.counts_hourly,
    opendata.pool_15min, opendata.pool_now, opendata.mobility_sites, opendata.mobility_channels,
    opendata.mobility_measures
    TO citysense_api, citysense_reader;
GRANT SELECT ON mobility_counters, mobility_channel_spans, mobility_measure_slots
    TO citysense_reader;
