"""Key rotation: on demand, rotation policies, and rotation/notification by policy over time.

Scheduled rotation needs time to pass, so this module has its own server whose
clock is moved with the dev endpoint (POST /_okv/dev/clock, guarded by the
X-IDENTITY-HEADER secret). Moving the clock runs every scheduled job, key rotation
by policy included. A jump of more than a day expires the tokens a client holds,
so tests make new clients after each jump. Events ("KeyRotated", "KeyNearExpiry")
are read from the server's data directory with an in-process Deployment.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.keys import (
    KeyClient,
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
    KeyVaultKey,
)
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa

from openkeyvault.deployment import Deployment
from openkeyvault.ops.clock import ManualClock
from openkeyvault.storage.records import EventRecord
from tests.sdk.clients import unique
from tests.sdk.keys_support import (
    POLL,
    PRIVATE_MEMBERS,
    RSA_OPS,
    digest,
    environment,
    local_verify,
    public_key,
    rest,
    sdk_jwk,
)
from tests.support.server import DevServer, running

pytestmark = pytest.mark.usefixtures("module_env", "sdk_env")

DAY = 86_400
ROTATE = KeyRotationPolicyAction.rotate
NOTIFY = KeyRotationPolicyAction.notify


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """This module's own server: its clock moves by weeks."""
    with running(tmp_path_factory.mktemp("okv-rotation") / "data") as s:
        yield s


@pytest.fixture(scope="module")
def module_env(server: DevServer) -> Iterator[dict[str, str]]:
    yield from environment(server)


def fresh(server: DevServer) -> KeyClient:
    """A new client and credential: a token issued before a jump of weeks has expired."""
    return KeyClient(server.url, ManagedIdentityCredential(), verify_challenge_resource=False)


def clock(server: DevServer, method: str = "GET", **kw: Any) -> dict[str, Any]:
    r = requests.request(method, f"{server.url}/_okv/dev/clock", verify=server.ca,
                         headers={"X-IDENTITY-HEADER": server.env["IDENTITY_HEADER"]},
                         timeout=60, **kw)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def advance(server: DevServer, seconds: int) -> dict[str, Any]:
    return clock(server, "POST", json={"advanceSeconds": seconds})


def server_now(server: DevServer) -> int:
    return int(clock(server)["now"])


def events(server: DevServer, name: str) -> list[EventRecord]:
    d = Deployment.open(server.settings())
    try:
        return [e for e in d.repo.list_events() if e.object_name == name]
    finally:
        d.close()


def versions(client: KeyClient, name: str) -> list[str]:
    return [p.version for p in client.list_properties_of_key_versions(name)]


def policy(*actions: KeyRotationLifetimeAction, expires_in: str | None = None
           ) -> KeyRotationPolicy:
    return KeyRotationPolicy(lifetime_actions=list(actions), expires_in=expires_in)


def assert_signs(server: DevServer, key: KeyVaultKey, alg: str) -> None:
    """The version still signs, and its signature verifies with its own public JWK."""
    crypto = CryptographyClient(key, ManagedIdentityCredential(), verify_challenge_resource=False)
    dg = digest(alg, key.properties.version.encode())
    sig = crypto.sign(SignatureAlgorithm(alg), dg).signature
    assert local_verify(public_key(key.key), alg, dg, sig)


# ---- on demand ----------------------------------------------------------------------------------
def test_rotate_on_demand_keeps_type_size_and_ops(server: DevServer) -> None:
    client = fresh(server)
    cases = [
        (lambda n: client.create_rsa_key(n, size=3072,
                                         key_operations=["sign", "verify", "decrypt"]), "PS384"),
        (lambda n: client.create_rsa_key(n, size=2048, public_exponent=3), "RS256"),
        (lambda n: client.create_ec_key(n, curve="P-521"), "ES512"),
        (lambda n: client.create_ec_key(n, curve="P-256K", key_operations=["sign"]), None),
    ]
    for make, alg in cases:
        name = unique("rot")
        first = make(name)
        rotated = client.rotate_key(name)
        assert rotated.name == name
        assert rotated.properties.version != first.properties.version
        assert rotated.key_type == first.key_type
        assert rotated.key_operations == first.key_operations
        assert rotated.key.crv == first.key.crv
        assert rotated.key.e == first.key.e
        if first.key.n is not None:
            assert len(rotated.key.n) == len(first.key.n) and rotated.key.n != first.key.n
        else:
            assert rotated.key.x != first.key.x and len(rotated.key.x) == len(first.key.x)
        assert rotated.properties.expires_on is None  # no policy, no expiryTime
        for member in PRIVATE_MEMBERS - {"key_hsm"}:
            assert getattr(rotated.key, member, None) is None
        # the new version is the latest; the old one stays enabled and usable
        assert client.get_key(name).properties.version == rotated.properties.version
        assert versions(client, name) == [first.properties.version, rotated.properties.version]
        old = client.get_key(name, first.properties.version)
        assert old.properties.enabled is True and old.key.n == first.key.n
        if alg is not None:
            assert_signs(server, old, alg)
            assert_signs(server, rotated, alg)


