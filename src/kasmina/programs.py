"""`kasmina run`: a user's training program, started so that its run can be proved later.

A program is a function that takes a `RunContext`, named as
``path/to/file.py:function`` or ``package.module:function``. Running it
through kasmina records, in the run's `RunStarted`, everything a later
re-execution needs to know it is running the same thing: the entry point,
the arguments, the config and seed, a digest of the code and the machine.
The function gets the ledger, the config and the seed from the context, so
it holds nothing kasmina would have to guess.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from kasmina import determinism
from kasmina.canonical import Json
from kasmina.errors import KasminaError, RunExists
from kasmina.events import RUN_STREAM, CheckpointSaved, RunParent, RunResumed, RunStarted
from kasmina.ledger import Ledger, Run
from kasmina.replay.lineage import checkpoint_at, live_checkpoints, parent_checkpoint, parse_fork

if TYPE_CHECKING:
    from torch.nn import Module
    from torch.optim import Optimizer

    from kasmina.recording import Recorder

P = TypeVar("P")

_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_FUNCTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ProgramError(KasminaError):
    """A program that cannot be found, loaded or started as named."""


class ProgramFailed(KasminaError):
    """The program itself raised; its exception is the cause, its run is left open."""

    def __init__(self, target: str, run_id: str | None, exc: BaseException) -> None:
        self.run_id = run_id
        where = f"; run {run_id} is left open" if run_id else "; no run was started"
        super().__init__(f"program {target} raised {type(exc).__name__}: {exc}{where}")


@dataclass(frozen=True)
class EntryPoint:
    """Where a program lives: a file or an importable module, and a function in it."""

    target: str
    function: str
    #: The file that defines it, when it is a file path; else None.
    path: Path | None

    @property
    def module(self) -> str:
        return self.target.rsplit(":", 1)[0]

    @property
    def resolved(self) -> str:
        """The target with a file's absolute path, so it is found from any directory."""
        return f"{self.path}:{self.function}" if self.path is not None else self.target

    @property
    def stem(self) -> str:
        """A short name: the file's stem, or the module's last part."""
        return self.path.stem if self.path is not None else self.module.rsplit(".", 1)[-1]


def parse_target(target: str) -> EntryPoint:
    """``path/to/file.py:function`` or ``package.module:function``, checked before anything runs."""
    where, colon, function = target.rpartition(":")
    shape = "path/to/file.py:function or package.module:function"
    if not colon or not where or not _FUNCTION.fullmatch(function):
        raise ProgramError(f"a program is named as {shape}, got {target!r}")
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise ProgramError(f"program file {where!r} does not exist")
        return EntryPoint(target, function, path.resolve())
    if not _MODULE.fullmatch(where):
        raise ProgramError(f"a program is named as {shape}, got {target!r}")
    return EntryPoint(target, function, None)


def load_program(entry: EntryPoint) -> Callable[[RunContext], object]:
    """The program's function. Like ``python file.py``, a file's folder goes on sys.path first,
    and like ``python -m``, the working directory does for a module.
    """
    module = _load_file(entry.path) if entry.path is not None else _import(entry.module)
    function = getattr(module, entry.function, None)
    if function is None:
        raise ProgramError(f"{entry.module} has no function {entry.function!r}")
    if not callable(function):
        raise ProgramError(f"{entry.target} is a {type(function).__name__}, not a function")
    return function  # type: ignore[no-any-return]


def _load_file(path: Path) -> ModuleType:
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = "kasmina_program_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ProgramError(f"program file {str(path)!r} cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ProgramError(f"program file {str(path)!r} line {exc.lineno}: {exc.msg}") from None
    return module


