"""Masking, the masked-only loss, no leakage from masked patches, learning (ecgmae.models.mae)."""

from __future__ import annotations

import re

import pytest
import torch

from conftest import ecg_like
from ecgmae.config import ConfigError
from ecgmae.models import create_model
from ecgmae.models.mae import masked_mse, normalise_patches, random_masking, subset_leads

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("n_leads", "n_time", "ratio"), [(12, 20, 0.75), (1, 10, 0.9), (3, 7, 0.6), (12, 30, 0.0)])
def test_exact_ratio_and_ids_restore_round_trip(n_leads, n_time, ratio):
    g = torch.Generator().manual_seed(0)
    m = random_masking(4, n_leads, n_time, ratio, generator=g)
    n = n_leads * n_time
    n_keep = int(n * (1 - ratio) + 1e-6)
    assert m.ids_keep.shape == (4, n_keep)
    assert (m.mask.sum(dim=1) == n - n_keep).all()
    tokens = torch.arange(n).expand(4, -1)
    shuffled = torch.cat([m.ids_keep, tokens.gather(1, torch.argsort(m.ids_restore, dim=1))[:, n_keep:]], 1)
    assert torch.equal(shuffled.gather(1, m.ids_restore), tokens)  # unshuffle restores the order
    kept = torch.zeros(4, n).scatter(1, m.ids_keep, 1.0)
    assert torch.equal(kept, 1.0 - m.mask)  # mask 1 = removed, exactly the tokens not kept
    if 0 < ratio and n_keep > 2:  # each sample draws its own mask
        assert len({tuple(r) for r in m.ids_keep.tolist()}) == 4


def test_lead_and_time_modes_mask_whole_units():
    g = torch.Generator().manual_seed(0)
    lead = random_masking(8, 12, 10, 0.75, "lead", generator=g).mask.view(8, 12, 10)
    assert torch.equal(lead, lead[:, :, :1].expand_as(lead))  # constant along time
    assert (lead[:, :, 0].sum(dim=1) == 9).all()  # 3 of 12 leads kept
    time = random_masking(8, 12, 10, 0.75, "time", generator=g).mask.view(8, 12, 10)
    assert torch.equal(time, time[:, :1].expand_as(time))  # constant across leads
    assert (time[:, 0].sum(dim=1) == 8).all()  # floor(10 * 0.25) = 2 of 10 time patches kept


@pytest.mark.parametrize("mode", ["patch", "time", "lead"])
def test_absent_leads_are_never_visible(mode):
    g = torch.Generator().manual_seed(0)
    present = torch.ones(4, 12, dtype=torch.bool)
    present[0, [2, 5]] = False
    present[3, 11] = False
    m = random_masking(4, 12, 10, 0.5, mode, present=present, generator=g)
    mask = m.mask.view(4, 12, 10)
    assert (mask[~present] == 1).all()
    assert m.ids_keep.shape[1] >= 10  # still a usable number of visible tokens


def test_loss_ignores_visible_patches():
    torch.manual_seed(0)
    pred = torch.randn(3, 40, 25, requires_grad=True)
    target = torch.randn(3, 40, 25)
    mask = random_masking(3, 4, 10, 0.75).mask
    loss = masked_mse(pred, target, mask)
    loss.backward()
    visible = mask == 0
    assert (pred.grad[visible] == 0).all() and (pred.grad[~visible].abs().sum(-1) > 0).all()
    changed = pred.detach().clone()
    changed[visible] += 100.0
    assert torch.equal(masked_mse(changed, target, mask), loss.detach())
    manual = ((pred - target) ** 2).mean(-1)[~visible].mean()
    torch.testing.assert_close(loss, manual)


