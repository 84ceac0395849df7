"""`kasmina report` as a user runs it, and the page as a browser draws it.

One default demo run (30 epochs, 3 slots) is recorded for the module, and a
fork of a user's program (test_fork.py's) for the fork page; each report is
made through the real `kasmina` binary and opened in headless Chromium
(Debian's `chromium`, which `.ci/run` installs; missing, the browser tests
skip, or fail under KASMINA_REQUIRE_PG=1). The screenshots are kept under
$KASMINA_ARTIFACTS when set.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from needs import tool

from kasmina.ledger import Ledger

BIN = str(Path(sys.executable).with_name("kasmina"))
RUN = "demo"
PARENT = "base"
FORK = "what-if"
MAX_BYTES = 2 * 1024 * 1024


class Marks(HTMLParser):
    """Elements with their attributes and the text of their <title> child."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self._open: list[int] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
            return
        self.elements.append((tag, {k: v or "" for k, v in attrs}, []))
        self._open.append(len(self.elements) - 1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, []))

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._in_title and self._open:
            self.elements[self._open[-1]][2].append(data)

    def having(self, tag: str, cls: str) -> list[tuple[dict[str, str], str]]:
        return [
            (attrs, "".join(text))
            for t, attrs, text in self.elements
            if t == tag and cls in attrs.get("class", "").split()
        ]


def marks(html: str) -> Marks:
    parser = Marks()
    parser.feed(html)
    return parser


