"""The runtime on a GPU: device moves, the alpha cache per device and dtype, overrides,
and a `SeedManager` driving seeds on the device.

Every test here needs CUDA and skips cleanly without it (CI has no GPU); they
run on the GPU machine (see docs/distributed.md for the figures).
"""

from __future__ import annotations

import gc
import math
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_slot import EASY, features, healthy, to_stage
from torch import nn

from kasmina.alpha import AlphaMode
from kasmina.events import EpochCompleted, SeedStageChanged, SeedTelemetrySampled
from kasmina.ledger import Ledger, Run
from kasmina.runtime.blueprints import build_blueprint, param_digest, param_digests
from kasmina.runtime.manager import SeedManager
from kasmina.runtime.slot import SeedSlot
from kasmina.runtime.telemetry import emit_sample
from kasmina.stages import SeedStage

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def blending(alpha: float = 0.6) -> SeedSlot:
    """A blending slot whose ramp has reached `alpha` (a one-step ramp to that target)."""
    slot = SeedSlot("r0c0", 8, gates=EASY)
    slot.germinate("conv_small", "s1", init_seed=1, alpha_target=alpha, tempo=1)
    to_stage(slot, SeedStage.BLENDING)
    slot.step_epoch()
    assert slot.alpha == alpha and slot.controller.mode is AlphaMode.HOLD
    assert slot.seed is not None
    with torch.no_grad():
        for p in slot.seed.parameters():
            p.add_(0.3)  # a seed that visibly changes the features
    return slot


def test_forward_on_cuda_equals_cpu_within_tolerance() -> None:
    slot = blending()
    x = features(3, (4, 8, 16, 16))
    with torch.no_grad():
        cpu_out = slot(x)
        slot.to("cuda")
        gpu_out = slot(x.cuda())
    assert gpu_out.device.type == "cuda"
    torch.testing.assert_close(gpu_out.cpu(), cpu_out, rtol=1e-4, atol=1e-5)
    assert not torch.equal(cpu_out, x)


def test_a_digest_on_cuda_equals_the_digest_on_the_cpu() -> None:
    modules = {f"s{i}": build_blueprint("attention_lite", 192, "transformer", i) for i in range(3)}
    on_cpu = {k: param_digest(m) for k, m in modules.items()}
    mixed = {**{k: m.cuda() for k, m in modules.items()}, "cpu": build_blueprint("norm", 8)}
    assert param_digests(mixed) == {**on_cpu, "cpu": param_digest(build_blueprint("norm", 8))}
    half = build_blueprint("mlp", 16, "transformer", 2).to(torch.bfloat16)
    expected = param_digest(half)
    assert param_digest(half.cuda()) == expected


def test_alpha_cache_holds_one_tensor_per_device_and_dtype() -> None:
    slot = blending(0.6)
    x = features()
    with torch.no_grad():
        slot(x)
        slot.to("cuda")
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            slot.to(dtype)
            out = slot(x.cuda().to(dtype))
            assert out.dtype is dtype and out.device.type == "cuda"
            assert slot.seed is not None
            expected = torch.lerp(x.cuda().to(dtype), slot.seed(x.cuda().to(dtype)), 0.6)
            # cuDNN may pick another kernel for the second call: half types differ in the
            # last bits; a wrong alpha (or one of another dtype) would be off by far more.
            tol = 1e-5 if dtype is torch.float32 else 1e-2
            torch.testing.assert_close(out, expected, rtol=tol, atol=tol)
    keys = {(device.type, dtype) for _, device, dtype in slot._alpha_cache}
    assert {("cuda", torch.float16), ("cuda", torch.bfloat16), ("cuda", torch.float32)} <= keys
    for (value, device, dtype), tensor in slot._alpha_cache.items():
        assert (tensor.device, tensor.dtype) == (device, dtype)
        assert float(tensor) == pytest.approx(value, abs=1e-2)


def test_alpha_override_on_cuda_blends_per_sample_and_mutates_nothing() -> None:
    slot = blending(0.6).to("cuda")
    x = features(5, (3, 8, 5, 5)).cuda()
    weights = torch.tensor([0.0, 0.5, 1.0], device="cuda").view(3, 1, 1, 1)
    with torch.no_grad():
        assert slot.seed is not None
        seed_out = slot.seed(x)
        out = slot(x, alpha_override=weights)
        torch.testing.assert_close(out, torch.lerp(x, seed_out, weights), rtol=0, atol=0)
        assert torch.equal(out[0], x[0])
        assert torch.equal(slot(x, alpha_override=0.0), x)
    assert slot.alpha == pytest.approx(0.6)


