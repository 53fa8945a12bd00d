"""One inference loop, one rule for absent leads: the API, ``predict_records`` (evaluate) and the classifier's
validation give the same numbers on records that lack leads, for lead- and time-tokenised models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import ecgmae

# records rewritten with fewer leads: lead II only, the six limb leads, and the precordial leads only
SUBSETS = {0: ("II",), 1: ("I", "II", "III", "aVR", "aVL", "aVF"), 2: ("V1", "V2", "V3", "V4", "V5", "V6")}


def _drop_leads(src: Path) -> None:
    """Rewrite the first records of a synthetic WFDB folder with only some of their leads."""
    from ecgmae.data.io import read_record
    from ecgmae.data.wfdb_write import write_wfdb16

    heads = sorted(src.rglob("*.hea"))
    for i, keep in SUBSETS.items():
        rec = read_record(heads[i])
        rows = [[n.upper() for n in rec.leads].index(k.upper()) for k in keep]
        comments = [line[1:].strip() for line in heads[i].read_text().splitlines() if line.startswith("#")]
        write_wfdb16(heads[i].with_suffix(""), rec.signal[rows], rec.fs, keep, comments, adc_gain=1000.0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    from ecgmae.data.signal import PreprocessConfig
    from ecgmae.data.sources.synthetic import write_wfdb_folder
    from ecgmae.data.store import prepare_store
    from ecgmae.engine.config import FinetuneConfig, OptimConfig, TrainerConfig
    from ecgmae.engine.run import finetune

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("absent")
    src = write_wfdb_folder(root / "synth", 24, fs=200, seconds=5, seed=5, noise="low", quiet=True)
    _drop_leads(src)
    cfg = PreprocessConfig(fs=100, seconds=5, bandpass=None)  # the API only resamples stored signals
    store = prepare_store("folder", src, root / "store", cfg, seed=0, quiet=True)
    cpu = TrainerConfig(accelerator="cpu", devices="1", precision="32", log_every=1)
    out = {"store": store}
    for tokens in ("lead", "time"):
        cfg = FinetuneConfig(
            mode="scratch",
            model="ecgmae_tiny",
            model_overrides={"tokenization": tokens},
            max_steps=2,
            batch_size=8,
            trainer=cpu,
            n_boot=5,
            window_seconds=2.0,
            eval_stride_seconds=1.5,
            optim=OptimConfig(lr=1e-3),
        )
        finetune(store, root / tokens, cfg, encoder=None, overwrite=True, quiet=True)
        out[tokens] = root / tokens
    return out


def _validation(model: ecgmae.Model, store, idx: np.ndarray, class_idx: list[int]) -> np.ndarray:
    """Record probabilities as the classifier's validation step computes them."""
    from ecgmae.data.dataset import WindowDataset
    from ecgmae.engine.config import OptimConfig
    from ecgmae.engine.modules import ClassifierModule
    from ecgmae.eval.pooling import pool_windows

    module = ClassifierModule(
        model.module,
        OptimConfig(),
        1,
        0,
        mode="finetune",
        class_idx=class_idx,
        aggregate=model.aggregate,
        lead_idx=model.lead_idx,
    ).eval()
    loader = torch.utils.data.DataLoader(WindowDataset(store, idx, model.window, model.stride), batch_size=7)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            module.validation_step(batch, i)
    rec = torch.cat([r for r, _, _ in module._val]).numpy()
    prob = torch.cat([p for _, p, _ in module._val]).numpy()
    return pool_windows(rec, prob, model.aggregate)[1]


@pytest.mark.parametrize("tokens", ["lead", "time"])
def test_api_evaluate_and_validation_agree_on_records_that_lack_leads(runs, tokens):
    from ecgmae.data.prepared import from_store
    from ecgmae.data.store import Store
    from ecgmae.engine.predict import predict_records

    model = ecgmae.load(runs[tokens])
    store = Store.open(runs["store"])
    assert [store.present(i).sum() for i in SUBSETS] == [1, 6, 6] and store.present(5).all()
    idx = np.arange(len(store))
    class_idx = [store.label_names.index(n) for n in model.label_names]
    assert model.window < store.valid_length(0)  # several windows per record
    api = model.predict_prepared([from_store(store, int(i), model.leads) for i in idx], batch_size=5)
    ref, _ = predict_records(
        model.module,
        store,
        idx,
        model.window,
        model.stride,
        aggregate=model.aggregate,
        class_idx=class_idx,
        lead_idx=model.lead_idx,
    )
    np.testing.assert_allclose(api, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(_validation(model, store, idx, class_idx), ref, rtol=0, atol=1e-5)


def test_a_lead_tokenised_model_is_given_only_the_leads_a_record_has(runs):
    """Absent leads are never tokens: the record lacking all but lead II scores as lead II alone."""
    from ecgmae.data.store import Store
    from ecgmae.data.windows import cut_window, window_starts
    from ecgmae.engine.predict import predict_records

    model = ecgmae.load(runs["lead"])
    store = Store.open(runs["store"])
    x = store.signal(0)  # the record that has lead II only
    ii = model.leads.index("II")
    wins = np.stack(
        [cut_window(x, s, model.window) for s in window_starts(store.valid_length(0), model.window, model.stride)]
    )
    with torch.no_grad():
        alone = model.module.predict_proba(torch.from_numpy(wins[:, [ii]]), lead_idx=torch.tensor([ii]))
        zeros = model.module.predict_proba(torch.from_numpy(wins), lead_idx=torch.arange(12))
    alone, zeros = alone.double().mean(0).numpy(), zeros.double().mean(0).numpy()
    assert np.abs(alone - zeros).max() > 1e-4  # the rule matters for this model
    class_idx = [store.label_names.index(n) for n in model.label_names]
    got, _ = predict_records(
        model.module,
        store,
        np.array([0]),
        model.window,
        model.stride,
        aggregate="mean",
        class_idx=class_idx,
        lead_idx=model.lead_idx,
    )
    np.testing.assert_allclose(got[0], alone, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(x[[ii]], fs=100, leads=["II"]), alone, rtol=0, atol=1e-6)
