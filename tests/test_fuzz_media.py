"""Fuzzing the file source with mutated real H.264/MP4 bytes, decoding isolated in a subprocess
under memory and time limits: every input ends in frames or one clear SourceError line — never a
crash, a hang, or another exception type. Bounded by FUZZ_SECONDS (default 25)."""

from __future__ import annotations

import json
import os
import random
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_source import make_video

REPO = Path(__file__).resolve().parents[1]
FUZZ_S = float(os.environ.get("FUZZ_SECONDS", "25"))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(FUZZ_S + 120)]


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    kind = rng.choice(("flip", "overwrite", "truncate", "duplicate", "zero", "shuffle"))
    if kind == "flip":
        for _ in range(rng.randint(1, 64)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == "overwrite":
        at = rng.randrange(len(b))
        b[at : at + 64] = rng.randbytes(64)
    elif kind == "truncate":
        del b[rng.randrange(1, len(b)) :]
    elif kind == "duplicate":
        at, n = rng.randrange(len(b)), rng.randint(1, 4096)
        b[at:at] = b[at : at + n]
    elif kind == "zero":
        at = rng.randrange(len(b))
        b[at : at + rng.randint(1, 2048)] = bytes(min(len(b) - at, 2048))[: rng.randint(1, 2048)]
    else:
        chunks = [b[i : i + 1024] for i in range(0, len(b), 1024)]
        i, j = rng.randrange(len(chunks)), rng.randrange(len(chunks))
        chunks[i], chunks[j] = chunks[j], chunks[i]
        b = bytearray(b"".join(chunks))
    return bytes(b)


class Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz_worker"],
            cwd=REPO,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def decode(self, path: Path, timeout: float = 30.0) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            line = self.proc.stdout.readline() if sel.select(timeout) else ""
        if not line:
            self.proc.kill()
            code = self.proc.wait(5)
            return {"file": str(path), "result": "died" if code else "hang", "code": code}
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(10)


@pytest.mark.parametrize(("codec", "suffix"), [("h264", "mp4"), ("h264", "mkv")])
def test_mutated_media_never_crashes_or_hangs(codec, suffix, tmp_path):
    base = make_video(tmp_path / f"base.{suffix}", codec, n=30)
    data = base.read_bytes()
    rng = random.Random(f"{codec}{suffix}")
    worker = Worker()
    results = []
    deadline = time.monotonic() + FUZZ_S / 2
    try:
        assert worker.decode(base)["result"] == "ok"
        i = 0
        while time.monotonic() < deadline:
            path = tmp_path / f"m{i}.{suffix}"
            path.write_bytes(mutate(data, rng))
            res = worker.decode(path)
            results.append(res)
            if res["result"] in ("died", "hang"):
                worker = Worker()  # one bad input costs one input
            else:
                path.unlink()
            i += 1
    finally:
        worker.close()
    outcomes = {
        r: sum(x["result"] == r for x in results) for r in ("ok", "error", "timeout", "unexpected", "died", "hang")
    }
    print(f"\n{codec}/{suffix}: {len(results)} mutated inputs: {outcomes}")
    bad = [r for r in results if r["result"] not in ("ok", "error")]
    assert len(results) >= 10
    assert not bad, bad[:3]
    assert all("\n" not in r.get("message", "") for r in results)
