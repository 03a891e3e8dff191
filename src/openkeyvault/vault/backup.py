"""Backup blobs: opaque, encrypted and authenticated, restorable anywhere in one deployment.

Layout: MAGIC | deployment id (16 bytes) | data-key version (4 bytes, big
endian) | AES-256-GCM sealed JSON. The associated data binds the blob to its
deployment and collection, so a blob cannot be replayed as another kind of
object, and a blob from another deployment is recognised and refused.
"""

from __future__ import annotations

import json
import struct
import uuid
from typing import Any

from openkeyvault.storage.barrier import SYSTEM, Barrier, BarrierError
from openkeyvault.vault.errors import BadParameter

MAGIC = b"OKVBKP01"
_HEADER = len(MAGIC) + 16 + 4
MAX_BLOB_BYTES = 32 * 1024 * 1024


class BackupCodec:
    def __init__(self, barrier: Barrier, deployment_id: str) -> None:
        self._barrier = barrier
        self._deployment = uuid.UUID(deployment_id).bytes

    def _aad(self, deployment: bytes, collection: str) -> bytes:
        return MAGIC + deployment + collection.encode()

    def pack(self, collection: str, payload: dict[str, Any]) -> bytes:
        plaintext = json.dumps(payload, separators=(",", ":")).encode()
        version, sealed = self._barrier.seal(
            SYSTEM, self._aad(self._deployment, collection), plaintext
        )
        return MAGIC + self._deployment + struct.pack(">I", version) + sealed

    def unpack(self, collection: str, blob: bytes) -> dict[str, Any]:
        if len(blob) > MAX_BLOB_BYTES:
            raise BadParameter("The backup blob is too large.")
        if len(blob) <= _HEADER or not blob.startswith(MAGIC):
            raise BadParameter("The backup blob is malformed: it is not an OpenKeyVault backup.")
        deployment = blob[len(MAGIC) : len(MAGIC) + 16]
        if deployment != self._deployment:
            raise BadParameter(
                "The backup blob was created by another deployment and cannot be restored here."
            )
        (version,) = struct.unpack(">I", blob[len(MAGIC) + 16 : _HEADER])
        try:
            plaintext = self._barrier.open(
                SYSTEM, version, self._aad(deployment, collection), blob[_HEADER:]
            )
        except BarrierError:
            raise BadParameter(
                "The backup blob failed its integrity check: it is corrupt, was modified, or "
                "holds another kind of object."
            ) from None
        payload: dict[str, Any] = json.loads(plaintext)
        return payload
