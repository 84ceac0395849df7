"""The shape of the code, read from its syntax trees (nothing of kasmina is imported).

Three rules of DESIGN.md, checked over every ``.py`` under ``src/kasmina``:

1. Only `kasmina.slot_state` builds or changes a slot's state. Elsewhere no
   call constructs one of its state classes, no ``dataclasses.replace`` (or
   ``setattr``) is applied to an expression that names a slot state, no
   attribute of one is assigned, and `SeedSlot` sets ``self.state`` only to
   the result of a `kasmina.slot_state` function (or, in ``restore``, to the
   state it is given) and shadows no state field on itself.
2. No module imports another module's private (underscore) names, imports a
   private module, or reads ``module._name`` through an imported kasmina module.
3. No import cycles among kasmina's modules, lazy and typing-only imports
   included (an edge goes to the module an import names, not to its parent
   packages), and in particular none through `kasmina.runtime.slot` or
   `kasmina.slot_state`.

Every checker is a function of a source root, and every rule has a negative
case: a small tree written to ``tmp_path`` that breaks it, on which the same
checker must report the break, so no rule can pass vacuously.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "kasmina"
STATE_MODULE = "kasmina.slot_state"
SLOT_MODULE = "kasmina.runtime.slot"


# -- reading the tree ----------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]


def load(src: Path) -> dict[str, Module]:
    """Every module of the package under `src`, by dotted name."""
    modules: dict[str, Module] = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        modules[name] = Module(name, path, tree, is_package)
    return modules


def where(module: Module, node: ast.AST) -> str:
    return f"{module.name}:{getattr(node, 'lineno', 0)}"


def absolute(module: Module, node: ast.ImportFrom) -> str:
    """The module an ``from X import`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    base = module.package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@dataclass(frozen=True)
class Import:
    source: Module
    node: ast.Import | ast.ImportFrom
    #: The module imported from (``from X import n``) or imported (``import X``).
    module: str
    #: The name taken from it (None for ``import X``), and what it is bound to.
    name: str | None
    bound: str
    #: For ``import a.b``: the module the bound name is (``a``; ``a.b`` with ``as``).
    binds: str | None = None


def imports(module: Module) -> Iterator[Import]:
    """Every import statement anywhere in the module: top level, lazy, TYPE_CHECKING."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    yield Import(module, node, alias.name, None, alias.asname, alias.name)
                else:
                    top = alias.name.partition(".")[0]
                    yield Import(module, node, alias.name, None, top, top)
        elif isinstance(node, ast.ImportFrom):
            base = absolute(module, node)
            for alias in node.names:
                yield Import(module, node, base, alias.name, alias.asname or alias.name)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


# -- rule 1: only slot_state builds or changes a slot state ------------------------------


@dataclass(frozen=True)
class StateModel:
    """What `kasmina.slot_state` defines, read from its syntax tree."""

    classes: frozenset[str]
    #: Field names per state class.
    fields: dict[str, tuple[str, ...]]
    #: Public module-level functions that return a `SlotState`.
    functions: frozenset[str]

    @property
    def slot_fields(self) -> frozenset[str]:
        return frozenset(self.fields["SlotState"])

    @property
    def all_fields(self) -> frozenset[str]:
        return frozenset(f for names in self.fields.values() for f in names)


def _is_dataclass(node: ast.ClassDef) -> bool:
    for deco in node.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if isinstance(target, ast.Name) and target.id == "dataclass":
            return True
        if isinstance(target, ast.Attribute) and target.attr == "dataclass":
            return True
    return False


def state_model(modules: dict[str, Module]) -> StateModel:
    tree = modules[STATE_MODULE].tree
    fields: dict[str, tuple[str, ...]] = {}
    functions: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and _is_dataclass(node):
            fields[node.name] = tuple(
                s.target.id
                for s in node.body
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            )
        elif (
            isinstance(node, ast.FunctionDef)
            and not node.name.startswith("_")
            and node.returns is not None
            and ast.unparse(node.returns).strip("'\"") == "SlotState"
        ):
            functions.add(node.name)
    return StateModel(frozenset(fields), fields, frozenset(functions))


class Names:
    """What a module's imports bind: names from modules, and kasmina module aliases."""

    def __init__(self, module: Module, modules: dict[str, Module]) -> None:
        self.origin: dict[str, tuple[str, str]] = {}
        self.module_alias: dict[str, str] = {}
        for imp in imports(module):
            if imp.name is None:
                self.module_alias[imp.bound] = imp.binds or imp.module
                continue
            submodule = f"{imp.module}.{imp.name}"
            if submodule in modules:
                self.module_alias[imp.bound] = submodule
            else:
                self.origin[imp.bound] = (imp.module, imp.name)

    def resolves(self, func: ast.expr, module: str, names: Iterable[str]) -> bool:
        """Whether `func` is ``name`` from `module` (imported, or through a module alias)."""
        wanted = set(names)
        if isinstance(func, ast.Name):
            source = self.origin.get(func.id)
            return source is not None and source[0] == module and source[1] in wanted
        if isinstance(func, ast.Attribute) and func.attr in wanted:
            return _dotted(func.value, self.module_alias) == module
        return False


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value, aliases)
        return None if head is None else f"{head}.{node.attr}"
    return None


#: Names that, anywhere in an expression, make it "name a slot state": the slot's
#: `state`, the usual short name for it, and its fields that hold state objects.
STATE_WORDS = frozenset({"state", "st", "slot_state", "controller", "metrics"})


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


class StateRules:
    """Rule 1 over one module."""

    def __init__(self, module: Module, modules: dict[str, Module], model: StateModel) -> None:
        self.module = module
        self.model = model
        self.names = Names(module, modules)
        #: Local names bound to a state, per function (parameters and assignments).
        self.tainted: dict[int, set[str]] = {}
        for fn in _functions(module.tree):
            self.tainted[id(fn)] = self._taint(fn)

    def _taint(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
        names: set[str] = set()
        args = fn.args
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs):
            if arg.annotation is not None and self._mentions_class(arg.annotation):
                names.add(arg.arg)
        changed = True
        while changed:
            changed = False
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    if self.names_state(node.value, names) or self._builds(node.value):
                        for t in targets:
                            if isinstance(t, ast.Name) and t.id not in names:
                                names.add(t.id)
                                changed = True
        return names

    def _mentions_class(self, annotation: ast.expr) -> bool:
        text = ast.unparse(annotation)
        return any(name in text for name in self.model.classes)

    def _builds(self, node: ast.expr) -> bool:
        return isinstance(node, ast.Call) and (
            self.constructs(node)
            or self.names.resolves(node.func, STATE_MODULE, self.model.functions)
        )

    def names_state(self, expr: ast.expr, tainted: set[str]) -> bool:
        for node in ast.walk(expr):
            if isinstance(node, ast.Name) and (node.id in STATE_WORDS or node.id in tainted):
                return True
            if isinstance(node, ast.Attribute) and node.attr in STATE_WORDS:
                return True
        return False

    def constructs(self, call: ast.Call) -> bool:
        func = call.func
        classes = self.model.classes
        if isinstance(func, ast.Name):
            source = self.names.origin.get(func.id)
            return func.id in classes or (source is not None and source[1] in classes)
        return isinstance(func, ast.Attribute) and func.attr in classes

    def _replaces(self, call: ast.Call) -> bool:
        """``dataclasses.replace``, ``copy.replace``, ``setattr`` or ``object.__setattr__``."""
        func = call.func
        if self.names.resolves(func, "dataclasses", ["replace"]):
            return True
        if self.names.resolves(func, "copy", ["replace"]):
            return True
        if isinstance(func, ast.Name) and func.id == "setattr":
            return True
        return (
            isinstance(func, ast.Attribute)
            and func.attr == "__setattr__"
            and isinstance(func.value, ast.Name)
            and func.value.id == "object"
        )

    def _scopes(self) -> Iterator[tuple[ast.AST, set[str]]]:
        """Each node with the tainted names of its innermost function."""
        for fn in _functions(self.module.tree):
            names = self.tainted[id(fn)]
            for node in ast.walk(fn):
                yield node, names
        for node in ast.walk(self.module.tree):
            yield node, set()

    def violations(self) -> Iterator[tuple[str, str]]:
        """(where, what) for every break of rule 1 outside the slot_state module."""
        seen: set[tuple[str, str]] = set()
        fields = self.model.all_fields
        for node, tainted in self._scopes():
            found: str | None = None
            if isinstance(node, ast.Call):
                if self.constructs(node):
                    found = f"constructs {ast.unparse(node.func)}"
                elif self._replaces(node) and node.args:
                    if self.names_state(node.args[0], tainted):
                        found = f"{ast.unparse(node.func)}({ast.unparse(node.args[0])}, ...)"
            elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
                targets = (
                    node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
                )
                for target in _flatten(targets):
                    if (
                        isinstance(target, ast.Attribute)
                        and target.attr in fields
                        and self.names_state(target.value, tainted)
                    ):
                        found = f"assigns {ast.unparse(target)}"
            if found is not None:
                item = (where(self.module, node), found)
                if item not in seen:
                    seen.add(item)
                    yield item


def _flatten(targets: Iterable[ast.expr]) -> Iterator[ast.expr]:
    for t in targets:
        if isinstance(t, ast.Tuple | ast.List):
            yield from _flatten(t.elts)
        elif isinstance(t, ast.Starred):
            yield from _flatten([t.value])
        else:
            yield t


def _enclosing(tree: ast.AST) -> dict[int, str]:
    """Qualified function name (``Class.method``) of every node inside a function."""
    owner: dict[int, str] = {}

    def visit(node: ast.AST, prefix: str, fn: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", fn)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                owner[id(child)] = name
                visit(child, f"{name}.", name)
            else:
                if fn is not None:
                    owner[id(child)] = fn
                visit(child, prefix, fn)

    visit(tree, "", None)
    return owner


#: SeedSlot attributes named like SlotState fields that are not state: the slot's
#: identity, given once at construction, and its gate thresholds (`QualityGates`),
#: given at construction or by the manager that adopts the slot.
SEEDSLOT_OWN = {("__init__", "slot_id"), ("__init__", "gates"), ("adopt", "gates")}


def seedslot_violations(
    modules: dict[str, Module], model: StateModel
) -> tuple[list[tuple[str, str]], int]:
    """Breaks of the SeedSlot rules, and how many ``self.state`` assignments were checked."""
    module = modules[SLOT_MODULE]
    names = Names(module, modules)
    classes = [n for n in module.tree.body if isinstance(n, ast.ClassDef) and n.name == "SeedSlot"]
    assert classes, f"no class SeedSlot in {SLOT_MODULE}"
    found: list[tuple[str, str]] = []
    checked = 0
    for method in classes[0].body:
        if not isinstance(method, ast.FunctionDef):
            continue
        params = {a.arg for a in (*method.args.args, *method.args.kwonlyargs)}
        for node in ast.walk(method):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "setattr"
                and node.args
                and isinstance(node.args[0], ast.Name)
                and node.args[0].id == "self"
            ):
                found.append((where(module, node), f"setattr(self, ...) in {method.name}"))
            if not isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
                continue
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            flat = list(_flatten(targets))
            for target in flat:
                if not (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    continue
                attr = target.attr
                if attr == "state":
                    checked += 1
                    value = getattr(node, "value", None)
                    ok = (
                        not isinstance(node, ast.AugAssign | ast.Delete)
                        and len(flat) == 1
                        and value is not None
                        and (
                            (
                                isinstance(value, ast.Call)
                                and names.resolves(value.func, STATE_MODULE, model.functions)
                            )
                            or (
                                method.name == "restore"
                                and isinstance(value, ast.Name)
                                and value.id == "state"
                                and "state" in params
                            )
                        )
                    )
                    if not ok:
                        rhs = ast.unparse(value) if value is not None else "(deleted)"
                        found.append((where(module, node), f"self.state = {rhs} in {method.name}"))
                elif attr in model.slot_fields and (method.name, attr) not in SEEDSLOT_OWN:
                    found.append((where(module, node), f"self.{attr} set in {method.name}"))
    return found, checked


def rule1(src: Path) -> list[tuple[str, str]]:
    """Every break of rule 1 under `src`, as (module:line, what), with its function."""
    modules = load(src)
    model = state_model(modules)
    found: list[tuple[str, str]] = []
    for name, module in modules.items():
        if name == STATE_MODULE:
            continue
        owner = _enclosing(module.tree)
        by_line = {
            getattr(n, "lineno", 0): owner.get(id(n), "<module>") for n in ast.walk(module.tree)
        }
        for at, what in StateRules(module, modules, model).violations():
            line = int(at.rpartition(":")[2])
            found.append((at, f"{what} [in {by_line.get(line, '<module>')}]"))
    slot_found, _ = seedslot_violations(modules, model)
    found.extend(slot_found)
    return sorted(set(found), key=_order)


def _order(item: tuple[str, str]) -> tuple[str, int, str]:
    module, _, line = item[0].rpartition(":")
    return module, int(line), item[1]


def _key(item: tuple[str, str]) -> tuple[str, str, str]:
    at, what = item
    what, _, fn = what.partition(" [in ")
    return at.rpartition(":")[0], fn.rstrip("]"), what


# -- rule 2: no private names across modules -------------------------------------------


def rule2(src: Path) -> list[tuple[str, str]]:
    modules = load(src)
    found: list[tuple[str, str]] = []
    for module in modules.values():
        aliases: dict[str, str] = {}
        for imp in imports(module):
            if imp.module != PACKAGE and not imp.module.startswith(f"{PACKAGE}."):
                continue  # __future__, the standard library, third parties
            parts = imp.module.split(".")
            if any(is_private(p) for p in parts):
                found.append((where(module, imp.node), f"imports private module {imp.module}"))
            if imp.name is None:
                aliases[imp.bound] = imp.binds or imp.module
                continue
            submodule = f"{imp.module}.{imp.name}"
            if submodule in modules:
                aliases[imp.bound] = submodule
            if is_private(imp.name) and imp.module != module.name:
                found.append((where(module, imp.node), f"from {imp.module} import {imp.name}"))
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Attribute) and is_private(node.attr):
                head = _dotted(node.value, aliases)
                if head is not None and head in modules and head != module.name:
                    found.append((where(module, node), f"reads {head}.{node.attr}"))
    return sorted(set(found), key=_order)


# -- rule 3: no import cycles -----------------------------------------------------------


def import_graph(src: Path) -> dict[str, set[str]]:
    """module -> the kasmina modules it imports (every import statement, wherever it is)."""
    modules = load(src)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for module in modules.values():
        for imp in imports(module):
            target: str | None = None
            if imp.name is not None and f"{imp.module}.{imp.name}" in modules:
                target = f"{imp.module}.{imp.name}"
            else:
                parts = imp.module.split(".")
                while parts and ".".join(parts) not in modules:
                    parts.pop()
                target = ".".join(parts) or None
            if target is not None and target != module.name:
                graph[module.name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found, key=sorted)


def cycle_path(graph: dict[str, set[str]], component: frozenset[str]) -> list[str]:
    """One cycle through the component's first module, for a readable message."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return [start]


# -- the tests ---------------------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for path in (root / PACKAGE).rglob("*"):
        if path.is_dir() and not (path / "__init__.py").exists():
            (path / "__init__.py").write_text("", encoding="utf-8")
    if not (root / PACKAGE / "__init__.py").exists():
        (root / PACKAGE / "__init__.py").write_text("", encoding="utf-8")
    return root


def test_the_tree_is_there() -> None:
    modules = load(SRC)
    assert STATE_MODULE in modules and SLOT_MODULE in modules
    assert len(modules) > 30


class TestRule1:
    def test_the_model_is_read_from_slot_state(self) -> None:
        model = state_model(load(SRC))
        assert model.classes == {"SlotState", "ControllerState", "SeedMetricsState", "GateRecord"}
        assert {"evolve", "evolve_all", "tick", "measured", "dormant"} <= model.functions
        assert {"stage", "epoch", "controller", "metrics", "gates"} <= model.slot_fields

    def test_only_slot_state_builds_or_changes_a_slot_state(self) -> None:
        found = {_key(item) for item in rule1(SRC)}
        assert found == set(), sorted(found)

    def test_seedslot_sets_its_state_only_through_slot_state(self) -> None:
        modules = load(SRC)
        found, checked = seedslot_violations(modules, state_model(modules))
        assert found == []
        assert checked >= 5  # __init__, evolve, measure, capture, step, restore

    def test_the_checker_finds_every_kind_of_break(self, tmp_path: Path) -> None:
        """The real slot_state beside a small SeedSlot: clean, then broken one line at a time."""
        state_source = (SRC / PACKAGE / "slot_state.py").read_text(encoding="utf-8")
        good = _write(
            tmp_path / "good", {"slot_state.py": state_source, "runtime/slot.py": GOOD_SLOT}
        )
        assert rule1(good) == []
        for n, (broken, expected) in enumerate(BROKEN_SLOT):
            source = GOOD_SLOT.replace("        # BREAK HERE\n", broken)
            assert source != GOOD_SLOT
            root = _write(
                tmp_path / f"bad{n}", {"slot_state.py": state_source, "runtime/slot.py": source}
            )
            whats = [what for _, what in rule1(root)]
            assert any(expected in what for what in whats), (broken, whats)

    def test_the_checker_follows_state_values_through_names(self, tmp_path: Path) -> None:
        """Outside the slot: a parameter typed as a state, or a name bound to one, is one."""
        state_source = (SRC / PACKAGE / "slot_state.py").read_text(encoding="utf-8")
        other = (
            "import dataclasses\n"
            "from kasmina.slot_state import GateRecord as Record, SeedMetricsState, dormant\n"
            "from kasmina.run_state import RunState\n\n"
            "def typed(s: SeedMetricsState | None, run: RunState):\n"
            "    dataclasses.replace(run, epoch=1)\n"
            "    return dataclasses.replace(s, accuracy=1.0)\n\n"
            "def bound():\n"
            "    fresh = dormant('a')\n"
            "    alias = fresh\n"
            "    alias.epoch = 3\n"
            "    return Record('G1', 'TRAINING', 1, 1, True, 1.0, None)\n"
        )
        root = _write(
            tmp_path,
            {"slot_state.py": state_source, "runtime/slot.py": GOOD_SLOT, "other.py": other},
        )
        assert [what for _, what in rule1(root)] == [
            "dataclasses.replace(s, ...) [in typed]",
            "assigns alias.epoch [in bound]",
            "constructs Record [in bound]",
        ]


GOOD_SLOT = """\
from dataclasses import replace

from kasmina import slot_state
from kasmina.slot_state import SlotState, dormant, evolve_all, measured, tick


class SeedSlot:
    def __init__(self, slot_id, gates=None):
        self.slot_id = slot_id
        self.gates = gates
        self.state: SlotState = dormant(slot_id)
        self.config = replace(gates, permissive=True)

    def step(self, epoch):
        self.state = tick(self.state, epoch)
        self.state = slot_state.measured(self.state, accuracy=1.0)
        self.state = evolve_all(self.state, [])

    def restore(self, state: SlotState):
        self.state = state

    def command(self, slot):
        st = self.state
        # BREAK HERE
        return st
"""

#: (a line that breaks rule 1, put into SeedSlot.command; what the checker must say).
BROKEN_SLOT = [
    ("        self.state = SlotState(self.slot_id)\n", "constructs SlotState"),
    ("        other = slot_state.SlotState('x')\n", "constructs slot_state.SlotState"),
    ("        self.state = replace(self.state, epoch=3)\n", "replace(self.state, ...)"),
    ("        self.state = replace(st, epoch=3)\n", "replace(st, ...)"),
    ("        new = replace(slot.state.metrics, accuracy=1.0)\n", "replace(slot.state.metrics"),
    ("        object.__setattr__(st, 'stage', 3)\n", "object.__setattr__(st, ...)"),
    ("        slot.metrics.grad_health = 1.0\n", "assigns slot.metrics.grad_health"),
    ("        self.state.epoch += 1\n", "assigns self.state.epoch"),
    ("        self.state = self.state\n", "self.state = self.state in command"),
    ("        self.state = state\n", "self.state = state in command"),
    ("        self.state = something(self.state)\n", "self.state = something"),
    ("        self.epoch = 4\n", "self.epoch set in command"),
    ("        self.state, x = dormant('a'), 1\n", "self.state = "),
]


class TestRule2:
    def test_no_module_uses_another_modules_private_names(self) -> None:
        found = {(at.rpartition(":")[0], what) for at, what in rule2(SRC)}
        assert found == set(), sorted(found)

    def test_the_checker_finds_private_imports_and_reads(self, tmp_path: Path) -> None:
        files = {
            "a.py": "_hidden = 1\n__version__ = '1'\n\ndef _helper():\n    return 1\n",
            "_private.py": "x = 1\n",
            "good.py": (
                "from __future__ import annotations\n"
                "from kasmina.a import __version__\n"
                "from kasmina import a\n"
                "print(a.__doc__, a.__version__)\n"
            ),
            "b.py": "from kasmina.a import _hidden\n",
            "c.py": "import kasmina._private\n",
            "d.py": "from kasmina import a\n\ndef f():\n    return a._helper()\n",
            "e.py": "import kasmina.a as alias\nvalue = alias._hidden\n",
            "f.py": "from ._private import x\n",
            "g.py": "import kasmina.a\nvalue = kasmina.a._hidden\n",
        }
        found = rule2(_write(tmp_path, files))
        assert [what for at, what in found if at.startswith("kasmina.good")] == []
        whats = {at.partition(":")[0]: what for at, what in found}
        assert whats["kasmina.b"] == "from kasmina.a import _hidden"
        assert whats["kasmina.c"] == "imports private module kasmina._private"
        assert whats["kasmina.d"] == "reads kasmina.a._helper"
        assert whats["kasmina.e"] == "reads kasmina.a._hidden"
        assert whats["kasmina.f"] == "imports private module kasmina._private"
        assert whats["kasmina.g"] == "reads kasmina.a._hidden"


def _describe(graph: dict[str, set[str]], found: list[frozenset[str]]) -> str:
    return "; ".join(" -> ".join(cycle_path(graph, c)) for c in found)


class TestRule3:
    def test_no_import_cycles(self) -> None:
        graph = import_graph(SRC)
        found = cycles(graph)
        assert found == [], _describe(graph, found)

    def test_slot_and_slot_state_are_in_no_cycle(self) -> None:
        """Kept apart from the rule above, should that ever need a known-cycles list."""
        graph = import_graph(SRC)
        assert SLOT_MODULE in graph and STATE_MODULE in graph
        for component in cycles(graph):
            assert SLOT_MODULE not in component, _describe(graph, [component])
            assert STATE_MODULE not in component, _describe(graph, [component])

    def test_the_cycle_finder_sees_lazy_and_typing_only_imports(self, tmp_path: Path) -> None:
        files = {
            "a.py": "from kasmina.b import B\n",
            "b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from kasmina.a import A\n"
                "B = 1\n"
            ),
            "c.py": "import kasmina.d\n",
            "d.py": "def f():\n    from kasmina import c\n    return c\n",
            "pkg/__init__.py": "from .x import X\n",
            "pkg/x.py": "from kasmina.pkg import y\nX = y\n",
            "pkg/y.py": "Y = 1\n",
            "e.py": "from kasmina.pkg.y import Y\n",
        }
        graph = import_graph(_write(tmp_path, files))
        assert graph["kasmina.pkg.x"] == {"kasmina.pkg.y"}
        assert graph["kasmina.e"] == {"kasmina.pkg.y"}  # not the parent package
        assert cycles(graph) == [
            frozenset({"kasmina.a", "kasmina.b"}),
            frozenset({"kasmina.c", "kasmina.d"}),
        ]
