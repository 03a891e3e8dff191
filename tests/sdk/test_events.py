"""Event Grid events of a vault, delivered to a webhook receiver that runs in this test.

The module has its own server: its clock moves by weeks (NearExpiry, Expired), and its
delivery retries on a short schedule (OKV_EVENT_RETRY_SECONDS) into a dead-letter file
of this test's (OKV_EVENT_DEADLETTER_FILE). Subscriptions are made with `okv events
subscribe`, which runs the handshake against the receiver. Every subscription of the
module is on the default vault "dev"; events of other vaults must reach no one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.identity import ManagedIdentityCredential
from azure.keyvault.certificates import (
    CertificateClient,
    CertificatePolicy,
    CertificatePolicyAction,
    LifetimeAction,
)
from azure.keyvault.keys import (
    KeyClient,
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
)
from azure.keyvault.secrets import SecretClient

from openkeyvault.ops.auditread import records
from tests.sdk.clients import unique
from tests.sdk.keys_support import environment
from tests.support.server import DevServer, running
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("module_env")

DAY = 86_400
PREFIX = "Microsoft.KeyVault."
ARM_ID = re.compile(r"/subscriptions/[0-9a-f-]{36}/resourceGroups/[^/]+/providers/"
                    r"Microsoft\.KeyVault/vaults/dev")


class Receiver:
    """A webhook: /ok/* takes everything, /fail/* passes the handshake and then answers
    every event 500, /deaf/* answers the handshake without the code, /shy/* refuses the
    CloudEvents origin."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
                receiver.record(self, None)
                self.send_response(200)
                if not self.path.startswith("/shy/"):
                    self.send_header("WebHook-Allowed-Origin",
                                     self.headers.get("WebHook-Request-Origin", ""))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.record(self, body)
                reply = b""
                status = 200
                if self.headers.get("aeg-event-type") == "SubscriptionValidation":
                    code = body[0]["data"]["validationCode"]
                    answer = "wrong" if self.path.startswith("/deaf/") else code
                    reply = json.dumps({"validationResponse": answer}).encode()
                elif self.path.startswith("/fail/"):
                    status = 500
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def record(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        with self.lock:
            self.seen.append({"method": handler.command, "path": handler.path,
                              "headers": {k.lower(): v for k, v in handler.headers.items()},
                              "body": body})

    def requests_to(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.seen if r["path"] == path]

    def events(self, path: str) -> list[dict[str, Any]]:
        """Notifications POSTed to `path`, one item per event, in arrival order."""
        out: list[dict[str, Any]] = []
        for r in self.requests_to(path):
            if r["method"] != "POST" or r["headers"].get("aeg-event-type") != "Notification":
                continue
            out.extend(r["body"] if isinstance(r["body"], list) else [r["body"]])
        return out

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def deadletter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("okv-events-dl") / "dead.jsonl"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, deadletter: Path) -> Iterator[DevServer]:
    """This module's own server: short retries, its own dead-letter file, a movable clock."""
    mp = pytest.MonkeyPatch()
    mp.setenv("OKV_EVENT_RETRY_SECONDS", "0.2,0.2")
    mp.setenv("OKV_EVENT_DEADLETTER_FILE", str(deadletter))
    try:
        with running(tmp_path_factory.mktemp("okv-events") / "data") as s:
            mp.undo()
            yield s
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def module_env(server: DevServer) -> Iterator[dict[str, str]]:
    yield from environment(server)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def subscribe(server: DevServer, endpoint: str, *args: str) -> Any:
    return server.okv("events", "subscribe", "--vault", "dev", "--endpoint", endpoint, *args)


def advance(server: DevServer, seconds: int) -> dict[str, Any]:
    r = requests.post(f"{server.url}/_okv/dev/clock", verify=server.ca,
                      headers={"X-IDENTITY-HEADER": server.env["IDENTITY_HEADER"]},
                      json={"advanceSeconds": seconds}, timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def server_now(server: DevServer) -> int:
    r = requests.get(f"{server.url}/_okv/dev/clock", verify=server.ca,
                     headers={"X-IDENTITY-HEADER": server.env["IDENTITY_HEADER"]}, timeout=60)
    return int(r.json()["now"])


def secrets_client(server: DevServer) -> SecretClient:
    """A new client each time: a token issued before a jump of weeks has expired."""
    return SecretClient(server.url, ManagedIdentityCredential(), verify_challenge_resource=False)


def keys_client(server: DevServer) -> KeyClient:
    return KeyClient(server.url, ManagedIdentityCredential(), verify_challenge_resource=False)


def certs_client(server: DevServer) -> CertificateClient:
    return CertificateClient(server.url, ManagedIdentityCredential(),
                             verify_challenge_resource=False)


def of(events: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("eventType", e.get("type")) == PREFIX + kind
            and e["subject"] == name]


def settle(server: DevServer, receiver: Receiver, path: str) -> None:
    """Wait until an event made now has arrived at `path`: the deliveries queued before it
    have been attempted (one loop, oldest first), so counts can be checked."""
    marker = unique("marker")
    secrets_client(server).set_secret(marker, "x")
    wait_for(lambda: of(receiver.events(path), "SecretNewVersionCreated", marker),
             f"the marker event at {path}")


# ---- subscribing --------------------------------------------------------------------
def test_subscribe_runs_the_event_grid_handshake(server: DevServer, receiver: Receiver
                                                 ) -> None:
    r = subscribe(server, receiver.url("/ok/handshake"), "--name", "handshake")
    assert r.returncode == 0, r.stderr
    [validation] = receiver.requests_to("/ok/handshake")
    assert validation["headers"]["aeg-event-type"] == "SubscriptionValidation"
    [event] = validation["body"]
    assert event["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent"
    assert event["data"]["validationCode"]
    assert ARM_ID.fullmatch(event["topic"])

    listed = server.okv("events", "list", "--vault", "dev", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    mine = [s for s in json.loads(listed.stdout) if s["name"] == "handshake"]
    assert mine and mine[0]["endpoint"] == receiver.url("/ok/handshake")
    assert mine[0]["schema"] == "EventGridSchema" and mine[0]["eventTypes"] is None
    assert server.okv("events", "delete", "--vault", "dev", "--name", "handshake"
                      ).returncode == 0


def test_an_endpoint_that_fails_the_handshake_is_not_subscribed(server: DevServer,
                                                                 receiver: Receiver) -> None:
    r = subscribe(server, receiver.url("/deaf/x"), "--name", "deaf")
    assert r.returncode == 2
    assert "handshake" in r.stderr and "validationCode" in r.stderr
    r = subscribe(server, receiver.url("/shy/x"), "--name", "shy", "--schema", "cloudevents")
    assert r.returncode == 2 and "WebHook-Allowed-Origin" in r.stderr
    listed = json.loads(server.okv("events", "list", "--output", "json").stdout)
    assert not [s for s in listed if s["name"] in ("deaf", "shy")]


@pytest.mark.parametrize(("endpoint", "words"), [
    ("http://example.com/hook", "https"),
    ("ftp://127.0.0.1/hook", "https"),
    ("https://user:pw@example.com/hook", "user name or password"),
    ("not a url", "https"),
])
def test_a_bad_endpoint_url_is_refused_clearly(server: DevServer, endpoint: str,
                                               words: str) -> None:
    r = subscribe(server, endpoint, "--name", "bad")
    assert r.returncode == 2
    assert r.stderr.startswith("error: refused endpoint:") and words in r.stderr
    assert "pw@" not in r.stderr  # the URL, and what it carries, is not echoed
    listed = json.loads(server.okv("events", "list", "--output", "json").stdout)
    assert not [s for s in listed if s["name"] == "bad"]


def test_unknown_event_types_and_schemas_are_refused(server: DevServer,
                                                     receiver: Receiver) -> None:
    r = subscribe(server, receiver.url("/ok/t"), "--types", "SecretNewVersion")
    assert r.returncode == 2 and "unknown event type" in r.stderr
    r = subscribe(server, receiver.url("/ok/t"), "--schema", "xml")
    assert r.returncode == 2 and "--schema" in r.stderr
    assert receiver.requests_to("/ok/t") == []


def test_delete_of_an_unknown_subscription_says_so(server: DevServer) -> None:
    r = server.okv("events", "delete", "--vault", "dev", "--name", "nope")
    assert r.returncode == 2 and "no subscription named 'nope'" in r.stderr


# ---- new versions and access policies --------------------------------------------------
def test_each_new_version_event_arrives_once(server: DevServer, receiver: Receiver) -> None:
    before = unique("before")
    secrets_client(server).set_secret(before, "made before the subscription")
    assert subscribe(server, receiver.url("/ok/all"), "--name", "all").returncode == 0

    secret = secrets_client(server).set_secret(unique("s"), "v")
    key = keys_client(server).create_rsa_key(unique("k"), size=2048)
    poller = certs_client(server).begin_create_certificate(unique("c"),
                                                           CertificatePolicy.get_default())
    cert = poller.result()
    settle(server, receiver, "/ok/all")
    got = receiver.events("/ok/all")

    for kind, bundle, label in (("Secret", secret, "secrets"), ("Key", key, "keys"),
                                ("Certificate", cert, "certificates")):
        [e] = of(got, f"{kind}NewVersionCreated", bundle.name)
        assert ARM_ID.fullmatch(e["topic"])
        assert e["dataVersion"] == "1" and e["metadataVersion"] == "1"
        assert dt.datetime.fromisoformat(e["eventTime"].replace("Z", "+00:00"))
        data = e["data"]
        assert data["VaultName"] == "dev" and data["ObjectType"] == kind
        assert data["ObjectName"] == bundle.name
        assert data["Version"] == bundle.properties.version
        assert data["Id"].endswith(f"/{label}/{bundle.name}/{bundle.properties.version}")
        assert set(data) == {"Id", "VaultName", "ObjectType", "ObjectName", "Version",
                             "NBF", "EXP"}
    assert of(got, "CertificateNewVersionCreated", cert.name)[0]["data"]["EXP"] == \
        int(cert.properties.expires_on.timestamp())
    # Versions made before the subscription, and a certificate's own key and secret: none.
    assert not [e for e in got if e["subject"] in (before,)]
    assert not of(got, "KeyNewVersionCreated", cert.name)
    assert not of(got, "SecretNewVersionCreated", cert.name)
    posts = [r for r in receiver.requests_to("/ok/all") if r["method"] == "POST"]
    assert posts[-1]["headers"]["aeg-subscription-name"] == "ALL"
    assert posts[-1]["headers"]["content-type"] == "application/json"


def test_a_rotation_is_a_new_key_version(server: DevServer, receiver: Receiver) -> None:
    keys = keys_client(server)
    name = unique("rot")
    keys.create_ec_key(name)
    rotated = keys.rotate_key(name)
    settle(server, receiver, "/ok/all")
    versions = [e["data"]["Version"]
                for e in of(receiver.events("/ok/all"), "KeyNewVersionCreated", name)]
    assert len(versions) == 2 and versions[-1] == rotated.properties.version


def notifications(server: DevServer, operation: str) -> list[dict[str, Any]]:
    """The audit records of `operation` in the server's trail."""
    return [r for r in records(server.data_dir / "audit") if r["operationName"] == operation]


def test_access_policy_changes_are_events(server: DevServer, receiver: Receiver) -> None:
    logged = len(notifications(server, "VaultAccessPolicyChangedEventGridNotification"))
    assert subscribe(server, receiver.url("/ok/policy"), "--name", "policy", "--types",
                     "VaultAccessPolicyChanged").returncode == 0
    oid = "00000000-0000-0000-0000-0000000000a1"
    r = server.okv("vault", "policy", "set", "dev", "--object-id", oid, "--secrets", "get")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: receiver.events("/ok/policy"), "the first access policy event")
    r = server.okv("vault", "update", "dev", "--access-policies")  # RBAC off
    assert r.returncode == 0, r.stderr
    wait_for(lambda: len(receiver.events("/ok/policy")) >= 2, "the second one")
    r = server.okv("vault", "update", "dev", "--rbac")  # and on again
    assert r.returncode == 0, r.stderr
    wait_for(lambda: len(receiver.events("/ok/policy")) >= 3, "the third one")
    r = server.okv("vault", "policy", "remove", "dev", "--object-id", oid)
    assert r.returncode == 0, r.stderr
    got = wait_for(lambda: len(receiver.events("/ok/policy")) >= 4 and
                   receiver.events("/ok/policy"), "the fourth one")
    # A change that leaves the access policies as they were is no event.
    r = server.okv("vault", "update", "dev", "--rbac")
    assert r.returncode == 0, r.stderr
    settle(server, receiver, "/ok/all")
    got = receiver.events("/ok/policy")
    assert len(got) == 4
    for e in got:
        assert e["eventType"] == PREFIX + "VaultAccessPolicyChanged" and e["subject"] == "dev"
        assert e["data"]["ObjectType"] == "Vault" and e["data"]["VaultName"] == "dev"
        assert ARM_ID.fullmatch(e["topic"])
    # Each publish is also an operation of the audit trail (made by the `okv` command here).
    new = notifications(server, "VaultAccessPolicyChangedEventGridNotification")[logged:]
    assert len(new) == 4, new
    assert {(r["resultType"], r["properties"]["id"]) for r in new} == {
        ("Success", f"https://dev.vault.localhost:{server.port}/")}
    # Its type filter kept every other event away from it.
    assert server.okv("events", "delete", "--vault", "dev", "--name", "policy"
                      ).returncode == 0


def test_cloudevents_schema(server: DevServer, receiver: Receiver) -> None:
    assert subscribe(server, receiver.url("/ok/ce"), "--name", "cloud", "--schema",
                     "cloudevents", "--types", "SecretNewVersionCreated").returncode == 0
    [options] = receiver.requests_to("/ok/ce")
    assert options["method"] == "OPTIONS" and options["headers"]["webhook-request-origin"]
    secret = secrets_client(server).set_secret(unique("ce"), "v")
    [e] = wait_for(lambda: receiver.events("/ok/ce"), "a CloudEvent")
    assert e["specversion"] == "1.0" and e["type"] == PREFIX + "SecretNewVersionCreated"
    assert ARM_ID.fullmatch(e["source"]) and e["subject"] == secret.name
    assert e["data"]["Version"] == secret.properties.version and "time" in e
    post = [r for r in receiver.requests_to("/ok/ce") if r["method"] == "POST"][0]
    assert post["headers"]["content-type"].startswith("application/cloudevents+json")
    assert server.okv("events", "delete", "--vault", "dev", "--name", "cloud").returncode == 0


def test_a_vault_without_subscriptions_sends_nothing(server: DevServer, receiver: Receiver,
                                                    resolve_localhost: None) -> None:
    other = unique("ev")[:20]
    r = server.okv("vault", "create", other)
    assert r.returncode == 0, r.stderr
    client = SecretClient(server.vault_url(other), ManagedIdentityCredential())
    client.set_secret("quiet", "v")
    settle(server, receiver, "/ok/all")
    assert not [e for r in receiver.seen if r["method"] == "POST" and r["body"]
                for e in (r["body"] if isinstance(r["body"], list) else [r["body"]])
                if e.get("data", {}).get("VaultName") == other]


# ---- retries and dead letters ------------------------------------------------------------
def test_a_failing_receiver_gets_retries_then_a_dead_letter(
        server: DevServer, receiver: Receiver, deadletter: Path) -> None:
    assert subscribe(server, receiver.url("/fail/x"), "--name", "failing", "--types",
                     "SecretNewVersionCreated").returncode == 0
    secret = secrets_client(server).set_secret(unique("dl"), "v")

    def dead() -> list[dict[str, Any]]:
        if not deadletter.exists():
            return []
        return [json.loads(line) for line in deadletter.read_text().splitlines()
                if json.loads(line)["subject"] == secret.name]

    [line] = wait_for(dead, "the dead letter")
    assert line["deadLetterReason"] == "MaxDeliveryAttemptsExceeded"
    assert line["deliveryAttempts"] == 3 and line["lastHttpStatusCode"] == 500
    assert line["subscriptionName"] == "failing"
    assert line["data"]["Version"] == secret.properties.version
    attempts = [e for e in receiver.events("/fail/x") if e["subject"] == secret.name]
    assert len(attempts) == 3  # the first try and the two retries of the schedule
    counts = [r["headers"]["aeg-delivery-count"] for r in receiver.requests_to("/fail/x")
              if r["method"] == "POST" and r["headers"]["aeg-event-type"] == "Notification"]
    assert counts == ["0", "1", "2"]
    assert oct(os.stat(deadletter).st_mode & 0o777) == "0o600"
    assert server.okv("events", "delete", "--vault", "dev", "--name", "failing"
                      ).returncode == 0


# ---- expiry, on the deployment's clock -------------------------------------------------
def test_near_expiry_and_expired_arrive_once_each(server: DevServer,
                                                  receiver: Receiver) -> None:
    assert subscribe(server, receiver.url("/ok/expiry"), "--name", "expiry", "--types",
                     "SecretNearExpiry,SecretExpired,KeyNearExpiry,KeyExpired,"
                     "CertificateNearExpiry,CertificateExpired").returncode == 0
    now = server_now(server)
    at = dt.datetime.fromtimestamp(now + 40 * DAY, dt.UTC)
    secret = secrets_client(server).set_secret(unique("exp"), "v", expires_on=at)
    keys = keys_client(server)
    key = keys.create_rsa_key(unique("kexp"), size=2048, expires_on=at)
    # The key's rotation policy says when its NearExpiry is due: 10 days before.
    keys.update_key_rotation_policy(key.name, KeyRotationPolicy(lifetime_actions=[
        KeyRotationLifetimeAction(KeyRotationPolicyAction.notify, time_before_expiry="P10D")],
        expires_in="P60D"))
    policy = CertificatePolicy(
        issuer_name="Self", subject="CN=events", validity_in_months=2,
        lifetime_actions=[LifetimeAction(CertificatePolicyAction.email_contacts,
                                         days_before_expiry=5)])
    cert = certs_client(server).begin_create_certificate(unique("cexp"), policy).result()
    cert_exp = int(cert.properties.expires_on.timestamp())

    def got(kind: str, name: str) -> list[dict[str, Any]]:
        return of(receiver.events("/ok/expiry"), kind, name)

    advance(server, 11 * DAY)  # the secret's window opens (29 days left); not the key's
    wait_for(lambda: got("SecretNearExpiry", secret.name), "SecretNearExpiry")
    advance(server, DAY)
    settle(server, receiver, "/ok/all")
    assert not got("KeyNearExpiry", key.name)
    assert len(got("SecretNearExpiry", secret.name)) == 1
    [near] = got("SecretNearExpiry", secret.name)
    assert near["data"]["EXP"] == int(at.timestamp())
    assert near["data"]["Version"] == secret.properties.version

    advance(server, 19 * DAY)  # 9 days left: the key's notice is due
    wait_for(lambda: got("KeyNearExpiry", key.name), "KeyNearExpiry")
    advance(server, (cert_exp - server_now(server)) - 20 * DAY)
    wait_for(lambda: got("CertificateNearExpiry", cert.name), "CertificateNearExpiry")

    advance(server, 10 * DAY)  # past the secret's and the key's expiry
    wait_for(lambda: got("SecretExpired", secret.name) and got("KeyExpired", key.name),
             "SecretExpired and KeyExpired")
    advance(server, (cert_exp - server_now(server)) + DAY)
    wait_for(lambda: got("CertificateExpired", cert.name), "CertificateExpired")
    advance(server, DAY)
    advance(server, DAY)
    settle(server, receiver, "/ok/all")
    for kind, name in (("SecretNearExpiry", secret.name), ("SecretExpired", secret.name),
                       ("KeyNearExpiry", key.name), ("KeyExpired", key.name),
                       ("CertificateNearExpiry", cert.name),
                       ("CertificateExpired", cert.name)):
        assert len(got(kind, name)) == 1, kind
    assert not [e for e in receiver.events("/ok/expiry") if e["eventType"].endswith(
        "NewVersionCreated")]
    # Each publish is an operation of the audit trail, as in Azure's log: one record per
    # notice, of the service (no caller), naming the version.
    versions = {secret.name: secret.properties.version, key.name: key.properties.version,
                cert.name: cert.properties.version}
    for kind, name in (("SecretNearExpiry", secret.name), ("SecretExpired", secret.name),
                       ("KeyNearExpiry", key.name), ("KeyExpired", key.name),
                       ("CertificateNearExpiry", cert.name),
                       ("CertificateExpired", cert.name)):
        [record] = wait_for(lambda kind=kind, name=name: [
            r for r in notifications(server, f"{kind}EventGridNotification")
            if f"/{name}/" in r["properties"]["id"]], f"the audit record of {kind}")
        assert record["properties"]["id"].endswith(f"/{name}/{versions[name]}")
        assert (record["resultType"], record["identity"], record["callerIpAddress"]) == (
            "Success", {"claim": {}}, "")
        assert record["resourceId"].endswith("/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/DEV")
