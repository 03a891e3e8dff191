"""Attributes whose value is itself a template (CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE: an
array of CK_ATTRIBUTE), which python-pkcs11 does not pack: `mapper()` is an attribute
mapper that packs a {attribute: bool} dict for them, for sessions that make such keys.

The array holds pointers to the values, so the values live in buffers kept for the life
of the process (one per boolean: there are two), never in temporaries; a token copies
the template when it makes the object.
"""

from __future__ import annotations

import ctypes

from pkcs11.attributes import AttributeMapper
from pkcs11.constants import Attribute


class _CkAttribute(ctypes.Structure):
    _fields_ = [("type", ctypes.c_ulong), ("pValue", ctypes.c_void_p),
                ("ulValueLen", ctypes.c_ulong)]


_BBOOL = {True: ctypes.c_ubyte(1), False: ctypes.c_ubyte(0)}


def pack(template: dict[Attribute, bool]) -> bytes:
    """The CK_ATTRIBUTE array of a template of CK_BBOOL attributes."""
    items = [_CkAttribute(int(attribute), ctypes.addressof(_BBOOL[bool(value)]), 1)
             for attribute, value in template.items()]
    return bytes((_CkAttribute * len(items))(*items))


def mapper() -> AttributeMapper:
    out = AttributeMapper()
    for attribute in (Attribute.WRAP_TEMPLATE, Attribute.UNWRAP_TEMPLATE):
        out.register_handler(attribute, pack, bytes)
    return out
