"""The route's guard decides before the body is read and the domain service checks again
(vault/context.py `authorize`): the service's check of the very decision the guard made,
for the same request and Caller, is not made twice. It stays so while other requests
interleave (each request's task keeps its own), and a decision never stands in for
another request's, another caller's or another action's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from openkeyvault.access.authorize import Authorizer, RoleAssignment
from openkeyvault.access.principals import Principal
from openkeyvault.access.roles import BY_NAME
from openkeyvault.ops import requestscope
from openkeyvault.storage.records import VaultRecord
from openkeyvault.vault.context import Caller, authorize, reaffirm
from openkeyvault.vault.errors import Forbidden

READ = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
WRITE = "Microsoft.KeyVault/vaults/secrets/setSecret/action"
VAULT = VaultRecord(1, "v", "vault", "standard", 90, False, 0)
READER = Principal("reader", "t")


class Counted:
    """The authorizer's role look-ups, counted: one per decision made."""

    def __init__(self) -> None:
        self.lookups = 0
        role = BY_NAME["key vault secrets user"]
        self.assignments = [RoleAssignment(READER.object_id, role, "/vaults/v")]

    def __call__(self, object_id: str) -> Iterable[RoleAssignment]:
        self.lookups += 1
        return [a for a in self.assignments if a.principal_id == object_id]


@pytest.fixture
def counted() -> Counted:
    return Counted()


def test_the_services_check_of_the_guards_decision_is_not_made_again(counted: Counted
                                                                     ) -> None:
    authorizer, caller = Authorizer(counted), Caller(READER, VAULT)

    async def request() -> None:
        requestscope.begin()
        authorize(authorizer, caller, READ, "/secrets/s")  # the guard
        authorize(authorizer, caller, READ, "/secrets/s")  # the service
        assert counted.lookups == 1
        authorize(authorizer, caller, READ, "/secrets/other")  # another path: decided
        assert counted.lookups == 2
        with pytest.raises(Forbidden):
            authorize(authorizer, caller, WRITE, "/secrets/other")
        with pytest.raises(Forbidden):  # a refusal is decided each time
            authorize(authorizer, caller, WRITE, "/secrets/other")
        assert counted.lookups == 4
        authorize(authorizer, Caller(READER, VAULT), READ, "/secrets/other")  # another Caller
        assert counted.lookups == 5

    asyncio.run(request())


def test_interleaved_requests_keep_their_own_decision(counted: Counted) -> None:
    authorizer = Authorizer(counted)

    async def request(path: str, guarded: asyncio.Event, go: asyncio.Event) -> None:
        requestscope.begin()
        caller = Caller(READER, VAULT)
        authorize(authorizer, caller, READ, path)  # the guard, then the body is awaited
        guarded.set()
        await go.wait()
        authorize(authorizer, caller, READ, path)  # the service, after the other's guard

    async def both() -> None:
        a, b, go = asyncio.Event(), asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(request("/secrets/a", a, go))
        second = asyncio.create_task(request("/secrets/b", b, go))
        await a.wait()
        await b.wait()
        go.set()
        await asyncio.gather(first, second)

    asyncio.run(both())
    assert counted.lookups == 2  # one decision per request, none made twice


def test_a_reaffirmed_decision_holds_for_its_own_request_only(counted: Counted) -> None:
    authorizer, caller = Authorizer(counted), Caller(READER, VAULT)

    async def reaffirmed() -> None:
        requestscope.begin()
        reaffirm(caller, WRITE, "/secrets/s", None)  # as the pipeline's memo of an admission
        authorize(authorizer, caller, WRITE, "/secrets/s", None)
        assert counted.lookups == 0
        requestscope.begin()  # the next request: decided, and refused
        with pytest.raises(Forbidden):
            authorize(authorizer, caller, WRITE, "/secrets/s", None)

    asyncio.run(reaffirmed())
    # Outside a request nothing is reused, nor kept.
    reaffirm(caller, WRITE, "/secrets/s", None)
    with pytest.raises(Forbidden):
        authorize(authorizer, caller, WRITE, "/secrets/s", None)
