"""The build tools themselves: setuptools before 78.1.1 has known vulnerabilities
(CVE-2024-6345 and CVE-2025-47273, both reachable at build time), so neither the isolated
build environment nor the project's venv may use one."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXED = (78, 1, 1)


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_the_build_backend_needs_a_setuptools_without_known_cves() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    [setuptools] = [r for r in requires if r.startswith("setuptools")]
    floor = re.fullmatch(r"setuptools>=([\d.]+)", setuptools)
    assert floor, setuptools
    assert version(floor.group(1)) >= FIXED


def test_make_install_upgrades_setuptools_in_the_venv() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install [^\n]*--upgrade pip setuptools", makefile), makefile


def test_this_venv_has_no_vulnerable_setuptools() -> None:
    try:
        installed = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        pytest.skip("no setuptools in this environment (nothing to be vulnerable)")
    assert version(installed) >= FIXED, f"setuptools {installed}: run make install"
