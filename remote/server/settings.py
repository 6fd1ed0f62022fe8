"""Server settings: environment variables, overridden by `image-to-3d serve` flags.

The environment is what Modal (and containers generally) configure; the token in particular comes
only from `IMAGE_TO_3D_TOKEN` (on Modal a `modal.Secret`), never from a flag, so it does not show up
in process listings or shell history. docs/api.md lists every variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from remote import environment
from remote.errors import ImageTo3DError
from remote.model_flags import DEFAULT_MODEL
from remote.precision import DEFAULT_PRECISION, PRECISIONS
from remote.preprocess import DEFAULT_MAX_PIXELS

TOKEN_VARIABLE = environment.TOKEN
MIN_TOKEN_LENGTH = 16  # characters after stripping whitespace; MAKE_TOKEN makes 64
# Prints 64 hex characters wherever the project runs (uv brings its own Python); docs/deploy.md.
MAKE_TOKEN = "uv run python -c 'import secrets; print(secrets.token_hex(32))'"

ENVIRONMENT = environment.SERVER_SETTINGS  # field name -> environment variable


class SettingsError(ImageTo3DError):
    """A server setting (flag or environment variable) has a value the server cannot use."""

    code = "invalid_setting"
    status = 500


running_on_modal = environment.running_on_modal
_env_text = environment.get


def _env_float(name: str, default: float) -> float:
    value = environment.get(name)
    if not value:
        return default
    try:
        return float(value.replace("_", ""))
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds (got {value!r}); fix or unset it.") from None


def _env_int(name: str, default: int) -> int:
    value = environment.get(name)
    if not value:
        return default
    try:
        return int(value.replace("_", ""))
    except ValueError:
        raise SettingsError(f"{name} must be a whole number (got {value!r}); fix or unset it.") from None


@dataclass
class ServerSettings:
    """Everything the app needs besides the pipeline. `ServerSettings()` reads the environment;
    keyword arguments (the CLI's flags) take precedence. Every limit is configurable."""

    model: str = field(default_factory=lambda: _env_text(ENVIRONMENT["model"], DEFAULT_MODEL) or DEFAULT_MODEL)
    device: str | None = field(default_factory=lambda: _env_text(ENVIRONMENT["device"]))
    rembg_model: str | None = field(default_factory=lambda: _env_text(ENVIRONMENT["rembg_model"]))
    precision: str = field(
        default_factory=lambda: _env_text(ENVIRONMENT["precision"], DEFAULT_PRECISION) or DEFAULT_PRECISION
    )
    token: str | None = field(default_factory=lambda: _env_text(TOKEN_VARIABLE), repr=False)
    max_body_bytes: int = field(default_factory=lambda: _env_int(ENVIRONMENT["max_body_bytes"], 20_000_000))
    max_pixels: int = field(default_factory=lambda: _env_int(ENVIRONMENT["max_pixels"], DEFAULT_MAX_PIXELS))
    queue_size: int = field(default_factory=lambda: _env_int(ENVIRONMENT["queue_size"], 4))
    retry_after_s: int = field(default_factory=lambda: _env_int(ENVIRONMENT["retry_after_s"], 5))
    # Connection deadlines (docs/api.md, "Deadlines"): a client cannot hold a connection, a queue
    # slot or its memory for longer than these allow.
    header_timeout_s: float = field(default_factory=lambda: _env_float(ENVIRONMENT["header_timeout_s"], 10.0))
    body_timeout_s: float = field(default_factory=lambda: _env_float(ENVIRONMENT["body_timeout_s"], 60.0))
    body_min_rate: int = field(default_factory=lambda: _env_int(ENVIRONMENT["body_min_rate"], 50_000))
    send_timeout_s: float = field(default_factory=lambda: _env_float(ENVIRONMENT["send_timeout_s"], 30.0))
    keep_alive_s: float = field(default_factory=lambda: _env_float(ENVIRONMENT["keep_alive_s"], 5.0))
    max_connections: int = field(default_factory=lambda: _env_int(ENVIRONMENT["max_connections"], 256))

    def __post_init__(self) -> None:
        if self.token is not None:
            self.token = self.token.strip() or None
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r}).")
        minimums = {
            "max_body_bytes": 1,
            "max_pixels": 1,
            "queue_size": 0,
            "retry_after_s": 1,
            "header_timeout_s": 0.1,
            "body_timeout_s": 0.1,
            "body_min_rate": 0,
            "send_timeout_s": 0.1,
            "keep_alive_s": 0.1,
            "max_connections": 2,
        }
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if value < minimum:
                raise SettingsError(
                    f"{name} must be at least {minimum} (got {value}); check the `serve` flag or {ENVIRONMENT[name]}."
                )

    def require_token(self, where: str) -> None:
        """Refuse to serve `where` (e.g. "on Modal", "on 0.0.0.0") without a token of at least
        MIN_TOKEN_LENGTH characters: there anyone who finds the address could use the GPU."""
        token = self.token or ""
        if len(token) >= MIN_TOKEN_LENGTH:
            return
        problem = (
            f"{TOKEN_VARIABLE} is not set (or only whitespace)"
            if not token
            else f"{TOKEN_VARIABLE} is only {len(token)} characters long"
        )
        raise SettingsError(
            f"Refusing to serve {where}: {problem}, and anyone who can reach the server could use "
            f"it. Set {TOKEN_VARIABLE} to a secret of at least {MIN_TOKEN_LENGTH} characters, e.g. "
            f"the output of `{MAKE_TOKEN}` (docs/deploy.md shows how to store it)."
        )

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, object]) -> "ServerSettings":
        """The environment's settings with the given values (e.g. flags) in place; None means
        "not given", so the environment (or the built-in default) applies."""
        return cls(**{name: value for name, value in overrides.items() if value is not None})  # type: ignore[arg-type]
