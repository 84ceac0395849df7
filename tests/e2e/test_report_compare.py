"""`kasmina report RUN1 RUN2 …`: the page that compares runs, as a user makes it.

Three synthetic runs (no torch needed) are compared through the real binary;
the page's figures are checked against the SQL views, and the page is opened
in headless Chromium (screenshots under $KASMINA_ARTIFACTS when set).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from test_report import BIN, _browse, _console_lines, chromium, kasmina, marks, rows

from kasmina.ledger import Ledger
from kasmina.replay.synthetic import synthetic_run
from kasmina.report import READ_STEPS
from kasmina.report.compare import trend

__all__ = ["chromium"]

CHOSEN = ("val_accuracy", "counterfactual", "lr")


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('compare') / 'runs.db'}"
    with Ledger.open(url) as led:
        runs = [synthetic_run(led, epochs=40, slots=3, seed=s, gc_period=10) for s in (1, 2, 3)]
    return url, runs


@pytest.fixture(scope="module")
def page(series: tuple[str, list[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    url, runs = series
    target = tmp_path_factory.mktemp("out") / "compare.html"
    chosen = [arg for name in CHOSEN for arg in ("--metric", name)]
    proc = kasmina("report", *runs, "-o", str(target), *chosen, db=url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(f"wrote {target} (")
    return target


def _charts(html: str) -> dict[str, list[dict[str, str]]]:
    """Each metric chart's metric and the attributes of the lines drawn on it (the seed
    rates' chart aside)."""
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


def test_compare_overlays_every_chosen_metric_one_colour_per_run(
    page: Path, series: tuple[str, list[str]]
) -> None:
    url, runs = series
    charts = _charts(page.read_text(encoding="utf-8"))
    assert list(charts) == list(CHOSEN)
    for metric in CHOSEN:
        assert {line["data-series"] for line in charts[metric]} == set(runs), metric
    # A run-level metric is one line per run; a per-slot one a line per run and slot.
    assert len(charts["val_accuracy"]) == 3
    slots = rows(
        url,
        "SELECT COUNT(DISTINCT run_id || slot_id) FROM seed_timeline "
        "WHERE counterfactual IS NOT NULL",
    )[0][0]
    assert len(charts["counterfactual"]) == slots
    colour = {line["data-series"]: line["stroke"] for line in charts["val_accuracy"]}
    assert len(set(colour.values())) == 3
    for line in charts["counterfactual"]:
        assert line["stroke"] == colour[line["data-series"]]


def test_compare_sets_outcomes_side_by_side(page: Path, series: tuple[str, list[str]]) -> None:
    url, runs = series
    html = page.read_text(encoding="utf-8")
    columns = html.split("id=outcomes")[1].split("class=run-column")[1:]
    assert [re.search(r'data-run="([^"]+)"', c).group(1) for c in columns] == runs  # type: ignore[union-attr]
    for run, column in zip(runs, columns, strict=True):
        seeds = rows(url, f"SELECT COUNT(*) FROM seed_outcomes WHERE run_id = '{run}'")[0][0]
        assert column.count("<tr><td>") == seeds
    head = html.split("id=runs")[1].split("</thead>")[0]
    assert re.findall(r'data-run="([^"]+)"', head) == runs


def test_compare_gives_each_runs_seed_rates_and_their_trend(
    page: Path, series: tuple[str, list[str]]
) -> None:
    url, runs = series
    html = page.read_text(encoding="utf-8")
    section = html.split("id=rates")[1].split("</section>")[0]
    assert re.findall(r'<tr data-run="([^"]+)"', section) == runs
    prune, fossil, germ = [], [], []
    for run, row in zip(runs, section.split("<tr data-run=")[1:], strict=True):
        seeds, pruned, fossilized, epochs = rows(
            url,
            f"SELECT seeds, pruned, fossilized, epochs FROM run_summary WHERE run_id = '{run}'",
        )[0]
        cells = re.findall(r"<td class=n>([^<]*)</td>", row)
        assert cells[:4] == [f"{epochs:,}", f"{seeds:,}", f"{pruned:,}", f"{fossilized:,}"]
        germ.append(int(seeds) / int(epochs) * 100)
        prune.append(int(pruned) / int(seeds))
        fossil.append(int(fossilized) / int(seeds))
        assert cells[5:] == [f"{prune[-1]:,.3f}", f"{fossil[-1]:,.3f}"]
    said = dict(re.findall(r'data-rate="(\w+)" data-trend="([^"]+)"', section))
    assert said == {
        "germination": trend(germ)[1],
        "prune": trend(prune)[1],
        "fossilization": trend(fossil)[1],
    }


def test_a_metric_no_compared_run_recorded_is_one_error_line(
    series: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, runs = series
    target = tmp_path / "none.html"
    proc = kasmina("report", *runs, "-o", str(target), "--metric", "no_such", db=url)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no metric named 'no_such'")
    assert "val_accuracy" in lines[0] and not target.exists()


def test_compare_page_renders_in_headless_chromium(
    page: Path, series: tuple[str, list[str]], chromium: str, tmp_path: Path
) -> None:
    _, runs = series
    folder = Path(os.environ.get("KASMINA_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "report-compare.png"
    dom = _browse(chromium, page, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_lines(dom.stderr) == []
    charts = _charts(dom.stdout)
    for metric in CHOSEN:
        drawn = [line for line in charts[metric] if len(re.findall("[ML]", line["d"])) > 1]
        assert {line["data-series"] for line in drawn} == set(runs), metric
    assert len(marks(dom.stdout).having("div", "run-column")) == len(runs)
    snap = _browse(chromium, page, tmp_path / "profile", f"--screenshot={shot}")
    assert snap.returncode == 0, snap.stderr[-2000:]
    assert _console_lines(snap.stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"compare screenshot: {shot}")


def test_a_report_off_a_terminal_says_how_far_it_has_read(
    series: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, runs = series
    target = tmp_path / "two.html"
    env = {k: v for k, v in os.environ.items() if k != "KASMINA_DB"}
    env["KASMINA_PROGRESS_S"] = "0"
    proc = subprocess.run(
        [BIN, "--db", url, "report", *runs[:2], "-o", str(target)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    *lines, last = proc.stderr.splitlines()
    assert last.startswith(f"wrote {target} (")
    total = 2 * READ_STEPS
    assert lines and all(line.startswith("reading the runs' views: ") for line in lines)
    assert lines[-1].startswith(f"reading the runs' views: {total}/{total} reads (100%)")
