"""Sampling profiles of the daemon with py-spy, and a plain-text summary of them.

``python -m bench --profile DIR`` records ``DIR/<daemon>.txt`` (py-spy's "raw" collapsed-stack
format, one line per distinct stack with its sample count) for each daemon it starts;
``python -m bench.profile FILE [--top N] [--focus TEXT]`` prints where the samples went: by
package, by function (self), by function (inclusive).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from subprocess import DEVNULL

import trio

RATE = 200  # samples per second


@asynccontextmanager
async def profiled(pid: int, output: Path | None) -> AsyncIterator[None]:
    """Sample ``pid`` with py-spy during the block (nothing when ``output`` is None)."""
    if output is None:
        yield
        return
    spy = Path(sys.executable).with_name("py-spy")
    command = [str(spy), "record", "--format", "raw", "--nonblocking", "--rate", str(RATE)]
    command += ["--pid", str(pid), "--output", str(output)]
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, command, check=False, stdout=DEVNULL, stderr=DEVNULL)
        )
        await trio.sleep(0.5)  # let py-spy attach
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                with trio.move_on_after(10):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()


def read_stacks(lines: Iterable[str]) -> Counter[tuple[str, ...]]:
    """``frame;frame;... count`` lines -> stacks (outermost first) with their sample counts."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def _function(frame: str) -> str:
    """``fn (path/to/mod.py:12)`` -> ``fn (path/to/mod.py)``: aggregate over lines."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def _package(frame: str) -> str:
    where = frame.partition(" (")[2].rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 2)[0 if marker == "site-packages/" else 1].removesuffix(".py")
    return path.split("/", 1)[0].removesuffix(".py") or "?"


def summary(stacks: Counter[tuple[str, ...]], top: int = 25) -> str:
    total = sum(stacks.values()) or 1
    by_self: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        if not stack:
            continue
        by_self[_function(stack[-1])] += count
        by_package[_package(stack[-1])] += count
        for name in {_function(frame) for frame in stack}:
            inclusive[name] += count
    out = [f"{total} samples ({total / RATE:.1f} s of CPU at {RATE}/s)", "", "self, by package:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in by_package.most_common(top)]
    out += ["", "self, by function:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in by_self.most_common(top)]
    out += ["", "inclusive, by function:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("file", type=Path, help="a py-spy raw profile")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--focus", help="keep only stacks with a frame containing this text")
    args = parser.parse_args(argv)
    stacks = read_stacks(args.file.read_text().splitlines())
    if args.focus:
        stacks = Counter({s: n for s, n in stacks.items() if any(args.focus in f for f in s)})
    print(summary(stacks, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