def test_rotate_on_demand_applies_the_policy_expiry(server: DevServer) -> None:
    client = fresh(server)
    name = unique("rot")
    client.create_ec_key(name, curve="P-384")
    client.update_key_rotation_policy(name, policy(
        KeyRotationLifetimeAction(ROTATE, time_after_create="P60D"), expires_in="P90D"))
    rotated = client.rotate_key(name)
    assert rotated.properties.expires_on - rotated.properties.created_on == dt.timedelta(days=90)
    assert rotated.properties.not_before is None


def test_rotate_a_missing_or_deleted_key(server: DevServer) -> None:
    client = fresh(server)
    with pytest.raises(ResourceNotFoundError) as e:
        client.rotate_key(unique("missing"))
    assert e.value.error.code == "KeyNotFound"
    name = unique("rot")
    client.create_ec_key(name)
    client.begin_delete_key(name, **POLL).wait()
    with pytest.raises(ResourceNotFoundError):
        client.rotate_key(name)
    with pytest.raises(ResourceNotFoundError):
        client.get_key_rotation_policy(name)


# ---- the policy --------------------------------------------------------------------------------
def test_default_policy_for_a_key_without_one(server: DevServer) -> None:
    client = fresh(server)
    name = unique("pol")
    client.create_rsa_key(name, size=2048)
    got = client.get_key_rotation_policy(name)
    assert got.id is None and got.expires_in is None
    assert got.created_on is None and got.updated_on is None
    assert [(a.action, a.time_after_create, a.time_before_expiry)
            for a in got.lifetime_actions] == [(NOTIFY, None, "P30D")]
    raw = rest(client, "GET", f"/keys/{name}/rotationpolicy")
    assert raw.status == 200
    assert raw.body == {"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"},
                                             "action": {"type": "Notify"}}],
                        "attributes": {}}
    with pytest.raises(ResourceNotFoundError):
        client.get_key_rotation_policy(unique("missing"))


def test_put_policy_adds_the_default_notify(server: DevServer) -> None:
    client = fresh(server)
    name = unique("pol")
    client.create_rsa_key(name, size=2048)
    put = client.update_key_rotation_policy(name, policy(
        KeyRotationLifetimeAction(ROTATE, time_after_create="P30D"), expires_in="P90D"))
    assert put.id == f"{server.url}/keys/{name}/rotationpolicy"
    assert put.expires_in == "P90D"
    assert {(a.action, a.time_after_create, a.time_before_expiry)
            for a in put.lifetime_actions} == {(ROTATE, "P30D", None), (NOTIFY, None, "P30D")}
    assert put.created_on is not None and put.updated_on == put.created_on
    got = client.get_key_rotation_policy(name)
    assert got.id == put.id and got.expires_in == "P90D"
    assert len(got.lifetime_actions) == 2

    # an explicit Notify is kept as given, not doubled; action names are case-insensitive
    raw = rest(client, "PUT", f"/keys/{name}/rotationpolicy", {
        "lifetimeActions": [
            {"trigger": {"timeAfterCreate": "p45d"}, "action": {"type": "rotate"}},
            {"trigger": {"timeBeforeExpiry": "P14D"}, "action": {"type": "NOTIFY"}},
        ],
        "attributes": {"expiryTime": "P1Y"},
    })
    assert raw.status == 200, raw.body
    actions = raw.body["lifetimeActions"]
    assert sorted((a["action"]["type"], a["trigger"].get("timeAfterCreate"),
                   a["trigger"].get("timeBeforeExpiry")) for a in actions) == [
        ("Notify", None, "P14D"), ("Rotate", "P45D", None)]
    assert raw.body["attributes"]["expiryTime"] == "P1Y"
    assert raw.body["attributes"]["created"] == int(put.created_on.timestamp())

    # an empty policy keeps only the default Notify
    empty = client.update_key_rotation_policy(name, policy())
    assert [(a.action, a.time_before_expiry) for a in empty.lifetime_actions] == [
        (NOTIFY, "P30D")]
    assert empty.expires_in is None


