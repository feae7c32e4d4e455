-- Typed copies of the published indicators (docs/publication.md#typed-indicators).
--
-- The dataset views of 0003 read each indicator out of the window result's `jsonb` column at
-- every query, row by row: a year's mean per sensor over `bruit-horaire` spent most of its time
-- there. Each indicator a built-in dataset publishes as a number is now also a stored generated
-- column of its aggregates table, computed by PostgreSQL from `indicators` whenever a row is
-- written (PostgreSQL 15 manual, 5.3 "Generated Columns"), and the views read that column.
--
-- The list below is the one definition: the DO block turns each entry into its column, with the
-- very expression the 0003 view used for the field, so a view gives the same value (same
-- double, same rounding) from the column as it gave from the jsonb:
--   double  -> (indicators ->> 'x')::double precision, column `x`;
--   integer -> round((indicators ->> 'x')::numeric)::integer (halves away from zero, on the
--              exact decimal of the jsonb, not on a double), column `x_rounded`; null when
--              the value is beyond the integer range, where the view's cast raised an error
--              (a generated column that raises would make the sink's write of the row fail).
-- A test replays 0003's views against these and fails on any difference.
--
-- Adding the columns rewrites each aggregates table once (its chunks, under an exclusive lock):
-- on an existing database this migration takes as long as copying the window results. The
-- aggregates hypertables are never compressed (sinks/timescale/_policies.py): TimescaleDB
-- refuses to add a column with a default or constraint to a hypertable with compression enabled
-- (timescale/timescaledb issue 3429), and a generated column is likely refused likewise. The
-- traffic counts (arrays of entries) stay in jsonb.

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT typed.tbl,
               string_agg(
                   format(
                       'ADD COLUMN %I %s GENERATED ALWAYS AS (%s) STORED',
                       typed.indicator || CASE typed.kind WHEN 'integer' THEN '_rounded' ELSE '' END,
                       CASE typed.kind WHEN 'integer' THEN 'integer' ELSE 'double precision' END,
                       CASE typed.kind
                           WHEN 'integer' THEN format(
                               'CASE WHEN abs((indicators ->> %1$L)::numeric) < 2147483647.5 '
                               'THEN round((indicators ->> %1$L)::numeric)::integer END',
                               typed.indicator)
                           ELSE format('(indicators ->> %L)::double precision', typed.indicator)
                       END
                   ),
                   ', ' ORDER BY typed.position
               ) AS additions
        FROM (VALUES
            -- bruit-horaire
            (1, 'noise_aggregates', 'laeq_db', 'double'),
            (2, 'noise_aggregates', 'lamax_db', 'double'),
            (3, 'noise_aggregates', 'l10_db', 'double'),
            (4, 'noise_aggregates', 'l50_db', 'double'),
            (5, 'noise_aggregates', 'l90_db', 'double'),
            (6, 'noise_aggregates', 'coverage', 'double'),
            -- bruit-lden-journalier
            (7, 'noise_aggregates', 'lden_db', 'double'),
            (8, 'noise_aggregates', 'ld_db', 'double'),
            (9, 'noise_aggregates', 'le_db', 'double'),
            (10, 'noise_aggregates', 'ln_db', 'double'),
            -- qualite-air-horaire
            (11, 'air_aggregates', 'pm2_5_ugm3_mean', 'double'),
            (12, 'air_aggregates', 'pm10_ugm3_mean', 'double'),
            (13, 'air_aggregates', 'no2_ugm3_mean', 'double'),
            (14, 'air_aggregates', 'o3_ugm3_mean', 'double'),
            (15, 'air_aggregates', 'so2_ugm3_mean', 'double'),
            (16, 'air_aggregates', 'eaqi_band', 'integer'),
            -- affluence-piscine-15min and affluence-piscine-temps-reel
            (17, 'occupancy_aggregates', 'people_mean', 'double'),
            (18, 'occupancy_aggregates', 'people_mean', 'integer'),
            (19, 'occupancy_aggregates', 'people_max', 'integer'),
            (20, 'occupancy_aggregates', 'occupancy_pct', 'double'),
            (21, 'occupancy_aggregates', 'affluence', 'integer')
        ) AS typed(position, tbl, indicator, kind)
        GROUP BY typed.tbl
    LOOP
        -- One ALTER per table: one rewrite of its rows for all its columns.
        EXECUTE format('ALTER TABLE %I %s', t.tbl, t.additions);
    END LOOP;
END
$$;

-- The views of 0003 with each indicator read from its column; names, types and order of the
-- columns are unchanged (CREATE OR REPLACE VIEW keeps the grants).
CREATE OR REPLACE VIEW opendata.noise_hourly AS
SELECT a.key AS sensor_id,
       se.site AS site_id,
       st.name AS site_name,
       a.bucket AS start_time,
       a.bucket_end AS end_time,
       a.laeq_db,
       a.lamax_db,
       a.l10_db,
       a.l50_db,
       a.l90_db,
       a.coverage,
       a.sample_count,
       geo_point_2d(se.lat, se.lon) AS geo_point_2d,
       a.change_txid AS _change_txid,
       change_key(a.key, a.window_seconds, a.bucket) COLLATE "C" AS _change_key
FROM noise_aggregates AS a
LEFT JOIN sensors AS se ON se.id = a.key
LEFT JOIN sites AS st ON st.id = se.site
WHERE a.window_seconds = 3600 AND a.final AND NOT starts_with(a.key, 'site:');

CREATE OR REPLACE VIEW opendata.noise_daily AS
SELECT a.key AS sensor_id,
       se.site AS site_id,
       st.name AS site_name,
       ((a.bucket + (a.bucket_end - a.bucket) / 2) AT TIME ZONE 'Europe/Paris')::date AS date,
       a.lden_db,
       a.ld_db,
       a.le_db,
       a.ln_db,
       geo_point_2d(se.lat, se.lon) AS geo_point_2d
FROM noise_aggregates AS a
LEFT JOIN sensors AS se ON se.id = a.key
LEFT JOIN sites AS st ON st.id = se.site
WHERE a.window_seconds = 86400 AND a.final AND NOT starts_with(a.key, 'site:');

CREATE OR REPLACE VIEW opendata.air_hourly AS
SELECT a.key AS sensor_id,
       se.site AS site_id,
       st.name AS site_name,
       a.bucket AS start_time,
       a.bucket_end AS end_time,
       a.pm2_5_ugm3_mean AS pm2_5_ugm3,
       a.pm10_ugm3_mean AS pm10_ugm3,
       a.no2_ugm3_mean AS no2_ugm3,
       a.o3_ugm3_mean AS o3_ugm3,
       a.so2_ugm3_mean AS so2_ugm3,
       a.eaqi_band_rounded AS eaqi_band,
       (ARRAY['Good', 'Fair', 'Moderate', 'Poor', 'Very poor', 'Extremely poor'])
           [a.eaqi_band_rounded] AS eaqi_label,
       geo_point_2d(se.lat, se.lon) AS geo_point_2d,
       a.change_txid AS _change_txid,
       change_key(a.key, a.window_seconds, a.bucket) COLLATE "C" AS _change_key
FROM air_aggregates AS a
LEFT JOIN sensors AS se ON se.id = a.key
LEFT JOIN sites AS st ON st.id = se.site
WHERE a.window_seconds = 3600 AND a.final AND NOT starts_with(a.key, 'site:');

CREATE OR REPLACE VIEW opendata.pool_15min AS
SELECT substr(a.key, 6) AS site_id,
       st.name AS site_name,
       a.bucket AS start_time,
       a.bucket_end AS end_time,
       a.people_mean,
       a.people_max_rounded AS people_max,
       st.capacity,
       a.occupancy_pct,
       a.affluence_rounded AS affluence,
       geo_point_2d(st.lat, st.lon) AS geo_point_2d,
       a.change_txid AS _change_txid,
       change_key(a.key, a.window_seconds, a.bucket) COLLATE "C" AS _change_key
FROM occupancy_aggregates AS a
LEFT JOIN sites AS st ON st.id = substr(a.key, 6)
WHERE a.window_seconds = 900 AND a.final AND starts_with(a.key, 'site:');

CREATE OR REPLACE VIEW opendata.pool_now AS
SELECT st.id AS site_id,
       st.name AS site_name,
       a.bucket_end AS observed_at,
       a.people_mean_rounded AS people,
       st.capacity,
       a.occupancy_pct,
       a.affluence_rounded AS affluence,
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
