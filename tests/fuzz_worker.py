"""Decodes media files named on stdin, one JSON result line each, under memory and time limits.

Run by tests/test_fuzz_media.py as a subprocess so that a decoder crash or hang costs one input,
not the test run: the parent restarts a worker that died or went silent.
"""

from __future__ import annotations

import json
import resource
import signal
import sys

from stream.config import load_config
from stream.sources.file import SourceError, open_source

MEMORY_LIMIT = 2 << 30  # address space; a pathological allocation fails instead of swapping
PER_FILE_S = 10


class TimeLimit(Exception):
    pass


def _alarm(_sig: int, _frame: object) -> None:
    raise TimeLimit()


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGALRM, _alarm)
    cfg = load_config().source
    for line in sys.stdin:
        path = line.strip()
        result: dict = {"file": path, "frames": 0}
        signal.alarm(PER_FILE_S)
        try:
            with open_source(path, cfg) as src:
                while src.read() is not None:
                    result["frames"] += 1
            result["result"] = "ok"
        except SourceError as exc:
            result.update(result="error", message=str(exc))
        except TimeLimit:
            result["result"] = "timeout"
        except Exception as exc:  # an unexpected exception type is what the fuzz test hunts for
            result.update(result="unexpected", message=f"{type(exc).__name__}: {exc}")
        finally:
            signal.alarm(0)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
