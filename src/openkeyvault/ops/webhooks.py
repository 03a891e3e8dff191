"""Webhook delivery of events, as Event Grid does it: the handshake, retries, dead letters.

- **Endpoints** are https URLs; plain http only to a loopback address of a dev
  deployment. TLS is checked against the system's trust store, plus the deployment's
  own CA on a dev server (its `ca.pem`), nothing else; redirects are not followed.
- **The handshake** proves the endpoint wants the events before a subscription is
  stored: for the Event Grid schema a `Microsoft.EventGrid.SubscriptionValidationEvent`
  whose `validationCode` the endpoint must answer as `validationResponse`; for
  CloudEvents the HTTP OPTIONS abuse-protection request (`WebHook-Request-Origin`),
  answered with a `WebHook-Allowed-Origin` of that origin or `*`.
- **Delivery** runs in every serving process (`Delivery.run`), off the request path: it
  claims due outbox rows (storage/subscriptions.py, safe on several nodes), POSTs each
  event, and deletes it on a 2xx. Otherwise it tries again after Event Grid's back-off
  (10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, 3 h, 6 h, 12 h: about 23 hours in
  all; `OKV_EVENT_RETRY_SECONDS` sets another list). A 400 or 413 is not retried. After
  the last attempt the event is appended, with why, to the dead-letter file (JSON
  lines; `OKV_EVENT_DEADLETTER_FILE`, by default `events-deadletter.jsonl` in the data
  directory).
"""

from __future__ import annotations

import asyncio
import hmac
import http.client
import ipaddress
import json
import logging
import os
import secrets
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from openkeyvault.ops.events import CLOUD_EVENTS, iso_time
from openkeyvault.storage.errors import StorageError
from openkeyvault.storage.subscriptions import Claimed, SubscriptionStore

log = logging.getLogger("openkeyvault.events")

RETRY_ENV = "OKV_EVENT_RETRY_SECONDS"
DEADLETTER_ENV = "OKV_EVENT_DEADLETTER_FILE"
DEFAULT_RETRY = (10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0, 21600.0, 43200.0)
MAX_RETRIES = 30  # Event Grid's most attempts
TIMEOUT_SECONDS = 30.0  # Event Grid waits this long for an answer
NO_RETRY = (400, 413)
ORIGIN = "eventgrid.azure.net"  # what Event Grid's handshake names as its origin
MAX_ENDPOINT = 2048
POLL_SECONDS = 0.5
BATCH = 16
AGENT = "OpenKeyVault-Events"


class EndpointRefused(ValueError):
    """The endpoint URL is not one events may go to, or it failed the handshake."""


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no HTTP answer
    headers: dict[str, str]
    body: bytes
    problem: str = ""  # why there was no answer


def check_endpoint(url: str, dev: bool) -> str:
    """The endpoint as given if events may go there; EndpointRefused saying why not."""
    if len(url) > MAX_ENDPOINT:
        raise EndpointRefused(f"the endpoint URL is longer than {MAX_ENDPOINT} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise EndpointRefused("the endpoint is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise EndpointRefused("the endpoint must be an https:// URL with a host name")
    if parts.username is not None or parts.password is not None:
        raise EndpointRefused("the endpoint URL must not carry a user name or password")
    if parts.fragment:
        raise EndpointRefused("the endpoint URL must not have a #fragment")
    if parts.scheme == "http" and not (dev and _loopback(parts.hostname)):
        raise EndpointRefused("the endpoint must use https (plain http is allowed only to a "
                              "loopback address of a dev server)")
    return url


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def shown(url: str) -> str:
    """The endpoint as listings show it: without its query, which may hold a key."""
    parts = urlsplit(url)
    return parts._replace(query="…" if parts.query else "").geturl()


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's trust store, plus the deployment's CA on a dev server."""
    ctx = ssl.create_default_context()
    if ca_file is not None and ca_file.exists():
        ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


def send(url: str, method: str, body: bytes | None, headers: dict[str, str],
         ctx: ssl.SSLContext, timeout: float = TIMEOUT_SECONDS) -> Answer:
    """One HTTP request, no proxy and no redirect; an Answer, never an exception."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"User-Agent": AGENT, **headers})
        r = conn.getresponse()
        data = r.read(65_536)
        return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    except ssl.SSLError as exc:
        return Answer(0, {}, b"", f"TLS: {exc.reason or 'handshake failed'}")
    except (OSError, http.client.HTTPException) as exc:
        return Answer(0, {}, b"", type(exc).__name__)
    finally:
        conn.close()


# ---- the handshake -------------------------------------------------------------------
def validate(url: str, schema: str, subscription: str, topic: str,
             ctx: ssl.SSLContext, now: float) -> None:
    """Event Grid's handshake with the endpoint; EndpointRefused if it did not agree."""
    if schema == CLOUD_EVENTS:
        answer = send(url, "OPTIONS", None, {"WebHook-Request-Origin": ORIGIN}, ctx)
        _answered(answer)
        allowed = answer.headers.get("webhook-allowed-origin", "")
        if allowed.strip() not in (ORIGIN, "*"):
            raise EndpointRefused("the endpoint did not allow this origin: its answer to the "
                                  "OPTIONS handshake must carry WebHook-Allowed-Origin: "
                                  f"{ORIGIN} (or *)")
        return
    code = secrets.token_hex(16).upper()
    event = [{"id": str(uuid.uuid4()), "topic": topic, "subject": "",
              "data": {"validationCode": code, "validationUrl": None},
              "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
              "eventTime": iso_time(now), "metadataVersion": "1", "dataVersion": "2"}]
    answer = send(url, "POST", json.dumps(event).encode(), {
        "Content-Type": "application/json", "aeg-event-type": "SubscriptionValidation",
        "aeg-subscription-name": subscription.upper(), "aeg-delivery-count": "0",
    }, ctx)
    _answered(answer)
    try:
        given = json.loads(answer.body).get("validationResponse")
    except (ValueError, AttributeError):
        given = None
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), code.encode()):
        raise EndpointRefused("the endpoint did not answer the validation event with its "
                              "validationCode as {\"validationResponse\": CODE}")


