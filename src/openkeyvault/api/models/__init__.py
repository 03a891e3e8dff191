"""Request models: the wire shape of each request body, named after the REST spec's
parameter models (SecretSetParameters, KeyCreateParameters, ...).

A handler decodes its body with `decode_body(ctx, Model)` and hands the domain the typed
request that `Model.to_request()` builds (types from `vault/requests.py`): no raw wire
dict crosses into `vault/`. Wrong JSON types, missing required fields and numbers out
of range are 400 BadParameter here; unknown fields are ignored, as Azure ignores them.
A new collection adds its own module next to `secrets.py` and `keys.py`.
"""

from openkeyvault.api.models.wire import Model, decode, decode_body

__all__ = ["Model", "decode", "decode_body"]