BAD_POLICIES = {
    "timeAfterCreate below P7D": {
        "lifetimeActions": [{"trigger": {"timeAfterCreate": "P6D"}, "action": {"type": "Rotate"}}]},
    "timeAfterCreate in hours below 7 days": {
        "lifetimeActions": [{"trigger": {"timeAfterCreate": "PT100H"},
                             "action": {"type": "Rotate"}}]},
    "two Rotate actions": {
        "lifetimeActions": [
            {"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}},
            {"trigger": {"timeAfterCreate": "P60D"}, "action": {"type": "Rotate"}}]},
    "two Notify actions": {
        "lifetimeActions": [
            {"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}},
            {"trigger": {"timeBeforeExpiry": "P20D"}, "action": {"type": "Notify"}}],
        "attributes": {"expiryTime": "P1Y"}},
    "Notify with timeAfterCreate": {
        "lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Notify"}}],
        "attributes": {"expiryTime": "P1Y"}},
    "expiryTime below P28D": {
        "lifetimeActions": [], "attributes": {"expiryTime": "P27D"}},
    "Rotate timeBeforeExpiry without expiryTime": {
        "lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"},
                             "action": {"type": "Rotate"}}]},
    "Notify timeBeforeExpiry without expiryTime": {
        "lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"},
                             "action": {"type": "Notify"}}]},
    "timeAfterCreate too close to expiryTime": {
        "lifetimeActions": [{"trigger": {"timeAfterCreate": "P25D"}, "action": {"type": "Rotate"}}],
        "attributes": {"expiryTime": "P30D"}},
    "bad duration": {
        "lifetimeActions": [{"trigger": {"timeAfterCreate": "30 days"},
                             "action": {"type": "Rotate"}}]},
    "bare P": {
        "lifetimeActions": [{"trigger": {"timeAfterCreate": "P"}, "action": {"type": "Rotate"}}]},
    "number for a duration": {
        "lifetimeActions": [{"trigger": {"timeAfterCreate": 30}, "action": {"type": "Rotate"}}]},
    "bad expiryTime": {"lifetimeActions": [], "attributes": {"expiryTime": "1 year"}},
    "unknown action": {
        "lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"},
                             "action": {"type": "Delete"}}]},
    "both triggers": {
        "lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D", "timeBeforeExpiry": "P30D"},
                             "action": {"type": "Rotate"}}],
        "attributes": {"expiryTime": "P1Y"}},
    "no trigger": {"lifetimeActions": [{"trigger": {}, "action": {"type": "Rotate"}}]},
    "lifetimeActions not a list": {"lifetimeActions": {"type": "Rotate"}},
}


@pytest.mark.parametrize("case", list(BAD_POLICIES))
def test_put_policy_validation(server: DevServer, case: str) -> None:
    client = fresh(server)
    name = unique("pol")
    client.create_ec_key(name)
    reply = rest(client, "PUT", f"/keys/{name}/rotationpolicy", BAD_POLICIES[case])
    assert (reply.status, reply.code) == (400, "BadParameter"), reply.body
    # nothing was stored: the key still has the default policy
    assert client.get_key_rotation_policy(name).id is None


def test_put_policy_validation_through_the_sdk(server: DevServer) -> None:
    client = fresh(server)
    name = unique("pol")
    client.create_ec_key(name)
    for bad in (
        policy(KeyRotationLifetimeAction(ROTATE, time_after_create="P6D")),
        policy(KeyRotationLifetimeAction(ROTATE, time_after_create="P30D"), expires_in="P27D"),
        policy(KeyRotationLifetimeAction(NOTIFY, time_before_expiry="P30D")),
        policy(KeyRotationLifetimeAction(NOTIFY, time_after_create="P30D"), expires_in="P1Y"),
    ):
        with pytest.raises(HttpResponseError) as e:
            client.update_key_rotation_policy(name, bad)
        assert (e.value.status_code, e.value.error.code) == (400, "BadParameter")
    # the smallest values the rules allow
    ok = client.update_key_rotation_policy(name, policy(
        KeyRotationLifetimeAction(ROTATE, time_after_create="P7D"), expires_in="P28D"))
    assert ok.expires_in == "P28D"


