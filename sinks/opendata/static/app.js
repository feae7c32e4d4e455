// citysense display page: per site, the latest noise level, air-quality band, counts by mode and
// pool occupancy, first from the records API, then live from the server-sent events feed; and
// the PM2.5 map of mobile sensors (the newest hour's grid cells, coloured by EAQI band).
// Plain browser JavaScript, no framework and no build step. Every value from the API is
// written with textContent (never as markup), and colours come from the constant tables here.
"use strict";

const DATASETS = {
  noise: { id: "bruit-horaire", orderBy: "start_time" },
  air: { id: "qualite-air-horaire", orderBy: "start_time" },
  counts: { id: "comptage-horaire-par-mode", orderBy: "start_time" },
  pool: { id: "affluence-piscine-temps-reel", orderBy: "observed_at" },
};

// European Air Quality Index bands 1 to 6 with the colours of the European Environment
// Agency's index legend (RGB 80,240,230 · 80,204,170 · 240,230,65 · 255,80,80 · 150,0,50 ·
// 125,33,129); French names as used by the French ATMO index, which shares the six bands.
const EAQI = [
  { fr: "Bon", en: "Good", colour: "#50f0e6", ink: "#000000" },
  { fr: "Moyen", en: "Fair", colour: "#50ccaa", ink: "#000000" },
  { fr: "Dégradé", en: "Moderate", colour: "#f0e641", ink: "#000000" },
  { fr: "Mauvais", en: "Poor", colour: "#ff5050", ink: "#000000" },
  { fr: "Très mauvais", en: "Very poor", colour: "#960032", ink: "#ffffff" },
  { fr: "Extrêmement mauvais", en: "Extremely poor", colour: "#7d2181", ink: "#ffffff" },
];

// The PM2.5 map of mobile sensors: its hourly cells (100 m squares of the European grid).
const MAP_DATASET = "qualite-air-carte-pm25";
const MAP_SIZE = { width: 1000, height: 600, margin: 20 };
/** The newest hour on the map: { startMs, start, end, cells: Map(cell id → row) }. */
let mapHour = null;

// Traffic classes of the canonical measurement, in display order.
const MODES = [
  ["pedestrian", "Piétons", "Pedestrians"],
  ["bicycle", "Vélos", "Bicycles"],
  ["two_wheeler", "Deux-roues motorisés", "Motorcycles"],
  ["car", "Voitures", "Cars"],
  ["bus", "Bus", "Buses"],
  ["truck", "Poids lourds", "Lorries"],
  ["unknown", "Autres", "Other"],
];

// Affluence levels 1 to 5 (1 + occupancy thresholds met, 25/50/75/90 % by default).
const AFFLUENCE = [
  ["Faible", "Quiet"],
  ["Modérée", "Moderate"],
  ["Soutenue", "Busy"],
  ["Forte", "Very busy"],
  ["Saturée", "Full"],
];

// A value older than this is shown dimmed (hourly windows: two hours; the pool: 10 minutes).
const STALE_MS = { noise: 2 * 3600e3, air: 2 * 3600e3, counts: 2 * 3600e3, pool: 10 * 60e3 };

const numberFr = new Intl.NumberFormat("fr-FR", { maximumFractionDigits: 1, minimumFractionDigits: 1 });
const integerFr = new Intl.NumberFormat("fr-FR", { maximumFractionDigits: 0 });
const hourFr = new Intl.DateTimeFormat("fr-FR", { hour: "2-digit", minute: "2-digit", timeZone: "Europe/Paris" });
const clockFr = new Intl.DateTimeFormat("fr-FR", {
  weekday: "long", day: "numeric", month: "long", hour: "2-digit", minute: "2-digit", timeZone: "Europe/Paris",
});

/** Site id → { name, card, noise: Map(sensor → row), air: Map(sensor → row), counts, pool }. */
const sites = new Map();

function apiUrl(path, params) {
  const url = new URL(path, document.baseURI);
  for (const [key, value] of Object.entries(params || {})) url.searchParams.set(key, value);
  return url;
}

