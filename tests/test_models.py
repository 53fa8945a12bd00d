"""Registry, encoder shapes, classifier, config/state round trips, bf16 (ecgmae.models)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import ecg_like
from ecgmae.config import ConfigError, from_dict, to_dict
from ecgmae.errors import CheckpointError
from ecgmae.models import (
    DataConfig,
    ECGClassifier,
    ECGEncoder,
    EncoderConfig,
    MAEConfig,
    ModelSpec,
    XResNet1d,
    build_model,
    create_model,
    default_data_config,
    get_config,
    list_models,
    pretraining_config,
)
from ecgmae.models.config import ENCODER_FIELDS, MAE_FIELDS
from ecgmae.models.layers import Attention, matmul_attention

pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_lists_the_sizes_and_fields_do_not_collide():
    assert {"ecgmae_tiny", "ecgmae_small", "ecgmae_small_lead", "ecgmae_base", "xresnet1d50", "xresnet1d101"} <= set(
        list_models()
    )
    # every variant says what input it takes: the transformers their patch, the CNNs any length
    assert default_data_config("ecgmae_small") == DataConfig(fs=100.0, n_leads=12, window_multiple=25)
    assert default_data_config("xresnet1d101") == DataConfig(fs=100.0, n_leads=12, window_multiple=1)
    assert pretraining_config("ecgmae_tiny", depth=1).encoder.depth == 1
    with pytest.raises(ConfigError, match="xresnet1d50 is a supervised CNN; pre-training needs an ecgmae_"):
        pretraining_config("xresnet1d50")
    assert not ENCODER_FIELDS & MAE_FIELDS  # flat overrides route by name
    small, lead, base = get_config("ecgmae_small"), get_config("ecgmae_small_lead"), get_config("ecgmae_base")
    # the default chosen on real ECGs (RESULTS.md): time tokens of 0.25 s, 128 x 4, mask 0.5, normalised targets
    assert (small.encoder.tokenization, small.encoder.patch_size, small.encoder.embed_dim, small.encoder.depth) == (
        "time",
        25,
        128,
        4,
    )
    assert (small.mask_ratio, small.norm_target, small.encoder.pool, small.lead_drop) == (0.5, True, "stats", 0.25)
    assert (lead.encoder.tokenization, lead.encoder.embed_dim, lead.encoder.depth) == ("lead", 256, 8)
    assert (base.encoder.embed_dim, base.encoder.depth) == (768, 12)


def test_get_config_routes_overrides_and_rejects_unknown():
    cfg = get_config("ecgmae_tiny", depth=3, decoder_depth=2, mask_ratio=0.5, tokenization="time")
    assert (cfg.encoder.depth, cfg.decoder_depth, cfg.mask_ratio) == (3, 2, 0.5)
    assert cfg.encoder.tokenization == "time"
    with pytest.raises(ConfigError, match="depht"):
        get_config("ecgmae_tiny", depht=3)
    with pytest.raises(ConfigError, match="unknown model"):
        get_config("ecgmae_huge")
    with pytest.raises(ConfigError, match="num_heads"):
        get_config("ecgmae_tiny", embed_dim=33)
    with pytest.raises(ConfigError, match="tokenization"):
        get_config("ecgmae_tiny", tokenization="time", mask_mode="lead")
    with pytest.raises(ConfigError, match="mask_ratio"):
        get_config("ecgmae_tiny", mask_ratio=1.0)


def test_fs_override_keeps_patch_duration_and_scales_kernels():
    cfg = get_config("ecgmae_tiny", fs=250)
    assert cfg.encoder.patch_size == 125  # 0.5 s
    assert get_config("ecgmae_tiny", fs=250, patch_size=75).encoder.patch_size == 75
    k100 = ECGEncoder(get_config("ecgmae_tiny").encoder).patch_embed.kernel_sizes
    k500 = ECGEncoder(get_config("ecgmae_tiny", fs=500).encoder).patch_embed.kernel_sizes
    assert k100 == (3, 7, 15) and k500 == (15, 35, 75)
    assert all(k % 2 == 1 for k in k500)


def test_config_round_trips_through_json():
    cfg = get_config("ecgmae_small", tokenization="time", pool="cls", conv_kernels=(5, 9))
    data = json.loads(json.dumps(to_dict(cfg)))
    assert from_dict(MAEConfig, data) == cfg
    with pytest.raises(ConfigError, match="bogus"):
        from_dict(MAEConfig, {**data, "encoder": {**data["encoder"], "bogus": 1}})


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_every_registered_model(name):
    torch.manual_seed(0)
    t = 200 if name == "ecgmae_base" else 500  # base: 48 tokens keep it fast
    x = ecg_like(2, 12, t)
    if isinstance(get_config(name), MAEConfig):  # what pre-training trains
        model = create_model(name)
        out = model(x)
        out.loss.backward()
        assert torch.isfinite(out.loss)
        for pname, p in model.named_parameters():
            assert p.grad is not None, f"{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    clf = create_model(name, num_classes=5)
    logits = clf(x)
    logits.sum().backward()
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in clf.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", list_models())
def test_every_model_has_the_same_features_and_head_contract(name):
    """``forward == forward_head(forward_features)``; ``pre_logits`` gives the pooled features the head reads."""
    torch.manual_seed(0)
    t = 200 if name == "ecgmae_base" else 500
    x = ecg_like(2, 12, t)
    clf = create_model(name, num_classes=3).eval()
    feats = clf.forward_features(x)
    pooled = clf.forward_head(feats, pre_logits=True)
    first = clf.head[0] if isinstance(clf, XResNet1d) else clf.head  # the CNN's head starts with its norm
    width = first.num_features if isinstance(first, torch.nn.BatchNorm1d) else first.in_features
    assert feats.ndim == 3 and pooled.shape == (2, width)
    torch.testing.assert_close(clf.forward_head(feats), clf(x))
    if isinstance(clf, ECGClassifier):  # the encoder alone: its pooled features are the classifier's pre-logits
        enc = clf.encoder
        torch.testing.assert_close(enc(x), enc.forward_head(enc.forward_features(x)))
        torch.testing.assert_close(enc(x), pooled)


@pytest.mark.parametrize("tokenization", ["lead", "time"])
@pytest.mark.parametrize(("fs", "seconds", "leads"), [(100, 10, 12), (250, 4, 3), (500, 2.5, 1), (100, 7.3, 8)])
def test_shapes_for_rates_lengths_and_lead_subsets(tokenization, fs, seconds, leads):
    torch.manual_seed(0)
    model = create_model("ecgmae_tiny", fs=fs, tokenization=tokenization, mask_mode="patch")
    enc = model.encoder
    t = round(seconds * fs)
    lead_idx = torch.arange(12)[-leads:]  # the last `leads` canonical leads
    x = ecg_like(3, leads, t, fs=fs)
    n_time = t // enc.cfg.patch_size
    n_tokens = leads * n_time if tokenization == "lead" else n_time
    feats = enc.forward_features(x, lead_idx=lead_idx)
    assert feats.shape == (3, n_tokens, 32)
    out = model(x, lead_idx=lead_idx)
    patch_len = enc.cfg.patch_size * (1 if tokenization == "lead" else 12)
    assert out.pred.shape == out.target.shape == (3, n_tokens, patch_len)
    assert out.mask.shape == (3, n_tokens)
    assert torch.isfinite(out.loss)
    clf = ECGClassifier(enc.cfg, 4)
    assert clf(x, lead_idx=lead_idx).shape == (3, 4)


@pytest.mark.parametrize("tokenization", ["lead", "time"])
def test_patchify_unpatchify_exact_inverse(tokenization):
    enc = ECGEncoder(EncoderConfig(tokenization=tokenization, embed_dim=32, depth=1, num_heads=2))
    x = torch.randn(2, 12, 1000)
    patches = enc.patchify(x)
    assert patches.shape == ((2, 240, 50) if tokenization == "lead" else (2, 20, 600))
    assert torch.equal(enc.unpatchify(patches), x)
    if tokenization == "lead":  # token l * n_time + t is lead l, time patch t
        assert torch.equal(patches[1, 3 * 20 + 7], x[1, 3, 350:400])
    else:  # token t holds (lead, sample) lead-major
        assert torch.equal(patches[1, 7].view(12, 50)[3], x[1, 3, 350:400])


def test_conv_embedding_stays_inside_its_patch():
    enc = ECGEncoder(get_config("ecgmae_tiny", fs=250).encoder)
    x = torch.randn(1, 1, 125 * 4)
    before = enc.patch_embed(enc.patchify(x).reshape(4, 1, 125))
    x[0, 0, 250:375] += torch.randn(125)  # patch 2 only
    after = enc.patch_embed(enc.patchify(x).reshape(4, 1, 125))
    changed = (before - after).abs().amax(dim=1) > 0
    assert changed.tolist() == [False, False, True, False]


def test_lead_subset_equals_keeping_those_leads_of_the_full_input():
    torch.manual_seed(0)
    enc = create_model("ecgmae_tiny").encoder.eval()
    x = ecg_like(2, 12, 500)
    leads = torch.tensor([1, 6, 11])
    n_time = 10
    keep = (leads[:, None] * n_time + torch.arange(n_time)).flatten().expand(2, -1)
    full = enc.forward_features(x, keep=keep)
    subset = enc.forward_features(x[:, leads], lead_idx=leads)
    torch.testing.assert_close(subset, full, rtol=1e-5, atol=1e-5)


def test_time_tokenisation_zero_fills_missing_leads():
    torch.manual_seed(0)
    enc = create_model("ecgmae_tiny", tokenization="time").encoder.eval()
    x = ecg_like(2, 3, 500)
    lead_idx = torch.tensor([0, 4, 7])
    full = torch.zeros(2, 12, 500)
    full[:, lead_idx] = x
    torch.testing.assert_close(enc.forward_features(x, lead_idx=lead_idx), enc.forward_features(full))


def test_cpu_bf16_matmul_attention_matches_sdpa():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 37, 16).unbind(0)
    torch.testing.assert_close(matmul_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    attn = Attention(32, 2)
    x = torch.randn(2, 11, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = attn(x)  # bf16 on CPU takes the matmul path
    torch.testing.assert_close(fast.float(), attn(x), atol=0.05, rtol=0.05)


def test_bad_inputs_name_the_problem():
    enc = create_model("ecgmae_tiny").encoder
    with pytest.raises(ValueError, match="13 leads"):
        enc.forward_features(torch.zeros(1, 13, 500))
    with pytest.raises(ValueError, match="shorter than one patch"):
        enc.forward_features(torch.zeros(1, 12, 20))
    with pytest.raises(ValueError, match="lead_idx"):
        enc.forward_features(torch.zeros(1, 2, 500), lead_idx=torch.tensor([0, 12]))
    with pytest.raises(ValueError, match="repeat"):
        enc.forward_features(torch.zeros(1, 2, 500), lead_idx=torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="max_patches"):
        ECGEncoder(EncoderConfig(embed_dim=32, depth=1, num_heads=2, pos_embed="learned", max_patches=8))(
            torch.zeros(1, 1, 500)
        )


@pytest.mark.parametrize("kind", ["mae", "encoder", "classifier"])
def test_state_dict_round_trip_from_the_model_spec_alone(kind):
    """What a checkpoint stores (the spec's JSON and the weights) rebuilds the same function."""
    from ecgmae.header import RunHeader

    torch.manual_seed(0)
    cfg = get_config("ecgmae_tiny", pool="cls", pos_embed="learned", max_patches=32)
    spec = ModelSpec(kind, "ecgmae_tiny", cfg, num_classes=3 if kind == "classifier" else 0, head_dropout=0.1)
    model = build_model(spec).eval()
    stored = json.loads(json.dumps(RunHeader(spec).to_dict()))
    torch.manual_seed(123)  # a different init that the load must overwrite
    rebuilt = build_model(RunHeader.from_dict(stored).model).eval()
    assert type(rebuilt) is type(model)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = ecg_like(2, 12, 500)
    torch.manual_seed(7)
    a = model(x)
    torch.manual_seed(7)
    b = rebuilt(x)
    if kind == "mae":
        assert torch.equal(a.pred, b.pred) and torch.equal(a.loss, b.loss)
    else:
        assert torch.equal(a, b)


def test_classifier_loads_pretrained_encoder_strictly():
    torch.manual_seed(0)
    mae = create_model("ecgmae_tiny").eval()
    clf = create_model("ecgmae_tiny", num_classes=2).eval()
    x = ecg_like(2, 12, 500)
    assert not torch.allclose(clf.forward_features(x), mae.encoder.forward_features(x))
    clf.load_encoder(mae.encoder.state_dict())  # what pre-training exports (encoder.safetensors)
    torch.testing.assert_close(clf.forward_features(x), mae.encoder.forward_features(x))
    torch.testing.assert_close(clf.forward_head(clf.forward_features(x), pre_logits=True), mae.encoder(x))
    clf.load_encoder(mae.state_dict())  # a whole MAE state: its encoder part is taken
    with pytest.raises(CheckpointError, match="missing"):
        create_model("ecgmae_tiny", num_classes=2, depth=3).load_encoder(mae.encoder.state_dict())
    with pytest.raises(CheckpointError, match="shape"):
        create_model("ecgmae_tiny", num_classes=2, fs=500, patch_size=50).load_encoder(mae.encoder.state_dict())


def test_param_groups_layer_decay_and_no_weight_decay():
    torch.manual_seed(0)
    clf = create_model("ecgmae_tiny", num_classes=3, pool="cls", pos_embed="learned")
    groups = clf.param_groups(weight_decay=0.05, layer_decay=0.5)
    names = {id(p): n for n, p in clf.named_parameters()}
    seen = [names[id(p)] for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(names.values())  # every parameter exactly once
    top = clf.encoder.depth + 1
    for g in groups:
        for p in g["params"]:
            n = names[id(p)]
            no_decay = p.ndim < 2 or n.split(".")[-1] in {"time_pos", "lead_embed", "cls_token"}
            assert g["weight_decay"] == (0.0 if no_decay else 0.05), n
        assert set(g) >= {"params", "weight_decay", "lr_scale"}
    scale = {names[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}
    assert scale["head.weight"] == 1.0 and scale["encoder.norm.weight"] == 1.0
    assert scale["encoder.blocks.1.attn.qkv.weight"] == 0.5
    assert scale["encoder.blocks.0.mlp.0.bias"] == 0.25
    assert scale["encoder.patch_embed.proj.weight"] == scale["encoder.cls_token"] == 0.5**top
    assert scale["encoder.lead_embed"] == scale["encoder.time_pos"] == 0.5**top


def test_freeze_encoder_for_linear_probe():
    clf = create_model("ecgmae_tiny", num_classes=3, drop_path=0.5)
    clf.freeze_encoder()
    clf.train()
    assert not clf.encoder.training and clf.head.training
    groups = clf.param_groups(0.05, 0.75)
    assert sum(len(g["params"]) for g in groups) == 2  # head weight and bias only
    x = ecg_like(2, 12, 500)
    torch.testing.assert_close(clf.forward_features(x), clf.forward_features(x))  # no drop-path
    clf(x).sum().backward()
    assert all(p.grad is None for p in clf.encoder.parameters())


def test_bf16_autocast_forward_on_cpu():
    torch.manual_seed(0)
    model = create_model("ecgmae_tiny")
    x = ecg_like(2, 12, 500)
    torch.manual_seed(1)
    ref = model(x)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert math.isclose(out.loss.item(), ref.loss.item(), rel_tol=0.05)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_meanstd_pool_is_the_mean_and_spread_of_the_patch_tokens():
    torch.manual_seed(0)
    enc = create_model("ecgmae_tiny", pool="meanstd").encoder.eval()
    x = ecg_like(3, 12, 500)
    tokens = enc.forward_features(x)  # (B, n, D)
    z = enc(x)
    d = enc.cfg.embed_dim
    assert z.shape == (3, 2 * d) and enc.pooled_dim() == 2 * d and enc.pooled_dim("mean") == d
    torch.testing.assert_close(z[:, :d], tokens.mean(1))
    torch.testing.assert_close(z[:, d:], tokens.std(1, correction=0))
    clf = ECGClassifier(enc.cfg, 4).eval()
    clf.load_encoder(enc.state_dict())
    assert clf.head.in_features == 2 * d and clf(x).shape == (3, 4)
    torch.testing.assert_close(clf.forward_head(clf.forward_features(x), pre_logits=True), z)
    assert ECGClassifier(dataclasses.replace(enc.cfg, pool="mean"), 4).head.in_features == d
    from ecgmae.models.contrastive import ContrastiveModel

    assert ContrastiveModel(enc, proj_dim=8)(x).shape == (3, 8)


def test_stats_pool_adds_the_change_between_consecutive_time_tokens():
    torch.manual_seed(0)
    enc = create_model("ecgmae_tiny", tokenization="time", pool="stats").encoder.eval()
    x = ecg_like(3, 12, 500)
    tokens = enc.forward_features(x)  # (B, n, D), time order
    z = enc(x)
    d = enc.cfg.embed_dim
    assert z.shape == (3, 4 * d) and enc.pooled_dim() == 4 * d
    step = tokens[:, 1:] - tokens[:, :-1]
    torch.testing.assert_close(z[:, : 2 * d], enc.pool(tokens, "meanstd"))
    torch.testing.assert_close(z[:, 2 * d : 3 * d], step.abs().mean(1))
    torch.testing.assert_close(z[:, 3 * d :], step.std(1, correction=0))
    # the order of the tokens matters to the change features only: reversing time keeps them, shuffling does not
    torch.testing.assert_close(enc.pool(tokens.flip(1))[:, 2 * d :], z[:, 2 * d :])
    shuffled = enc.pool(tokens[:, torch.randperm(tokens.shape[1])])
    torch.testing.assert_close(shuffled[:, : 2 * d], z[:, : 2 * d])
    assert not torch.allclose(shuffled[:, 2 * d :], z[:, 2 * d :])
    one = enc.pool(tokens[:, :1])  # a single token: no change, zeros, not NaN
    assert torch.isfinite(one).all() and (one[:, 2 * d :] == 0).all()
    clf = ECGClassifier(enc.cfg, 4).eval()
    clf.load_encoder(enc.state_dict())
    assert clf.head.in_features == 4 * d and clf(x).shape == (3, 4)


def test_stats_pool_needs_time_tokens():
    with pytest.raises(ConfigError, match="stats"):
        create_model("ecgmae_tiny", tokenization="lead", pool="stats")
