"""SeedSlot: forward semantics, commands, cooldown, caching and checkpoints."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from kasmina.alpha import AlphaMode, AlphaScheduleError
from kasmina.errors import InvalidTransition, RunClosed
from kasmina.events import SeedStageChanged
from kasmina.gates import QualityGates
from kasmina.ledger import Ledger, Run
from kasmina.runtime.slot import SeedSlot, SlotError
from kasmina.stages import SeedStage

EASY = QualityGates(permissive=True, min_training_epochs=0, min_blending_epochs=0)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    with Ledger.open(f"sqlite:///{tmp_path / 'slot.db'}") as ledger:
        yield ledger.start_run("slot-tests", seed=0)


def features(seed: int = 0, shape: tuple[int, ...] = (2, 8, 5, 5)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def healthy(slot: SeedSlot) -> None:
    slot.metrics.grad_health, slot.metrics.has_exploding = 1.0, False


def to_stage(slot: SeedSlot, stage: SeedStage) -> None:
    """Drive a fresh slot forward to `stage` through its real commands."""
    if slot.stage is SeedStage.DORMANT:
        slot.germinate("conv_small", "s1", init_seed=1)
    order = [SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED]
    for target in order[: order.index(stage) + 1] if stage in order else []:
        healthy(slot)
        slot.metrics.counterfactual = 2.0
        if target is SeedStage.HOLDING:
            while slot.controller.mode is not AlphaMode.HOLD:
                slot.step_epoch()
        assert slot.advance_stage(target).passed, target


def stage_changes(run: Run) -> list[tuple[str, str, str]]:
    return [
        (e.payload.from_stage.name, e.payload.to_stage.name, e.payload.trigger)
        for e in run.ledger.read(run.run_id)
        if isinstance(e.payload, SeedStageChanged)
    ]


class TestForward:
    def test_dormant_slot_is_identity(self) -> None:
        slot = SeedSlot("r0c0", 8)
        x = features()
        assert slot(x) is x

    def test_training_output_is_host_yet_seed_learns(self) -> None:
        slot = SeedSlot("r0c0", 8, gates=EASY)
        to_stage(slot, SeedStage.TRAINING)
        x = features().requires_grad_(True)
        y = slot(x)
        assert torch.equal(y, x)
        y.square().sum().backward()
        assert slot.seed is not None
        grads = [p.grad for p in slot.seed.parameters()]
        assert any(g is not None and float(g.abs().max()) > 0 for g in grads)

    def test_isolation_keeps_seed_gradient_out_of_the_host(self) -> None:
        host = nn.Conv2d(8, 8, 1)
        slot = SeedSlot("r0c0", 8, gates=EASY)
        to_stage(slot, SeedStage.BLENDING)
        slot.set_alpha(0.5)
        assert slot.isolate_gradients
        x = features()

        def host_grad(with_slot: bool) -> torch.Tensor:
            host.zero_grad()
            h = host(x)
            out = (
                slot(h)
                if with_slot
                else torch.lerp(
                    h,
                    h.detach() * 0 + slot.seed(h.detach()),  # type: ignore[misc]
                    torch.tensor(0.5),
                )
            )
            out.sum().backward()
            assert host.weight.grad is not None
            return host.weight.grad.clone()

        # the host's gradient equals the one it gets when the seed's branch is cut by hand
        torch.testing.assert_close(host_grad(True), host_grad(False))
        without_isolation = slot.isolate_gradients
        slot.isolate_gradients = False
        assert not torch.allclose(host_grad(True), host_grad(False))
        slot.isolate_gradients = without_isolation

    def test_blending_is_lerp(self) -> None:
        slot = SeedSlot("r0c0", 8, gates=EASY)
        to_stage(slot, SeedStage.BLENDING)
        slot.set_alpha(0.3)
        x = features()
        assert slot.seed is not None
        with torch.no_grad():
            for p in slot.seed.parameters():
                p.add_(0.1)
            expected = torch.lerp(x, slot.seed(x), 0.3)
            assert torch.equal(slot(x), expected)

    def test_alpha_override_is_a_pure_counterfactual(self) -> None:
        slot = SeedSlot("r0c0", 8, gates=EASY)
        to_stage(slot, SeedStage.BLENDING)
        slot.set_alpha(0.7)
        assert slot.seed is not None
        with torch.no_grad():
            for p in slot.seed.parameters():
                p.add_(0.2)
        x = features()
        assert torch.equal(slot(x, alpha_override=0.0), x)
        per_sample = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
        out = slot(x, alpha_override=per_sample)
        assert torch.equal(out[0], x[0])
        assert torch.equal(out[1], slot.seed(x)[1])
        assert slot.alpha == 0.7

    def test_force_alpha_restores_also_on_error_and_refuses_nesting(self) -> None:
        slot = SeedSlot("r0c0", 8, gates=EASY)
        to_stage(slot, SeedStage.BLENDING)
        slot.set_alpha(0.4)
        with pytest.raises(RuntimeError), slot.force_alpha(0.0):
            assert slot.alpha == 0.0
            raise RuntimeError("boom")
        assert slot.alpha == 0.4
        with slot.force_alpha(0.0):
            with pytest.raises(SlotError, match="nested"), slot.force_alpha(1.0):
                pass
            assert slot.alpha == 0.0
        assert slot.alpha == 0.4

    def test_force_alpha_warns_once_under_distributed(self, tmp_path: Path) -> None:
        import torch.distributed as dist

        dist.init_process_group(
            "gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1
        )
        try:
            slot = SeedSlot("r0c0", 8, gates=EASY)
            to_stage(slot, SeedStage.BLENDING)
            with pytest.warns(RuntimeWarning, match="alpha_override"), slot.force_alpha(0.0):
                pass
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                with slot.force_alpha(0.0):
                    pass
        finally:
            dist.destroy_process_group()


class TestAlphaCache:
    def test_value_dtype_and_override_changes_are_never_stale(self) -> None:
        slot = SeedSlot("r0c0", 8, gates=EASY)
        to_stage(slot, SeedStage.BLENDING)
        assert slot.seed is not None
        with torch.no_grad():
            for p in slot.seed.parameters():
                p.add_(0.3)
        x = features()

        def expect(module: SeedSlot, inp: torch.Tensor, a: float) -> None:
            assert module.seed is not None
            with torch.no_grad():
                torch.testing.assert_close(
                    module(inp), torch.lerp(inp, module.seed(inp), a), rtol=0, atol=0
                )

        slot.set_alpha(0.25)
        expect(slot, x, 0.25)
        slot.set_alpha(0.75)
        expect(slot, x, 0.75)
        with slot.force_alpha(0.1):
            expect(slot, x, 0.1)
        expect(slot, x, 0.75)
        slot.to(torch.float64)
        expect(slot, x.double(), 0.75)
        slot.to(torch.float32)
        expect(slot, x, 0.75)
        slot.prune("test")
        assert torch.equal(slot(x), x)

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    def test_blending_slot_moves_between_cpu_and_cuda(self) -> None:
        slot = SeedSlot("r0c0", 8, gates=EASY)
        to_stage(slot, SeedStage.BLENDING)
        slot.set_alpha(0.6)
        x = features()
        cpu_out = slot(x).detach()
        slot.to("cuda")
        gpu_out = slot(x.cuda()).detach()
        torch.testing.assert_close(gpu_out.cpu(), cpu_out, rtol=1e-5, atol=1e-5)
        assert torch.equal(slot(x.cuda(), alpha_override=0.0), x.cuda())
        slot.to("cpu")
        torch.testing.assert_close(slot(x).detach(), cpu_out)


class TestCommands:
    def test_full_path_is_recorded_as_a_walk_of_the_table(self, run: Run) -> None:
        slot = SeedSlot("r0c0", 8, recorder=run.recorder, gates=EASY)
        to_stage(slot, SeedStage.FOSSILIZED)
        assert stage_changes(run) == [
            ("DORMANT", "GERMINATED", "command"),
            ("GERMINATED", "TRAINING", "command"),
            ("TRAINING", "BLENDING", "command"),
            ("BLENDING", "HOLDING", "command"),
            ("HOLDING", "FOSSILIZED", "command"),
        ]
        assert slot.prune("too late") is False

    def test_prune_cooldown_takes_seven_ticks_and_the_slot_is_reusable(self, run: Run) -> None:
        slot = SeedSlot("r0c0", 8, recorder=run.recorder, gates=EASY)
        to_stage(slot, SeedStage.TRAINING)
        assert slot.prune("no gain", initiator="policy")
        assert slot.seed is None and slot.stage is SeedStage.PRUNED
        seen = []
        for _ in range(7):
            slot.step_epoch()
            seen.append(slot.stage)
        assert seen == [SeedStage.EMBARGOED] * 5 + [SeedStage.RESETTING, SeedStage.DORMANT]
        assert slot.seed_id is None
        slot.germinate("norm", "s2")
        assert [c[1] for c in stage_changes(run)][-4:] == [
            "EMBARGOED",
            "RESETTING",
            "DORMANT",
            "GERMINATED",
        ]

    def test_illegal_moves_raise_and_record_nothing(self, run: Run) -> None:
        slot = SeedSlot("r0c0", 8, recorder=run.recorder, gates=EASY)
        before = len(list(run.ledger.read(run.run_id)))
        with pytest.raises(InvalidTransition, match="r0c0"):
            slot.prune("nothing to prune")
        with pytest.raises(InvalidTransition):
            slot.advance_stage(SeedStage.BLENDING)
        slot.germinate("conv_small", "s1")
        with pytest.raises(InvalidTransition):
            slot.germinate("conv_small", "s2")
        with pytest.raises(SlotError):
            slot.advance_stage(SeedStage.PRUNED)
        assert len(list(run.ledger.read(run.run_id))) == before + 2  # germinated + its move

    def test_failed_gate_is_recorded_and_does_not_move(self, run: Run) -> None:
        slot = SeedSlot("r0c0", 8, recorder=run.recorder)  # strict gates
        slot.germinate("conv_small", "s1")
        slot.advance_stage()
        result = slot.advance_stage()
        assert not result.passed and slot.stage is SeedStage.TRAINING
        assert "insufficient_training_0_of_10" in result.checks_failed
        verdicts = [
            e.payload for e in run.ledger.read(run.run_id) if e.event_type == "SeedGateEvaluated"
        ]
        assert [(v.gate, v.passed) for v in verdicts] == [("G1", True), ("G2", False)]  # type: ignore[attr-defined]

    def test_move_and_record_fail_together(self, run: Run) -> None:
        slot = SeedSlot("r0c0", 8, recorder=run.recorder, gates=EASY)
        slot.germinate("conv_small", "s1")
        run.finish()  # the ledger now refuses every append to this run
        with pytest.raises(RunClosed):
            slot.advance_stage()
        assert slot.stage is SeedStage.GERMINATED and not slot.isolate_gradients
        with pytest.raises(RunClosed):
            slot.prune("x")
        assert slot.stage is SeedStage.GERMINATED and slot.seed is not None

    def test_scheduled_prune_from_holding_ramps_down_frozen_then_prunes(self, run: Run) -> None:
        slot = SeedSlot("r0c0", 8, recorder=run.recorder, gates=EASY)
        to_stage(slot, SeedStage.HOLDING)
        assert slot.seed is not None
        params = list(slot.seed.parameters())
        slot.schedule_prune(steps=2, reason="fading")
        assert slot.stage is SeedStage.BLENDING and slot.controller.mode is AlphaMode.DOWN
        assert not any(p.requires_grad for p in params)
        with pytest.raises(AlphaScheduleError):
            slot.set_alpha_target(0.5)
        slot.step_epoch()
        assert 0.0 < slot.alpha < 1.0
        slot.step_epoch()
        assert slot.stage is SeedStage.PRUNED
        assert all(p.requires_grad for p in params)
        pruned = [e.payload for e in run.ledger.read(run.run_id) if e.event_type == "SeedPruned"]
        assert pruned[0].reason == "fading"  # type: ignore[attr-defined]

    def test_lower_alpha_target_from_holding_returns_to_blending(self, run: Run) -> None:
        slot = SeedSlot("r0c0", 8, recorder=run.recorder, gates=EASY)
        to_stage(slot, SeedStage.HOLDING)
        slot.set_alpha_target(0.5, steps=0)
        assert slot.stage is SeedStage.BLENDING and slot.alpha == 0.5
        assert stage_changes(run)[-1] == ("HOLDING", "BLENDING", "command")


class TestCheckpoint:
    def test_state_dict_round_trip_restores_everything(self) -> None:
        slot = SeedSlot("r0c0", 8, gates=EASY)
        to_stage(slot, SeedStage.BLENDING)
        slot.step_epoch(accuracy=61.5, counterfactual=1.25)
        assert slot.seed is not None
        with torch.no_grad():
            for p in slot.seed.parameters():
                p.add_(0.05)
        state = slot.state_dict()
        fresh = SeedSlot("r0c0", 8, gates=EASY)
        fresh.load_state_dict(state)
        assert fresh.stage is SeedStage.BLENDING
        assert fresh.alpha == slot.alpha
        assert fresh.controller == slot.controller
        assert fresh.metrics == slot.metrics
        assert (fresh.seed_id, fresh.blueprint_id, fresh.init_seed) == (
            slot.seed_id,
            slot.blueprint_id,
            slot.init_seed,
        )
        x = features()
        with torch.no_grad():
            assert torch.equal(fresh(x), slot(x))
        fresh.step_epoch()
        slot.step_epoch()
        assert fresh.alpha == slot.alpha
