"""Guessing at the token endpoint: no client-id enumeration, no CPU amplification, a limit.

Every wrong secret gets the same 401 bytes, and the directory does the same work for an
unknown client id, a managed identity and a principal with any number of secrets: one
principal read, one credential read, one barrier open, one keyed hash, no scrypt. Repeated
failures from one address, or for one client id from unfamiliar addresses, get 429 with
`Retry-After` in Entra's error shape, and pass again once the dev clock has moved on. A
legitimate client elsewhere keeps getting tokens while others guess.

The throttle's state is per server process, so these tests run their own server, and
each sends from its own loopback addresses (127.0.0.0/8 all reaches the server).
"""

from __future__ import annotations

import http.client
import itertools
import json
import secrets
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from openkeyvault.access import directory as directory_module
from openkeyvault.access.directory import Directory, secret_credential_id
from openkeyvault.config import Settings
from openkeyvault.crypto import kdf
from openkeyvault.crypto.encoding import b64url_encode
from openkeyvault.deployment import Deployment
from openkeyvault.ops.clock import ManualClock
from openkeyvault.storage.barrier import SYSTEM
from openkeyvault.storage.records import CredentialRecord
from tests.support.server import DevServer, running

_addresses = (f"127.0.{b}.{c}" for b in itertools.count(1) for c in range(1, 255))
_lock = threading.Lock()


def new_address() -> str:
    """A loopback source address no other test has used."""
    with _lock:
        return next(_addresses)


# ---- the directory: the work one check does ---------------------------------------

@dataclass
class Work:
    keyed: int = 0
    scrypt: int = 0
    opens: int = 0
    reads: int = 0

    def reset(self) -> None:
        self.keyed = self.scrypt = self.opens = self.reads = 0

    def counts(self) -> tuple[int, int, int, int]:
        return self.keyed, self.scrypt, self.opens, self.reads


def _counting(fn: Callable[..., Any], bump: Callable[[], None]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        bump()
        return fn(*args, **kwargs)
    return call


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Deployment, Work]]:
    """A deployment opened in-process with a manual clock, its checks counted."""
    d = Deployment.open(Settings(data_dir=tmp_path / "data"), clock=ManualClock())
    work = Work()

    def bump(field: str) -> Callable[[], None]:
        return lambda: setattr(work, field, getattr(work, field) + 1)

    monkeypatch.setattr(kdf, "keyed_hash", _counting(kdf.keyed_hash, bump("keyed")))
    monkeypatch.setattr(kdf, "hash_secret", _counting(kdf.hash_secret, bump("scrypt")))
    monkeypatch.setattr(d.barrier, "open", _counting(d.barrier.open, bump("opens")))
    for name in ("principal_by_client_id", "credential", "secret_credentials"):
        monkeypatch.setattr(d.identities, name,
                            _counting(getattr(d.identities, name), bump("reads")))
    try:
        yield d, work
    finally:
        d.close()


def _legacy_secret(d: Deployment, object_id: str, days: int = 30) -> str:
    """A client secret stored the way earlier versions did: scrypt hash and salt, sealed."""
    secret = secrets.token_urlsafe(30)
    salt, digest = kdf.hash_secret(secret)
    credential_id = str(uuid.uuid4())
    payload = json.dumps({"salt": b64url_encode(salt), "hash": b64url_encode(digest)})
    version, sealed = d.barrier.seal(SYSTEM, f"okv/credential/{object_id}/{credential_id}"
                                     .encode(), payload.encode())
    now = int(d.clock.now())
    d.repo.add_credential(CredentialRecord(credential_id, object_id, "secret", secret[:3],
                                           now + days * 86_400, now, sealed, version))
    return secret


def test_secrets_name_their_credential_and_carry_240_random_bits(
        local: tuple[Deployment, Work]) -> None:
    d, _ = local
    p, s = d.directory.create("format")
    head, sep, tail = s.client_secret.partition(directory_module.ID_SEPARATOR)
    assert sep and len(tail) == 40
    assert secret_credential_id(s.client_secret) == s.credential_id
    assert d.directory.authenticate_secret(p.client_id, s.client_secret) is not None
    stored = d.repo.list_credentials(p.object_id)[0]
    assert s.client_secret.encode() not in stored.sealed
    assert tail.encode() not in stored.sealed


