"""A name -> class registry shared by fusions, poolers, pair architectures and heads.

Part of the model code copied next to a saved model for `trust_remote_code`: imports the standard library only.
"""

from collections.abc import Callable


class Registry(dict):
    """Maps a name (as written in `MetaEmbedConfig`) to the class that implements it.

    Registering a name twice raises (peft's behaviour, not timm's warning), so two blocks can never shadow each other.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator adding `cls` under `name`."""

        def add(cls: type) -> type:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self[name].__name__}")
            self[name] = cls
            return cls

        return add

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self)

    def check(self, name: object, field: str | None = None) -> str:
        """Return `name` if registered, else raise a `ValueError` that lists the valid names."""
        if name not in self:
            where = f" (config field `{field}`)" if field else ""
            raise ValueError(f"unknown {self.kind} {name!r}{where}; choose one of: {', '.join(self.names())}")
        return name

    def get_class(self, name: str) -> type:
        """The class registered under `name`."""
        return self[self.check(name)]
