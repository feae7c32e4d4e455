"""The catalogue as DCAT-AP, the metadata national and European portals harvest.

data.gouv.fr and data.europa.eu harvest a ``dcat:Catalog`` (data.gouv.fr's DCAT harvester reads
Turtle, JSON-LD and RDF/XML); DCAT-AP 3 (SEMIC) says what each class carries: a dataset has a
title and description (English too, for EU reporting), keywords, a theme from the EU data-theme
authority, an update frequency from the EU frequency authority, a publisher (``foaf:Agent``), a
contact point (``vcard:Kind``) and distributions; a distribution has an access URL, a licence,
a media type (IANA) and a file type (EU file-type authority), and points to the API serving it
(``dcat:accessService``, a ``dcat:DataService`` with its endpoint).

High-value datasets (Commission Implementing Regulation (EU) 2023/138, "Earth observation and
environment": noise and air quality measured by monitoring stations) also carry, as the DCAT-AP
HVD annex asks, ``dcatap:applicableLegislation`` on the dataset, its distributions and the data
service (and on the catalogue holding them), and ``dcatap:hvdCategory`` (the EU vocabulary of
high-value dataset categories) on the dataset and the data service.

IRIs are the API's own URLs, so every node dereferences: the catalogue is the dataset list,
a dataset its metadata, a distribution a fragment of it, the data service the API's base.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rdflib import RDF, RDFS, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF

from citysense.settings import PublishSettings
from sinks.opendata._catalog import LICENCES, Catalog, Dataset, Licence

__all__ = [
    "DCATAP",
    "DISTRIBUTION_FORMATS",
    "HVD_CATEGORIES",
    "HVD_LEGISLATION",
    "JSONLD_CONTEXT",
    "DistributionFormat",
    "catalog_graph",
]

VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
#: DCAT-AP's own namespace (prefix ``dcatap``, also written ``r5r``).
DCATAP = Namespace("http://data.europa.eu/r5r/")
_AUTHORITY = "http://publications.europa.eu/resource/authority/"
_THEME = Namespace(_AUTHORITY + "data-theme/")
_FREQUENCY = Namespace(_AUTHORITY + "frequency/")
_FILE_TYPE = Namespace(_AUTHORITY + "file-type/")
_LANGUAGE = Namespace(_AUTHORITY + "language/")
_IANA = "https://www.iana.org/assignments/media-types/"
_HVD = Namespace("http://data.europa.eu/bna/")
_PREFIXES = {
    "dcat": DCAT,
    "dct": DCTERMS,
    "foaf": FOAF,
    "vcard": VCARD,
    "dcatap": DCATAP,
    "rdfs": RDFS,
}
#: The prefixes as a JSON-LD @context, so the JSON-LD document is compact (``dcat:Dataset``).
JSONLD_CONTEXT: dict[str, str] = {prefix: str(ns) for prefix, ns in _PREFIXES.items()}

#: The HVD implementing regulation (ELI).
HVD_LEGISLATION = URIRef("http://data.europa.eu/eli/reg_impl/2023/138/oj")

#: HVD categories by dataset id: "Earth observation and environment" (c_dd313021) with its
#: "Noise" (c_e4358335) and "Air" (c_63b37dd4) sub-categories (EU vocabulary "High-value
#: dataset categories", http://data.europa.eu/bna/asd487ae75).
HVD_CATEGORIES: dict[str, tuple[str, ...]] = {
    "bruit-horaire": ("c_dd313021", "c_e4358335"),
    "bruit-lden-journalier": ("c_dd313021", "c_e4358335"),
    "qualite-air-horaire": ("c_dd313021", "c_63b37dd4"),
}


@dataclass(frozen=True, slots=True)
class DistributionFormat:
    """An export format as a distribution describes it."""

    label: str
    #: IANA media type; None when none is registered (JSON Lines).
    media_type: str | None
    #: EU file-type authority code; None when the vocabulary has none.
    file_type: str | None
    #: The format's specification, for formats without a media type.
    conforms_to: str | None = None


#: The API's export formats (``/exports/<format>``), in the order they are listed.
DISTRIBUTION_FORMATS: dict[str, DistributionFormat] = {
    "csv": DistributionFormat("CSV", "text/csv", "CSV"),
    "json": DistributionFormat("JSON", "application/json", "JSON"),
    "jsonl": DistributionFormat("JSON Lines", None, None, "https://jsonlines.org/"),
    "geojson": DistributionFormat("GeoJSON", "application/geo+json", "GEOJSON"),
    "parquet": DistributionFormat("Parquet", "application/vnd.apache.parquet", "PARQUET"),
}


def catalog_graph(
    catalog: Catalog,
    settings: PublishSettings,
    public_url: str,
    *,
    hvd_categories: Mapping[str, Sequence[str]] = HVD_CATEGORIES,
) -> Graph:
    """The DCAT-AP description of ``catalog`` as served at ``public_url`` (no trailing slash).

    ``hvd_categories`` maps dataset ids to their HVD category codes; a dataset listed there is
    marked as a high-value dataset.
    """
    base = public_url.rstrip("/")
    api = f"{base}/api/explore/v2.1/"
    graph = Graph()
    for prefix, namespace in _PREFIXES.items():
        graph.bind(prefix, namespace)

    catalog_node = URIRef(f"{api}catalog/datasets")
    publisher = URIRef(f"{base}/#publisher")
    contact = URIRef(f"{base}/#contact-point")
    service = URIRef(f"{api}#data-service")
    default_licence = _licence(graph, LICENCES[settings.licence])

    graph.add((publisher, RDF.type, FOAF.Agent))
    graph.add((publisher, FOAF.name, Literal(settings.publisher)))
    graph.add((contact, RDF.type, VCARD.Kind))
    graph.add((contact, VCARD.fn, Literal(settings.publisher)))
    graph.add((contact, VCARD.hasEmail, URIRef(f"mailto:{settings.contact_email}")))

    graph.add((catalog_node, RDF.type, DCAT.Catalog))
    _texts(
        graph,
        catalog_node,
        DCTERMS.title,
        fr=f"Données ouvertes de {settings.publisher}",
        en=f"{settings.publisher} open data",
    )
    _texts(
        graph,
        catalog_node,
        DCTERMS.description,
        fr="Jeux de données calculés à partir des réseaux de capteurs de la ville : des "
        "indicateurs agrégés par fenêtre de temps, jamais de données individuelles.",
        en="Datasets computed from the city's sensor networks: indicators aggregated over time "
        "windows, never individual data.",
    )
    graph.add((catalog_node, DCTERMS.publisher, publisher))
    graph.add((catalog_node, DCAT.contactPoint, contact))
    graph.add((catalog_node, FOAF.homepage, URIRef(f"{base}/")))
    graph.add((catalog_node, DCTERMS.license, default_licence))
    graph.add((catalog_node, DCAT.themeTaxonomy, URIRef(_AUTHORITY + "data-theme")))
    for language in ("FRA", "ENG"):
        graph.add((catalog_node, DCTERMS.language, _LANGUAGE[language]))
    graph.add((catalog_node, DCAT.service, service))

    graph.add((service, RDF.type, DCAT.DataService))
    _texts(
        graph,
        service,
        DCTERMS.title,
        fr="API Explore v2.1 (compatible OpenDataSoft)",
        en="Explore API v2.1 (OpenDataSoft compatible)",
    )
    graph.add((service, DCAT.endpointURL, URIRef(api)))
    graph.add((service, DCAT.endpointDescription, URIRef(f"{base}/openapi.json")))
    graph.add((service, FOAF.page, URIRef(f"{base}/docs")))
    graph.add((service, DCTERMS.publisher, publisher))
    graph.add((service, DCAT.contactPoint, contact))
    graph.add((service, DCTERMS.license, default_licence))

    for dataset in catalog:
        node = URIRef(f"{api}catalog/datasets/{dataset.id}")
        graph.add((catalog_node, DCAT.dataset, node))
        graph.add((service, DCAT.servesDataset, node))
        licence = (
            default_licence
            if dataset.licence is None
            else _licence(graph, LICENCES[dataset.licence])
        )
        categories = [_HVD[code] for code in hvd_categories.get(dataset.id, ())]
        _dataset(graph, node, dataset, api, publisher, contact, service, licence, categories)
        for category in categories:
            graph.add((service, DCATAP.hvdCategory, category))
        if categories:
            # The catalogue is marked as soon as it holds one high-value dataset (the reading
            # of the DCAT-AP HVD annex discussed in SEMICeu/DCAT-AP issue 282).
            graph.add((service, DCATAP.applicableLegislation, HVD_LEGISLATION))
            graph.add((catalog_node, DCATAP.applicableLegislation, HVD_LEGISLATION))
    return graph


def _dataset(
    graph: Graph,
    node: URIRef,
    dataset: Dataset,
    api: str,
    publisher: URIRef,
    contact: URIRef,
    service: URIRef,
    licence: URIRef,
    hvd_categories: Sequence[URIRef],
) -> None:
    graph.add((node, RDF.type, DCAT.Dataset))
    graph.add((node, DCTERMS.identifier, Literal(dataset.id)))
    _texts(graph, node, DCTERMS.title, fr=dataset.title.fr, en=dataset.title.en)
    _texts(graph, node, DCTERMS.description, fr=dataset.description.fr, en=dataset.description.en)
    for keyword in dataset.keywords:
        graph.add((node, DCAT.keyword, Literal(keyword)))
    graph.add((node, DCAT.theme, _THEME[dataset.theme]))
    graph.add((node, DCTERMS.accrualPeriodicity, _FREQUENCY[dataset.frequency]))
    graph.add((node, DCTERMS.publisher, publisher))
    graph.add((node, DCAT.contactPoint, contact))
    for category in hvd_categories:
        graph.add((node, DCATAP.hvdCategory, category))
    if hvd_categories:
        graph.add((node, DCATAP.applicableLegislation, HVD_LEGISLATION))
    for name, fmt in DISTRIBUTION_FORMATS.items():
        distribution = URIRef(f"{node}#distribution-{name}")
        url = URIRef(f"{node}/exports/{name}")
        graph.add((node, DCAT.distribution, distribution))
        graph.add((distribution, RDF.type, DCAT.Distribution))
        _texts(
            graph,
            distribution,
            DCTERMS.title,
            fr=f"{dataset.title.fr} ({fmt.label})",
            en=f"{dataset.title.en} ({fmt.label})",
        )
        graph.add((distribution, DCAT.accessURL, url))
        graph.add((distribution, DCAT.downloadURL, url))
        graph.add((distribution, DCTERMS.license, licence))
        graph.add((distribution, DCAT.accessService, service))
        if fmt.media_type is not None:
            graph.add((distribution, DCAT.mediaType, URIRef(_IANA + fmt.media_type)))
        if fmt.file_type is not None:
            graph.add((distribution, DCTERMS.format, _FILE_TYPE[fmt.file_type]))
        if fmt.conforms_to is not None:
            graph.add((distribution, DCTERMS.conformsTo, URIRef(fmt.conforms_to)))
        if hvd_categories:
            graph.add((distribution, DCATAP.applicableLegislation, HVD_LEGISLATION))


def _licence(graph: Graph, licence: Licence) -> URIRef:
    node = URIRef(licence.url)
    graph.add((node, RDF.type, DCTERMS.LicenseDocument))
    graph.add((node, RDFS.label, Literal(licence.title)))
    graph.add((node, DCTERMS.identifier, Literal(licence.id)))
    return node


def _texts(graph: Graph, node: URIRef, predicate: URIRef, *, fr: str, en: str) -> None:
    graph.add((node, predicate, Literal(fr, lang="fr")))
    graph.add((node, predicate, Literal(en, lang="en")))
