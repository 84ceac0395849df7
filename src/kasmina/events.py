"""Event payloads, the envelope, and reading old payload versions.

Every payload is a frozen pydantic model with ``extra="forbid"``: a typo in a
field name is an error at the point of recording, not a silent hole in the
audit trail years later. The model's class name is the stored ``event_type``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import FrozenInstanceError, dataclass, field, fields
from datetime import datetime
from types import MappingProxyType
from typing import (
    Annotated,
    Any,
    ClassVar,
    Literal,
    NamedTuple,
    TypeAlias,
    TypeVar,
    cast,
    get_args,
    get_origin,
)

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kasmina.canonical import SPECIAL_FLOATS, Json, canonical_string_keyed
from kasmina.errors import EventError, PayloadInvalid, UnknownEventType
from kasmina.ids import new_event_id
from kasmina.jcs import EXACT_INT, jcs_text
from kasmina.stages import SeedStage, parse_stage
from kasmina.streams import (
    RUN_STREAM,
    SLOT_PREFIX,
    memory_stream,
    rank_stream,
    slot_stream,
    stream_writer,
)


class _RealMarker:
    """Marks the payload fields that hold floats (see `Real`)."""


_REAL = _RealMarker()

#: The one float type of every payload. NaN, the infinities and -0.0 survive
#: both databases because the canonical encoder writes them as the explicit
#: strings of `SPECIAL_FLOATS`; `Payload` reads those strings back as floats.
Real = Annotated[float, _REAL]


def _mentions_real(annotation: object) -> bool:
    if get_origin(annotation) is Annotated and _REAL in get_args(annotation)[1:]:
        return True
    return any(_mentions_real(arg) for arg in get_args(annotation))


def _mentions_model(annotation: object) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_mentions_model(arg) for arg in get_args(annotation))


#: A dict lookup: an enum member's ``.name`` is a descriptor call, slow once per event.
_STAGE_NAMES: Mapping[SeedStage, str] = {stage: stage.name for stage in SeedStage}

#: Stages are stored by name; esper's integer values are accepted on input.
Stage = Annotated[
    SeedStage,
    BeforeValidator(lambda v: v if isinstance(v, SeedStage) else parse_stage(v)),
    PlainSerializer(lambda s: s.name, return_type=str),
]

Trigger: TypeAlias = Literal["command", "gate", "auto", "prune"]
Initiator: TypeAlias = Literal["policy", "governor", "auto", "command"]
GateName: TypeAlias = Literal["G0", "G1", "G2", "G3", "G5"]
AlphaMode: TypeAlias = Literal["HOLD", "UP", "DOWN"]
EvictionReason: TypeAlias = Literal["ttl", "emergency", "capacity"]
RunStatus: TypeAlias = Literal["completed", "failed", "aborted"]
Count = Annotated[int, Field(ge=0)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def _special(where: str, value: str) -> float:
    if value not in SPECIAL_FLOATS:
        raise ValueError(
            f"{where}: expected a number or one of {sorted(SPECIAL_FLOATS)}, got {value!r}"
        )
    return SPECIAL_FLOATS[value]


def _decoded_values(name: str, values: dict[str, object]) -> dict[str, object]:
    """`values` with special-float strings read back as floats (the same dict if none)."""
    if not any(type(v) is str for v in values.values()):
        return values
    return {k: _special(f"{name}.{k}", v) if type(v) is str else v for k, v in values.items()}


#: A free-named metric: lower case, digits and ``_ . / -``, at most 64 characters.
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_./-]{1,64}$")]
#: At most this many free-named metrics in one event.
MAX_METRICS = 64
#: A user's own numbers beside an event's typed fields (F1, learning rate, GPU memory...).
Metrics = Annotated[dict[MetricName, Real], Field(max_length=MAX_METRICS)]


class Payload(BaseModel):
    """Base of every payload. ``schema_version`` is bumped with an upcaster.

    Validation is strict (no "5" for 5, no True for 1.0): a payload is a record
    of fact, so a value of the wrong kind is refused rather than coerced. The
    one translation is the special-float strings, done in a single pass per
    payload rather than a callback per field, because it runs on every event.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    schema_version: ClassVar[int] = 1
    #: Samples may be dropped under pressure (counted exactly); facts never.
    droppable: ClassVar[bool] = False
    _real_fields: ClassVar[tuple[str, ...]] = ()
    #: Fields stored by name (stages); every other field holds its JSON value as is.
    _by_name: ClassVar[tuple[str, ...]] = ()
    #: Fields holding a model of their own (a fork's parent), stored as its JSON object.
    _nested: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: object) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._real_fields = tuple(
            name
            for name, info in cls.model_fields.items()
            if _mentions_real(info.annotation) or _REAL in info.metadata
        )
        cls._by_name = tuple(
            name for name, info in cls.model_fields.items() if info.annotation is SeedStage
        )
        cls._nested = tuple(
            name for name, info in cls.model_fields.items() if _mentions_model(info.annotation)
        )

    def json_values(self) -> dict[str, object]:
        """The fields as JSON values: what `model_dump` gives, without its copying.

        Built from the frozen field values directly, because `model_dump`
        copies every value through the serializer once per recorded event.
        A payload's fields are JSON values already, but for stages, which
        are stored by name (a test holds every event type to the dump).
        """
        values = dict(self.__dict__)
        for name in self._by_name:
            values[name] = _STAGE_NAMES[values[name]]
        for name in self._nested:
            if isinstance(values[name], BaseModel):
                values[name] = values[name].model_dump()
        return values

    def canonical_text(self) -> str:
        """The text a format-1 run stores and hashes: ``canonical_json(model_dump())``."""
        return canonical_string_keyed(self.json_values())

    def jcs_text(self) -> str:
        """The text a format-2 run stores and hashes: RFC 8785 of the same values."""
        return jcs_text(self.json_values())

    @model_validator(mode="before")
    @classmethod
    def _decode_special_floats(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        decoded = data
        for name in cls._real_fields:
            value = data.get(name)
            kind = type(value)
            if kind is float or value is None:  # nearly every value: nothing to do
                continue
            if kind is str:
                new: object = _special(name, value)
            elif kind is dict and value:  # free-named metrics: their values are reals
                new = _decoded_values(name, value)
                if new is value:
                    continue
            else:
                continue
            if decoded is data:
                decoded = dict(data)
            decoded[name] = new
        return decoded


class _Decided(Payload):
    """An effect of a policy's decision carries its id (`PolicyDecided.decision_id`).

    So "which moves trace back to decision D" (DOMAIN question 13) is one SQL
    join; None when nobody's decision caused the event (a gate, a ramp, a user's
    own call).
    """

    schema_version: ClassVar[int] = 2
    decision_id: str | None = None


class _Causal(_Decided):
    """Optional identity of the decision behind a move (question 13)."""

    morphology_proposal_id: str | None = None
    morphology_verdict_id: str | None = None
    morphology_mutation_id: str | None = None
    rng_stream: str | None = None
    rng_seed: int | None = None


#: The validation context of a payload read back from the ledger.
STORED = "stored"
_READ = {STORED: True}


def _wide(value: object, convert: Callable[[int], object]) -> object:
    """`value` with each integer beyond ±(2^53 - 1), at any depth, passed through `convert`."""
    if type(value) is int and not -EXACT_INT <= value <= EXACT_INT:
        return convert(value)
    if isinstance(value, dict):
        return {key: _wide(item, convert) for key, item in value.items()}
    if isinstance(value, list):
        return [_wide(item, convert) for item in value]
    return value


class RunParent(BaseModel):
    """Where a forked run leaves its parent: the parent's run, the epoch, and the
    position of the checkpoint (`CheckpointSaved`) it was restored from."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    run_id: str
    epoch: Count
    position: Count
    checkpoint: Sha256


class RunStarted(Payload):
    schema_version: ClassVar[int] = 3
    name: str
    seed: int
    config: dict[str, JsonValue] = Field(default_factory=dict)
    kasmina_version: str
    python_version: str
    torch_version: str | None = None
    platform: str = ""
    #: What re-execution needs besides the config: the torch thread count and
    #: deterministic-algorithms flag at the start, the dataset's name and a
    #: digest of its bytes, and the host network's architecture name.
    num_threads: int | None = None
    deterministic: bool | None = None
    dataset: str | None = None
    dataset_digest: str | None = None
    host: str | None = None
    #: Processes writing the run, and which rank writes each slot's lifecycle
    #: (slot id -> rank; a slot not named is written by rank 0). Fixed here,
    #: at the start, so every stream has exactly one writer.
    world_size: Annotated[int, Field(ge=1)] = 1
    slot_writers: dict[str, Count] = Field(default_factory=dict)
    #: A run started by `kasmina run`: the program (``path.py:function`` or
    #: ``package.module:function``), its arguments, a digest of its code (a git
    #: commit and a digest of uncommitted changes, or the source's SHA-256), and
    #: the machine beyond the versions above (CUDA, cuDNN, the device).
    entry_point: str | None = None
    argv: list[str] = Field(default_factory=list)
    code: dict[str, str] = Field(default_factory=dict)
    environment: dict[str, JsonValue] = Field(default_factory=dict)
    #: A run forked from another (`kasmina run --fork RUN@EPOCH`): its state at
    #: the start is the parent's at that epoch, folded from the parent's log.
    parent: RunParent | None = None

    @field_validator("config", "environment", mode="after")
    @classmethod
    def _wide_integers(
        cls, value: dict[str, JsonValue], info: ValidationInfo
    ) -> dict[str, JsonValue]:
        """Free-form values keep an integer beyond ±(2^53 - 1) as its decimal text.

        Canonical JSON (RFC 8785) numbers are doubles, which cannot hold such
        an integer exactly; a typed field refuses one, but a config is the
        user's own and a 64-bit seed in it should not stop a run. Read back,
        such an integer can only be a double that JCS or JSONB wrote out in
        full (``1e20`` as ``100000000000000000000``), and is one again.
        """
        stored = bool(info.context and info.context.get(STORED))
        return cast(dict[str, JsonValue], _wide(value, float if stored else str))


class EpochCompleted(Payload):
    schema_version: ClassVar[int] = 2
    val_accuracy: Real | None = None
    val_loss: Real | None = None
    train_accuracy: Real | None = None
    train_loss: Real | None = None
    host_grad_norm: Real | None = None
    param_digests: dict[str, str] = Field(default_factory=dict)
    metrics: Metrics = Field(default_factory=dict)


class SeedGerminated(_Causal):
    slot_id: str
    env_id: int = -1
    blueprint_id: str
    params: Count
    alpha: Real = 0.0
    blend_tempo_epochs: Count = 5
    alpha_curve: str = "LINEAR"
    init_seed: int | None = None
    #: The alpha the blending ramp will aim for once the seed reaches BLENDING.
    alpha_target: Real = 1.0


class SeedStageChanged(_Causal):
    schema_version: ClassVar[int] = 3
    slot_id: str
    env_id: int = -1
    from_stage: Stage
    to_stage: Stage
    trigger: Trigger
    alpha: Real
    accuracy: Real | None = None
    accuracy_delta: Real = 0.0
    epochs_in_stage: Count = 0
    grad_ratio: Real = 0.0
    has_vanishing: bool = False
    has_exploding: bool = False
    alpha_curve: str = "LINEAR"


class SeedGateEvaluated(_Decided):
    slot_id: str
    env_id: int = -1
    gate: GateName
    passed: bool
    score: Real
    target_stage: Stage
    checks_passed: list[str] = Field(default_factory=list)
    checks_failed: list[str] = Field(default_factory=list)
    message: str = ""
    #: "command" for a policy's request, "gate" for the slot's own auto-advance.
    trigger: Trigger = "command"


class AlphaTargetSet(_Decided):
    slot_id: str
    alpha_start: Real
    target: Real
    steps: Count
    curve: str
    steepness: Real
    mode: AlphaMode
    algorithm: str = "ADD"
    initiator: Initiator = "policy"
    prune_ramp: bool = False
    #: Why a prune ramp was scheduled; its SeedPruned carries the same reason.
    reason: str | None = None


class SeedFossilized(_Causal):
    slot_id: str
    env_id: int = -1
    blueprint_id: str
    improvement: Real
    params_added: Count
    alpha: Real
    epochs_total: Count
    counterfactual: Real | None = None
    blending_delta: Real | None = None
    param_digest: str | None = None


class SeedPruned(_Causal):
    slot_id: str
    env_id: int = -1
    reason: str
    blueprint_id: str | None = None
    improvement: Real = 0.0
    auto_pruned: bool = False
    epochs_total: Count = 0
    counterfactual: Real | None = None
    blending_delta: Real | None = None
    initiator: Initiator = "policy"
    #: True when the prune completes a scheduled fade-out (schedule_prune).
    scheduled: bool = False


class CacheEvicted(Payload):
    cache: str
    evicted: Annotated[int, Field(ge=1)]
    reason: EvictionReason
    size_before: Count
    size_after: Count


class MemoryReleased(Payload):
    slot_id: str
    blocks: Count
    bytes: Count | None = None


class EventsDropped(Payload):
    count: Annotated[int, Field(ge=1)]
    dropped_type: str = "SeedTelemetrySampled"
    first_epoch: int | None = None
    last_epoch: int | None = None


class SeedTelemetrySampled(Payload):
    schema_version: ClassVar[int] = 2
    droppable: ClassVar[bool] = True
    slot_id: str
    stage: Stage
    alpha: Real
    alpha_target: Real | None = None
    alpha_mode: AlphaMode | None = None
    accuracy: Real | None = None
    accuracy_delta: Real | None = None
    counterfactual: Real | None = None
    epochs_in_stage: Count = 0
    grad_norm: Real | None = None
    grad_health: Real | None = None
    has_vanishing: bool | None = None
    has_exploding: bool | None = None
    metrics: Metrics = Field(default_factory=dict)


PolicyAction: TypeAlias = Literal[
    "WAIT", "GERMINATE", "SET_ALPHA_TARGET", "PRUNE", "FOSSILIZE", "ADVANCE"
]


class PolicyDecided(Payload):
    """A policy's decision for one slot, recorded before (and with) its effects.

    The effects carry ``decision_id``. A decision the lifecycle would not
    carry out (an illegal move, a ramp underway, a gate that says no) is
    recorded with ``accepted`` false and the reason in ``refusal``; a gate's
    refusal has its verdict recorded beside it as the decision's effect.
    """

    decision_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    policy: str
    action: PolicyAction
    slot_id: str
    arguments: dict[str, JsonValue] = Field(default_factory=dict)
    reason: str = ""
    accepted: bool = True
    refusal: str | None = None


class CheckpointSaved(Payload):
    """A checkpoint of the program's state at the end of an epoch, held in the artifact store.

    The ledger holds what proves the file: its SHA-256 and size. The file's
    place in the store follows from the digest alone (``path`` is that place,
    relative to the store), so a path read back from the database is never
    trusted to name a file.
    """

    epoch: Count
    digest: Sha256
    bytes: Count
    path: str


class RunResumed(Payload):
    """A run continued by a new attempt after its process died.

    The events recorded after ``abandoned_after_position`` and before this
    one belong to the abandoned attempt: they stay in the log, and the fold,
    the views and ``history`` treat them as superseded. ``from_epoch`` is the
    epoch of the checkpoint the attempt restored (None: it started over).
    """

    from_epoch: Count | None
    attempt: Annotated[int, Field(ge=2)]
    abandoned_after_position: Count
    checkpoint: Sha256 | None = None


class SealSignature(BaseModel):
    """An Ed25519 signature of a run's seal (`kasmina.signing.seal_message`) and its key."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    public_key: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    value: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{128}$")]


class RunFinished(Payload):
    schema_version: ClassVar[int] = 2
    status: RunStatus = "completed"
    #: stream id -> hash of its last event before this one, so truncation shows.
    seal: dict[str, str]
    #: Made when the writer has a signing key (``KASMINA_SIGNING_KEY``): only the
    #: key's holder can seal the run, so a forger cannot cut it and seal it again.
    signature: SealSignature | None = None


_BUILT_IN: tuple[type[Payload], ...] = (
    RunStarted,
    EpochCompleted,
    SeedGerminated,
    SeedStageChanged,
    SeedGateEvaluated,
    AlphaTargetSet,
    SeedFossilized,
    SeedPruned,
    CacheEvicted,
    MemoryReleased,
    EventsDropped,
    SeedTelemetrySampled,
    PolicyDecided,
    CheckpointSaved,
    RunResumed,
    RunFinished,
)
_REGISTRY: dict[str, type[Payload]] = {cls.__name__: cls for cls in _BUILT_IN}
#: Every event type this process can write and decode: built-in and registered (a live view).
EVENT_TYPES: Mapping[str, type[Payload]] = MappingProxyType(_REGISTRY)
BUILT_IN_TYPES = frozenset(_REGISTRY)
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z0-9]{0,63}")

