"""The bearer token of a request, verified: the one place the data plane and the
management API read the Authorization header."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from openkeyvault.access.tokens import InvalidToken, TokenService, Verified, WouldBlock

__all__ = ["InvalidToken", "MissingToken", "WouldBlock", "authenticate",
           "authenticate_blocking"]


class MissingToken(Exception):
    """The request carries no `Authorization: Bearer <token>` header."""


def authenticate(authorization: str, tokens: TokenService, audiences: frozenset[str],
                 may_block: bool = False) -> Verified:
    """The bearer token in `authorization` (the request's Authorization header, "" without
    one), verified valid for one of `audiences`: its principal and its expiry.

    MissingToken when there is none, InvalidToken (message safe to show) when it is not
    acceptable. WouldBlock, unless `may_block`, when a token of an external issuer needs
    the issuer's keys fetched first: the caller then calls again in a worker thread
    (`authenticate_blocking`), so that the event loop never waits on the network. Not a
    coroutine itself: the usual case (a cached token) costs no await.
    """
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MissingToken
    return tokens.verified(token, audiences, may_block=may_block)


async def authenticate_blocking(authorization: str, tokens: TokenService,
                                audiences: frozenset[str]) -> Verified:
    """`authenticate` in a worker thread, where fetching an issuer's keys may block."""
    return await run_in_threadpool(authenticate, authorization, tokens, audiences, True)
