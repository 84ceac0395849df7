"""`kasmina demo`: real training on the bundled digits, recorded and reproducible."""

from __future__ import annotations

from pathlib import Path

from kasmina.demo import run_demo
from kasmina.events import SeedStageChanged
from kasmina.ledger import Ledger


def _stream(url: str, run_id: str) -> list[tuple[str, str, int, object]]:
    """Type, stream, version and payload; hashes differ (they cover ids and timestamps)."""
    out: list[tuple[str, str, int, object]] = []
    with Ledger.open(url) as ledger:
        for e in ledger.read(run_id):
            payload = e.payload.model_dump(mode="json")
            if e.event_type == "RunFinished":
                payload["seal"] = sorted(payload["seal"])
            out.append((e.event_type, e.stream_id, e.version, payload))
    return out


def test_default_demo_fossilizes_one_seed_and_recycles_a_pruned_slot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    with Ledger.open(url) as ledger:
        result = run_demo(ledger)
        assert ledger.verify(result.run_id).ok
        events = list(ledger.read(result.run_id))
        moves = [e.payload for e in events if isinstance(e.payload, SeedStageChanged)]
        evictions = [e for e in events if e.event_type == "CacheEvicted"]
    assert evictions and all(e.stream_id.startswith("memory/") for e in evictions)
    released = [e for e in events if e.event_type == "MemoryReleased"]
    pruned = [e for e in events if e.event_type == "SeedPruned"]
    assert len(released) == len(pruned) > 0
    targets = [m.to_stage.name for m in moves]
    assert "FOSSILIZED" in targets
    assert "PRUNED" in targets
    assert any(m.from_stage.name == "RESETTING" and m.to_stage.name == "DORMANT" for m in moves)
    recycled = {m.slot_id for m in moves if m.to_stage.name == "DORMANT"}
    replanted = [m for m in moves if m.slot_id in recycled and m.to_stage.name == "GERMINATED"]
    assert len(replanted) >= 2  # the recycled slot was planted again
    assert result.accuracy_after > result.accuracy_before + 50


def test_same_seed_gives_the_same_events(tmp_path: Path) -> None:
    streams = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / name}.db"
        with Ledger.open(url) as ledger:
            run_id = run_demo(ledger, epochs=12, seed=3).run_id
        streams.append(_stream(url, run_id))
    assert len(streams[0]) > 50
    assert streams[0] == streams[1]
