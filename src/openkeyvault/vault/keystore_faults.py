"""What a keystore raises, as the API says it (shared by keys and certificates, whose keys
are key versions served from a keystore), and the cache ids of a key's versions."""

from __future__ import annotations

import logging

from openkeyvault.keystore.base import KeyStoreUnavailable
from openkeyvault.vault.errors import BadParameter, Unavailable

log = logging.getLogger("openkeyvault.keys")


def cache_prefix(vault_id: int, name_lc: str) -> str:
    """What the keystore cache ids of a key's versions start with."""
    return f"{vault_id}/{name_lc}/"


class keystore_faults:  # noqa: N801 - used as a `with` block, like contextlib's
    """What a keystore raises, as the API says it: a refused input or algorithm (every
    `ValueError`: KeyStoreError, AlgorithmError, DecryptionError) is 400 with its
    message after `prefix`; an unreachable backend is 503, with the reason in the log."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if exc is None:
            return
        if isinstance(exc, KeyStoreUnavailable):
            log.error("keys: the keystore is unavailable: %s", exc)
            raise Unavailable("The HSM holding this key cannot be reached on the server. "
                              "Retry later.") from None
        if isinstance(exc, ValueError):
            raise BadParameter(f"{self.prefix}{exc}") from None
