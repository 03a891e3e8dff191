"""The dev identity's token from one node's managed-identity endpoint, as a credential.

Each dev node is its own token authority (its issuer and audiences carry its port), so
a test that talks to several nodes gives each client the node it talks to.
"""

from __future__ import annotations

from typing import Any

import requests
from azure.core.credentials import AccessToken

from tests.support.server import DevServer


class NodeIdentity:
    def __init__(self, node: DevServer) -> None:
        self.node = node

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        resource = scopes[0].removesuffix("/.default")
        answer = requests.get(self.node.env["IDENTITY_ENDPOINT"],
                              params={"resource": resource, "api-version": "2019-08-01"},
                              headers={"X-IDENTITY-HEADER": self.node.env["IDENTITY_HEADER"]},
                              verify=self.node.ca, timeout=30)
        answer.raise_for_status()
        body = answer.json()
        return AccessToken(body["access_token"], int(body["expires_on"]))
