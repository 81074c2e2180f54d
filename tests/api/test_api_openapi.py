"""/openapi.json: a valid OpenAPI 3.1 document describing every route, parameter and the record."""

from __future__ import annotations

import json
import re
from typing import Any

from api_support import Client

from pbx_bridge.engine.model import CallRecord
from pbx_bridge.store.model import CallFilter


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


async def _document(client: Client) -> dict[str, Any]:
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    return json.loads(await resp.text())  # strict JSON: no NaN, no trailing garbage


async def test_document_lists_every_route(client: Client) -> None:
    """Every /api/v1 route of the app is a documented path and method, and nothing else is."""
    doc = await _document(client)
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"] and doc["info"]["version"]
    served = set()
    for route in client.server.app.router.routes():
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.resource.canonical if route.resource else "")
        if path.startswith("/api/v1/") and route.method != "HEAD":
            served.add((path, route.method.lower()))
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert served == documented
    assert len(served) == 11


async def test_every_operation_is_complete(client: Client) -> None:
    """Each operation has an id, responses, documented path parameters and roles; every $ref resolves."""
    doc = await _document(client)
    schemas = doc["components"]["schemas"]
    assert all(ref.removeprefix("#/components/schemas/") in schemas for ref in _refs(doc))
    ids = set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            ids.add(op["operationId"])
            assert op["responses"] and op["summary"]
            in_path = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert in_path == set(re.findall(r"\{(\w+)\}", path)), (path, method)
            assert all(p["description"] and "schema" in p for p in op["parameters"])
            if not path.endswith("openapi.json"):
                assert op["security"] == [{"bearer": []}] and op["x-roles"]
                assert {"401", "403"} <= set(op["responses"])
    assert len(ids) == 11
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}


async def test_call_filters_are_documented(client: Client) -> None:
    """GET /calls documents every field of the store's CallFilter plus limit and offset."""
    doc = await _document(client)
    params = {p["name"]: p for p in doc["paths"]["/api/v1/calls"]["get"]["parameters"]}
    assert set(params) == set(CallFilter.__dataclass_fields__) | {"limit", "offset"}
    assert params["limit"]["schema"]["maximum"] == 1000
    assert "abandoned" in params["outcome"]["schema"]["enum"]


async def test_call_record_schema_matches_the_contract(client: Client, records: tuple[CallRecord, ...]) -> None:
    """The CallRecord schema has exactly the record's fields, and a real record fits its types."""
    doc = await _document(client)
    schema = doc["components"]["schemas"]["CallRecord"]
    record = records[0].to_dict()
    assert set(schema["properties"]) == set(record)
    assert set(schema["required"]) <= set(record)
    names = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}
    for record in (r.to_dict() for r in records):
        for key, value in record.items():
            kinds = schema["properties"][key]["type"]
            kinds = kinds if isinstance(kinds, list) else [kinds]
            ok = any(value is None if k == "null" else isinstance(value, names[k]) for k in kinds)
            assert ok, (key, value)
            if "enum" in schema["properties"][key]:
                assert value in schema["properties"][key]["enum"]
