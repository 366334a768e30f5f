"""The real backbones: torchvision's ResNet-50 (random-init state dict written here) and a small Hugging Face BERT
(config, vocabulary and weights written here). `make test` runs this file in the second environment
(.venv-vision: torch 2.14.1 + torchvision 0.29.1 + transformers) with MEMAWARE_REQUIRE_BACKBONES=1, where a
missing package fails instead of skipping.

Values, not shapes: `memaware features` equals a direct forward pass of the same network on the same inputs;
`memaware train` end to end moves every backbone weight; loading never touches the network; a tokenizer without its
vocabulary and every corrupt weights file are one-line errors (exit 2)."""

from __future__ import annotations

import importlib
import os
import socket

import numpy as np
import pytest
import torch
from layout_fixtures import make_civilcomments, make_waterbirds

from memaware.cli import main
from memaware.data import load_npz
from memaware.data.datasets import open_dataset
from memaware.errors import ConfigError
from memaware.models.backbones import make_backbone

REQUIRED = os.environ.get("MEMAWARE_REQUIRE_BACKBONES") == "1"


def need(module: str):
    """The module; in the backbone environment (``MEMAWARE_REQUIRE_BACKBONES=1``) a failed import fails the test,
    elsewhere it skips (torchvision does not import beside the main environment's torch)."""
    if REQUIRED:
        return importlib.import_module(module)
    try:
        return importlib.import_module(module)
    except Exception as e:  # noqa: BLE001  (torchvision built for another torch raises RuntimeError at import)
        pytest.skip(f"{module} does not import here ({type(e).__name__}); `make test` runs this in .venv-vision")


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    torchvision = need("torchvision")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("resnet") / "resnet50-test.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A 2-layer BERT (hidden 32) with a WordPiece vocabulary of the CivilComments fixture's words."""
    transformers = need("transformers")
    folder = tmp_path_factory.mktemp("bert") / "bert"
    words = "comment you are awful nice really second line - : , \" ' .".split() + [str(i) for i in range(14)]
    vocab = folder.parent / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    transformers.BertTokenizer(str(vocab)).save_pretrained(folder)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=5 + len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip
    transformers.BertModel(cfg).save_pretrained(folder)
    return folder


