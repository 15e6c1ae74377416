"""Credential redaction of camera URLs and free text."""

from nvr.base.redact import redact_text, redact_url, url_secrets


def test_redaction_covers_userinfo_query_and_bare_secrets():
    url = "rtsp://admin:s%40cret99@cam.local:554/live?user=bob&password=pw12345"
    assert redact_url(url) == "rtsp://***@cam.local:554/live?user=***&password=***"
    secrets = url_secrets(url)
    assert "s@cret99" in secrets and "s%40cret99" in secrets
    line = "[rtsp @ 0x1] method DESCRIBE failed: 401 for rtsp://admin:s%40cret99@cam.local/live, tried s@cret99"
    clean = redact_text(line, secrets)
    assert "cret99" not in clean and "admin" not in clean
