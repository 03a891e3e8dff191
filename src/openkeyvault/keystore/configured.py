"""The keystores a deployment serves keys from, as its settings say: the software one
always; an HSM (PKCS#11) one from the [pkcs11] settings, or on a dev server the SoftHSM2
token in its data directory when `okv server --dev` could make one."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from openkeyvault.config import Settings
from openkeyvault.keystore import softhsm
from openkeyvault.keystore.base import KeyStore, KeyStoreUnavailable, MetaStore
from openkeyvault.keystore.software import SoftwareKeyStore

DEV_TOKEN_LABEL = "okv-dev"  # noqa: S105 - a label, not a secret


def keystores(settings: Settings, deployment_id: str,
              meta: MetaStore | None = None) -> dict[str, KeyStore]:
    """By name; the software keystore first. Nothing is loaded here: an HSM keystore
    opens its module and session on first use (in each worker process). The HSM's
    objects are labelled with the deployment's id, so deployments sharing a token never
    take each other's keys for their own. `meta` keeps the ids of the HSM's backup keys
    (without it, HSM keys are made without a backup copy)."""
    out: dict[str, KeyStore] = {"software": SoftwareKeyStore()}
    hsm = hsm_keystore(settings, deployment_id, meta)
    if hsm is not None:
        out[hsm.name] = hsm
    return out


def hsm_keystore(settings: Settings, deployment_id: str,
                 meta: MetaStore | None = None) -> KeyStore | None:
    """The PKCS#11 keystore of the [pkcs11] settings, else a dev server's SoftHSM2 token,
    else None (HSM key types are then refused)."""
    if settings.pkcs11:
        conf = settings.pkcs11
        module, label, pin = conf["module"], conf["token"], pin_reader(conf)
        environment = dict(conf.get("environment") or {})
    elif settings.dev and (token := softhsm.existing_token(settings.data_dir,
                                                           DEV_TOKEN_LABEL)) is not None:
        module, label, pin = token.module, token.label, token.pin
        environment = {softhsm.CONF_ENV: str(token.conf)}
    else:
        return None
    from openkeyvault.keystore.pkcs11 import Pkcs11KeyStore  # python-pkcs11 only if used

    return Pkcs11KeyStore(module, label, pin, environment=environment,
                          label_prefix=label_prefix(deployment_id), meta=meta)


def label_prefix(deployment_id: str) -> str:
    """What the CKA_LABEL of this deployment's HSM keys starts with."""
    return f"okv-{deployment_id.replace('-', '')[:16]}"


def pin_reader(conf: dict[str, Any]) -> Callable[[], str]:
    """The user PIN, read when the token is opened (never kept in the settings)."""
    def pin() -> str:
        if "pin_file" in conf:
            try:
                with open(conf["pin_file"]) as f:
                    return f.read().strip()
            except OSError as exc:
                raise KeyStoreUnavailable(
                    f"the PKCS#11 PIN file {conf['pin_file']} cannot be read: "
                    f"{exc.strerror}") from None
        value = os.environ.get(conf["pin_env"])
        if not value:
            raise KeyStoreUnavailable(
                f"the environment variable {conf['pin_env']} holding the PKCS#11 PIN is not "
                "set")
        return value
    return pin
