"""The key-derivation work a PKCS#12 file asks for, read before the file is opened.

A PFX names its own iteration counts (the MAC's and each password-based encryption's),
so an uploaded file could ask OpenSSL for billions of hash rounds. `iteration_counts`
walks the file's DER/BER structure, without decrypting anything, and returns every
count it can see: the MacData iterations and those of every PBKDF2 or PKCS#12 PBE
AlgorithmIdentifier outside encrypted content. Counts inside encrypted content only
become visible after decryption and are not seen here.
"""

from __future__ import annotations

from collections.abc import Iterator

_PBKDF2 = bytes.fromhex("2a864886f70d01050c")  # 1.2.840.113549.1.5.12
_PKCS12_PBE_PREFIX = bytes.fromhex("2a864886f70d010c01")  # 1.2.840.113549.1.12.1.n
_MAX_DEPTH = 64
_MAX_NODES = 50_000


class DerError(ValueError):
    """The bytes are not well-formed DER/BER."""


class DerLimitError(DerError):
    """The structure is deeper or larger than any PFX needs."""


class _Node:
    __slots__ = ("tag", "constructed", "start", "end", "next")

    def __init__(self, tag: int, constructed: bool, start: int, end: int, nxt: int) -> None:
        self.tag, self.constructed, self.start, self.end, self.next = (
            tag, constructed, start, end, nxt,
        )


class _Walker:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.nodes = 0
        self.counts: list[int] = []

    def node(self, pos: int, limit: int, depth: int) -> _Node:
        data = self.data
        self.nodes += 1
        if self.nodes > _MAX_NODES or depth > _MAX_DEPTH:
            raise DerLimitError("too deep or too many elements")
        if pos + 2 > limit:
            raise DerError("truncated")
        first = data[pos]
        tag, constructed = first, bool(first & 0x20)
        pos += 1
        if first & 0x1F == 0x1F:  # high tag number form
            tag = 0
            for _ in range(4):
                if pos >= limit:
                    raise DerError("truncated tag")
                tag = (tag << 7) | (data[pos] & 0x7F)
                pos += 1
                if not data[pos - 1] & 0x80:
                    break
            else:
                raise DerError("tag too long")
            tag |= 0x1_0000_0000  # never equal to a low tag
        if pos >= limit:
            raise DerError("truncated length")
        length = data[pos]
        pos += 1
        if length == 0x80:  # BER indefinite length: children up to an end-of-contents
            if not constructed:
                raise DerError("indefinite primitive")
            child = pos
            while True:
                if child + 2 > limit:
                    raise DerError("no end-of-contents")
                if data[child] == 0 and data[child + 1] == 0:
                    return _Node(tag, constructed, pos, child, child + 2)
                child = self.node(child, limit, depth + 1).next
        if length & 0x80:
            count = length & 0x7F
            if count > 8 or pos + count > limit:
                raise DerError("bad length")
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        end = pos + length
        if end > limit:
            raise DerError("truncated content")
        return _Node(tag, constructed, pos, end, end)

    def children(self, parent: _Node, depth: int) -> Iterator[_Node]:
        pos = parent.start
        while pos < parent.end:
            child = self.node(pos, parent.end, depth)
            yield child
            pos = child.next

    def visit(self, node: _Node, depth: int) -> None:
        data = self.data
        if node.tag == 0x04 and not node.constructed:
            self.maybe_nested(data[node.start : node.end], depth)
            return
        if node.tag == 0x24:  # BER constructed OCTET STRING: the pieces joined
            joined = b"".join(
                data[c.start : c.end] for c in self.children(node, depth + 1) if c.tag == 0x04
            )
            self.maybe_nested(joined, depth)
            return
        if not node.constructed:
            return
        kids = list(self.children(node, depth + 1))
        if node.tag == 0x30 and len(kids) >= 2 and kids[0].tag == 0x06:
            oid = data[kids[0].start : kids[0].end]
            params = kids[1]
            if params.tag == 0x30 and (
                oid == _PBKDF2 or (oid[:-1] == _PKCS12_PBE_PREFIX and len(oid) == 10)
            ):
                fields = list(self.children(params, depth + 2))
                if len(fields) >= 2 and fields[1].tag == 0x02:
                    self.counts.append(self.integer(fields[1]))
        for kid in kids:
            self.visit(kid, depth + 1)

    def maybe_nested(self, content: bytes, depth: int) -> None:
        if not content or content[0] not in (0x30, 0x31, 0xA0):
            return
        inner = _Walker(content)
        inner.nodes = self.nodes
        try:
            top = inner.node(0, len(content), depth + 1)
            if top.next != len(content):
                return
            inner.visit(top, depth + 1)
        except DerLimitError:
            raise
        except DerError:  # an octet string that is not itself DER: plain data
            return
        finally:
            self.nodes = inner.nodes
        self.counts += inner.counts

    def integer(self, node: _Node) -> int:
        body = self.data[node.start : node.end]
        if len(body) > 8:
            return 1 << 64
        return int.from_bytes(body, "big", signed=True)


def iteration_counts(data: bytes) -> list[int]:
    """Every MAC and PBE iteration count visible in a PFX; DerError if it is not one."""
    walker = _Walker(data)
    top = walker.node(0, len(data), 0)
    if top.tag != 0x30 or not top.constructed:
        raise DerError("not a SEQUENCE")
    parts = list(walker.children(top, 1))
    if len(parts) < 2 or parts[0].tag != 0x02:
        raise DerError("not a PFX")
    if len(parts) >= 3 and parts[2].tag == 0x30:  # MacData
        mac = list(walker.children(parts[2], 2))
        walker.counts.append(walker.integer(mac[2]) if len(mac) >= 3 and mac[2].tag == 0x02 else 1)
    walker.visit(parts[1], 1)
    return walker.counts