function time(value) {
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

function setText(root, selector, text) {
  const node = root.querySelector(selector);
  if (node) node.textContent = text;
}

function site(row) {
  const id = row.site_id;
  if (typeof id !== "string" || id === "") return null;
  let entry = sites.get(id);
  if (!entry) {
    const card = document.getElementById("site-template").content.firstElementChild.cloneNode(true);
    card.dataset.site = id;
    entry = { id, name: id, card, noise: new Map(), air: new Map(), counts: null, pool: null };
    sites.set(id, entry);
    const main = document.getElementById("sites");
    const empty = document.getElementById("empty");
    if (empty) empty.remove();
    // Cards in site-name order, so a screen's layout does not depend on arrival order.
    const after = [...main.children].find((other) => (other.querySelector(".site-name").textContent || "") > (row.site_name || id));
    main.insertBefore(card, after || null);
  }
  if (typeof row.site_name === "string" && row.site_name !== "") entry.name = row.site_name;
  setText(entry.card, ".site-name", entry.name);
  return entry;
}

function span(startValue, endValue) {
  const start = time(startValue);
  const end = time(endValue);
  if (start === null) return "";
  return end === null ? hourFr.format(start) : `${hourFr.format(start)}–${hourFr.format(end)}`;
}

function markStale(tile, kind, endValue) {
  const end = time(endValue);
  tile.classList.toggle("stale", end !== null && Date.now() - end > STALE_MS[kind]);
}

/** Rows of `byKey` for the newest `start_time` among them. */
function newestWindow(byKey) {
  let newest = null;
  for (const row of byKey.values()) {
    const start = time(row.start_time);
    if (start !== null && (newest === null || start > newest)) newest = start;
  }
  return [...byKey.values()].filter((row) => time(row.start_time) === newest);
}

/** Keep the newer row for a key (by `field`): a revision of the same window replaces it. */
function keepNewest(map, key, row, field) {
  const previous = map.get(key);
  if (!previous || (time(row[field]) ?? -Infinity) >= (time(previous[field]) ?? -Infinity)) map.set(key, row);
}

function renderNoise(entry) {
  const tile = entry.card.querySelector(".tile.noise");
  const rows = newestWindow(entry.noise).filter((row) => Number.isFinite(row.laeq_db));
  if (rows.length === 0) return;
  // The site's level: the energetic mean of its sensors' LAeq for the same hour,
  // 10·log10(mean(10^(L/10))) (ISO 1996-1 combines sound levels by energy, not arithmetically).
  const energy = rows.reduce((sum, row) => sum + Math.pow(10, row.laeq_db / 10), 0) / rows.length;
  setText(tile, ".value", numberFr.format(10 * Math.log10(energy)));
  setText(tile, ".when", span(rows[0].start_time, rows[0].end_time));
  markStale(tile, "noise", rows[0].end_time);
  tile.hidden = false;
}

function renderAir(entry) {
  const tile = entry.card.querySelector(".tile.air");
  const rows = newestWindow(entry.air).filter((row) => Number.isInteger(row.eaqi_band) && row.eaqi_band >= 1 && row.eaqi_band <= 6);
  if (rows.length === 0) return;
  // The index is driven by the worst pollutant; across a site's sensors, the worst sensor.
  const band = Math.max(...rows.map((row) => row.eaqi_band));
  const style = EAQI[band - 1];
  const bandNode = tile.querySelector(".band");
  bandNode.style.backgroundColor = style.colour;
  bandNode.style.color = style.ink;
  bandNode.dataset.band = String(band);
  setText(tile, ".band-fr", style.fr);
  setText(tile, ".band-en", style.en);
  setText(tile, ".band-index", `Indice ${band}/6`);
  setText(tile, ".when", span(rows[0].start_time, rows[0].end_time));
  markStale(tile, "air", rows[0].end_time);
  tile.hidden = false;
}

function renderCounts(entry) {
  const tile = entry.card.querySelector(".tile.counts");
  const hour = entry.counts;
  if (!hour) return;
  const list = tile.querySelector(".modes");
  const template = document.getElementById("mode-template");
  const known = MODES.map(([mode]) => mode);
  const modes = [...hour.modes.keys()].sort((a, b) => {
    const ia = known.indexOf(a) === -1 ? known.length : known.indexOf(a);
    const ib = known.indexOf(b) === -1 ? known.length : known.indexOf(b);
    return ia - ib || (a < b ? -1 : a > b ? 1 : 0);
  });
  list.replaceChildren(
    ...modes.map((mode) => {
      const item = template.content.firstElementChild.cloneNode(true);
      const names = MODES.find(([name]) => name === mode);
      item.dataset.mode = mode;
      setText(item, ".mode-fr", names ? names[1] : mode);
      setText(item, ".mode-en", names ? names[2] : "");
      const count = hour.modes.get(mode);
      setText(item, ".mode-count", Number.isFinite(count) ? integerFr.format(count) : "–");
      return item;
    }),
  );
  setText(tile, ".when", `Dernière heure · ${span(hour.start, hour.end)}`);
  markStale(tile, "counts", hour.end);
  tile.hidden = false;
}

function renderPool(entry) {
  const tile = entry.card.querySelector(".tile.pool");
  const row = entry.pool;
  if (!row) return;
  setText(tile, ".people", Number.isFinite(row.people) ? integerFr.format(row.people) : "–");
  const hasCapacity = Number.isFinite(row.capacity) && row.capacity > 0;
  setText(tile, ".capacity", hasCapacity ? integerFr.format(row.capacity) : "");
  tile.querySelector(".of").hidden = !hasCapacity;
  const pct = Number.isFinite(row.occupancy_pct) ? row.occupancy_pct : null;
  setText(tile, ".pct", pct === null ? "" : `${integerFr.format(pct)} %`);
  tile.querySelector(".gauge-fill").style.width = `${Math.max(0, Math.min(100, pct ?? 0))}%`;
  const level = Number.isInteger(row.affluence) ? AFFLUENCE[row.affluence - 1] : null;
  setText(tile, ".affluence-fr", level ? level[0] : "");
  setText(tile, ".affluence-en", level ? level[1] : "");
  tile.dataset.affluence = level ? String(row.affluence) : "";
  setText(tile, ".when", row.observed_at ? `à ${hourFr.format(time(row.observed_at))}` : "");
  markStale(tile, "pool", row.observed_at);
  tile.hidden = false;
}

const APPLY = {
  noise(row) {
    const entry = site(row);
    if (!entry || typeof row.sensor_id !== "string") return;
    keepNewest(entry.noise, row.sensor_id, row, "start_time");
    renderNoise(entry);
  },
  air(row) {
    const entry = site(row);
    if (!entry || typeof row.sensor_id !== "string") return;
    keepNewest(entry.air, row.sensor_id, row, "start_time");
    renderAir(entry);
  },
  counts(row) {
    const entry = site(row);
    const start = time(row.start_time);
    if (!entry || start === null || typeof row.mode !== "string") return;
    const current = entry.counts;
    if (current && start < current.startMs) return; // an older hour
    if (!current || start > current.startMs) {
      entry.counts = { startMs: start, start: row.start_time, end: row.end_time, modes: new Map() };
    }
    entry.counts.modes.set(row.mode, row.count);
    renderCounts(entry);
  },
  pool(row) {
    const entry = site(row);
    if (!entry) return;
    if (!entry.pool || (time(row.observed_at) ?? -Infinity) >= (time(entry.pool.observed_at) ?? -Infinity)) {
      entry.pool = row;
    }
    renderPool(entry);
  },
};

async function loadRecords(kind) {
  const { id, orderBy } = DATASETS[kind];
  const url = apiUrl(`api/explore/v2.1/catalog/datasets/${encodeURIComponent(id)}/records`, {
    order_by: `${orderBy} desc`,
    limit: "100",
  });
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) return; // dataset not published here: its tiles stay hidden
  const body = await response.json();
  // Oldest first, so that the newest row of each key is applied last.
  for (const row of (body.results || []).slice().reverse()) APPLY[kind](row);
}

