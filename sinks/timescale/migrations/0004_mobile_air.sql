-- Mobile air sensors (docs/streams.md#the-grid-stage): the position of each measurement, the
-- registry's mobile flag, the grid stage's cell results, and the published map dataset.

-- A mobile sensor's fix, WGS84 degrees (AirMeasurement v1's lat, lon, position_accuracy_m, in
-- that order, after the source columns: the sink's COPY follows the Avro fields' order). Null
-- for fixed sensors and records without a fix.
ALTER TABLE air_measurements
    ADD COLUMN lat double precision CHECK (lat BETWEEN -90 AND 90),
    ADD COLUMN lon double precision CHECK (lon BETWEEN -180 AND 180),
    ADD COLUMN position_accuracy_m double precision CHECK (position_accuracy_m >= 0);

-- The registry's flag: a sensor carried by a vehicle (citysense/registry.py Sensor.mobile).
ALTER TABLE sensors ADD COLUMN mobile boolean NOT NULL DEFAULT false;

-- Per cell of the European statistical grid (ETRS89-LAEA, EPSG:3035) and window: the PM2.5
-- samples of mobile sensors that fell in it. Only cells that met the privacy thresholds
-- (aggregate.grid.min_samples, min_vehicles) are ever written: the stage does not emit the
-- others. Identity (cell_id, window_seconds, bucket); a higher revision (the sample count)
-- replaces a lower one, as for the other window results. `geometry` is the cell as a GeoJSON
-- Polygon in WGS84 (RFC 7946), its corners projected back from EPSG:3035; no PostGIS needed.
CREATE TABLE air_cell_aggregates (
    bucket          timestamptz      NOT NULL,
    bucket_end      timestamptz      NOT NULL,
    window_seconds  bigint           NOT NULL CHECK (window_seconds > 0),
    cell_id         text             NOT NULL
        CHECK (cell_id ~ '^CRS3035RES[0-9]+mN[0-9]+E[0-9]+$'),
    revision        integer          NOT NULL CHECK (revision >= 0),
    final           boolean          NOT NULL,
    sample_count    bigint           NOT NULL CHECK (sample_count > 0),
    vehicle_count   integer          NOT NULL CHECK (vehicle_count > 0),
    pm2_5_ugm3_mean double precision NOT NULL,
    pm2_5_ugm3_max  double precision NOT NULL,
    eaqi_band       integer CHECK (eaqi_band BETWEEN 1 AND 6),
    resolution_m    integer          NOT NULL CHECK (resolution_m > 0),
    geometry        jsonb            NOT NULL,
    updated_at      timestamptz      NOT NULL DEFAULT now(),
    change_txid     xid8,
    PRIMARY KEY (cell_id, window_seconds, bucket)
);
SELECT create_hypertable('air_cell_aggregates', by_range('bucket', INTERVAL '30 days'));
CREATE INDEX air_cell_aggregates_window_bucket_idx
    ON air_cell_aggregates (window_seconds, bucket DESC);
CREATE INDEX air_cell_aggregates_change_txid_idx ON air_cell_aggregates (change_txid);
CREATE TRIGGER air_cell_aggregates_change_txid BEFORE INSERT OR UPDATE ON air_cell_aggregates
    FOR EACH ROW EXECUTE FUNCTION set_change_txid();
GRANT SELECT, INSERT, UPDATE ON air_cell_aggregates TO citysense_writer;
GRANT SELECT ON air_cell_aggregates TO citysense_reader;

-- qualite-air-carte-pm25: the map. One row per published cell and window (15 min and 1 h), the
-- cell as the portal's geo_shape (a GeoJSON Feature whose geometry is the polygon, as the
-- OpenDataSoft Explore API v2.1 returns shapes) and its centre as geo_point_2d. The EAQI band
-- is the EEA's hourly PM2.5 band of the window's mean (on 15 minutes: indicative).
CREATE VIEW opendata.air_cells_pm25 AS
SELECT c.cell_id,
       c.resolution_m,
       c.bucket AS start_time,
       c.bucket_end AS end_time,
       (c.window_seconds / 60)::integer AS window_minutes,
       c.pm2_5_ugm3_mean,
       c.pm2_5_ugm3_max,
       c.sample_count,
       c.vehicle_count,
       c.eaqi_band,
       (ARRAY['Good', 'Fair', 'Moderate', 'Poor', 'Very poor', 'Extremely poor'])[c.eaqi_band]
           AS eaqi_label,
       jsonb_build_object('type', 'Feature', 'geometry', c.geometry,
                          'properties', '{}'::jsonb) AS geo_shape,
       geo_point_2d(centre.lat, centre.lon) AS geo_point_2d,
       c.change_txid AS _change_txid,
       change_key(c.cell_id, c.window_seconds, c.bucket) COLLATE "C" AS _change_key
FROM air_cell_aggregates AS c
CROSS JOIN LATERAL (
    -- The mean of the four corners (the ring's first four points): the cell's centre to well
    -- under a metre at 100 m.
    SELECT avg((p ->> 1)::double precision) AS lat, avg((p ->> 0)::double precision) AS lon
    FROM jsonb_array_elements(c.geometry -> 'coordinates' -> 0) WITH ORDINALITY AS r(p, i)
    WHERE r.i <= 4
) AS centre
WHERE c.final;
GRANT SELECT ON opendata.air_cells_pm25 TO citysense_api, citysense_reader;
