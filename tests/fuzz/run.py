"""Run the atheris harnesses and record what they did in ``tests/fuzz/results.json``.

    python tests/fuzz/run.py --seconds N [--jobs 2] [family …]

Each harness (``fuzz_<family>.py``) fuzzes for ``--seconds`` of wall time from
its seed corpus (``corpus/<family>``, rebuilt by ``make_corpus.py`` when missing)
and the corpus it grew before (``work/<family>``).  libFuzzer stops at a crash;
the run then starts again with the time left, so one crash does not end the
family's run (at most ``MAX_RESTARTS`` times).  Crashing inputs are kept in
``artifacts/<family>/``, each run's output in ``logs/<family>.log``.

``results.json``: per family the executed inputs (libFuzzer's final
``stat::number_of_executed_units``, else its ``Done N runs`` line, else the last
status line's ``#N``), the seconds spent, and each crash: file, target (the
input's first byte names it), and the exception atheris reported.  Exit status 1
if any harness crashed or failed to run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz.families import NAMES, family  # noqa: E402
from tests.fuzz.make_corpus import CORPUS, build  # noqa: E402

WORK = HERE / "work"
ARTIFACTS = HERE / "artifacts"
LOGS = HERE / "logs"
RESULTS = HERE / "results.json"
MAX_RESTARTS = 20
INPUT_TIMEOUT_S = 20  # one input taking longer is a hang (libFuzzer -timeout)
RSS_LIMIT_MB = 2048
MAX_LEN = 128 * 1024

_UNITS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_DONE = re.compile(r"Done (\d+) runs in")
_STATUS = re.compile(r"^#(\d+)\s", re.MULTILINE)
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_EXCEPTION = re.compile(r"=== Uncaught Python exception: ===\n(.+)")


def executed(log: str) -> int:
    """How many inputs one libFuzzer run executed, from its output."""
    for pattern in (_UNITS, _DONE):
        found = pattern.findall(log)
        if found:
            return int(found[-1])
    found = _STATUS.findall(log)
    return int(found[-1]) if found else 0


def crash_of(log: str, name: str) -> dict[str, str] | None:
    """The crash one libFuzzer run reported (artifact file, target, exception), if any."""
    artifact = _ARTIFACT.search(log)
    if artifact is None:
        return None
    path = Path(artifact.group(1))
    data = path.read_bytes() if path.exists() else b""
    members = family(name)
    target = members[data[0] % len(members)].name if data else members[0].name
    error = _EXCEPTION.search(log)
    kind = "timeout" if "ERROR: libFuzzer: timeout" in log else (
        "out of memory" if "out-of-memory" in log else "crash")
    return {"file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
            "target": target, "kind": kind,
            "error": error.group(1).strip() if error else kind, "input_hex": data[:512].hex()}


def fuzz(name: str, seconds: int) -> dict[str, object]:
    """Run ``fuzz_<name>.py`` for ``seconds`` of wall time, restarting after crashes."""
    if not (CORPUS / name).is_dir():
        build(name)
    work, artifacts = WORK / name, ARTIFACTS / name
    work.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(exist_ok=True)
    deadline = time.monotonic() + seconds
    runs = 0
    crashes: list[dict[str, str]] = []
    exit_codes: list[int] = []
    started = time.monotonic()
    with open(LOGS / f"{name}.log", "w") as log_file:
        while len(exit_codes) <= MAX_RESTARTS:
            left = int(deadline - time.monotonic())
            if left < 5:
                break
            command = [sys.executable, str(HERE / f"fuzz_{name}.py"), str(work),
                       str(CORPUS / name), f"-max_total_time={left}",
                       f"-timeout={INPUT_TIMEOUT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}",
                       f"-max_len={MAX_LEN}", f"-artifact_prefix={artifacts}/",
                       "-print_final_stats=1"]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                  errors="replace", timeout=left + 120, check=False)
            output = done.stdout + done.stderr
            log_file.write(output)
            exit_codes.append(done.returncode)
            runs += executed(output)
            crash = crash_of(output, name)
            if crash is not None:
                crashes.append(crash)
            elif done.returncode != 0:
                crashes.append({"file": "", "target": "", "kind": "harness failed",
                                "error": output.strip().splitlines()[-1] if output.strip()
                                else f"exit {done.returncode}", "input_hex": ""})
                break
            else:
                break
    return {"budget_s": seconds, "runs": runs, "seconds": round(time.monotonic() - started, 1),
            "starts": len(exit_codes), "exit_codes": exit_codes,
            "corpus_files": sum(1 for _ in work.iterdir()), "crashes": crashes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, required=True, help="wall time per harness")
    parser.add_argument("--jobs", type=int, default=1, help="harnesses run at once")
    parser.add_argument("names", nargs="*", help=f"families (default: all of {', '.join(NAMES)})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(NAMES))
    if unknown:
        parser.error(f"unknown family {unknown[0]!r}")
    names = args.names or list(NAMES)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = dict(zip(names, pool.map(lambda n: fuzz(n, args.seconds), names), strict=True))
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    harnesses = {**previous.get("harnesses", {}), **results}
    RESULTS.write_text(json.dumps({
        "updated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "harnesses": dict(sorted(harnesses.items())),
    }, indent=2) + "\n")
    for name, result in results.items():
        crashes = result["crashes"]
        assert isinstance(crashes, list)
        print(f"{name:8} {result['runs']:>9} runs in {result['seconds']:>6} s, "
              f"{len(crashes)} crash(es)")
        for crash in crashes:
            print(f"         {crash['target']}: {crash['error']} ({crash['file']})")
    return 1 if any(r["crashes"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
