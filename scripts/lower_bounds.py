"""Print pip constraints pinning every direct dependency of lm2 (and the given extras) to its lower bound.

Used by ``LM2_DEPS=oldest bash scripts/setup.sh``: pyproject's ranges promise these versions work, so the
suite is run against them. A requirement without a lower bound is left to the resolver.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib


def lower_bounds(extras: list[str]) -> list[str]:
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    pins = []
    for requirement in requirements:
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*(?:==|>=)\s*([0-9][^,;\s]*)", requirement)
        if m:
            pins.append(f"{m.group(1)}=={m.group(2)}")
    return pins


if __name__ == "__main__":
    print("\n".join(lower_bounds([e for e in sys.argv[1:] if e])))