P = TypeVar("P", bound=type[Payload])


def register(cls: P) -> P:
    """Add a user's `Payload` subclass as an event type (usable as a class decorator).

    Its events are validated, stored, hashed and verified like the built-in
    ones; the event type is the class name. A process that lacks the class
    still reads them, as `RawPayload`. Registering the same class again is a
    no-op; another class under a name already taken is refused, so an event
    type never changes meaning within a process.
    """
    if not isinstance(cls, type) or not issubclass(cls, Payload) or cls is Payload:
        raise EventError(f"register() takes a subclass of kasmina.events.Payload, got {cls!r}")
    name = cls.__name__
    if not _TYPE_NAME.fullmatch(name):
        raise EventError(
            f"an event type is a CamelCase name of letters and digits (at most 64), got {name!r}"
        )
    known = _REGISTRY.get(name)
    if known is cls:
        return cls
    if known is not None:
        what = "a built-in event type" if name in BUILT_IN_TYPES else "already registered"
        raise EventError(f"event type {name!r} is {what}; choose another class name")
    if issubclass(cls, RawPayload):
        raise EventError("RawPayload stands for unknown types and cannot be registered")
    _REGISTRY[name] = cls
    return cls


class RawPayload(Payload):
    """The payload of an event whose type this process does not know, as stored.

    Fields are the stored JSON's keys (special floats stay the strings
    "NaN", "Infinity"); it cannot be appended again, because it is not a
    registered type.
    """

    model_config = ConfigDict(extra="allow", frozen=True, strict=False)

    def data(self) -> dict[str, Json]:
        return dict(self.model_extra or {})

    def json_values(self) -> dict[str, object]:
        return dict(self.model_extra or {})


