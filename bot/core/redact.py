"""URLs as they may be shown: a pre-signed query string is a credential, so it is never shown or stored.

``installer.url`` may carry one (``?X-Amz-Signature=…``): the host needs it to download, so the real URL
goes to the host as a script parameter and nowhere else. Everything people or files see (Slack, the
terminal, step facts and reasons, the audit trail, logs, ``check-config``) gets ``public_url`` instead.
User names and passwords in a URL are refused at config load; they are dropped here too, in case.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

REDACTED = "<redacted>"


def public_url(url: str) -> str:
    """``url`` without its query string's values, user name, password and fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a URL we can take apart: show none of it
        return REDACTED
    host = f"[{host}]" if ":" in host else host
    query = f"?{REDACTED}" if parts.query else ""
    return urlunsplit((parts.scheme, host + port, parts.path, "", "")) + query


def scrub_url(text: str, url: str) -> str:
    """``text`` (a host's error, a log line) with ``url`` and its query string replaced by the public form."""
    text = text.replace(url, public_url(url))
    query = urlsplit(url).query
    return text.replace(query, REDACTED) if query else text
