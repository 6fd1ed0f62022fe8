"""The generate options are declared once (remote/options.py); every place that offers them agrees."""

from __future__ import annotations

import ast
import argparse
import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Query
from fastapi.testclient import TestClient

from remote import options
from remote.errors import InvalidOptionError
from remote.options import OPTIONS, GenerateOptions, Option

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- options table: generated from remote/options.py"


def test_the_option_table_in_docs_api_md_is_the_one_the_declarations_render() -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    after = text[text.index(MARKER) :].splitlines()[1:]
    table = "\n".join(line for line in after[: len(OPTIONS) + 2])

    assert table == options.markdown_table(), "run `uv run python -m remote.options` and paste its table"


def test_generate_options_has_one_field_per_declaration_with_its_default() -> None:
    fields = [(field.name, field.default) for field in dataclasses.fields(GenerateOptions)]

    assert fields == [(option.name, option.default) for option in OPTIONS]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"resolution": 31}, r"resolution must be between 32 and 512 \(got 31\)\."),
        ({"resolution": 513}, r"resolution must be between 32 and 512 \(got 513\)\."),
        ({"threshold": 0.0}, r"threshold must be a positive number \(got 0\.0\)\."),
        ({"threshold": float("nan")}, r"threshold must be a positive number \(got nan\)\."),
        ({"foreground_ratio": 0.4}, r"foreground_ratio must be between 0\.5 and 1\.0 \(got 0\.4\)\."),
        ({"remove_background": "maybe"}, r"remove_background must be one of auto, always, never \(got 'maybe'\)\."),
        ({"target_faces": 99}, r"target_faces must be between 100 and 10000000, or left out \(got 99\)\."),
    ],
)
def test_validate_refuses_each_option_out_of_range_by_name(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOptionError, match=f"^{message}$"):
        GenerateOptions(**changes).validate()


def test_validate_accepts_the_defaults_and_the_bounds() -> None:
    GenerateOptions().validate()
    GenerateOptions(resolution=32, foreground_ratio=1.0, target_faces=10_000_000, threshold=1e-6).validate()
    GenerateOptions(resolution=512, foreground_ratio=0.5, target_faces=100, remove_background="never").validate()


def test_the_generate_command_has_one_flag_per_option_with_its_default() -> None:
    from remote.cli import build_parser

    args = build_parser().parse_args(["generate", "x.png", "-o", "x.glb"])

    for option in OPTIONS:
        assert getattr(args, option.name) == option.default
    parsed = build_parser().parse_args(
        [
            "generate",
            "x.png",
            "-o",
            "x.glb",
            "--foreground-ratio",
            "0.7",
            "--target-faces",
            "500",
            "--remove-background",
            "never",
        ]
    )
    assert (parsed.foreground_ratio, parsed.target_faces, parsed.remove_background) == (0.7, 500, "never")


def test_the_http_query_parameters_are_the_declarations() -> None:
    from remote.server.app import create_app
    from remote.server.settings import ServerSettings

    schema = create_app(ServerSettings(), pipeline_loader=lambda: None).openapi()  # type: ignore[arg-type,return-value]
    parameters = {p["name"]: p for p in schema["paths"]["/v1/generate"]["post"]["parameters"]}

    assert list(parameters) == [option.name for option in OPTIONS]
    resolution = parameters["resolution"]["schema"]
    assert (resolution["type"], resolution["minimum"], resolution["maximum"], resolution["default"]) == (
        "integer",
        32,
        512,
        256,
    )
    assert parameters["threshold"]["schema"]["exclusiveMinimum"] == 0
    assert parameters["remove_background"]["schema"]["enum"] == ["auto", "always", "never"]
    faces = parameters["target_faces"]["schema"]["anyOf"][0]
    assert (faces["minimum"], faces["maximum"]) == (100, 10_000_000)
    for option in OPTIONS:
        assert parameters[option.name]["description"] == option.help
        assert parameters[option.name]["required"] is False


def test_the_modal_entrypoint_takes_the_paths_then_every_option() -> None:
    from test_modal_app import _raw

    from remote import modal_app

    signature = inspect.signature(_raw(modal_app.main).info.raw_f)

    assert list(signature.parameters) == ["input_path", "output_path", *(option.name for option in OPTIONS)]
    for option in OPTIONS:
        assert signature.parameters[option.name].default == option.default


