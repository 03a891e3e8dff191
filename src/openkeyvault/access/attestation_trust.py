"""Which attestation authorities a deployment trusts for secure key release.

Production: those its configuration file lists (`[attestation] authorities`, each an
issuer and its signing keys as a JWKS file or inline; config.py reads them through
`authority_setting`). A dev server trusts its dev authority (access/dev_attestation.py)
as well. A JWKS file is read on each call, so rotating an authority's keys is rewriting
its file; one that cannot be read or holds no usable key is left out with a warning
(its tokens are then refused as from an untrusted issuer).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openkeyvault.access.attestation_tokens import Authority, normalise_issuer, signing_keys
from openkeyvault.access.dev_attestation import DevAttestationAuthority, DevAttestationError
from openkeyvault.access.issuers import check_issuer_url
from openkeyvault.access.jwks import JwksError, read_jwks_file
from openkeyvault.config import Settings

log = logging.getLogger("openkeyvault.attestation")


def authority_setting(entry: dict[str, Any], base: Path,
                      issuers: Sequence[str] = ()) -> dict[str, Any]:
    """One configured authority, checked and normalised: `{"issuer", "jwks_file"}` (the
    path resolved against `base`) or `{"issuer", "jwks"}` (a JWKS document, given as a
    table or as JSON text). ValueError saying what is wrong; `issuers` are those already
    listed (one issuer is listed once)."""
    if unknown := sorted(set(entry) - {"issuer", "jwks_file", "jwks"}):
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; known: issuer, jwks_file, "
                         "jwks")
    issuer = entry.get("issuer")
    if not isinstance(issuer, str):
        raise ValueError('issuer is required (the authority\'s "iss", an https URL)')
    check_issuer_url(issuer)
    if any(normalise_issuer(issuer) == normalise_issuer(i) for i in issuers):
        raise ValueError(f"the issuer {issuer} is listed twice")
    if ("jwks_file" in entry) == ("jwks" in entry):
        raise ValueError("give the authority's signing keys as exactly one of jwks_file (a "
                         "JWKS file) or jwks (the JWKS itself)")
    if "jwks_file" in entry:
        if not isinstance(entry["jwks_file"], str) or not entry["jwks_file"]:
            raise ValueError("jwks_file must be a file's path")
        return {"issuer": issuer, "jwks_file": str((base / entry["jwks_file"]).resolve())}
    jwks = entry["jwks"]
    if isinstance(jwks, str):
        try:
            jwks = json.loads(jwks)
        except ValueError:
            raise ValueError("jwks is text that is not JSON") from None
    signing_keys(jwks)  # JwksError (a ValueError) when no key is usable
    return {"issuer": issuer, "jwks": jwks}


def configured_authority(setting: dict[str, Any]) -> Authority:
    """The Authority of one `authority_setting` result (its JWKS file read now); JwksError
    if the keys cannot be read or none is usable."""
    jwks = setting.get("jwks")
    if jwks is None:
        raw = read_jwks_file(Path(setting["jwks_file"]))
        try:
            jwks = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise JwksError("The JWKS file is not JSON.") from None
    return Authority(setting["issuer"], jwks)


def trusted_authorities(settings: Settings) -> list[Authority]:
    """The attestation authorities `settings` trust (see the module's doc)."""
    out: list[Authority] = []
    for setting in settings.attestation_authorities:
        try:
            out.append(configured_authority(setting))
        except JwksError as exc:
            log.warning("attestation authority %s left out: %s", setting.get("issuer"), exc)
    if settings.dev:
        try:
            out.append(DevAttestationAuthority(settings.data_dir).authority())
        except (DevAttestationError, OSError) as exc:
            log.warning("the dev attestation authority is not trusted: %s", exc)
    return out
