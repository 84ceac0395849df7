"""Two DDP ranks (gloo, CPU) train one host and record one run into a real PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch.multiprocessing as torch_mp
from conftest import new_pg_database
from ddp_worker import SLOTS, agree_rank, exit_rank, spawn

from kasmina.events import PolicyDecided, RunFinished, RunStarted
from kasmina.ledger import Ledger

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def ddp_run(
    pg_server: object, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, list[dict[str, object]]]:

    url = new_pg_database(pg_server)  # type: ignore[arg-type]
    out = tmp_path_factory.mktemp("ddp")
    spawn(url, str(out), world_size=2, backend="gloo")
    reports = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(2)]
    return url, reports


def test_both_ranks_record_one_run(ddp_run: tuple[str, list[dict[str, object]]]) -> None:
    url, reports = ddp_run
    with Ledger.open(url) as ledger:
        runs = ledger.runs()
        assert [r.run_id for r in runs] == [reports[0]["run_id"]] == [reports[1]["run_id"]]
        events = list(ledger.read(runs[0].run_id))
    started = events[0].payload
    assert isinstance(started, RunStarted)
    assert started.world_size == 2
    assert started.slot_writers == {SLOTS[0]: 0, SLOTS[1]: 1}
    by_rank = Counter(e.rank for e in events)
    assert set(by_rank) == {0, 1}
    writers = {e.stream_id: e.rank for e in events}
    assert writers["run"] == 0
    assert writers[f"slot/{SLOTS[0]}"] == 0
    assert writers[f"slot/{SLOTS[1]}"] == 1
    assert writers["memory/kernels@0"] == 0 and writers["memory/kernels@1"] == 1
    ranks_per_stream = defaultdict(set)
    for e in events:
        ranks_per_stream[e.stream_id].add(e.rank)
    assert all(len(r) == 1 for r in ranks_per_stream.values()), ranks_per_stream


def test_versions_are_contiguous_and_the_run_verifies(
    ddp_run: tuple[str, list[dict[str, object]]],
) -> None:
    url, reports = ddp_run
    with Ledger.open(url) as ledger:
        run_id = str(reports[0]["run_id"])
        events = list(ledger.read(run_id))
        report = ledger.verify(run_id)
    assert report.ok, report.faults
    versions = defaultdict(list)
    for e in events:
        versions[e.stream_id].append(e.version)
    for stream, seen in versions.items():
        assert seen == list(range(1, len(seen) + 1)), stream
    assert [e.position for e in events] == sorted(e.position for e in events)


def test_the_seal_holds_every_rank_streams_and_comes_last(
    ddp_run: tuple[str, list[dict[str, object]]],
) -> None:
    url, reports = ddp_run
    assert reports[0]["seal"] == reports[1]["seal"]
    with Ledger.open(url) as ledger:
        events = list(ledger.read(str(reports[0]["run_id"])))
    last = events[-1]
    assert isinstance(last.payload, RunFinished) and last.payload.status == "completed"
    assert last.hash == reports[0]["seal"]
    heads = {e.stream_id: e.hash for e in events[:-1]}
    assert last.payload.seal == heads
    assert any(e.rank == 1 for e in events if e.stream_id in last.payload.seal)


def test_replicas_stay_identical_and_follow_the_same_lifecycle(
    ddp_run: tuple[str, list[dict[str, object]]],
) -> None:
    _, reports = ddp_run
    assert (
        reports[0]["stages"]
        == reports[1]["stages"]
        == {SLOTS[0]: "FOSSILIZED", SLOTS[1]: "EMBARGOED"}
    )
    assert reports[0]["params"] == reports[1]["params"]


def test_alpha_override_is_quiet_and_force_alpha_warns_under_ddp(
    ddp_run: tuple[str, list[dict[str, object]]],
) -> None:
    _, reports = ddp_run
    for report in reports:
        assert report["override_warnings"] == []
        forced = report["force_alpha_warnings"]
        assert isinstance(forced, list) and len(forced) == 1
        assert "force_alpha" in forced[0] and "torch.distributed" in forced[0]


def test_gate_verdicts_are_rank_zeros_on_every_rank(tmp_path: Path) -> None:
    init = f"file://{tmp_path / 'rendezvous'}"
    torch_mp.spawn(agree_rank, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    verdicts = [json.loads((tmp_path / f"agree{r}.json").read_text()) for r in range(2)]
    assert verdicts[0] == {"passed": True, "message": "rank 0 passes"}
    assert verdicts[1] == {
        "passed": True,
        "message": "rank 0 passes [rank 1 had failed (too_soon); rank 0 decides]",
    }


def test_rank_zeros_decisions_are_recorded_by_each_slots_writer(
    ddp_run: tuple[str, list[dict[str, object]]],
) -> None:
    """The manager broadcasts rank 0's actions; the slot's writer records each decision."""
    url, reports = ddp_run
    with Ledger.open(url) as ledger:
        events = list(ledger.read(str(reports[0]["run_id"])))
    decided = [e for e in events if isinstance(e.payload, PolicyDecided)]
    assert {(e.stream_id, e.payload.action) for e in decided} == {
        (f"slot/{SLOTS[0]}", "GERMINATE"),
        (f"slot/{SLOTS[0]}", "FOSSILIZE"),
        (f"slot/{SLOTS[1]}", "GERMINATE"),
        (f"slot/{SLOTS[1]}", "PRUNE"),
    }
    assert all(e.rank == SLOTS.index(e.stream_id.removeprefix("slot/")) for e in decided)
    assert all(e.payload.accepted for e in decided)
    assert reports[0]["stages"][SLOTS[0]] == "FOSSILIZED"
    assert reports[0]["stages"][SLOTS[1]] in ("PRUNED", "EMBARGOED")


def test_broadcast_sends_rank_zeros_value_and_gather_every_ranks(tmp_path: Path) -> None:
    torch_mp.spawn(exit_rank, args=(2, f"file://{tmp_path / 'rv'}", str(tmp_path)), nprocs=2)
    seen = [json.loads((tmp_path / f"exit{r}.json").read_text()) for r in range(2)]
    expected = [{"rank": r, "chosen": "rank 0's value"} for r in range(2)]
    assert seen == [expected, expected]


def test_ranks_exit_cleanly_straight_after_kasminas_last_collective(tmp_path: Path) -> None:
    """With torch's object collectives about half of these exits aborted (SIGABRT)."""
    for attempt in range(8):
        out = tmp_path / str(attempt)
        out.mkdir()
        torch_mp.spawn(exit_rank, args=(2, f"file://{out / 'rv'}", str(out)), nprocs=2)
