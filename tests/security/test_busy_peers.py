"""One client address cannot hold every connection slot: past its share of requests in
progress it is answered 429 at once and its connection closed, while another address is
still served and the first address's own requests in progress go on."""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from openkeyvault.api.peers import NOT_COUNTED, BusyPeers
from tests.support.server import DevServer, running
from tests.support.tls import LOOPBACK, healthz

ATTACKER = "127.0.0.2"  # another loopback address: a second client machine, as the server sees it
PER_ADDRESS = 4


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    data = tmp_path_factory.mktemp("busy-peers") / "data"
    with running(data, extra_args=("--max-connections", "64",
                                   "--max-connections-per-address", str(PER_ADDRESS))) as s:
        yield s


def _trickling(server: DevServer, source: str) -> ssl.SSLSocket:
    """A connection from `source` whose token request's body is announced and never sent:
    the request stays in progress (the token endpoint reads bodies of anyone)."""
    ctx = ssl.create_default_context(cafile=server.ca)
    raw = socket.create_connection((LOOPBACK, server.port), timeout=30, source_address=(source, 0))
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"POST /organizations/oauth2/v2.0/token HTTP/1.1\r\nHost: localhost:"
                f"{server.port}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                "Content-Length: 4000\r\n\r\ngrant_type=".encode())
    return tls


def _answers(conns: list[ssl.SSLSocket], count: int) -> dict[int, bytes]:
    """Wait until `count` of `conns` are answered and closed by the server: their answers,
    by index. (The server need not take connections in the order they were opened.)"""
    got: dict[int, bytes] = {}
    done: set[int] = set()
    for tls in conns:
        tls.setblocking(False)
    while len(done) < count:
        ready, _, _ = select.select([t for i, t in enumerate(conns) if i not in done], [], [], 30)
        assert ready, f"only {len(done)} of {count} connections were answered"
        for tls in ready:
            i = conns.index(tls)
            try:
                chunk = tls.recv(65536)
            except ssl.SSLWantReadError:
                continue
            if chunk:
                got[i] = got.get(i, b"") + chunk
            else:
                done.add(i)
    return {i: got.get(i, b"") for i in done}


def _pending(tls: ssl.SSLSocket) -> bool:
    """True while the server has answered nothing on `tls`."""
    tls.setblocking(False)
    try:
        return not tls.recv(1)
    except ssl.SSLWantReadError:
        return True


def _flood(server: DevServer, stack: ExitStack, count: int) -> list[ssl.SSLSocket]:
    return [stack.enter_context(_trickling(server, ATTACKER)) for _ in range(count)]


def test_past_the_limit_an_address_gets_429_and_others_are_served(capped: DevServer) -> None:
    with ExitStack() as stack:
        conns = _flood(capped, stack, PER_ADDRESS + 3)
        answers = _answers(conns, 3)  # three are over the address's share: refused, closed
        for answer in answers.values():
            assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
            assert b"retry-after: 1" in answer.lower()
            assert b'"code":"Throttled"' in answer
        assert healthz(capped.port, capped.ca, timeout=30)  # another address: served
        held = [t for i, t in enumerate(conns) if i not in answers]
        assert len(held) == PER_ADDRESS and all(_pending(t) for t in held)  # these go on


def test_a_finished_request_gives_its_place_back(capped: DevServer) -> None:
    """Closing the connections ends their requests, and each gives its place back: every
    round again has its full share, one connection over it refused. (The server sees a
    close a moment after it happens: a round that starts before every place is back is
    tried again, for up to 20 s.)"""
    for _ in range(3):
        deadline = time.monotonic() + 20
        while True:
            with ExitStack() as stack:
                conns = _flood(capped, stack, PER_ADDRESS + 1)
                _answers(conns, 1)
                refused = _closed_within(conns, 0.5)
            if len(refused) == 1:
                break
            assert time.monotonic() < deadline, f"{len(refused)} refused: places not given back"
            time.sleep(0.2)


def _closed_within(conns: list[ssl.SSLSocket], seconds: float) -> set[int]:
    """The indexes of `conns` the server has closed by `seconds` from now."""
    end = time.monotonic() + seconds
    closed: set[int] = set()
    while (left := end - time.monotonic()) > 0:
        open_ = [t for i, t in enumerate(conns) if i not in closed]
        ready, _, _ = select.select(open_, [], [], left)
        for tls in ready:
            try:
                if not tls.recv(65536):
                    closed.add(conns.index(tls))
            except ssl.SSLWantReadError:
                continue
            except OSError:
                closed.add(conns.index(tls))
    return closed


def test_limit_zero_counts_nothing_and_trusted_proxies_are_not_counted() -> None:
    off = BusyPeers(0)
    assert all(off.enter({"client": (ATTACKER, 1)}) == NOT_COUNTED for _ in range(100))
    peers = BusyPeers(2, ("10.0.0.0/8",))
    proxy = {"client": ("10.1.2.3", 5)}
    assert all(peers.enter(proxy) == NOT_COUNTED for _ in range(100))
    first, second = peers.enter({"client": (ATTACKER, 1)}), peers.enter({"client": (ATTACKER, 2)})
    assert first == second == ATTACKER and peers.enter({"client": (ATTACKER, 3)}) is None
    peers.leave(first)
    assert peers.busy(ATTACKER) == 1 and peers.enter({"client": (ATTACKER, 4)}) == ATTACKER
