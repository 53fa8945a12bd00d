"""CSV files a person may open in a spreadsheet carry no formula: a record named ``=1+2`` or a label
``=HYPERLINK(...)`` is written as text (a leading ``'``), in the store's ``index.csv`` and ``skipped.csv``
and in ``predict``'s table, and the store reads its own names back exactly."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ecgmae.cli import main
from ecgmae.data.signal import PreprocessConfig
from ecgmae.data.store import prepare_store
from ecgmae.data.store_reader import Store
from ecgmae.utils import escape_cell, unescape_cell

LINK = '=HYPERLINK("http://example.com/?leak","click")'
NAMES = {
    "synth00000": "=1+2",
    "synth00001": "@SUM(A1)",
    "synth00002": "+cmd",
    "synth00003": "-2+3",
    "synth00004": "'quoted",
}
BAD = "-bad"  # a record that cannot be read: its name goes to skipped.csv / predict's skipped column


def _formula_free(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    for row in rows:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (cell, row)
    return rows


def _hostile_corpus(runs: dict[str, Path], tmp_path: Path) -> Path:
    """The runs' raw corpus with records renamed to formulas, one label renamed to a link, one record broken."""
    src = tmp_path / "src"
    shutil.copytree(runs["src"], src)
    for old, new in {**NAMES, "synth00005": BAD}.items():
        text = (src / f"{old}.hea").read_text().replace(old, new)
        (src / f"{new}.hea").write_text(text)
        (src / f"{old}.dat").rename(src / f"{new}.dat")
        (src / f"{old}.hea").unlink()
    (src / f"{BAD}.dat").write_bytes(b"\0" * 10)
    table = pd.read_csv(src / "labels.csv", dtype=str, keep_default_na=False)
    table["record"] = table["record"].replace({**NAMES, "synth00005": BAD})
    table["labels"] = table["labels"].str.replace("NORM", LINK)
    table.to_csv(src / "labels.csv", index=False)
    (src / "RECORDS").unlink()
    return src


def test_escape_cell_round_trips() -> None:
    for text in ["=1+2", "+x", "-2", "@a", "\tx", "\rx", "'x", "''=", "plain", "", "a=b"]:
        assert unescape_cell(escape_cell(text)) == text
    assert escape_cell("=1+2") == "'=1+2" and escape_cell("plain") == "plain" and escape_cell(-2.5) == -2.5


@pytest.fixture(scope="module")
def hostile(runs, tmp_path_factory) -> dict[str, Path]:
    """The hostile corpus, its store, and a classifier trained on it (labels include the link)."""
    from ecgmae.engine.config import FinetuneConfig, OptimConfig, TrainerConfig
    from ecgmae.engine.run import finetune

    root = tmp_path_factory.mktemp("csv")
    src = _hostile_corpus(runs, root)
    store = prepare_store("folder", src, root / "store", PreprocessConfig(fs=100, seconds=5), seed=0, quiet=True)
    cpu = TrainerConfig(accelerator="cpu", devices="1", precision="32", log_every=1)
    finetune(
        store,
        root / "ft",
        FinetuneConfig(mode="linprobe", max_steps=1, batch_size=8, trainer=cpu, n_boot=2, optim=OptimConfig(lr=1e-3)),
        encoder=runs["mae"],
        quiet=True,
    )
    return {"src": src, "store": store, "ft": root / "ft", "root": root}


def test_the_store_writes_names_as_text_and_reads_them_back(hostile) -> None:
    rows = _formula_free((hostile["store"] / "index.csv").read_text())
    assert {"'=1+2", "'@SUM(A1)", "'+cmd", "'-2+3", "''quoted"} <= {r[0] for r in rows[1:]}
    store = Store.open(hostile["store"])
    assert set(NAMES.values()) <= set(store.index["record"]) and LINK in store.label_names
    assert any(LINK in labels.split(";") for labels in store.index["labels"])
    skipped = _formula_free((hostile["store"] / "skipped.csv").read_text())
    assert [r[0] for r in skipped[1:]] == [escape_cell(BAD)]


def test_predict_writes_names_labels_and_reasons_as_text(hostile, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    assert (
        main(
            ["predict", "--checkpoint", str(hostile["ft"]), "--src", str(hostile["src"]), "--out", str(out), "--quiet"]
        )
        == 0
    )
    rows = _formula_free(out.read_text())
    assert escape_cell(LINK) in rows[0]
    table = pd.read_csv(out, dtype=str, keep_default_na=False).map(unescape_cell)
    assert set(NAMES.values()) | {BAD} <= set(table["record"])
    assert table.set_index("record").loc[BAD, "skipped"].startswith(BAD)
