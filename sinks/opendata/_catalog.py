"""The published datasets: what each one is, where its rows come from, its fields.

A dataset is a read-only SQL view in the ``opendata`` schema (created by the sink's migrations)
over the window results and the registry, never over raw per-person data. Its metadata is what a
reuser reads in the catalogue (the API, DCAT-AP, the display page): titles and descriptions in
French and English, licence, publisher, update frequency, fields with types and units.

Field types are the portal's (OpenDataSoft): ``text``, ``int``, ``double``, ``boolean``,
``date``, ``datetime``, ``geo_point_2d`` and ``geo_shape``. A ``geo_point_2d`` column holds a
``jsonb`` object ``{"lon": …, "lat": …}``, the shape the portal answers with; a ``geo_shape``
column a ``jsonb`` GeoJSON Feature whose geometry is the shape (RFC 7946), as the Explore API
v2.1 returns shapes. Shapes are selectable, never compared, ordered, grouped or refined on. A
view may carry extra columns whose names start with ``_`` (the live feed's change position);
they are never fields, so no query can read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "GEO_TYPES",
    "LICENCES",
    "Catalog",
    "Dataset",
    "DatasetField",
    "FieldType",
    "Licence",
    "LocalizedText",
    "UnknownDatasetError",
]

FieldType = Literal[
    "text", "int", "double", "boolean", "date", "datetime", "geo_point_2d", "geo_shape"
]
#: Field types that hold a geometry: selectable only (no comparison, order, group or facet).
GEO_TYPES: frozenset[str] = frozenset({"geo_point_2d", "geo_shape"})


class UnknownDatasetError(LookupError):
    """No published dataset has this id."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalizedText(_Model):
    """A text in French (the portal's default language) and English (EU reporting)."""

    fr: str
    en: str

    def get(self, lang: str) -> str:
        return self.en if lang == "en" else self.fr


class Licence(_Model):
    id: str
    title: str
    url: str


#: The two licences French open data uses (Etalab's list of reference licences).
LICENCES: dict[str, Licence] = {
    "etalab-2.0": Licence(
        id="etalab-2.0",
        title="Licence Ouverte / Open Licence version 2.0",
        url="https://www.etalab.gouv.fr/licence-ouverte-open-licence/",
    ),
    "odbl-1.0": Licence(
        id="odbl-1.0",
        title="Open Database License (ODbL) 1.0",
        url="https://opendatacommons.org/licenses/odbl/1-0/",
    ),
}


class DatasetField(_Model):
    """One column of a dataset, as the API and the exports name it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=63)
    type: FieldType
    label: LocalizedText
    description: LocalizedText | None = None
    #: Unit symbol (``dB(A)``, ``µg/m³``, ``%``), None for counts, names and times.
    unit: str | None = None


class Dataset(_Model):
    """One published dataset."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=100)
    #: The view in the ``opendata`` schema that holds its rows.
    view: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=63)
    title: LocalizedText
    description: LocalizedText
    keywords: tuple[str, ...] = ()
    #: DCAT theme (EU data theme authority code: ENVI, TRAN, SOCI, …).
    theme: str = "ENVI"
    #: Update frequency (EU frequency authority code: CONT, HOURLY, DAILY, …).
    frequency: str = "HOURLY"
    fields: tuple[DatasetField, ...]
    #: The field that orders rows in time (default ``order_by`` is this, descending).
    timestamp_field: str | None = None
    #: The field holding the row's position, for GeoJSON and ``within_distance``.
    geo_field: str | None = None
    #: The field holding the row's shape (``geo_shape``), the GeoJSON export's geometry when
    #: selected (else the position is).
    shape_field: str | None = None
    #: Fields that identify a row (an upsert key for the realtime push).
    key_fields: tuple[str, ...] = ()
    #: Licence id (a key of ``LICENCES``); None means the catalogue's (``publish.licence``).
    licence: str | None = None
    #: Whether the live feed (server-sent events) publishes this dataset's new rows.
    live: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Dataset:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset {self.id}: a field name is used twice")
        roles = (
            ("timestamp_field", self.timestamp_field),
            ("geo_field", self.geo_field),
            ("shape_field", self.shape_field),
        )
        for role, name in roles:
            if name is not None and name not in names:
                raise ValueError(f"dataset {self.id}: {role} {name!r} is not a field")
        for name in self.key_fields:
            if name not in names:
                raise ValueError(f"dataset {self.id}: key field {name!r} is not a field")
        if self.licence is not None and self.licence not in LICENCES:
            raise ValueError(f"dataset {self.id}: unknown licence {self.licence!r}")
        if self.geo_field is not None and self.field(self.geo_field).type != "geo_point_2d":
            raise ValueError(f"dataset {self.id}: geo_field must be of type geo_point_2d")
        if self.shape_field is not None and self.field(self.shape_field).type != "geo_shape":
            raise ValueError(f"dataset {self.id}: shape_field must be of type geo_shape")
        return self

    def field(self, name: str) -> DatasetField:
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(name)

    @property
    def field_types(self) -> Mapping[str, FieldType]:
        return {f.name: f.type for f in self.fields}


class Catalog:
    """The published datasets by id, in catalogue order."""

    def __init__(self, datasets: Iterable[Dataset]) -> None:
        self._datasets: dict[str, Dataset] = {}
        for dataset in datasets:
            if dataset.id in self._datasets:
                raise ValueError(f"dataset {dataset.id!r} defined twice")
            self._datasets[dataset.id] = dataset

    def __iter__(self) -> Iterator[Dataset]:
        return iter(self._datasets.values())

    def __len__(self) -> int:
        return len(self._datasets)

    def get(self, dataset_id: str) -> Dataset:
        try:
            return self._datasets[dataset_id]
        except KeyError:
            raise UnknownDatasetError(dataset_id) from None
