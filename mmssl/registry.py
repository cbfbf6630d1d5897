"""Name → class registries for every pluggable part of mmssl.

``@OBJECTIVES.register("simclr")`` on a class makes ``OBJECTIVES.build("simclr", temperature=0.2)``
work. ``build`` checks keyword names and simple types against the constructor's signature, so a typo
in a config fails before any work starts, naming the bad key and listing the accepted ones. A
constructor's ``**kwargs`` forwarded to its base reads as the base's options (``parameters``).
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from mmssl.errors import ConfigError

if TYPE_CHECKING:  # what each registry builds (for type checkers only: these modules sit above this one)
    from mmssl.augment.base import Augmentation
    from mmssl.data.base import DatasetSplits
    from mmssl.encoders.base import Encoder
    from mmssl.objectives.base import Objective
    from mmssl.rl.intrinsic.base import IntrinsicReward

#: what ``Registry.build`` returns (the base class of the registry's entries)
T = TypeVar("T")
#: a registered class or factory, returned unchanged by ``register``
C = TypeVar("C", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Callable[..., Any]
    modalities: tuple[str, ...]
    sequence: bool

    @property
    def doc(self) -> str:
        """First line of the docstring."""
        text = inspect.getdoc(self.obj) or ""
        return text.strip().splitlines()[0] if text.strip() else ""


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return f"{hint}available: {', '.join(sorted(options))}"


_SIMPLE_TYPES = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


def _type_ok(value: object, annotation: Any) -> bool:
    """True when ``value`` plausibly fits ``annotation``; unknown annotations are accepted."""
    if annotation is inspect.Parameter.empty or annotation is typing.Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation in _SIMPLE_TYPES:
        if annotation is not bool and isinstance(value, bool):
            return False
        return isinstance(value, _SIMPLE_TYPES[annotation])
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        from collections.abc import Sequence

        return isinstance(value, Sequence) and not isinstance(value, str)
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    return True


class Registry(Generic[T]):
    """A named collection of buildable classes (or factory functions) that make ``T``s."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, modalities: tuple[str, ...] | None = None,
                 sequence: bool = False) -> Callable[[C], C]:
        """Class decorator: ``@REG.register("name", modalities=("image",))``; returns the class unchanged.

        ``modalities`` (what the entry reads) and ``sequence`` (whether it reads (B, T, ...) sequences) are
        declared here, once, and set on the class; a class registered without them keeps what it inherits.
        """

        def decorator(obj: C) -> C:
            old = self._entries.get(name)
            if old is not None and _qualname(old.obj) != _qualname(obj):  # re-importing a module is fine
                raise ConfigError(f"{self.kind} {name!r} is registered twice ({_qualname(old.obj)} and {_qualname(obj)})")
            mods = modalities if modalities is not None else tuple(getattr(obj, "modalities", ()))
            self._entries[name] = Entry(name, obj, tuple(mods), sequence or bool(getattr(obj, "sequence", False)))
            if inspect.isclass(obj):
                setattr(obj, "registry_name", name)  # noqa: B010  (any class: not an attribute it declares)
                # declared once, in the decorator: the class reads the same facts (Objective.resolve_modality)
                if modalities is not None:
                    setattr(obj, "modalities", tuple(modalities))  # noqa: B010
                if sequence:
                    setattr(obj, "sequence", True)  # noqa: B010
            return obj

        return decorator

    def __contains__(self, name: str) -> bool:
        _import_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        _import_builtins()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return [e.name for e in self]

    def get(self, name: str) -> Entry:
        _import_builtins()
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; {_suggest(str(name), list(self._entries))}")
        return self._entries[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> T:
        """Instantiate ``name`` after checking ``kwargs`` against its signature."""
        entry = self.get(name)
        self.check_kwargs(name, kwargs, positional=len(args))
        built: T = entry.obj(*args, **kwargs)
        return built

    def parameters(self, name: str) -> list[inspect.Parameter]:
        """The constructor parameters of ``name`` as ``build`` reads them (see ``parameters``)."""
        return parameters(self.get(name).obj)

    def check_kwargs(self, name: str, kwargs: dict[str, Any], positional: int = 0) -> None:
        params = self.parameters(name)
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return
        accepted = [p.name for p in params[positional:] if p.kind in _KEYWORD]
        for key, value in kwargs.items():
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"{self.kind} {name!r} has no option {key!r}{hint}; accepted: {', '.join(accepted) or 'none'}"
                )
            annotation = next(p.annotation for p in params if p.name == key)
            if not _type_ok(value, annotation):
                raise ConfigError(
                    f"{self.kind} {name!r} option {key!r} must be {_type_name(annotation)}, got {value!r}"
                )
        missing = [
            p.name
            for p in params[positional:]
            if p.default is p.empty and p.kind in _KEYWORD and p.name not in kwargs
        ]
        if missing:
            raise ConfigError(f"{self.kind} {name!r} needs option(s) {', '.join(missing)}")


