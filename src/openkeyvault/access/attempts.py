"""Failed sign-in attempts at the token endpoint: who must wait before trying again.

Failures are counted per client address and per client id, in windows of a minute; the
failure that reaches the limit within a window locks the key for a window (so a guesser
gets about the limit per two windows). A locked key is refused before any secret is
looked at, with the seconds left as `Retry-After`.

- The client address is locked for everyone at it: a failure there is someone at that
  address guessing (like Entra, which locks the attacker's location, not the account).
- A client id is locked only for addresses it has not signed in from recently: a
  client that got a token from an address keeps getting tokens there while others guess
  its id from elsewhere; a new address must wait like a guesser (there is no way to tell
  them apart). Unknown client ids are counted exactly like known ones, so the lock says
  nothing about which ids exist.

Memory is bounded whatever is sent: each table keeps at most a fixed number of keys and
forgets the least recently touched first (an entry not touched for a window has drained
anyway). IPv6 clients are counted per /64, the block one subscriber gets. The state is
in memory, per worker process: with N workers, a guesser spread over them gets up to N
times the allowance. Time comes from the deployment's clock.
"""

from __future__ import annotations

import ipaddress
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

from openkeyvault.access.network import IPAddress
from openkeyvault.ops.clock import Clock

ADDRESS_FAILURES = 20  # failures per window from one client address
CLIENT_FAILURES = 10  # failures per window for one client id (Entra's lockout threshold)
WINDOW_SECONDS = 60.0  # the counting window, and how long a lock lasts
MAX_TRACKED = 20_000  # keys per table
FAMILIAR_SECONDS = 14 * 86_400  # how long an address a client signed in from stays familiar
FAMILIAR_PER_CLIENT = 4
MAX_CLIENT_ID_CHARS = 64  # longer ids are no client id; they are counted by their prefix


class Lockouts:
    """Failures per key counted in windows, and the lockout a full count earns, in bounded
    memory. Thread-safe."""

    def __init__(self, clock: Clock, capacity: int, window: float,
                 max_keys: int = MAX_TRACKED) -> None:
        self._clock = clock
        self.capacity = capacity
        self._window = window
        self._max = max_keys
        # key -> (failures, since when, locked until)
        self._entries: OrderedDict[str, tuple[int, float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, key: str) -> int:
        """Seconds until `key` may be tried again (0: it may now)."""
        now = self._clock.now()
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return 0
            self._entries.move_to_end(key)
        left = found[2] - now
        return max(1, math.ceil(left)) if left > 0 else 0

    def fail(self, key: str) -> None:
        """Count a failure; the one that fills the window's count locks the key for a
        window."""
        now = self._clock.now()
        with self._lock:
            count, since, until = self._entries.get(key, (0, now, 0.0))
            if not since <= now < since + self._window:
                count, since = 0, now
            count += 1
            if count >= self.capacity:
                count, since, until = 0, now, now + self._window
            self._entries[key] = (count, since, until)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class Locked:
    """A refusal: wait this many seconds; `address` says whether the address is locked
    (else the client id, for this address)."""
    retry_after: int
    address: bool


def address_key(address: IPAddress | None) -> str:
    """What failures are counted under: the IPv4 address, or the IPv6 /64."""
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


class SignInAttempts:
    """The token endpoint's memory of failed (and, for familiarity, good) sign-ins."""

    def __init__(self, clock: Clock, *, address_failures: int = ADDRESS_FAILURES,
                 client_failures: int = CLIENT_FAILURES, window: float = WINDOW_SECONDS,
                 max_keys: int = MAX_TRACKED) -> None:
        self._clock = clock
        self.addresses = Lockouts(clock, address_failures, window, max_keys)
        self.clients = Lockouts(clock, client_failures, window, max_keys)
        self._familiar: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._max = max_keys
        self._lock = threading.Lock()

    @staticmethod
    def _client_key(client_id: str) -> str:
        return client_id[:MAX_CLIENT_ID_CHARS].lower()

    def _is_familiar(self, client: str, where: str) -> bool:
        with self._lock:
            seen = self._familiar.get(client, {}).get(where)
        return seen is not None and self._clock.now() - seen < FAMILIAR_SECONDS

    def check(self, client_id: str, address: IPAddress | None) -> Locked | None:
        """None if this attempt may be checked now, else how long to wait."""
        where = address_key(address)
        wait = self.addresses.wait(where)
        if wait:
            return Locked(wait, address=True)
        client = self._client_key(client_id)
        if self._is_familiar(client, where):
            return None
        wait = self.clients.wait(client)
        return Locked(wait, address=False) if wait else None

    def failed(self, client_id: str, address: IPAddress | None) -> None:
        self.addresses.fail(address_key(address))
        self.clients.fail(self._client_key(client_id))

    def succeeded(self, client_id: str, address: IPAddress | None) -> None:
        """Remember the address as familiar for this client id (a success does not clear
        failures: a guesser holding one good secret could otherwise reset its count)."""
        client, where, now = self._client_key(client_id), address_key(address), self._clock.now()
        with self._lock:
            seen = self._familiar.pop(client, {})
            seen.pop(where, None)
            seen[where] = now
            while len(seen) > FAMILIAR_PER_CLIENT:
                del seen[next(iter(seen))]
            self._familiar[client] = seen
            while len(self._familiar) > self._max:
                self._familiar.popitem(last=False)