def kasmina(*args: str, db: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KASMINA_DB"}
    return subprocess.run(
        [BIN, "--db", db, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    with Ledger.open(url) as led:
        _, found = led.sql(query)
        return [tuple(r) for r in found]


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from kasmina.demo import run_demo

    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'demo.db'}"
    with Ledger.open(url) as led:
        run_demo(led, run_id=RUN)
    return url


@pytest.fixture(scope="module")
def report(demo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("out") / "run.html"
    proc = kasmina("report", RUN, "-o", str(target), db=demo_url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == f"wrote {target} ({round(target.stat().st_size / 1024)} KiB)"
    return target


def _fork_program() -> str:
    """tests/integration/test_fork.py's PROGRAM, loaded by path."""
    path = Path(__file__).parents[1] / "integration" / "test_fork.py"
    spec = importlib.util.spec_from_file_location("_kasmina_test_fork", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.PROGRAM)


@pytest.fixture(scope="module")
def fork_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of FORK, forked from PARENT at epoch 2 with another learning rate."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    folder = tmp_path_factory.mktemp("fork")
    program = folder / "wine.py"
    program.write_text(_fork_program())
    url = f"sqlite:///{folder / 'fork.db'}"
    art = ("--artifacts", str(folder / "art"))
    config = '{"epochs": 6, "lr": 0.05}'
    for args in (
        ("run", f"{program}:main", "--run-id", PARENT, "--config", config),
        ("run", "--fork", f"{PARENT}@2", "--run-id", FORK, "--config", '{"lr": 0.2}'),
    ):
        proc = kasmina(*art, *args, db=url)
        assert proc.returncode == 0, proc.stderr
    target = folder / "fork.html"
    proc = kasmina("report", FORK, "-o", str(target), db=url)
    assert proc.returncode == 0, proc.stderr
    return target


@pytest.mark.parametrize("page", ["report", "fork_report"])
def test_report_is_one_small_file_that_loads_nothing(
    page: str, request: pytest.FixtureRequest
) -> None:
    report: Path = request.getfixturevalue(page)
    html = report.read_text(encoding="utf-8")
    assert report.stat().st_size < MAX_BYTES
    lowered = html.lower()
    for reference in ("http://", "https://", "<script", "<link", "<img", "<iframe", "url("):
        assert reference not in lowered, reference
    assert "content-security-policy" in lowered and "default-src 'none'" in html
    assert list(report.parent.glob(".*partial")) == []


def test_report_draws_every_slot_interval_gate_and_seed(report: Path, demo_url: str) -> None:
    page = marks(report.read_text(encoding="utf-8"))
    where = f"WHERE run_id = '{RUN}'"
    slots = {str(r[0]) for r in rows(demo_url, f"SELECT slot_id FROM stage_intervals {where}")}
    assert len(slots) == 3
    assert [a["data-slot"] for a, _ in page.having("g", "lane")] == sorted(slots)
    intervals = rows(demo_url, f"SELECT COUNT(*) FROM stage_intervals {where}")[0][0]
    assert len(page.having("rect", "st")) == intervals
    gates = rows(demo_url, f"SELECT COUNT(*) FROM gate_evaluations {where}")[0][0]
    drawn = page.having("circle", "pass") + page.having("path", "fail")
    assert sum(len(text.splitlines()) for _, text in drawn) == gates
    seeds = {str(r[0]) for r in rows(demo_url, f"SELECT seed_id FROM seed_outcomes {where}")}
    html = report.read_text(encoding="utf-8")
    for seed in seeds:
        assert f">{seed}</text>" in html and f">{seed}</td>" in html
    curves = page.having("polyline", "curve") + page.having("circle", "dot")  # one sample: a dot
    assert len(curves) == len(seeds)
    assert len(page.having("g", "bar")) == len(
        {r[0] for r in rows(demo_url, f"SELECT epoch FROM gc_evictions {where}")}
    )


def test_a_fork_report_shows_where_it_came_from(fork_report: Path) -> None:
    html = fork_report.read_text(encoding="utf-8")
    assert f"forked from <code>{PARENT}</code> at epoch 2." in html
    page = marks(html)
    segments = page.having("g", "parent-segment")
    assert {a["data-run"] for a, _ in segments} == {PARENT}
    assert all(a["data-epoch"] == "2" for a, _ in segments)
    # The parent's stages and its gate verdicts in each lane, its alpha and accuracy dashed.
    assert len(page.having("rect", "parent-zone")) == len(page.having("g", "lane")) == 2
    assert "in run base, up to its fork @ 2" in html and "alpha in run base" in html
    assert "val_accuracy in run base" in html
    charts = [a for t, a, _ in page.elements if t == "svg" and "data-metric" in a]
    assert charts
    markers = page.having("g", "fork-marker")
    assert [text for _, text in markers] == [f"forked from {PARENT} @ 2"] * (1 + len(charts))
    assert f">forked from {PARENT} @ 2</text>" in html


def test_unknown_run_is_one_error_line_and_no_file(demo_url: str, tmp_path: Path) -> None:
    target = tmp_path / "nothing.html"
    proc = kasmina("report", "no-such-run", "-o", str(target), db=demo_url)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: no run matches 'no-such-run' (a run id, a unique id prefix of 4+ characters, "
        "a unique run name, latest or latest~N)"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="session")
def chromium() -> str:
    return tool("chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browse(
    chromium: str, page: Path, profile: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1400,2300",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def _console_lines(stderr: str) -> list[str]:
    """What the page wrote to the console: Chromium logs each message as an INFO:CONSOLE line.

    The page has no script, so any such line is an error: a load the CSP blocked, a
    resource that failed, a parse problem.
    """
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def rendered(chromium: str, page: Path, tmp_path: Path) -> str:
    """The page's DOM as Chromium drew it; the page wrote nothing to the console."""
    dom = _browse(chromium, page, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_lines(dom.stderr) == []
    return dom.stdout


def screenshot(chromium: str, page: Path, tmp_path: Path, name: str) -> Path:
    """A PNG of the page, kept under $KASMINA_ARTIFACTS when set; no console line."""
    folder = Path(os.environ.get("KASMINA_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / name
    snap = _browse(chromium, page, tmp_path / "profile", f"--screenshot={shot}")
    assert snap.returncode == 0, snap.stderr[-2000:]
    assert _console_lines(snap.stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    return shot


def metric_lines(html: str) -> dict[str, list[dict[str, str]]]:
    """Each metric chart's metric and the attributes of the lines drawn on it (a
    comparison's seed-rates chart aside)."""
    found: dict[str, list[dict[str, str]]] = {}
    current = None
    for tag, attrs, _ in marks(html).elements:
        if tag == "svg" and attrs.get("id") == "rates-chart":
            current = None
        elif tag == "svg" and "data-metric" in attrs:
            current = found.setdefault(attrs["data-metric"], [])
        elif tag == "path" and current is not None and "metric" in attrs.get("class", ""):
            current.append(attrs)
    return found


def drawn_points(line: dict[str, str]) -> int:
    return len(re.findall("[ML]", line["d"]))


def test_report_renders_in_headless_chromium(
    report: Path, demo_url: str, chromium: str, tmp_path: Path
) -> None:
    dom = rendered(chromium, report, tmp_path)
    page = marks(dom)
    assert [a["data-slot"] for a, _ in page.having("g", "lane")] == ["r0c0", "r0c1", "r0c2"]
    assert page.having("rect", "st") and page.having("polyline", "curve")
    # Every metric the demo records once per epoch has its chart, with its line drawn.
    charted = {m: sum(map(drawn_points, lines)) for m, lines in metric_lines(dom).items()}
    recorded = {r[0] for r in rows(demo_url, f"SELECT name FROM metrics WHERE run_id = '{RUN}'")}
    assert set(charted) >= {"val_accuracy", "val_loss", "train_loss"} | recorded
    assert all(points > 1 for points in charted.values()), charted
    # The one-epoch HOLDING stays are outlined marks, not a hairline.
    assert page.having("rect", "brief")
    print(f"report screenshot: {screenshot(chromium, report, tmp_path, 'report-demo.png')}")


def test_fork_report_renders_in_headless_chromium(
    fork_report: Path, chromium: str, tmp_path: Path
) -> None:
    page = marks(rendered(chromium, fork_report, tmp_path))
    assert [a["data-slot"] for a, _ in page.having("g", "lane")] == ["early", "late"]
    assert page.having("g", "parent-segment") and page.having("g", "fork-marker")
    assert page.having("rect", "parent-zone")
    shot = screenshot(chromium, fork_report, tmp_path, "report-fork.png")
    print(f"fork report screenshot: {shot}")
