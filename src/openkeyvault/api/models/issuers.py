"""Certificate issuer and contacts request bodies (certificates.json). For an issuer, null
and absent mean the same (not given); the password (`credentials.pwd`) is write-only."""

from __future__ import annotations

from openkeyvault.api.models.wire import Model
from openkeyvault.vault import certrequests as r


class IssuerCredentials(Model, frozen=True):
    account_id: str | None = None
    pwd: str | None = None

    def to_request(self) -> r.IssuerCredentials:
        return r.IssuerCredentials(self.account_id, self.pwd)


class AdministratorDetails(Model, frozen=True):
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None

    def to_request(self) -> r.AdministratorDetails:
        return r.AdministratorDetails(self.first_name, self.last_name, self.email, self.phone)


class OrganizationDetails(Model, frozen=True):
    id: str | None = None
    admin_details: list[AdministratorDetails] | None = None

    def to_request(self) -> r.OrganizationDetails:
        admins = self.admin_details
        return r.OrganizationDetails(self.id, None if admins is None
                                     else [a.to_request() for a in admins])


class IssuerAttributes(Model, frozen=True):
    """created and updated are read-only and ignored."""

    enabled: bool | None = None


class CertificateIssuerUpdateParameters(Model, frozen=True):
    provider: str | None = None
    credentials: IssuerCredentials | None = None
    org_details: OrganizationDetails | None = None
    attributes: IssuerAttributes | None = None

    def to_request(self) -> r.CertificateIssuer:
        c, o, a = self.credentials, self.org_details, self.attributes
        return r.CertificateIssuer(self.provider, c.to_request() if c else None,
                                   o.to_request() if o else None, a.enabled if a else None)


class CertificateIssuerSetParameters(CertificateIssuerUpdateParameters, frozen=True):
    provider: str  # required when setting


class Contact(Model, frozen=True):
    email: str | None = None
    name: str | None = None
    phone: str | None = None

    def to_request(self) -> r.CertificateContact:
        return r.CertificateContact(self.email, self.name, self.phone)


class Contacts(Model, frozen=True):
    """id is read-only and ignored; the service requires 1 to 100 contacts."""

    contacts: list[Contact] | None = None

    def to_request(self) -> list[r.CertificateContact] | None:
        return None if self.contacts is None else [c.to_request() for c in self.contacts]
