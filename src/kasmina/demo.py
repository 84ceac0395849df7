"""The demo job: a small CNN learns scikit-learn's bundled digits while seeds grow in it.

Three slots sit between the host's conv blocks. The loop is the one
`docs/training.md` teaches: a `SeedManager` with a `HeuristicPolicy`, which
plants a seed in an empty slot, lets the gates carry it through training and
blending, and at HOLDING fossilizes it if its counterfactual contribution (the
accuracy lost when its alpha is forced to 0) clears a threshold, else prunes
it, after which the slot cools down and is planted again. Everything is
recorded in the ledger. The same seed gives the same events on CPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from kasmina.canonical import Json
from kasmina.errors import NotReexecutable, ReplayError
from kasmina.events import RunStarted, SeedStageChanged
from kasmina.gates import QualityGates
from kasmina.ledger import Ledger, Run
from kasmina.policy import HeuristicPolicy, Policy
from kasmina.progress import Progress
from kasmina.replay.live import LiveStates, check_live, live_state
from kasmina.runtime.blocks import BlockPool
from kasmina.runtime.manager import SeedManager
from kasmina.runtime.memory import MemoryGovernor, TTLMemoryCache
from kasmina.runtime.pipeline import RecorderPipeline
from kasmina.runtime.slot import SeedSlot

if TYPE_CHECKING:
    from kasmina.programs import RunContext

BLUEPRINTS = ("conv_small", "conv_light", "depthwise", "norm")
HOST = "DigitsHost"
#: What a run needs to be re-executed, said where one cannot be.
_REEXECUTED = (
    "only runs written by `kasmina run PROGRAM` (which records the program) or by "
    f"`kasmina demo` (host {HOST}) can be re-executed"
)
DATASET = "sklearn.load_digits"


def _default_gates() -> QualityGates:
    return QualityGates(permissive=True, min_training_epochs=3, min_blending_epochs=3)


@dataclass(frozen=True)
class DemoConfig:
    """Everything the demo's behaviour depends on; recorded whole in `RunStarted`."""

    epochs: int = 30
    slots: int = 3
    seed: int = 7
    min_contribution: float = 0.5
    #: Seeds the policy may keep for good; a seed reaching HOLDING after the
    #: budget is spent is pruned and its slot recycled.
    fossil_budget: int = 2
    germinate_every: int = 2
    blend_tempo: int = 3
    width: int = 32
    batch: int = 64
    lr: float = 3e-3
    #: Cache lifetimes in epochs (the caches run on an epoch clock, so GC is deterministic).
    kernel_ttl_epochs: float = 4.0
    telemetry_ttl_epochs: float = 2.0
    blocks_per_seed: int = 2
    gates: QualityGates = field(default_factory=_default_gates)

    def to_json(self) -> dict[str, Json]:
        data: dict[str, Any] = asdict(self)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DemoConfig:
        """The config a run recorded; refused if it is not the demo's."""
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(data))
        unknown = sorted(set(data) - names)
        if missing or unknown:
            raise NotReexecutable(
                "its RunStarted config is not a kasmina demo config "
                f"(missing {missing}, unknown {unknown})"
            )
        values = dict(data)
        try:
            values["gates"] = QualityGates(**data["gates"])
            return cls(**values)
        except TypeError as exc:
            raise NotReexecutable(f"its RunStarted gates config is unusable: {exc}") from None


class _EpochClock:
    """A clock that reads the training epoch, so evictions repeat run after run."""

    def __init__(self) -> None:
        self.epoch = 0

    def __call__(self) -> float:
        return float(self.epoch)


class DigitsHost(nn.Module):
    """stem conv -> [slot -> conv block] x N -> pool -> linear."""

    def __init__(self, slots: Sequence[SeedSlot], width: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.slots = nn.ModuleList(slots)
        self.blocks = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in slots)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        for slot, block in zip(self.slots, self.blocks, strict=True):
            h = F.relu(block(slot(h)))
        pooled: torch.Tensor = h.mean(dim=(2, 3))
        logits: torch.Tensor = self.head(pooled)
        return logits


def dataset_digest() -> str:
    """SHA-256 of the digits' pixels and labels, as scikit-learn ships them."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    h = hashlib.sha256()
    h.update(digits.images.astype("<f8").tobytes())
    h.update(digits.target.astype("<i8").tobytes())
    return h.hexdigest()


def load_digits_tensors(seed: int) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    cut = int(len(y) * 0.8)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def _evaluator(x: torch.Tensor, y: torch.Tensor) -> Callable[[nn.Module], dict[str, float]]:
    """The validation pass `SeedManager` runs (once more per blended seed, silenced)."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            logits = model(x)
            loss = float(F.cross_entropy(logits, y))
            acc = float((logits.argmax(1) == y).float().mean()) * 100.0
        model.train()
        return {"val_accuracy": round(acc, 4), "val_loss": round(loss, 6)}

    return evaluate


