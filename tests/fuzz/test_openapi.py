"""Property-based fuzzing of the data plane, driven by Azure's own OpenAPI definitions.

Every operation of the secrets, keys, certificates and RBAC specifications is called with
requests generated from its schema: valid ones and deliberately invalid ones (wrong types,
missing fields, out-of-range values). The server must never answer 5xx, and the answers
must conform to the specification's responses. Path names are steered to objects that
exist, so the generated bodies reach the handlers rather than stopping at a 404.

Generation is seeded (derandomized) and bounded: `OKV_FUZZ_EXAMPLES` cases per operation
(default 25). A failure prints the request that reproduces it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.fuzz.instances import maximal
from tests.support.server import DevServer, running

SPECS = Path(__file__).parent / "specs"
EXAMPLES = int(os.environ.get("OKV_FUZZ_EXAMPLES", "25"))
API_VERSIONS = ("7.5", "7.6", "2025-07-01")

# Names of objects the fixture keeps in place; generated paths are steered to them.
SEEDS = {
    "secret-name": ["fuzz-secret"],
    "key-name": ["fuzz-rsa", "fuzz-ec", "fuzz-cert"],
    "certificate-name": ["fuzz-cert"],
    "issuer-name": ["fuzz-issuer"],
    "scope": ["/", "/keys", "/secrets", "/keys/fuzz-rsa"],
}


def _as_served(spec: dict[str, Any]) -> dict[str, Any]:
    """The specification as the service answers on the wire, where the two differ.

    - Key Vault writes `"nextLink": null` on the last page; the definitions say string.
    - The RBAC definitions enumerate Managed HSM data actions only; a vault's role
      definitions carry vault data actions (`Microsoft.KeyVault/vaults/...`).
    """
    for definition in spec["definitions"].values():
        link = definition.get("properties", {}).get("nextLink")
        if link is not None:
            link["x-nullable"] = True
    spec["definitions"].get("DataAction", {}).pop("enum", None)
    return spec


def _operations() -> list[Any]:
    ops = []
    for spec in ("secrets", "keys", "certificates", "rbac"):
        raw = json.loads((SPECS / f"{spec}.json").read_text())
        schema = schemathesis.openapi.from_dict(_as_served(raw))
        ops += [result.ok() for result in schema.get_all_operations()]
    return ops


OPERATIONS = _operations()


class Vault:
    """A dev server with a token for its default vault, and the seeded objects."""

    def __init__(self, server: DevServer) -> None:
        self.server = server
        self.base = server.url
        self.session = requests.Session()
        self.session.verify = server.ca
        token = self.session.get(
            f"{self.base}/msi/token",
            params={"resource": f"https://vault.localhost:{server.port}"},
            headers={"X-IDENTITY-HEADER": server.env["IDENTITY_HEADER"]}, timeout=30,
            verify=server.ca,
        ).json()["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.session.request(method, f"{self.base}{path}", params={"api-version": "7.6"},
                                    json=body, headers=self.headers, timeout=60,
                                    verify=self.server.ca)

    def ensure_seeds(self) -> None:
        """Put back what earlier cases deleted or disabled (idempotent)."""
        self.call("PUT", "/secrets/fuzz-secret", {"value": "fuzz"})
        for name, body in (("fuzz-rsa", {"kty": "RSA", "key_size": 2048}),
                           ("fuzz-ec", {"kty": "EC", "crv": "P-256"})):
            self._ensure(f"/keys/{name}", f"/deletedkeys/{name}",
                         lambda n=name, b=body: self.call("POST", f"/keys/{n}/create", b))
        self._ensure("/certificates/fuzz-cert", "/deletedcertificates/fuzz-cert",
                     lambda: self.call("POST", "/certificates/fuzz-cert/create", {"policy": {
                         "x509_props": {"subject": "CN=fuzz"},
                         "issuer": {"name": "Self"}}}))
        self.call("PUT", "/certificates/issuers/fuzz-issuer", {"provider": "Test"})

    def _ensure(self, live: str, deleted: str, create: Any) -> None:
        if self.call("GET", live).status_code == 404 \
                and self.call("POST", f"{deleted}/recover").status_code != 200:
            self.call("DELETE", deleted)
            create()
        self.call("PATCH", live, {"attributes": {"enabled": True}})


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    with running(tmp_path_factory.mktemp("fuzz") / "data") as server:
        v = Vault(server)
        v.ensure_seeds()
        yield v


def _reproduce(case: Any, response: requests.Response) -> str:
    request = response.request
    body = request.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return (f"\nrequest: {request.method} {request.url}\nbody: {str(body)[:2000]}\n"
            f"answer: {response.status_code} {response.text[:1000]}")


# Values of every JSON type, for swapping into a valid body where another type belongs.
CONFUSERS = ({"x": 1}, [1], [], {}, 2**64, -1, 1.5, "", "x", True, False, None)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value (dict keys and list indexes), depth first."""
    out: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        out.append((*prefix, key))
        out += _paths(child, (*prefix, key))
    return out


@st.composite
def _confused(draw: Any, body: Any) -> Any:
    """`body` with one place given a value of another JSON type: the mutation that finds
    hand-walked request bodies (a dict where a string was expected, and so on)."""
    places = _paths(body)
    if not places:
        return body
    place = draw(st.sampled_from(places))
    body = json.loads(json.dumps(body))
    parent = body
    for key in place[:-1]:
        parent = parent[key]
    parent[place[-1]] = draw(st.sampled_from(CONFUSERS))
    return body