def _cwd_on_path() -> None:
    """Like ``python -m``: a module is looked for in the working directory first."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _import(name: str) -> ModuleType:
    _cwd_on_path()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ProgramError(f"cannot import program module {name!r}: {exc}") from None


def code_digest(entry: EntryPoint, function: Callable[..., object]) -> dict[str, str]:
    """What identifies the program's code: its git commit and a digest of what is uncommitted
    (tracked changes and untracked files), or, outside a repository, the SHA-256 of its source.
    """
    module = sys.modules.get(getattr(function, "__module__", "") or "")
    return _digest_of(entry.path or _source_of(module))


def _digest_before_loading(entry: EntryPoint) -> dict[str, str]:
    """`code_digest` as far as it can be known without running any of the program: its file,
    or the file its module would be imported from (found, not imported: importing runs it).

    It differs from `code_digest` only for a module outside git whose function is
    defined in another module, which the recorded digest names: such a run is
    refused unless ``--allow-code-change``, and then checked once loaded.
    """
    return _digest_of(entry.path or _module_file(entry.module))


def _module_file(name: str) -> Path | None:
    """The ``.py`` file importing module `name` would run, found as import finds it (every
    finder on ``sys.meta_path``, editable installs' too) but without importing its
    packages, whose ``__init__`` would run; None for a module with no such file."""
    _cwd_on_path()
    spec = None
    search: list[str] | None = None
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        full = ".".join(parts[:depth])
        loaded = sys.modules.get(full)
        spec = loaded.__spec__ if loaded is not None else _found(full, search)
        if spec is None:
            raise ProgramError(f"cannot import program module {name!r}: no module {full!r}")
        search = list(spec.submodule_search_locations or [])
    origin = spec.origin if spec is not None else None
    return Path(origin).resolve() if origin and origin.endswith(".py") else None


def _found(name: str, search: list[str] | None) -> importlib.machinery.ModuleSpec | None:
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        spec = None if find is None else find(name, search, None)
        if spec is not None:
            return cast(importlib.machinery.ModuleSpec, spec)
    return None


def _digest_of(source: Path | None) -> dict[str, str]:
    if source is None:
        return {}
    repo = _git(source.parent, "rev-parse", "--show-toplevel")
    if repo is not None:
        commit = _git(source.parent, "rev-parse", "HEAD")
        if commit is not None:
            top = Path(repo.decode().strip())
            return {"commit": commit.decode().strip(), "changes": _changes_digest(top)}
    return {"source": hashlib.sha256(source.read_bytes()).hexdigest()}


def _source_of(module: ModuleType | None) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if isinstance(file, str) and file.endswith(".py") else None


def _git(folder: Path, *args: str) -> bytes | None:
    """Git's output in `folder`, or None where git is missing or says no."""
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _changes_digest(repo: Path) -> str:
    """SHA-256 of the diff against HEAD and of every untracked, unignored file; '' when clean."""
    diff = _git(repo, "diff", "HEAD", "--binary") or b""
    listed = _git(repo, "ls-files", "--others", "--exclude-standard", "-z") or b""
    untracked = sorted(p for p in listed.decode(errors="surrogateescape").split("\0") if p)
    if not diff and not untracked:
        return ""
    digest = hashlib.sha256(diff)
    for name in untracked:
        file = repo / name
        digest.update(name.encode(errors="surrogateescape") + b"\0")
        if file.is_file():
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def read_config(text: str | None) -> dict[str, Json]:
    """``--config``: a JSON object given inline, or the path of a file holding one."""
    if text is None:
        return {}
    raw, what = text, "--config"
    if not text.lstrip().startswith(("{", "[")):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ProgramError(f"--config {text!r} is neither a JSON object nor a file")
        raw, what = path.read_text(), f"config file {text!r}"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProgramError(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(value, dict):
        raise ProgramError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


@dataclass
class RunContext:
    """What a program gets: the ledger, its config and seed, and the run, started on first use.

    The run starts when the program first reads `run` or `recorder` (or
    returns), so a dataset digest reported with `dataset_digest` before
    then is part of `RunStarted`.
    """

    ledger: Ledger
    config: dict[str, Json]
    seed: int
    device: str
    argv: list[str]
    name: str
    entry: EntryPoint
    run_id: str | None = None
    _program: dict[str, Json] = field(default_factory=dict)
    _dataset: tuple[str, str] | None = None
    _run: Run[Ledger] | None = None
    #: Where the program may print (a rich Console), or None for silence.
    console: Any = None
    #: Where a loop that knows its epochs shows them (`kasmina.progress`; the command's
    #: stderr), apart from `console`, whose output may be the command's result; or None.
    progress: Any = None
    #: What the program's function returned, once it has.
    result: object = None
    _replaying: Any = None
    #: The `RunStarted` of the run this call resumes (`kasmina run --resume`), or None.
    _resuming: RunStarted | None = None
    #: Where this run was forked from (`kasmina run --fork`), or None.
    _forking: RunParent | None = None
    #: The ledger holding the parent's log and checkpoint (the recorded one, when re-executing).
    _source: Ledger | None = None
    #: Whether PyTorch's determinism rules are in force (`kasmina run --deterministic`).
    deterministic: bool = True
    #: The determinism settings and machine facts in force while the program runs.
    settings: dict[str, Json] = field(default_factory=dict)
    _restored: bool = False

    @property
    def run(self) -> Run[Ledger]:
        if self._run is None and self._resuming is not None:
            assert self.run_id is not None
            # Nothing is recorded until `restore` has said where the run goes on from.
            self._run = Run(
                self.ledger, self.run_id, buffer_size=1000, writers=self._resuming.slot_writers
            )
        if self._run is None:
            dataset, digest = self._dataset or (None, None)
            self._run = self.ledger.start_run(
                self.name,
                self.seed,
                self.config,
                run_id=self.run_id,
                buffer_size=1000,
                dataset=dataset,
                dataset_digest=digest,
                program=self._program,
            )
        return self._run

    @property
    def recorder(self) -> Recorder:
        return self.run.recorder

    @property
    def started(self) -> bool:
        return self._run is not None

    @property
    def parent(self) -> RunParent | None:
        """The run and epoch this run was forked from, or None."""
        if self._forking is not None:
            return self._forking
        return None if self._resuming is None else self._resuming.parent

    @property
    def replaying(self) -> bool:
        """Whether this call re-executes a recorded run (`kasmina replay --verify`)."""
        return self._replaying is not None

    def dataset_digest(self, name: str, data: bytes | str) -> str:
        """Record which data the run trains on: `data` is its bytes, or a digest already taken."""
        if self._run is not None:
            raise ProgramError(
                "report the dataset digest before the run starts (before ctx.run or ctx.recorder)"
            )
        digest = data if isinstance(data, str) else hashlib.sha256(data).hexdigest()
        recorded = self._resuming
        if recorded is not None and (recorded.dataset, recorded.dataset_digest) != (name, digest):
            raise ProgramError(
                f"run {self.run_id} trained on {recorded.dataset!r} with digest "
                f"{recorded.dataset_digest}; this attempt has {name!r} with digest {digest}"
            )
        self._dataset = (name, digest)
        return digest

    def policy(self, default: P) -> P:
        """The policy to drive the seeds: `default`, unless a replay re-applies recorded ones."""
        return self._replaying if self._replaying is not None else default

    def checkpoint(
        self,
        model: Module,
        optimizer: Optimizer | None = None,
        *,
        epoch: int,
        **stateful: object,
    ) -> str:
        """Keep the program's state at the end of `epoch` in the artifact store; its digest.

        Call it after the epoch's last event (after `SeedManager.end_epoch`):
        the run resumes from here, at epoch + 1. `stateful` names whatever
        else the loop needs back (the manager, a scheduler, a data-order
        generator); `restore` must be given the same names. Recorded as
        `CheckpointSaved` once the file is safely in the store.
        """
        from kasmina.checkpoints import capture

        store = self.ledger.require_artifacts()
        data = capture(model, optimizer, epoch=epoch, stateful=stateful)
        recorder = self.recorder
        recorder.flush()
        stored = store.put(data)
        saved = CheckpointSaved(
            epoch=epoch, digest=stored.digest, bytes=stored.size, path=stored.path
        )
        recorder.emit(saved, stream_id=RUN_STREAM, epoch=epoch)
        recorder.flush()
        return stored.digest

    def restore(
        self, model: Module, optimizer: Optimizer | None = None, **stateful: object
    ) -> int | None:
        """None on a fresh run; on a resumed or forked one, the epoch it goes on from.

        The model (every slot's state and seed included), the optimizer, the
        random generators and `stateful` are put back as they were when the
        checkpoint was taken; every slot is checked against the log's state at
        that epoch. A resumed run goes on from its last checkpoint and records
        `RunResumed`: what the abandoned attempt recorded after it is
        superseded. A fork goes on from its parent's checkpoint at the fork's
        epoch. A program goes on at the epoch after the one returned. Make the
        `SeedManager` before this call and pass it here and to `checkpoint`.
        """
        if self._restored:
            raise ProgramError("ctx.restore was called twice; a run is restored once")
        self._restored = True
        if self._forking is None and self._resuming is None:
            return None
        run = self.run
        if run.recorder.heads:
            raise ProgramError(
                f"this attempt at run {run.run_id} recorded events before ctx.restore; "
                "call it before anything is recorded"
            )
        if self._forking is not None:
            return self._from_parent(self._forking, model, optimizer, stateful)
        return self._resume(model, optimizer, stateful)

    def _resume(
        self, model: Module, optimizer: Optimizer | None, stateful: Mapping[str, object]
    ) -> int | None:
        from kasmina.replay.live import put_back

        assert self.run_id is not None and self._resuming is not None
        attempts = self.ledger.attempts(self.run_id)
        begun = next(self.ledger.read(self.run_id, stream_id=RUN_STREAM)).position
        saved = checkpoint_at(self.ledger, self.run_id)
        epoch: int | None = None
        digest: str | None = None
        after = begun
        parent = self._resuming.parent
        if saved is not None:
            payload = saved.payload
            assert isinstance(payload, CheckpointSaved)
            digest, after = payload.digest, saved.position
            epoch = put_back(model, optimizer, stateful, self.ledger, self.run_id, saved)
        elif parent is not None:  # a fork that died before its first checkpoint
            epoch = self._from_parent(parent, model, optimizer, stateful)
            digest = parent.checkpoint
        resumed = RunResumed(
            from_epoch=epoch,
            attempt=attempts.count + 1,
            abandoned_after_position=after,
            checkpoint=digest,
        )
        # Ahead of anything this attempt has buffered: its events come after the resume.
        self.ledger.append([self.run.recorder.event(resumed, stream_id=RUN_STREAM)])
        return epoch

    def _from_parent(
        self,
        parent: RunParent,
        model: Module,
        optimizer: Optimizer | None,
        stateful: Mapping[str, object],
    ) -> int:
        from kasmina.replay.live import put_back

        source = self._source or self.ledger
        saved = parent_checkpoint(source, parent)
        return put_back(model, optimizer, stateful, source, parent.run_id, saved)


def seed_everything(seed: int) -> None:
    """Python's, numpy's (when loaded) and torch's (when loaded) generators, from the run's seed."""
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def execute_program(
    ledger: Ledger,
    target: str,
    *,
    config: Mapping[str, Json] | None = None,
    seed: int = 0,
    name: str | None = None,
    run_id: str | None = None,
    device: str = "cpu",
    argv: Sequence[str] = (),
    console: Any = None,
    progress: Any = None,
    deterministic: bool = True,
) -> RunContext:
    """Load the program, start its run, call it, and finish the run; its context.

    A program that raises leaves its run open, with every event it recorded
    flushed, so it can be looked at (and, later, resumed); `ProgramFailed`
    names the run and has the program's exception as its cause. It runs
    under PyTorch's determinism rules unless `deterministic` is False
    (`kasmina.determinism`); what was in force is recorded either way.
    """
    _unused(ledger, run_id)
    entry = parse_target(target)
    function = load_program(entry)
    ctx = RunContext(
        ledger=ledger,
        config=dict(config or {}),
        seed=seed,
        device=device,
        argv=list(argv),
        name=name or f"{entry.stem}:{entry.function}",
        entry=entry,
        run_id=run_id,
        console=console,
        progress=progress,
        _program=_program_record(entry, function, argv, device),
        deterministic=deterministic,
    )
    _execute(function, ctx)
    return ctx


def _unused(ledger: Ledger, run_id: str | None) -> None:
    """Refuse a run id that is taken before the program is loaded and called: `start_run`
    would refuse it too, but only once the program had loaded its data."""
    if run_id is not None and ledger.run_exists(run_id):
        raise RunExists(run_id)


def _program_record(
    entry: EntryPoint, function: Callable[..., object], argv: Sequence[str], device: str
) -> dict[str, Json]:
    """What `RunStarted` records of the program: entry point, arguments, code, machine."""
    return {
        "entry_point": entry.resolved,
        "argv": list(argv),
        "code": dict(code_digest(entry, function)),
        "environment": {"device": device},
    }


def fork_program(
    ledger: Ledger,
    fork: str,
    *,
    target: str | None = None,
    config: Mapping[str, Json] | None = None,
    seed: int | None = None,
    name: str | None = None,
    run_id: str | None = None,
    device: str | None = None,
    argv: Sequence[str] | None = None,
    console: Any = None,
    progress: Any = None,
    deterministic: bool | None = None,
) -> RunContext:
    """Start a new run from another run's checkpoint at an epoch (`fork` is ``RUN@EPOCH``).

    The fork runs the parent's program (or `target`, to try other code) with
    the parent's config updated by `config` (key by key), the parent's seed,
    arguments and device unless given, and the parent's thread count. Its
    `RunStarted` names the parent, the epoch and the checkpoint; its
    `ctx.restore` puts the parent's state at that epoch back, and what it
    records after is its own history.
    """
    from kasmina.replay.reexecution import started_of

    _unused(ledger, run_id)
    parent_id, epoch = parse_fork(fork)
    parent_id = ledger.resolve_run(parent_id)
    started = started_of(ledger, parent_id)
    saved = {
        e.payload.epoch: (e.position, e.payload.digest)
        for e in live_checkpoints(ledger, parent_id)
        if isinstance(e.payload, CheckpointSaved)
    }
    if epoch not in saved:
        have = ", ".join(map(str, sorted(saved))) or "none"
        raise ProgramError(
            f"run {parent_id} has no checkpoint at epoch {epoch} to fork from "
            f"(its checkpoints: {have})"
        )
    position, digest = saved[epoch]
    parent = RunParent(run_id=parent_id, epoch=epoch, position=position, checkpoint=digest)
    if target is None:
        if started.entry_point is None:
            raise ProgramError(
                f"run {parent_id} was not started by `kasmina run`: name the program to fork with"
            )
        target = started.entry_point
    entry = parse_target(target)
    function = load_program(entry)
    device = device or _recorded_device(started)
    argv = list(started.argv if argv is None else argv)
    ctx = RunContext(
        ledger=ledger,
        config={**started.config, **(config or {})},
        seed=started.seed if seed is None else seed,
        device=device,
        argv=argv,
        name=name or f"{started.name}@{epoch}",
        entry=entry,
        run_id=run_id,
        console=console,
        progress=progress,
        _program={
            **_program_record(entry, function, argv, device),
            "parent": parent.model_dump(),
        },
        _forking=parent,
        deterministic=_recorded_deterministic(started) if deterministic is None else deterministic,
    )
    _with_threads(started, lambda: _execute(function, ctx))
    return ctx


def run_program(ledger: Ledger, target: str, **options: Any) -> str:
    """`execute_program`, for the run's id: what `kasmina run` does."""
    return execute_program(ledger, target, **options).run.run_id


def _execute(function: Callable[[RunContext], object], ctx: RunContext) -> None:
    """Seed, call the program under the determinism settings (recorded in `RunStarted`'s
    environment), and seal its run when it returns (see `run_program`)."""
    seed_everything(ctx.seed)
    with determinism.deterministic(ctx.deterministic, device=ctx.device) as facts:
        ctx.settings = facts
        if not ctx.replaying:
            environment = ctx._program.setdefault("environment", {})
            assert isinstance(environment, dict)
            environment[determinism.ENVIRONMENT_KEY] = facts
        _call(function, ctx)


def _call(function: Callable[[RunContext], object], ctx: RunContext) -> None:
    try:
        ctx.result = function(ctx)
        if ctx._resuming is not None and not ctx._restored:
            raise ProgramError(
                "it never called ctx.restore(...), so the run could not go on from its "
                "last checkpoint; nothing it did was recorded"
            )
        if ctx._forking is not None and not ctx._restored:
            raise ProgramError(
                "it never called ctx.restore(...), so the fork never took its parent's state"
            )
    except Exception as exc:
        if ctx.started and (ctx._resuming is None or ctx._restored):
            ctx.recorder.flush()
        run_id = ctx.run.run_id if ctx.started else ctx.run_id if ctx._resuming else None
        raise ProgramFailed(ctx.entry.target, run_id, exc) from exc
    if not ctx.run.finished:
        ctx.run.finish()


def _code_text(code: Mapping[str, str]) -> str:
    return ", ".join(f"{k} {v[:12] or 'none'}" for k, v in sorted(code.items())) or "no digest"


def load_recorded(
    run_id: str, started: RunStarted, allow_code_change: bool, notes: list[str]
) -> tuple[EntryPoint, Callable[[RunContext], object]]:
    """The program a run recorded, loaded, its code checked against the recorded digest.

    Other code is refused unless `allow_code_change`; then it is a note.
    """
    if started.entry_point is None:
        raise ProgramError(
            f"run {run_id} was not started by `kasmina run`, so no program is recorded"
        )
    entry_point = started.entry_point
    entry = _loadable(run_id, entry_point, lambda: parse_target(entry_point))
    # Loading runs the module, and the entry point is the ledger's word: nothing it
    # names runs unless it is the recorded code, known before it loads.
    if not allow_code_change:
        before = _loadable(run_id, entry_point, lambda: _digest_before_loading(entry))
        if not before or before != started.code:
            raise ProgramError(f"{_code_change(run_id, started, before)}; {_ANYWAY}")
    function = _loadable(run_id, entry_point, lambda: load_program(entry))
    now = code_digest(entry, function)
    if now != started.code:
        if not allow_code_change:
            raise ProgramError(f"{_code_change(run_id, started, now)}; {_ANYWAY}")
        notes.append(f"{_code_change(run_id, started, now)}: run anyway")
    return entry, function


_ANYWAY = "pass --allow-code-change to run it anyway"


def _loadable(run_id: str, entry_point: str, step: Callable[[], P]) -> P:
    """`step` of loading a recorded program, a failure named as the run's."""
    try:
        return step()
    except ProgramError as exc:
        raise ProgramError(
            f"run {run_id} was made by {entry_point}, which cannot be loaded: {exc}"
        ) from None


def _code_change(run_id: str, started: RunStarted, now: dict[str, str]) -> str:
    if not now:
        return (
            f"the code of {started.entry_point} cannot be checked against run {run_id} before "
            f"it runs (recorded {_code_text(started.code)}; no source file found for it now)"
        )
    return (
        f"the code of {started.entry_point} is not the code of run {run_id} "
        f"(recorded {_code_text(started.code)}; now {_code_text(now)})"
    )


def resume_program(
    ledger: Ledger,
    run_id: str,
    *,
    allow_code_change: bool = False,
    device: str | None = None,
    console: Any = None,
    progress: Any = None,
) -> RunContext:
    """Run an unfinished run's program again, to go on from its last checkpoint.

    The program is the one its `RunStarted` names, with the recorded config,
    seed, arguments and thread count; its `ctx.restore` puts it back at the
    last checkpoint and records `RunResumed`, and the run is sealed when it
    returns, as a fresh run would be.
    """
    from kasmina.replay.reexecution import started_of

    run_id = ledger.resolve_run(run_id)
    started = started_of(ledger, run_id)
    finished = [
        e for e in ledger.read(run_id, stream_id=RUN_STREAM) if e.event_type == "RunFinished"
    ]
    if finished:
        status = getattr(finished[-1].payload, "status", "completed")
        raise ProgramError(f"run {run_id} is finished ({status}): only an open run can be resumed")
    notes: list[str] = []
    entry, function = load_recorded(run_id, started, allow_code_change, notes)
    if console is not None:
        for note in notes:
            console.print(f"note: {note}", markup=False, highlight=False)
    ctx = RunContext(
        ledger=ledger,
        config=dict(started.config),
        seed=started.seed,
        device=device or _recorded_device(started),
        argv=list(started.argv),
        name=started.name,
        entry=entry,
        run_id=run_id,
        console=console,
        progress=progress,
        _resuming=started,
        deterministic=_recorded_deterministic(started),
    )
    _with_threads(started, lambda: _execute(function, ctx))
    return ctx


def _recorded_device(started: RunStarted) -> str:
    device = started.environment.get("device")
    return device if isinstance(device, str) else "cpu"


def _recorded_deterministic(started: RunStarted) -> bool:
    """Whether the run ran under the determinism rules (a run too old to say: yes)."""
    return started.deterministic is not False


def _cuda_available() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and bool(torch.cuda.is_available())


def _with_threads(started: RunStarted, call: Callable[[], None]) -> None:
    """`call` with torch's thread count as the run recorded it, the process's put back after."""
    torch = sys.modules.get("torch")
    if torch is None or not started.num_threads:
        call()
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(started.num_threads)
    try:
        call()
    finally:
        torch.set_num_threads(saved)


@dataclass
class RecordedProgram:
    """A run's program as re-execution reaches it: through the entry point its run recorded.

    It is loaded and its code digested again; a digest other than the
    recorded one refuses the re-run unless `allow_code_change`, and is then
    a note. The re-run gets the recorded config, seed, arguments and thread
    count, and a context whose `policy(default)` is the recorded decisions.
    """

    allow_code_change: bool = False
    notes: list[str] = field(default_factory=list)
    #: The ledger being re-executed: a fork's parent checkpoint is read from it.
    source: Ledger | None = None
    #: Where to re-execute (``replay --verify --device``); None: the device the run recorded.
    device: str | None = None
    _loaded: tuple[EntryPoint, Callable[[RunContext], object]] | None = None

    def refusal(self, run_id: str, started: RunStarted) -> str | None:
        recorded = _recorded_device(started)
        device = self.device or recorded
        if device.startswith("cuda") and not _cuda_available():
            return (
                f"run {run_id} ran on {device} and this machine has no CUDA device: "
                "pass --device cpu to re-execute it on the CPU (its numbers may then differ)"
            )
        self.device = device
        try:
            self._loaded = load_recorded(run_id, started, self.allow_code_change, self.notes)
        except ProgramError as exc:
            return str(exc)
        return None

    def rerun(
        self,
        scratch: Ledger,
        started: RunStarted,
        policy: Any,
        *,
        run_id: str,
        console: object = None,
    ) -> None:
        assert self._loaded is not None, "refusal() loads the program first"
        entry, function = self._loaded
        ctx = RunContext(
            ledger=scratch,
            config=dict(started.config),
            seed=started.seed,
            device=self.device or _recorded_device(started),
            argv=list(started.argv),
            name=started.name,
            entry=entry,
            run_id=run_id,
            console=console,
            progress=console,
            _program={
                "entry_point": started.entry_point,
                "argv": list(started.argv),
                "code": dict(started.code),
                "environment": dict(started.environment),
                "parent": None if started.parent is None else started.parent.model_dump(),
            },
            _replaying=policy,
            _forking=started.parent,
            _source=self.source,
            deterministic=_recorded_deterministic(started),
        )
        _with_threads(started, lambda: _execute(function, ctx))
        recorded = determinism.recorded_settings(started)
        self.notes.extend(determinism.differences(recorded, ctx.settings))


__all__ = [
    "EntryPoint",
    "ProgramError",
    "ProgramFailed",
    "RecordedProgram",
    "RunContext",
    "code_digest",
    "execute_program",
    "fork_program",
    "load_program",
    "parse_target",
    "load_recorded",
    "read_config",
    "resume_program",
    "run_program",
    "seed_everything",
]
