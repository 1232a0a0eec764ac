"""The addon in an environment with mitmproxy and pydantic only (the project's locked versions, no extras).

Before, three imports stopped it one after the other (prometheus_client, then redis) although neither feature was
asked for. Now it loads and resumes there; asking for Redis or metrics stops mitmdump with the install command.

The environment is made once with the project's uv from ``uv export`` of the lock (packages from the registry,
through uv's cache) and kept in pytest's cache, keyed by the exported requirements: reruns reuse it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import ROOT, UPSTREAM, Mitmdump, Process, curl, free_port, wait_port
from test_options_e2e import run_until_exit

UV = ROOT / ".tools" / "bin" / "uv"


def uv(*args: str | Path) -> str:
    env = {**os.environ, "UV_PYTHON": sys.executable, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run([UV, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"uv {args}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def minimal_venv(request: pytest.FixtureRequest) -> Path:
    """A venv with the project's runtime dependencies as locked, without its extras and groups (cached)."""
    if not UV.is_file():
        pytest.fail("the project's uv is missing: run ./dev sync")
    requirements = uv("export", "--frozen", "--no-default-groups", "--no-emit-project", "--no-hashes", "--quiet")
    key = hashlib.sha256(f"{sys.version}\n{requirements}".encode()).hexdigest()[:16]
    venv = Path(request.config.cache.mkdir("minimal-venv")) / key
    if (venv / "ready").is_file():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    (venv.parent / f"{key}.txt").write_text(requirements)
    uv("venv", "--quiet", "--python", sys.executable, venv)
    uv("pip", "install", "--quiet", "--python", venv / "bin" / "python", "-r", venv.parent / f"{key}.txt")
    (venv / "ready").write_text(requirements)
    return venv


def test_the_environment_has_mitmproxy_and_pydantic_but_no_optional_package(minimal_venv: Path) -> None:
    names = {line.split("==")[0].lower() for line in (minimal_venv / "ready").read_text().splitlines() if "==" in line}
    assert {"mitmproxy", "pydantic"} <= names and not names & {"redis", "prometheus-client"}
    probe = "import importlib.util as u; print([m for m in ('redis', 'prometheus_client') if u.find_spec(m)])"
    python = minimal_venv / "bin" / "python"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_a_stream_resumes_through_mitmdump_with_mitmproxy_and_pydantic_alone(
    minimal_venv: Path, tmp_path: Path
) -> None:
    port = free_port()
    # The demo upstream is standard library only: it runs on this environment's Python as well.
    upstream: list[str | os.PathLike[str]] = [
        minimal_venv / "bin" / "python",
        UPSTREAM,
        "--port",
        str(port),
        "--interval",
        "0.05",
    ]
    with Process(upstream, tmp_path / "upstream.log") as up:
        wait_port(port, up.proc)
        with Mitmdump(tmp_path, port, tool=str(minimal_venv / "bin" / "mitmdump")) as proxy:
            _, first = curl(f"{proxy.url}/sse", stop_after=6)
            assert first[:6] == ["1", "2", "3", "4", "5", "6"], proxy.output
            out, ids = curl(f"{proxy.url}/sse", "-i", "-H", "Last-Event-Id: 3", stop_after=5)
            assert "sse-resume: hit; inline" in out.lower(), out  # 4, 5, 6 from the proxy's history, then live
            assert ids[:5] == ["4", "5", "6", "7", "8"], out
            assert "Error" not in proxy.output and "No module named" not in proxy.output


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("sse_store=redis://127.0.0.1:1/0", "sse_store: a Redis store needs the Python package redis>=5.0"),
        ("sse_metrics_port=1", "sse_metrics_port: the metrics endpoint needs the Python package prometheus-client>="),
    ],
)
def test_asking_for_a_feature_without_its_package_stops_mitmdump_with_the_install_command(
    minimal_venv: Path, tmp_path: Path, option: str, message: str
) -> None:
    status, output = run_until_exit(tmp_path, ["--set", option], tool=minimal_venv / "bin" / "mitmdump")
    assert status is not None and status != 0, output
    assert message in output
    python = minimal_venv / "bin" / "python"  # an environment made by uv has no pip: uv installs into it
    requirement = "'redis>=5.0'" if "redis" in option else "'prometheus-client>=0.20'"
    assert f"install it with: uv pip install --python {python} {requirement}" in output