# ---- over time ---------------------------------------------------------------------------------
def test_rotation_by_policy_when_the_clock_passes_time_after_create(server: DevServer) -> None:
    client = fresh(server)
    name = unique("auto")
    first = client.create_rsa_key(name, size=2048, key_operations=["sign", "verify"],
                                  tags={"app": "x"})
    client.update_key_rotation_policy(name, policy(
        KeyRotationLifetimeAction(ROTATE, time_after_create="P30D"), expires_in="P90D"))
    created = int(first.properties.created_on.timestamp())

    moved = advance(server, 29 * DAY)
    assert moved["now"] < created + 30 * DAY
    client = fresh(server)
    assert versions(client, name) == [first.properties.version]
    assert not [e for e in events(server, name) if e.type == "KeyRotated"]

    moved = advance(server, 2 * DAY)
    assert moved["jobs"]["key-rotation"] >= 1
    client = fresh(server)
    listed = versions(client, name)
    assert len(listed) == 2 and listed[0] == first.properties.version
    second = client.get_key(name)
    assert second.properties.version == listed[1]
    assert second.key_type == "RSA" and len(second.key.n) == 256
    assert second.key_operations == ["sign", "verify"]
    born = int(second.properties.created_on.timestamp())
    assert created + 30 * DAY <= born <= moved["now"]
    # exp = the rotation time + the policy's expiryTime
    assert int(second.properties.expires_on.timestamp()) == born + 90 * DAY
    rotated = [e for e in events(server, name) if e.type == "KeyRotated"]
    assert [e.version for e in rotated] == [first.properties.version]
    assert created + 30 * DAY <= rotated[0].time <= born
    # the old version is still enabled and usable
    old = client.get_key(name, first.properties.version)
    assert old.properties.enabled is True and old.properties.expires_on is None
    assert_signs(server, old, "RS256")
    assert_signs(server, second, "PS256")

    # a day later nothing more happens; the next rotation is 30 days after the new version
    advance(server, DAY)
    client = fresh(server)
    assert len(versions(client, name)) == 2
    advance(server, 30 * DAY)
    client = fresh(server)
    listed = versions(client, name)
    assert len(listed) == 3
    rotated = [e for e in events(server, name) if e.type == "KeyRotated"]
    assert [e.version for e in rotated] == listed[:2]  # once per rotated version


def test_rotation_by_policy_before_expiry(server: DevServer) -> None:
    client = fresh(server)
    name = unique("auto")
    now = server_now(server)
    exp = dt.datetime.fromtimestamp(now + 60 * DAY, dt.UTC)
    first = client.create_ec_key(name, curve="P-384", expires_on=exp)
    client.update_key_rotation_policy(name, policy(
        KeyRotationLifetimeAction(ROTATE, time_before_expiry="P30D"), expires_in="P60D"))
    advance(server, 29 * DAY)
    client = fresh(server)
    assert versions(client, name) == [first.properties.version]
    moved = advance(server, 2 * DAY)
    client = fresh(server)
    listed = versions(client, name)
    assert len(listed) == 2
    second = client.get_key(name)
    assert second.key.crv == "P-384" and second.key_operations == first.key_operations
    born = int(second.properties.created_on.timestamp())
    assert born <= moved["now"]
    assert int(second.properties.expires_on.timestamp()) == born + 60 * DAY
    assert [e.version for e in events(server, name) if e.type == "KeyRotated"] == [
        first.properties.version]


def test_near_expiry_is_notified_once(server: DevServer) -> None:
    client = fresh(server)
    name = unique("near")
    now = server_now(server)
    exp = now + 60 * DAY
    key = client.create_rsa_key(name, size=2048,
                                expires_on=dt.datetime.fromtimestamp(exp, dt.UTC))
    client.update_key_rotation_policy(name, policy(
        KeyRotationLifetimeAction(NOTIFY, time_before_expiry="P30D"), expires_in="P90D"))
    # a key with an exp but no stored policy gets the default notice (Notify P30D) too
    quiet = unique("near")
    quiet_key = client.create_rsa_key(quiet, size=2048,
                                      expires_on=dt.datetime.fromtimestamp(exp, dt.UTC))

    advance(server, 29 * DAY)  # the window opens at exp - 30 days
    assert events(server, name) == []

    moved = advance(server, 2 * DAY)
    assert moved["jobs"]["key-rotation"] >= 1
    notified = events(server, name)
    assert [(e.type, e.version) for e in notified] == [("KeyNearExpiry", key.properties.version)]
    assert exp - 31 * DAY <= notified[0].time <= moved["now"]

    advance(server, 5 * DAY)
    advance(server, DAY)
    assert events(server, name) == notified  # not repeated
    # notifying is all it does: no new version
    client = fresh(server)
    assert versions(client, name) == [key.properties.version]
    assert [(e.type, e.version) for e in events(server, quiet)] == [
        ("KeyNearExpiry", quiet_key.properties.version)]

    # a new version has its own window: it is not near expiry yet
    rotated = client.rotate_key(name)
    assert int(rotated.properties.expires_on.timestamp()) - int(
        rotated.properties.created_on.timestamp()) == 90 * DAY
    advance(server, DAY)
    assert events(server, name) == notified


