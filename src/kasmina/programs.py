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
from typing import TYPE_CHECKING, Any, TypeVar

from kasmina.canonical import Json
from kasmina.errors import KasminaError

if TYPE_CHECKING:
    from kasmina.events import RunStarted
    from kasmina.ledger import Ledger, Run
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


def _import(name: str) -> ModuleType:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ProgramError(f"cannot import program module {name!r}: {exc}") from None


def code_digest(entry: EntryPoint, function: Callable[..., object]) -> dict[str, str]:
    """What identifies the program's code: its git commit and a digest of what is uncommitted
    (tracked changes and untracked files), or, outside a repository, the SHA-256 of its source.
    """
    source = entry.path or _source_of(sys.modules.get(getattr(function, "__module__", "") or ""))
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


def environment() -> dict[str, Json]:
    """The machine beyond what every `RunStarted` holds: CUDA, cuDNN, the device, cuBLAS."""
    env: dict[str, Json] = {"cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
    torch = sys.modules.get("torch")
    if torch is not None:
        env["cuda"] = torch.version.cuda
        available = bool(torch.cuda.is_available())
        env["cuda_available"] = available
        env["cudnn"] = torch.backends.cudnn.version() if available else None
        env["device_name"] = torch.cuda.get_device_name(0) if available else None
    return env


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
    #: What the program's function returned, once it has.
    result: object = None
    _replaying: Any = None

    @property
    def run(self) -> Run[Ledger]:
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
        self._dataset = (name, digest)
        return digest

    def policy(self, default: P) -> P:
        """The policy to drive the seeds: `default`, unless a replay re-applies recorded ones."""
        return self._replaying if self._replaying is not None else default


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
) -> RunContext:
    """Load the program, start its run, call it, and finish the run; its context.

    A program that raises leaves its run open, with every event it recorded
    flushed, so it can be looked at (and, later, resumed); `ProgramFailed`
    names the run and has the program's exception as its cause.
    """
    entry = parse_target(target)
    function = load_program(entry)
    program: dict[str, Json] = {
        "entry_point": entry.resolved,
        "argv": list(argv),
        "code": dict(code_digest(entry, function)),
        "environment": environment(),
    }
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
        _program=program,
    )
    _execute(function, ctx)
    return ctx


def run_program(ledger: Ledger, target: str, **options: Any) -> str:
    """`execute_program`, for the run's id: what `kasmina run` does."""
    return execute_program(ledger, target, **options).run.run_id


def _execute(function: Callable[[RunContext], object], ctx: RunContext) -> None:
    """Seed, call the program, and seal its run when it returns (see `run_program`)."""
    seed_everything(ctx.seed)
    try:
        ctx.result = function(ctx)
    except Exception as exc:
        if ctx.started:
            ctx.recorder.flush()
        raise ProgramFailed(ctx.entry.target, ctx.run.run_id if ctx.started else None, exc) from exc
    if not ctx.run.finished:
        ctx.run.finish()


def _code_text(code: Mapping[str, str]) -> str:
    return ", ".join(f"{k} {v[:12] or 'none'}" for k, v in sorted(code.items())) or "no digest"


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
    _loaded: tuple[EntryPoint, Callable[[RunContext], object]] | None = None

    def refusal(self, run_id: str, started: RunStarted) -> str | None:
        if started.entry_point is None:
            return f"run {run_id} was not started by `kasmina run`, so no program is recorded"
        try:
            entry = parse_target(started.entry_point)
            function = load_program(entry)
        except ProgramError as exc:
            return f"run {run_id} was made by {started.entry_point}, which cannot be loaded: {exc}"
        now = code_digest(entry, function)
        if now != started.code:
            change = f"the code of {started.entry_point} is not the code of run {run_id}"
            detail = f" (recorded {_code_text(started.code)}; now {_code_text(now)})"
            if not self.allow_code_change:
                return f"{change}{detail}; pass --allow-code-change to re-run it anyway"
            self.notes.append(f"{change}{detail}: re-run anyway")
        self._loaded = (entry, function)
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
        torch = sys.modules.get("torch")
        if torch is not None and started.num_threads:
            torch.set_num_threads(started.num_threads)
        ctx = RunContext(
            ledger=scratch,
            config=dict(started.config),
            seed=started.seed,
            device="cpu",
            argv=list(started.argv),
            name=started.name,
            entry=entry,
            run_id=run_id,
            console=console,
            _program={
                "entry_point": started.entry_point,
                "argv": list(started.argv),
                "code": dict(started.code),
                "environment": dict(started.environment),
            },
            _replaying=policy,
        )
        _execute(function, ctx)


__all__ = [
    "EntryPoint",
    "ProgramError",
    "ProgramFailed",
    "RecordedProgram",
    "RunContext",
    "code_digest",
    "environment",
    "execute_program",
    "load_program",
    "parse_target",
    "read_config",
    "run_program",
    "seed_everything",
]
