"""Seal descriptions and the Shamir seal's shares (storage/seals.py).

The Key Vault seal runs against a real server in tests/security/test_auto_unseal.py.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import threading

import pytest

from openkeyvault.storage import seals
from openkeyvault.storage.seals import (
    ConflictingShare,
    DevFileSeal,
    ForeignShare,
    MalformedShare,
    Progress,
    SealDescriptionError,
    ShamirSeal,
    ShareRefused,
    SharesDoNotMatch,
    Unsealer,
    describe,
)

SHARE = re.compile(r"okv-share-([0-9a-f]{8})-([0-9]{1,3})-([A-Za-z0-9_-]{48})")


@pytest.fixture
def root_key() -> bytes:
    return secrets.token_bytes(32)


def forged(stored: dict, x: int, y: bytes | None = None) -> str:
    """A well-formed share of this seal (right seal id, valid checksum) with the wrong y:
    what no typo produces, but a wrong share handed in on purpose would be."""
    return seals._share_text(stored["seal_id"][:8], (y or secrets.token_bytes(32)) + bytes([x]))


def retype(share: str, index: int) -> str:
    """`share` with the character at `index` replaced by another one of the alphabet."""
    alphabet = "0123456789abcdef" if share[index] in "0123456789abcdef" else "AbQz"
    replacement = next(c for c in alphabet if c != share[index])
    return share[:index] + replacement + share[index + 1:]


def unseal(stored: dict, shares: list[str]) -> Progress:
    unsealer = Unsealer(stored)
    progress = unsealer.progress
    for share in shares:
        progress = unsealer.submit(share)
    return progress


# ---- the stored description and the shares' form ---------------------------------------------
def test_init_describes_the_seal_without_its_secrets(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 5, 3)
    assert set(stored) == {"type", "seal_id", "shares", "threshold", "verifier"}
    assert stored["type"] == "shamir" and stored["shares"] == 5 and stored["threshold"] == 3
    assert re.fullmatch(r"[0-9a-f]{32}", stored["seal_id"])
    text = json.dumps(stored)
    assert json.loads(text) == stored
    for form in (root_key.hex(), base64.b64encode(root_key).decode(),
                 base64.urlsafe_b64encode(root_key).decode().rstrip("=")):
        assert form not in text
    for share in shares:
        assert SHARE.fullmatch(share).group(3)[:20] not in text


def test_shares_are_short_numbered_and_carry_the_seal_id(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 5, 3)
    assert len(shares) == 5 and len(set(shares)) == 5
    for n, share in enumerate(shares, start=1):
        m = SHARE.fullmatch(share)
        assert m, share
        assert m.group(1) == stored["seal_id"][:8]
        assert int(m.group(2)) == n
        assert len(share) <= 72


def test_each_init_is_a_new_seal(root_key: bytes) -> None:
    a, shares_a = ShamirSeal.init(root_key, 3, 2)
    b, shares_b = ShamirSeal.init(root_key, 3, 2)
    assert a["seal_id"] != b["seal_id"] and a["verifier"] != b["verifier"]
    assert not set(shares_a) & set(shares_b)


@pytest.mark.parametrize(("shares", "threshold"), [(1, 1), (3, 1), (2, 3), (256, 2), (0, 0)])
def test_init_refuses_bad_counts(root_key: bytes, shares: int, threshold: int) -> None:
    with pytest.raises(ValueError, match="threshold"):
        ShamirSeal.init(root_key, shares, threshold)


@pytest.mark.parametrize("key", [b"", b"k" * 16, b"k" * 31, b"k" * 33])
def test_init_refuses_a_root_key_of_the_wrong_size(key: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        ShamirSeal.init(key, 3, 2)


def test_describe_shows_type_and_counts_only(root_key: bytes) -> None:
    stored, _ = ShamirSeal.init(root_key, 7, 4)
    assert describe(stored) == {"type": "shamir", "threshold": 4, "shares": 7}
    assert describe(DevFileSeal.init()) == {"type": "devkey"}
    keyvault = {"type": "azurekeyvault", "key_id": "https://v.vault.azure.net/keys/k/1",
                "algorithm": "RSA-OAEP-256", "wrapped_key": "AAAA", "thumbprint": "t",
                "verifier": "v"}
    assert describe(keyvault) == {"type": "azurekeyvault"}


@pytest.mark.parametrize("stored", [
    {}, {"type": "plaintext"}, {"type": None}, [], "shamir",
    {"type": "shamir"},
    {"type": "shamir", "seal_id": "00" * 16, "shares": 3, "threshold": 5, "verifier": "v"},
    {"type": "shamir", "seal_id": "00" * 16, "shares": True, "threshold": 2, "verifier": "v"},
    {"type": "shamir", "seal_id": "XYZ", "shares": 3, "threshold": 2, "verifier": "v"},
])
def test_unusable_descriptions_are_refused(stored: object) -> None:
    with pytest.raises(SealDescriptionError):
        describe(stored)  # type: ignore[arg-type]
    with pytest.raises(SealDescriptionError):
        Unsealer(stored)  # type: ignore[arg-type]


def test_dev_file_seal(tmp_path) -> None:
    stored = DevFileSeal.init()
    assert stored == {"type": "devkey"}
    path = tmp_path / "root.key"
    key = DevFileSeal.unseal(stored, path, create=True)
    assert len(key) == 32 and DevFileSeal.unseal(stored, path) == key
    with pytest.raises(SealDescriptionError):
        DevFileSeal.unseal({"type": "shamir"}, path)


# ---- unsealing --------------------------------------------------------------------------------
def test_any_threshold_of_the_shares_give_the_root_key(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 5, 3)
    for chosen in itertools.combinations(shares, 3):
        unsealer = Unsealer(stored)
        assert unsealer.submit(chosen[0]) == Progress(1, 3)
        assert unsealer.submit(chosen[1]) == Progress(2, 3)
        done = unsealer.submit(chosen[2])
        assert done.done and done.root_key == root_key and done.received == 3


@pytest.mark.parametrize(("shares", "threshold"), [(2, 2), (3, 2), (10, 6), (255, 255)])
def test_round_trips(root_key: bytes, shares: int, threshold: int) -> None:
    stored, texts = ShamirSeal.init(root_key, shares, threshold)
    assert unseal(stored, texts[-threshold:]).root_key == root_key


def test_progress_does_not_show_the_root_key(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 2, 2)
    done = unseal(stored, shares)
    assert done.root_key == root_key
    assert root_key.hex() not in repr(done) and repr(root_key) not in repr(done)


def test_typed_in_whitespace_is_ignored(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 3, 2)
    spaced = "  " + shares[0][:20] + " \n" + shares[0][20:40] + "\t" + shares[0][40:] + "\n"
    assert unseal(stored, [spaced, shares[2]]).root_key == root_key


def test_a_duplicate_share_does_not_count_twice(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 5, 3)
    unsealer = Unsealer(stored)
    unsealer.submit(shares[0])
    again = unsealer.submit(shares[0])
    assert again.received == 1 and again.duplicate and not again.done
    assert unsealer.submit(" " + shares[0]).received == 1
    assert unsealer.submit(shares[1]).received == 2
    assert unsealer.submit(shares[1]).received == 2
    assert unsealer.submit(shares[4]).root_key == root_key


def test_every_single_typo_is_caught_before_counting(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 3, 2)
    unsealer = Unsealer(stored)
    share = shares[0]
    code_start = share.rindex("-") + 1
    positions = [*range(len("okv-share-"), len("okv-share-") + 8), *range(code_start, len(share))]
    for i in positions:
        typo = retype(share, i)
        with pytest.raises(MalformedShare, match="mistyped") as caught:
            unsealer.submit(typo)
        assert share[code_start:code_start + 12] not in str(caught.value)
    assert unsealer.progress.received == 0


def test_a_wrong_share_number_is_caught(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 5, 3)
    renumbered = shares[1].replace("-2-", "-3-", 1)
    with pytest.raises(MalformedShare, match="checksum"):
        Unsealer(stored).submit(renumbered)


@pytest.mark.parametrize("text", [
    "", "hello", "okv-share", "okv-share-0123abcd-1-", "okv-share-0123abcd-0-AAAA",
    "okv-share-0123ABCD-1-" + "A" * 48, "okv-share-0123abcd-01-" + "A" * 48,
    "okv-share-0123abcd-1-" + "A" * 47 + "!", "OKV-SHARE-0123abcd-1-" + "A" * 48,
])
def test_malformed_shares_are_refused(root_key: bytes, text: str) -> None:
    stored, _ = ShamirSeal.init(root_key, 3, 2)
    with pytest.raises(MalformedShare, match="okv-share-<8 hex digits>-<number>-<code>"):
        Unsealer(stored).submit(text)


def test_truncated_or_padded_shares_are_refused(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 3, 2)
    unsealer = Unsealer(stored)
    for text in (shares[0][:-4], shares[0] + "AAAA", shares[0][:-1]):
        with pytest.raises(MalformedShare):
            unsealer.submit(text)
    with pytest.raises(MalformedShare):
        unsealer.submit(None)  # type: ignore[arg-type]
    assert unsealer.progress.received == 0


def test_a_share_number_beyond_the_seal_is_refused(root_key: bytes) -> None:
    stored, _ = ShamirSeal.init(root_key, 3, 2)
    with pytest.raises(MalformedShare, match="3 shares; share 4"):
        Unsealer(stored).submit(forged(stored, 4))
    with pytest.raises(MalformedShare):
        Unsealer(stored).submit(forged(stored, 1).replace("-1-", "-256-"))


def test_a_share_of_another_deployment_is_refused(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 3, 2)
    other, other_shares = ShamirSeal.init(secrets.token_bytes(32), 3, 2)
    unsealer = Unsealer(stored)
    unsealer.submit(shares[0])
    with pytest.raises(ForeignShare) as caught:
        unsealer.submit(other_shares[1])
    message = str(caught.value)
    assert other["seal_id"][:8] in message and stored["seal_id"][:8] in message
    assert unsealer.progress.received == 1
    assert unsealer.submit(shares[1]).root_key == root_key


def test_a_share_of_the_same_key_split_again_is_foreign(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 3, 2)
    _, again = ShamirSeal.init(root_key, 3, 2)
    with pytest.raises(ForeignShare):
        unseal(stored, [shares[0], again[1]])


def test_a_wrong_combination_resets_and_says_it_cannot_tell_which(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 5, 3)
    unsealer = Unsealer(stored)
    unsealer.submit(shares[0])
    unsealer.submit(forged(stored, 4))
    with pytest.raises(SharesDoNotMatch, match="which one cannot be told") as caught:
        unsealer.submit(shares[2])
    assert "reset" in str(caught.value)
    assert unsealer.progress == Progress(0, 3)
    # the right shares still open it afterwards
    for share in shares[2:]:
        progress = unsealer.submit(share)
    assert progress.root_key == root_key


def test_a_lowered_threshold_in_storage_does_not_open_with_fewer_shares(
        root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 5, 3)
    with pytest.raises(SharesDoNotMatch):
        unseal({**stored, "threshold": 2}, shares[:2])


def test_a_changed_verifier_refuses_the_right_shares(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 3, 2)
    other, _ = ShamirSeal.init(secrets.token_bytes(32), 3, 2)
    with pytest.raises(SharesDoNotMatch):
        unseal({**stored, "verifier": other["verifier"]}, shares[:2])


def test_a_conflicting_share_is_not_counted(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 5, 3)
    unsealer = Unsealer(stored)
    unsealer.submit(shares[1])
    with pytest.raises(ConflictingShare, match="share 2 was already submitted"):
        unsealer.submit(forged(stored, 2))
    assert unsealer.progress.received == 1
    unsealer.submit(shares[3])
    assert unsealer.submit(shares[4]).root_key == root_key


def test_reset_forgets_the_shares(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 3, 2)
    unsealer = Unsealer(stored)
    unsealer.submit(shares[0])
    unsealer.reset()
    assert unsealer.progress == Progress(0, 2)
    assert unsealer.submit(shares[0]) == Progress(1, 2)


def test_after_the_root_key_a_new_round_starts(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 3, 2)
    unsealer = Unsealer(stored)
    unsealer.submit(shares[0])
    assert unsealer.submit(shares[1]).root_key == root_key
    assert unsealer.progress == Progress(0, 2)


def test_concurrent_submissions_give_the_root_key_once(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 8, 8)
    unsealer = Unsealer(stored)
    results: list[Progress] = []
    barrier = threading.Barrier(len(shares))

    def submit(share: str) -> None:
        barrier.wait()
        results.append(unsealer.submit(share))

    threads = [threading.Thread(target=submit, args=(s,)) for s in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.received for r in results) == list(range(1, 9))
    assert [r.root_key for r in results if r.done] == [root_key]


def test_messages_never_hold_shares_or_the_root_key(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 3, 2)
    _, other = ShamirSeal.init(root_key, 3, 2)
    unsealer = Unsealer(stored)
    messages = []
    for attempt in (retype(shares[0], len(shares[0]) - 3), other[0], "nonsense"):
        with pytest.raises(ShareRefused) as caught:
            unsealer.submit(attempt)
        messages.append(str(caught.value))
    unsealer.submit(shares[0])
    with pytest.raises(SharesDoNotMatch) as caught:
        unsealer.submit(forged(stored, 3))
    messages.append(str(caught.value))
    text = "\n".join(messages)
    for share in (*shares, *other):
        assert SHARE.fullmatch(share).group(3)[:12] not in text
    assert root_key.hex() not in text


# ---- rekey ------------------------------------------------------------------------------------
def test_rekey_keeps_the_root_key_and_retires_the_old_shares(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 5, 3)
    new_stored, new_shares = ShamirSeal.rekey(stored, [shares[4], shares[0], shares[2]], 7, 4)
    assert describe(new_stored) == {"type": "shamir", "threshold": 4, "shares": 7}
    assert new_stored["seal_id"] != stored["seal_id"]
    assert len(new_shares) == 7
    assert unseal(new_stored, new_shares[3:]).root_key == root_key
    with pytest.raises(ForeignShare, match="before the last rekey"):
        Unsealer(new_stored).submit(shares[0])


def test_rekey_needs_threshold_valid_old_shares(root_key: bytes) -> None:
    stored, shares = ShamirSeal.init(root_key, 5, 3)
    with pytest.raises(ShareRefused, match="needs 3 different shares.*2 were given"):
        ShamirSeal.rekey(stored, [shares[0], shares[1], shares[1]], 3, 2)
    with pytest.raises(SharesDoNotMatch):
        ShamirSeal.rekey(stored, [shares[0], shares[1], forged(stored, 5)], 3, 2)
    with pytest.raises(MalformedShare):
        ShamirSeal.rekey(stored, [shares[0], retype(shares[1], -2), shares[2]], 3, 2)
    with pytest.raises(ValueError, match="threshold"):
        ShamirSeal.rekey(stored, shares[:3], 3, 4)
    with pytest.raises(ValueError, match="threshold"):  # checked before the old shares
        ShamirSeal.rekey(stored, [], 3, 1)