def demo_policy(config: DemoConfig) -> HeuristicPolicy:
    """The demo's decisions: the heuristic policy, configured from the run's config."""
    return HeuristicPolicy(
        BLUEPRINTS,
        germinate_every=config.germinate_every,
        tempo=config.blend_tempo,
        min_contribution=config.min_contribution,
        fossil_budget=config.fossil_budget,
        seed=config.seed,
    )


@dataclass
class DemoResult:
    run_id: str
    accuracy_before: float
    accuracy_after: float
    paths: dict[str, list[str]]
    events: int
    #: Epochs at whose end the fold of the ledger was checked against the live slots.
    replay_checked: int = 0


def run_demo(
    ledger: Ledger,
    *,
    epochs: int = 30,
    slots: int = 3,
    seed: int = 7,
    console: Console | None = None,
    run_id: str | None = None,
    progress: Console | None = None,
) -> DemoResult:
    """Train, grow, record; returns the run id, accuracies and each seed's path.

    The demo is a program like any other (`main`), started as `kasmina run`
    starts one, so its run can be re-executed the same way. `console` gets
    the outcome, `progress` the epochs as they are trained.
    """
    from kasmina.programs import execute_program

    config = DemoConfig(epochs=epochs, slots=slots, seed=seed).to_json()
    ctx = execute_program(
        ledger,
        ENTRY_POINT,
        config=config,
        seed=seed,
        name="digits",
        run_id=run_id,
        console=console,
        progress=progress,
    )
    assert isinstance(ctx.result, DemoResult)
    return ctx.result


#: `kasmina demo` is `kasmina run kasmina.demo:main --seed 7`.
ENTRY_POINT = "kasmina.demo:main"


def main(ctx: RunContext) -> DemoResult:
    """The demo as a program: digits, a CNN with seed slots, the heuristic policy."""
    config = DemoConfig.from_json({**ctx.config, "seed": ctx.seed})
    ctx.dataset_digest(DATASET, dataset_digest())
    return train(
        ctx.ledger,
        config,
        lambda c: ctx.policy(demo_policy(c)),
        console=ctx.console,
        progress=ctx.progress,
        start=lambda: ctx.run,
        check_replay=not ctx.replaying,
        summary=not ctx.replaying,
    )


def train(
    ledger: Ledger,
    config: DemoConfig,
    policy: Callable[[DemoConfig], Policy],
    *,
    console: Console | None = None,
    progress: Console | None = None,
    run_id: str | None = None,
    check_replay: bool = True,
    threads: int = 1,
    summary: bool = True,
    start: Callable[[], Run[Ledger]] | None = None,
) -> DemoResult:
    """The demo's training loop, on CPU with deterministic algorithms.

    `policy` makes the decisions: `demo_policy` for a new run, the recorded
    decisions when `kasmina.replay.reexecution` runs a recorded one again.
    With `check_replay`, the live slots at the end of every epoch are
    compared with the fold of the ledger up to that epoch. With `summary`,
    `console` shows the run's outcome; `progress` shows the epochs trained.
    """
    console = console or Console(quiet=True)
    saved_threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        if start is None:
            start = partial(_start, ledger, config, run_id)
        result = _run(ledger, config, policy(config), progress, start, check_replay)
    finally:
        torch.set_num_threads(saved_threads)
        torch.use_deterministic_algorithms(deterministic)
    if summary:
        _print_summary(console, config, result)
    return result


class DemoProgram:
    """The demo as a program `kasmina.replay.reexecution` can rebuild and train again."""

    notes: tuple[str, ...] = ()

    def refusal(self, run_id: str, started: RunStarted) -> str | None:
        if started.host is None:
            return f"run {run_id} records no host network, so it cannot be rebuilt; {_REEXECUTED}"
        if started.host != HOST:
            return (
                f"run {run_id} was recorded with host {started.host!r}, which kasmina "
                f"cannot rebuild; {_REEXECUTED}"
            )
        if started.dataset != DATASET or started.dataset_digest != dataset_digest():
            return (
                f"run {run_id} trained on {started.dataset!r} with digest "
                f"{started.dataset_digest}, which is not the dataset installed here"
            )
        return None

    def rerun(
        self,
        scratch: Ledger,
        started: RunStarted,
        policy: Policy,
        *,
        run_id: str,
        console: Console | None,
    ) -> None:
        train(
            scratch,
            DemoConfig.from_json(started.config),
            lambda _: policy,
            progress=console,
            run_id=run_id,
            check_replay=False,
            threads=started.num_threads or 1,
            summary=False,
        )


#: What `kasmina replay --verify` re-executes a demo run with.
PROGRAM = DemoProgram()