JsonObject: TypeAlias = dict[str, Json]
Upcaster: TypeAlias = Callable[[JsonObject], JsonObject]


def _stage_changed_v1_to_v2(data: JsonObject) -> JsonObject:
    """v1 stored stages as esper integers and had no trigger."""
    out = dict(data)
    for key in ("from_stage", "to_stage"):
        value = out.get(key)
        if isinstance(value, int):
            out[key] = parse_stage(value).name
    out.setdefault("trigger", "command")
    return out


def _metrics_v1_to_v2(data: JsonObject) -> JsonObject:
    """v1 had no free-named metrics."""
    out = dict(data)
    out.setdefault("metrics", {})
    return out


def _no_program(data: JsonObject) -> JsonObject:
    """Before `kasmina run`, no run named the program that made it."""
    out = dict(data)
    out.setdefault("entry_point", None)
    return out


def _unsigned(data: JsonObject) -> JsonObject:
    """Before signing keys, no seal was signed."""
    out = dict(data)
    out.setdefault("signature", None)
    return out


def _no_parent(data: JsonObject) -> JsonObject:
    """Before `kasmina run --fork`, no run had a parent."""
    out = dict(data)
    out.setdefault("parent", None)
    return out


def _no_decision(data: JsonObject) -> JsonObject:
    """Before `PolicyDecided`, no effect named the decision behind it."""
    out = dict(data)
    out.setdefault("decision_id", None)
    return out


