"""Small download trees of every layout memaware reads, all written from ONE table per dataset (``TABLE``).

``TABLE[name]`` holds the raw facts of each example as the public releases record them (Waterbirds' img_id,
img_filename, split, y, place; CelebA's image name, partition and -1/1 attributes; MultiNLI's jsonl lines with their
genre, sentences and gold label plus group_DRO's random split; CivilComments' comment, split name and [0, 1] scores).
``EXPECTED[name]`` is the (split, y, a) per row that the community's metadata scripts build from those facts,
computed here by plain loops that restate the scripts' rules. ``WRITERS[name][layout](root) -> folder`` writes one
layout under ``root`` and returns the dataset folder (a test may point --data-dir at the root or at that folder).
"""

from __future__ import annotations

import csv
import json
import string
import sys
from pathlib import Path

import numpy as np
import torch
from layout_fixtures import glue_module
from PIL import Image

SPLITS = ("train", "val", "test")
WB_FOLDER = "waterbird_complete95_forest2water2"
CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male "
    "Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks "
    "Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
).split()
IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white")
NLI_LABELS = ("contradiction", "entailment", "neutral")
NLI_FILES = ("multinli_1.0_train.jsonl", "multinli_1.0_dev_matched.jsonl", "multinli_1.0_dev_mismatched.jsonl")
GLUE_FILES = (
    "cached_train_bert-base-uncased_128_mnli",
    "cached_dev_bert-base-uncased_128_mnli",
    "cached_dev_bert-base-uncased_128_mnli-mm",
)
WORDS = (
    "the a man woman dog cat child sat ran walked is was in on at park house city today yesterday quickly slowly "
    "happy sad people there are some many few it not no never nobody nothing said saw went home"
).split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", "##ing", "##ed", ".", ",", "!", "?", "'"]
MAX_LENGTH = 128


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _waterbirds_table() -> list[dict]:
    rows, rng = [], _rng(0)
    for s, counts in enumerate(((5, 2, 1, 4), (2, 2, 2, 2), (3, 3, 2, 2))):  # (y, place) = 00, 01, 10, 11
        for g, n in enumerate(counts):
            for _ in range(n):
                rows.append({"split": s, "y": g // 2, "place": g % 2})
    order = rng.permutation(len(rows))  # the release interleaves splits
    table = []
    for i, k in enumerate(order.tolist()):
        r = rows[k]
        species = f"{1 + i % 4:03d}.Species_{i % 4}"
        table.append({**r, "img_id": i + 1, "img_filename": f"{species}/Bird_{i:04d}.jpg"})
    return table


def _celeba_table() -> list[dict]:
    rng, table = _rng(1), []
    for s, counts in enumerate(((4, 3, 2, 1), (2, 2, 2, 1), (2, 3, 1, 1))):  # (blond, male) = 00, 01, 10, 11
        for g, n in enumerate(counts):
            for _ in range(n):
                attrs = {a: int(rng.choice((-1, 1))) for a in CELEBA_ATTRS}
                attrs["Blond_Hair"], attrs["Male"] = (1 if g // 2 else -1), (1 if g % 2 else -1)
                table.append({"partition": s, "attrs": attrs})
    for i, r in enumerate(table):  # the published lists are in file-name order, splits in blocks
        r["image"] = f"{i + 1:06d}.jpg"
    return table


def _sentence(rng: np.random.Generator, n: int, negate: bool) -> str:
    words = [str(w) for w in rng.choice(WORDS[:32], size=n)]  # no negation word unless asked
    if negate:
        words[int(rng.integers(n))] = str(rng.choice(("no", "never", "nobody", "nothing")))
    text = " ".join(words)
    if rng.random() < 0.3:
        text = text.capitalize() + "s, Zebra!"  # capitals, a wordpiece and an unknown word
    return text + "."


def negation(sentence: str) -> int:
    """group_DRO's rule: punctuation removed, lower-cased, split on spaces; any of the four negation words."""
    words = sentence.translate(str.maketrans("", "", string.punctuation)).lower().split(" ")
    return int(any(w in words for w in ("nobody", "no", "never", "nothing")))


def _multinli_table() -> list[dict]:
    rng, table = _rng(2), []
    for k, n in enumerate((24, 10, 10)):  # lines per jsonl file
        for i in range(n):
            planned = k == 0 and i < 18  # every (label, negation) group in every split
            long = i == 3  # a pair longer than 128 wordpieces: truncation must match the caches
            negate = (i // 3) % 2 == 1 if planned else bool(rng.random() < 0.4)
            s1 = _sentence(rng, 90 if long else int(rng.integers(3, 12)), False)
            s2 = _sentence(rng, 70 if long else int(rng.integers(3, 9)), negate)
            if planned:
                label, split = NLI_LABELS[i % 3], (i // 6) % 3
            else:
                label = "-" if (k > 0 and i == 5) else NLI_LABELS[(i + k) % 3]  # '-': in no split
                split = int(rng.choice(3, p=(0.5, 0.2, 0.3)))
            table.append({"file": k, "sentence1": s1, "sentence2": s2, "gold_label": label, "split": split})
    return table


def _civil_table() -> list[dict]:
    rng, table = _rng(3), []
    values = ("0.0", "0.1", "0.4999", "0.5", "0.8", "1.0", "")  # "" is pandas' NaN (counts as below 0.5)
    for s, split in enumerate(SPLITS):
        for i in range(16):
            ids = {c: str(rng.choice(values, p=(0.55, 0.1, 0.05, 0.1, 0.05, 0.05, 0.1))) for c in IDENTITIES}
            if s > 0 and i < 8:
                ids[IDENTITIES[i]] = "0.5"  # every identity appears in val and test
            tox = str(rng.choice(("0.0", "0.2", "0.5", "0.7", "1.0")))
            text = f' comment {split}-{i}: you are {"awful" if float(tox) >= 0.5 else "nice"}, "really"\nsecond line '
            table.append({"split": split, "toxicity": tox, "ids": ids, "text": text})
    return table


TABLE = {
    "waterbirds": _waterbirds_table(),
    "celeba": _celeba_table(),
    "multinli": _multinli_table(),
    "civilcomments": _civil_table(),
}


def _civil_rows(variant: str) -> list[tuple[int, int, int, int]]:
    """(comment, split, y, a) per row of XRM's coarse / fine file, by its rule (see civilcomments' docstring)."""
    def hot(v: str) -> bool:
        return v != "" and float(v) >= 0.5

    out = []
    code = {"train": 0, "val": 1, "test": 2}
    if variant == "coarse":
        for c, r in enumerate(TABLE["civilcomments"]):
            if r["split"] == "train":
                none = not any(hot(r["ids"][k]) for k in IDENTITIES)
                out.append((c, 0, int(hot(r["toxicity"])), int(none)))
    for split in ("test", "train", "val"):
        if variant == "coarse" and split == "train":
            continue
        for a, ident in enumerate(IDENTITIES):
            for c, r in enumerate(TABLE["civilcomments"]):
                if r["split"] == split and hot(r["ids"][ident]):
                    out.append((c, code[split], int(hot(r["toxicity"])), a))
    return out


def _expected() -> dict[str, np.ndarray]:
    wb = [(r["split"], r["y"], r["place"]) for r in TABLE["waterbirds"]]
    ce = [(r["partition"], int(r["attrs"]["Blond_Hair"] == 1), int(r["attrs"]["Male"] == 1)) for r in TABLE["celeba"]]
    nli = [(r["split"], NLI_LABELS.index(r["gold_label"]), negation(r["sentence2"]))
           for r in TABLE["multinli"] if r["gold_label"] != "-"]  # fmt: skip
    cc = [r[1:] for r in _civil_rows("coarse")]
    return {k: np.asarray(v, dtype=np.int64) for k, v in
            {"waterbirds": wb, "celeba": ce, "multinli": nli, "civilcomments": cc}.items()}  # fmt: skip


EXPECTED = _expected()


# ---------------------------------------------------------------------------------------------- file writers
def write_csv(path: Path, header: list[str], rows: list[list], crlf: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\r\n" if crlf else "\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def write_images(base: Path, names: list[str], seed: int) -> None:
    rng = _rng(seed)
    for name in names:
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size=(10, 8, 3), dtype=np.uint8)).save(path)


def _wb_release(folder: Path) -> Path:
    rows = [[r["img_id"], r["img_filename"], r["y"], r["split"], r["place"], f"places/{r['img_id']}.jpg"]
            for r in TABLE["waterbirds"]]  # fmt: skip
    write_csv(folder / "metadata.csv", ["img_id", "img_filename", "y", "split", "place", "place_filename"], rows)
    write_images(folder, [r["img_filename"] for r in TABLE["waterbirds"]], 0)
    return folder


def _wb_standard(root: Path, at_root: bool = False) -> Path:
    folder = root / "waterbirds"
    rows = [[r["img_id"], r["img_filename"], r["split"], r["y"], r["place"]] for r in TABLE["waterbirds"]]
    write_csv((root if at_root else folder) / "metadata_waterbirds.csv", ["id", "filename", "split", "y", "a"], rows)
    write_images(folder / WB_FOLDER, [r["img_filename"] for r in TABLE["waterbirds"]], 0)
    return root if at_root else folder


def _celeba_images(base: Path) -> None:
    write_images(base, [r["image"] for r in TABLE["celeba"]], 1)


def _celeba_txt(folder: Path, attr_name: str, split_name: str) -> None:
    table = TABLE["celeba"]
    attr = folder / attr_name
    attr.parent.mkdir(parents=True, exist_ok=True)
    with open(attr, "w") as f:  # the published format: count, names + trailing space, right-aligned -1/1
        f.write(f"{len(table)}\n" + " ".join(CELEBA_ATTRS) + " \n")
        for r in table:
            f.write(r["image"] + "".join(f"{r['attrs'][a]:>3d}" for a in CELEBA_ATTRS) + "\n")
    (folder / split_name).parent.mkdir(parents=True, exist_ok=True)
    (folder / split_name).write_text("".join(f"{r['image']} {r['partition']}\n" for r in table))


def celeba_csv(folder: Path, crlf: bool, attr_order: list[int] | None = None) -> None:
    table = TABLE["celeba"]
    order = attr_order or list(range(len(table)))
    write_csv(folder / "list_attr_celeba.csv", ["image_id", *CELEBA_ATTRS],
              [[table[i]["image"], *(table[i]["attrs"][a] for a in CELEBA_ATTRS)] for i in order], crlf)  # fmt: skip
    write_csv(folder / "list_eval_partition.csv", ["image_id", "partition"],
              [[r["image"], r["partition"]] for r in table], crlf)  # fmt: skip


def _celeba_standard(root: Path) -> Path:
    folder = root / "celeba"
    rows = [[i + 1, r["image"], r["partition"], int(r["attrs"]["Blond_Hair"] == 1), int(r["attrs"]["Male"] == 1)]
            for i, r in enumerate(TABLE["celeba"])]  # fmt: skip
    write_csv(folder / "metadata_celeba.csv", ["id", "filename", "split", "y", "a"], rows)
    _celeba_images(folder / "img_align_celeba")
    return folder


def _celeba_official(root: Path) -> Path:
    folder = root / "celeba"
    _celeba_txt(folder, "list_attr_celeba.txt", "list_eval_partition.txt")
    _celeba_images(folder / "img_align_celeba")
    return folder


def _celeba_official_tree(root: Path) -> Path:
    folder = root / "CelebA"
    _celeba_txt(folder, "Anno/list_attr_celeba.txt", "Eval/list_eval_partition.txt")
    _celeba_images(folder / "Img" / "img_align_celeba")
    return folder


def _celeba_csv_layout(folder: Path, crlf: bool, nested: bool) -> Path:
    celeba_csv(folder, crlf)
    base = folder / "img_align_celeba"
    _celeba_images(base / "img_align_celeba" if nested else base)
    return folder


# ---------------------------------------------------------------------------------------------- MultiNLI
def wordpieces(text: str) -> list[str]:
    """BERT's reference (pure Python) tokenisation: basic split + greedy longest-match wordpieces."""
    from transformers.models.bert import BasicTokenizer, WordpieceTokenizer

    vocab = {w: i for i, w in enumerate(VOCAB)}
    basic, pieces = BasicTokenizer(do_lower_case=True), WordpieceTokenizer(vocab=vocab, unk_token="[UNK]")
    return [p for token in basic.tokenize(text) for p in pieces.tokenize(token)]


def glue_features(s1: str, s2: str, label: str) -> object:
    """One GLUE cache entry as utils_glue.convert_examples_to_features builds it for BERT (max length 128)."""
    ids_of = {w: i for i, w in enumerate(VOCAB)}
    a, b = wordpieces(s1), wordpieces(s2)
    while len(a) + len(b) > MAX_LENGTH - 3:
        (a if len(a) > len(b) else b).pop()
    tokens = ["[CLS]", *a, "[SEP]", *b, "[SEP]"]
    segments = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    ids = [ids_of[t] for t in tokens]
    pad = MAX_LENGTH - len(ids)
    return glue_module().InputFeatures(ids + [0] * pad, [1] * len(ids) + [0] * pad, segments + [0] * pad,
                                       NLI_LABELS.index(label))  # fmt: skip


def write_tokenizer(folder: Path) -> Path:
    """A local bert tokenizer folder (vocab.txt + tokenizer_config.json), as save_pretrained leaves one."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                              "do_lower_case": True}))  # fmt: skip
    return folder


def write_glue_caches(folder: Path) -> None:
    glue = folder / "glue_data" / "MNLI"
    glue.mkdir(parents=True, exist_ok=True)
    mod = glue_module()
    sys.modules["utils_glue"] = mod  # pickle finds the class by name while saving; removed right after
    try:
        for k, name in enumerate(GLUE_FILES):
            feats = [glue_features(r["sentence1"], r["sentence2"], r["gold_label"])
                     for r in TABLE["multinli"] if r["file"] == k and r["gold_label"] != "-"]  # fmt: skip
            feats = [mod.InputFeatures(**vars(f)) for f in feats]
            torch.save(feats, glue / name, _use_new_zipfile_serialization=(k != 0))
    finally:
        del sys.modules["utils_glue"]


def write_jsonl(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(NLI_FILES):
        lines = [json.dumps({"annotator_labels": [r["gold_label"]], "genre": "fiction", "gold_label": r["gold_label"],
                             "pairID": f"{k}-{i}", "sentence1": r["sentence1"], "sentence2": r["sentence2"]})
                 for i, r in enumerate(t for t in TABLE["multinli"] if t["file"] == k)]  # fmt: skip
        (folder / name).write_text("\n".join(lines) + "\n")


def write_metadata_random(folder: Path) -> None:
    rows = [[line, NLI_LABELS.index(r["gold_label"]), negation(r["sentence2"]), r["split"]]
            for line, r in enumerate(TABLE["multinli"]) if r["gold_label"] != "-"]  # fmt: skip
    write_csv(folder / "data" / "metadata_random.csv", ["", "gold_label", "sentence2_has_negation", "split"], rows)


def _multinli_standard(root: Path) -> Path:
    folder = root / "multinli"
    e = EXPECTED["multinli"]
    write_csv(folder / "metadata_multinli.csv", ["id", "filename", "split", "y", "a"],
              [[i, i, *map(int, e[i])] for i in range(len(e))])  # fmt: skip
    write_glue_caches(folder)
    return folder


def _multinli_group_dro(root: Path) -> Path:
    folder = root / "multinli"
    write_metadata_random(folder)
    write_glue_caches(folder)
    return folder


def _multinli_jsonl(root: Path, sub: str = "data") -> Path:
    folder = root / "multinli"
    write_metadata_random(folder)
    write_jsonl(folder / sub)
    return folder


# ---------------------------------------------------------------------------------------------- CivilComments
def write_civil_release(folder: Path) -> Path:
    header = ["", "id", "comment_text", "split", "created_date", "toxicity", "severe_toxicity", *IDENTITIES,
              "identity_any", "obscene"]  # fmt: skip
    rows = [[i, 1000 + i, r["text"], r["split"], "2016-01-01", r["toxicity"], "0.0",
             *(r["ids"][k] for k in IDENTITIES), "0", "0.0"] for i, r in enumerate(TABLE["civilcomments"])]  # fmt: skip
    write_csv(folder / "all_data_with_identities.csv", header, rows)
    return folder


def write_civil_standard(root: Path, variant: str = "coarse") -> Path:
    folder = root / "civilcomments"
    rows = _civil_rows(variant)
    write_csv(folder / f"metadata_civilcomments_{variant}.csv", ["id", "filename", "split", "y", "a"],
              [[i, i, s, y, a] for i, (_, s, y, a) in enumerate(rows)])  # fmt: skip
    write_csv(folder / f"civilcomments_{variant}.csv", ["comment_text"],
              [[TABLE["civilcomments"][c]["text"]] for c, *_ in rows])  # fmt: skip
    return folder


WRITERS = {
    "waterbirds": {
        "standard": _wb_standard,
        "standard-root-metadata": lambda root: _wb_standard(root, at_root=True),
        "tarball": lambda root: _wb_release(root / "waterbirds" / WB_FOLDER),
        "tarball-at-root": lambda root: _wb_release(root / WB_FOLDER),
        "group_dro": lambda root: _wb_release(root / "cub" / "data" / WB_FOLDER),
        "wilds": lambda root: _wb_release(root / "waterbirds_v1.0"),
    },
    "celeba": {
        "standard": _celeba_standard,
        "official": _celeba_official,
        "official-tree": _celeba_official_tree,
        "kaggle": lambda root: _celeba_csv_layout(root / "celeba", crlf=True, nested=True),
        "wilds": lambda root: _celeba_csv_layout(root / "celebA_v1.0", crlf=False, nested=False),
        "group_dro": lambda root: _celeba_csv_layout(root / "celebA" / "data", crlf=False, nested=False),
    },
    "multinli": {
        "standard": _multinli_standard,
        "group_dro": _multinli_group_dro,
        "group_dro-jsonl": _multinli_jsonl,
        "group_dro-jsonl-release-folder": lambda root: _multinli_jsonl(root, "multinli_1.0"),
    },
    "civilcomments": {
        "standard": write_civil_standard,
        "wilds": lambda root: write_civil_release(root / "civilcomments_v1.0"),
        "release": lambda root: write_civil_release(root / "civilcomments"),
    },
}
# the layout name memaware reports for each writer
DETECTED = {
    ("waterbirds", "standard-root-metadata"): "standard",
    ("waterbirds", "tarball-at-root"): "tarball",
    ("multinli", "group_dro-jsonl"): "group_dro",
    ("multinli", "group_dro-jsonl-release-folder"): "group_dro",
}
