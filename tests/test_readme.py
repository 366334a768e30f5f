"""Every code block of README.md and docs/estimators.md runs as written, so the documentation and the behaviour
cannot drift apart.

Each block runs on its own in an empty temporary folder (its own imports and data, nothing from an earlier block):
a ``python`` block as a script, a ``bash`` block with ``bash -e``, the environment's ``bin`` first on ``PATH``. What is
not run, each with its reason:

- ``make ...`` lines (they build environments: the Makefile is what ``make test`` runs);
- a block preceded by ``<!-- readme-test: skip (reason) -->``;
- a block holding a text of ``NEEDS`` (data or machines this test does not have).

A ``python`` block whose first line is ``# path/to/file.py`` is a file of the example: it is written there, into the
folder of the blocks that follow it in the same file, instead of being run. A block that is an example of a long
run is run at tiny sizes through ``TINY`` (a text of the block and what replaces it); a block run as written must
finish in ``LIMIT_S`` seconds (the README promises 30 s on 2 cores; the limit leaves room for a loaded machine).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md", ROOT / "docs" / "estimators.md")
LIMIT_S = float(os.environ.get("MEMAWARE_README_LIMIT_S", "90"))
SKIP_MARK = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")
FILE_HEADER = re.compile(r"^#\s*(?P<path>[\w./-]+\.py)\s*$")

# a text of the block -> why the block cannot run here
NEEDS = {
    "--data-dir ~/data": "reads the real datasets (Waterbirds, CelebA, MultiNLI, CivilComments) from the user's disk",
    "--executor slurm": "submits to a Slurm cluster (tests/test_slurm.py runs it on scripts/slurm_cluster.sh's)",
    "memaware prepare fashionbirds": "minutes of EfficientNet feature extraction (memaware reproduce's Table-1 stage "
    "and tests/test_fashionbirds_regime.py run it)",
    "pip install": "installs packages (the pip route is measured by hand: BENCHMARKS.md)",
}
SYNTH_TINY = "--n-train 200 --n-val 100 --n-test 100 --noise-dim 200"
# long examples at tiny sizes: (a text of the block, its replacement); every entry must match a block
TINY = [
    ("memaware synth --out data.npz --sigma 0.5", f"memaware synth --out data.npz --sigma 0.5 {SYNTH_TINY}"),
    ("--method erm --out runs/erm", "--method erm --epochs 50 --out runs/erm"),
    ("--method mat --out runs/mat ", "--method mat --epochs 50 --out runs/mat "),
    ("--mat-mode single-run --out runs/mat1", "--mat-mode single-run --epochs 50 --out runs/mat1"),
    ("memaware synth --out s21.npz", f"memaware synth --out s21.npz {SYNTH_TINY}"),
    ("--estimator subsample --out audit/", "--estimator subsample --epochs 50 --num-models 4 --out audit/"),
    ("memaware synth --out data.npz\n", f"memaware synth --out data.npz {SYNTH_TINY}\n"),
    ("--n-hparams 10 --seeds 3 --out sw", "--n-hparams 1 --seeds 1 --set epochs=20 --out sw"),
    ("--method-param gamma=1 --out runs/focal", "--method-param gamma=1 --epochs 20 --out runs/focal"),
    (
        "memaware sweep --data fb.npz adult.npz",
        f"memaware synth --out fb.npz {SYNTH_TINY}\nmemaware synth --out adult.npz {SYNTH_TINY} --seed 1\n"
        "memaware sweep --data fb.npz adult.npz",
    ),
    ("--n-hparams 10 --seeds 3 \\\n    --vectorized", "--n-hparams 1 --seeds 1 --set epochs=20 \\\n    --vectorized"),
]


@dataclass
class Block:
    doc: Path
    line: int  # of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason of a readme-test: skip mark

    @property
    def id(self) -> str:
        return f"{self.doc.name}:{self.line}-{self.lang}"


def blocks(doc: Path) -> list[Block]:
    """The fenced ``python`` / ``bash`` blocks of ``doc``, with the reason of a skip mark on the line before."""
    found, lines, i = [], doc.read_text().splitlines(), 0
    while i < len(lines):
        start = FENCE.match(lines[i])
        if not start or not start.group("lang"):
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = SKIP_MARK.search(before)
        if start.group("lang") in ("python", "bash"):
            code = "\n".join(lines[i + 1 : end]) + "\n"
            found.append(Block(doc, i + 1, start.group("lang"), code, mark.group("reason") if mark else None))
        i = end + 1
    return found


ALL = [b for doc in DOCS for b in blocks(doc)]


def shrink(code: str) -> tuple[str, bool]:
    """The block at tiny sizes (``TINY``) without its ``make`` lines; whether anything was replaced."""
    tiny = code
    for old, new in TINY:
        tiny = tiny.replace(old, new)
    kept = [line for line in tiny.splitlines() if not re.match(r"\s*make(\s|$)", line)]
    return "\n".join(kept) + "\n", tiny != code


def workdir(block: Block, tmp_path: Path) -> Path:
    """An empty folder holding the files (``# path.py`` blocks) written earlier in the block's document."""
    for earlier in ALL:
        if earlier.doc == block.doc and earlier.line < block.line:
            header = FILE_HEADER.match(earlier.code.splitlines()[0])
            if earlier.lang == "python" and header:
                target = tmp_path / header.group("path")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(earlier.code)
    return tmp_path


@pytest.mark.parametrize("block", ALL, ids=[b.id for b in ALL])
def test_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    if block.skip is not None:
        pytest.skip(f"marked in {block.doc.name}: {block.skip}")
    need = next((why for text, why in NEEDS.items() if text in block.code), None)
    if need is not None:
        pytest.skip(need)
    if block.lang == "python" and FILE_HEADER.match(block.code.splitlines()[0]):
        compile(block.code, block.id, "exec")  # a file of the example: it must at least be Python
        return
    code, shrunk = shrink(block.code)
    if not code.strip():
        pytest.skip("only make lines")
    cwd = workdir(block, tmp_path)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "MPLBACKEND": "Agg"}
    env.pop("PYTHONPATH", None)  # the block must set up its own imports
    if block.lang == "python":
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", code]
    began = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - began
    assert done.returncode == 0, f"{block.id} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    print(f"{block.id}: {seconds:.1f} s{' (tiny sizes)' if shrunk else ''}")
    if not shrunk:
        assert seconds <= LIMIT_S, f"{block.id} took {seconds:.0f} s: the README promises seconds"


def test_tiny_substitutions_and_needs_match_blocks() -> None:
    """A substitution or a skip reason that matches no block is stale: the block it was written for changed."""
    text = "".join(b.code for b in ALL)
    assert [old for old, _ in TINY if old not in text] == []
    assert [need for need in NEEDS if need not in text] == []


def test_the_parser_reads_marks_files_and_fences(tmp_path: Path) -> None:
    doc = tmp_path / "DOC.md"
    doc.write_text(
        "text\n\n<!-- readme-test: skip (needs a GPU) -->\n\n```bash\nnvidia-smi\n```\n\n"
        "```python\n# pkg/mod.py\nX = 1\n```\n\n```text\nnot code\n```\n\n```bash\nmake test\necho hi\n```\n"
    )
    found = blocks(doc)
    assert [(b.lang, b.skip) for b in found] == [("bash", "needs a GPU"), ("python", None), ("bash", None)]
    assert found[0].line == 5 and found[1].code == "# pkg/mod.py\nX = 1\n"
    assert shrink(found[2].code) == ("echo hi\n", False)