#: (event_type, from_version) -> function giving the next version's payload.
UPCASTERS: Mapping[tuple[str, int], Upcaster] = {
    ("SeedStageChanged", 1): _stage_changed_v1_to_v2,
    ("SeedStageChanged", 2): _no_decision,
    ("SeedGerminated", 1): _no_decision,
    ("SeedGateEvaluated", 1): _no_decision,
    ("AlphaTargetSet", 1): _no_decision,
    ("SeedFossilized", 1): _no_decision,
    ("SeedPruned", 1): _no_decision,
    ("RunStarted", 1): _no_program,
    ("RunStarted", 2): _no_parent,
    ("EpochCompleted", 1): _metrics_v1_to_v2,
    ("SeedTelemetrySampled", 1): _metrics_v1_to_v2,
    ("RunFinished", 1): _unsigned,
}


def payload_class(event_type: str) -> type[Payload]:
    try:
        return EVENT_TYPES[event_type]
    except KeyError:
        raise UnknownEventType(event_type) from None


def _validation_line(event_type: str, exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<payload>'}: {err['msg']}"
        for err in exc.errors()
    )
    return f"invalid {event_type} payload: {problems}"


def upcast(event_type: str, schema_version: int, data: Mapping[str, Json]) -> JsonObject:
    """A stored payload's JSON brought to the current schema version (not validated)."""
    current = data if isinstance(data, dict) else dict(data)
    target = payload_class(event_type).schema_version
    if schema_version > target:
        raise PayloadInvalid(
            f"{event_type} schema version {schema_version} is newer than this "
            f"kasmina understands ({target})"
        )
    for version in range(schema_version, target):
        step = UPCASTERS.get((event_type, version))
        if step is None:
            raise PayloadInvalid(f"no upcaster for {event_type} v{version} -> v{version + 1}")
        current = step(current)
    return current


