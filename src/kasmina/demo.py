"""The demo job: a small CNN learns scikit-learn's bundled digits while seeds grow in it.

Three slots sit between the host's conv blocks. A simple built-in policy
plants a seed in an empty slot, lets the gates carry it through training and
blending, and at HOLDING fossilizes it if its counterfactual contribution (the
accuracy lost when its alpha is forced to 0) clears a threshold, else prunes
it, after which the slot cools down and is planted again. Everything is
recorded in the ledger. The same seed gives the same events on CPU.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import Progress
from torch import nn

from kasmina.events import EpochCompleted, SeedStageChanged, SeedTelemetrySampled, slot_stream
from kasmina.gates import QualityGates
from kasmina.ledger import Ledger
from kasmina.runtime.blocks import BlockPool
from kasmina.runtime.blueprints import param_digest
from kasmina.runtime.memory import MemoryGovernor, TTLMemoryCache
from kasmina.runtime.pipeline import RecorderPipeline
from kasmina.runtime.slot import SeedSlot
from kasmina.stages import SeedStage

BLUEPRINTS = ("conv_small", "conv_light", "depthwise", "norm")
#: Cache lifetimes in epochs (the caches run on an epoch clock, so GC is deterministic).
KERNEL_TTL_EPOCHS = 4.0
BLOCKS_PER_SEED = 2
TELEMETRY_TTL_EPOCHS = 2.0
WIDTH = 32
BATCH = 64
LEARNING_RATE = 3e-3


@dataclass(frozen=True)
class DemoConfig:
    epochs: int = 30
    slots: int = 3
    seed: int = 7
    min_contribution: float = 0.5
    #: Seeds the policy may keep for good; a seed reaching HOLDING after the
    #: budget is spent is pruned and its slot recycled.
    fossil_budget: int = 2
    germinate_every: int = 2
    blend_tempo: int = 3
    gates: QualityGates = field(
        default_factory=lambda: QualityGates(
            permissive=True, min_training_epochs=3, min_blending_epochs=3
        )
    )


class _EpochClock:
    """A clock that reads the training epoch, so evictions repeat run after run."""

    def __init__(self) -> None:
        self.epoch = 0

    def __call__(self) -> float:
        return float(self.epoch)


class DigitsHost(nn.Module):
    """stem conv -> [slot -> conv block] x N -> pool -> linear."""

    def __init__(self, slots: Sequence[SeedSlot]) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, WIDTH, 3, padding=1)
        self.slots = nn.ModuleList(slots)
        self.blocks = nn.ModuleList(nn.Conv2d(WIDTH, WIDTH, 3, padding=1) for _ in slots)
        self.head = nn.Linear(WIDTH, 10)

    def host_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("slots.")]

    def forward(self, x: torch.Tensor, silenced: str | None = None) -> torch.Tensor:
        h = F.relu(self.stem(x))
        for slot, block in zip(self.slots, self.blocks, strict=True):
            assert isinstance(slot, SeedSlot)
            h = slot(h, alpha_override=0.0 if slot.slot_id == silenced else None)
            h = F.relu(block(h))
        pooled: torch.Tensor = h.mean(dim=(2, 3))
        logits: torch.Tensor = self.head(pooled)
        return logits


def load_digits_tensors(seed: int) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    cut = int(len(y) * 0.8)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def _accuracy(
    model: DigitsHost, x: torch.Tensor, y: torch.Tensor, silenced: str | None = None
) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x, silenced=silenced)
        loss = float(F.cross_entropy(logits, y))
        acc = float((logits.argmax(1) == y).float().mean()) * 100.0
    model.train()
    return round(acc, 4), round(loss, 6)


class DemoPolicy:
    """Plant, wait for the gates, then keep what helps and prune what does not."""

    def __init__(self, config: DemoConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.planted = 0
        self.kept = 0

    def act(self, slot: SeedSlot, epoch: int, contribution: float | None) -> None:
        stage = slot.stage
        if stage is SeedStage.DORMANT and epoch % self.config.germinate_every == 0:
            self.planted += 1
            slot.germinate(
                self.rng.choice(BLUEPRINTS),
                f"seed-{self.planted}",
                init_seed=self.rng.randrange(2**31),
                tempo=self.config.blend_tempo,
            )
        elif stage is SeedStage.HOLDING and contribution is not None:
            if self.kept >= self.config.fossil_budget:
                slot.prune("fossil_budget_spent", initiator="policy")
            elif contribution < self.config.min_contribution:
                slot.prune(f"low_contribution_{contribution:.2f}", initiator="policy")
            elif slot.advance_stage(SeedStage.FOSSILIZED).passed:
                self.kept += 1
            else:
                slot.prune("fossilize_gate_failed", initiator="policy")


@dataclass
class DemoResult:
    run_id: str
    accuracy_before: float
    accuracy_after: float
    paths: dict[str, list[str]]
    events: int


def run_demo(
    ledger: Ledger,
    *,
    epochs: int = 30,
    slots: int = 3,
    seed: int = 7,
    console: Console | None = None,
) -> DemoResult:
    """Train, grow, record; returns the run id, accuracies and each seed's path."""
    config = DemoConfig(epochs=epochs, slots=slots, seed=seed)
    console = console or Console(quiet=True)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        return _run(ledger, config, console)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _run(ledger: Ledger, config: DemoConfig, console: Console) -> DemoResult:
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    x_train, y_train, x_val, y_val = load_digits_tensors(config.seed)
    run = ledger.start_run(
        name="digits",
        seed=config.seed,
        config={
            "epochs": config.epochs,
            "slots": config.slots,
            "width": WIDTH,
            "batch": BATCH,
            "lr": LEARNING_RATE,
            "threads": 1,
            "min_contribution": config.min_contribution,
            "host": "DigitsHost",
            "dataset": "sklearn.load_digits",
        },
    )
    recorder = RecorderPipeline(ledger, run.run_id)
    clock = _EpochClock()
    governor = MemoryGovernor(
        recorder,
        gc_period=1,
        caches=[
            TTLMemoryCache[str, str]("kernels", ttl=KERNEL_TTL_EPOCHS, clock=clock),
            TTLMemoryCache[str, float]("telemetry", ttl=TELEMETRY_TTL_EPOCHS, clock=clock),
        ],
    )
    pool = BlockPool(config.slots * BLOCKS_PER_SEED, (WIDTH,))
    slot_list = [
        SeedSlot(
            f"r0c{i}",
            WIDTH,
            recorder=recorder,
            gates=config.gates,
            auto_advance=True,
            pool=pool,
            blocks_per_seed=BLOCKS_PER_SEED,
        )
        for i in range(config.slots)
    ]
    model = DigitsHost(slot_list)
    host_opt = torch.optim.Adam(model.host_parameters(), lr=LEARNING_RATE)
    seed_opts: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
    policy = DemoPolicy(config, rng)
    shuffle = torch.Generator().manual_seed(config.seed)
    before, _ = _accuracy(model, x_val, y_val)
    accuracy = before

    with Progress(console=console, disable=not console.is_terminal, transient=True) as bar:
        task = bar.add_task("training", total=config.epochs)
        for epoch in range(config.epochs):
            train_loss = _train_epoch(
                model, slot_list, host_opt, seed_opts, x_train, y_train, shuffle
            )
            accuracy, loss = _accuracy(model, x_val, y_val)
            for slot in slot_list:
                contribution = None
                if slot.seed is not None and slot.stage in (SeedStage.BLENDING, SeedStage.HOLDING):
                    silenced, _ = _accuracy(model, x_val, y_val, silenced=slot.slot_id)
                    contribution = round(accuracy - silenced, 4)
                slot.step_epoch(accuracy=accuracy, counterfactual=contribution, epoch=epoch)
                policy.act(slot, epoch, contribution)
                _sample(recorder, slot, epoch)
                if slot.seed_id is not None and slot.blueprint_id is not None:
                    governor.cache("kernels").put(
                        f"{slot.blueprint_id}:{slot.seed_id}", slot.slot_id
                    )
                    governor.cache("telemetry").put(f"{slot.slot_id}:{epoch}", accuracy)
            recorder.emit(
                EpochCompleted(
                    val_accuracy=accuracy,
                    val_loss=loss,
                    train_loss=train_loss,
                    param_digests={
                        s.seed_id: param_digest(s.seed)
                        for s in slot_list
                        if s.seed is not None and s.seed_id is not None
                    },
                ),
                stream_id="run",
                epoch=epoch,
            )
            clock.epoch = epoch + 1
            governor.periodic_gc(epoch)
            recorder.flush()
            bar.advance(task)
    recorder.close()
    run.finish()
    report = ledger.verify(run.run_id)
    paths: dict[str, list[str]] = {}
    for event in ledger.read(run.run_id):
        if isinstance(event.payload, SeedStageChanged) and event.seed_id is not None:
            path = paths.setdefault(event.seed_id, [event.payload.from_stage.name])
            path.append(event.payload.to_stage.name)
    result = DemoResult(run.run_id, before, accuracy, paths, report.events)
    console.print(f"run id: {run.run_id}")
    console.print(
        f"host accuracy: {before:.1f}% before, {accuracy:.1f}% after "
        f"{config.epochs} epochs; {report.events} events, verify "
        f"{'OK' if report.ok else 'FAILED'}"
    )
    for seed_id, path in paths.items():
        console.print(f"  {seed_id}: {' -> '.join(path)}")
    return result


