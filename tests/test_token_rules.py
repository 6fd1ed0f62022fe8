"""Fail closed: no serving on Modal or beyond loopback without a real token; no API map with one.

The `serve` cases run the real command (`python -m remote.cli serve`) and read its exit code and
stderr; the app cases run the real FastAPI app under uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from conftest import TINY_MODEL
from live_server import ROOT, free_port, serve_in_process

from remote.server.app import create_app
from remote.server.settings import MAKE_TOKEN, MIN_TOKEN_LENGTH, ServerSettings, SettingsError

pytestmark = pytest.mark.slow  # starts the real `serve` command

GOOD_TOKEN = "0123456789abcdef"  # exactly MIN_TOKEN_LENGTH characters
BAD_TOKENS = {
    "empty": "",
    "blank": "   ",
    "newline": "\n",
    "tab and newline": "\t\n",
    "short": "abc123",
    "short after stripping": f"  {GOOD_TOKEN[:-1]}\n",
}


def _never_loaded() -> None:
    raise RuntimeError("these tests need no model")


def _serve(host: str, token: str | None, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGE_TO_3D_TOKEN", "MODAL_IS_REMOTE")}
    if token is not None:
        env["IMAGE_TO_3D_TOKEN"] = token
    env.update(extra_env or {})
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "remote.cli",
            "serve",
            "--host",
            host,
            "--port",
            str(free_port()),
            "--model",
            str(TINY_MODEL),
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize("token", list(BAD_TOKENS.values()), ids=list(BAD_TOKENS))
def test_require_token_refuses_missing_blank_and_short_tokens(token: str) -> None:
    settings = ServerSettings(token=token)

    with pytest.raises(SettingsError) as refused:
        settings.require_token("on Modal")

    message = refused.value.message
    assert "Refusing to serve on Modal" in message and "IMAGE_TO_3D_TOKEN" in message
    assert f"at least {MIN_TOKEN_LENGTH} characters" in message and MAKE_TOKEN in message
    assert token.strip() == "" or token.strip() not in message  # never echo the secret


def test_require_token_accepts_sixteen_characters_and_strips_them() -> None:
    settings = ServerSettings(token=f"  {GOOD_TOKEN}\n")

    settings.require_token("on Modal")

    assert settings.token == GOOD_TOKEN


@pytest.mark.parametrize("token", [None, "", " \n", "too-short"], ids=["unset", "empty", "blank", "short"])
def test_serve_beyond_loopback_refuses_without_a_real_token(token: str | None) -> None:
    run = _serve("0.0.0.0", token)

    assert run.returncode == 2, run.stderr
    assert "Refusing to serve on 0.0.0.0" in run.stderr and MAKE_TOKEN in run.stderr
    assert "--host 127.0.0.1" in run.stderr
    assert "serving on" not in run.stdout


def test_serve_on_modal_refuses_even_on_loopback() -> None:
    run = _serve("127.0.0.1", "   ", {"MODAL_IS_REMOTE": "1"})

    assert run.returncode == 2, run.stderr
    assert "Refusing to serve on Modal" in run.stderr and "127.0.0.1" not in run.stderr


@pytest.mark.parametrize("token", [None, *BAD_TOKENS.values()], ids=["unset", *BAD_TOKENS])
def test_the_app_refuses_to_be_built_on_modal_without_a_real_token(
    monkeypatch: pytest.MonkeyPatch, token: str | None
) -> None:
    monkeypatch.setenv("MODAL_IS_REMOTE", "1")

    with pytest.raises(SettingsError, match="Refusing to serve on Modal"):
        create_app(ServerSettings(token=token), pipeline_loader=_never_loaded)  # type: ignore[arg-type]


def test_the_app_builds_on_modal_with_a_real_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_IS_REMOTE", "1")

    app = create_app(ServerSettings(token=GOOD_TOKEN), pipeline_loader=_never_loaded)  # type: ignore[arg-type]

    assert app.openapi_url is None


def test_api_docs_are_off_with_a_token_and_on_without() -> None:
    with_token = create_app(ServerSettings(token=GOOD_TOKEN), pipeline_loader=_never_loaded)  # type: ignore[arg-type]
    without = create_app(ServerSettings(token=None), pipeline_loader=_never_loaded)  # type: ignore[arg-type]

    with serve_in_process(with_token) as secured, serve_in_process(without) as open_:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert requests.get(secured + path, timeout=5).status_code == 404, path
            assert requests.get(open_ + path, timeout=5).status_code == 200, path
        assert requests.get(secured + "/v1/health", timeout=5).json()["auth_required"] is True


def test_the_documented_token_command_makes_a_token_and_its_check_catches_an_empty_one() -> None:
    import shutil

    if shutil.which("uv") is None:
        pytest.skip("uv is not on PATH")
    text = (ROOT / "docs" / "deploy.md").read_text()
    make, check = (
        next(line for line in text.splitlines() if line.startswith(start)) for start in ("TOKEN=$(", "[ ${#TOKEN}")
    )
    assert make.split("$(", 1)[1].rstrip(")") == MAKE_TOKEN  # the command the server's error names
    assert make.split(" #")[0].strip() in (ROOT / "README.md").read_text()

    made = subprocess.run(["bash", "-c", f"{make}\n{check}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    empty = subprocess.run(["bash", "-c", f"TOKEN=$(true)\n{check}"], capture_output=True, text=True, timeout=30)

    token = made.stdout.split("token: ", 1)[1].strip()
    assert len(token) == 64 and int(token, 16) >= 0
    ServerSettings(token=token).require_token("on Modal")
    assert empty.stdout.startswith("error: no token was made")
