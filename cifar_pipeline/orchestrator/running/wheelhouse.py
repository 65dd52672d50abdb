"""pip settings for image builds that install from a wheelhouse instead of a package index.

Where containers cannot reach a package index (air-gapped hosts, mirrors with private
certificates), the host resolves the pinned set into a wheelhouse and serves it over
loopback HTTP (`make wheelhouse-server`: one long-lived server that any number of
pipelines, from any checkout, share). Builds get its URL as pip's own settings.

The URL is part of Docker's layer cache key (build args are), so it must stay the same
from build to build: a fixed address, never an ephemeral port.
"""

from __future__ import annotations

from urllib.parse import urlparse


def pip_build_args(find_links: str) -> dict[str, str]:
    """Build args that make pip install from `find_links` only; {} for the package index."""
    if not find_links:
        return {}
    parsed = urlparse(find_links)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"docker.pip_find_links={find_links!r}: expected an http(s) URL of a wheelhouse")
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": find_links, "PIP_TRUSTED_HOST": parsed.hostname}
