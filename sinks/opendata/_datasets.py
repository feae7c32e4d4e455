"""The built-in catalogue of published datasets, or the one a TOML file defines instead.

Each built-in dataset is a view in schema ``opendata`` created by the sink's migrations
(``0003_opendata.sql``, ``0004_mobile_air.sql`` for the map; ``0005_typed_indicators.sql`` makes
the numeric indicator fields read typed columns instead of ``jsonb``); a test compares every
field here with its view's columns (names and types), so the two cannot drift apart. Metadata
follows what the portals reusers know show: titles and descriptions in French and English,
keywords, an EU data theme and an EU update frequency (Publications Office authority tables
``data-theme`` and ``frequency``), units.

``publish.datasets_file`` names a TOML file whose ``[[datasets]]`` tables replace the built-in
list; each table has the fields of :class:`~sinks.opendata._catalog.Dataset`, for example::

    [[datasets]]
    id = "bruit-horaire"
    view = "noise_hourly"
    title = { fr = "Bruit horaire", en = "Hourly noise" }
    description = { fr = "…", en = "…" }
    timestamp_field = "start_time"

    [[datasets.fields]]
    name = "sensor_id"
    type = "text"
    label = { fr = "Capteur", en = "Sensor" }

A mistake in the file stops the start with a :class:`DatasetsFileError` naming the file, the
dataset and the field.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from citysense.settings import PublishSettings
from sinks.opendata._catalog import Catalog, Dataset, DatasetField, FieldType, LocalizedText

__all__ = [
    "BUILTIN_DATASETS",
    "DatasetsFileError",
    "default_catalog",
    "load_datasets_file",
]


class DatasetsFileError(ValueError):
    """The datasets file cannot be used; the message names the file, dataset and field."""


def _text(fr: str, en: str) -> LocalizedText:
    return LocalizedText(fr=fr, en=en)


def _field(
    name: str,
    field_type: FieldType,
    label: tuple[str, str],
    description: tuple[str, str] | None = None,
    unit: str | None = None,
) -> DatasetField:
    return DatasetField(
        name=name,
        type=field_type,
        label=_text(*label),
        description=None if description is None else _text(*description),
        unit=unit,
    )


# --- fields several datasets share -----------------------------------------------------------

_SENSOR_ID = _field(
    "sensor_id",
    "text",
    ("Capteur", "Sensor"),
    ("Identifiant du capteur dans le registre.", "Sensor identifier in the registry."),
)
_SITE_ID = _field(
    "site_id",
    "text",
    ("Site", "Site"),
    (
        "Identifiant du lieu (place, carrefour, piscine).",
        "Place identifier (square, crossing, pool).",
    ),
)
_SITE_NAME = _field("site_name", "text", ("Nom du site", "Site name"))
_START = _field(
    "start_time",
    "datetime",
    ("Début", "Start"),
    ("Début de la période (inclus).", "Start of the period (inclusive)."),
)
_END = _field(
    "end_time",
    "datetime",
    ("Fin", "End"),
    ("Fin de la période (exclue).", "End of the period (exclusive)."),
)
_SENSOR_POSITION = _field(
    "geo_point_2d",
    "geo_point_2d",
    ("Position", "Position"),
    ("Position du capteur (WGS84).", "Sensor position (WGS84)."),
)
_SITE_POSITION = _field(
    "geo_point_2d",
    "geo_point_2d",
    ("Position", "Position"),
    ("Position du site (WGS84).", "Site position (WGS84)."),
)


def _level(name: str, label: tuple[str, str], description: tuple[str, str]) -> DatasetField:
    return _field(name, "double", label, description, unit="dB(A)")


def _concentration(name: str, label: str, pollutant: tuple[str, str]) -> DatasetField:
    return _field(
        name,
        "double",
        (label, label),
        (
            f"Concentration moyenne horaire de {pollutant[0]}.",
            f"Hourly mean concentration of {pollutant[1]}.",
        ),
        unit="µg/m³",
    )


_PEOPLE_CAPACITY = _field(
    "capacity",
    "int",
    ("Capacité", "Capacity"),
    (
        "Nombre maximal de personnes admises (registre).",
        "Maximum number of people allowed in (registry).",
    ),
)
_OCCUPANCY = _field(
    "occupancy_pct",
    "double",
    ("Taux d'occupation", "Occupancy"),
    (
        "Personnes présentes rapportées à la capacité.",
        "People present relative to the capacity.",
    ),
    unit="%",
)
_AFFLUENCE = _field(
    "affluence",
    "int",
    ("Affluence", "Affluence"),
    (
        "Niveau d'affluence : 1 plus le nombre de seuils de taux d'occupation atteints "
        "(par défaut 25, 50, 75 et 90 %, soit 1 à 5).",
        "Affluence level: 1 plus the number of occupancy thresholds reached (by default 25, "
        "50, 75 and 90 %, so 1 to 5).",
    ),
)

# --- the built-in datasets -------------------------------------------------------------------

_NOISE_HOURLY = Dataset(
    id="bruit-horaire",
    view="noise_hourly",
    title=_text("Niveaux sonores horaires", "Hourly noise levels"),
    description=_text(
        "Niveau sonore équivalent (LAeq), maximal et niveaux fractiles L10, L50, L90 de chaque "
        "sonomètre, par heure. Calculés à partir des mesures des capteurs ; la couverture "
        "indique la part de l'heure réellement mesurée.",
        "Equivalent continuous sound level (LAeq), maximum and percentile levels L10, L50, L90 "
        "of each sound level meter, per hour. Computed from the sensors' measurements; coverage "
        "is the fraction of the hour actually measured.",
    ),
    keywords=("bruit", "noise", "environnement", "LAeq", "capteurs"),
    theme="ENVI",
    frequency="HOURLY",
    fields=(
        _SENSOR_ID,
        _SITE_ID,
        _SITE_NAME,
        _START,
        _END,
        _level(
            "laeq_db",
            ("LAeq", "LAeq"),
            (
                "Niveau de pression acoustique continu équivalent pondéré A sur l'heure.",
                "A-weighted equivalent continuous sound pressure level over the hour.",
            ),
        ),
        _level(
            "lamax_db",
            ("LAmax", "LAmax"),
            ("Niveau maximal pondéré A.", "Maximum A-weighted level."),
        ),
        _level(
            "l10_db",
            ("L10", "L10"),
            ("Niveau dépassé 10 % du temps.", "Level exceeded 10 % of the time."),
        ),
        _level(
            "l50_db",
            ("L50", "L50"),
            ("Niveau dépassé 50 % du temps.", "Level exceeded 50 % of the time."),
        ),
        _level(
            "l90_db",
            ("L90", "L90"),
            (
                "Niveau dépassé 90 % du temps (bruit de fond).",
                "Level exceeded 90 % of the time (background noise).",
            ),
        ),
        _field(
            "coverage",
            "double",
            ("Couverture", "Coverage"),
            (
                "Part de l'heure couverte par des mesures, de 0 à 1.",
                "Fraction of the hour covered by measurements, 0 to 1.",
            ),
        ),
        _field(
            "sample_count",
            "int",
            ("Nombre de mesures", "Sample count"),
            ("Mesures agrégées dans l'heure.", "Measurements aggregated in the hour."),
        ),
        _SENSOR_POSITION,
    ),
    timestamp_field="start_time",
    geo_field="geo_point_2d",
    key_fields=("sensor_id", "start_time"),
    live=True,
)

_NOISE_DAILY = Dataset(
    id="bruit-lden-journalier",
    view="noise_daily",
    title=_text("Indicateurs de bruit Lden journaliers", "Daily Lden noise indicators"),
    description=_text(
        "Indicateurs Lden, Ld, Le et Ln de chaque sonomètre par jour (heure de Paris), au sens "
        "de la directive 2002/49/CE (annexe I) : jour 7 h-19 h, soirée 19 h-23 h (+5 dB), "
        "nuit 23 h-7 h (+10 dB), calculés à partir des LAeq horaires. Lden n'est donné que si "
        "les trois périodes ont été mesurées.",
        "Lden, Ld, Le and Ln indicators of each sound level meter per day (Paris time), as "
        "defined by Directive 2002/49/EC (Annex I): day 07-19, evening 19-23 (+5 dB), night "
        "23-07 (+10 dB), computed from the hourly LAeq. Lden is given only when all three "
        "periods were measured.",
    ),
    keywords=("bruit", "noise", "Lden", "directive 2002/49/CE", "environnement"),
    theme="ENVI",
    frequency="DAILY",
    fields=(
        _SENSOR_ID,
        _SITE_ID,
        _SITE_NAME,
        _field(
            "date",
            "date",
            ("Date", "Date"),
            ("Jour civil à Paris (Europe/Paris).", "Calendar day in Paris (Europe/Paris)."),
        ),
        _level(
            "lden_db",
            ("Lden", "Lden"),
            (
                "Niveau jour-soir-nuit (directive 2002/49/CE, annexe I).",
                "Day-evening-night level (Directive 2002/49/EC, Annex I).",
            ),
        ),
        _level("ld_db", ("Ld (7 h-19 h)", "Ld (07-19)"), ("LAeq de jour.", "Day LAeq.")),
        _level("le_db", ("Le (19 h-23 h)", "Le (19-23)"), ("LAeq de soirée.", "Evening LAeq.")),
        _level("ln_db", ("Ln (23 h-7 h)", "Ln (23-07)"), ("LAeq de nuit.", "Night LAeq.")),
        _SENSOR_POSITION,
    ),
    timestamp_field="date",
    geo_field="geo_point_2d",
    key_fields=("sensor_id", "date"),
)

_AIR_HOURLY = Dataset(
    id="qualite-air-horaire",
    view="air_hourly",
    title=_text("Qualité de l'air horaire", "Hourly air quality"),
    description=_text(
        "Concentrations moyennes horaires de particules (PM2,5, PM10), dioxyde d'azote, ozone "
        "et dioxyde de soufre mesurées par des micro-capteurs, avec l'indice européen de "
        "qualité de l'air (EAQI, bandes de l'Agence européenne pour l'environnement, révision "
        "2024) : la pire bande des polluants mesurés. Micro-capteurs : mesures indicatives, "
        "non réglementaires.",
        "Hourly mean concentrations of particulate matter (PM2.5, PM10), nitrogen dioxide, "
        "ozone and sulphur dioxide measured by micro-sensors, with the European Air Quality "
        "Index (EAQI, European Environment Agency bands, 2024 revision): the worst band of the "
        "pollutants measured. Micro-sensors: indicative, not regulatory, measurements.",
    ),
    keywords=("qualité de l'air", "air quality", "pollution", "EAQI", "particules"),
    theme="ENVI",
    frequency="HOURLY",
    fields=(
        _SENSOR_ID,
        _SITE_ID,
        _SITE_NAME,
        _START,
        _END,
        _concentration("pm2_5_ugm3", "PM2,5", ("particules PM2,5", "PM2.5 particles")),
        _concentration("pm10_ugm3", "PM10", ("particules PM10", "PM10 particles")),
        _concentration("no2_ugm3", "NO2", ("dioxyde d'azote", "nitrogen dioxide")),
        _concentration("o3_ugm3", "O3", ("l'ozone", "ozone")),
        _concentration("so2_ugm3", "SO2", ("dioxyde de soufre", "sulphur dioxide")),
        _field(
            "eaqi_band",
            "int",
            ("Indice EAQI", "EAQI band"),
            (
                "Bande de l'indice européen, de 1 (bon) à 6 (extrêmement mauvais).",
                "European index band, 1 (good) to 6 (extremely poor).",
            ),
        ),
        _field(
            "eaqi_label",
            "text",
            ("Qualificatif EAQI", "EAQI label"),
            (
                "Nom anglais de la bande selon l'AEE : Good, Fair, Moderate, Poor, Very poor, "
                "Extremely poor.",
                "The EEA's name of the band: Good, Fair, Moderate, Poor, Very poor, "
                "Extremely poor.",
            ),
        ),
        _SENSOR_POSITION,
    ),
    timestamp_field="start_time",
    geo_field="geo_point_2d",
    key_fields=("sensor_id", "start_time"),
    live=True,
)

_AIR_CELLS = Dataset(
    id="qualite-air-carte-pm25",
    view="air_cells_pm25",
    title=_text(
        "Carte des particules fines PM2,5 (capteurs mobiles)",
        "Fine particle (PM2.5) map from mobile sensors",
    ),
    description=_text(
        "Concentrations de particules fines PM2,5 mesurées à hauteur de respiration par des "
        "capteurs embarqués sur des véhicules, agrégées par carreau de 100 m de la grille "
        "statistique européenne (INSPIRE, ETRS89-LAEA, EPSG:3035, identifiants GEOSTAT) et par "
        "quart d'heure et heure : moyenne, maximum, nombre de mesures et de véhicules, bande de "
        "l'indice européen de qualité de l'air (AEE, révision 2024, seuils horaires). Un "
        "carreau n'est publié qu'avec un nombre minimal de mesures provenant d'un nombre "
        "minimal de véhicules, pour qu'aucun trajet ne puisse être suivi. Micro-capteurs : "
        "mesures indicatives, non réglementaires.",
        "Fine particle (PM2.5) concentrations measured at breathing height by sensors carried "
        "by vehicles, pooled per 100 m cell of the European statistical grid (INSPIRE, "
        "ETRS89-LAEA, EPSG:3035, GEOSTAT cell ids) and per quarter hour and hour: mean, "
        "maximum, number of samples and of vehicles, European Air Quality Index band (EEA, "
        "2024 revision, hourly thresholds). A cell is published only with a minimum number of "
        "samples from a minimum number of vehicles, so that no trip can be followed. "
        "Micro-sensors: indicative, not regulatory, measurements.",
    ),
    keywords=("qualité de l'air", "air quality", "PM2.5", "particules", "carte", "grille"),
    theme="ENVI",
    frequency="CONT",
    fields=(
        _field(
            "cell_id",
            "text",
            ("Carreau", "Grid cell"),
            (
                "Identifiant INSPIRE du carreau : CRS3035RES100mN<nord>E<est>, coin sud-ouest "
                "en mètres (EPSG:3035).",
                "INSPIRE cell id: CRS3035RES100mN<northing>E<easting>, the south-west corner in "
                "metres (EPSG:3035).",
            ),
        ),
        _field(
            "resolution_m",
            "int",
            ("Taille du carreau", "Cell size"),
            ("Côté du carreau.", "Side of the cell."),
            unit="m",
        ),
        _START,
        _END,
        _field(
            "window_minutes",
            "int",
            ("Durée", "Duration"),
            ("Durée de la période (15 ou 60).", "Length of the period (15 or 60)."),
            unit="min",
        ),
        _field(
            "pm2_5_ugm3_mean",
            "double",
            ("PM2,5 moyenne", "PM2.5 mean"),
            (
                "Moyenne des mesures de PM2,5 du carreau sur la période.",
                "Mean of the cell's PM2.5 samples over the period.",
            ),
            unit="µg/m³",
        ),
        _field(
            "pm2_5_ugm3_max",
            "double",
            ("PM2,5 maximum", "PM2.5 maximum"),
            ("Plus forte mesure de PM2,5.", "Highest PM2.5 sample."),
            unit="µg/m³",
        ),
        _field(
            "sample_count",
            "int",
            ("Mesures", "Samples"),
            ("Nombre de mesures dans le carreau.", "Number of samples in the cell."),
        ),
        _field(
            "vehicle_count",
            "int",
            ("Véhicules", "Vehicles"),
            ("Nombre de véhicules distincts.", "Number of distinct vehicles."),
        ),
        _field(
            "eaqi_band",
            "int",
            ("Indice EAQI", "EAQI band"),
            (
                "Bande de l'indice européen pour les PM2,5 de la moyenne, de 1 (bon) à 6 "
                "(extrêmement mauvais), seuils horaires (indicative sur 15 minutes).",
                "European index band of the mean for PM2.5, 1 (good) to 6 (extremely poor), "
                "hourly thresholds (indicative over 15 minutes).",
            ),
        ),
        _field(
            "eaqi_label",
            "text",
            ("Qualificatif EAQI", "EAQI label"),
            (
                "Nom anglais de la bande selon l'AEE.",
                "The EEA's name of the band.",
            ),
        ),
        _field(
            "geo_shape",
            "geo_shape",
            ("Carreau (forme)", "Cell shape"),
            ("Le carreau en polygone (WGS84).", "The cell as a polygon (WGS84)."),
        ),
        _field(
            "geo_point_2d",
            "geo_point_2d",
            ("Centre", "Centre"),
            ("Centre du carreau (WGS84).", "Centre of the cell (WGS84)."),
        ),
    ),
    timestamp_field="start_time",
    geo_field="geo_point_2d",
    shape_field="geo_shape",
    key_fields=("cell_id", "window_minutes", "start_time"),
    live=True,
)

_COUNTS_HOURLY = Dataset(
    id="comptage-horaire-par-mode",
    view="counts_hourly",
    title=_text("Comptages horaires par mode", "Hourly counts by mode"),
    description=_text(
        "Nombre de passages par site, heure et mode (piéton, vélo, deux-roues motorisé, "
        "voiture, bus, poids lourd, indéterminé), tous sens et toutes lignes de comptage du "
        "site confondus. Un mode sans mesure dans l'heure n'a pas de ligne ; 0 signifie "
        "qu'aucun passage n'a été compté.",
        "Crossings per site, hour and mode (pedestrian, bicycle, motorised two-wheeler, car, "
        "bus, truck, unknown), both directions and all counting lines of the site together. A "
        "mode without measurement in an hour has no row; 0 means nothing was counted.",
    ),
    keywords=("comptage", "mobilité", "vélo", "piétons", "trafic"),
    theme="TRAN",
    frequency="HOURLY",
    fields=(
        _SITE_ID,
        _SITE_NAME,
        _START,
        _END,
        _field(
            "mode",
            "text",
            ("Mode", "Mode"),
            (
                "Classe de trafic : pedestrian, bicycle, two_wheeler, car, bus, truck, unknown.",
                "Traffic class: pedestrian, bicycle, two_wheeler, car, bus, truck, unknown.",
            ),
        ),
        _field(
            "count",
            "int",
            ("Passages", "Count"),
            ("Passages comptés dans l'heure.", "Crossings counted in the hour."),
        ),
        _SITE_POSITION,
    ),
    timestamp_field="start_time",
    geo_field="geo_point_2d",
    key_fields=("site_id", "start_time", "mode"),
    live=True,
)

_POOL_15MIN = Dataset(
    id="affluence-piscine-15min",
    view="pool_15min",
    title=_text("Affluence des piscines par quart d'heure", "Pool attendance per 15 minutes"),
    description=_text(
        "Nombre moyen et maximal de nageurs par piscine et par quart d'heure, compté par des "
        "caméras qui ne transmettent que des nombres, taux d'occupation par rapport à la "
        "capacité et niveau d'affluence.",
        "Mean and maximum number of swimmers per pool and quarter of an hour, counted by "
        "cameras that only send numbers, occupancy relative to capacity and affluence level.",
    ),
    keywords=("piscine", "affluence", "fréquentation", "pool", "sport"),
    theme="EDUC",
    frequency="15MIN",
    fields=(
        _SITE_ID,
        _SITE_NAME,
        _START,
        _END,
        _field(
            "people_mean",
            "double",
            ("Personnes (moyenne)", "People (mean)"),
            ("Nombre moyen de personnes présentes.", "Mean number of people present."),
        ),
        _field(
            "people_max",
            "int",
            ("Personnes (maximum)", "People (maximum)"),
            (
                "Somme des maxima des caméras du site (borne haute).",
                "Sum of the site cameras' maxima (an upper bound).",
            ),
        ),
        _PEOPLE_CAPACITY,
        _OCCUPANCY,
        _AFFLUENCE,
        _SITE_POSITION,
    ),
    timestamp_field="start_time",
    geo_field="geo_point_2d",
    key_fields=("site_id", "start_time"),
    live=True,
)

_POOL_NOW = Dataset(
    id="affluence-piscine-temps-reel",
    view="pool_now",
    title=_text("Affluence des piscines en temps réel", "Pool attendance in real time"),
    description=_text(
        "Pour chaque piscine, le nombre de personnes présentes pendant la dernière minute "
        "mesurée, le taux d'occupation et le niveau d'affluence. Une ligne par piscine.",
        "For each pool, the number of people present during the last minute measured, the "
        "occupancy and the affluence level. One row per pool.",
    ),
    keywords=("piscine", "affluence", "temps réel", "pool", "real time"),
    theme="EDUC",
    frequency="1MIN",
    fields=(
        _SITE_ID,
        _SITE_NAME,
        _field(
            "observed_at",
            "datetime",
            ("Observé à", "Observed at"),
            (
                "Fin de la minute mesurée la plus récente.",
                "End of the most recent minute measured.",
            ),
        ),
        _field(
            "people",
            "int",
            ("Personnes", "People"),
            (
                "Personnes présentes, moyenne de la minute arrondie à l'unité.",
                "People present, the minute's mean rounded to a whole person.",
            ),
        ),
        _PEOPLE_CAPACITY,
        _OCCUPANCY,
        _AFFLUENCE,
        _SITE_POSITION,
    ),
    timestamp_field="observed_at",
    geo_field="geo_point_2d",
    key_fields=("site_id",),
    live=True,
)

# "Comptage des mobilités": the fields, names and descriptions of the national schema
# (schema.data.gouv.fr, etalab/schema-comptage-mobilites-{site,channel,measure} v0.2.0,
# Licence Ouverte 2.0); the schema's types map onto the portal's: string → text,
# number → double, datetime → datetime.
_MOBILITY_SCHEMA = "Schéma national « Comptage des mobilités » v0.2.0 (schema.data.gouv.fr)."
_MOBILITY_SCHEMA_EN = (
    'French national schema "Comptage des mobilités" v0.2.0 (schema.data.gouv.fr).'
)

_MOBILITY_SITES = Dataset(
    id="comptage-mobilites-sites",
    view="mobility_sites",
    title=_text("Comptage des mobilités - sites", "Mobility counts - sites"),
    description=_text(
        "Sites de comptage des mobilités : identifiant, nom et position. " + _MOBILITY_SCHEMA,
        "Mobility counting sites: identifier, name and position. " + _MOBILITY_SCHEMA_EN,
    ),
    keywords=("comptage", "mobilité", "schéma national", "vélo", "piétons"),
    theme="TRAN",
    frequency="IRREG",
    fields=(
        _field(
            "site_id",
            "text",
            ("Identifiant du site", "Site identifier"),
            (
                "Identifiant unique du site où est installé le compteur.",
                "Unique identifier of the site where the counter is installed.",
            ),
        ),
        _field(
            "parent_site_id",
            "text",
            ("Site parent", "Parent site"),
            ("Site parent pour regroupement géographique.", "Parent site, for grouping."),
        ),
        _field("site_name", "text", ("Nom du site", "Site name")),
        _field(
            "fr_insee_code",
            "text",
            ("Code INSEE", "INSEE code"),
            ("Code INSEE de la commune.", "INSEE code of the municipality."),
        ),
        _field(
            "xlong",
            "double",
            ("Longitude", "Longitude"),
            ("Longitude WGS84 en degrés décimaux.", "WGS84 longitude in decimal degrees."),
            unit="°",
        ),
        _field(
            "ylat",
            "double",
            ("Latitude", "Latitude"),
            ("Latitude WGS84 en degrés décimaux.", "WGS84 latitude in decimal degrees."),
            unit="°",
        ),
        _field(
            "external_ids",
            "text",
            ("Identifiants externes", "External identifiers"),
            (
                "Identifiants d'infrastructures dans d'autres bases ouvertes.",
                "Infrastructure identifiers in other open databases.",
            ),
        ),
        _field(
            "infrastructure_type",
            "text",
            ("Type d'infrastructure", "Infrastructure type"),
        ),
    ),
    key_fields=("site_id",),
)

_MOBILITY_CHANNELS = Dataset(
    id="comptage-mobilites-canaux",
    view="mobility_channels",
    title=_text("Comptage des mobilités - canaux", "Mobility counts - channels"),
    description=_text(
        "Canaux de comptage : un canal par capteur, ligne de comptage, sens et type de "
        "mobilité, avec le type de compteur et la période couverte. Le sens du capteur "
        "(IN/OUT) est donné dans provider_direction_code. " + _MOBILITY_SCHEMA,
        "Counting channels: one per sensor, counting line, direction and mobility type, with "
        "the counter type and the period covered. The sensor's direction (IN/OUT) is in "
        "provider_direction_code. " + _MOBILITY_SCHEMA_EN,
    ),
    keywords=("comptage", "mobilité", "schéma national", "vélo", "piétons"),
    theme="TRAN",
    frequency="HOURLY",
    fields=(
        _field(
            "channel_id",
            "text",
            ("Identifiant du canal", "Channel identifier"),
            (
                "<capteur>-<ligne>-<sens>-<classe>, stable dans le temps.",
                "<sensor>-<line>-<direction>-<class>, stable over time.",
            ),
        ),
        _field("channel_provider_id", "text", ("Identifiant fournisseur", "Provider identifier")),
        _field("site_provider_id", "text", ("Site chez le fournisseur", "Provider site")),
        _field("site_id", "text", ("Identifiant du site", "Site identifier")),
        _field(
            "mobility_type",
            "text",
            ("Type de mobilité", "Mobility type"),
            (
                "PEDESTRIAN, BIKE, TWO WHEELS MOTORIZED, CAR, BUS, TRUCK ou UNDEFINED.",
                "PEDESTRIAN, BIKE, TWO WHEELS MOTORIZED, CAR, BUS, TRUCK or UNDEFINED.",
            ),
        ),
        _field("comment", "text", ("Commentaire", "Comment")),
        _field(
            "counter_transmission_type",
            "text",
            ("Transmission du compteur", "Counter transmission"),
        ),
        _field(
            "publication_transmission_type",
            "text",
            ("Transmission vers le portail", "Publication transmission"),
        ),
        _field(
            "counter_type",
            "text",
            ("Type de compteur", "Counter type"),
            (
                "VIDEO SENSOR (caméra), RADAR SENSOR (radar) ou OTHER.",
                "VIDEO SENSOR (camera), RADAR SENSOR (radar) or OTHER.",
            ),
        ),
        _field(
            "direction",
            "text",
            ("Direction", "Direction"),
            (
                "Direction cardinale des usagers comptés ; vide quand elle n'est pas connue.",
                "Compass direction of the users counted; empty when unknown.",
            ),
        ),
        _field(
            "provider_direction_code",
            "text",
            ("Sens (code fournisseur)", "Direction (provider code)"),
            ("IN ou OUT, le sens du capteur.", "IN or OUT, the sensor's direction."),
        ),
        _field(
            "provider_direction_name",
            "text",
            ("Sens (description)", "Direction (description)"),
        ),
        _field("data_provider_name", "text", ("Fournisseur des données", "Data provider")),
        _field(
            "temporality",
            "text",
            ("Temporalité", "Temporality"),
            ("PERMANENT ou TEMPORARY.", "PERMANENT or TEMPORARY."),
        ),
        _field(
            "started_at",
            "datetime",
            ("Début du comptage", "Counting start"),
            ("Début de la première heure comptée.", "Start of the first hour counted."),
        ),
        _field("ended_at", "datetime", ("Fin du comptage", "Counting end")),
        _field(
            "last_updated_at",
            "datetime",
            ("Dernière mise à jour", "Last update"),
            (
                "Fin de la dernière heure comptée.",
                "End of the last hour counted.",
            ),
        ),
        _field(
            "time_step",
            "double",
            ("Pas de temps", "Time step"),
            ("Pas de temps des mesures.", "Time step of the measures."),
            unit="s",
        ),
        _field("provider_portal_url", "text", ("Page web des données", "Data web page")),
    ),
    timestamp_field="started_at",
    key_fields=("channel_id",),
)

_MOBILITY_MEASURES = Dataset(
    id="comptage-mobilites-mesures",
    view="mobility_measures",
    title=_text("Comptage des mobilités - mesures", "Mobility counts - measures"),
    description=_text(
        "Comptages horaires par canal. Chaque créneau est présent du premier au dernier "
        "comptage du canal ; début inclus, fin exclue ; un comptage vide signifie « pas de "
        "mesure », 0 qu'aucun passage n'a été compté. " + _MOBILITY_SCHEMA,
        "Hourly counts per channel. Every slot is present from the channel's first to its "
        "last count; start inclusive, end exclusive; an empty count means no measurement, 0 "
        "that nothing passed. " + _MOBILITY_SCHEMA_EN,
    ),
    keywords=("comptage", "mobilité", "schéma national", "vélo", "piétons"),
    theme="TRAN",
    frequency="HOURLY",
    fields=(
        _field("channel_id", "text", ("Identifiant du canal", "Channel identifier")),
        _field(
            "counter_id",
            "text",
            ("Identifiant du compteur", "Counter identifier"),
            ("Le capteur dans le registre.", "The sensor in the registry."),
        ),
        _field(
            "start_datetime",
            "datetime",
            ("Début", "Start"),
            ("Début du créneau (inclus).", "Start of the slot (inclusive)."),
        ),
        _field(
            "end_datetime",
            "datetime",
            ("Fin", "End"),
            ("Fin du créneau (exclue).", "End of the slot (exclusive)."),
        ),
        _field(
            "count",
            "double",
            ("Passages", "Count"),
            (
                "Passages comptés ; vide s'il n'y a pas eu de mesure.",
                "Crossings counted; empty when there was no measurement.",
            ),
        ),
    ),
    timestamp_field="start_datetime",
    key_fields=("channel_id", "start_datetime"),
    live=True,
)

#: The datasets published when ``publish.datasets_file`` is not set, in catalogue order.
BUILTIN_DATASETS: Final[tuple[Dataset, ...]] = (
    _NOISE_HOURLY,
    _NOISE_DAILY,
    _AIR_HOURLY,
    _AIR_CELLS,
    _MOBILITY_SITES,
    _MOBILITY_CHANNELS,
    _MOBILITY_MEASURES,
    _COUNTS_HOURLY,
    _POOL_15MIN,
    _POOL_NOW,
)


def default_catalog(settings: PublishSettings) -> Catalog:
    """The published catalogue: the datasets of ``settings.datasets_file`` when it is set (they
    replace the built-in ones), otherwise :data:`BUILTIN_DATASETS`. ``DatasetsFileError`` when
    the file cannot be used."""
    if settings.datasets_file is None:
        return Catalog(BUILTIN_DATASETS)
    return Catalog(load_datasets_file(settings.datasets_file))


def load_datasets_file(path: Path) -> tuple[Dataset, ...]:
    """The ``[[datasets]]`` of a TOML file, validated; ``DatasetsFileError`` naming the file, the
    dataset (by id, or by position when it has none) and the field at fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetsFileError(f"{path}: no such datasets file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetsFileError(f"{path}: cannot read the datasets file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DatasetsFileError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"datasets"})
    if unknown:
        raise DatasetsFileError(
            f"{path}: unknown top-level key(s) {', '.join(unknown)} (expected [[datasets]])"
        )
    tables = data.get("datasets")
    if not isinstance(tables, list) or not tables:
        raise DatasetsFileError(f"{path}: no [[datasets]] table (at least one dataset)")
    datasets: list[Dataset] = []
    seen: set[str] = set()
    for index, table in enumerate(tables):
        where = _dataset_name(table, index)
        if not isinstance(table, dict):
            raise DatasetsFileError(f"{path}: {where}: must be a table")
        try:
            dataset = Dataset.model_validate(table)
        except ValidationError as exc:
            raise DatasetsFileError(f"{path}: {where}: {_problems(table, exc)}") from None
        if dataset.id in seen:
            raise DatasetsFileError(f"{path}: dataset {dataset.id!r} is defined twice")
        seen.add(dataset.id)
        datasets.append(dataset)
    return tuple(datasets)


def _dataset_name(table: object, index: int) -> str:
    if isinstance(table, Mapping) and isinstance(table.get("id"), str):
        return f"dataset {table['id']!r}"
    return f"dataset #{index + 1}"


def _problems(table: Mapping[str, Any], exc: ValidationError) -> str:
    """Each error of ``exc`` as ``field 'x': type: reason``; a location inside ``fields`` is
    named by the field's name when it has one."""
    return "; ".join(_problem(table, error["loc"], error["msg"]) for error in exc.errors())


def _problem(table: Mapping[str, Any], loc: Sequence[int | str], message: str) -> str:
    if len(loc) >= 2 and loc[0] == "fields" and isinstance(loc[1], int):
        fields = table.get("fields")
        entry = fields[loc[1]] if isinstance(fields, list) and loc[1] < len(fields) else None
        name = entry.get("name") if isinstance(entry, Mapping) else None
        who = f"field {name!r}" if isinstance(name, str) else f"field #{loc[1] + 1}"
        rest = ".".join(str(part) for part in loc[2:])
        return f"{who}: {rest}: {message}" if rest else f"{who}: {message}"
    where = ".".join(str(part) for part in loc)
    return f"{where}: {message}" if where else message
