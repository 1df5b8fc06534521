"""trainer/allocator.py: after keep_freed_memory a freed 16 MiB block stays in the heap (glibc no
longer maps it afresh nor gives it back), as glibc's own counters say; IMBTUI_MALLOC=default
leaves glibc as it comes. Each case runs in a child process: the setting is process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.allocator import glibc

REPO = Path(__file__).resolve().parents[2]

# malloc a 16 MiB block, free it, then ask glibc (mallinfo2, its own statistics) how many bytes it
# had in fresh mappings while the block lived, and how much free memory the heap keeps afterwards
CHILD = """
import ctypes, json, sys
sys.path.insert(0, {repo!r})
from trainer.allocator import glibc, keep_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = glibc()
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
kept = keep_freed_memory()
size = 16 * 2**20
p = libc.malloc(size)
ctypes.memset(p, 1, size)
mapped = libc.mallinfo2().hblkhd
libc.free(p)
print(json.dumps({{"kept": kept, "mapped": mapped, "free_in_heap": libc.mallinfo2().fordblks}}))
"""


def child(env: dict[str, str]) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO))], text=True,
                         capture_output=True, check=True,
                         env={**{k: v for k, v in os.environ.items() if k != "IMBTUI_MALLOC"},
                              **env})
    return json.loads(out.stdout)


needs_glibc = pytest.mark.skipif(glibc() is None or not hasattr(glibc(), "mallinfo2"),
                                 reason="needs glibc >= 2.33 (mallinfo2)")


@needs_glibc
def test_a_freed_block_stays_in_the_heap() -> None:
    got = child({})
    assert got["kept"] is True
    assert got["mapped"] < 16 * 2**20  # served from the heap, not a mapping of its own
    assert got["free_in_heap"] >= 16 * 2**20  # and kept there once freed


@needs_glibc
def test_imbtui_malloc_default_leaves_glibc_as_it_comes() -> None:
    got = child({"IMBTUI_MALLOC": "default"})
    assert got["kept"] is False
    assert got["mapped"] >= 16 * 2**20  # glibc maps a block this size afresh
    assert got["free_in_heap"] < 16 * 2**20  # and unmaps it when freed
