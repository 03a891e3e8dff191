"""Certificates request bodies (certificates.json): create, import, update, the policy and
its parts, the pending operation, merge and restore.

Policy fields keep "not sent" apart from null (`UNSET`): a policy update merges over the
stored policy, where null resets a field to its default and absent keeps it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from openkeyvault.api.models.common import Attributes, RestoreParameters, attributes
from openkeyvault.api.models.wire import UNSET, Model, Tags, UnsetType, present
from openkeyvault.vault import certrequests as r

Strings = list[str]


class CertificateAttributes(Attributes, frozen=True):
    pass


class KeyProperties(Model, frozen=True):
    exportable: bool | None | UnsetType = UNSET
    kty: str | None | UnsetType = UNSET
    key_size: int | None | UnsetType = UNSET
    reuse_key: bool | None | UnsetType = UNSET
    crv: str | None | UnsetType = UNSET

    def to_request(self) -> r.KeyProperties:
        return r.KeyProperties(present(self.exportable), present(self.kty),
                               present(self.key_size), present(self.reuse_key),
                               present(self.crv))


class SecretProperties(Model, frozen=True):
    content_type: str | None | UnsetType = msgspec.field(default=UNSET, name="contentType")

    def to_request(self) -> r.SecretProperties:
        return r.SecretProperties(present(self.content_type))


class SubjectAlternativeNames(Model, frozen=True):
    emails: Strings | None | UnsetType = UNSET
    dns_names: Strings | None | UnsetType = UNSET
    upns: Strings | None | UnsetType = UNSET
    ip_addresses: Strings | None | UnsetType = msgspec.field(default=UNSET, name="ipAddresses")
    uris: Strings | None | UnsetType = UNSET

    def to_request(self) -> r.SubjectAlternativeNames:
        return r.SubjectAlternativeNames(present(self.emails), present(self.dns_names),
                                         present(self.upns), present(self.ip_addresses),
                                         present(self.uris))


class X509CertificateProperties(Model, frozen=True):
    subject: str | None | UnsetType = UNSET
    ekus: Strings | None | UnsetType = UNSET
    sans: SubjectAlternativeNames | None | UnsetType = UNSET
    key_usage: Strings | None | UnsetType = UNSET
    validity_months: int | None | UnsetType = UNSET

    def to_request(self) -> r.X509CertificateProperties:
        return r.X509CertificateProperties(present(self.subject), present(self.ekus),
                                           _part(self.sans), present(self.key_usage),
                                           present(self.validity_months))


class IssuerParameters(Model, frozen=True):
    name: str | None | UnsetType = UNSET
    cty: str | None | UnsetType = UNSET
    cert_transparency: bool | None | UnsetType = UNSET

    def to_request(self) -> r.IssuerParameters:
        return r.IssuerParameters(present(self.name), present(self.cty),
                                  present(self.cert_transparency))


class Trigger(Model, frozen=True):
    lifetime_percentage: int | None | UnsetType = UNSET
    days_before_expiry: int | None | UnsetType = UNSET

    def to_request(self) -> r.Trigger:
        return r.Trigger(present(self.lifetime_percentage), present(self.days_before_expiry))


class Action(Model, frozen=True):
    action_type: str | None | UnsetType = UNSET

    def to_request(self) -> r.Action:
        return r.Action(present(self.action_type))


class LifetimeAction(Model, frozen=True):
    trigger: Trigger | None | UnsetType = UNSET
    action: Action | None | UnsetType = UNSET

    def to_request(self) -> r.LifetimeAction:
        return r.LifetimeAction(_part(self.trigger), _part(self.action))


class PlatformManaged(Model, frozen=True):
    certificate_usage: str | None | UnsetType = msgspec.field(default=UNSET,
                                                              name="certificateUsage")
    metadata: dict[str, Any] | None | UnsetType = UNSET

    def to_request(self) -> r.PlatformManaged:
        return r.PlatformManaged(present(self.certificate_usage), present(self.metadata))


class CertificatePolicy(Model, frozen=True):
    key_props: KeyProperties | None | UnsetType = UNSET
    secret_props: SecretProperties | None | UnsetType = UNSET
    x509_props: X509CertificateProperties | None | UnsetType = UNSET
    lifetime_actions: list[LifetimeAction] | None | UnsetType = UNSET
    issuer: IssuerParameters | None | UnsetType = UNSET
    attributes: CertificateAttributes | None | UnsetType = UNSET
    platform_managed: PlatformManaged | None | UnsetType = msgspec.field(
        default=UNSET, name="platformManaged")

    def to_request(self) -> r.CertificatePolicy:
        actions = self.lifetime_actions
        a = self.attributes
        return r.CertificatePolicy(
            _part(self.key_props), _part(self.secret_props), _part(self.x509_props),
            [x.to_request() for x in actions] if isinstance(actions, list) else present(actions),
            _part(self.issuer),
            r.PolicyAttributes(present(a.enabled)) if isinstance(a, Attributes) else present(a),
            _part(self.platform_managed))


def _part(value: Any) -> Any:
    """A nested part for the domain: its typed request, or None / UNSET as sent."""
    to_request = getattr(value, "to_request", None)
    return to_request() if to_request is not None else present(value)


def _policy(p: CertificatePolicy | None) -> r.CertificatePolicy | None:
    return p.to_request() if p is not None else None


class CertificateCreateParameters(Model, frozen=True):
    policy: CertificatePolicy | None = None
    attributes: CertificateAttributes | None = None
    tags: Tags | None = None
    preserve_cert_order: bool | None = msgspec.field(default=None, name="preserveCertOrder")

    def to_request(self) -> r.CertificateCreate:
        return r.CertificateCreate(_policy(self.policy), attributes(self.attributes),
                                   self.tags, self.preserve_cert_order)


class CertificateImportParameters(Model, frozen=True):
    value: str
    pwd: str | None = None
    policy: CertificatePolicy | None = None
    attributes: CertificateAttributes | None = None
    tags: Tags | None = None
    preserve_cert_order: bool | None = msgspec.field(default=None, name="preserveCertOrder")

    def to_request(self) -> r.CertificateImport:
        return r.CertificateImport(self.value, self.pwd, _policy(self.policy),
                                   attributes(self.attributes), self.tags,
                                   self.preserve_cert_order)


class CertificateUpdateParameters(Model, frozen=True):
    policy: CertificatePolicy | None = None
    attributes: CertificateAttributes | None = None
    tags: Tags | None | UnsetType = UNSET

    def to_request(self) -> r.CertificateUpdate:
        return r.CertificateUpdate(_policy(self.policy), attributes(self.attributes),
                                   present(self.tags))


class CertificateOperationUpdateParameter(Model, frozen=True):
    cancellation_requested: bool


class CertificateMergeParameters(Model, frozen=True):
    x5c: Strings
    attributes: CertificateAttributes | None = None
    tags: Tags | None = None

    def to_request(self) -> r.CertificateMerge:
        a = self.attributes
        return r.CertificateMerge(self.x5c, a.to_request() if a is not None else None,
                                  self.tags)


class CertificateRestoreParameters(RestoreParameters, frozen=True):
    pass
