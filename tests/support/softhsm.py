"""A SoftHSM2 token read from outside the server: its objects and their attributes, in a
child process (a PKCS#11 module is initialized once per process, with one SOFTHSM2_CONF,
and the test process may hold another token)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from openkeyvault.keystore.softhsm import CONF_ENV, existing_token

_LIST = r"""
import json, sys, time
import pkcs11
from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import ObjectHandleInvalid
module, label, pin = sys.argv[1:4]
token = pkcs11.lib(module).get_token(token_label=label)


def listing(session):
    out = []
    for obj in session.get_objects({}):
        row = {"class": obj.object_class.name, "id": obj[Attribute.ID].hex(),
               "label": obj[Attribute.LABEL]}
        if obj.object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.SECRET_KEY):
            for name in ("SENSITIVE", "EXTRACTABLE", "ALWAYS_SENSITIVE", "NEVER_EXTRACTABLE",
                         "LOCAL", "TOKEN", "PRIVATE"):
                row[name] = bool(obj[getattr(Attribute, name)])
        out.append(row)
    return out


with token.open(user_pin=pin) as session:
    for attempt in range(20):  # the server may destroy an object while it is listed
        try:
            print(json.dumps(listing(session)))
            break
        except ObjectHandleInvalid:
            time.sleep(0.05)
    else:
        sys.exit("the token's objects kept changing while they were listed")
"""

def token_objects(data_dir: Path, label: str = "okv-dev") -> list[dict[str, object]]:
    """Every object in the dev server's token (its data directory's softhsm/), with the
    private keys' protection attributes."""
    token = existing_token(data_dir, label)
    assert token is not None, f"no SoftHSM2 token in {data_dir}"
    done = subprocess.run(
        [sys.executable, "-c", _LIST, token.module, token.label, token.pin()],
        env={**os.environ, CONF_ENV: str(token.conf)}, capture_output=True, text=True,
        timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, object]] = json.loads(done.stdout)
    return rows
