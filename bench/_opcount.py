"""Run ``python -m MODULE ARGS`` counting the bytecodes each function executes (bench/opcodes.py).

Usage: python bench/_opcount.py OUT PYTHON -m MODULE [ARGS...]

``PYTHON`` is ignored (it is where a launcher puts the interpreter it wraps,
see ``tests.server_harness.ServerProcess``). Counting starts on SIGUSR1 and
stops on SIGUSR2, which also writes OUT (whole, by a rename): one JSON object per line,
``{"opcodes": N, "calls": C, "function": "path:line(qualname)"}``, most
opcodes first. Only the main thread is traced (the event loop's); the trace
makes the process tens of times slower, so counts are the figure, not time.
"""

from __future__ import annotations

import collections
import json
import os
import runpy
import signal
import sys
from types import CodeType, FrameType
from typing import Any

_opcodes: collections.Counter[CodeType] = collections.Counter()
_calls: collections.Counter[CodeType] = collections.Counter()


def _local(frame: FrameType, event: str, _arg: Any) -> Any:
    if event == "opcode":
        _opcodes[frame.f_code] += 1
    return _local


def _global(frame: FrameType, _event: str, _arg: Any) -> Any:
    _calls[frame.f_code] += 1  # a call, or a generator or coroutine resumed
    frame.f_trace_opcodes = True
    return _local


def _start(_signum: int, frame: FrameType | None) -> None:
    sys.settrace(_global)
    while frame is not None:  # the frames already running (the event loop's) count too
        frame.f_trace = _local
        frame.f_trace_opcodes = True
        frame = frame.f_back


def _stop(out: str) -> None:
    """Write the counts to ``out.part``, then rename it to ``out``: a reader never sees half."""
    sys.settrace(None)
    part = out + ".part"
    with open(part, "x", encoding="utf-8") as handle:
        for code, count in _opcodes.most_common():
            handle.write(json.dumps({
                "opcodes": count, "calls": _calls[code],
                "function": f"{code.co_filename}:{code.co_firstlineno}({code.co_qualname})",
            }) + "\n")
    os.rename(part, out)  # both names are ours: the benchmark's fresh directory


def main() -> None:
    out, _python, flag, module, *args = sys.argv[1:]
    if flag != "-m":
        raise SystemExit("usage: _opcount.py OUT PYTHON -m MODULE [ARGS...]")
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, lambda _signum, _frame: _stop(out))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