def test_no_secret_starts_like_a_command_line_option(local: tuple[Deployment, Work]) -> None:
    """`az login -p SECRET` (and many other tools) would read a leading "-" as an option.
    One base64url id in 32 starts with "-" or "_": 256 secrets would all miss with a
    chance of about 3 in 10,000."""
    d, _ = local
    made = [d.directory.create(f"options-{i}")[1].client_secret for i in range(256)]
    assert all(secret[0] not in "-_" for secret in made)


def test_every_wrong_secret_costs_one_keyed_hash_and_no_scrypt(
        local: tuple[Deployment, Work]) -> None:
    d, work = local
    directory: Directory = d.directory
    none, _ = directory.create("no-secrets")
    directory.remove_secret(none.object_id, directory.credentials(none.object_id)[0].id)
    one, one_secret = directory.create("one-secret")
    many, many_secret = directory.create("three-secrets")
    extra = [directory.add_secret(many.object_id) for _ in range(2)]
    mi = directory.create_managed_identity("managed")
    expired, expired_secret = directory.create("expired", days=1)
    assert isinstance(d.clock, ManualClock)
    d.clock.advance(2 * 86_400)

    client_ids = {"unknown": str(uuid.uuid4()), "managed identity": mi.client_id,
                  "no secrets": none.client_id, "one secret": one.client_id,
                  "three secrets": many.client_id, "expired secret": expired.client_id}
    some_id = b64url_encode(uuid.uuid4().bytes)
    guesses = {
        "current format": f"{some_id}~{secrets.token_urlsafe(30)}",
        "another principal's credential": one_secret.client_secret[:23]
        + secrets.token_urlsafe(30),
        "its own credential": many_secret.client_secret[:23] + secrets.token_urlsafe(30),
        "earlier format": secrets.token_urlsafe(30),
        "malformed": "nope",
        "too long": "x" * 5000,
        "expired secret": expired_secret.client_secret,
        "a good secret of another principal": extra[0].client_secret,
    }
    # A first earlier-format attempt learns which stored secrets are of the current format
    # (one credential read and open each, once per process).
    for client_id in client_ids.values():
        directory.authenticate_secret(client_id, secrets.token_urlsafe(30))
    seen = {}
    for who, client_id in client_ids.items():
        for what, guess in guesses.items():
            if who == "three secrets" and what == "a good secret of another principal":
                continue  # that one is this principal's own
            work.reset()
            assert directory.authenticate_secret(client_id, guess) is None, (who, what)
            seen[(who, what)] = work.counts()
    # keyed hashes, scrypt runs, barrier opens, storage reads
    assert set(seen.values()) == {(1, 0, 1, 2)}, seen

    # The good secrets pass with the same work.
    for p, s in ((one, one_secret), (many, many_secret), (many, extra[1])):
        work.reset()
        found = directory.authenticate_secret(p.client_id, s.client_secret)
        assert found is not None and found.object_id == p.object_id
        assert work.counts() == (1, 0, 1, 2)


def test_an_earlier_format_secret_works_and_is_upgraded_on_first_use(
        local: tuple[Deployment, Work]) -> None:
    d, work = local
    p, _ = d.directory.create("legacy")
    old = _legacy_secret(d, p.object_id)
    before = {c.id: c.sealed for c in d.repo.list_credentials(p.object_id)}

    work.reset()
    assert d.directory.authenticate_secret(p.client_id, secrets.token_urlsafe(30)) is None
    assert work.scrypt == 1  # the residual cost while it is not upgraded (docs/security.md)

    work.reset()
    found = d.directory.authenticate_secret(p.client_id, old)
    assert found is not None and found.object_id == p.object_id
    assert (work.keyed, work.scrypt) == (1, 1)
    after = {c.id: c.sealed for c in d.repo.list_credentials(p.object_id)}
    assert [k for k in before if before[k] != after[k]] != []  # re-stored as a keyed hash

    near = old[:-1] + ("B" if old.endswith("A") else "A")  # one character off
    for guess, ok in ((old, True), (secrets.token_urlsafe(30), False), (near, False)):
        work.reset()
        assert (d.directory.authenticate_secret(p.client_id, guess) is not None) is ok
        assert (work.keyed, work.scrypt) == (1, 0)