def read_payload(event_type: str, schema_version: int, data: Mapping[str, Json]) -> Payload:
    """A stored payload as a model: its class if this process knows the type, else raw.

    A payload stored in its type's current schema version, as nearly every
    one is, goes straight to the compiled validator: the upcast and
    `model_validate`'s own layers cost a read a tenth of the validation.
    """
    cls = _REGISTRY.get(event_type)
    if cls is None:
        return RawPayload.model_validate(data, context=_READ)
    if schema_version != cls.schema_version or type(data) is not dict:
        return load_payload(event_type, schema_version, data, stored=True)
    return _validated(cls, event_type, data, _READ)


def load_payload(
    event_type: str, schema_version: int, data: Mapping[str, Json], *, stored: bool = False
) -> Payload:
    """Validate a payload, upcasting an old schema version to the current one.

    `stored`: read back from the ledger, rather than new input to record.
    """
    cls = payload_class(event_type)
    current = upcast(event_type, schema_version, data)
    return _validated(cls, event_type, current, _READ if stored else None)


def _validated(
    cls: type[Payload], event_type: str, data: object, context: dict[str, bool] | None
) -> Payload:
    """`data` as a `cls` through its compiled validator, or one `PayloadInvalid` line."""
    try:
        return cast(Payload, cls.__pydantic_validator__.validate_python(data, context=context))
    except ValidationError as exc:
        raise PayloadInvalid(_validation_line(event_type, exc)) from None


