"""docs/gates.md cannot drift from `kasmina.gates`: defaults, facts read, and tags written.

Each gate is run, in both modes, over a grid of facts that reaches every
branch; what it reads (through a proxy that records attribute reads) and the
tags it writes (numbers and names made placeholders) must be exactly what
its section of the page lists.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from kasmina.gates import GATE_FOR_TARGET, QualityGates, SeedFacts
from kasmina.stages import SeedStage

PAGE = Path(__file__).resolve().parents[2] / "docs" / "gates.md"

GRID: dict[str, list[Any]] = {
    "stage": [SeedStage.GERMINATED, SeedStage.TRAINING],
    "seed_id": [None, "s1"],
    "blueprint_id": [None, "conv_small"],
    "epochs_in_stage": [0, 20],
    "improvement_since_training": [None, 0.1, 3.0],
    "grad_ratio": [None, 0.01, 0.5],
    "grad_health": [None, 0.2, 0.9],
    "has_exploding": [None, False, True],
    "alpha": [0.5, 1.0],
    "alpha_target": [0.5, 1.0],
    "alpha_mode": ["HOLD", "UP"],
    "counterfactual": [None, 0.2, 3.0],
    "healthy": [True, False],
}


class Recording:
    """Stands in for `SeedFacts` and remembers which facts a gate looked at."""

    def __init__(self, facts: SeedFacts, read: set[str]) -> None:
        self._facts = facts
        self._read = read

    def __getattr__(self, name: str) -> object:
        self._read.add(name)
        return getattr(self._facts, name)


def placeholder(tag: str) -> str:
    """A tag with its numbers and names made one placeholder, as the page writes them."""
    tag = re.sub(r"<[a-z]+>", "X", tag)
    tag = re.sub(r"-?\d+(\.\d+)?", "X", tag)
    return re.sub(r"(?<=_)[A-Z]+", "X", tag)


@functools.cache
def behaviour(permissive: bool, gate: str) -> tuple[frozenset[str], frozenset[str]]:
    """(facts read, placeholder tags written) by `gate` over the whole grid."""
    gates = QualityGates(permissive=permissive)
    target = next(t for t, g in GATE_FOR_TARGET.items() if g == gate)
    read: set[str] = set()
    tags: set[str] = set()
    for values in itertools.product(*GRID.values()):
        facts = SeedFacts(**dict(zip(GRID, values, strict=True)))
        result = gates.check(target, Recording(facts, read))  # type: ignore[arg-type]
        tags |= {placeholder(t) for t in (*result.checks_passed, *result.checks_failed)}
    return frozenset(read), frozenset(tags)


def section(gate: str, page: Path = PAGE) -> str:
    text = page.read_text()
    match = re.search(rf"^## {gate}: .*?(?=^## |\Z)", text, flags=re.M | re.S)
    assert match is not None, f"docs/gates.md has no section for {gate}"
    return match.group(0)


def documented_reads(gate: str, mode: str) -> set[str]:
    match = re.search(rf"^Reads \({mode}\): (.*)$", section(gate), flags=re.M)
    assert match is not None, f"{gate} lists no reads ({mode})"
    return set(re.findall(r"`([a-z_]+)`", match.group(1)))


def documented_tags(gate: str, page: Path = PAGE) -> set[str]:
    rows = [line for line in section(gate, page).splitlines() if line.startswith("|")][2:]
    names = {f.name for f in fields(QualityGates)}
    found: set[str] = set()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        for cell in cells[-2:]:  # the "passes as" and "fails as" columns
            found |= {placeholder(t) for t in re.findall(r"`([a-z_<>]+)`", cell)} - names
    return found


@pytest.mark.parametrize("gate", sorted(set(GATE_FOR_TARGET.values())))
def test_each_gate_reads_what_its_section_says(gate: str) -> None:
    for permissive, mode in ((False, "strict"), (True, "permissive")):
        read, _ = behaviour(permissive, gate)
        assert read == documented_reads(gate, mode), (gate, mode)


@pytest.mark.parametrize("gate", sorted(set(GATE_FOR_TARGET.values())))
def test_each_gate_writes_exactly_the_tags_its_section_lists(gate: str) -> None:
    written = behaviour(False, gate)[1] | behaviour(True, gate)[1]
    assert written == documented_tags(gate)


def test_every_setting_and_its_default_is_listed() -> None:
    text = PAGE.read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| `([^`]+)` \|", text, flags=re.M))
    expected = {f.name: repr(f.default) for f in fields(QualityGates)}
    assert rows == expected


def test_the_checker_sees_a_drift(tmp_path: Path) -> None:
    """A page that lost one tag, or gained one the code never writes, no longer matches."""
    written = behaviour(False, "G2")[1] | behaviour(True, "G2")[1]
    lost = tmp_path / "lost.md"
    lost.write_text(PAGE.read_text().replace(", `seed_gradient_never_measured`", ""))
    assert documented_tags("G2", lost) == written - {"seed_gradient_never_measured"}
    gained = tmp_path / "gained.md"
    gained.write_text(PAGE.read_text().replace("`seed_healthy`", "`seed_healthy`, `seed_shiny`"))
    assert documented_tags("G5", gained) == documented_tags("G5") | {"seed_shiny"}