const feeds = new Map();

function updateStatus() {
  const states = [...feeds.values()];
  const live = states.length > 0 && states.every((source) => source.readyState === EventSource.OPEN);
  const closed = states.length > 0 && states.every((source) => source.readyState === EventSource.CLOSED);
  const status = document.getElementById("status");
  status.dataset.state = live ? "live" : closed ? "offline" : "connecting";
  setText(status, "#status-fr", live ? "En direct" : closed ? "Hors ligne" : "Connexion…");
  setText(status, "#status-en", live ? "Live" : closed ? "Offline" : "Connecting…");
}

function follow(kind) {
  const { id } = DATASETS[kind];
  const source = new EventSource(apiUrl(`api/live/${encodeURIComponent(id)}`));
  feeds.set(kind, source);
  let loaded = false;
  // The first values are read once the feed is listening ("ready"), so no row written in
  // between is missed; a reconnection resumes with Last-Event-ID and needs no reload.
  source.addEventListener("ready", () => {
    updateStatus();
    if (!loaded) {
      loaded = true;
      loadRecords(kind).catch(() => { loaded = false; });
    }
  });
  source.addEventListener("reload", () => { loadRecords(kind).catch(() => {}); });
  source.addEventListener(id, (event) => {
    let row;
    try {
      row = JSON.parse(event.data);
    } catch {
      return;
    }
    if (row && typeof row === "object") APPLY[kind](row);
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) feeds.delete(kind); // unknown or not live here
    updateStatus();
  });
}

