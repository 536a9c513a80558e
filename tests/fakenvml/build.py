"""Build the fake libnvidia-ml.so.1 (fakenvml.c) with gcc: build_fake_nvml(dest_dir)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("fakenvml.c")
LIB_NAME = "libnvidia-ml.so.1"


class GccMissing(RuntimeError):
    pass


def build_fake_nvml(dest_dir: Path) -> Path:
    """Compile into dest_dir/libnvidia-ml.so.1 (soname libnvidia-ml.so.1); returns its path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise GccMissing("gcc is not installed; cannot build the fake libnvidia-ml.so.1")
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / LIB_NAME
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror",
         f"-Wl,-soname,{LIB_NAME}", "-o", str(out), str(SOURCE)],
        check=True,
        capture_output=True,
        text=True,
    )  # fmt: skip
    return out


def nvml_env(lib_dir: Path, base: dict[str, str] | None = None, **fake: str) -> dict[str, str]:
    """Environment for a subprocess that should load the fake: LD_LIBRARY_PATH + FAKENVML_*."""
    import os

    env = dict(os.environ if base is None else base)
    env["LD_LIBRARY_PATH"] = (
        f"{lib_dir}:{env['LD_LIBRARY_PATH']}" if env.get("LD_LIBRARY_PATH") else str(lib_dir)
    )
    for key in list(env):
        if key.startswith("FAKENVML_"):
            del env[key]
    env.update({f"FAKENVML_{k.upper()}": v for k, v in fake.items()})
    return env
