"""A transformer host trained on the GPU, as a user's own `kasmina run` program.

Sequences of 16 steps whose label is which of 4 random patterns they hide
under noise; the data is drawn from a generator seeded by the run, so it is
the same on every machine and needs no download. Two transformer slots, the
heuristic policy choosing between two blueprints, a checkpoint every epoch.
Used by tests/unit/runtime/test_cuda_reexecution.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kasmina import HeuristicPolicy, QualityGates, SeedManager, SeedSlot


def data(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    patterns = torch.randn(4, 16, 24, generator=g)
    y = torch.randint(0, 4, (2048,), generator=g)
    x = patterns[y] + 1.5 * torch.randn(2048, 16, 24, generator=g)
    return x.to(device), y.to(device)


class Host(nn.Module):
    def __init__(self, d: int = 128, layers: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(24, d)
        self.position = nn.Parameter(torch.zeros(16, d))
        blocks: list[nn.Module] = []
        for index in range(layers):
            blocks.append(
                nn.TransformerEncoderLayer(
                    d, nhead=4, dim_feedforward=4 * d, dropout=0.1, batch_first=True
                )
            )
            if index in (0, 2):
                blocks.append(SeedSlot(f"after{index}", d, topology="transformer"))
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(d, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(x) + self.position).mean(dim=1))


def main(ctx) -> None:  # type: ignore[no-untyped-def]
    device = torch.device(ctx.device)
    x, y = data(device)
    ctx.dataset_digest("synthetic-patterns", x.cpu().numpy().tobytes())
    model = Host().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gates = QualityGates(permissive=True, min_training_epochs=1, min_blending_epochs=1)
    policy = ctx.policy(HeuristicPolicy(["mlp", "attention_lite"], tempo=2, fossil_budget=1))
    manager = SeedManager(model, optimizer, ctx.recorder, policy=policy, gates=gates)
    order = torch.Generator().manual_seed(ctx.seed)
    done = ctx.restore(model, optimizer, manager=manager, order=order)

    def evaluate(m: nn.Module) -> dict[str, float]:
        m.eval()
        with torch.no_grad():
            logits = m(x[1536:])
        m.train()
        return {"val_accuracy": 100 * (logits.argmax(1) == y[1536:]).float().mean().item()}

    for epoch in range(0 if done is None else done + 1, int(ctx.config.get("epochs", 6))):
        perm = torch.randperm(1536, generator=order).to(device)
        for step in range(24):
            index = perm[step * 64 : step * 64 + 64]
            optimizer.zero_grad()
            F.cross_entropy(model(x[index]), y[index]).backward()
            manager.after_backward()
            optimizer.step()
        manager.end_epoch(epoch, evaluate=evaluate)
        ctx.checkpoint(model, optimizer, epoch=epoch, manager=manager, order=order)