# ---- through the server ------------------------------------------------------------

@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with running(tmp_path_factory.mktemp("guessing") / "data") as s:
        yield s


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.body)
        return out


class Client:
    """One HTTPS connection to the token endpoint from a chosen loopback address."""

    def __init__(self, server: DevServer, source: str | None = None) -> None:
        self.server = server
        ctx = ssl.create_default_context(cafile=server.ca)
        self.conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx,
                                                timeout=30,
                                                source_address=(source or new_address(), 0))
        self.tenant = open_tenant(server)

    def token(self, client_id: str, client_secret: str) -> Answer:
        form = {"grant_type": "client_credentials", "client_id": client_id,
                "client_secret": client_secret,
                "scope": f"https://vault.localhost:{self.server.port}/.default"}
        self.conn.request("POST", f"/{self.tenant}/oauth2/v2.0/token", body=urlencode(form),
                          headers={"Content-Type": "application/x-www-form-urlencoded",
                                   "Host": f"localhost:{self.server.port}"})
        r = self.conn.getresponse()
        return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())

    def close(self) -> None:
        self.conn.close()


_tenants: dict[int, str] = {}


def open_tenant(server: DevServer) -> str:
    if server.port not in _tenants:
        d = _open(server)
        try:
            _tenants[server.port] = d.tenant_id
        finally:
            d.close()
    return _tenants[server.port]


def _open(server: DevServer) -> Deployment:
    return Deployment.open(Settings(data_dir=server.data_dir, port=server.port))


