"""The report's pieces: colours, curve thinning, huge runs, odd run ids, both backends."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest

from kasmina.ledger import Ledger
from kasmina.report import read_run, render_report
from kasmina.report.compare import trend
from kasmina.report.data import Eviction, Interval, Outcome, RunData, Summary, Verdict
from kasmina.report.lanes import BRIEF_MARK
from kasmina.report.page import OUTCOME_ROWS, render_page
from kasmina.report.palette import STAGE_COLOURS
from kasmina.report.svg import span_ticks
from kasmina.report.thinning import Curve, Thinner
from kasmina.stages import SeedStage


def test_every_stage_has_a_colour() -> None:
    assert set(STAGE_COLOURS) == set(SeedStage)
    assert len(set(STAGE_COLOURS.values())) == len(SeedStage)


def test_thinning_keeps_ends_and_extremes_in_any_order() -> None:
    rng = random.Random(3)
    walk, value = [], 0.0
    for epoch in range(100_000):
        value += rng.gauss(0, 1)
        walk.append((epoch, value))
    walk[51_234] = (51_234, 10_000.0)
    ordered, shuffled = Thinner(500), Thinner(500)
    for epoch, v in walk:
        ordered.add(("s", "a"), epoch, v)
    for epoch, v in rng.sample(walk, len(walk)):
        shuffled.add(("s", "a"), epoch, v)
    points = ordered.points(("s", "a"))
    assert points == shuffled.points(("s", "a"))
    assert len(points) <= 2 * 200 + 2
    assert points[0] == walk[0] and points[-1] == walk[-1]
    assert (51_234, 10_000.0) in points and min(walk, key=lambda p: p[1]) in points
    assert [p[0] for p in points] == sorted({p[0] for p in points})


def test_short_curves_are_kept_whole() -> None:
    thinner = Thinner(1)
    for epoch in range(30):
        thinner.add(("r0c0", "seed-1"), epoch, epoch / 30)
    [curve] = thinner.curves()
    assert curve.raw == 30 and len(curve.points) == 30


def _huge_run(epochs: int = 100_000, slots: int = 8, life: int = 100) -> RunData:
    """A run far past anything the demo records: a seed every `life` epochs in every slot."""
    stages = ("GERMINATED", "TRAINING", "BLENDING", "HOLDING", "PRUNED")
    intervals, verdicts, outcomes, alpha = [], [], [], []
    for s in range(slots):
        slot = f"r0c{s}"
        for n, start in enumerate(range(0, epochs - life, life)):
            seed = f"seed-{s}-{n}"
            for k, stage in enumerate(stages):
                intervals.append(Interval(slot, seed, stage, start + 5 * k, start + 5 * k + 5))
                verdicts.append(Verdict(slot, seed, start + 5 * k, f"G{k}", stage, k != 2, ()))
            outcomes.append(Outcome(seed, slot, "norm", start, "PRUNED", start + life, None))
            alpha.append(Curve((slot, seed), [(start, 0.0), (start + life - 1, 1.0)], life))
    summary = Summary(
        "huge",
        "huge",
        1,
        "completed",
        10**6,
        epochs,
        len(outcomes),
        0,
        len(outcomes),
        epochs,
        50.0,
        None,
        None,
    )
    evictions = [Eviction("kernels", "ttl", 1, e) for e in range(0, epochs, 3)]
    return RunData(
        summary,
        [f"r0c{s}" for s in range(slots)],
        intervals,
        verdicts,
        evictions,
        outcomes,
        alpha,
        {},
        epochs // 200,
        False,
    )


def test_a_huge_run_gives_a_small_page_that_says_what_it_thinned() -> None:
    data = _huge_run()
    page = render_page(data, "test")
    assert len(page.encode()) < 2 * 1024 * 1024
    assert page.count('class="lane"') == 8
    assert page.count("<tr><td>seed-") == OUTCOME_ROWS
    notes = page.split("id=notes")[1]
    for said in (
        "Stage intervals",
        "merged",
        "Alpha curves",
        "one line per lane",
        "GC evictions",
        f"first {OUTCOME_ROWS:,} of {len(data.outcomes):,}",
        "share markers",
    ):
        assert said in notes, said
    counted = sum(int(n.replace(",", "")) for n in re.findall(r": ([\d,]+) stage intervals", page))
    assert counted == len(data.intervals)


def test_a_small_run_is_drawn_whole() -> None:
    data = _huge_run(epochs=60, slots=2)
    page = render_page(replace(data, alpha=[], bucket_epochs=1), "test")
    assert page.count('class="st ') == len(data.intervals)
    assert "Nothing: every sample and every event of the run is drawn." in page


def test_an_awkward_run_id_is_quoted_and_escaped(sqlite_url: str) -> None:
    run_id = "o'brien <b>\"; DROP TABLE events; --"
    with Ledger.open(sqlite_url) as led:
        led.start_run("quotes", seed=1, run_id=run_id).finish()
        page = render_report(led, run_id)
    assert "<b>" not in page and "o&#x27;brien &lt;b&gt;" in page
    assert 'class="lane"' not in page and "No seed was germinated." in page


def test_the_views_give_the_same_report_on_sqlite_and_postgres(
    sqlite_url: str, pg_url: str
) -> None:
    pytest.importorskip("torch")
    from kasmina.replay.synthetic import synthetic_run

    seen = []
    for url in (sqlite_url, pg_url):
        with Ledger.open(url) as led:
            run_id = synthetic_run(led, epochs=40, slots=3, seed=4, gc_period=10)
            data = read_run(led, run_id)
        assert data.slots == ["s0", "s1", "s2"] and data.intervals and data.alpha
        assert data.verdicts and data.evictions and data.outcomes and data.charts["val_accuracy"]
        seen.append(
            replace(
                data, summary=replace(data.summary, run_id="", started_at=None, finished_at=None)
            )
        )
    assert seen[0] == seen[1]


@pytest.mark.parametrize(
    ("low", "high"),
    [(0.021, 0.049), (10.5, 98.9), (-3.0, 2.0), (1e-5, 3e-5), (120.0, 121.0), (0.5, 0.5)],
)
def test_a_value_axis_hugs_the_data(low: float, high: float) -> None:
    values = span_ticks(low, high, 5)
    assert values[0] <= low and values[-1] >= high and values == sorted(set(values))
    if high > low:
        # No flat line against one edge: the data fill at least 40% of the axis.
        assert (high - low) / (values[-1] - values[0]) >= 0.4
    else:
        assert values[0] < low < values[-1]


def test_a_trend_reads_the_slope_over_the_series() -> None:
    assert trend([0.1, 0.2, 0.3, 0.4])[1] == "rising"
    assert trend([0.4, 0.3, None, 0.1])[1] == "falling"
    assert trend([0.5, 0.5, 0.5])[1] == "flat"
    assert trend([0.1, 0.9]) == (None, "too few runs")
    slope, words = trend([1.0, 3.0, 5.0])
    assert slope == pytest.approx(2.0) and words == "rising"


def test_a_stage_left_within_one_epoch_is_drawn_outlined_and_wide_enough() -> None:
    data = _huge_run(epochs=300, slots=1, life=100)
    brief = Interval("r0c0", "seed-0-0", "HOLDING", 17, 17)
    data = replace(data, intervals=[*data.intervals, brief], alpha=[], bucket_epochs=1)
    page = render_page(data, "test")
    (holding,) = re.findall(r'<rect class="st st-HOLDING brief"[^>]*width="([\d.]+)"', page)
    assert float(holding) >= BRIEF_MARK
    # A stage long enough to see (5 epochs here) is drawn as it is, with no outline.
    assert page.count('class="st st-HOLDING"') == sum(
        i.stage == "HOLDING" for i in data.intervals[:-1]
    )
