"""Signed URL tokens (pure): what is signed, what verifies, and why each bad token is refused."""

from __future__ import annotations

import base64

import pytest

from nvr.api.urltokens import MAX_CHARS, BadUrlToken, Grant, UrlSigner

NOW = 1_800_000_000_000
KEY = bytes(range(32))


def signer(**kw) -> UrlSigner:
    return UrlSigner(KEY, **kw)


def grant(**changes) -> Grant:
    fields = {"signer": "viewer", "signer_created_ms": 1_700_000_000_123, "camera": "gate-1",
              "start_ms": NOW - 3_600_000, "end_ms": NOW - 3_000_000, "expires_ms": NOW + 600_000} | changes
    return Grant(**fields)


def raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_signed_grant_verifies_whole_until_it_expires():
    g = grant()
    token = signer().sign(g)
    assert signer().verify(token, NOW) == g
    assert signer().verify(token, g.expires_ms - 1) == g
    assert len(token) < 160 and token.isascii() and "=" not in token  # fits a query string as it is
    with pytest.raises(BadUrlToken) as e:
        signer().verify(token, g.expires_ms)
    assert e.value.reason == "expired" and "expired 0 s ago" in e.value.detail


def test_a_new_grant_lives_the_signers_ttl_plus_the_ranges_length():
    g = signer(ttl_ms=5_000).grant(signer="a", signer_created_ms=1, camera="c", start_ms=10, end_ms=20, now_ms=NOW)
    assert g == Grant("a", 1, "c", 10, 20, NOW + 5_010)
    # An hour of footage can be played at 1x on one link.
    hour = signer(ttl_ms=5_000).grant(signer="a", signer_created_ms=1, camera="c", start_ms=0, end_ms=3_600_000,
                                      now_ms=NOW)
    assert hour.expires_ms == NOW + 5_000 + 3_600_000
    assert UrlSigner(KEY).ttl_ms == 600_000  # ten minutes by default


# name: (how the good token is changed, reason)
BAD = {
    "another server's secret": (lambda t: UrlSigner(bytes(32)).sign(grant()), "forged"),
    "one byte of the payload changed": (lambda t: b64(bytes([raw(t)[0]]) + raw(t)[1:5] + bytes([raw(t)[5] ^ 1])
                                                      + raw(t)[6:]), "forged"),
    "the camera swapped for another of the same length": (
        lambda t: b64(raw(t).replace(b"gate-1", b"gate-2")), "forged"),
    "the mac cut short": (lambda t: b64(raw(t)[:-1]), "forged"),
    "only a mac": (lambda t: b64(raw(t)[-32:]), "malformed"),
    "empty": (lambda t: "", "malformed"),
    "not base64url": (lambda t: t[:-2] + "+/", "malformed"),
    "padding": (lambda t: t + "==", "malformed"),
    "a dot (JWT-like)": (lambda t: t[:20] + "." + t[20:], "malformed"),
    "too long": (lambda t: "A" * (MAX_CHARS + 1), "malformed"),
    "a NUL": (lambda t: t + "\x00", "malformed"),
}


@pytest.mark.parametrize("name", BAD)
def test_a_bad_token_is_refused_with_its_reason(name):
    change, reason = BAD[name]
    with pytest.raises(BadUrlToken) as e:
        signer().verify(change(signer().sign(grant())), NOW)
    assert e.value.reason == reason, e.value.detail


def test_a_signed_payload_of_another_layout_is_refused_not_misread():
    s = signer()
    good = raw(s.sign(grant()))[:-32]
    for payload in (b"\x02" + good[1:], good + b"x", good[:-1]):  # a future version, a trailing byte, cut short
        with pytest.raises(BadUrlToken) as e:
            s.verify(b64(payload + s._mac(payload)), NOW)
        assert e.value.reason == "malformed"


def test_what_a_grant_covers_is_its_camera_and_overlap_with_its_range():
    g = grant(start_ms=1000, end_ms=2000)
    assert g.covers("gate-1", 1999, 5000) and g.covers("gate-1", 0, 1001) and g.covers("gate-1", 1200, 1300)
    assert not g.covers("gate-1", 2000, 3000) and not g.covers("gate-1", 0, 1000)  # [start, end): touching is out
    assert not g.covers("gate-2", 1200, 1300)


def test_the_secret_is_never_shown_and_must_be_32_bytes():
    assert KEY.hex() not in repr(signer()) and str(KEY) not in repr(signer())
    with pytest.raises(ValueError, match="32 bytes"):
        UrlSigner(b"short")
    with pytest.raises(ValueError, match="positive"):
        UrlSigner(KEY, ttl_ms=0)
    assert UrlSigner.ephemeral().secret != UrlSigner.ephemeral().secret


def test_names_and_times_out_of_the_layout_are_refused_when_signing():
    with pytest.raises(ValueError, match="1-255 bytes"):
        signer().sign(grant(signer="x" * 256))
    with pytest.raises(ValueError, match="does not fit"):
        signer().sign(grant(start_ms=-1))