def test_a_blending_slot_moves_devices_and_keeps_recording(tmp_path: Path) -> None:
    with Ledger.open(f"sqlite:///{tmp_path / 'cuda.db'}") as ledger:
        run = ledger.start_run("cuda", seed=0)
        slot = SeedSlot("r0c0", 8, gates=EASY, recorder=run.recorder).to("cuda")
        to_stage(slot, SeedStage.BLENDING)
        assert slot.seed is not None
        assert all(p.device.type == "cuda" for p in slot.seed.parameters())
        x = features().cuda()
        out = slot(x)
        out.sum().backward()
        emit_sample(run.recorder, slot, 0)
        slot.to("cpu")
        assert all(p.device.type == "cpu" for p in slot.seed.parameters())
        assert slot(x.cpu()).device.type == "cpu"
        slot.to("cuda")
        while slot.controller.mode is not AlphaMode.HOLD:
            slot.step_epoch()
        healthy(slot)
        assert slot.advance_stage(SeedStage.HOLDING).passed
        run.finish()
        events = list(ledger.read(run.run_id))
        assert ledger.verify(run.run_id).ok
    moves = [e.payload.to_stage for e in events if isinstance(e.payload, SeedStageChanged)]
    assert moves == [
        SeedStage.GERMINATED,
        SeedStage.TRAINING,
        SeedStage.BLENDING,
        SeedStage.HOLDING,
    ]
    assert any(isinstance(e.payload, SeedTelemetrySampled) for e in events)


# -- SeedManager on CUDA ------------------------------------------------------------


