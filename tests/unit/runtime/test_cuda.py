"""The runtime on a GPU: device moves, the alpha cache per device and dtype, overrides.

Every test here needs CUDA and skips cleanly without it (CI has no GPU); they
run on the GPU machine (see docs/distributed.md for the figures).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_slot import EASY, features, healthy, to_stage

from kasmina.alpha import AlphaMode
from kasmina.events import SeedStageChanged, SeedTelemetrySampled
from kasmina.ledger import Ledger
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
