"""Open-data publication: datasets over the window results, served by an HTTP API compatible
with the OpenDataSoft Explore API v2.1, with exports, a DCAT-AP catalogue, NGSI-LD entities, a
live feed, a display page and an optional push to an external portal (docs/publication.md)."""

from sinks.opendata._catalog import Catalog, Dataset, DatasetField, UnknownDatasetError
from sinks.opendata._datasets import default_catalog
from sinks.opendata._service import PublishService

__all__ = [
    "Catalog",
    "Dataset",
    "DatasetField",
    "PublishService",
    "UnknownDatasetError",
    "default_catalog",
]
