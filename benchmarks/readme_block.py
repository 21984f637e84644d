"""Benchmarks write their figures into README.md between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``."""

from __future__ import annotations

import logging
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
log = logging.getLogger("benchmarks")


def replace_readme_block(name: str, block: str, readme: Path = README) -> bool:
    """Put ``block`` between the ``name`` markers; False (and a warning) when README.md has no such block."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        log.warning("%s has no %s ... %s block; not updated", readme.name, start, end)
        return False
    head, rest = text.split(start, 1)
    readme.write_text(f"{head}{start}\n{block}\n{end}{rest.split(end, 1)[1]}")
    return True
