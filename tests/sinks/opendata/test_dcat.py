"""The DCAT-AP catalogue: its triples (every dataset, both languages, a licence on every
distribution, the access service, the high-value-dataset markers) read back from each
serialisation the route serves."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool
from rdflib import RDF, Graph, Literal, URIRef
from rdflib.compare import isomorphic
from rdflib.namespace import DCAT, DCTERMS, FOAF
from rdflib.term import Node

from citysense.settings import PublishSettings
from sinks.opendata._catalog import LICENCES, Catalog, Dataset, DatasetField, LocalizedText
from sinks.opendata._dcat import DCATAP, HVD_LEGISLATION, VCARD, catalog_graph
from sinks.opendata._routes_linked import router
from sinks.opendata._state import ApiError, Publication

PUBLIC_URL = "https://data.ville.test"
API = f"{PUBLIC_URL}/api/explore/v2.1/"
SETTINGS = PublishSettings(publisher="Ville de Test", contact_email="opendata@ville.test")
FORMATS = ("csv", "json", "jsonl", "geojson", "parquet")
ETALAB = URIRef("https://www.etalab.gouv.fr/licence-ouverte-open-licence/")
ODBL = URIRef("https://opendatacommons.org/licenses/odbl/1-0/")
ENVIRONMENT = URIRef("http://data.europa.eu/bna/c_dd313021")


def _dataset(dataset_id: str, view: str, **extra: object) -> Dataset:
    return Dataset.model_validate(
        {
            "id": dataset_id,
            "view": view,
            "title": LocalizedText(fr=f"Titre {dataset_id}", en=f"Title {dataset_id}"),
            "description": LocalizedText(fr=f"Décrit {dataset_id}", en=f"Describes {dataset_id}"),
            "fields": (
                DatasetField(name="site_id", type="text", label=LocalizedText(fr="s", en="s")),
            ),
            **extra,
        }
    )


CATALOG = Catalog(
    [
        _dataset("bruit-horaire", "noise_hourly", keywords=("bruit", "noise")),
        _dataset("bruit-lden-journalier", "noise_daily", frequency="DAILY"),
        _dataset("qualite-air-horaire", "air_hourly"),
        _dataset("comptage-horaire-par-mode", "counts_hourly", theme="TRAN", licence="odbl-1.0"),
        _dataset("affluence-piscine-temps-reel", "pool_now", theme="SOCI", frequency="CONT"),
    ]
)
HIGH_VALUE = {"bruit-horaire", "bruit-lden-journalier", "qualite-air-horaire"}


def node(dataset_id: str) -> URIRef:
    return URIRef(f"{API}catalog/datasets/{dataset_id}")


@pytest.fixture(scope="module")
def graph() -> Graph:
    return catalog_graph(CATALOG, SETTINGS, PUBLIC_URL)


def _only(graph: Graph, subject: Node, predicate: URIRef) -> Node:
    (value,) = graph.objects(subject, predicate)
    return value


def _languages(graph: Graph, subject: Node, predicate: URIRef) -> set[str | None]:
    return {
        value.language if isinstance(value, Literal) else None
        for value in graph.objects(subject, predicate)
    }


def _parse(data: str | bytes, serialisation: str) -> Graph:
    """A serialisation read back. rdflib 7.6's JSON-LD parser builds a ``ConjunctiveGraph``
    internally, which warns that the class is deprecated: that one warning is let through."""
    graph = Graph()
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "ConjunctiveGraph is deprecated", category=DeprecationWarning
        )
        graph.parse(data=data, format=serialisation)
    return graph


def test_every_dataset_is_in_the_catalogue_with_titles_and_descriptions_in_both_languages(
    graph: Graph,
) -> None:
    (catalog,) = graph.subjects(RDF.type, DCAT.Catalog)
    assert set(graph.objects(catalog, DCAT.dataset)) == {node(d.id) for d in CATALOG}
    for dataset in CATALOG:
        subject = node(dataset.id)
        assert (subject, RDF.type, DCAT.Dataset) in graph
        assert _only(graph, subject, DCTERMS.identifier) == Literal(dataset.id)
        for predicate, text in (
            (DCTERMS.title, dataset.title),
            (DCTERMS.description, dataset.description),
        ):
            assert set(graph.objects(subject, predicate)) == {
                Literal(text.fr, lang="fr"),
                Literal(text.en, lang="en"),
            }
    assert _languages(graph, catalog, DCTERMS.title) == {"fr", "en"}


def test_theme_frequency_keywords_publisher_and_contact_point(graph: Graph) -> None:
    authority = "http://publications.europa.eu/resource/authority/"
    noise, pools = node("bruit-horaire"), node("affluence-piscine-temps-reel")
    assert _only(graph, noise, DCAT.theme) == URIRef(authority + "data-theme/ENVI")
    assert _only(graph, noise, DCTERMS.accrualPeriodicity) == URIRef(authority + "frequency/HOURLY")
    assert _only(graph, pools, DCAT.theme) == URIRef(authority + "data-theme/SOCI")
    assert _only(graph, pools, DCTERMS.accrualPeriodicity) == URIRef(authority + "frequency/CONT")
    assert set(graph.objects(noise, DCAT.keyword)) == {Literal("bruit"), Literal("noise")}
    for dataset in CATALOG:
        publisher = _only(graph, node(dataset.id), DCTERMS.publisher)
        assert (publisher, RDF.type, FOAF.Agent) in graph
        assert _only(graph, publisher, FOAF.name) == Literal("Ville de Test")
        contact = _only(graph, node(dataset.id), DCAT.contactPoint)
        assert (contact, RDF.type, VCARD.Kind) in graph
        assert _only(graph, contact, VCARD.hasEmail) == URIRef("mailto:opendata@ville.test")


def test_one_distribution_per_export_format_each_with_its_licence(graph: Graph) -> None:
    service = URIRef(f"{API}#data-service")
    iana = "https://www.iana.org/assignments/media-types/"
    for dataset in CATALOG:
        distributions = list(graph.objects(node(dataset.id), DCAT.distribution))
        by_url = {_only(graph, d, DCAT.downloadURL): d for d in distributions}
        expected = {URIRef(f"{API}catalog/datasets/{dataset.id}/exports/{f}") for f in FORMATS}
        assert set(by_url) == expected
        # The licence: the dataset's own (ODbL for the counts), else the catalogue's (Etalab).
        licence = ODBL if dataset.licence == "odbl-1.0" else ETALAB
        for url, distribution in by_url.items():
            assert (distribution, RDF.type, DCAT.Distribution) in graph
            assert _only(graph, distribution, DCTERMS.license) == licence
            assert _only(graph, distribution, DCAT.accessURL) == url
            assert _only(graph, distribution, DCAT.accessService) == service
            assert _languages(graph, distribution, DCTERMS.title) == {"fr", "en"}
        media = {
            str(url).rsplit("/", 1)[1]: set(graph.objects(d, DCAT.mediaType))
            for url, d in by_url.items()
        }
        assert media == {
            "csv": {URIRef(iana + "text/csv")},
            "json": {URIRef(iana + "application/json")},
            # JSON Lines has no IANA registration: no media type rather than an invented one.
            "jsonl": set(),
            "geojson": {URIRef(iana + "application/geo+json")},
            "parquet": {URIRef(iana + "application/vnd.apache.parquet")},
        }
    assert (ODBL, RDF.type, DCTERMS.LicenseDocument) in graph
    assert (ETALAB, RDF.type, DCTERMS.LicenseDocument) in graph


def test_the_api_is_the_access_service_serving_every_dataset(graph: Graph) -> None:
    (service,) = graph.subjects(RDF.type, DCAT.DataService)
    assert _only(graph, service, DCAT.endpointURL) == URIRef(API)
    assert _only(graph, service, DCAT.endpointDescription) == URIRef(f"{PUBLIC_URL}/openapi.json")
    assert _only(graph, service, FOAF.page) == URIRef(f"{PUBLIC_URL}/docs")
    assert set(graph.objects(service, DCAT.servesDataset)) == {node(d.id) for d in CATALOG}
    (catalog,) = graph.subjects(RDF.type, DCAT.Catalog)
    assert _only(graph, catalog, DCAT.service) == service


def test_noise_and_air_carry_the_high_value_dataset_markers_and_only_they(graph: Graph) -> None:
    noise_category = URIRef("http://data.europa.eu/bna/c_e4358335")
    air_category = URIRef("http://data.europa.eu/bna/c_63b37dd4")
    for dataset in CATALOG:
        subject = node(dataset.id)
        legislation = set(graph.objects(subject, DCATAP.applicableLegislation))
        categories = set(graph.objects(subject, DCATAP.hvdCategory))
        distributions = list(graph.objects(subject, DCAT.distribution))
        if dataset.id in HIGH_VALUE:
            assert legislation == {URIRef("http://data.europa.eu/eli/reg_impl/2023/138/oj")}
            assert ENVIRONMENT in categories
            assert (noise_category if "bruit" in dataset.id else air_category) in categories
            for distribution in distributions:
                assert (distribution, DCATAP.applicableLegislation, HVD_LEGISLATION) in graph
        else:
            assert legislation == categories == set()
            for distribution in distributions:
                assert (distribution, DCATAP.applicableLegislation, None) not in graph
    (service,) = graph.subjects(RDF.type, DCAT.DataService)
    assert (service, DCATAP.applicableLegislation, HVD_LEGISLATION) in graph
    assert set(graph.objects(service, DCATAP.hvdCategory)) == {
        ENVIRONMENT,
        noise_category,
        air_category,
    }
    (catalog,) = graph.subjects(RDF.type, DCAT.Catalog)
    assert (catalog, DCATAP.applicableLegislation, HVD_LEGISLATION) in graph
    # The prefix DCAT-AP uses; a typo in the namespace would leave the markers unrecognised.
    assert str(DCATAP.hvdCategory) == "http://data.europa.eu/r5r/hvdCategory"


def test_without_high_value_datasets_nothing_claims_the_regulation() -> None:
    graph = catalog_graph(CATALOG, SETTINGS, PUBLIC_URL, hvd_categories={})
    assert (None, DCATAP.applicableLegislation, None) not in graph
    assert (None, DCATAP.hvdCategory, None) not in graph


def test_the_catalogue_licence_follows_the_settings() -> None:
    graph = catalog_graph(CATALOG, SETTINGS.model_copy(update={"licence": "odbl-1.0"}), PUBLIC_URL)
    for distribution in graph.objects(node("bruit-horaire"), DCAT.distribution):
        assert _only(graph, distribution, DCTERMS.license) == URIRef(LICENCES["odbl-1.0"].url)


@pytest.mark.parametrize("serializer", ["turtle", "json-ld", "xml"])
def test_each_serialisation_reads_back_as_the_same_graph(graph: Graph, serializer: str) -> None:
    text = graph.serialize(format=serializer)
    assert isomorphic(_parse(text, serializer), graph)


# --- routes -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The router in a bare app; ApiError rendered as the application renders it. The DCAT
    routes never query, so the pool is never opened."""
    app = FastAPI()
    app.include_router(router)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    pool: AsyncConnectionPool = AsyncConnectionPool("", open=False)
    app.state.publication = Publication(
        settings=SETTINGS, catalog=CATALOG, pool=pool, public_url=PUBLIC_URL
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


DCAT_PATH = "/api/explore/v2.1/catalog/exports/dcat"


@pytest.mark.parametrize(
    ("path", "accept", "media_type", "parser"),
    [
        (DCAT_PATH, None, "text/turtle", "turtle"),
        (DCAT_PATH, "text/html,*/*;q=0.8", "text/turtle", "turtle"),
        (DCAT_PATH, "application/ld+json", "application/ld+json", "json-ld"),
        (DCAT_PATH, "application/rdf+xml, text/turtle;q=0.5", "application/rdf+xml", "xml"),
        (DCAT_PATH, "image/png", "text/turtle", "turtle"),
        (DCAT_PATH + "?format=jsonld", "text/turtle", "application/ld+json", "json-ld"),
        (DCAT_PATH + "?format=rdfxml", None, "application/rdf+xml", "xml"),
        (DCAT_PATH + "?format=turtle", "application/ld+json", "text/turtle", "turtle"),
        ("/api/explore/v2.1/catalog/exports/ttl", None, "text/turtle", "turtle"),
        ("/api/explore/v2.1/catalog/exports/rdf", None, "application/rdf+xml", "xml"),
    ],
)
async def test_the_route_negotiates_the_serialisation(
    client: httpx.AsyncClient,
    graph: Graph,
    path: str,
    accept: str | None,
    media_type: str,
    parser: str,
) -> None:
    headers = {} if accept is None else {"Accept": accept}
    response = await client.get(path, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type
    assert isomorphic(_parse(response.content, parser), graph)


async def test_an_unknown_format_is_a_clear_400(client: httpx.AsyncClient) -> None:
    response = await client.get(DCAT_PATH + "?format=n3")
    assert response.status_code == 400
    body = response.json()
    assert body["error_code"] == "InvalidRESTParameterError"
    assert "'n3'" in body["message"]
    assert "turtle, jsonld, rdfxml" in body["message"]


async def test_json_ld_is_compacted_with_the_dcat_prefixes(client: httpx.AsyncClient) -> None:
    document = (await client.get(DCAT_PATH + "?format=jsonld")).json()
    assert document["@context"]["dcat"] == "http://www.w3.org/ns/dcat#"
    types = {node.get("@type") for node in document["@graph"]}
    assert {"dcat:Catalog", "dcat:Dataset", "dcat:Distribution", "dcat:DataService"} <= types
    turtle = (await client.get(DCAT_PATH)).text
    assert "@prefix dcatap: <http://data.europa.eu/r5r/> ." in turtle
