"""The api-versions the server accepts, data plane and management: one table.

Every version Azure published is accepted, so an SDK or tool pinned to any of them works.
Each entry says whether it is GA or a preview and which GA behaviour it gets: a GA version
behaves as itself, a preview as the GA it leads to (7.6-preview.2 as 7.6, 2026-03-01-preview
as 2026-04-01). Code whose answer differs by version asks `behaves_as`/`at_least`, never
compares version strings itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["GA", "preview"]


@dataclass(frozen=True)
class ApiVersion:
    """One accepted api-version: its kind and the GA version whose behaviour it gets."""

    version: str
    kind: Kind
    behaves_as: str


def _table(rows: tuple[tuple[str, str], ...]) -> tuple[ApiVersion, ...]:
    """Rows in publication order; a preview behaves as the next GA row (or as `behaves_as`)."""
    out: list[ApiVersion] = []
    pending: list[str] = []
    for version, ga in rows:
        if ga == "":
            pending.append(version)
            continue
        if ga == version:
            out.extend(ApiVersion(p, "preview", version) for p in pending)
            pending.clear()
            out.append(ApiVersion(version, "GA", version))
        else:
            out.append(ApiVersion(version, "preview", ga))
    if pending:
        raise ValueError(f"previews without a GA after them: {pending}")
    return tuple(out)


# Key Vault data plane, oldest first. ("v", "v") is a GA version; ("v", "") a preview of
# the next GA row. Sources: the REST specs' stable and preview folders and the
# azure-keyvault-* SDKs' ApiVersion enums and generated version lists.
DATA_PLANE: tuple[ApiVersion, ...] = _table((
    ("2015-06-01", "2015-06-01"),
    ("2016-10-01", "2016-10-01"),
    ("7.0", "7.0"),
    ("7.1-preview", ""),
    ("7.1", "7.1"),
    ("7.2-preview", ""),
    ("7.2", "7.2"),
    ("7.3-preview", ""),
    ("7.3", "7.3"),
    ("7.4-preview.1", ""),
    ("7.4", "7.4"),
    ("7.5-preview.1", ""),
    ("7.5", "7.5"),
    ("7.6-preview.1", ""),
    ("7.6-preview.2", ""),
    ("7.6", "7.6"),
    ("2025-06-01-preview", ""),
    ("2025-06-01", "2025-06-01"),
    ("2025-07-01", "2025-07-01"),
    ("2026-01-01-preview", ""),
    ("2026-03-01-preview", ""),
    ("2026-04-01", "2026-04-01"),
))

# Microsoft.KeyVault management (ARM), oldest first: the vYYYY_MM_DD packages of
# azure-mgmt-keyvault 9.x-11.x and the single versions of 12.x-14.x.
MANAGEMENT: tuple[ApiVersion, ...] = _table((
    ("2015-06-01", "2015-06-01"),
    ("2016-10-01", "2016-10-01"),
    ("2018-02-14", "2018-02-14"),
    ("2019-09-01", "2019-09-01"),
    ("2020-04-01-preview", ""),
    ("2021-04-01-preview", ""),
    ("2021-06-01-preview", ""),
    ("2021-10-01", "2021-10-01"),
    ("2022-07-01", "2022-07-01"),
    ("2022-11-01", "2022-11-01"),
    ("2023-02-01", "2023-02-01"),
    ("2023-07-01", "2023-07-01"),
    ("2024-11-01", "2024-11-01"),
    ("2024-12-01-preview", ""),
    ("2025-05-01", "2025-05-01"),
    ("2026-02-01", "2026-02-01"),
    ("2026-05-15", "2026-05-15"),
))

_DATA = {v.version: v for v in DATA_PLANE}
_MGMT = {v.version: v for v in MANAGEMENT}
_RANK = {v.version: i for i, v in enumerate(DATA_PLANE)}
_MGMT_RANK = {v.version: i for i, v in enumerate(MANAGEMENT)}

SUPPORTED = frozenset(_DATA)
LATEST = "2026-04-01"
MANAGEMENT_SUPPORTED = frozenset(_MGMT)
MANAGEMENT_LATEST = "2026-05-15"


def behaves_as(api_version: str) -> str:
    """The GA data-plane version whose behaviour `api_version` gets (KeyError if unknown)."""
    return _DATA[api_version].behaves_as


def at_least(api_version: str, ga: str) -> bool:
    """Whether a data-plane request at `api_version` gets what GA version `ga` introduced."""
    return _RANK[behaves_as(api_version)] >= _RANK[_DATA[ga].behaves_as]


def management_behaves_as(api_version: str) -> str:
    """The GA management version whose behaviour `api_version` gets (KeyError if unknown)."""
    return _MGMT[api_version].behaves_as


def management_at_least(api_version: str, ga: str) -> bool:
    """Whether a management request at `api_version` gets what GA version `ga` introduced."""
    return _MGMT_RANK[management_behaves_as(api_version)] >= _MGMT_RANK[ga]


# ---- Azure Resource Manager basics (api/arm.py): sets, as ARM only checks membership ----
# Microsoft.Resources generic resources and resource groups (azure-mgmt-keyvault's
# vaults.list sends 2015-11-01; the Azure CLI and azure-mgmt-resource up to 2025-04-01).
ARM_RESOURCES = frozenset({
    "2015-11-01", "2016-02-01", "2016-09-01", "2017-05-10", "2018-02-01", "2018-05-01",
    "2019-05-01", "2019-05-10", "2019-07-01", "2019-08-01", "2019-10-01", "2020-06-01",
    "2020-10-01", "2021-01-01", "2021-04-01", "2022-09-01", "2023-07-01", "2024-03-01",
    "2024-07-01", "2024-11-01", "2025-03-01", "2025-04-01",
})
# Microsoft.Resources subscriptions and tenants (`az login` sends 2022-12-01).
ARM_SUBSCRIPTIONS = frozenset({
    "2016-06-01", "2018-06-01", "2019-06-01", "2019-11-01", "2020-01-01", "2021-01-01",
    "2022-12-01",
})
# /metadata/endpoints: 2019-05-01 answers a list of clouds, the others one cloud.
ARM_METADATA = frozenset({"2015-01-01", "2019-05-01", "2020-06-01", "2022-09-01"})