class NewEvent(NamedTuple):
    """An event on its way into the ledger; built only by :func:`make_event`.

    A named tuple rather than a frozen dataclass: just as immutable, and
    several times cheaper to build, which matters once per recorded event.
    """

    event_id: str
    run_id: str
    stream_id: str
    payload: Payload
    epoch: int | None
    seed_id: str | None
    #: The version the writer expects to take; None lets the ledger assign it.
    version: int | None
    #: The writer's rank in a distributed run; None for a run of one process.
    rank: int | None = None

    @property
    def event_type(self) -> str:
        return type(self.payload).__name__

    @property
    def schema_version(self) -> int:
        return type(self.payload).schema_version


def make_event(
    payload: Payload,
    *,
    run_id: str,
    stream_id: str,
    epoch: int | None = None,
    seed_id: str | None = None,
    event_id: str | None = None,
    version: int | None = None,
    rank: int | None = None,
) -> NewEvent:
    """The one place an envelope is built (it runs once per recorded event)."""
    if type(payload).__name__ not in EVENT_TYPES:
        raise UnknownEventType(type(payload).__name__)
    if not run_id or not stream_id:
        raise PayloadInvalid("an event needs a run_id and a stream_id")
    if "\x00" in f"{run_id}{stream_id}{seed_id}{event_id}":
        raise PayloadInvalid("run_id, stream_id, seed_id and event_id may not contain NUL")
    if version is not None and version < 1:
        raise PayloadInvalid(f"versions start at 1, got {version}")
    if rank is not None and (type(rank) is not int or rank < 0):
        raise PayloadInvalid(f"a rank is a non-negative integer, got {rank!r}")
    return NewEvent(
        event_id or new_event_id(), run_id, stream_id, payload, epoch, seed_id, version, rank
    )