@pytest.fixture()
def no_network(monkeypatch):
    """Any name lookup or connection attempt fails the test (and is recorded)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


# ---- ResNet-50 ----------------------------------------------------------------------------------------------------
def test_resnet50_features_equal_a_direct_forward_pass(tmp_path, resnet_file, no_network):
    torchvision = need("torchvision")
    make_waterbirds(tmp_path / "data", n_per_split=3)
    out = tmp_path / "f.npz"
    args = ["features", "--dataset", "waterbirds", "--data-dir", str(tmp_path / "data"), "--backbone", "resnet50",
            "--weights", str(resnet_file), "--image-size", "64", "--batch-size", "4", "--out", str(out), "--quiet"]
    assert main(args) == 0  # fmt: skip
    feats = load_npz(out)
    net = torchvision.models.resnet50(weights=None)
    net.load_state_dict(torch.load(resnet_file, weights_only=True))
    net.fc = torch.nn.Identity()
    net.eval()
    dataset = open_dataset("waterbirds", tmp_path / "data", image_size=64)
    with torch.no_grad():
        direct = net(dataset.load(torch.arange(len(dataset))))
    assert feats.x.shape == (len(dataset), 2048)
    torch.testing.assert_close(feats.x, direct, rtol=1e-4, atol=1e-5)
    assert float(direct.std()) > 0  # real activations, not a constant


def test_resnet50_end_to_end_moves_every_backbone_weight(tmp_path, resnet_file):
    make_waterbirds(tmp_path / "data", n_per_split=4)
    out = tmp_path / "run"
    args = ["train", "--dataset", "waterbirds", "--data-dir", str(tmp_path / "data"), "--backbone", "resnet50",
            "--weights", str(resnet_file), "--image-size", "32", "--method", "erm", "--batch-size", "4",
            "--max-steps", "3", "--epochs", "3", "--weight-decay", "0", "--lr", "0.01", "--out", str(out), "--quiet"]
    assert main(args) == 0  # fmt: skip
    before = torch.load(resnet_file, weights_only=True)
    after = torch.load(out / "model.pt", weights_only=True)
    trained = {k[len("backbone."):]: v for k, v in after.items() if k.startswith("backbone.")}
    weights = [k for k in before if not k.startswith("fc.") and "running" not in k and "num_batches" not in k]
    unchanged = [k for k in weights if torch.equal(before[k], trained[k])]
    assert not unchanged, f"{len(unchanged)} of {len(weights)} backbone tensors never moved: {unchanged[:3]}"
    import json

    res = json.loads((out / "results.json").read_text())
    # the image recipe (docs/optimisation.md): SGD with momentum 0.9, heads from zero
    assert (res["hparams"]["optimizer"], res["hparams"]["momentum"], res["hparams"]["init"]) == ("sgd", 0.9, "zeros")


def test_corrupt_resnet_weights_are_one_line(tmp_path, capsys):
    need("torchvision")
    make_waterbirds(tmp_path / "data", n_per_split=2)
    bad = tmp_path / "resnet50-bad.pth"
    bad.write_bytes(b"PK\x03\x04 this is not a state dict")
    out = tmp_path / "f.npz"
    assert main(["features", "--dataset", "waterbirds", "--data-dir", str(tmp_path / "data"), "--backbone",
                 "resnet50", "--weights", str(bad), "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a loadable ResNet-50 state dict" in err and not out.exists()


# ---- BERT -----------------------------------------------------------------------------------------------------------
def test_bert_features_equal_a_direct_forward_pass(tmp_path, bert_dir, no_network):
    transformers = need("transformers")
    fx = make_civilcomments(tmp_path / "data")
    out = tmp_path / "f.npz"
    assert main(["features", "--dataset", "civilcomments", "--data-dir", str(tmp_path / "data"), "--backbone", "bert",
                 "--weights", str(bert_dir), "--max-length", "12", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    feats = load_npz(out)
    tok = transformers.AutoTokenizer.from_pretrained(bert_dir, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(bert_dir, local_files_only=True).eval()
    texts = [fx["texts"][r[1]] for r in fx["rows"]]
    with torch.no_grad():
        inputs = tok(texts, padding=True, truncation=True, max_length=12, return_tensors="pt")
        direct = model(**inputs).pooler_output
    assert inputs["input_ids"].shape[1] == 12  # the cut: --max-length, not 220
    assert int((inputs["input_ids"] == tok.unk_token_id).sum()) == 0  # every word is in the vocabulary
    torch.testing.assert_close(feats.x, direct, rtol=1e-4, atol=1e-5)
    assert len(np.unique(feats.x.numpy().round(5), axis=0)) > 4  # distinct texts, distinct features


def test_bert_end_to_end_moves_every_backbone_weight_with_the_text_recipe(tmp_path, bert_dir):
    import json

    make_civilcomments(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "--dataset", "civilcomments", "--data-dir", str(tmp_path / "data"), "--backbone", "bert",
                 "--weights", str(bert_dir), "--method", "erm", "--batch-size", "8", "--max-steps", "4",
                 "--epochs", "2", "--lr", "1e-3", "--weight-decay", "0", "--max-length", "16", "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    hp = res["hparams"]
    # the text recipe: AdamW, linear warm-up and decay, clipping, dropout before the heads, heads from zero
    assert (hp["optimizer"], hp["schedule"], hp["warmup_fraction"]) == ("adamw", "linear", 0.1)
    assert (hp["clip_grad_norm"], hp["head_dropout"], hp["init"], hp["decay_rule"]) == (1.0, 0.1, "zeros", "standard")
    before = {f"backbone.model.{k}": v for k, v in _bert_state(bert_dir).items()}
    after = torch.load(out / "model.pt", weights_only=True)
    unchanged = [k for k, v in before.items() if torch.equal(v, after[k])]
    assert not unchanged, f"{len(unchanged)} of {len(before)} BERT tensors never moved: {unchanged[:3]}"


def _bert_state(folder) -> dict[str, torch.Tensor]:
    transformers = need("transformers")
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
    return {k: v.clone() for k, v in model.state_dict().items() if "position_ids" not in k}


def test_bert_without_weights_never_touches_the_network(monkeypatch, no_network):
    """Without --weights the hub name is looked up in the local cache only; a name no cache holds (so that a
    developer's cached bert-base-uncased cannot make this pass) fails with one line and no lookup of the hub."""
    need("transformers")
    import memaware.models.backbones as backbones

    monkeypatch.setattr(backbones, "BERT_DEFAULT", "memaware-tests/no-such-bert")
    with pytest.raises(ConfigError, match="without downloading"):
        make_backbone("bert")
    assert no_network == []


def test_tokenizer_folder_without_vocabulary_is_refused(tmp_path, bert_dir, capsys):
    import shutil

    folder = tmp_path / "novocab"
    shutil.copytree(bert_dir, folder)
    for name in ("vocab.txt", "tokenizer.json"):
        (folder / name).unlink(missing_ok=True)
    make_civilcomments(tmp_path / "data")
    out = tmp_path / "f.npz"
    assert main(["features", "--dataset", "civilcomments", "--data-dir", str(tmp_path / "data"), "--backbone", "bert",
                 "--weights", str(folder), "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no tokenizer vocabulary" in err and not out.exists()


@pytest.mark.parametrize("weights_file", ["model.safetensors", "pytorch_model.bin"])
def test_corrupt_bert_weights_are_one_line(tmp_path, bert_dir, capsys, weights_file):
    import shutil

    folder = tmp_path / "corrupt"
    shutil.copytree(bert_dir, folder)
    for name in ("model.safetensors", "pytorch_model.bin"):
        (folder / name).unlink(missing_ok=True)
    (folder / weights_file).write_bytes(b"\x00\x01 truncated " * 10)
    make_civilcomments(tmp_path / "data")
    out = tmp_path / "f.npz"
    assert main(["features", "--dataset", "civilcomments", "--data-dir", str(tmp_path / "data"), "--backbone", "bert",
                 "--weights", str(folder), "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot load BERT weights" in err and not out.exists()


def test_quiet_bert_run_prints_nothing(tmp_path, bert_dir, capfd):
    make_civilcomments(tmp_path / "data")
    out = tmp_path / "f.npz"
    assert main(["features", "--dataset", "civilcomments", "--data-dir", str(tmp_path / "data"), "--backbone", "bert",
                 "--weights", str(bert_dir), "--out", str(out), "--quiet"]) == 0  # fmt: skip
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
