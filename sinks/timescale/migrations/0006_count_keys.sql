-- One index fewer per traffic count and occupancy region row (docs/sink.md, "Write cost").
--
-- Both tables had a primary key leading with the sensor then its line, direction and class (or
-- region), and a second index (sensor_id, time DESC) for "one sensor over a time range". Every
-- row the sink writes went into both, plus TimescaleDB's default (time DESC) index: three B-tree
-- insertions a row, on the tables that take more than half of the rows (a traffic record makes
-- a row per line, direction and class, an occupancy record one per region). Index insertion is
-- most of the database's CPU time in the live regime (perf: ~60 % of the sink's backend).
--
-- The key's columns are a set: (sensor_id, time, line, direction, traffic_class) states the
-- same uniqueness as before, ON CONFLICT infers it by its columns whatever their order, and led
-- by (sensor_id, time) the key itself serves "one sensor over a time range" (scanned backwards
-- for the newest first), so the second index goes. The *_latest views (DISTINCT ON the sensor
-- and its line/region) now sort one day of rows instead of reading them in key order.
--
-- Rebuilding a key on a table with history takes a lock and a full index build per chunk: on a
-- large database, apply it in a maintenance window (`citysense db migrate`).
ALTER TABLE traffic_counts DROP CONSTRAINT traffic_counts_pkey;
ALTER TABLE traffic_counts ADD PRIMARY KEY (sensor_id, time, line, direction, traffic_class);
DROP INDEX traffic_counts_sensor_time_idx;

ALTER TABLE occupancy_regions DROP CONSTRAINT occupancy_regions_pkey;
ALTER TABLE occupancy_regions ADD PRIMARY KEY (sensor_id, time, region);
DROP INDEX occupancy_regions_sensor_time_idx;
