"""Faults of the database reach clients as 503 with Retry-After, never as 500."""

from __future__ import annotations

from sqlalchemy.exc import TimeoutError as PoolTimeout

from openkeyvault.api.errors import map_fault, storage_fault
from openkeyvault.storage.errors import StorageUnavailable


def test_an_exhausted_connection_pool_is_a_503() -> None:
    try:
        try:
            raise PoolTimeout("QueuePool limit of size 8 overflow 16 reached")
        except PoolTimeout as inner:
            raise ValueError("while reading a vault") from inner
    except ValueError as exc:
        fault = storage_fault(exc)
    assert isinstance(fault, StorageUnavailable)
    status, body, headers = map_fault(fault)
    assert status == 503 and headers["Retry-After"].isdigit()
    assert "QueuePool" not in str(body)
