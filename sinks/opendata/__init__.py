"""Open-data publication: datasets over the window results, served by an HTTP API compatible
with the OpenDataSoft Explore API v2.1, with exports, a DCAT-AP catalogue, NGSI-LD entities, a
live feed, a display page and an optional push to an external portal (docs/publication.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sinks.opendata._catalog import Catalog, Dataset, DatasetField, UnknownDatasetError
from sinks.opendata._datasets import DatasetsFileError, default_catalog
from sinks.opendata._service import PublishService

if TYPE_CHECKING:
    from citysense.runtime import Component
    from citysense.settings import Settings


def publication_components(settings: Settings) -> list[Component]:
    """The components of the publication stage: the API (and, when ``publish.push.enabled``,
    the push to an external portal). ``DatasetsFileError`` for a bad ``publish.datasets_file``."""
    from sinks.opendata import _live, _routes_page

    catalog = default_catalog(settings.publish)
    return [PublishService(settings, catalog, routers=(_live.router, _routes_page.router))]


__all__ = [
    "Catalog",
    "Dataset",
    "DatasetField",
    "DatasetsFileError",
    "PublishService",
    "UnknownDatasetError",
    "default_catalog",
    "publication_components",
]