function tick() {
  setText(document, "#clock", clockFr.format(new Date()));
  for (const entry of sites.values()) {
    renderNoise(entry);
    renderAir(entry);
    renderCounts(entry);
    renderPool(entry);
  }
}

/** A cell row's polygon ring of [lon, lat] positions (a geo_shape Feature, or a geometry). */
function ring(shape) {
  const geometry = shape && shape.type === "Feature" ? shape.geometry : shape;
  if (!geometry || geometry.type !== "Polygon" || !Array.isArray(geometry.coordinates)) return null;
  const outer = geometry.coordinates[0];
  if (!Array.isArray(outer) || outer.length < 4) return null;
  const points = outer.filter((p) => Array.isArray(p) && Number.isFinite(p[0]) && Number.isFinite(p[1]));
  return points.length === outer.length ? points : null;
}

function applyCell(row) {
  if (!row || row.window_minutes !== 60 || typeof row.cell_id !== "string") return;
  const start = time(row.start_time);
  const points = ring(row.geo_shape);
  if (start === null || points === null) return;
  if (mapHour && start < mapHour.startMs) return; // an older hour
  if (!mapHour || start > mapHour.startMs) {
    mapHour = { startMs: start, start: row.start_time, end: row.end_time, cells: new Map() };
  }
  mapHour.cells.set(row.cell_id, { row, points });
}

