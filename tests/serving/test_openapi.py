"""/openapi.json documents what the server really returns: real replies, successes and
refusals, are checked against the schemas the document gives for their status."""

from __future__ import annotations

import numpy as np
import pytest
from live_server import learnable_images, png

TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict, "null": type(None)}


NOISE_PNG = png(np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8))


def check(value, schema: dict, document: dict, where: str = "$") -> None:
    """A small JSON Schema check (the parts FastAPI emits): $ref, anyOf, type, required,
    properties (no others allowed), items."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        check(value, document["components"]["schemas"][name], document, where)
        return
    if "anyOf" in schema:
        failures = []
        for option in schema["anyOf"]:
            try:
                check(value, option, document, where)
                return
            except AssertionError as error:
                failures.append(str(error))
        raise AssertionError(f"{where}: matches none of {failures}")
    if "type" in schema:
        expected = TYPES[schema["type"]]
        assert isinstance(value, expected) and not (schema["type"] in ("integer", "number") and isinstance(value, bool)), (
            f"{where}: {value!r} is not {schema['type']}"
        )
    if isinstance(value, dict) and "properties" in schema:
        missing = set(schema.get("required", ())) - set(value)
        assert not missing, f"{where}: missing {sorted(missing)}"
        extra = set(value) - set(schema["properties"])
        assert not extra, f"{where}: undocumented {sorted(extra)}"
        for key, item in value.items():
            check(item, schema["properties"][key], document, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            check(item, schema["items"], document, f"{where}[{index}]")


def reply_schema(document: dict, path: str, method: str, status: int) -> dict:
    responses = document["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path}: status {status} is not documented ({sorted(responses)})"
    return responses[str(status)]["content"]["application/json"]["schema"]


@pytest.fixture(scope="module")
def document(server) -> dict:
    return server.request("GET", "/openapi.json").json()


def test_success_replies_match_their_schemas(server, document, tiny_run):
    """Before: every response schema was empty ({}), so nothing could be checked."""
    images, _ = learnable_images(tiny_run)
    blank = png(images[0] * 0 + 255)  # a single-colour image: a prediction with warnings
    reply = server.predict([("file", "a.png", png(images[0])), ("file", "b.png", blank)], "?preview=1&top_k=3")
    check(reply.json(), reply_schema(document, "/v1/predict", "post", 200), document)
    assert any("warnings" in prediction for prediction in reply.json()["predictions"])
    check(server.request("GET", "/v1/model").json(), reply_schema(document, "/v1/model", "get", 200), document)
    check(server.request("GET", "/healthz").json(), reply_schema(document, "/healthz", "get", 200), document)
    check(server.request("GET", "/readyz").json(), reply_schema(document, "/readyz", "get", 200), document)
    for schema in (reply_schema(document, "/v1/predict", "post", 200), reply_schema(document, "/v1/model", "get", 200)):
        assert schema != {}


@pytest.mark.parametrize(
    ("files", "query", "status"),
    [
        ([("file", "a.txt", b"text")], "", 415),
        ([("image", "a.png", b"x")], "", 422),
        ([("file", "a.png", NOISE_PNG[: len(NOISE_PNG) // 2])], "", 422),  # truncated
        ([("file", "a.png", b"")], "", 400),
        ([("file", f"{index}.png", b"x") for index in range(5)], "", 413),
        ([("file", "a.png", b"x")], "?top_k=0", 422),
    ],
    ids=["not-an-image", "wrong-field", "corrupt", "empty", "too-many", "bad-query"],
)
def test_refusals_match_the_documented_error_shape(server, document, files, query, status):
    """Before: 422 was documented as FastAPI's {"detail": [...]}, not the {"error", "fix"} sent."""
    reply = server.predict(files, query)
    assert reply.status == status, reply.body
    check(reply.json(), reply_schema(document, "/v1/predict", "post", status), document)
    assert set(reply.json()) == {"error", "fix"}
