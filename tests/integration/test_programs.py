"""`kasmina run`: a user's program, loaded by file or module, recorded in its `RunStarted`."""

from __future__ import annotations

import csv
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import json
import py_compile
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import rawdb

from kasmina.errors import NotReexecutable
from kasmina.events import PolicyDecided, RunStarted, load_payload
from kasmina.ledger import Ledger
from kasmina.programs import ProgramError, ProgramFailed, RecordedProgram, run_program
from kasmina.replay.display import DIVERGENCE_FIELDS
from kasmina.replay.reexecution import Reexecution, reexecute

BIN = str(Path(sys.executable).with_name("kasmina"))

#: A seed manager loop on iris, a dataset and model no example in the docs uses.
IRIS = textwrap.dedent(
    """
    import random

    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_iris
    from torch import nn

    from kasmina import HeuristicPolicy, QualityGates, SeedManager, SeedSlot


    def main(ctx):
        if "draws" in ctx.config:  # the first numbers Python's and torch's generators give
            with open(ctx.config["draws"], "a") as out:
                out.write(f"{random.random()} {float(torch.rand(1))}\\n")
        data = load_iris()
        x = torch.tensor(data.data, dtype=torch.float32)
        x = (x - x.mean(0)) / x.std(0)
        y = torch.tensor(data.target)
        order = torch.randperm(len(y))
        x, y = x[order], y[order]
        ctx.dataset_digest("sklearn.load_iris", x.numpy().tobytes() + y.numpy().tobytes())
        slot = SeedSlot("hidden", 16, topology="tabular")
        model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), slot, nn.Linear(16, 3))
        optimizer = torch.optim.Adam(model.parameters(), lr=ctx.config.get("lr", 0.01))
        gates = QualityGates(permissive=True, min_training_epochs=2, min_blending_epochs=2)
        policy = ctx.policy(HeuristicPolicy(tempo=2))
        manager = SeedManager(model, optimizer, ctx.recorder, policy=policy, gates=gates)

        def evaluate(m):
            with torch.no_grad():
                hits = (m(x[100:]).argmax(1) == y[100:]).float().mean().item()
            return {"val_accuracy": 100 * hits}

        for epoch in range(ctx.config.get("epochs", 4)):
            for i in range(0, 100, 20):
                optimizer.zero_grad()
                F.cross_entropy(model(x[i : i + 20]), y[i : i + 20]).backward()
                manager.after_backward()
                optimizer.step()
            manager.end_epoch(epoch, evaluate=evaluate)
    """
)


def started(ledger: Ledger, run_id: str) -> RunStarted:
    first = next(iter(ledger.history(run_id)))
    assert isinstance(first.payload, RunStarted)
    return first.payload


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_program_file_runs_and_its_run_started_says_what_it_was(
    ledger: Ledger, tmp_path: Path
) -> None:
    program = write(tmp_path / "code", "iris.py", IRIS)
    rid = run_program(
        ledger,
        f"{program}:main",
        config={"epochs": 3},
        seed=5,
        run_id="iris",
        argv=["--flag", "x"],
    )
    assert rid == "iris"
    info = started(ledger, rid)
    assert info.entry_point == f"{program.resolve()}:main"
    assert (info.config, info.seed, info.argv) == ({"epochs": 3}, 5, ["--flag", "x"])
    assert info.name == "iris:main"
    assert info.code == {"source": hashlib.sha256(program.read_bytes()).hexdigest()}
    assert info.dataset == "sklearn.load_iris" and len(info.dataset_digest or "") == 64
    assert info.environment["device"] == "cpu" and info.deterministic is True
    facts = info.environment["determinism"]
    assert isinstance(facts, dict)
    assert facts["deterministic_algorithms"] is True and facts["cudnn_benchmark"] is False
    assert facts["num_threads"] == info.num_threads
    types = [e.event_type for e in ledger.history(rid)]
    assert types.count("EpochCompleted") == 3
    assert "PolicyDecided" in types and types[-1] == "RunFinished"
    assert ledger.verify(rid).ok