_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def parameters(obj: Callable) -> list[inspect.Parameter]:
    """The parameters of a registered class's constructor (``self`` left out) or of a factory, with their
    annotations resolved to types (``inspect.Parameter.empty`` where a forward reference does not resolve).

    A class constructor's ``**kwargs`` is read as forwarded to its base (``super().__init__(…, **kwargs)``,
    as every intrinsic reward forwards ``**common`` to ``IntrinsicReward``): the next constructor up the
    MRO adds, as keyword-only, the parameters the class does not name itself, and so on while each
    forwards ``**kwargs`` again. A ``**kwargs`` that reaches no concrete signature (a factory's, or a
    pass-through ``(*args, **kwargs)`` such as ``nn.Module``'s) is kept: any key is accepted.
    """
    if not inspect.isclass(obj):
        return _resolved(obj)
    out: list[inspect.Parameter] = []
    inits = [vars(klass)["__init__"] for klass in obj.__mro__ if "__init__" in vars(klass)]
    for depth, init in enumerate(inits):
        own = _resolved(init)[1:]  # without self
        if all(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in own):
            break  # a pass-through constructor: the **kwargs stays open
        if depth == 0:
            out = own
        else:
            named = {p.name for p in out}
            out += [p.replace(kind=p.KEYWORD_ONLY) for p in own if p.kind in _KEYWORD and p.name not in named]
        if not any(p.kind is p.VAR_KEYWORD for p in own):
            return [p for p in out if p.kind is not p.VAR_KEYWORD]
    return [p for p in out if p.kind is not p.VAR_KEYWORD] + [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]


def _resolved(fn: Callable) -> list[inspect.Parameter]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: read as (*args, **kwargs)
        return [inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
                inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    hints = _hints(fn)
    return [p.replace(annotation=hints.get(p.name, inspect.Parameter.empty)) for p in sig.parameters.values()]


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolved forward references: skip type checks rather than fail
        return {}


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


ENCODERS: Registry[Encoder] = Registry("encoder")
OBJECTIVES: Registry[Objective] = Registry("objective")
AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")
DATASETS: Registry[DatasetSplits] = Registry("dataset")  # entries are builder functions
INTRINSIC_REWARDS: Registry[IntrinsicReward] = Registry("intrinsic reward")

REGISTRIES: dict[str, Registry[Any]] = {
    "encoders": ENCODERS,
    "objectives": OBJECTIVES,
    "augmentations": AUGMENTATIONS,
    "datasets": DATASETS,
    "intrinsic_rewards": INTRINSIC_REWARDS,
}

_BUILTIN_MODULES = (
    "mmssl.encoders",
    "mmssl.augment",
    "mmssl.objectives",
    "mmssl.data",
    "mmssl.rl.aux",
    "mmssl.rl.intrinsic",
)
_imported = False


def _import_builtins() -> None:
    """Import the modules that register built-in entries (once, lazily, so importing mmssl is cheap)."""
    global _imported
    if _imported:
        return
    _imported = True
    import importlib
    import importlib.util

    for module in _BUILTIN_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    from mmssl.plugins import load_entry_points

    load_entry_points()
