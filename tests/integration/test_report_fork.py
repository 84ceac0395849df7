"""`kasmina report` of a fork: its ancestors' part of the story, up to each fork epoch.

The runs are test_fork.py's own user program (wine, two slots, a SeedManager):
a parent with an awkward id, a fork of it and a fork of the fork. The report
reads each ancestor's rows from the views the report already uses, cut at the
epoch the line of runs leaves it; the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kasmina.ledger import Ledger
from kasmina.report import read_run, render_report
from kasmina.report.data import Interval
from kasmina.report.svg import esc

#: Quotes, markup, an ampersand and format braces: the report treats run ids as hostile.
PARENT = "p<i>'\"&{0}"


def _program_text() -> str:
    """test_fork.py's PROGRAM, loaded by path (the tests folders are not packages)."""
    path = Path(__file__).with_name("test_fork.py")
    spec = importlib.util.spec_from_file_location("_kasmina_test_fork", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.PROGRAM)


class Segments(HTMLParser):
    """Stage rects' classes by the ancestor segment they sit in ("" outside any), and
    the fork markers' attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.rects: dict[str, list[str]] = {}
        self.markers: list[dict[str, str]] = []
        self._within: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        classes = found.get("class", "").split()
        outer = self._within[-1] if self._within else ""
        if tag == "g":
            self._within.append(found["data-run"] if "parent-segment" in classes else outer)
            if "fork-marker" in classes:
                self.markers.append(found)
        elif tag == "rect" and "st" in classes:
            self.rects.setdefault(outer, []).append(found["class"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "g":
            self._within.pop()


@pytest.fixture
def forks(db_url: str, tmp_path: Path) -> str:
    """Parent PARENT (8 epochs), f forked from it at 3, g forked from f at 5."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from kasmina.programs import fork_program, run_program

    program = tmp_path / "wine.py"
    program.write_text(_program_text())
    with Ledger.open(db_url, artifacts=tmp_path / "art") as ledger:
        config = {"epochs": 8, "lr": 0.05}
        run_program(ledger, f"{program}:main", run_id=PARENT, config=config, seed=5)
        fork_program(ledger, f"{PARENT}@3", run_id="f", config={"lr": 0.2})
        fork_program(ledger, "f@5", run_id="g")
    return db_url


def _cut(rows: list[Interval], epoch: int) -> list[Interval]:
    """The rows up to `epoch`, a stage open there ending at the fork's first epoch."""
    return [
        i if i.end is not None and i.end <= epoch else replace(i, end=epoch + 1)
        for i in rows
        if i.start <= epoch
    ]


def test_a_forks_report_reads_its_ancestors_up_to_each_fork(forks: str) -> None:
    with Ledger.open(forks) as ledger:
        parent, fork, grand = (read_run(ledger, r) for r in (PARENT, "f", "g"))
        _, lineage = ledger.sql("SELECT run_id, ancestor_run_id, depth, epoch FROM run_lineage")
        rows = sorted(tuple(r) for r in lineage)
    assert parent.lineage == [] and parent.carried == []
    assert rows == [("f", PARENT, 1, 3), ("g", "f", 1, 5), ("g", PARENT, 2, 3)]
    assert [(a.run_id, a.depth, a.epoch) for a in fork.lineage] == [(PARENT, 1, 3)]
    assert [(a.run_id, a.depth, a.epoch) for a in grand.lineage] == [("f", 1, 5), (PARENT, 2, 3)]

    # The parent's part is its own view rows up to the fork epoch, cut there.
    (p,) = fork.lineage
    key = lambda i: (i.slot_id, i.start, i.end is None, i.end or 0, i.stage)  # noqa: E731
    assert sorted(p.intervals, key=key) == sorted(_cut(parent.intervals, 3), key=key)
    assert p.verdicts == [v for v in parent.verdicts if v.epoch <= 3]
    inherited = [c for curves in p.charts.values() for c in curves]
    assert list(p.charts) == list(fork.charts) and inherited
    assert all(e <= 3 for c in inherited for e, _ in c.points)
    assert p.alpha and all(e <= 3 for c in p.alpha for e, _ in c.points)
    assert all(e > 3 for c in fork.alpha for e, _ in c.points)

    # Every lane goes on across each fork: a stage open at the fork epoch ends at the
    # fork's first epoch, where the next run's carried stage or its first move begins.
    for run, data in (("f", fork), ("g", grand)):
        ancestor = data.lineage[0]
        before = ancestor.intervals + ancestor.carried
        after = data.carried + data.intervals
        for slot in data.slots:
            ends = [i.end for i in before if i.slot_id == slot]
            starts = [i.start for i in after if i.slot_id == slot]
            assert max(e for e in ends if e is not None) == ancestor.epoch + 1, (run, slot)
            assert min(starts) == ancestor.epoch + 1, (run, slot)
    assert grand.carried  # g never moved a slot: both stages go on from f
    assert {i.start for i in grand.carried} == {6} and all(i.end is None for i in grand.carried)
    assert grand.span == fork.span == parent.span == 8


def test_a_forks_page_names_its_parents_and_draws_their_segments(forks: str) -> None:
    with Ledger.open(forks) as ledger:
        page = render_report(ledger, "g")
        data = read_run(ledger, "g")
        plain = render_report(ledger, PARENT)
    hostile = esc(PARENT)
    assert PARENT not in page and "<i>" not in page
    assert (
        "This run is a fork: forked from <code>f</code> at epoch 5, "
        f"f from <code>{hostile}</code> at epoch 3." in page
    )
    found = Segments()
    found.feed(page)
    # One marker per fork in the lanes, and again in each metric's chart.
    assert data.charts
    assert [(m["data-run"], m["data-epoch"]) for m in found.markers] == [
        ("f", "5"),
        (PARENT, "3"),
    ] * (1 + len(data.charts))
    assert ">forked from f @ 5</text>" in page and f">f forked from {hostile} @ 3</text>" in page
    for ancestor in data.lineage:
        drawn = found.rects[ancestor.run_id]
        assert len(drawn) == len(ancestor.intervals) + len(ancestor.carried)
    carried = [c for c in found.rects[""] if "carried" in c.split()]
    assert len(carried) == len(data.carried)
    assert len(found.rects[""]) == len(data.intervals) + len(data.carried)
    assert "run_lineage" in page.split("<footer>")[1]
    # A run that is not a fork carries none of it.
    for mark in ("parent-segment", "fork-marker", "class=lineage", "run_lineage", ".parent-zone"):
        assert mark not in plain, mark
