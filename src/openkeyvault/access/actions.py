"""Azure's data action names: the one list every authorization check reads from."""

from __future__ import annotations

_V = "Microsoft.KeyVault/vaults"

SECRETS_GET = f"{_V}/secrets/getSecret/action"
SECRETS_SET = f"{_V}/secrets/setSecret/action"
SECRETS_READ_METADATA = f"{_V}/secrets/readMetadata/action"
SECRETS_UPDATE = f"{_V}/secrets/update/action"
SECRETS_DELETE = f"{_V}/secrets/delete"
SECRETS_BACKUP = f"{_V}/secrets/backup/action"
SECRETS_RESTORE = f"{_V}/secrets/restore/action"
SECRETS_RECOVER = f"{_V}/secrets/recover/action"
SECRETS_PURGE = f"{_V}/secrets/purge/action"

ALL = frozenset(
    v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str) and k != "ALL"
)