@st.composite
def _cases(draw: Any, operation: Any) -> Any:
    mode = draw(st.sampled_from((GenerationMode.POSITIVE, GenerationMode.NEGATIVE, None)))
    case = draw(operation.as_strategy(generation_mode=mode or GenerationMode.POSITIVE))
    if mode is None and isinstance(case.body, (dict, list)):
        case.body = draw(_confused(case.body))
    return case


def _strategy(operation: Any) -> Any:
    steer = {name: st.one_of(st.none(), st.sampled_from(values))
             for name, values in SEEDS.items()}
    return st.tuples(_cases(operation), st.fixed_dictionaries(steer),
                     st.sampled_from(API_VERSIONS))


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_no_server_error_and_conforming_answers(vault: Vault, operation: Any) -> None:
    vault.ensure_seeds()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(_strategy(operation))
    def run(drawn: tuple[Any, dict[str, str | None], str]) -> None:
        case, steer, api_version = drawn
        params = dict(case.path_parameters or {})
        for name, value in steer.items():
            if name in params and value is not None:
                params[name] = value
        case.path_parameters = params
        case.query = {**(case.query or {}), "api-version": api_version}
        response = case.call(base_url=vault.base, session=vault.session, timeout=60,
                             headers=vault.headers, verify=vault.server.ca)
        assert response.status_code < 500, "server error" + _reproduce(case, response)
        if response.status_code >= 400:
            body = response.json()
            assert isinstance(body.get("error"), dict) and body["error"].get("code"), \
                "error without a Key Vault error body" + _reproduce(case, response)
        try:
            case.validate_response(response, checks=[response_schema_conformance])
        except Exception as exc:  # schemathesis raises a group of check failures
            raise AssertionError(f"{exc}{_reproduce(case, response)}") from None

    run()


def test_the_specs_are_complete() -> None:
    """The copies carry every path of the four specifications (a truncated copy would
    silently shrink the fuzzing)."""
    counts = {}
    for spec in ("secrets", "keys", "certificates", "rbac"):
        counts[spec] = len(json.loads((SPECS / f"{spec}.json").read_text())["paths"])
    assert counts == {"secrets": 9, "keys": 21, "certificates": 17, "rbac": 4}
    assert len(OPERATIONS) == 72


# ---- type confusion: every place of a full body, given a value of another type --------
SWEEP_VARIANTS = 3
SWEEP_VALUES = ({"x": 1}, [1], 2**64, "x", True, None)


def _body_operations() -> list[tuple[str, str, str, dict[str, Any], dict[str, Any]]]:
    """(spec, method, path, body schema, spec) for every operation that takes a body."""
    out = []
    for name in ("secrets", "keys", "certificates", "rbac"):
        spec = _as_served(json.loads((SPECS / f"{name}.json").read_text()))
        for path, item in spec["paths"].items():
            for method, op in item.items():
                if method == "parameters":
                    continue
                body = [p for p in op.get("parameters", []) if p.get("in") == "body"]
                if body:
                    out.append((name, method.upper(), path, body[0]["schema"], spec))
    return out


BODY_OPERATIONS = _body_operations()


def _concrete(path: str) -> str:
    """A path template with its parameters filled in with seeded names."""
    for name, values in SEEDS.items():
        path = path.replace("{" + name + "}", values[0].strip("/") if name == "scope"
                            else values[0])
    path = path.replace("{roleAssignmentName}", "00000000-0000-0000-0000-0000000000f1")
    path = path.replace("{roleDefinitionName}", "00000000-0000-0000-0000-0000000000f2")
    return "/" + "/".join(seg for seg in path.split("/") if seg and "{" not in seg)


@pytest.mark.parametrize("spec_name,method,path,schema,spec", BODY_OPERATIONS,
                         ids=[f"{m} {p}" for _, m, p, _, _ in BODY_OPERATIONS])
def test_type_confusion_sweep(vault: Vault, spec_name: str, method: str, path: str,
                              schema: dict[str, Any], spec: dict[str, Any]) -> None:
    """A full body of each operation with each place swapped for each JSON type: never 5xx,
    always a Key Vault error body on refusal."""
    vault.ensure_seeds()
    url = _concrete(path)
    faults: list[str] = []
    for variant in range(SWEEP_VARIANTS):
        body = maximal(schema, spec, variant)
        for place in [(), *_paths(body)]:
            for value in SWEEP_VALUES:
                mutated = json.loads(json.dumps(body))
                if place:
                    parent = mutated
                    for key in place[:-1]:
                        parent = parent[key]
                    parent[place[-1]] = value
                else:
                    mutated = value
                response = vault.call(method, url, mutated)
                where = "/".join(str(p) for p in place) or "(the body)"
                context = (f"\nrequest: {method} {url} with {where} = {json.dumps(value)}"
                           f"\nbody: {json.dumps(mutated)[:2000]}"
                           f"\nanswer: {response.status_code} {response.text[:500]}")
                if response.status_code >= 500:
                    faults.append("server error" + context)
                elif response.status_code >= 400:
                    error = response.json().get("error")
                    if not (isinstance(error, dict) and error.get("code")):
                        faults.append("error without a Key Vault error body" + context)
    assert not faults, f"{len(faults)} faulty answers:\n" + "\n".join(faults[:10])
