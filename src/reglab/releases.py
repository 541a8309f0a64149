"""Which releases of a library a patch of its private code was checked with.

reglab reaches into two libraries' internals: Hydra's config loader (`reglab.cli`: one-line
composition errors, a faster `--help`) and Lightning's logged-value bookkeeping
(`reglab.lightning_speedups`). Each patch names the releases it was checked against as a
half-open range of (major, minor) versions; on any other release the library's own code runs.
"""

from __future__ import annotations

import re

#: [low, high) of (major, minor): ((1, 3), (1, 4)) is every 1.3.x release.
Releases = tuple[tuple[int, int], tuple[int, int]]


def is_tested(version: str, releases: Releases) -> bool:
    """Whether `version` (e.g. '1.3.8', '2.6.0rc1') lies in `releases`."""
    numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    low, high = releases
    return low <= numbers < high
