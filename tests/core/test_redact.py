"""public_url: what may be shown of installer.url (a pre-signed query string is a credential)."""

from __future__ import annotations

import pytest

from bot.core.redact import public_url, scrub_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://artifacts.example.com/c/setup.exe", "https://artifacts.example.com/c/setup.exe"),
        (
            "https://s3.example.com/b/setup.exe?X-Amz-Signature=abc&sig=d",
            "https://s3.example.com/b/setup.exe?<redacted>",
        ),
        ("http://u:p@host:8080/setup.exe#frag", "http://host:8080/setup.exe"),
        ("http://[::1]:8080/setup.exe?t=1", "http://[::1]:8080/setup.exe?<redacted>"),
        ("http://[::1/setup.exe", "<redacted>"),  # not a URL that can be taken apart: none of it
    ],
)
def test_public_url_drops_the_query_and_credentials(url, shown):
    assert public_url(url) == shown


def test_scrub_url_replaces_the_url_and_its_query_in_a_hosts_error():
    url = "https://s3.example.com/b/setup.exe?X-Amz-Signature=abc123&sig=def456"
    text = f"download of {url} failed: 403 (query X-Amz-Signature=abc123&sig=def456)"
    scrubbed = scrub_url(text, url)
    assert "abc123" not in scrubbed and "def456" not in scrubbed
    assert "download of https://s3.example.com/b/setup.exe?<redacted> failed" in scrubbed
    assert scrub_url("no url here", "https://h/x.exe") == "no url here"
