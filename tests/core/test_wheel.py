"""The built wheel works outside the source tree (issue 11, point 5).

The wheel is built from a copy of the sources, installed into a fresh virtualenv in a
temporary directory, and ``accessgw`` is run from there with the working directory outside
the repository: ``--version``, ``check-config`` (which loads firmware profiles, i.e. package
data) and ``decide``. To stay fast and offline, the new virtualenv takes the already
installed third-party dependencies from the test virtualenv through a ``.pth`` line (a path
added that way is not a site directory, so the editable install's finder there never runs);
the test asserts that ``gateway`` itself is imported from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support.sets import member, rules

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(
    ".git", ".venv", "venv", "__pycache__", "build", "dist", "*.egg-info", ".*_cache", "state"
)


def _run(*argv: str | Path, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed; returns its ``bin`` directory."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=SKIP)
    dist = work / "dist"
    _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", dist, source, cwd=work,
    )  # fmt: skip
    (wheel,) = dist.glob("accessgw-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "gateway/firmware_profiles/pn532-hsu.toml" in names
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    target = venv / "bin" / "python"
    _run(
        sys.executable, "-m", "pip", "--python", target, "install", "-q", "--no-index",
        "--no-deps", wheel, cwd=work,
    )  # fmt: skip
    purelib = _run(
        target, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work
    ).stdout.strip()
    (Path(purelib) / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    shutil.rmtree(source)  # nothing of the sources is left to fall back on
    return venv / "bin"


def test_the_installed_package_is_the_wheel_not_the_source_tree(
    installed: Path, tmp_path: Path
) -> None:
    where = _run(
        installed / "python", "-c", "import gateway, drivers; print(gateway.__file__)",
        cwd=tmp_path,
    ).stdout  # fmt: skip
    assert where.startswith(str(installed.parent)), where
    assert str(ROOT) not in where


def test_version_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    out = _run(installed / "accessgw", "--version", cwd=tmp_path).stdout
    assert out.strip().startswith("accessgw ")


def test_check_config_from_the_wheel_loads_the_firmware_profiles(
    installed: Path, tmp_path: Path
) -> None:
    config = tmp_path / "accessgw.toml"
    config.write_text(
        '[gateway]\nid = "door-1"\nsite = "oslo-sentrum"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        "[mqtt]\nenabled = false\n"
        '[[boards]]\nid = "relays"\nprofile = "modbus-tcp-relay"\nhost = "127.0.0.1"\n'
        '[[doors]]\nid = "main-in"\nzone = "gym"\ndirection = "in"\n'
        'lock = { board = "relays", index = 0 }\n'
        '[[readers]]\nid = "nfc"\nprofile = "pn532-hsu"\ndoor = "main-in"\n'
        'port = "/dev/ttyAMA0"\n'
    )
    done = _run(installed / "accessgw", "check-config", config, cwd=tmp_path, ok=False)
    assert "no firmware profile" not in done.stderr
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    missing = config.with_name("bad.toml")
    missing.write_text(config.read_text().replace("pn532-hsu", "pn533"))
    done = _run(installed / "accessgw", "check-config", missing, cwd=tmp_path, ok=False)
    assert done.returncode == 1
    assert "no firmware profile 'pn533'" in done.stderr
    assert "pn532-hsu" in done.stderr  # the known ones, read from the package


def test_decide_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    set_file = tmp_path / "set.json"
    set_file.write_text(json.dumps({"version": 7, "rules": rules(), "records": [member()]}))
    out = _run(
        installed / "accessgw", "decide", "--set", set_file, "--site", "oslo-sentrum",
        "--zone", "gym", "--direction", "in", "--at", "2026-11-25T10:00:00+01:00",
        "--nfc", "04a1b2c3", cwd=tmp_path,
    ).stdout  # fmt: skip
    assert json.loads(out)["decision"] == "granted"
