"""Development-server endpoints: move the clock (all workers share it).

Guarded by the same secret as the App Service identity endpoint.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from openkeyvault.api.errors import error_body
from openkeyvault.api.http import json_response, parse_json_object
from openkeyvault.deployment import Deployment
from openkeyvault.ops.clock import OffsetClock
from openkeyvault.vault.errors import BadParameter

CLOCK_PATH = "/_okv/dev/clock"
MAX_ADVANCE = 20 * 365 * 86_400


def clock(request: Request, raw: bytes, d: Deployment) -> Response:
    given = request.headers.get("x-identity-header", "")
    if not hmac.compare_digest(given.encode(), d.identity_header.encode()):
        return json_response(error_body("Unauthorized",
                                        "The X-IDENTITY-HEADER header is missing or wrong."), 401)
    if not isinstance(d.clock, OffsetClock):
        return json_response(error_body("NotFound", "This server's clock cannot be moved."), 404)
    if request.method == "POST":
        advance = parse_json_object(raw).get("advanceSeconds")
        if isinstance(advance, bool) or not isinstance(advance, int | float) or not (
            0 <= advance <= MAX_ADVANCE
        ):
            raise BadParameter(f"advanceSeconds must be a number from 0 to {MAX_ADVANCE}.")
        d.clock.advance(float(advance))
        ran = {name: job() for name, job in d.scheduled_jobs().items()}
        return json_response({"offset": d.clock.offset, "now": int(d.clock.now()),
                              "purged": ran["purge-expired"], "jobs": ran})
    return json_response({"offset": d.clock.offset, "now": int(d.clock.now())})
