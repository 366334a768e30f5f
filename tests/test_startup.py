"""The ``memaware`` command answers --help and bad arguments without importing torch (nor matplotlib, pandas,
transformers), and ``memaware datasets`` and ``memaware table`` run whole without torch: each case runs in a fresh
interpreter, whose ``sys.modules`` afterwards says what was imported."""

import json
import subprocess
import sys

import pytest
from dataset_trees import WRITERS
from sweep_fakes import LOGGED, fake_execute, write_logged_run

from memaware.cli import COMMANDS

HEAVY = ("torch", "matplotlib", "pandas", "transformers")
PROBE = """
import json, sys
from memaware.cli import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "heavy": [m for m in HEAVY if m in sys.modules]}), file=sys.stderr)
""".replace("HEAVY", repr(HEAVY))


def _probe(*argv: str, cwd=None) -> tuple[int, list[str], str]:
    """(exit code, heavy modules imported, stderr without the probe's own line) of ``memaware argv``."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(argv))], capture_output=True, text=True, cwd=cwd, timeout=120
    )
    *lines, last = proc.stderr.strip().splitlines()
    report = json.loads(last)
    return report["code"], report["heavy"], "\n".join(lines)


def test_train_help_and_a_bad_path_import_no_torch(tmp_path):
    code, heavy, _ = _probe("train", "--help")
    assert code == 0 and heavy == []
    code, heavy, err = _probe("train", "--data", "nope.npz", "--method", "erm", "--out", str(tmp_path), cwd=tmp_path)
    assert code == 2 and heavy == []
    assert "--data" in err and "nope.npz" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ("train", "--data", "x.npz", "--method", "no-such-method", "--out", "o"),  # the registry, without torch
        ("train", "--data", "x.npz", "--method", "jtt", "--lambda-up", "oops", "--out", "o"),  # a method flag's type
        ("theorem", "--out", "o", "--rho", "2"),  # checked by the sweep's settings (ConfigError), before any work
        ("fig3", "--out", "o", "--seeds", "0", "--sweep"),
        ("fig1", "--out", "o", "--sigma", "-1"),
        ("sweep", "--data", "x.npz", "--methods", "erm,,mat", "--out", "o"),
        ("memorization", "--data", "x.npz", "--methods", "nope", "--out", "o"),
    ],
)
def test_argument_errors_import_no_torch(tmp_path, argv):
    (tmp_path / "x.npz").write_bytes(b"")  # exists: the check under test is the one after the path check
    code, heavy, err = _probe(*argv, cwd=tmp_path)
    assert code == 2 and heavy == [], err
    assert err.startswith("memaware ") and len(err.splitlines()) == 1


def test_every_command_help_imports_nothing_heavy():
    for name, _, _ in COMMANDS:
        code, heavy, err = _probe(name, "--help")
        assert code == 0 and heavy == [], (name, heavy, err)


def test_datasets_never_imports_torch(tmp_path):
    """``memaware datasets`` reads metadata only: a whole run, with a dataset found and its export, is torch-free."""
    root = tmp_path / "data"
    WRITERS["waterbirds"]["standard"](root)
    WRITERS["celeba"]["standard"](root)
    code, heavy, err = _probe("datasets", "--data-dir", str(root), "--export", str(tmp_path / "export"))
    assert code == 0 and heavy == [], err
    assert (tmp_path / "export" / "waterbirds" / "metadata_waterbirds.csv").is_file()


def test_a_whole_table_run_never_imports_torch(tmp_path):
    """``memaware table`` reads runs, rescores their evaluation logs (evaluations.npz, with an XRM run's inferred
    groups), selects and writes the table in numpy: no torch, pandas or transformers, and no matplotlib either
    unless it draws the bar chart."""
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        for comb in LOGGED:
            write_logged_run(sweep, comb, seed, tmp_path / "xrm_groups.npz")
    spec = {"method": "groupdro", "dataset": "toy", "seed": 0, "comb": 0, "hparams": {"epochs": 1}}
    fake_execute(spec, sweep / "groupdro" / "comb0_seed0")  # results.json only, as an older sweep's runs
    for selection in ("val_wga", "val_gi_wga", "val_bias_unsup", "test_wga"):
        out = tmp_path / f"{selection}.json"
        argv = ("table", "--sweep", str(sweep), "--selection", selection, "--format", "json", "--no-plot")
        code, heavy, err = _probe(*argv, "--out", str(out))
        assert code == 0 and heavy == [], (selection, heavy, err)
        cells = {c["method"]: c for c in json.loads(out.read_text())["cells"]}
        assert cells["erm"]["n_seeds"] == 2, selection  # chosen from the logs
    code, heavy, err = _probe("table", "--sweep", str(sweep), "--out", str(tmp_path / "table.md"))
    assert code == 0 and heavy == ["matplotlib"], err  # the chart's, and only it
    assert "| ERM |" in (tmp_path / "table.md").read_text() and (tmp_path / "table.png").is_file()