def test_loss_weights_absent_leads_and_norm_target():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 5, 24), torch.randn(2, 5, 24) * 3 + 1
    mask = torch.ones(2, 5)
    elem_w = torch.ones(2, 1, 24)
    elem_w[:, :, 12:] = 0.0  # second half of each token is an absent lead
    changed = target.clone()
    changed[..., 12:] = 99.0
    loss = masked_mse(pred, target, mask, elem_w=elem_w)
    assert torch.equal(masked_mse(pred, changed, mask, elem_w=elem_w), loss)
    norm = normalise_patches(target)
    torch.testing.assert_close(norm.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(norm.std(-1, unbiased=False), torch.ones(2, 5), atol=1e-4, rtol=0)
    half = normalise_patches(target, elem_w)
    torch.testing.assert_close(half[..., :12], normalise_patches(target[..., :12]))
    assert (half[..., 12:] == 0).all()


def perturb(model, x, mask, which, lead_idx=None):
    """``x`` with noise added to the masked (``which=1``) or visible (``which=0``) tokens' samples."""
    enc = model.encoder
    patches = enc.patchify(x)
    sel = (mask == which).float()[..., None]
    return enc.unpatchify(patches + sel * torch.randn_like(patches), n_leads=x.shape[1])


@pytest.mark.parametrize(
    ("tokenization", "mode"), [("lead", "patch"), ("lead", "lead"), ("lead", "time"), ("time", "patch")]
)
def test_masked_samples_never_reach_the_encoder(tokenization, mode):
    torch.manual_seed(0)
    model = create_model("ecgmae_tiny", tokenization=tokenization, mask_mode=mode, pool="cls").eval()
    enc = model.encoder
    x = ecg_like(2, 12, 500)
    n_leads = 12 if tokenization == "lead" else 1
    m = random_masking(2, n_leads, 10, 0.75, mode if tokenization == "lead" else "patch")
    latent = enc.forward_features(x, keep=m.ids_keep)
    torch.testing.assert_close(
        enc.forward_features(perturb(model, x, m.mask, 1), keep=m.ids_keep), latent, rtol=0, atol=0
    )
    assert not torch.allclose(enc.forward_features(perturb(model, x, m.mask, 0), keep=m.ids_keep), latent)
    # Through the whole MAE with the same random mask: the prediction depends on visible samples only.
    torch.manual_seed(5)
    out = model(x)
    hidden_changed, visible_changed = perturb(model, x, out.mask, 1), perturb(model, x, out.mask, 0)
    torch.manual_seed(5)
    again = model(hidden_changed)
    assert torch.equal(again.mask, out.mask) and torch.equal(again.pred, out.pred)
    torch.manual_seed(5)
    assert not torch.allclose(model(visible_changed).pred, out.pred)


def test_absent_leads_in_mae_forward_are_hidden_and_unscored():
    torch.manual_seed(0)
    model = create_model("ecgmae_tiny").eval()
    x = ecg_like(2, 12, 500)
    present = torch.ones(2, 12, dtype=torch.bool)
    present[:, 4] = False
    x[:, 4] = 0.0
    torch.manual_seed(3)
    out = model(x, present=present)
    assert (out.mask.view(2, 12, 10)[:, 4] == 1).all()
    x2 = x.clone()
    x2[:, 4] = 5.0  # garbage in the absent lead changes neither prediction nor loss
    torch.manual_seed(3)
    again = model(x2, present=present)
    assert torch.equal(again.pred, out.pred) and torch.equal(again.loss, out.loss)


def test_time_tokenisation_with_lead_subset_scores_present_leads_only():
    torch.manual_seed(0)
    model = create_model("ecgmae_tiny", tokenization="time").eval()
    x = ecg_like(2, 3, 500)
    out = model(x, lead_idx=torch.tensor([0, 1, 6]))
    assert out.pred.shape == (2, 10, 12 * 50) and torch.isfinite(out.loss)
    target = out.target.view(2, 10, 12, 50)
    assert (target[:, :, [2, 3, 4, 5, 7, 8, 9, 10, 11]] == 0).all()


def test_mask_ratio_zero_encodes_and_scores_everything():
    torch.manual_seed(0)
    model = create_model("ecgmae_tiny")
    out = model(ecg_like(2, 12, 500), mask_ratio=0.0)
    assert (out.mask == 0).all()
    manual = ((out.pred - out.target) ** 2).mean()
    torch.testing.assert_close(out.loss, manual)


def test_same_seed_same_loss():
    x = ecg_like(2, 12, 500)
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        losses.append(create_model("ecgmae_tiny", drop_path=0.1)(x).loss)
    assert torch.equal(losses[0], losses[1])


def test_norm_target_in_forward():
    torch.manual_seed(0)
    out = create_model("ecgmae_tiny", norm_target=True)(ecg_like(2, 12, 500))
    out.loss.backward()
    torch.testing.assert_close(out.target.mean(-1), torch.zeros(2, 120), atol=1e-4, rtol=0)
    assert torch.isfinite(out.loss)


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = create_model("ecgmae_tiny")
    x = ecg_like(8, 12, 500)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    torch.manual_seed(1)
    first = model(x).loss.item()
    losses = []
    for _ in range(150):
        loss = model(x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    last = sum(losses[-10:]) / 10
    assert last < 0.1 * first, f"loss {first:.4f} -> {last:.4f}"


def test_subset_leads_keeps_one_to_all_but_one_present_lead():
    torch.manual_seed(0)
    present = torch.ones(4000, 12, dtype=torch.bool)
    present[:1000, 5:] = False  # records with 5 leads
    present[1000:1100] = False
    present[1000:1100, 7] = True  # records with a single lead
    assert torch.equal(subset_leads(present, 0.0), present)
    out = subset_leads(present, 1.0)
    assert not (out & ~present).any()  # never invents a lead
    kept, had = out.sum(1), present.sum(1)
    assert (kept >= 1).all() and (kept[had > 1] < had[had > 1]).all()
    assert torch.equal(out[1000:1100], present[1000:1100])  # a single lead is always kept
    assert set(kept[:1000].tolist()) == {1, 2, 3, 4} and set(kept[1100:].tolist()) == set(range(1, 12))
    half = subset_leads(present[1100:], 0.5).sum(1) < 12
    assert 0.45 < half.float().mean() < 0.55


def _unscored_leads(out) -> torch.Tensor:
    """``(B, 12)``: the leads whose normalised target is all zero (absent or dropped: not scored)."""
    b, n_time = out.target.shape[:2]
    return (out.target.view(b, n_time, 12, -1) == 0).all(dim=3).all(dim=1)


def test_lead_drop_hides_dropped_leads_in_training_only():
    torch.manual_seed(0)
    model = create_model("ecgmae_tiny", tokenization="time", lead_drop=1.0, norm_target=True).train()
    x = ecg_like(3, 12, 500)
    torch.manual_seed(7)
    out = model(x)
    dropped = _unscored_leads(out)
    assert dropped.any(dim=1).all() and not dropped.all(dim=1).any()
    x2 = x.clone()
    x2[dropped] = 3.0  # garbage in the dropped leads: same prediction and loss under the same draws
    torch.manual_seed(7)
    again = model(x2)
    assert torch.equal(again.pred, out.pred) and torch.equal(again.loss, out.loss)
    # eval mode (validation, reconstruction) sees every lead, exactly like the same weights without lead_drop
    plain = create_model("ecgmae_tiny", tokenization="time", norm_target=True)
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    torch.manual_seed(7)
    a = model(x)
    torch.manual_seed(7)
    b = plain(x)
    assert torch.equal(a.pred, b.pred) and not _unscored_leads(a).any()


@pytest.mark.parametrize(
    ("overrides", "msg"),
    [({"lead_drop": 1.5}, "in [0, 1]"), ({"lead_drop": 0.5, "tokenization": "lead"}, "tokenization='time'")],
)
def test_lead_drop_config_errors(overrides, msg):
    with pytest.raises(ConfigError, match=re.escape(msg)):
        create_model("ecgmae_tiny", **overrides)
