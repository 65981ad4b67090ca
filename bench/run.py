"""``make bench``: the whole benchmark suite, end to end, within a time budget, with progress.

Steps, each a subprocess of this Python with a time-out cut from what is left
of the budget (default 15 minutes):

1. ``assets.py`` — the dense asset (ffmpeg, once; cached in ``bench/.cache``);
2. ``cipher.py`` — AES-128 / cbcs / cenc by segment size vs ``openssl speed``;
3. ``protect.py`` — cbcs/cenc protection vs Shaka Packager (marginal rate);
4. ``protect_cipher.py --quick`` — the cbcs/cenc ciphers alone, by layout;
5. ``sample_aes.py`` — MPEG-TS SAMPLE-AES beside AES-128;
6. ``http_load.py`` — wrk against ``origin serve`` and nginx, and py-spy on
   the workers for every missed HTTP target;
7. py-spy on ``workload.py`` for a missed cipher or packaging target;
8. ``report.py`` — ``bench/RESULTS.md`` and the plots from the JSON.

A step that fails or runs out of time is recorded (exit code, seconds) and the
suite goes on, so the report shows what was measured.  On a time-out the step
gets SIGINT first (its ``finally`` blocks stop the servers it started by PID),
then, if still there after a grace period, SIGKILL to its own process group.
Writes ``bench/results/run.json`` (commands, durations, machine, versions,
load average, workload profiles).

    .venv/bin/python bench/run.py [--budget SECONDS] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from machine import machine_info, read_load_average, tool_versions
from profiles import PROFILES, record_pids
from targets import cipher_verdicts, protect_verdicts

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = BENCH / "results"
GRACE = 45.0
PROFILE_SECONDS = 4
READY_TIMEOUT = 60.0
RESERVE = 40.0  # seconds kept for the profiles and the report


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    script: str
    args: tuple[str, ...] = ()
    cap: float = 600.0  # longest this step may take, whatever the budget

    def command(self) -> list[str]:
        return [sys.executable, str(BENCH / self.script), *self.args]


def steps(quick: bool) -> list[Step]:
    q = ("--quick",) if quick else ()
    return [
        Step("assets", "assets.py", cap=600),
        Step("cipher", "cipher.py", q, cap=180),
        Step("packaging", "protect.py", q, cap=300),
        Step("protect_cipher", "protect_cipher.py", ("--quick",), cap=120),
        Step("sample_aes", "sample_aes.py", cap=180),
        Step("http", "http_load.py", q, cap=720),
    ]


def run_step(step: Step, timeout: float) -> dict[str, Any]:
    """Run one step, its output passed through; stop it (SIGINT, then SIGKILL) at ``timeout``."""
    print(f"\n== {step.name}: {' '.join(step.command()[1:])} (≤ {timeout:.0f} s)", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(step.command(), cwd=ROOT, start_new_session=True)
    status: int | str
    try:
        status = proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        print(f"== {step.name}: out of time, stopping it", flush=True)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=GRACE)
        status = "timeout"
    seconds = time.monotonic() - started
    print(f"== {step.name}: {'ok' if status == 0 else status} in {seconds:.0f} s", flush=True)
    return {"name": step.name, "command": ["python", f"bench/{step.script}", *step.args],
            "seconds": round(seconds, 1), "returncode": status}


def read_json(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return {}
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def profile_workload(name: str, workload: str) -> dict[str, Any]:
    """py-spy on ``workload.py`` once it says it is ready (imports done), then stop it."""
    command = [sys.executable, str(BENCH / "workload.py"), workload,
               "--seconds", str(PROFILE_SECONDS + 5)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        if not ready or proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the workload did not get ready")
        profile = record_pids(name, [proc.pid], PROFILE_SECONDS)
        profile["how"] = f"{profile['how']} on python bench/workload.py {workload}"
        return profile
    finally:
        proc.kill()
        proc.wait(timeout=GRACE)
        if proc.stdout is not None:
            proc.stdout.close()


def workload_profiles(deadline: float) -> list[dict[str, Any]]:
    """py-spy on an in-process loop for each missed or marginal cipher or packaging target."""
    verdicts = cipher_verdicts(read_json("cipher")) + protect_verdicts(read_json("protect"))
    missed = [v.profile for v in verdicts if v.profiled]
    found = []
    for name in missed:
        if time.monotonic() + PROFILE_SECONDS + READY_TIMEOUT > deadline:
            print(f"[profile] {name}: skipped, out of time", flush=True)
            continue
        assert name is not None
        workload = name.rsplit("-", 1)[1]
        print(f"[profile] {name}: py-spy on bench/workload.py {workload}", flush=True)
        try:
            found.append(profile_workload(name, workload))
        except (OSError, subprocess.SubprocessError, RuntimeError) as error:
            print(f"[profile] {name}: failed: {error}", flush=True)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the whole benchmark suite")
    parser.add_argument("--budget", type=float, default=900.0, help="seconds for everything")
    parser.add_argument("--quick", action="store_true", help="short points, fewer sizes")
    args = parser.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget
    for stale in (*PROFILES.glob("*.txt"), *PROFILES.glob("*.svg")):
        stale.unlink()  # the profiles of this run only
    document: dict[str, Any] = {
        "benchmark": "make bench: the whole suite",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "budget_seconds": args.budget,
        "quick": args.quick,
        "load_average_start": read_load_average(),
        "steps": [],
    }
    print(f"bench: the whole suite, budget {args.budget / 60:.0f} min; load average "
          f"{document['load_average_start']}", flush=True)
    load = document["load_average_start"]
    if load is not None and load[0] > 1.0:
        print("bench: warning: the machine is busy; other work skews the figures (the HTTP "
              "tables flag points where it took over 10 % of the CPU)", flush=True)
    for step in steps(args.quick):
        left = deadline - time.monotonic() - RESERVE
        if left <= 5:
            print(f"== {step.name}: skipped, out of time", flush=True)
            document["steps"].append({"name": step.name, "command": step.command()[1:],
                                      "seconds": 0, "returncode": "skipped"})
            continue
        document["steps"].append(run_step(step, min(step.cap, left)))
    document["profiles"] = workload_profiles(deadline)
    document["load_average_end"] = read_load_average()
    document["machine"] = machine_info("openssl")
    from tests.tools.packager import PACKAGER

    document["versions"] = tool_versions(str(PACKAGER))
    document["seconds_taken"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "run.json").write_text(json.dumps(document, indent=2) + "\n")
    report = run_step(Step("report", "report.py", cap=120), 120)
    print(f"\nbench: done in {(time.monotonic() - started) / 60:.1f} min; see bench/RESULTS.md",
          flush=True)
    failed = [s["name"] for s in [*document["steps"], report] if s["returncode"] != 0]
    if failed:
        print(f"bench: steps that did not finish cleanly: {', '.join(failed)}", flush=True)
    return 1 if report["returncode"] != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
