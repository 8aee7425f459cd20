"""Run every benchmark, one after another: ``python benchmarks/run_all.py [--quick]``.

Each script starts its own server process and measures only the client's CPU; see
benchmarks/README.md for what each one measures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs")
    args = parser.parse_args()
    runs = [
        ["bench_openai.py", *(["--quick"] if args.quick else [])],
        ["bench_responses.py", *(["--quick"] if args.quick else [])],
        ["bench_ollama.py", *(["--quick"] if args.quick else [])],
        ["bench_hf_local.py", *(["--repeats", "2"] if args.quick else []), "--json", "bench_hf_local.json"],
        ["bench_ratelimit.py", *(["--quick"] if args.quick else [])],
        ["bench_parsers.py", *(["--repeats", "1"] if args.quick else [])],
        ["bench_ray.py", *(["--quick"] if args.quick else [])],
        ["bench_jobs.py", *(["--rows", "2000", "--repeat", "1"] if args.quick else [])],
    ]
    failed = 0
    for script, *rest in runs:
        print(f"\n## {script}\n", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / script), *rest])
        if rc:
            print(f"{script} exited with {rc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
