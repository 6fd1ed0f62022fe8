"""`--precision` is the one name for the precision setting; `--exact` stays as its alias."""

from __future__ import annotations

import pytest

from remote.cli import build_parser
from remote.server.cli import settings_from_args


@pytest.mark.parametrize(
    ("flags", "precision"),
    [
        ([], "auto"),
        (["--exact"], "float32"),
        (["--precision", "fast"], "fast"),
        (["--precision", "float32"], "float32"),
    ],
)
def test_generate_reads_precision_and_its_exact_alias(flags: list[str], precision: str) -> None:
    assert build_parser().parse_args(["generate", "a.png", "-o", "a.glb", *flags]).precision == precision


def test_serve_leaves_precision_to_the_environment_unless_a_flag_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_TO_3D_PRECISION", "fast")

    assert settings_from_args(build_parser().parse_args(["serve"])).precision == "fast"
    assert settings_from_args(build_parser().parse_args(["serve", "--exact"])).precision == "float32"
    assert settings_from_args(build_parser().parse_args(["serve", "--precision", "auto"])).precision == "auto"


def test_an_unknown_precision_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--precision", "half"])