def _start(ledger: Ledger, config: DemoConfig, run_id: str | None) -> Run[Ledger]:
    """A demo run as runs were started before `kasmina run` (`DemoProgram` re-runs those)."""
    return ledger.start_run(
        name="digits",
        seed=config.seed,
        config=config.to_json(),
        run_id=run_id,
        host=HOST,
        dataset=DATASET,
        dataset_digest=dataset_digest(),
    )


def _run(
    ledger: Ledger,
    config: DemoConfig,
    policy: Policy,
    progress: Console | None,
    start: Callable[[], Run[Ledger]],
    check_replay: bool,
) -> DemoResult:
    torch.manual_seed(config.seed)
    x_train, y_train, x_val, y_val = load_digits_tensors(config.seed)
    run = start()
    recorder = RecorderPipeline(ledger, run.run_id)
    clock = _EpochClock()
    governor = MemoryGovernor(
        recorder,
        gc_period=1,
        caches=[
            TTLMemoryCache[str, str]("kernels", ttl=config.kernel_ttl_epochs, clock=clock),
            TTLMemoryCache[str, float]("telemetry", ttl=config.telemetry_ttl_epochs, clock=clock),
        ],
    )
    pool = BlockPool(config.slots * config.blocks_per_seed, (config.width,))
    slot_list = [
        SeedSlot(f"r0c{i}", config.width, pool=pool, blocks_per_seed=config.blocks_per_seed)
        for i in range(config.slots)
    ]
    model = DigitsHost(slot_list, config.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    # Every backward is measured: the demo's epochs are 23 steps, and its gate
    # verdicts (the cookbook's failing checks among them) read every one.
    manager = SeedManager(
        model, optimizer, recorder, policy=policy, gates=config.gates, gradient_every=1
    )
    evaluate = _evaluator(x_val, y_val)
    shuffle = torch.Generator().manual_seed(config.seed)
    before = evaluate(model)["val_accuracy"]
    accuracy = before
    live: LiveStates = {}

    with Progress("training", config.epochs, progress, unit="epochs") as trained:
        for epoch in range(config.epochs):
            train_loss = _train_epoch(model, manager, optimizer, x_train, y_train, shuffle, config)
            result = manager.end_epoch(
                epoch,
                metrics={
                    "train_loss": train_loss,
                    "lr": float(optimizer.param_groups[0]["lr"]),
                    "live_seeds": float(sum(s.seed is not None for s in slot_list)),
                },
                evaluate=evaluate,
            )
            accuracy = result.metrics["val_accuracy"]
            for slot in slot_list:
                if slot.seed_id is not None and slot.blueprint_id is not None:
                    governor.cache("kernels").put(
                        f"{slot.blueprint_id}:{slot.seed_id}", slot.slot_id
                    )
                    governor.cache("telemetry").put(f"{slot.slot_id}:{epoch}", accuracy)
            clock.epoch = epoch + 1
            governor.periodic_gc(epoch)
            recorder.flush()
            if check_replay:
                live[epoch] = {s.slot_id: live_state(s) for s in slot_list}
            trained.update(epoch + 1)
    recorder.close()
    run.finish()
    report = ledger.verify(run.run_id)
    checked = check_live(ledger, run.run_id, live) if check_replay else 0
    paths: dict[str, list[str]] = {}
    for event in ledger.read(run.run_id):
        if isinstance(event.payload, SeedStageChanged) and event.seed_id is not None:
            path = paths.setdefault(event.seed_id, [event.payload.from_stage.name])
            path.append(event.payload.to_stage.name)
    if not report.ok:
        raise ReplayError(f"run {run.run_id} does not verify: {report.faults[0]}")
    return DemoResult(run.run_id, before, accuracy, paths, report.events, checked)


def _print_summary(console: Console, config: DemoConfig, result: DemoResult) -> None:
    console.print(f"run id: {result.run_id}")
    console.print(
        f"host accuracy: {result.accuracy_before:.1f}% before, {result.accuracy_after:.1f}% "
        f"after {config.epochs} epochs; {result.events} events, verify OK"
    )
    if result.replay_checked:
        console.print(
            f"replay: the folded log equals the live slots at all {result.replay_checked} epochs"
        )
    for seed_id, path in result.paths.items():
        console.print(f"  {seed_id}: {' -> '.join(path)}")


def _train_epoch(
    model: DigitsHost,
    manager: SeedManager,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    shuffle: torch.Generator,
    config: DemoConfig,
) -> float:
    order = torch.randperm(len(y), generator=shuffle)
    total = 0.0
    for start in range(0, len(y), config.batch):
        index = order[start : start + config.batch]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x[index]), y[index])
        loss.backward()  # type: ignore[no-untyped-call]
        manager.after_backward()
        optimizer.step()
        total += loss.item() * len(index)
    return round(total / len(y), 6)
