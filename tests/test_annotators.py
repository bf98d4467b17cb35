"""HED and depth annotators on random weights, offline: checkpoint layout, loading gates, output format, oracles."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fresco_v2v import ConfigError, ModelNotFound
from fresco_v2v.annotators import (
    HED_FILENAME,
    ControlNetHED,
    _dpt_side,
    depth_condition,
    hed_condition,
    load_depth_estimator,
    load_hed,
)


def random_frames(n, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------------------- HED

#: The keys of lllyasviel/Annotators' ControlNetHED.pth, written out by hand: the oracle for the layout.
HED_KEYS = {"norm"} | {
    f"block{b}.{name}"
    for b, n_convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
    for name in [f"convs.{i}.{p}" for i in range(n_convs) for p in ("weight", "bias")]
    + ["projection.weight", "projection.bias"]
}
#: Shapes of a few of them (out, in, k, k).
HED_SHAPES = {
    "norm": (1, 3, 1, 1),
    "block1.convs.0.weight": (64, 3, 3, 3),
    "block1.convs.1.weight": (64, 64, 3, 3),
    "block2.convs.0.weight": (128, 64, 3, 3),
    "block3.convs.2.weight": (256, 256, 3, 3),
    "block4.convs.0.weight": (512, 256, 3, 3),
    "block5.convs.2.weight": (512, 512, 3, 3),
    "block5.convs.2.bias": (512,),
    "block1.projection.weight": (1, 64, 1, 1),
    "block5.projection.weight": (1, 512, 1, 1),
    "block5.projection.bias": (1,),
}


def random_hed(seed=0):
    torch.manual_seed(seed)
    net = ControlNetHED()
    with torch.no_grad():
        net.norm.copy_(torch.tensor([123.0, 117.0, 104.0]).view(1, 3, 1, 1))
        for name, p in net.named_parameters():  # projections with non-trivial biases: edges neither all 0 nor all 1
            if name.endswith("projection.bias"):
                p.uniform_(-1.0, 1.0)
    return net.eval()


@pytest.fixture(scope="module")
def hed_files(tmp_path_factory):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("hed")
    net = random_hed()
    torch.save(net.state_dict(), root / HED_FILENAME)
    save_file(net.state_dict(), str(root / "ControlNetHED.safetensors"))
    return root, net


def test_hed_state_dict_has_exactly_the_checkpoint_keys():
    state = ControlNetHED().state_dict()
    assert set(state) == HED_KEYS and len(HED_KEYS) == 1 + 2 * (2 + 2 + 3 + 3 + 3) + 5 * 2
    for key, shape in HED_SHAPES.items():
        assert tuple(state[key].shape) == shape, key


def test_hed_side_maps_halve_the_resolution():
    sides = random_hed()(torch.rand(2, 3, 37, 50) * 255)
    want = [(2, 1, 37, 50), (2, 1, 18, 25), (2, 1, 9, 12), (2, 1, 4, 6), (2, 1, 2, 3)]
    assert [tuple(s.shape) for s in sides] == want


def test_hed_round_trip_through_safetensors_and_pth(hed_files):
    root, net = hed_files
    frames = random_frames(2, 37, 50)
    want = hed_condition(frames, net)
    from_st = load_hed(str(root / "ControlNetHED.safetensors"))
    from_pth = load_hed(str(root / HED_FILENAME), allow_pickle=True)
    assert not from_st.training and not from_pth.training
    assert torch.equal(hed_condition(frames, from_st), want) and torch.equal(hed_condition(frames, from_pth), want)
    for key, value in net.state_dict().items():
        assert torch.equal(from_pth.state_dict()[key], value), key


def test_hed_pth_needs_the_pickle_opt_in(hed_files):
    root, _ = hed_files
    with pytest.raises(ConfigError, match="hed"):
        load_hed(str(root / HED_FILENAME))
    with pytest.raises(ConfigError, match="hed"):  # the hub file is a .pth too: refused before any download
        load_hed("lllyasviel/Annotators")


def test_hed_folder_prefers_safetensors(hed_files, tmp_path):
    root, net = hed_files
    assert isinstance(load_hed(str(root)), ControlNetHED)  # .safetensors beside the .pth: no opt-in needed
    (tmp_path / HED_FILENAME).write_bytes((root / HED_FILENAME).read_bytes())
    with pytest.raises(ConfigError):
        load_hed(str(tmp_path))
    assert torch.equal(load_hed(str(tmp_path), allow_pickle=True).norm, net.norm)


def test_hed_mismatched_state_dict_names_the_file_and_keys(hed_files, tmp_path):
    _, net = hed_files
    state = dict(net.state_dict())
    del state["block3.convs.2.weight"]
    state["block6.projection.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(ModelNotFound, match=r"bad\.pth.*1 missing.*block3\.convs\.2\.weight.*block6\.projection"):
        load_hed(str(bad), allow_pickle=True)
    state = dict(net.state_dict())
    state["block1.projection.weight"] = torch.zeros(1, 64, 3, 3)  # right keys, wrong shape
    torch.save(state, bad)
    with pytest.raises(ModelNotFound, match=r"bad\.pth.*do not fit"):
        load_hed(str(bad), allow_pickle=True)


def test_hed_missing_file_and_offline_hub(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFound, match="nope.safetensors"):
        load_hed(str(tmp_path / "nope.safetensors"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelNotFound, match="only the local cache was searched"):
        load_hed("someone/annotators", allow_pickle=True)


def test_hed_from_the_hub_cache_offline(hed_files, tmp_path, monkeypatch):
    """A hub id resolves to ControlNetHED.pth in the hub cache at once when the hub cannot be reached."""
    import huggingface_hub.constants

    root, net = hed_files
    commit = "0" * 40
    repo = tmp_path / "models--someone--annotators"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / HED_FILENAME).write_bytes((root / HED_FILENAME).read_bytes())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    loaded = load_hed("someone/annotators", allow_pickle=True)
    assert torch.equal(loaded.block5.projection.weight, net.block5.projection.weight)


def test_hed_condition_format_and_chunking(hed_files):
    _, net = hed_files
    frames = random_frames(3, 37, 50)
    cond = hed_condition(frames, net, chunk_size=2)
    assert cond.shape == (3, 3, 37, 50) and cond.dtype == torch.float32 and cond.device.type == "cpu"
    assert cond.min() >= 0 and cond.max() <= 1 and cond.std() > 0.01
    assert torch.equal(cond[:, 0], cond[:, 1]) and torch.equal(cond[:, 0], cond[:, 2])
    assert torch.equal(cond.mul(255).round(), cond.mul(255))  # 8-bit levels, as the annotator's uint8
    assert torch.allclose(hed_condition(list(frames), net, chunk_size=3), cond, atol=1 / 255 + 1e-6)
    assert torch.allclose(hed_condition(frames[1:2], net), cond[1:2], atol=1 / 255 + 1e-6)


def test_hed_condition_against_a_naive_recomputation(hed_files):
    _, net = hed_files
    frame = random_frames(1, 37, 50, seed=3)[0]  # [H, W, 3]
    x = torch.tensor(frame, dtype=torch.float32).permute(2, 0, 1)[None]  # [1, 3, H, W], 0..255
    h = x - net.norm
    logits = []
    with torch.no_grad():
        for b, block in enumerate([net.block1, net.block2, net.block3, net.block4, net.block5]):
            if b > 0:
                h = F.max_pool2d(h, 2)
            for conv in block.convs:
                h = torch.relu(conv(h))
            logits.append(F.interpolate(block.projection(h), size=(37, 50), mode="bilinear", align_corners=False))
    edge = torch.sigmoid(sum(logits) / 5)[0, 0]  # [H, W]
    want = np.floor(np.clip(edge.numpy() * 255, 0, 255)) / 255
    got = hed_condition([frame], net)[0]
    assert np.abs(got[0].numpy() - want).max() <= 1 / 255 + 1e-6  # at most one 8-bit level (float rounding)
    assert np.mean(got[0].numpy() == want) > 0.99


def test_hed_condition_refuses_bad_frames(hed_files):
    _, net = hed_files
    with pytest.raises(ConfigError, match="frames"):
        hed_condition(np.zeros((2, 8, 8), np.uint8), net)
    with pytest.raises(ConfigError, match="frames"):
        hed_condition(np.zeros((1, 8, 8, 3), np.float32), net)
    with pytest.raises(ConfigError, match="chunk_size"):
        hed_condition(random_frames(1, 8, 8), net, chunk_size=0)


# -------------------------------------------------------------------------------------------------------------- depth


def tiny_dpt(seed=0):
    from transformers import DPTConfig, DPTForDepthEstimation

    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=64,
        patch_size=16,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=16,
        is_hybrid=False,
        use_auxiliary_head=False,
        initializer_range=0.2,  # outputs well away from 0 after the head's ReLU
    )
    torch.manual_seed(seed)
    return DPTForDepthEstimation(config).eval()


@pytest.fixture(scope="module")
def dpt_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpt")
    model = tiny_dpt()
    model.save_pretrained(root / "safe")
    model.config.save_pretrained(root / "pickle")  # transformers 5 saves only .safetensors: write the .bin by hand
    torch.save(model.state_dict(), root / "pickle" / "pytorch_model.bin")
    return root, model


def test_depth_estimator_loads_from_a_folder(dpt_folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, model = dpt_folder
    loaded = load_depth_estimator(str(root / "safe"))
    assert not loaded.training
    frames = random_frames(2, 45, 70)
    assert torch.equal(depth_condition(frames, loaded), depth_condition(frames, model))


def test_depth_pickle_only_folder_needs_the_opt_in(dpt_folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, model = dpt_folder
    assert not list((root / "pickle").glob("*.safetensors")) and list((root / "pickle").glob("*.bin"))
    with pytest.raises(ConfigError, match="depth"):
        load_depth_estimator(str(root / "pickle"))
    loaded = load_depth_estimator(str(root / "pickle"), allow_pickle=True)
    assert torch.equal(loaded.head.head[4].weight, model.head.head[4].weight)


def test_depth_missing_model_is_model_not_found(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFound, match="depth estimator 'someone/no-such-dpt'"):
        load_depth_estimator("someone/no-such-dpt")


def test_depth_condition_format_and_range():
    model = tiny_dpt()
    frames = random_frames(3, 45, 70)
    cond = depth_condition(frames, model, chunk_size=2)
    assert cond.shape == (3, 3, 45, 70) and cond.dtype == torch.float32 and cond.device.type == "cpu"
    assert torch.equal(cond[:, 0], cond[:, 1]) and torch.equal(cond[:, 0], cond[:, 2])
    flat = cond[:, 0].flatten(1)
    assert torch.equal(flat.amin(1), torch.zeros(3)) and torch.allclose(flat.amax(1), torch.ones(3))
    assert torch.allclose(depth_condition(frames[2:], model), cond[2:], atol=1e-5)  # batch-independent
    assert not torch.allclose(cond[0], cond[1], atol=0.05)  # the frames differ, so do their depths


def test_depth_condition_against_a_naive_recomputation():
    model = tiny_dpt()
    frame = random_frames(1, 45, 70, seed=5)[0]
    x = torch.tensor(frame, dtype=torch.float32).permute(2, 0, 1)[None] / 255  # [1, 3, H, W]
    x = F.interpolate(x, size=(96, 96), mode="bicubic", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        d = model(pixel_values=(x - 0.5) / 0.5).predicted_depth[None]  # [1, 1, 96, 96]
    d = F.interpolate(d, size=(45, 70), mode="bicubic", align_corners=False)[0, 0]
    want = (d - d.min()) / (d.max() - d.min())
    got = depth_condition([frame], model, size=100)[0, 0]  # 100 -> 96, a multiple of 32
    assert torch.allclose(got, want, atol=1e-5)


def test_constant_depth_gives_zeros_not_nan():
    model = tiny_dpt()
    with torch.no_grad():
        model.head.head[4].weight.zero_()
        model.head.head[4].bias.fill_(2.5)
    cond = depth_condition(random_frames(2, 33, 40), model)
    assert not torch.isnan(cond).any() and torch.equal(cond, torch.zeros_like(cond))


def test_dpt_input_side():
    from transformers import DPTConfig

    plain = DPTConfig(image_size=384, patch_size=16)
    assert _dpt_side(plain, None) == 384 and _dpt_side(plain, 500) == 512 and _dpt_side(plain, 10) == 32
    hybrid = DPTConfig(image_size=384, is_hybrid=True)
    assert _dpt_side(hybrid, None) == 384 and _dpt_side(hybrid, 384) == 384
    with pytest.raises(ConfigError, match="depth size"):
        _dpt_side(hybrid, 512)


@pytest.mark.slow
def test_real_annotators_from_the_hub():  # pragma: no cover - needs weights: FRESCO_RUN_SLOW=1
    frames = random_frames(1, 64, 96)
    hed = load_hed(allow_pickle=True)
    assert hed_condition(frames, hed).shape == (1, 3, 64, 96)
    depth = load_depth_estimator()
    assert depth_condition(frames, depth).shape == (1, 3, 64, 96)
