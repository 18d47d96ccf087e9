"""Shared fixtures: the shipped mini-aligner, the CLI binary the package is compared with."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import alens

ROOT = Path(__file__).resolve().parents[2]
MINI = "mini-aligner"


def cli_path() -> str:
    """The `alens` CLI: $ALENS_BIN, else target/{debug,release}/alens, else `alens` on PATH."""
    if os.environ.get("ALENS_BIN"):
        return os.environ["ALENS_BIN"]
    for profile in ("debug", "release"):
        candidate = ROOT / "target" / profile / "alens"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("alens")
    if found:
        return found
    pytest.skip("the alens CLI is not built (cargo build), so nothing to compare with")


def run_cli(*args: str) -> str:
    out = subprocess.run([cli_path(), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"alens {' '.join(args)} failed: {out.stderr}"
    return out.stdout


def read_jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def mini() -> alens.Model:
    return alens.Model(MINI)


@pytest.fixture(scope="session")
def test_records():
    return read_jsonl(ROOT / "notebooks-data" / "corpus" / "test.jsonl")


@pytest.fixture(scope="session")
def stimuli():
    return read_jsonl(ROOT / "notebooks-data" / "stimuli" / "copy-correct.jsonl")
