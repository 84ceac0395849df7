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
from test_report import (
    BIN,
    chromium,
    drawn_points,
    kasmina,
    marks,
    metric_lines,
    rendered,
    rows,
    screenshot,
)

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


def test_compare_overlays_every_chosen_metric_one_colour_per_run(
    page: Path, series: tuple[str, list[str]]
) -> None:
    url, runs = series
    charts = metric_lines(page.read_text(encoding="utf-8"))
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
    dom = rendered(chromium, page, tmp_path)
    charts = metric_lines(dom)
    for metric in CHOSEN:
        drawn = [line for line in charts[metric] if drawn_points(line) > 1]
        assert {line["data-series"] for line in drawn} == set(runs), metric
    assert len(marks(dom).having("div", "run-column")) == len(runs)
    print(f"compare screenshot: {screenshot(chromium, page, tmp_path, 'report-compare.png')}")


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