def test_rotated_versions_stay_listed_and_usable(server: DevServer) -> None:
    client = fresh(server)
    name = unique("many")
    made = [client.create_ec_key(name, curve="P-256").properties.version]
    for _ in range(3):
        made.append(client.rotate_key(name).properties.version)
    assert versions(client, name) == made
    for version in made:
        key = client.get_key(name, version)
        assert key.properties.enabled is True
        assert key.key_operations == ["sign", "verify"]
        assert_signs(server, key, "ES256")
    rsa_key = client.create_rsa_key(unique("many"), size=2048)
    assert rsa_key.key_operations == RSA_OPS
    assert client.rotate_key(rsa_key.name).key_operations == RSA_OPS


def test_workers_with_the_same_view_rotate_a_due_key_once(server: DevServer) -> None:
    """Every server process runs the scheduled jobs. Two that read the same due key (here:
    two in-process deployments on this server's data, one holding the listing it read
    before the other rotated) must make one new version between them, not two."""
    client = fresh(server)
    name = unique("race")
    first = client.create_ec_key(name)
    client.update_key_rotation_policy(name, policy(
        KeyRotationLifetimeAction(ROTATE, time_after_create="P7D")))
    later = ManualClock(server_now(server) + 8 * DAY)
    settings = server.settings()
    one, two = Deployment.open(settings, clock=later), Deployment.open(settings, clock=later)
    try:
        seen = [r for r in two.repo.objects_with_policy("keys") if r.latest.name == name]
        assert [r.latest.version for r in seen] == [first.properties.version]
        assert one.keys.run_policies() >= 1
        assert len(versions(client, name)) == 2
        two.repo.objects_with_policy = lambda collection: seen  # type: ignore[method-assign]
        two.keys.run_policies()
    finally:
        one.close()
        two.close()
    assert len(versions(client, name)) == 2
    rotated = [e for e in events(server, name) if e.type == "KeyRotated"]
    assert [e.version for e in rotated] == [first.properties.version]


def rsa_with_exponent(e: int, size: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA key with a public exponent `cryptography` will not generate (e.g. 17)."""
    while True:
        base = rsa.generate_private_key(65537, size).private_numbers()
        p, q = base.p, base.q
        lam = math.lcm(p - 1, q - 1)
        if math.gcd(e, lam) == 1:
            break
    d = pow(e, -1, lam)
    return rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q),
                                 rsa.rsa_crt_iqmp(p, q),
                                 rsa.RSAPublicNumbers(e, p * q)).private_key()


def test_a_key_that_cannot_be_rotated_does_not_stop_the_others(server: DevServer) -> None:
    """An imported RSA key with exponent 17 can be used but not regenerated (the software
    keystore makes exponents 3 and 65537 only). Its scheduled rotation fails; the keys after
    it in the same run are still rotated."""
    client = fresh(server)
    odd = unique("odd")
    imported = client.import_key(odd, sdk_jwk(rsa_with_exponent(17)))
    assert imported.key.e == b"\x11"
    assert_signs(server, imported, "RS256")
    with pytest.raises(HttpResponseError) as e:
        client.rotate_key(odd)
    assert e.value.status_code == 400
    others = [unique("after") for _ in range(3)]
    for name in others:
        client.create_ec_key(name)
    for name in [odd, *others]:
        client.update_key_rotation_policy(name, policy(
            KeyRotationLifetimeAction(ROTATE, time_after_create="P7D")))
    advance(server, 8 * DAY)
    client = fresh(server)
    assert versions(client, odd) == [imported.properties.version]
    for name in others:
        assert len(versions(client, name)) == 2, name
