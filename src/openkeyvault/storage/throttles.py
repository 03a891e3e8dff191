"""What throttling keeps in storage: which nodes are live, and each vault's own scale.

A node is live while its heartbeat lease (a row of `leases`, named after the node and
renewed by each of its workers every few seconds) has not expired by the database's
clock; ops/throttle.py gives each live node an equal share of a vault's limits.

A vault's scale (`okv vault throttle`) is a row of `meta` keyed `throttle:NAME`: a handful
of rows that every node reads whole on each refresh, so it needs no table of its own.
Its value is the multiplier of the vault's limits, or `off`. The key carries the name,
not the vault's id: the setting outlives the vault's deletion and applies to a new vault
of the same name until it is reset.
"""

from __future__ import annotations

import hashlib
import math

from sqlalchemy import BigInteger, delete, func, literal_column, select

from openkeyvault.storage.db import Engines
from openkeyvault.storage.leases import _NOW_MS, LeaseStore
from openkeyvault.storage.schema import leases, meta
from openkeyvault.storage.store import Store, insert_ignore

NODE_PREFIX = "throttle-node:"
SCALE_PREFIX = "throttle:"
OFF = "off"


class ThrottleStore(Store):
    def __init__(self, engines: Engines) -> None:
        super().__init__(engines)
        self._leases = LeaseStore(engines)
        now = literal_column(_NOW_MS[engines.dialect], BigInteger)
        self._count = select(func.count()).select_from(leases).where(
            leases.c.name.startswith(NODE_PREFIX, autoescape=True), leases.c.expires > now)
        self._scales = select(meta.c.key, meta.c.value).where(
            meta.c.key.startswith(SCALE_PREFIX, autoescape=True))

    # ---- nodes --------------------------------------------------------------------
    def heartbeat(self, node: str, ttl: float) -> None:
        """Mark `node` live for `ttl` seconds (every worker of the node renews the same row)."""
        name = NODE_PREFIX + hashlib.blake2b(node.encode(), digest_size=16).hexdigest()
        self._leases.acquire(name, node[:200], ttl)

    def live_nodes(self) -> int:
        with self._r.connect() as c:
            return int(c.execute(self._count).scalar() or 0)

    # ---- vaults -------------------------------------------------------------------
    def vault_scales(self) -> dict[str, float | None]:
        """Each vault with a scale of its own: the multiplier, None for `off`."""
        with self._r.connect() as c:
            rows = c.execute(self._scales).all()
        scales: dict[str, float | None] = {}
        for key, value in rows:
            parsed = parse_scale(value)
            if parsed is not False:
                scales[key.removeprefix(SCALE_PREFIX)] = parsed
        return scales

    def set_vault_scale(self, name: str, scale: float | None) -> None:
        """Give vault `name` (lower case) its own scale; None: not throttled."""
        value = OFF if scale is None else repr(float(scale))
        key = SCALE_PREFIX + name
        with self._write() as c:
            if not insert_ignore(c, meta, {"key": key, "value": value}):
                c.execute(meta.update().where(meta.c.key == key).values(value=value))

    def reset_vault_scale(self, name: str) -> None:
        """Back to the deployment's limits."""
        with self._write() as c:
            c.execute(delete(meta).where(meta.c.key == SCALE_PREFIX + name))


def parse_scale(value: str) -> float | None | bool:
    """A stored or given scale: a positive finite number, None for `off`, False if it is
    neither."""
    if value.strip().lower() == OFF:
        return None
    try:
        scale = float(value)
    except ValueError:
        return False
    return scale if math.isfinite(scale) and scale > 0 else False
