"""The container's HEALTHCHECK: healthy when `GET /healthz` answers 200 (the database and Slack are reachable).

In Socket Mode (SLACK_APP_TOKEN set) `serve` may listen on no HTTP port: a refused connection is then not a
failure, as the process is alive (Docker runs this check inside the running container). Standard library
only, so the image needs no curl. IDM_UPGRADE_HEALTH_URL overrides where it asks (another --port).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

URL = os.environ.get("IDM_UPGRADE_HEALTH_URL", "http://127.0.0.1:3000/healthz")


def main() -> int:
    try:
        with urllib.request.urlopen(URL, timeout=8) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:  # 503: the database or Slack is not reachable
        sys.stdout.write(f"{URL}: {exc.code} {exc.read(500).decode(errors='replace')}\n")
        return 1
    except (urllib.error.URLError, OSError) as exc:
        refused = isinstance(getattr(exc, "reason", exc), ConnectionRefusedError)
        if refused and os.environ.get("SLACK_APP_TOKEN"):
            return 0  # Socket Mode without an HTTP listener
        sys.stdout.write(f"{URL}: {getattr(exc, 'reason', exc)}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