class Host(nn.Module):
    """stem conv -> slot -> pool -> linear: the smallest host a cnn seed fits in."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.slot = SeedSlot("r0c0", 8, gates=EASY)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.slot(F.relu(self.stem(x))).mean(dim=(2, 3)))
        return out


def batch(device: str = "cuda") -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn((16, 3, 8, 8), generator=generator)
    y = torch.randint(4, (16,), generator=generator)
    return x.to(device), y.to(device)


def host(device: str = "cuda") -> Host:
    torch.manual_seed(0)
    return Host().to(device)


def step(model: nn.Module, manager: SeedManager, optimizer: torch.optim.Optimizer) -> None:
    x, y = batch(next(model.parameters()).device.type)
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    manager.after_backward()
    optimizer.step()


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    with Ledger.open(f"sqlite:///{tmp_path / 'manager.db'}") as ledger:
        yield ledger.start_run("cuda-manager", seed=0)


def test_a_seed_planted_on_cuda_joins_the_optimizer_and_learns(run: Run) -> None:
    model = host()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    manager = SeedManager(model, optimizer, run.recorder)
    model.slot.germinate("conv_small", "s1", init_seed=1)
    seed = model.slot.seed
    assert seed is not None
    assert all(p.device.type == "cuda" for p in seed.parameters())
    to_stage(model.slot, SeedStage.TRAINING)
    before = [p.detach().clone() for p in seed.parameters()]
    step(model, manager, optimizer)
    assert len(optimizer.param_groups) == 2
    assert {id(p) for p in optimizer.param_groups[-1]["params"]} == {
        id(p) for p in seed.parameters()
    }
    grads = [p.grad for p in seed.parameters()]
    assert all(g is not None and g.device.type == "cuda" for g in grads)
    assert any(float(g.abs().max()) > 0 for g in grads if g is not None)
    for _ in range(3):
        step(model, manager, optimizer)
    pairs = zip(seed.parameters(), before, strict=True)
    assert max(float((p.detach() - b).abs().max()) for p, b in pairs) > 0, "the seed never changed"
    assert all(opt_state["exp_avg"].device.type == "cuda" for opt_state in optimizer.state.values())


def test_gradient_numbers_are_measured_on_cuda_as_on_the_cpu(run: Run) -> None:
    """One backward's seed/host ratio and health match the CPU's (TF32 off: exact fp32)."""
    measured = {}
    allowed = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for device in ("cpu", "cuda"):
            model = host(device)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
            recorder = run.ledger.start_run(f"twin-{device}", seed=0).recorder
            manager = SeedManager(model, optimizer, recorder)
            model.slot.germinate("conv_small", "s1", init_seed=1)
            to_stage(model.slot, SeedStage.TRAINING)
            x, y = batch(device)
            F.cross_entropy(model(x), y).backward()
            manager.after_backward()
            manager.end_epoch(1, metrics={"val_accuracy": 50.0})
            measured[device] = model.slot.metrics
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = allowed
    cpu, gpu = measured["cpu"], measured["cuda"]
    assert gpu.grad_ratio is not None and gpu.grad_health is not None
    assert gpu.grad_ratio > 0
    assert gpu.grad_ratio == pytest.approx(cpu.grad_ratio, rel=1e-4)
    assert gpu.grad_health == pytest.approx(cpu.grad_health, abs=1e-9)
    assert (gpu.has_vanishing, gpu.has_exploding) == (cpu.has_vanishing, cpu.has_exploding)


def test_after_backward_and_end_epoch_on_cuda_record_the_gradient_numbers(run: Run) -> None:
    model = host()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    manager = SeedManager(model, optimizer, run.recorder)
    model.slot.germinate("conv_small", "s1", init_seed=1)
    to_stage(model.slot, SeedStage.TRAINING)
    for epoch in (1, 2):
        for _ in range(4):
            step(model, manager, optimizer)
        manager.end_epoch(epoch, metrics={"val_accuracy": 40.0 + epoch})
        metrics = model.slot.metrics
        assert metrics.grad_ratio is not None and math.isfinite(metrics.grad_ratio)
        assert metrics.grad_ratio > 0
        assert metrics.grad_health is not None and 0.0 < metrics.grad_health <= 1.0
        assert metrics.has_exploding is False
    run.finish()
    events = list(run.ledger.read(run.run_id))
    assert run.ledger.verify(run.run_id).ok
    samples = [e.payload for e in events if isinstance(e.payload, SeedTelemetrySampled)]
    assert [s.grad_health for s in samples][-1] == model.slot.metrics.grad_health
    assert samples[-1].grad_norm == model.slot.metrics.grad_ratio
    assert sum(isinstance(e.payload, EpochCompleted) for e in events) == 2


def test_after_backward_does_not_wait_for_the_gpu(run: Run) -> None:
    model = host()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    manager = SeedManager(model, optimizer, run.recorder)
    model.slot.germinate("conv_small", "s1", init_seed=1)
    to_stage(model.slot, SeedStage.TRAINING)
    step(model, manager, optimizer)  # the seed has joined
    x, y = batch()
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    torch.cuda.set_sync_debug_mode("error")
    try:
        manager.after_backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def pruned_after_training(run: Run) -> tuple[Host, SeedManager, torch.optim.Optimizer, nn.Module]:
    """A seed trained two Adam steps on cuda (so it has optimizer state), then pruned."""
    model = host()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    manager = SeedManager(model, optimizer, run.recorder)
    model.slot.germinate("conv_small", "s1", init_seed=1)
    to_stage(model.slot, SeedStage.TRAINING)
    for _ in range(2):
        step(model, manager, optimizer)
    seed = model.slot.seed
    assert seed is not None
    assert {id(p) for p in seed.parameters()} <= {id(p) for p in optimizer.state}
    assert all(s["exp_avg"].device.type == "cuda" for s in optimizer.state.values())
    assert model.slot.prune("test")
    return model, manager, optimizer, seed


def assert_let_go(
    model: Host, manager: SeedManager, optimizer: torch.optim.Optimizer, ids: set[int]
) -> None:
    assert len(optimizer.param_groups) == 1
    assert not ids & {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not ids & {id(p) for p in optimizer.state}
    assert not model.slot.gradients.watching
    assert manager.seed_parameters() == []


def test_prune_on_cuda_takes_the_seed_and_its_adam_state_out(run: Run) -> None:
    model, manager, optimizer, seed = pruned_after_training(run)
    step(model, manager, optimizer)  # the manager lets go at its next call
    assert_let_go(model, manager, optimizer, {id(p) for p in seed.parameters()})
    manager.end_epoch(1, metrics={"val_accuracy": 10.0})


def test_a_pruned_seed_nothing_else_holds_leaves_the_optimizer_and_the_gpu(run: Run) -> None:
    model, manager, optimizer, seed = pruned_after_training(run)
    ids = {id(p) for p in seed.parameters()}
    gone = weakref.ref(seed)
    del seed  # as after a policy's Prune: only the optimizer still holds the parameters
    step(model, manager, optimizer)
    assert_let_go(model, manager, optimizer, ids)
    gc.collect()
    assert gone() is None


def test_the_counterfactual_on_cuda_silences_the_seed_once(run: Run) -> None:
    model = host()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    manager = SeedManager(model, optimizer, run.recorder)
    model.slot.germinate("conv_small", "s1", init_seed=1, alpha_target=0.6, tempo=1)
    to_stage(model.slot, SeedStage.BLENDING)
    manager.end_epoch(1, metrics={"val_accuracy": 0.0})  # the one-epoch ramp reaches 0.6
    assert model.slot.alpha == pytest.approx(0.6)
    assert model.slot.seed is not None
    with torch.no_grad():
        for p in model.slot.seed.parameters():
            p.add_(0.3)  # a seed that visibly changes the output
    x, _ = batch()
    calls = []

    def evaluate(m: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            out = m(x)
        calls.append(float(model.slot.alpha))
        assert out.device.type == "cuda"
        return {"val_accuracy": float(out.abs().mean()) * 100}

    full = evaluate(model)["val_accuracy"]
    with model.slot.force_alpha(0.0):
        silenced = evaluate(model)["val_accuracy"]
    calls.clear()
    result = manager.end_epoch(2, evaluate=evaluate)
    assert len(calls) == 2  # the model as it is, then the seed silenced
    assert result.metrics["val_accuracy"] == pytest.approx(full, rel=1e-6)
    assert result.contributions["r0c0"] == pytest.approx(full - silenced, rel=1e-5, abs=1e-6)
    assert result.contributions["r0c0"] != 0
    assert model.slot.metrics.counterfactual == result.contributions["r0c0"]
    assert model.slot.alpha == pytest.approx(0.6) and model.slot._forced is None
