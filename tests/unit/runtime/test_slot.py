"""SeedSlot: forward semantics, commands, cooldown, caching and checkpoints."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from kasmina.alpha import AlphaController, AlphaCurve, AlphaMode, AlphaScheduleError
from kasmina.errors import InvalidTransition, RunClosed
from kasmina.events import SeedStageChanged
from kasmina.gates import QualityGates
from kasmina.ledger import Ledger, Run
from kasmina.runtime.blueprints import build_blueprint
from kasmina.runtime.slot import CHECKPOINT_FORMAT, SeedSlot, SlotError
from kasmina.slot_state import ControllerState, SeedMetricsState, SlotState
from kasmina.stages import SeedStage

EASY = QualityGates(permissive=True, min_training_epochs=0, min_blending_epochs=0)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    with Ledger.open(f"sqlite:///{tmp_path / 'slot.db'}") as ledger:
        yield ledger.start_run("slot-tests", seed=0)


def features(seed: int = 0, shape: tuple[int, ...] = (2, 8, 5, 5)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def healthy(slot: SeedSlot) -> None:
    slot.measure(grad_health=1.0, has_exploding=False)


def to_stage(slot: SeedSlot, stage: SeedStage) -> None:
    """Drive a fresh slot forward to `stage` through its real commands."""
    if slot.stage is SeedStage.DORMANT:
        slot.germinate("conv_small", "s1", init_seed=1)
    order = [SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED]
    for target in order[: order.index(stage) + 1] if stage in order else []:
        healthy(slot)
        slot.measure(counterfactual=2.0)
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
        assert slot.isolate_gradients
        seed = slot.seed
        assert seed is not None
        x = features()
        half = torch.tensor(0.5)

        def host_grad(blend: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
            (grad,) = torch.autograd.grad(blend(host(x)).sum(), host.weight)
            return grad

        with slot.force_alpha(0.5):
            through_slot = host_grad(slot)
        # the host's gradient equals the one it gets when the seed's branch is cut by hand
        cut = host_grad(lambda h: torch.lerp(h, seed(h.detach()), half))
        torch.testing.assert_close(through_slot, cut)
        # and is not the one it would get if the seed's input were left attached
        attached = host_grad(lambda h: torch.lerp(h, seed(h), half))
        assert not torch.allclose(through_slot, attached)

    def test_blending_is_lerp(self) -> None:
        slot = SeedSlot("r0c0", 8, gates=EASY)
        to_stage(slot, SeedStage.BLENDING)
        slot.step_epoch()  # one step up the ramp
        alpha = slot.alpha
        assert 0.0 < alpha < 1.0
        x = features()
        assert slot.seed is not None
        with torch.no_grad():
            for p in slot.seed.parameters():
                p.add_(0.1)
            expected = torch.lerp(x, slot.seed(x), alpha)
            assert torch.equal(slot(x), expected)

    def test_alpha_override_is_a_pure_counterfactual(self) -> None:
        slot = SeedSlot("r0c0", 8, gates=EASY)
        to_stage(slot, SeedStage.BLENDING)
        slot.step_epoch()
        alpha, before = slot.alpha, slot.state
        assert 0.0 < alpha < 1.0
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
        assert slot.alpha == alpha and slot.state == before

    def test_force_alpha_restores_also_on_error_and_refuses_nesting(self) -> None:
        slot = SeedSlot("r0c0", 8, gates=EASY)
        to_stage(slot, SeedStage.BLENDING)
        slot.step_epoch()
        slot.step_epoch()
        alpha, before = slot.alpha, slot.state
        assert 0.0 < alpha < 1.0
        with pytest.raises(RuntimeError), slot.force_alpha(0.0):
            assert slot.alpha == 0.0
            raise RuntimeError("boom")
        assert slot.alpha == alpha
        with slot.force_alpha(0.0):
            with pytest.raises(SlotError, match="nested"), slot.force_alpha(1.0):
                pass
            assert slot.alpha == 0.0
        assert slot.alpha == alpha and slot.state == before

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

        slot.step_epoch()  # alpha moves up its ramp: each value needs its own tensor
        first = slot.alpha
        expect(slot, x, first)
        slot.step_epoch()
        second = slot.alpha
        assert 0.0 < first < second < 1.0
        expect(slot, x, second)
        with slot.force_alpha(0.1):
            expect(slot, x, 0.1)
        expect(slot, x, second)
        slot.to(torch.float64)
        expect(slot, x.double(), second)
        slot.to(torch.float32)
        expect(slot, x, second)
        slot.prune("test")
        assert torch.equal(slot(x), x)

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    def test_blending_slot_moves_between_cpu_and_cuda(self) -> None:
        slot = SeedSlot("r0c0", 8, gates=EASY)
        to_stage(slot, SeedStage.BLENDING)
        slot.step_epoch()
        assert 0.0 < slot.alpha < 1.0
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
        assert state["_extra_state"] == {
            "format": CHECKPOINT_FORMAT,
            "slot_state": slot.state.to_json(),
        }
        assert CHECKPOINT_FORMAT == 2
        fresh = SeedSlot("r0c0", 8, gates=EASY)
        fresh.load_state_dict(state)
        assert fresh.state == slot.state
        assert fresh.state.gates and fresh.state.gates == slot.state.gates
        assert fresh.stage is SeedStage.BLENDING
        assert fresh.alpha == slot.alpha
        assert fresh.controller == slot.controller
        assert fresh.metrics == slot.metrics
        assert (fresh.seed_id, fresh.blueprint_id, fresh.init_seed) == (
            slot.seed_id,
            slot.blueprint_id,
            slot.init_seed,
        )
        assert fresh.seed is not None and fresh.seed is not slot.seed
        for name, value in slot.seed.state_dict().items():  # the trained weights, not the init
            assert torch.equal(fresh.seed.state_dict()[name], value), name
        x = features()
        with torch.no_grad():
            assert torch.equal(fresh(x), slot(x))
        fresh.step_epoch()
        slot.step_epoch()
        assert fresh.alpha == slot.alpha
        assert fresh.state == slot.state

    def test_an_old_format_checkpoint_loads_its_state_and_rebuilds_the_seed(self) -> None:
        """A checkpoint written before format 2: the plain dict the slot wrote then."""
        trained = build_blueprint("conv_small", 8, "cnn", 7)
        with torch.no_grad():
            for p in trained.parameters():
                p.add_(0.05)
        # a fade-out from HOLDING one step in, as the old slot held it
        ramp = AlphaController(alpha=1.0, alpha_start=1.0, alpha_target=1.0)
        ramp.retarget(0.0, 4, AlphaCurve.COSINE, 6.0)
        ramp.step()
        old = {
            "stage": "BLENDING",
            "seed_id": "s7",
            "blueprint_id": "conv_small",
            "init_seed": 7,
            "blend": [0.8, 6, int(AlphaCurve.SIGMOID)],
            "controller": ramp.to_dict(),
            "metrics": {
                "epochs_in_stage": 1,
                "epochs_total": 12,
                "initial_accuracy": 40.0,
                "training_start_accuracy": 45.0,
                "blending_start_accuracy": 55.5,
                "accuracy": 58.25,
                "counterfactual": 1.5,
                "grad_ratio": 0.12,
                "grad_health": 0.9,
                "has_vanishing": False,
                "has_exploding": False,
            },
            "isolate": True,
            "embargo": 0,
            "pending_prune": ["fading", "governor"],
            "epoch": 12,
        }
        checkpoint = {f"seed.{k}": v for k, v in trained.state_dict().items()}
        checkpoint["_extra_state"] = old
        slot = SeedSlot("r0c0", 8, gates=EASY)
        slot.load_state_dict(checkpoint)
        assert slot.state == SlotState(
            slot_id="r0c0",
            stage=SeedStage.BLENDING,
            epoch=12,
            seed_id="s7",
            blueprint_id="conv_small",
            init_seed=7,
            blend_target=0.8,
            blend_steps=6,
            blend_curve="SIGMOID",
            controller=ControllerState(
                alpha=ramp.alpha,
                alpha_start=1.0,
                alpha_target=0.0,
                mode="DOWN",
                curve="COSINE",
                steepness=6.0,
                steps_total=4,
                steps_done=1,
            ),
            epochs_in_stage=1,
            epochs_total=12,
            pending_prune=("fading", "governor"),
            metrics=SeedMetricsState(
                initial_accuracy=40.0,
                training_start_accuracy=45.0,
                blending_start_accuracy=55.5,
                accuracy=58.25,
                counterfactual=1.5,
                grad_ratio=0.12,
                grad_health=0.9,
                has_vanishing=False,
                has_exploding=False,
            ),
        )
        assert 0.0 < slot.alpha < 1.0
        assert slot.isolate_gradients is old["isolate"]
        # the seed is rebuilt from its blueprint and init seed, the trained weights on top
        seed = slot.seed
        assert seed is not None and type(seed) is type(trained)
        untrained = build_blueprint("conv_small", 8, "cnn", 7).state_dict()
        for name, value in trained.state_dict().items():
            assert torch.equal(seed.state_dict()[name], value), name
            if value.is_floating_point():
                assert not torch.equal(untrained[name], value), name
        assert not any(p.requires_grad for p in seed.parameters())  # frozen while DOWN
        x = features()
        with torch.no_grad():
            assert torch.equal(slot(x), torch.lerp(x, trained(x), slot.alpha))
        # and it carries on as the old slot would have: the fade-out ends in its prune
        for _ in range(3):
            slot.step_epoch()
        assert slot.stage is SeedStage.PRUNED and slot.seed is None
        assert slot.state.outcome == "pruned: fading"

    def test_an_old_format_checkpoint_in_embargo_keeps_its_count(self) -> None:
        old = {
            "stage": "EMBARGOED",
            "seed_id": "s3",
            "blueprint_id": "norm",
            "init_seed": 3,
            "blend": [1.0, 5, int(AlphaCurve.LINEAR)],
            "controller": AlphaController().to_dict(),
            "metrics": {
                "epochs_in_stage": 3,
                "epochs_total": 9,
                "initial_accuracy": None,
                "training_start_accuracy": None,
                "blending_start_accuracy": None,
                "accuracy": 50.0,
                "counterfactual": None,
                "grad_ratio": None,
                "grad_health": None,
                "has_vanishing": None,
                "has_exploding": None,
            },
            "isolate": False,
            "embargo": 3,
            "pending_prune": None,
            "epoch": 20,
        }
        slot = SeedSlot("r0c0", 8, embargo_epochs=5)
        slot.load_state_dict({"_extra_state": old})
        assert slot.state == SlotState(
            slot_id="r0c0",
            stage=SeedStage.EMBARGOED,
            epoch=20,
            seed_id="s3",
            blueprint_id="norm",
            init_seed=3,
            epochs_in_stage=3,
            epochs_total=9,
            metrics=SeedMetricsState(accuracy=50.0),
        )
        assert slot.seed is None and not slot.isolate_gradients
        seen = []
        for _ in range(3):  # the fourth and fifth epochs of the embargo, then the reset
            slot.step_epoch()
            seen.append(slot.stage)
        assert seen == [SeedStage.EMBARGOED, SeedStage.RESETTING, SeedStage.DORMANT]
        assert slot.epoch == 23 and slot.seed_id is None

    def test_a_checkpoint_of_another_slot_is_refused(self) -> None:
        slot = SeedSlot("r0c0", 8, gates=EASY)
        to_stage(slot, SeedStage.TRAINING)
        other = SeedSlot("r0c1", 8, gates=EASY)
        with pytest.raises(SlotError, match="r0c0"):
            other.load_state_dict(slot.state_dict())
        assert other.stage is SeedStage.DORMANT and other.seed is None
