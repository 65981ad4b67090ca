"""What every benchmark shares: the openssl ceiling and the machine it ran on.

MB means 10^6 bytes throughout (openssl's own unit is 1000 bytes).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

MB = 1_000_000


def parse_openssl_speed(text: str, cipher: str = "aes-128-cbc") -> float | None:
    """Bytes per second from ``openssl speed`` output (``-mr`` or the human table)."""
    name = re.escape(cipher)
    machine = re.findall(rf"^\+F:\d+:{name}:([0-9.]+)", text, re.MULTILINE | re.IGNORECASE)
    if machine:
        return float(machine[-1].split(":")[-1])
    human = re.findall(rf"^\s*{name}\s+([0-9.]+)k\s*$", text, re.MULTILINE | re.IGNORECASE)
    if human:
        return float(human[-1]) * 1000
    return None


def run_openssl_speed(openssl: str, size: int, seconds: int,
                      cipher: str = "aes-128-cbc") -> float | None:
    """MB/s of ``openssl speed -evp CIPHER -bytes size``; None if refused or unparsable."""
    command = [
        openssl, "speed", "-mr", "-evp", cipher,
        "-bytes", str(size), "-seconds", str(seconds),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    rate = parse_openssl_speed(done.stdout + "\n" + done.stderr, cipher)
    return rate / MB if rate else None


def read_cpu_model() -> str:
    """``model name`` from /proc/cpuinfo, else whatever platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_openssl_version(openssl: str | None) -> str | None:
    """``openssl version`` of the CLI."""
    if openssl is None:
        return None
    done = subprocess.run([openssl, "version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


def read_cryptography_openssl() -> str:
    """The OpenSSL that ``cryptography`` (and so the origin) links, which may differ."""
    from cryptography.hazmat.backends.openssl.backend import backend

    return str(backend.openssl_version_text())


def machine_info(openssl: str | None) -> dict[str, object]:
    """What the numbers were measured on."""
    import cryptography

    return {
        "cpu_model": read_cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "openssl_cli": read_openssl_version(openssl),
        "cryptography": cryptography.__version__,
        "cryptography_openssl": read_cryptography_openssl(),
    }


def read_tool_version(command: list[str]) -> str | None:
    """The first line a tool prints about its version (stdout or stderr), or None."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        if line.strip():
            return line.strip()
    return None


def find_nginx() -> str | None:
    """The nginx binary: on PATH, else Debian's /usr/sbin/nginx (not on a user's PATH)."""
    import shutil

    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


def tool_versions(packager: str | None = None) -> dict[str, str | None]:
    """Versions of every program and library the benchmarks compare or run."""
    import shutil
    import sys
    from importlib import metadata

    def tool(name: str | None, *args: str) -> str | None:
        return read_tool_version([name, *args]) if name else None

    def package(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "nginx": tool(find_nginx(), "-v"),
        "wrk": tool(shutil.which("wrk"), "--version"),
        "openssl": tool(shutil.which("openssl"), "version"),
        "shaka_packager": tool(packager, "--version"),
        "ffmpeg": tool(shutil.which("ffmpeg"), "-version"),
        "py-spy": tool(shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                       "--version"),
        **{name: package(name) for name in (
            "aiohttp", "uvloop", "cryptography", "numpy", "prometheus-client", "matplotlib")},
    }


def read_load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages (other work on the machine shows here)."""
    try:
        one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    except (OSError, ValueError):
        return None
    return float(one), float(five), float(fifteen)
