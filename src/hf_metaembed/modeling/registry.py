"""Registries of interchangeable blocks (fusions, poolers, unit encoders, pair architectures, heads, losses) and what
every block declares about itself.

A block is one class registered under a name, selected by one config field (`fusion="dme"`), that declares:

- `config_fields`: the settings it reads, with their defaults; `MetaEmbedConfig` fills them in, accepts them as
  keyword arguments, saves and reloads them, and lists them on the model card.
- `legacy_config`: for settings added after release 0.1, the values that reproduce 0.1's behaviour; a config saved by
  0.1 (which lacks them) gets these instead of the new defaults, so old checkpoints compute what they computed.
- `check_config(config, dims)`: its own validation (head counts included), run before any layer is built.
- `config_aliases`: other names a setting is accepted under (`{"aggregation_method": "side_combine"}`, the study's
  reference's name), as keyword arguments and in hand-written configs; the config stores the setting once, under
  its own name.
- `card_text`: one sentence for the model card.

Part of the model code copied next to a saved model for `trust_remote_code`: imports the standard library only.
"""

from collections.abc import Callable
from typing import Any, ClassVar


class Block:
    """What a registered block declares (see the module docstring). Mixed into the block's `nn.Module` class."""

    config_fields: ClassVar[dict[str, Any]] = {}
    legacy_config: ClassVar[dict[str, Any]] = {}
    config_aliases: ClassVar[dict[str, str]] = {}
    card_text: ClassVar[str] = ""

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        """Raise a `ValueError` naming the field, its value and the valid choices for an impossible setting.

        `dims` are the backbones' hidden sizes.
        """

    @classmethod
    def settings(cls, config) -> dict[str, Any]:
        """This block's settings as the config holds them (for the model card)."""
        return {field: getattr(config, field) for field in cls.config_fields}


class Registry(dict):
    """Maps a name (as written in the config field `field`) to the block class that implements it.

    Registering a name twice raises (peft's behaviour, not timm's warning), so two blocks can never shadow each other;
    so does a block that declares a config field another block declares with a different default.
    """

    def __init__(self, kind: str, field: str) -> None:
        super().__init__()
        self.kind = kind
        self.field = field

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator adding `cls` under `name` (usable from any module: a user's own blocks work the same)."""

        def add(cls: type) -> type:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self[name].__name__}")
            declared = getattr(cls, "config_fields", {})
            for registry in REGISTRIES:
                for other_name, other in registry.items():
                    for field, default in declared.items():
                        if field in other.config_fields and other.config_fields[field] != default:
                            raise ValueError(
                                f"{self.kind} {name!r} declares config field {field!r} with default {default!r}, but "
                                f"{registry.kind} {other_name!r} already declares it with "
                                f"{other.config_fields[field]!r}; give the field another name"
                            )
            for alias, field in getattr(cls, "config_aliases", {}).items():
                if block_config_aliases().get(alias, field) != field:
                    raise ValueError(
                        f"{self.kind} {name!r} declares {alias!r} as another name for {field!r}, but it already "
                        f"names {block_config_aliases()[alias]!r}; choose another alias"
                    )
            self[name] = cls
            cls.registered_name = name
            return cls

        return add

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self)

    def check(self, name: object, field: str | None = None) -> str:
        """Return `name` if registered, else raise a `ValueError` that lists the valid names."""
        if name not in self:
            where = f" (config field `{field or self.field}`)"
            raise ValueError(f"unknown {self.kind} {name!r}{where}; choose one of: {', '.join(self.names())}")
        return name

    def get_class(self, name: str) -> type:
        """The class registered under `name`."""
        return self[self.check(name)]


REGISTRIES: list[Registry] = []


def new_registry(kind: str, field: str) -> Registry:
    """A registry whose blocks' config fields `MetaEmbedConfig` knows about."""
    registry = Registry(kind, field)
    REGISTRIES.append(registry)
    return registry


def block_config_fields(legacy: bool = False) -> dict[str, Any]:
    """Every config field declared by a registered block, with its default (or its release-0.1 value)."""
    fields: dict[str, Any] = {}
    for registry in REGISTRIES:
        for block in registry.values():
            fields.update(block.config_fields)
    if legacy:
        for registry in REGISTRIES:
            for block in registry.values():
                fields.update(block.legacy_config)
    return fields


def block_config_aliases() -> dict[str, str]:
    """Every alias a registered block declares for one of its settings, mapped to the setting's name."""
    aliases: dict[str, str] = {}
    for registry in REGISTRIES:
        for block in registry.values():
            aliases.update(block.config_aliases)
    return aliases


def resolve_config_aliases(settings: dict[str, Any]) -> None:
    """Rename, in place, each alias in `settings` (keyword arguments of a config) to the setting it names; the alias
    and the setting given with different values is a `ValueError` naming both."""
    for alias, field in block_config_aliases().items():
        if alias not in settings:
            continue
        value = settings.pop(alias)
        if field in settings and settings[field] != value:
            raise ValueError(
                f"{alias}={value!r} and {field}={settings[field]!r} name the same setting ({alias} is another name "
                f"for {field}); give one of them"
            )
        settings[field] = value


def check_choice(value: Any, choices: tuple, field: str) -> None:
    """Raise a `ValueError` for a `field` whose value is not one of `choices`."""
    if value not in choices:
        raise ValueError(f"unknown {field} {value!r}; choose one of: {', '.join(map(str, choices))}")


def check_heads(field: str, heads: Any, size: int | None, what: str, even: bool = False) -> None:
    """The one rule for attention head counts: a positive integer dividing `size` (and even where `even`: half the
    heads of a ConvBERT layer attend, half convolve). The error lists the counts that work. `size` is None while the
    config lists no backbones yet (nothing to divide)."""
    if size is None:
        return
    valid = isinstance(heads, int) and not isinstance(heads, bool) and heads >= 1 and size % heads == 0
    if valid and (not even or heads % 2 == 0):
        return
    choices = [h for h in range(1, min(size, 32) + 1) if size % h == 0 and (not even or h % 2 == 0)]
    rule = "be even (half the heads attend, half convolve) and divide" if even else "divide"
    raise ValueError(
        f"{field}={heads} must {rule} the {what} {size}; choose one of: {', '.join(map(str, choices)) or 'none'}"
    )