def _train_epoch(
    model: DigitsHost,
    slots: Sequence[SeedSlot],
    host_opt: torch.optim.Optimizer,
    seed_opts: dict[str, tuple[nn.Module, torch.optim.Optimizer]],
    x: torch.Tensor,
    y: torch.Tensor,
    shuffle: torch.Generator,
) -> float:
    for slot in slots:
        known = seed_opts.get(slot.slot_id)
        if slot.seed is None:
            seed_opts.pop(slot.slot_id, None)
        elif known is None or known[0] is not slot.seed:
            seed_opts[slot.slot_id] = (
                slot.seed,
                torch.optim.Adam(slot.seed.parameters(), lr=LEARNING_RATE),
            )
            slot.watch_gradients(model.host_parameters())
    order = torch.randperm(len(y), generator=shuffle)
    total = 0.0
    for start in range(0, len(y), BATCH):
        index = order[start : start + BATCH]
        host_opt.zero_grad()
        for _, opt in seed_opts.values():
            opt.zero_grad()
        loss = F.cross_entropy(model(x[index]), y[index])
        loss.backward()  # type: ignore[no-untyped-call]
        host_opt.step()
        for _, opt in seed_opts.values():
            opt.step()
        for slot in slots:
            slot.capture_gradients()
        total += loss.item() * len(index)
    return round(total / len(y), 6)


def _sample(recorder: RecorderPipeline, slot: SeedSlot, epoch: int) -> None:
    if slot.seed is None:
        return
    m = slot.metrics
    recorder.emit(
        SeedTelemetrySampled(
            slot_id=slot.slot_id,
            stage=slot.stage,
            alpha=slot.alpha,
            alpha_target=slot.controller.alpha_target,
            alpha_mode=slot.controller.mode.name,  # type: ignore[arg-type]
            accuracy=m.accuracy,
            accuracy_delta=m.accuracy_delta,
            epochs_in_stage=m.epochs_in_stage,
            grad_norm=None if m.grad_ratio is None else round(m.grad_ratio, 6),
            grad_health=m.grad_health,
            has_vanishing=m.has_vanishing,
            has_exploding=m.has_exploding,
        ),
        stream_id=slot_stream(slot.slot_id),
        epoch=epoch,
        seed_id=slot.seed_id,
    )
