"""SoftHSM2, the embedded PKCS#11 token: found on the machine, and a token made inside a
directory (a dev server's data directory, a test's temporary one) on first use.

The token lives in DIR/softhsm/: `softhsm2.conf` (SoftHSM2 reads the file named by the
SOFTHSM2_CONF environment variable), `tokens/` (its object store) and `pin` (the user
PIN, mode 0600, random). The security officer PIN is random and not kept: nothing here
needs it after the token is initialized.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CONF_ENV = "SOFTHSM2_CONF"
MODULE_ENV = "OKV_SOFTHSM2_MODULE"
# Where distributions put the module (Debian and Ubuntu first).
MODULE_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)
INIT_TIMEOUT = 60.0


class SoftHsmError(RuntimeError):
    """The token could not be made; the message says what to do."""


@dataclass(frozen=True)
class SoftToken:
    module: str  # the PKCS#11 module's path
    conf: Path  # the SOFTHSM2_CONF file
    label: str  # the token label
    pin_file: Path

    def pin(self) -> str:
        return self.pin_file.read_text().strip()


def find_module() -> str | None:
    """SoftHSM2's PKCS#11 module on this machine (OKV_SOFTHSM2_MODULE first), or None."""
    given = os.environ.get(MODULE_ENV)
    if given:
        return given if Path(given).is_file() else None
    return next((p for p in MODULE_PATHS if Path(p).is_file()), None)


def _token(directory: Path, label: str, module: str) -> SoftToken:
    home = directory / "softhsm"
    return SoftToken(module, home / "softhsm2.conf", label, home / "pin")


def existing_token(directory: Path, label: str = "okv") -> SoftToken | None:
    """The token `ensure_token` made in `directory`, if it did and SoftHSM2 is here."""
    module = find_module()
    if module is None:
        return None
    token = _token(directory, label, module)
    tokens = token.conf.parent / "tokens"
    if token.pin_file.is_file() and tokens.is_dir() and any(tokens.iterdir()):
        return token
    return None


def ensure_token(directory: Path, label: str = "okv") -> SoftToken:
    """The SoftHSM2 token in `directory`/softhsm, initialized on first use."""
    module = find_module()
    util = shutil.which("softhsm2-util")
    if module is None or util is None:
        raise SoftHsmError("SoftHSM2 is not installed (Debian and Ubuntu: apt-get install "
                           "softhsm2; `make dev` installs it)")
    found = existing_token(directory, label)
    if found is not None:
        return found
    token = _token(directory, label, module)
    conf, pin_file = token.conf, token.pin_file
    tokens = conf.parent / "tokens"
    tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    pin = secrets.token_hex(16)
    env = {**os.environ, CONF_ENV: str(conf)}
    try:
        done = subprocess.run(
            [util, "--init-token", "--free", "--label", label, "--pin", pin,
             "--so-pin", secrets.token_hex(16)],
            env=env, capture_output=True, text=True, timeout=INIT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SoftHsmError(f"softhsm2-util did not run: {exc}") from None
    if done.returncode != 0:
        raise SoftHsmError(f"softhsm2-util could not initialize the token: "
                           f"{(done.stderr or done.stdout).strip()[:200]}")
    fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pin + "\n")
    return token