def _advance(server: DevServer, seconds: int) -> None:
    ctx = ssl.create_default_context(cafile=server.ca)
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=30)
    try:
        conn.request("POST", "/_okv/dev/clock", body=json.dumps({"advanceSeconds": seconds}),
                     headers={"X-IDENTITY-HEADER": server.env["IDENTITY_HEADER"],
                              "Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200, r.read()
        r.read()
    finally:
        conn.close()


@dataclass
class App:
    client_id: str
    secret: str


def _principals(server: DevServer, *names: str, extra_secrets: int = 0) -> list[App]:
    d = _open(server)
    try:
        out = []
        for name in names:
            p, s = d.directory.create(f"{name}-{uuid.uuid4().hex[:8]}")
            for _ in range(extra_secrets):
                d.directory.add_secret(p.object_id)
            out.append(App(p.client_id, s.client_secret))
        return out
    finally:
        d.close()


def _assert_locked(a: Answer) -> int:
    assert a.status == 429, a.body
    body = a.json()
    assert body["error"] == "temporarily_unavailable"
    assert body["error_description"].startswith("AADSTS50053:")
    assert body["error_codes"] == [50053]
    assert "access_token" not in body
    wait = int(a.headers["retry-after"])
    assert 1 <= wait <= 60
    assert f"{wait} seconds" in body["error_description"]
    return wait


def test_the_cli_prints_a_secret_that_names_its_credential(guarded: DevServer) -> None:
    done = guarded.okv("principal", "create", "cli-format")
    assert done.returncode == 0, done.stderr
    p = json.loads(done.stdout)
    assert secret_credential_id(p["client_secret"]) == p["secret_id"]
    c = Client(guarded)
    try:
        assert c.token(p["client_id"], p["client_secret"]).status == 200
    finally:
        c.close()


def test_every_wrong_secret_gets_the_same_answer(guarded: DevServer) -> None:
    one, many, none = _principals(guarded, "one", "many", "none")
    d = _open(guarded)
    try:
        mi = d.directory.create_managed_identity(f"mi-{uuid.uuid4().hex[:8]}")
        nobody = d.directory.lookup(client_id=none.client_id)
        assert nobody is not None
        d.directory.remove_secret(nobody.object_id, d.directory.credentials(nobody.object_id)[0].id)
        for _ in range(2):
            found = d.directory.lookup(client_id=many.client_id)
            assert found is not None
            d.directory.add_secret(found.object_id)
    finally:
        d.close()
    c = Client(guarded)
    try:
        assert c.token(one.client_id, one.secret).status == 200  # the endpoint works
        guess = f"{b64url_encode(uuid.uuid4().bytes)}~{secrets.token_urlsafe(30)}"
        answers = {who: c.token(cid, guess) for who, cid in (
            ("known", one.client_id), ("unknown", str(uuid.uuid4())),
            ("managed identity", mi.client_id), ("three secrets", many.client_id),
            ("no secret", none.client_id))}
        answers["own credential, wrong part"] = c.token(one.client_id, one.secret[:-1] + (
            "A" if one.secret[-1] != "A" else "B"))
        answers["earlier format"] = c.token(many.client_id, secrets.token_urlsafe(30))
    finally:
        c.close()
    first = answers["known"]
    assert_oauth_refusal_bytes(first)
    for who, a in answers.items():
        assert (a.status, a.body) == (first.status, first.body), who
        assert sorted(k for k in a.headers if k != "date") == sorted(
            k for k in first.headers if k != "date"), who
        assert a.headers["content-length"] == first.headers["content-length"], who


def assert_oauth_refusal_bytes(a: Answer) -> None:
    assert a.status == 401
    body = a.json()
    assert body["error"] == "invalid_client"
    assert body["error_codes"] == [7000215]
    assert "retry-after" not in a.headers


def test_a_guessed_client_id_is_locked_for_unfamiliar_addresses_only(
        guarded: DevServer) -> None:
    (victim,) = _principals(guarded, "victim")
    home = Client(guarded)  # where the victim got tokens before the guessing began
    assert home.token(victim.client_id, victim.secret).status == 200
    guessers = [Client(guarded) for _ in range(10)]
    try:
        for g in guessers:  # one failure from each of ten addresses: no address lock
            assert g.token(victim.client_id, secrets.token_urlsafe(30)).status == 401
        newcomer = Client(guarded)
        # The id is locked for an address it never signed in from, good secret or not ...
        wait = _assert_locked(newcomer.token(victim.client_id, victim.secret))
        assert "client id" in newcomer.token(victim.client_id, victim.secret).json()[
            "error_description"]
        _assert_locked(guessers[0].token(victim.client_id, secrets.token_urlsafe(30)))
        # ... not for the address it uses, nor for other ids at those addresses.
        for _ in range(3):
            assert home.token(victim.client_id, victim.secret).status == 200
        (other,) = _principals(guarded, "bystander")
        assert newcomer.token(other.client_id, other.secret).status == 200

        _advance(guarded, wait)
        assert newcomer.token(victim.client_id, victim.secret).status == 200
    finally:
        for c in guessers:
            c.close()
        home.close()


def test_a_guessing_address_is_locked_and_others_are_not(guarded: DevServer) -> None:
    (app,) = _principals(guarded, "app")
    attacker = Client(guarded)
    elsewhere = Client(guarded)
    try:
        for _ in range(20):
            assert attacker.token(str(uuid.uuid4()), secrets.token_urlsafe(30)).status == 401
        refused = attacker.token(str(uuid.uuid4()), secrets.token_urlsafe(30))
        wait = _assert_locked(refused)
        assert "address" in refused.json()["error_description"]
        # Locked before the secret is looked at: a good secret from there waits too.
        assert _assert_locked(attacker.token(app.client_id, app.secret)) == wait
        assert elsewhere.token(app.client_id, app.secret).status == 200
        _advance(guarded, wait)
        assert attacker.token(app.client_id, app.secret).status == 200
        assert attacker.token(str(uuid.uuid4()), "nope").status == 401
    finally:
        attacker.close()
        elsewhere.close()


def test_a_legitimate_client_gets_tokens_through_a_guessing_flood(guarded: DevServer) -> None:
    app, target = _principals(guarded, "steady", "target", extra_secrets=2)
    stop = threading.Event()
    answered: dict[int, int] = {}
    lock = threading.Lock()

    def guess() -> None:
        c = Client(guarded)
        try:
            for i in range(60):  # bounded, whatever happens
                if stop.is_set():
                    return
                cid = target.client_id if i % 2 else str(uuid.uuid4())
                status = c.token(cid, secrets.token_urlsafe(30)).status
                with lock:
                    answered[status] = answered.get(status, 0) + 1
        finally:
            c.close()

    threads = [threading.Thread(target=guess, daemon=True) for _ in range(16)]
    legit = Client(guarded)
    try:
        assert legit.token(app.client_id, app.secret).status == 200
        for t in threads:
            t.start()
        statuses = [legit.token(app.client_id, app.secret).status for _ in range(30)]
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        legit.close()
    assert statuses == [200] * 30
    assert answered.get(429, 0) > 0 and set(answered) <= {401, 429}, answered


def test_an_earlier_format_secret_gets_tokens(guarded: DevServer) -> None:
    (app,) = _principals(guarded, "legacy")
    d = _open(guarded)
    try:
        found = d.directory.lookup(client_id=app.client_id)
        assert found is not None
        old = _legacy_secret(d, found.object_id)
    finally:
        d.close()
    c = Client(guarded)
    try:
        for _ in range(2):  # the first use upgrades it; the second checks the upgrade
            assert c.token(app.client_id, old).status == 200
        assert c.token(app.client_id, app.secret).status == 200
        wrong = c.token(app.client_id, old[:-1] + ("A" if old[-1] != "A" else "B"))
        assert_oauth_refusal_bytes(wrong)
    finally:
        c.close()


def test_the_throttle_forgets_old_keys_first_and_stays_bounded() -> None:
    from openkeyvault.access.attempts import SignInAttempts
    from openkeyvault.access.network import parse_address

    clock = ManualClock()
    attempts = SignInAttempts(clock, max_keys=100)
    for i in range(5000):
        attempts.failed(str(uuid.uuid4()), parse_address(f"10.{i // 250}.{i % 250}.1"))
    assert len(attempts.addresses) == 100 and len(attempts.clients) == 100
    # IPv6 is counted per /64: distinct addresses in one /64 share a bucket.
    for i in range(20):
        attempts.failed(str(uuid.uuid4()), parse_address(f"2001:db8::{i + 1:x}"))
    locked = attempts.check(str(uuid.uuid4()), parse_address("2001:db8::ffff:1"))
    assert locked is not None and locked.address
    assert attempts.check(str(uuid.uuid4()), parse_address("2001:db8:0:1::1")) is None
    clock.advance(locked.retry_after)
    assert attempts.check(str(uuid.uuid4()), parse_address("2001:db8::1")) is None


def test_refusals_name_no_secret(guarded: DevServer) -> None:
    (app,) = _principals(guarded, "quiet")
    c = Client(guarded)
    try:
        wrong = app.secret[:-1] + ("A" if app.secret[-1] != "A" else "B")
        a = c.token(app.client_id, wrong)
        assert a.status == 401
        assert wrong.encode() not in a.body and app.secret[23:].encode() not in a.body
    finally:
        c.close()
    assert wrong not in guarded.log()


def test_failures_count_within_a_window_and_familiar_addresses_last_two_weeks() -> None:
    from openkeyvault.access.attempts import FAMILIAR_SECONDS, SignInAttempts
    from openkeyvault.access.network import parse_address

    clock = ManualClock()
    attempts = SignInAttempts(clock)
    here, there = parse_address("192.0.2.1"), parse_address("198.51.100.7")
    for _ in range(19):
        attempts.failed(str(uuid.uuid4()), here)
    clock.advance(61)  # a new window: the count starts again
    for _ in range(19):
        attempts.failed(str(uuid.uuid4()), here)
    assert attempts.check(str(uuid.uuid4()), here) is None

    victim = str(uuid.uuid4())
    attempts.succeeded(victim, here)
    for i in range(10):
        attempts.failed(victim, parse_address(f"203.0.113.{i + 1}"))
    locked = attempts.check(victim, there)
    assert locked is not None and not locked.address and locked.retry_after == 60
    assert attempts.check(victim, here) is None  # familiar
    clock.advance(FAMILIAR_SECONDS)
    for i in range(10):
        attempts.failed(victim, parse_address(f"203.0.113.{i + 1}"))
    assert attempts.check(victim, here) is not None  # no longer familiar