def test_the_run_seed_seeds_python_and_torch(sqlite_url: str, tmp_path: Path) -> None:
    program = write(tmp_path, "seeded.py", IRIS)
    draws = tmp_path / "draws.txt"
    config = {"epochs": 1, "draws": str(draws)}
    with Ledger.open(sqlite_url) as ledger:
        for rid, seed in (("a", 11), ("b", 11), ("c", 12)):
            run_program(ledger, f"{program}:main", config=config, seed=seed, run_id=rid)
        digests = [started(ledger, r).dataset_digest for r in ("a", "b", "c")]
    first, second, third = draws.read_text().splitlines()
    assert first == second != third
    # the shuffled data follows torch's seed too
    assert digests[0] == digests[1] != digests[2]


def test_a_module_target_is_imported_from_the_working_directory(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "mylab/__init__.py", "")
    program = write(tmp_path, "mylab/train_tiny.py", "def main(ctx):\n    ctx.recorder\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with Ledger.open(sqlite_url) as ledger:
        rid = run_program(ledger, "mylab.train_tiny:main", run_id="m")
        info = started(ledger, rid)
    assert info.entry_point == "mylab.train_tiny:main"
    assert info.name == "train_tiny:main"
    assert info.code == {"source": hashlib.sha256(program.read_bytes()).hexdigest()}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_in_a_repository_the_code_is_its_commit_and_a_digest_of_changes(
    sqlite_url: str, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    program = write(repo, "train.py", "def main(ctx):\n    ctx.recorder\n")
    git(repo, "init", "-q")
    git(repo, "-c", "user.email=a@b", "-c", "user.name=a", "add", "train.py")
    git(repo, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "first")
    head = git(repo, "rev-parse", "HEAD")
    with Ledger.open(sqlite_url) as ledger:
        clean = started(ledger, run_program(ledger, f"{program}:main", run_id="clean")).code
        program.write_text("def main(ctx):\n    ctx.recorder  # edited\n")
        edited = started(ledger, run_program(ledger, f"{program}:main", run_id="edited")).code
        write(repo, "helper.py", "X = 1\n")
        untracked = started(ledger, run_program(ledger, f"{program}:main", run_id="new")).code
    assert clean == {"commit": head, "changes": ""}
    assert edited["commit"] == head and len(edited["changes"]) == 64
    assert untracked["commit"] == head and untracked["changes"] not in ("", edited["changes"])


def test_a_program_that_raises_leaves_its_run_open_with_its_events(
    sqlite_url: str, tmp_path: Path
) -> None:
    program = write(
        tmp_path,
        "crash.py",
        IRIS.replace("manager.end_epoch(epoch, evaluate=evaluate)", "")
        + "\n\ndef crash(ctx):\n    main(ctx)\n    raise RuntimeError('out of memory, say')\n",
    )
    with Ledger.open(sqlite_url) as ledger:
        with pytest.raises(ProgramFailed, match="raised RuntimeError: out of memory, say") as err:
            run_program(ledger, f"{program}:crash", config={"epochs": 1}, run_id="dies")
        assert err.value.run_id == "dies"
        assert isinstance(err.value.__cause__, RuntimeError)
        (info,) = ledger.runs()
        assert info.run_id == "dies" and info.finished_at is None
        assert info.events >= 1
        assert ledger.verify("dies").ok


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("train.py", "a program is named as path/to/file.py:function"),
        ("missing.py:main", "program file 'missing.py' does not exist"),
        ("{folder}/prog.py:absent", "has no function 'absent'"),
        ("{folder}/prog.py:VALUE", "is a int, not a function"),
        ("no_such_module_here:main", "cannot import program module 'no_such_module_here'"),
        ("{folder}/broken.py:main", "line 1: '(' was never closed"),
        ("a b:main", "a program is named as"),
        ("{folder}/prog.py:1st", "a program is named as"),
    ],
)
def test_a_program_that_cannot_be_loaded_is_one_error_and_records_nothing(
    sqlite_url: str, tmp_path: Path, target: str, message: str
) -> None:
    write(tmp_path, "prog.py", "VALUE = 3\n\ndef main(ctx):\n    pass\n")
    write(tmp_path, "broken.py", "def main(ctx:\n")
    with Ledger.open(sqlite_url) as ledger:
        with pytest.raises(ProgramError, match=message.replace("(", r"\(")):
            run_program(ledger, target.format(folder=tmp_path))
        assert ledger.runs() == []