def _answered(answer: Answer) -> None:
    if answer.status == 0:
        raise EndpointRefused(f"the endpoint could not be reached ({answer.problem})")
    if not 200 <= answer.status < 300:
        raise EndpointRefused(f"the endpoint answered the handshake with HTTP {answer.status}")


# ---- delivery ------------------------------------------------------------------------
def retry_schedule() -> tuple[float, ...]:
    """Seconds to wait before each retry: `OKV_EVENT_RETRY_SECONDS` (comma-separated,
    at most 30), else Event Grid's. An empty value means no retry."""
    raw = os.environ.get(RETRY_ENV)
    if raw is None:
        return DEFAULT_RETRY
    try:
        values = tuple(float(v) for v in raw.replace(" ", "").split(",") if v)
    except ValueError:
        values = (-1.0,)
    if len(values) > MAX_RETRIES or any(not 0 <= v <= 86_400 for v in values):
        from openkeyvault.storage.errors import StartupRefused

        raise StartupRefused(f"{RETRY_ENV} must list at most {MAX_RETRIES} numbers of "
                             f"seconds from 0 to 86400, not {raw[:60]!r}")
    return values


def deadletter_path(data_dir: Path) -> Path:
    return Path(os.environ.get(DEADLETTER_ENV) or data_dir / "events-deadletter.jsonl")


class Delivery:
    """The delivery loop of one process."""

    def __init__(self, store: SubscriptionStore, ctx: ssl.SSLContext, deadletter: Path,
                 retries: tuple[float, ...] = DEFAULT_RETRY,
                 wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.ctx = ctx
        self.deadletter = deadletter
        self.retries = retries
        self._wall = wall
        # A claim outlives one attempt at every event of a batch.
        self._hold_ms = int((TIMEOUT_SECONDS * BATCH + 60) * 1000)

    def pump(self) -> int:
        """Deliver what is due now; how many events were handled."""
        now_ms = int(self._wall() * 1000)
        if not self.store.any_due(now_ms):
            return 0
        claimed = self.store.claim(now_ms, self._hold_ms, BATCH)
        for row in claimed:
            self._deliver(row)
        return len(claimed)

    def _deliver(self, row: Claimed) -> None:
        attempt = row.attempts + 1
        answer = self._post(row, attempt)
        if 200 <= answer.status < 300:
            self.store.delivered(row.id)
            return
        if answer.status in NO_RETRY or row.attempts >= len(self.retries):
            self._dead(row, attempt, answer)
            self.store.delivered(row.id)
            return
        due = int((self._wall() + self.retries[row.attempts]) * 1000)
        self.store.retry(row.id, attempt, due)

    def _post(self, row: Claimed, attempt: int) -> Answer:
        if row.schema == CLOUD_EVENTS:
            body = row.body.encode()
            headers = {"Content-Type": "application/cloudevents+json; charset=utf-8"}
        else:
            body = f"[{row.body}]".encode()
            headers = {"Content-Type": "application/json", "aeg-data-version": "1",
                       "aeg-metadata-version": "1"}
        headers.update({"aeg-event-type": "Notification",
                        "aeg-subscription-name": row.subscription.upper(),
                        "aeg-delivery-count": str(attempt - 1)})
        return send(row.endpoint, "POST", body, headers, self.ctx)

    def _dead(self, row: Claimed, attempts: int, answer: Answer) -> None:
        """Append the event, with why it was given up, to the dead-letter file."""
        event = json.loads(row.body)
        reason = "NoRetryCode" if answer.status in NO_RETRY else "MaxDeliveryAttemptsExceeded"
        outcome = answer.problem or f"HTTP {answer.status}"
        event.update({"deadLetterReason": reason, "deliveryAttempts": attempts,
                      "lastDeliveryOutcome": outcome,
                      "lastHttpStatusCode": answer.status or None,
                      "lastDeliveryAttemptTime": iso_time(self._wall()),
                      "subscriptionName": row.subscription, "vaultName": row.vault_name})
        line = (json.dumps(event) + "\n").encode()
        try:
            self.deadletter.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.deadletter, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line)  # one write: lines of several processes do not mix
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("event %s of subscription %s could not be dead-lettered to %s: %s",
                      row.event_id, row.subscription, self.deadletter, exc.strerror)
            return
        log.warning("event %s of vault %s to subscription %s dead-lettered after %d "
                    "attempt(s): %s", row.event_id, row.vault_name, row.subscription,
                    attempts, outcome)

    async def run(self) -> None:
        """The loop of a serving process, until cancelled."""
        from starlette.concurrency import run_in_threadpool

        faulted = False
        while True:
            try:
                await run_in_threadpool(self.pump)
                faulted = False
            except StorageError as exc:
                if not faulted:
                    log.warning("event delivery paused: %s", exc)
                faulted = True
            except Exception:
                log.exception("event delivery failed")
            await asyncio.sleep(POLL_SECONDS)