def event_from_dict(
    event_type: str,
    payload: Mapping[str, Json],
    *,
    run_id: str,
    stream_id: str,
    epoch: int | None = None,
    seed_id: str | None = None,
    event_id: str | None = None,
    version: int | None = None,
) -> NewEvent:
    """Validate raw input (CLI, imports, benchmarks) into an event."""
    payload_model = load_payload(event_type, payload_class(event_type).schema_version, payload)
    return make_event(
        payload_model,
        run_id=run_id,
        stream_id=stream_id,
        epoch=epoch,
        seed_id=seed_id,
        event_id=event_id,
        version=version,
    )


@dataclass(slots=True)
class _EventFields:
    """`StoredEvent`'s fields, in a class that sets them plainly when built.

    A frozen dataclass sets each field through ``object.__setattr__``, which
    cost a read of a whole run a fifth of its time; `StoredEvent` is this
    class with assignment refused once built.
    """

    position: int
    event_id: str
    run_id: str
    stream_id: str
    version: int
    event_type: str
    schema_version: int
    epoch: int | None
    seed_id: str | None
    recorded_at: datetime
    prev_hash: str
    hash: str
    rank: int | None = None
    #: The payload as stored (a JSON object), in its schema version.
    data: Mapping[str, Json] = field(default_factory=dict, compare=False)
    _decoded: Payload | None = field(default=None, init=False, repr=False, compare=False)


class StoredEvent(_EventFields):
    """An event as read back from the ledger, its payload upcast to the current model.

    The payload is validated into its model when first read, not when the
    event is: a reader after a position, a stream's last event or one type of
    event pays nothing for the payloads it never looks at. Two events are
    equal when their envelopes are: the hash covers the payload. Immutable
    and hashable like a frozen dataclass.
    """

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> StoredEvent:
        built = _EventFields(*args, **kwargs)
        built.__class__ = StoredEvent  # same slots: the fields, now read-only
        return cast(StoredEvent, built)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Built by `__new__`."""

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __hash__(self) -> int:
        return hash((self.run_id, self.position, self.hash))

    def __reduce__(self) -> tuple[type[StoredEvent], tuple[object, ...]]:
        return StoredEvent, (*(getattr(self, f.name) for f in fields(self) if f.init),)

    @property
    def payload(self) -> Payload:
        """The payload as its model (`read_payload`); `PayloadInvalid` if it does not fit."""
        decoded = self._decoded
        if decoded is None:
            decoded = read_payload(self.event_type, self.schema_version, self.data)
            object.__setattr__(self, "_decoded", decoded)  # a cache, not a field
        return decoded

    @property
    def slot_id(self) -> str | None:
        prefix = SLOT_PREFIX
        return self.stream_id[len(prefix) :] if self.stream_id.startswith(prefix) else None


def json_schemas() -> dict[str, JsonObject]:
    """JSON Schema of every payload, keyed by event type."""
    out: dict[str, JsonObject] = {}
    for name, cls in EVENT_TYPES.items():
        schema = cls.model_json_schema(mode="validation")
        schema["x-schema-version"] = cls.schema_version
        schema["x-droppable"] = cls.droppable
        out[name] = schema  # pydantic's schema is plain JSON
    return out


__all__ = [
    "BUILT_IN_TYPES",
    "EVENT_TYPES",
    "RUN_STREAM",
    "UPCASTERS",
    "AlphaTargetSet",
    "CacheEvicted",
    "EpochCompleted",
    "EventsDropped",
    "MAX_METRICS",
    "JsonObject",
    "MetricName",
    "Metrics",
    "MemoryReleased",
    "NewEvent",
    "PolicyAction",
    "PolicyDecided",
    "RunParent",
    "SealSignature",
    "RunResumed",
    "CheckpointSaved",
    "Payload",
    "RawPayload",
    "Real",
    "RunFinished",
    "RunStarted",
    "SeedFossilized",
    "SeedGateEvaluated",
    "SeedGerminated",
    "SeedPruned",
    "SeedStageChanged",
    "SeedTelemetrySampled",
    "Stage",
    "StoredEvent",
    "event_from_dict",
    "json_schemas",
    "load_payload",
    "make_event",
    "memory_stream",
    "rank_stream",
    "read_payload",
    "register",
    "stream_writer",
    "new_event_id",
    "payload_class",
    "slot_stream",
]
