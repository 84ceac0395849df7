"""Any recorded metric charted: the report's curves are the views' rows, on both databases."""

from __future__ import annotations

import pytest

from kasmina.errors import ReportError
from kasmina.events import EpochCompleted, SeedTelemetrySampled
from kasmina.ledger import Ledger
from kasmina.replay.synthetic import synthetic_run
from kasmina.report import read_run, render_report
from kasmina.report.data import RUN_COLUMNS


def _series(ledger: Ledger, query: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    _, rows = ledger.sql(query, params={"run": run_id})
    found: dict[str, list[tuple[int, float]]] = {}
    for owner, epoch, value in rows:
        found.setdefault(str(owner), []).append((int(str(epoch)), float(str(value))))
    return {k: sorted(v) for k, v in found.items()}


def test_a_chosen_metric_is_drawn_from_the_rows_sql_gives(db_url: str) -> None:
    with Ledger.open(db_url) as led:
        run_id = synthetic_run(led, epochs=30, slots=3, seed=5, gc_period=10)
        data = read_run(led, run_id, ["counterfactual", "lr", "val_accuracy"])
        per_slot = _series(
            led,
            "SELECT slot_id, epoch, counterfactual FROM seed_timeline WHERE run_id = :run "
            "AND counterfactual IS NOT NULL AND epoch IS NOT NULL",
            run_id,
        )
        lr = _series(
            led,
            "SELECT 'run', epoch, value FROM metrics WHERE run_id = :run AND name = 'lr' "
            "AND slot_id IS NULL",
            run_id,
        )
        page = render_report(led, run_id, ["counterfactual"])
    assert list(data.charts) == ["counterfactual", "lr", "val_accuracy"]
    assert per_slot and all(len({e for e, _ in v}) == len(v) for v in per_slot.values())
    assert {c.key[0]: c.points for c in data.charts["counterfactual"]} == per_slot
    assert {c.key[0]: c.points for c in data.charts["lr"]} == lr
    # One chart, a line per slot, each named by its slot.
    assert page.count('data-metric="counterfactual"') == 1
    for slot in per_slot:
        assert f'data-series="{slot}"' in page


def test_by_default_every_per_epoch_metric_is_charted_and_the_rest_are_named(
    db_url: str,
) -> None:
    with Ledger.open(db_url) as led:
        run = led.start_run("mine", seed=1)
        for epoch in range(4):
            run.recorder.emit(
                EpochCompleted(
                    val_loss=0.5 / (epoch + 1), metrics={"zeta": float(epoch), "alpha_lr": 0.1}
                ),
                stream_id="run",
                epoch=epoch,
            )
            run.recorder.emit(
                SeedTelemetrySampled(
                    slot_id="s0", stage="TRAINING", alpha=0.0, metrics={"gain": 1.0 + epoch}
                ),
                stream_id="slot/s0",
                epoch=epoch,
            )
        run.finish()
        data = read_run(led, run.run_id)
        page = render_report(led, run.run_id)
        chosen = read_run(led, run.run_id, ["gain"])
    # EpochCompleted's own first (in their fixed order), then free-named ones by name.
    assert list(data.charts) == [n for n in RUN_COLUMNS if n == "val_loss"] + ["alpha_lr", "zeta"]
    assert data.recorded["gain"] == "slot" and "gain" not in data.charts
    assert "Also recorded: <code>gain</code> (per slot)" in page
    (gain,) = chosen.charts["gain"]
    assert gain.key == ("s0", "gain") and gain.points == [(e, 1.0 + e) for e in range(4)]


def test_an_unrecorded_metric_is_named_with_what_was_recorded(db_url: str) -> None:
    with Ledger.open(db_url) as led:
        run_id = synthetic_run(led, epochs=3, slots=1, seed=1, gc_period=10)
        with pytest.raises(ReportError) as caught:
            render_report(led, run_id, ["val_accuracy", "nope", "<b>"])
    message = str(caught.value)
    assert message.startswith("no metric named 'nope', '<b>' was recorded (recorded: ")
    assert "val_accuracy" in message


def test_a_samples_gradient_metrics_are_charted_from_its_payload(db_url: str) -> None:
    with Ledger.open(db_url) as led:
        run = led.start_run("grads", seed=1)
        for epoch in range(4):
            for slot in ("a", "b"):
                run.recorder.emit(
                    SeedTelemetrySampled(
                        slot_id=slot,
                        stage="TRAINING",
                        alpha=0.0,
                        grad_norm=float("inf") if (slot, epoch) == ("b", 2) else 0.5 * epoch,
                        grad_health=0.9,
                    ),
                    stream_id=f"slot/{slot}",
                    epoch=epoch,
                )
        run.finish()
        data = read_run(led, run.run_id, ["grad_norm", "grad_health"])
        plain = read_run(led, run.run_id)
    curves = {c.key: c.points for c in data.charts["grad_norm"]}
    assert curves[("a", "grad_norm")] == [(e, 0.5 * e) for e in range(4)]
    # An infinity is stored as text; it reads back as itself, not as SQLite's cast of it.
    assert curves[("b", "grad_norm")][2] == (2, float("inf"))
    assert [c.key[0] for c in data.charts["grad_health"]] == ["a", "b"]
    assert "grad_norm" not in plain.charts and data.recorded["grad_norm"] == "slot"