function renderMap() {
  const section = document.getElementById("map");
  if (!mapHour || mapHour.cells.size === 0) return;
  const cells = [...mapHour.cells.values()];
  // An equirectangular view of the cells' extent: x = lon·cos(mean lat), y = -lat, scaled to fit.
  let west = Infinity, east = -Infinity, south = Infinity, north = -Infinity;
  for (const { points } of cells) {
    for (const [lon, lat] of points) {
      west = Math.min(west, lon); east = Math.max(east, lon);
      south = Math.min(south, lat); north = Math.max(north, lat);
    }
  }
  const squeeze = Math.cos(((south + north) / 2) * Math.PI / 180);
  const spanX = Math.max((east - west) * squeeze, 1e-9);
  const spanY = Math.max(north - south, 1e-9);
  const inner = { width: MAP_SIZE.width - 2 * MAP_SIZE.margin, height: MAP_SIZE.height - 2 * MAP_SIZE.margin };
  const scale = Math.min(inner.width / spanX, inner.height / spanY);
  const offsetX = MAP_SIZE.margin + (inner.width - spanX * scale) / 2;
  const offsetY = MAP_SIZE.margin + (inner.height - spanY * scale) / 2;
  const svg = document.getElementById("map-svg");
  const svgNs = svg.namespaceURI; // the SVG namespace, from the page's own <svg>
  const shapes = cells.map(({ row, points }) => {
    const polygon = document.createElementNS(svgNs, "polygon");
    polygon.setAttribute("class", "cell");
    polygon.setAttribute("points", points.map(([lon, lat]) =>
      `${(offsetX + (lon - west) * squeeze * scale).toFixed(1)},${(offsetY + (north - lat) * scale).toFixed(1)}`).join(" "));
    const band = Number.isInteger(row.eaqi_band) && row.eaqi_band >= 1 && row.eaqi_band <= 6 ? row.eaqi_band : null;
    polygon.setAttribute("fill", band ? EAQI[band - 1].colour : "#808080");
    polygon.dataset.cell = row.cell_id;
    polygon.dataset.band = band ? String(band) : "";
    const title = document.createElementNS(svgNs, "title");
    const mean = Number.isFinite(row.pm2_5_ugm3_mean) ? `${numberFr.format(row.pm2_5_ugm3_mean)} µg/m³` : "–";
    title.textContent = `${row.cell_id} · ${mean} · ${row.sample_count} mesures, ${row.vehicle_count} véhicules`;
    polygon.append(title);
    return polygon;
  });
  svg.replaceChildren(...shapes);
  setText(section, "#map-when",
    `Moyenne horaire par carreau de 100 m · ${span(mapHour.start, mapHour.end)} · ${cells.length} carreaux`);
  const legend = document.getElementById("map-legend");
  if (legend.children.length === 0) {
    legend.replaceChildren(...EAQI.map((style, index) => {
      const item = document.createElement("li");
      item.dataset.band = String(index + 1);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.backgroundColor = style.colour;
      const label = document.createElement("span");
      label.textContent = `${style.fr} · ${style.en}`;
      item.append(swatch, label);
      return item;
    }));
  }
  section.hidden = false;
}

async function loadMap() {
  // The newest hour, then all its cells at once from the GeoJSON export (no row limit).
  const base = `api/explore/v2.1/catalog/datasets/${encodeURIComponent(MAP_DATASET)}`;
  const newest = await fetch(apiUrl(`${base}/records`, {
    select: "start_time", where: "window_minutes = 60", order_by: "start_time desc", limit: "1",
  }), { headers: { Accept: "application/json" } });
  if (!newest.ok) return; // not published here: the map stays hidden
  const first = ((await newest.json()).results || [])[0];
  if (!first || typeof first.start_time !== "string") return;
  const export_ = await fetch(apiUrl(`${base}/exports/geojson`, {
    where: `window_minutes = 60 and start_time = date'${first.start_time}'`,
  }));
  if (!export_.ok) return;
  const collection = await export_.json();
  for (const feature of collection.features || []) {
    if (feature && feature.properties) applyCell({ ...feature.properties, geo_shape: feature.geometry });
  }
  renderMap();
}

function followMap() {
  const source = new EventSource(apiUrl(`api/live/${encodeURIComponent(MAP_DATASET)}`));
  let loaded = false;
  source.addEventListener("ready", () => {
    if (!loaded) {
      loaded = true;
      loadMap().catch(() => { loaded = false; });
    }
  });
  source.addEventListener("reload", () => { loadMap().catch(() => {}); });
  source.addEventListener(MAP_DATASET, (event) => {
    let row;
    try {
      row = JSON.parse(event.data);
    } catch {
      return;
    }
    applyCell(row);
    renderMap();
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) source.close(); // not published here
  });
}

for (const kind of Object.keys(DATASETS)) follow(kind);
followMap();
tick();
setInterval(tick, 30e3);
