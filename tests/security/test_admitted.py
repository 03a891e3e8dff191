"""A request repeated by the same client (the same host, token, method and path) is admitted
from what the server decided for the previous one (api/admitted.py), for as long as storage
is unchanged. What storage does not hold is still checked every time: the token's expiry.

Revocations (a role, an access policy, a principal removed), which storage holds, apply
from the next request: see test_role_assignments.py, test_access_policies.py,
test_deleted_principals.py and test_network_rules.py, whose repeated requests go the
same way. This module moves its own server's clock by a day.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from openkeyvault.access.tokens import LIFETIME_SECONDS, SKEW_SECONDS
from tests.security.conftest import Rest
from tests.security.test_tokens import assert_challenge
from tests.support.server import DevServer, running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """This module's own server: its clock moves past a token's lifetime."""
    with running(tmp_path_factory.mktemp("okv-admitted") / "data") as s:
        yield s


def _advance(server: DevServer, seconds: int) -> None:
    r = requests.post(f"{server.url}/_okv/dev/clock", verify=server.ca, timeout=60,
                      headers={"X-IDENTITY-HEADER": server.env["IDENTITY_HEADER"]},
                      json={"advanceSeconds": seconds})
    assert r.status_code == 200, r.text


def test_a_repeated_request_stops_at_its_tokens_expiry(server: DevServer) -> None:
    rest = Rest(server)
    token = rest.token
    assert rest.call("PUT", "/secrets/held", json={"value": "v"}).status_code == 200
    for _ in range(3):  # the same request, again and again: admitted as before
        r = rest.call("GET", "/secrets/held")
        assert r.status_code == 200 and r.json()["value"] == "v"

    _advance(server, LIFETIME_SECONDS + SKEW_SECONDS - 60)  # a minute before the end
    assert rest.call("GET", "/secrets/held").status_code == 200
    _advance(server, 61)  # a second past it: nothing in storage changed
    message = assert_challenge(rest.call("GET", "/secrets/held"), server, token)
    assert message == "AKV10032: The access token has expired."
    r = rest.call("GET", "/secrets/held", token=Rest(server).token)  # a new token
    assert r.status_code == 200 and r.json()["value"] == "v"
