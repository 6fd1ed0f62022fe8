"""The generate options, each declared once: name, type, default, range or choices, help.

Everything else comes from `OPTIONS`: the `image-to-3d generate` flags (`add_cli_arguments`), the
query parameters of `POST /v1/generate` and so its OpenAPI schema (`remote.server.app`), the
arguments of `modal run remote/modal_app.py` (`entrypoint_signature`), `GenerateOptions.validate()`
(`check`), and the option table in docs/api.md (`markdown_table`; a test compares the two, and
`python -m remote.options` prints the table). A test also holds the add-on's property ranges
(blender_addon/properties.py) to these.

Adding an option is one `Option(...)` entry below plus its field on `GenerateOptions` (a test
checks that the two agree). This module imports only the standard library.
"""

from __future__ import annotations

import argparse
import inspect
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Optional

from remote.errors import InvalidOptionError


@dataclass(frozen=True)
class Option:
    """One per-request option.

    `minimum`/`maximum` are inclusive bounds, `above` an exclusive lower bound (the value must also
    be finite); `choices` lists the only values allowed. `optional`: None ("left out") is allowed
    and is the default. `help` is the short phrase of the CLI, the OpenAPI schema and the Modal
    entry; `meaning` the longer sentence of docs/api.md's table.
    """

    name: str
    type: type
    default: Any
    help: str
    meaning: str
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    choices: tuple[Any, ...] | None = None
    optional: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def annotation(self) -> Any:
        """The Python type of the value, Optional when it may be left out. Text choices are a
        Literal (so FastAPI and Modal list them); number choices stay their type, because pydantic
        compares a query string with a number Literal unconverted: `check` refuses the others."""
        kind: Any = Literal[self.choices] if self.choices and self.type is str else self.type
        return Optional[kind] if self.optional else kind

    def allowed(self) -> str:
        """The allowed values in words, as docs/api.md's table says them."""
        if self.choices:
            return ", ".join(f"`{choice}`" for choice in self.choices)
        if self.above is not None:
            return f"number > {_number(self.above)}, finite"
        low, high = _number(self.minimum), _number(self.maximum)
        return f"integer {low}–{high}" if self.type is int else f"{low}–{high}"

    def check(self, value: Any) -> None:
        """Raise InvalidOptionError naming the option and what it allows."""
        if value is None and self.optional:
            return
        if self.choices:
            if value not in self.choices:
                listed = ", ".join(str(choice) for choice in self.choices)
                raise InvalidOptionError(f"{self.name} must be one of {listed} (got {value!r}).")
            return
        if self.above is not None:
            if not (math.isfinite(value) and value > self.above):
                what = "a positive number" if self.above == 0 else f"a number above {self.above}"
                raise InvalidOptionError(f"{self.name} must be {what} (got {value}).")
            return
        if not (self.minimum is not None and self.maximum is not None and self.minimum <= value <= self.maximum):
            left_out = ", or left out" if self.optional else ""
            raise InvalidOptionError(
                f"{self.name} must be between {self.minimum} and {self.maximum}{left_out} (got {value})."
            )

    def query_constraints(self) -> dict[str, Any]:
        """Keyword arguments for FastAPI's `Query` (pydantic's bounds)."""
        bounds: dict[str, Any] = {}
        if self.choices and self.type is not str:
            bounds["json_schema_extra"] = {"enum": list(self.choices)}
        if self.minimum is not None:
            bounds["ge"] = self.minimum
        if self.maximum is not None:
            bounds["le"] = self.maximum
        if self.above is not None:
            bounds.update(gt=self.above, allow_inf_nan=False)
        return bounds


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,}" if isinstance(value, int) else str(value)


OPTIONS: tuple[Option, ...] = (
    Option(
        "resolution",
        int,
        256,
        help="marching-cubes grid size",
        meaning="marching-cubes grid size (higher: finer mesh, more time and memory)",
        minimum=32,
        maximum=512,
    ),
    Option(
        "threshold",
        float,
        25.0,
        help="density at the surface",
        meaning="density at the surface (upstream's value)",
        above=0,
    ),
    Option(
        "foreground_ratio",
        float,
        0.85,
        help="share of the image side the object spans",
        meaning="share of the image side the object spans after cropping",
        minimum=0.5,
        maximum=1.0,
    ),
    Option(
        "remove_background",
        str,
        "auto",
        help="auto: images with transparency keep it, others go through rembg",
        meaning="`auto`: images with transparency keep it, others go through rembg",
        choices=("auto", "always", "never"),
    ),
    Option(
        "target_faces",
        int,
        None,
        help="decimate to about N faces",
        meaning="decimate to about this many faces",
        minimum=100,
        maximum=10_000_000,
        optional=True,
    ),
    Option(
        "texture_size",
        int,
        0,
        help="0: vertex colours; 512, 1024 or 2048: a UV-mapped texture of that side (JPEG)",
        meaning="0: vertex colours (`COLOR_0`); 512, 1024 or 2048: a UV-mapped texture of that side (JPEG) instead",
        choices=(0, 512, 1024, 2048),
    ),
)

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class GenerateOptions:
    """What an artist may tune per request; defaults are upstream TripoSR's. The fields are
    `OPTIONS` (same names, order and defaults; a test checks)."""

    resolution: int = 256
    threshold: float = 25.0
    foreground_ratio: float = 0.85
    remove_background: str = "auto"
    target_faces: int | None = None
    texture_size: int = 0

    def validate(self) -> GenerateOptions:
        """Raise InvalidOptionError naming the option and its allowed range."""
        check(asdict(self))
        return self


def defaults() -> dict[str, Any]:
    return {option.name: option.default for option in OPTIONS}


def check(values: dict[str, Any]) -> None:
    """Check each declared option's value (InvalidOptionError for the first one out of range)."""
    for option in OPTIONS:
        option.check(values[option.name])


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per option (`--foreground-ratio` for foreground_ratio), default as declared."""
    for option in OPTIONS:
        extra: dict[str, Any] = {}
        if option.choices:
            extra["choices"] = option.choices
            text = option.help
        else:
            text = f"{option.help}; {option.allowed().replace('`', '')}"
            if option.optional:
                text += " (default: left out)"
        if option.default is not None:
            text += f" (default {option.default})"
        parser.add_argument(option.flag, type=option.type, default=option.default, help=text, **extra)


def entrypoint_signature(*leading: inspect.Parameter) -> inspect.Signature:
    """The signature of a function that takes `leading`, then every option by name with its
    default (what Modal's `local_entrypoint` turns into `--flag` arguments)."""
    parameters = list(leading) + [
        inspect.Parameter(
            option.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option.default, annotation=option.annotation
        )
        for option in OPTIONS
    ]
    return inspect.Signature(parameters, return_annotation=None)


def markdown_table() -> str:
    """The option table of docs/api.md (`POST /v1/generate`)."""
    lines = ["| parameter | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for option in OPTIONS:
        if option.default is None:
            default = "none"
        elif isinstance(option.default, str):
            default = f"`{option.default}`"
        else:
            default = f"{option.default:g}"
        lines.append(f"| `{option.name}` | {default} | {option.allowed()} | {option.meaning} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
