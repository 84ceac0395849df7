"""Free-named metrics: recorded beside the typed fields, and plain SQL in the `metrics` view."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from kasmina.errors import PayloadInvalid
from kasmina.events import MAX_METRICS, EpochCompleted, SeedTelemetrySampled, event_from_dict
from kasmina.ledger import Ledger
from kasmina.stages import SeedStage

BIN = str(Path(sys.executable).with_name("kasmina"))


def _record(ledger: Ledger) -> str:
    run = ledger.start_run(name="metrics", seed=0)
    rec = run.recorder
    rec.emit(
        EpochCompleted(
            val_accuracy=0.9,
            metrics={"f1": 0.75, "lr": 3e-4, "grad/max": math.inf, "loss.min": -math.inf},
        ),
        stream_id="run",
        epoch=1,
    )
    rec.emit(
        SeedTelemetrySampled(
            slot_id="a", stage=SeedStage.TRAINING, alpha=0.0, metrics={"auc": 0.5, "z": -0.0}
        ),
        stream_id="slot/a",
        epoch=1,
        seed_id="s1",
    )
    rec.emit(EpochCompleted(metrics={"undefined": math.nan}), stream_id="run", epoch=2)
    run.finish()
    return run.run_id


def test_the_metrics_view_has_a_row_per_metric(ledger: Ledger) -> None:
    run_id = _record(ledger)
    columns, rows = ledger.sql(
        f"SELECT run_id, epoch, slot_id, seed_id, name, value FROM metrics "
        f"WHERE run_id = '{run_id}' ORDER BY position, name"
    )
    got = list(rows)
    assert columns == ["run_id", "epoch", "slot_id", "seed_id", "name", "value"]
    by_name = {r[4]: r for r in got}
    assert set(by_name) == {"f1", "lr", "grad/max", "loss.min", "auc", "z", "undefined"}
    assert by_name["f1"] == (run_id, 1, None, None, "f1", 0.75)
    assert by_name["lr"][5] == 3e-4
    assert by_name["grad/max"][5] == math.inf and by_name["loss.min"][5] == -math.inf
    assert by_name["auc"][2:] == ("a", "s1", "auc", 0.5)
    assert math.copysign(1.0, by_name["z"][5]) == -1.0
    nan = by_name["undefined"][5]
    if ledger.dialect == "postgresql":
        assert math.isnan(nan)
    else:
        assert nan is None  # SQLite has no NaN
    assert ledger.verify(run_id).ok


def test_metrics_read_back_exactly(ledger: Ledger) -> None:
    run_id = _record(ledger)
    epochs = [e.payload for e in ledger.read(run_id) if isinstance(e.payload, EpochCompleted)]
    assert epochs[0].metrics == {
        "f1": 0.75,
        "lr": 3e-4,
        "grad/max": math.inf,
        "loss.min": -math.inf,
    }
    assert math.isnan(epochs[1].metrics["undefined"])


def test_history_shows_them(ledger: Ledger) -> None:
    run_id = _record(ledger)
    proc = subprocess.run(
        [BIN, "--db", ledger.url, "history", run_id, "--format", "jsonl"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    payloads = [json.loads(line)["payload"] for line in proc.stdout.splitlines()]
    assert {"f1": 0.75, "lr": 3e-4, "grad/max": "Infinity", "loss.min": "-Infinity"} in [
        p.get("metrics") for p in payloads
    ]


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"F1": 1.0}, "String should match pattern"),
        ({"with space": 1.0}, "String should match pattern"),
        ({"x" * 65: 1.0}, "String should match pattern"),
        ({f"m{i}": 1.0 for i in range(MAX_METRICS + 1)}, "at most 64 items"),
        ({"f1": "high"}, "expected a number"),
        ({"f1": None}, "metrics.f1"),
    ],
)
def test_a_bad_metric_is_one_line_and_records_nothing(
    ledger: Ledger, metrics: dict[str, object], message: str
) -> None:
    run = ledger.start_run(name="metrics", seed=0)
    with pytest.raises(PayloadInvalid, match=message) as info:
        event_from_dict("EpochCompleted", {"metrics": metrics}, run_id=run.run_id, stream_id="run")
    assert "\n" not in str(info.value)
    assert [e.event_type for e in ledger.read(run.run_id)] == ["RunStarted"]


def test_events_written_before_metrics_read_with_none() -> None:
    from kasmina.events import load_payload

    old = load_payload("EpochCompleted", 1, {"val_accuracy": 0.5, "param_digests": {}})
    assert isinstance(old, EpochCompleted) and old.metrics == {} and old.val_accuracy == 0.5
    sample = load_payload(
        "SeedTelemetrySampled", 1, {"slot_id": "a", "stage": "TRAINING", "alpha": 0.0}
    )
    assert isinstance(sample, SeedTelemetrySampled) and sample.metrics == {}


def test_the_report_lists_them(ledger: Ledger, tmp_path: Path) -> None:
    run_id = _record(ledger)
    out = tmp_path / "run.html"
    proc = subprocess.run(
        [BIN, "--db", ledger.url, "report", run_id, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    section = html[html.index("<section id=metrics>") :]
    section = section[: section.index("</section>")]
    assert "<td>run</td><td>f1</td><td class=n>1</td><td class=n>0.75</td>" in section
    assert "<td>a</td><td>auc</td>" in section
    assert "<td>run</td><td>grad/max</td><td class=n>1</td><td class=n>inf</td>" in section
    # a NaN counts as a value but is neither lowest nor highest
    assert "<td>run</td><td>undefined</td><td class=n>1</td><td class=n>—</td>" in section