def test_a_dataset_digest_after_the_run_started_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    program = write(
        tmp_path, "late.py", "def main(ctx):\n    ctx.recorder\n    ctx.dataset_digest('d', b'x')\n"
    )
    with Ledger.open(sqlite_url) as ledger:
        with pytest.raises(ProgramFailed, match="report the dataset digest before the run starts"):
            run_program(ledger, f"{program}:main", run_id="late")


def test_a_run_started_before_programs_reads_with_no_entry_point() -> None:
    old = {"name": "old", "seed": 1, "kasmina_version": "0.1.0", "python_version": "3.11.0"}
    payload = load_payload("RunStarted", 1, old)
    assert isinstance(payload, RunStarted)
    assert (payload.entry_point, payload.argv, payload.code) == (None, [], {})


def kasmina(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_kasmina_run_passes_arguments_and_prints_the_run_id(tmp_path: Path) -> None:
    write(
        tmp_path,
        "echo.py",
        "def main(ctx):\n    ctx.recorder\n"
        "    print('argv', ctx.argv, ctx.config, ctx.seed, ctx.device)\n",
    )
    db = f"sqlite:///{tmp_path / 'k.db'}"
    proc = kasmina(
        "--db", db, "run", "echo.py:main", "--config", '{"k": 1}', "--seed", "4",
        "--run-id", "cli", "--", "--lr", "0.1", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["argv ['--lr', '0.1'] {'k': 1} 4 cpu", "cli"]
    config_file = write(tmp_path, "config.json", '{"k": 2}')
    proc = kasmina("--db", db, "run", "echo.py:main", "--config", str(config_file), cwd=tmp_path)
    assert proc.returncode == 0 and "{'k': 2}" in proc.stdout


def test_kasmina_run_shows_the_programs_traceback_and_one_error_line(tmp_path: Path) -> None:
    write(tmp_path, "boom.py", "def main(ctx):\n    ctx.recorder\n    raise KeyError('lr')\n")
    db = f"sqlite:///{tmp_path / 'k.db'}"
    proc = kasmina("--db", db, "run", "boom.py:main", "--run-id", "boom", cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == "error: program boom.py:main raised KeyError: 'lr'; run boom is left open"
    proc = kasmina("--db", db, "runs", cwd=tmp_path)
    assert "boom" in proc.stdout


def test_a_run_id_that_is_taken_is_refused_before_the_program_runs(tmp_path: Path) -> None:
    """One line and exit 2, as any bad input; the program (here: it would write a file)
    is never called, so a long data load is not spent on a run that cannot start."""
    write(tmp_path, "touch.py", "def main(ctx):\n    open('called', 'w').close()\n")
    db = f"sqlite:///{tmp_path / 'k.db'}"
    with Ledger.open(db) as ledger:
        ledger.start_run("first", seed=0, run_id="taken").finish()
    for args in (["touch.py:main"], ["--fork", "taken@0"]):
        proc = kasmina("--db", db, "run", *args, "--run-id", "taken", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == (
            "error: a run with id 'taken' already exists in this ledger: start the new run "
            "under another run_id, or none for a fresh one"
        )
        assert not (tmp_path / "called").exists()
    with Ledger.open(db) as ledger:
        assert ledger.run_ids() == ["taken"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nothing.py:main"], "error: program file 'nothing.py' does not exist"),
        (["ok.py:main", "--config", "{bad"], "error: --config is not valid JSON"),
        (["ok.py:main", "--config", "[1]"], "error: --config must be a JSON object, got list"),
        (["ok.py:main", "--config", "no.json"], "error: --config 'no.json' is neither a JSON"),
    ],
)
def test_kasmina_run_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    write(tmp_path, "ok.py", "def main(ctx):\n    pass\n")
    proc = kasmina("--db", f"sqlite:///{tmp_path / 'k.db'}", "run", *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(message)


# -- re-execution of a program's run ---------------------------------------------------------


def test_a_programs_run_re_executes_with_no_divergence(ledger: Ledger, tmp_path: Path) -> None:
    program = write(tmp_path, "iris_again.py", IRIS)
    rid = run_program(ledger, f"{program}:main", config={"epochs": 6}, seed=2, run_id="again")
    report = reexecute(ledger, rid, RecordedProgram())
    assert report.ok, report.divergences
    assert report.compared == sum(1 for _ in ledger.history(rid))
    assert report.digests > 0 and report.notes == []


def test_a_run_its_program_did_not_finish_is_not_re_executed(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash left open, then closed by hand: refused in one line, as an open run is,
    rather than a divergence table for the epochs the crash cut off."""
    crash = IRIS.replace("    for epoch in", "    import os\n    for epoch in").replace(
        "        manager.end_epoch(epoch, evaluate=evaluate)\n",
        "        manager.end_epoch(epoch, evaluate=evaluate)\n"
        "        if epoch == 1 and os.environ.get('CRASH'):\n"
        "            raise RuntimeError('crash')\n",
    )
    program = write(tmp_path, "iris_crash.py", crash)
    monkeypatch.setenv("CRASH", "1")
    with pytest.raises(ProgramFailed):
        run_program(ledger, f"{program}:main", config={"epochs": 4}, run_id="crashed")
    monkeypatch.delenv("CRASH")
    with pytest.raises(NotReexecutable, match="has no RunFinished: it is unfinished"):
        reexecute(ledger, "crashed", RecordedProgram())
    ledger.close_run("crashed", "failed")
    with pytest.raises(NotReexecutable, match="sealed as failed, not completed"):
        reexecute(ledger, "crashed", RecordedProgram())


class _EditableFinder(importlib.abc.MetaPathFinder):
    """What an editable install puts on ``sys.meta_path``: a module found outside sys.path."""

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        return importlib.util.spec_from_file_location(fullname, self.path)


def test_a_module_entry_re_executes_wherever_import_finds_it(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the working directory, and through a finder of its own (an editable install):
    the code is checked before loading by the file import would run."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "iris_module.py", IRIS)
    rid = run_program(ledger, "iris_module:main", config={"epochs": 2}, seed=1, run_id="module")
    assert reexecute(ledger, rid, RecordedProgram()).ok
    elsewhere = tmp_path / "src" / "pkg_code.py"
    elsewhere.parent.mkdir()
    elsewhere.write_text(IRIS)
    finder = _EditableFinder("iris_editable", elsewhere)
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    rid = run_program(ledger, "iris_editable:main", config={"epochs": 2}, seed=1, run_id="ed")
    report = reexecute(ledger, rid, RecordedProgram())
    assert report.ok and report.notes == [], report.notes
    with pytest.raises(NotReexecutable, match="cannot be loaded: cannot import program module"):
        gone = {"entry_point": "no_such_module:main", "argv": [], "code": {}, "environment": {}}
        ledger.start_run("gone", seed=0, run_id="gone", program=gone).finish()
        reexecute(ledger, "gone", RecordedProgram())


@pytest.mark.parametrize(
    "kind", ["file", "module", "package module", "empty digest", "sourceless module"]
)
def test_code_the_ledger_names_is_not_run_unless_it_is_the_recorded_code(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Importing a program runs it, and the entry point is the ledger's word: anyone who
    can write runs could name any file or module. Its digest is checked before it loads."""
    planted = "open(__file__ + '.ran', 'w').close()\ndef main(ctx):\n    pass\n"
    folder = tmp_path / "code"
    (folder / "pkg").mkdir(parents=True)
    write(folder, "planted.py", planted)
    write(folder / "pkg", "__init__.py", planted)
    write(folder / "pkg", "inner.py", planted)
    py_compile.compile(str(folder / "planted.py"), cfile=str(folder / "compiled.pyc"))
    monkeypatch.chdir(folder)
    entry = {
        "file": f"{folder / 'planted.py'}:main",
        "module": "planted:main",
        "package module": "pkg.inner:main",
        "empty digest": "planted:main",
        "sourceless module": "compiled:main",  # no source to digest: {} matched {}
    }[kind]
    code = {} if kind in ("empty digest", "sourceless module") else {"source": "0" * 64}
    program = {"entry_point": entry, "argv": [], "code": code, "environment": {}}
    refused = "cannot be checked" if kind == "sourceless module" else "is not the code"
    with Ledger.open(sqlite_url) as ledger:
        ledger.start_run("planted", seed=1, run_id="planted", program=program).finish()
        with pytest.raises(NotReexecutable, match=f"{refused} of run planted|{refused} against"):
            reexecute(ledger, "planted", RecordedProgram())
    assert sorted(p.name for p in folder.rglob("*.ran")) == []


def test_changed_code_is_refused_or_shown_at_its_first_diverging_event(
    sqlite_url: str, tmp_path: Path
) -> None:
    program = write(tmp_path, "iris_edit.py", IRIS)
    with Ledger.open(sqlite_url) as ledger:
        rid = run_program(ledger, f"{program}:main", config={"epochs": 3}, seed=2, run_id="edit")
        program.write_text(IRIS.replace('ctx.config.get("lr", 0.01)', 'ctx.config.get("lr", 0.05)'))
        with pytest.raises(NotReexecutable, match="pass --allow-code-change"):
            reexecute(ledger, rid, RecordedProgram())
        report = reexecute(ledger, rid, RecordedProgram(allow_code_change=True))
        first_epoch = next(e for e in ledger.read(rid) if e.event_type == "EpochCompleted")
    assert not report.ok
    assert any("is not the code of run edit" in n for n in report.notes)
    run_stream = next(d for d in report.divergences if d.stream_id == "run")
    assert run_stream.version == first_epoch.version
    assert run_stream.recorded is not None and run_stream.recorded.position == first_epoch.position
    assert "payload.val_accuracy" in run_stream.fields


def test_kasmina_replay_verify_re_executes_a_program_or_names_what_is_missing(
    tmp_path: Path,
) -> None:
    program = write(tmp_path, "iris_cli.py", IRIS)
    db = f"sqlite:///{tmp_path / 'k.db'}"
    proc = kasmina("--db", db, "run", "iris_cli.py:main", "--run-id", "v", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = kasmina("--db", db, "replay", "v", "--verify", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("0 divergences")
    program.unlink()
    proc = kasmina("--db", db, "replay", "v", "--verify", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: run v was made by {program}:main, which cannot be loaded: "
        f"program file '{program}' does not exist"
    )


def test_replay_verify_gives_its_comparison_in_every_format(tmp_path: Path) -> None:
    program = write(tmp_path, "iris_formats.py", IRIS)
    db = f"sqlite:///{tmp_path / 'f.db'}"
    assert (
        kasmina(
            "--db",
            db,
            "run",
            "iris_formats.py:main",
            "--run-id",
            "f",
            "--config",
            '{"epochs": 2}',
            cwd=tmp_path,
        ).returncode
        == 0
    )

    def verify(fmt: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return kasmina("--db", db, "replay", "f", "--verify", "--format", fmt, *extra, cwd=tmp_path)

    sound = verify("json")
    assert sound.returncode == 0, sound.stderr
    tool = subprocess.run(
        [sys.executable, "-m", "json.tool"], input=sound.stdout, text=True, capture_output=True
    )
    assert tool.returncode == 0, tool.stderr
    whole = json.loads(sound.stdout)
    assert whole["ok"] is True and whole["divergences"] == [] and whole["compared"] > 0
    clean = verify("csv")
    assert clean.returncode == 0 and clean.stdout.splitlines() == [",".join(DIVERGENCE_FIELDS)]

    program.write_text(IRIS.replace('ctx.config.get("lr", 0.01)', 'ctx.config.get("lr", 0.05)'))
    found = verify("json", "--allow-code-change")
    assert found.returncode == 1
    whole = json.loads(found.stdout)
    assert whole["ok"] is False and whole["run_id"] == "f" and whole["divergences"]
    run_stream = next(d for d in whole["divergences"] if d["stream_id"] == "run")
    assert "val_accuracy" in run_stream["fields"]
    recorded, replayed = run_stream["recorded"], run_stream["replayed"]
    assert recorded["event_type"] == "EpochCompleted"
    assert recorded["values"]["val_accuracy"] != replayed["values"]["val_accuracy"]

    lines = verify("jsonl", "--allow-code-change")
    assert lines.returncode == 1
    records = [json.loads(line) for line in lines.stdout.splitlines()]
    assert records[0] == {"record": "run", **{k: v for k, v in whole.items() if k != "divergences"}}
    assert [r for r in records[1:]] == [
        {"record": "divergence", "run_id": "f", **d} for d in whole["divergences"]
    ]

    table = verify("csv", "--allow-code-change")
    assert table.returncode == 1
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert len(rows) == sum(len(d["fields"]) for d in whole["divergences"])
    accuracy = next(r for r in rows if r["stream_id"] == "run" and r["field"] == "val_accuracy")
    assert json.loads(accuracy["recorded"]) == recorded["values"]["val_accuracy"]
    assert int(accuracy["recorded_position"]) == recorded["position"]


def first_diverging_position(report: Reexecution) -> int:
    """The run's first diverging event: the earliest recorded position among the streams'."""
    return min(d.recorded.position for d in report.divergences if d.recorded is not None)


@pytest.mark.parametrize("edited", ["config", "decision"])
def test_an_edited_run_is_shown_at_its_exact_first_diverging_event(
    tmp_path: Path, edited: str
) -> None:
    program = write(tmp_path, "iris_forged.py", IRIS)
    path = tmp_path / "forged.db"
    with Ledger.open(f"sqlite:///{path}") as ledger:
        rid = run_program(ledger, f"{program}:main", config={"epochs": 5}, seed=2, run_id="f")
        events = list(ledger.read(rid))
    if edited == "config":
        # lr is read at the start, so the first epoch's numbers are the first to change
        expected = next(e for e in events if e.event_type == "EpochCompleted")

        def edit(event_type: str, payload: dict[str, object]) -> None:
            if event_type == "RunStarted":
                payload["config"] = {"epochs": 5, "lr": 0.05}

    else:
        decided = next(e for e in events if e.event_type == "PolicyDecided")
        decision = decided.payload
        assert isinstance(decision, PolicyDecided) and decision.arguments["blueprint"] == "mlp"
        # the germination the decision caused is the first event to change
        expected = next(
            e for e in events if e.position > decided.position and e.stream_id == decided.stream_id
        )
        assert expected.event_type == "SeedGerminated"

        def edit(event_type: str, payload: dict[str, object]) -> None:
            if event_type == "PolicyDecided" and payload["decision_id"] == decision.decision_id:
                payload["arguments"] = {**decision.arguments, "blueprint": "norm"}

    rawdb.rewrite_sqlite_run(str(path), rid, edit)  # a forger: the chain verifies again
    with Ledger.open(f"sqlite:///{path}") as ledger:
        assert ledger.verify(rid).ok
        report = reexecute(ledger, rid, RecordedProgram())
    assert not report.ok
    assert first_diverging_position(report) == expected.position
