"""Certificate contacts: the vault-wide list of people told about certificate events
(the EmailContacts lifetime action).

Setting and deleting need the data action certificatecontacts/write. Azure defines no
read action for contacts: reading them needs certificates/read under RBAC, and the
`managecontacts` permission under access policies (as the REST reference states).
"""

from __future__ import annotations

from dataclasses import dataclass

from openkeyvault.access.authorize import Authorizer
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.certificate_issuers import CertificateIssuerStore
from openkeyvault.storage.records import VaultRecord
from openkeyvault.vault.certrequests import CertificateContact
from openkeyvault.vault.context import Caller, authorize_operation
from openkeyvault.vault.errors import BadParameter, NotFound
from openkeyvault.vault.issuers import MAX_NAME_CHARS, MAX_PHONE_CHARS, check_email, text
from openkeyvault.vault.operations import CONTACTS as PATH

MAX_CONTACTS = 100  # per vault
NOT_FOUND_CODE = "ContactsNotFound"


@dataclass(frozen=True)
class Contact:
    email: str
    name: str | None = None
    phone: str | None = None

    def to_dict(self) -> dict[str, str]:
        out = {"email": self.email}
        if self.name is not None:
            out["name"] = self.name
        if self.phone is not None:
            out["phone"] = self.phone
        return out


def _contacts(stored: list[dict[str, str]]) -> list[Contact]:
    return [Contact(c["email"], c.get("name"), c.get("phone")) for c in stored]


def parse_contacts(value: list[CertificateContact] | None) -> list[Contact]:
    """The `contacts` list of a Contacts body: 1 to MAX_CONTACTS entries, each with an email."""
    if value is None or not 1 <= len(value) <= MAX_CONTACTS:
        raise BadParameter(f"'contacts' must be a list of 1 to {MAX_CONTACTS} contacts; "
                           "delete the contacts to clear them.")
    out = []
    for c in value:
        email = check_email(c.email, "contacts[].email")
        if email is None:
            raise BadParameter("Each contact must have an 'email'.")
        out.append(Contact(email, text(c.name, "contacts[].name", MAX_NAME_CHARS),
                           text(c.phone, "contacts[].phone", MAX_PHONE_CHARS)))
    return out


def not_found() -> NotFound:
    return NotFound("Contacts not found", code=NOT_FOUND_CODE)


class ContactService:
    def __init__(self, store: CertificateIssuerStore, authorizer: Authorizer,
                 clock: Clock) -> None:
        self._store = store
        self._authz = authorizer
        self._clock = clock

    def _check(self, caller: Caller, operation: str) -> None:
        authorize_operation(self._authz, caller, operation, PATH)

    def get(self, caller: Caller) -> list[Contact]:
        self._check(caller, "CertificateContactsGet")
        stored = self._store.get_contacts(caller.vault.id)
        if stored is None:
            raise not_found()
        return _contacts(stored)

    def set(self, caller: Caller, contacts: list[CertificateContact] | None) -> list[Contact]:
        self._check(caller, "CertificateContactsSet")
        parsed = parse_contacts(contacts)
        self._store.set_contacts(caller.vault.id, [c.to_dict() for c in parsed],
                                 int(self._clock.now()))
        return parsed

    def delete(self, caller: Caller) -> list[Contact]:
        self._check(caller, "CertificateContactsDelete")
        stored = self._store.delete_contacts(caller.vault.id)
        if stored is None:
            raise not_found()
        return _contacts(stored)

    # ---- for the certificate service (EmailContacts) ----------------------------------
    def of(self, vault: VaultRecord) -> list[Contact]:
        """The vault's contacts, without authorization (for lifetime actions); [] if none."""
        return _contacts(self._store.get_contacts(vault.id) or [])
