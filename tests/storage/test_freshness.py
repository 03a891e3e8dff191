"""The freshness check a PostgreSQL worker shares among the requests waiting for it
(storage/freshness.py): never older than a request, one round trip per batch."""

from __future__ import annotations

import asyncio
from typing import Any

from openkeyvault.storage.db import open_database
from openkeyvault.storage.freshness import SharedCheck
from openkeyvault.storage.readcache import ACCESS, objects_domain
from openkeyvault.storage.records import RoleAssignmentRecord
from openkeyvault.storage.repository import Repository
from tests.support.postgres import PostgresCluster


def _assignment(n: int) -> RoleAssignmentRecord:
    return RoleAssignmentRecord(id=f"ra-fresh-{n}", principal_id=f"p-fresh-{n}",
                                role_definition_id="Key Vault Reader", scope="/", created=1)


def test_waiting_requests_share_a_check_and_none_is_older_than_its_request(
        postgres: PostgresCluster) -> None:
    url = postgres.create_database()
    engines = open_database(url)
    repo = Repository(engines)
    vault = repo.create_vault("freshvault", "vault", "standard", 90, False, 1).id
    check = SharedCheck(engines.read)
    reads: list[list[str]] = []
    read = check._read

    async def counted(names: list[str]) -> Any:
        reads.append(names)
        return await read(names)

    check._read = counted  # type: ignore[method-assign]

    async def scenario() -> None:
        # Ten requests at once: one read serves them all, with their vault's objects.
        found = await asyncio.gather(*(check.generations("freshvault") for _ in range(10)))
        assert len(reads) == 1 and reads[0] == ["freshvault"]
        assert all(f is found[0] for f in found)
        assert objects_domain(vault) in found[0]
        before = found[0][ACCESS]
        # A request that arrives after a write sees it, even while an earlier one waits.
        for n in range(5):
            earlier = asyncio.ensure_future(check.generations(None))
            await asyncio.sleep(0)  # the earlier request's read may be on its way
            repo.add_role_assignment(_assignment(n))  # committed before the next arrives
            later = await check.generations("freshvault")
            assert later[ACCESS] == before + n + 1
            await earlier
        await check.close()

    try:
        asyncio.run(scenario())
    finally:
        engines.dispose()
