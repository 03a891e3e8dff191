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

KEYS_READ = f"{_V}/keys/read"
KEYS_CREATE = f"{_V}/keys/create/action"
KEYS_IMPORT = f"{_V}/keys/import/action"
KEYS_UPDATE = f"{_V}/keys/update/action"
KEYS_DELETE = f"{_V}/keys/delete"
KEYS_BACKUP = f"{_V}/keys/backup/action"
KEYS_RESTORE = f"{_V}/keys/restore/action"
KEYS_RECOVER = f"{_V}/keys/recover/action"
KEYS_PURGE = f"{_V}/keys/purge/action"
KEYS_ENCRYPT = f"{_V}/keys/encrypt/action"
KEYS_DECRYPT = f"{_V}/keys/decrypt/action"
KEYS_WRAP = f"{_V}/keys/wrap/action"
KEYS_UNWRAP = f"{_V}/keys/unwrap/action"
KEYS_SIGN = f"{_V}/keys/sign/action"
KEYS_VERIFY = f"{_V}/keys/verify/action"
KEYS_ROTATE = f"{_V}/keys/rotate/action"
KEY_ROTATION_POLICIES_READ = f"{_V}/keyrotationpolicies/read"
KEY_ROTATION_POLICIES_WRITE = f"{_V}/keyrotationpolicies/write"
# Azure defines random bytes for Managed HSM only (managedHsm/rng/action); vaults here use
# the same verb under the vault namespace.
RNG = f"{_V}/rng/action"

ALL = frozenset(
    v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str) and k != "ALL"
)