# --- the add-on's properties (parsed, no bpy) -------------------------------------------------------


def _addon_properties() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """ImageTo3DSettings' properties as {name: {keyword: value}}, and the module's constants."""
    tree = ast.parse((ROOT / "blender_addon" / "properties.py").read_text(encoding="utf-8"))
    constants: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    settings = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ImageTo3DSettings")
    properties: dict[str, dict[str, Any]] = {}
    for node in settings.body:
        # Blender's properties are annotations: `resolution: IntProperty(min=32, ...)`
        if isinstance(node, ast.AnnAssign) and isinstance(node.annotation, ast.Call):
            values: dict[str, Any] = {}
            for keyword in node.annotation.keywords:
                if isinstance(keyword.value, ast.Name) and keyword.value.id in constants:
                    values[keyword.arg or ""] = constants[keyword.value.id]
                else:
                    try:
                        values[keyword.arg or ""] = ast.literal_eval(keyword.value)
                    except ValueError:
                        pass
            assert isinstance(node.target, ast.Name)
            properties[node.target.id] = values
    return properties, constants


def test_the_addon_offers_the_servers_ranges_and_defaults() -> None:
    properties, constants = _addon_properties()
    shared = [option for option in OPTIONS if option.name in properties]

    assert {"resolution", "foreground_ratio", "remove_background", "target_faces"} <= {o.name for o in shared}
    for option in shared:
        prop = properties[option.name]
        if option.choices:
            assert [item[0] for item in prop["items"]] == [str(choice) for choice in option.choices], option.name
            assert prop["default"] == str(option.default), option.name
        elif option.optional:  # the panel's 0 means "left out"; 1 to minimum-1 is raised to the minimum
            assert (prop["default"], prop["min"], prop["max"]) == (0, 0, option.maximum), option.name
        else:
            assert (prop["default"], prop["min"], prop["max"]) == (option.default, option.minimum, option.maximum), (
                option.name
            )
    target_faces = options.BY_NAME["target_faces"]
    assert (constants["TARGET_FACES_MIN"], constants["TARGET_FACES_MAX"]) == (
        target_faces.minimum,
        target_faces.maximum,
    )


# --- an option with number choices (the shape of texture_size) works in every builder -----------------


NUMBER_CHOICES = Option(
    "texture_size",
    int,
    0,
    help="texture side in pixels; 0: vertex colours",
    meaning="texture side",
    choices=(0, 512, 1024, 2048),
)


def test_an_option_with_number_choices_is_checked_parsed_and_served() -> None:
    with pytest.raises(InvalidOptionError, match=r"texture_size must be one of 0, 512, 1024, 2048 \(got 5\)"):
        NUMBER_CHOICES.check(5)
    NUMBER_CHOICES.check(1024)

    parser = argparse.ArgumentParser()
    original = options.OPTIONS
    try:
        options.OPTIONS = (NUMBER_CHOICES,)
        options.add_cli_arguments(parser)
        signature = options.entrypoint_signature()
    finally:
        options.OPTIONS = original
    assert parser.parse_args(["--texture-size", "512"]).texture_size == 512
    assert parser.parse_args([]).texture_size == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["--texture-size", "5"])
    assert signature.parameters["texture_size"].annotation is int

    app = FastAPI()

    def dependency(**values: Any) -> int:
        NUMBER_CHOICES.check(values["texture_size"])
        return int(values["texture_size"])

    dependency.__signature__ = inspect.Signature(
        [  # type: ignore[attr-defined]
            inspect.Parameter(
                "texture_size",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=NUMBER_CHOICES.annotation,
                default=Query(NUMBER_CHOICES.default, **NUMBER_CHOICES.query_constraints()),
            )
        ]
    )

    @app.get("/x")
    def route(size: int = Depends(dependency)) -> dict[str, int]:
        return {"size": size}

    client = TestClient(app)
    assert client.get("/x?texture_size=2048").json() == {"size": 2048}
    assert client.get("/x").json() == {"size": 0}
    (parameter,) = app.openapi()["paths"]["/x"]["get"]["parameters"]
    assert parameter["schema"]["enum"] == [0, 512, 1024, 2048]
