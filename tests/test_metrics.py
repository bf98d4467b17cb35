"""The Table 1 metrics: Pixel-MSE on clips with known motion; CLIP metrics on a tiny random CLIP built offline.

The tiny CLIP has random weights, so its Tem-Con / Fram-Acc / Spat-Con values are meaningless numbers: these tests
check shapes, loading and the arithmetic against direct formulas, not quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fresco_v2v.cli import main
from fresco_v2v.errors import ConfigError, InputError, ModelNotFound
from fresco_v2v.losses import spatial_consistency_loss
from fresco_v2v.metrics import (
    CLIP_MEAN,
    CLIP_STD,
    aligned_pixel_mse,
    evaluate_frames,
    feature_network_from_clip,
    frame_accuracy,
    load_clip,
    preprocess_frames,
    spatial_consistency,
    temporal_consistency,
    token_map,
)
from fresco_v2v.testing import moving_square_clip, shifted_texture_clip, write_test_video

# ------------------------------------------------------------------------------------------------ tiny CLIP


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A CLIPModel at tiny size with random weights and a character-level CLIPTokenizer, saved as a model folder."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c + "</w>"] = len(vocab)
    text = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=24,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = dict(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37
    )
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    folder = tmp_path_factory.mktemp("tiny-clip")
    model.save_pretrained(folder)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_dir):
    return load_clip(str(tiny_clip_dir))


def frames(t=5, h=40, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ pure functions


def test_aligned_pixel_mse_direct_loop():
    g = torch.Generator().manual_seed(0)
    t, h, w = 3, 4, 5
    out = torch.rand(t, 3, h, w, generator=g, dtype=torch.float64)
    flow = torch.zeros(t - 1, h, w, 2, dtype=torch.float64)
    flow[..., 0] = -1.0  # frame t+1 at x came from frame t at x - 1 (clamped at the border)
    occ = torch.rand(t - 1, h, w, generator=g) < 0.3
    occ[1] = True  # a pair with no visible pixel -> NaN
    got = aligned_pixel_mse(out, flow, occ)
    for i in range(t - 1):
        total, count = 0.0, 0
        for y in range(h):
            for x in range(w):
                if not occ[i, y, x]:
                    total += ((out[i + 1, :, y, x] - out[i, :, y, max(x - 1, 0)]) ** 2).mean().item()
                    count += 1
        if count == 0:
            assert got[i].isnan()
        else:
            assert got[i].item() == pytest.approx(total / count)


def test_temporal_consistency_and_frame_accuracy_direct():
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(6, 8, generator=g, dtype=torch.float64)
    cos = lambda a, b: (a @ b / (a.norm() * b.norm())).item()  # noqa: E731
    expect = sum(cos(emb[i], emb[i + 1]) for i in range(5)) / 5
    assert temporal_consistency(emb).item() == pytest.approx(expect, abs=1e-6)
    tgt, src = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    hits = sum(cos(e, tgt) > cos(e, src) for e in emb)
    assert frame_accuracy(emb, tgt, src).item() == pytest.approx(hits / 6)
    assert frame_accuracy(emb, tgt, tgt).item() == 0.0  # a tie is a miss
    assert frame_accuracy(tgt[None].repeat(3, 1), tgt, src).item() == 1.0


def test_spatial_consistency_direct_gram():
    g = torch.Generator().manual_seed(2)
    f, r = torch.randn(3, 5, 4, 6, generator=g), torch.randn(3, 5, 4, 6, generator=g)
    tok = lambda x: torch.nn.functional.normalize(x.flatten(2).transpose(1, 2), dim=-1)  # noqa: E731
    gram = lambda x: tok(x) @ tok(x).transpose(1, 2)  # noqa: E731  [N, L, L]
    direct = (gram(f) - gram(r)).pow(2).mean(dim=(1, 2))
    torch.testing.assert_close(spatial_consistency(f, r), direct, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(spatial_consistency(f, r).mean(), spatial_consistency_loss(f, r))
    assert spatial_consistency(r, r).abs().max() < 1e-5


def test_token_map_drops_prefix_tokens():
    grid = torch.arange(2 * 6 * 9, dtype=torch.float32).reshape(2, 6, 3, 3)  # [N, C, h, w]
    tokens = grid.flatten(2).transpose(1, 2)  # [N, 9, C]
    for prefix in (0, 1, 5):
        hidden = torch.cat([torch.full((2, prefix, 6), -1.0), tokens], dim=1)
        torch.testing.assert_close(token_map(hidden), grid)
    assert token_map(grid) is grid


def test_preprocess_crop_and_squash():
    f = frames(2, 40, 80)
    x = preprocess_frames(f, 40, (0, 0, 0), (1, 1, 1))  # short side already 40: a centred 40x40 crop
    torch.testing.assert_close(x, torch.from_numpy(f[:, :, 20:60]).permute(0, 3, 1, 2).float() / 255)
    y = preprocess_frames(f, 16, CLIP_MEAN, CLIP_STD, crop=False, dtype=torch.float64)
    assert y.shape == (2, 3, 16, 16) and y.dtype == torch.float64


# ------------------------------------------------------------------------------------------------ Pixel-MSE


@pytest.mark.parametrize("shift", [(2, 1), (-3, 2)])
def test_pixel_mse_consistent_clip_near_zero_shuffled_high(shift):
    clip = shifted_texture_clip(8, 64, 96, shift, seed=4)
    same = evaluate_frames(clip, clip).pixel_mse
    perm = np.random.default_rng(0).permutation(len(clip))
    assert (perm[1:] != perm[:-1] + 1).any()
    shuffled = evaluate_frames(clip, clip[perm]).pixel_mse
    assert same < 1e-3
    assert shuffled >= 10 * same and shuffled > 1e-3


def test_pixel_mse_moving_square_and_values_in_unit_range():
    clip = moving_square_clip(6, 64, 80, 20, (6, 6), (4, 3))
    same = evaluate_frames(clip, clip).pixel_mse
    flipped = evaluate_frames(clip, 255 - clip[::-1]).pixel_mse  # worst-ish case stays in [0, 1]
    assert same < 1e-3 and 0 < flipped <= 1


def test_mismatched_inputs_raise_input_error():
    a = shifted_texture_clip(5, 64, 64, (1, 0))
    with pytest.raises(InputError, match="5 frames but .* has 4"):
        evaluate_frames(a, a[:4])
    with pytest.raises(InputError, match="64x64 but output is 32x64"):
        evaluate_frames(a, a[:, :, :32])
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate_frames(a, a, batch_size=0)


def test_without_clip_only_pixel_mse_runs():
    a = shifted_texture_clip(4, 64, 64, (1, 0))
    r = evaluate_frames(a, a, prompt="x", source_prompt="y")
    assert r.pixel_mse is not None and r.tem_con is None and r.fram_acc is None and r.spat_con is None
    assert set(r.unavailable) == {"tem_con", "fram_acc", "spat_con"}
    assert "--clip-model" in r.unavailable["tem_con"]
    one = evaluate_frames(a[:1], a[:1])
    assert one.pixel_mse is None and "2 frames" in one.unavailable["pixel_mse"]


# ------------------------------------------------------------------------------------------------ CLIP metrics


def test_clip_embeddings_shapes_and_arithmetic(tiny_clip, tiny_clip_dir):
    from transformers import CLIPModel, CLIPTokenizer

    inp, out = frames(5, seed=1), frames(5, seed=2)
    emb = tiny_clip.image_embeddings(out, batch_size=2)
    assert emb.shape == (5, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(5))
    # Direct: the same model called by hand, cosines written out.
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    tok = CLIPTokenizer.from_pretrained(tiny_clip_dir)
    with torch.no_grad():
        pix = preprocess_frames(out, 32, CLIP_MEAN, CLIP_STD)
        e = model.get_image_features(pixel_values=pix)
        e = e if torch.is_tensor(e) else e.pooler_output
        ids = tok(["a cat", "a dog"], padding=True, return_tensors="pt")
        t = model.get_text_features(input_ids=ids.input_ids, attention_mask=ids.attention_mask)
        t = t if torch.is_tensor(t) else t.pooler_output
        hidden = model.vision_model(
            pixel_values=preprocess_frames(np.concatenate([out, inp]), 32, CLIP_MEAN, CLIP_STD, crop=False),
            output_hidden_states=True,
        ).hidden_states
    cos = torch.nn.functional.cosine_similarity
    tem = float(cos(e[:-1], e[1:], dim=-1).mean())
    acc = float((cos(e, t[0:1], dim=-1) > cos(e, t[1:2], dim=-1)).float().mean())
    assert len(hidden) == 5  # embeddings + 4 layers; depth 0.5 -> hidden_states[2]
    grid = hidden[2][:, 1:].transpose(1, 2).reshape(10, 32, 4, 4)  # drop CLS, 4x4 patches of 8 px
    tokens = torch.nn.functional.normalize(grid.flatten(2).transpose(1, 2), dim=-1)  # [10, 16, 32]
    grams = tokens @ tokens.transpose(1, 2)
    spat = float((grams[:5] - grams[5:]).pow(2).mean())

    r = evaluate_frames(inp, out, prompt="a cat", source_prompt="a dog", clip_model=tiny_clip, batch_size=2)
    assert r.unavailable == {}
    assert r.tem_con == pytest.approx(tem, abs=1e-5)
    assert r.fram_acc == pytest.approx(acc)
    assert r.spat_con == pytest.approx(spat, rel=1e-4)
    assert r.clip_model == str(tiny_clip_dir) and "vision tower" in r.feature_model
    feats = feature_network_from_clip(tiny_clip).features(out)
    assert feats.shape == (5, 32, 4, 4)


def test_identical_frames_score_perfectly(tiny_clip):
    f = np.repeat(frames(1, 48, 48, seed=3), 4, axis=0)
    r = evaluate_frames(f, f, clip_model=tiny_clip)
    assert r.tem_con == pytest.approx(1.0, abs=1e-5)
    assert r.spat_con == pytest.approx(0.0, abs=1e-6)
    assert "--prompt" in r.unavailable["fram_acc"]


def test_feature_model_by_name_equals_clip_tower(tiny_clip, tiny_clip_dir):
    inp, out = frames(3, seed=4), frames(3, seed=5)
    default = evaluate_frames(inp, out, clip_model=tiny_clip).spat_con
    named = evaluate_frames(inp, out, feature_model=str(tiny_clip_dir))
    assert named.spat_con == pytest.approx(default, rel=1e-5) and named.feature_model == str(tiny_clip_dir)
    assert named.tem_con is None  # Spat-Con runs without a CLIP for Tem-Con / Fram-Acc
    with pytest.raises(ConfigError, match="feature_depth"):
        evaluate_frames(inp, out, feature_depth=0)


def test_clip_load_failures_are_reasons(tmp_path, tiny_clip_dir):
    missing = tmp_path / "no-such-clip"
    with pytest.raises(ModelNotFound, match="no such folder"):
        load_clip(str(missing))
    a = shifted_texture_clip(4, 64, 64, (1, 0))
    r = evaluate_frames(a, a, clip_model=str(missing), prompt="a", source_prompt="b")
    assert r.pixel_mse is not None and r.tem_con is None
    assert "no such folder" in r.unavailable["tem_con"] and "no such folder" in r.unavailable["spat_con"]
    r = evaluate_frames(a, a, clip_model=str(tiny_clip_dir), feature_model=str(missing))
    assert r.tem_con is not None and r.spat_con is None and "feature model" in r.unavailable["spat_con"]


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    clip = shifted_texture_clip(8, 64, 96, (2, 1), seed=5)
    return {
        "in": write_test_video(d / "in.mp4", clip, 24, audio_codec=None),
        "short": write_test_video(d / "short.mp4", clip[:6], 24, audio_codec=None),
        "small": write_test_video(d / "small.mp4", shifted_texture_clip(8, 64, 80, (2, 1)), 24, audio_codec=None),
    }


def test_cli_evaluate_without_clip(videos, capsys):
    assert main(["evaluate", "--input", str(videos["in"]), "--output", str(videos["in"]), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("Pixel-MSE") for line in out)
    assert sum("unavailable: no CLIP model given" in line for line in out) == 2
    last = json.loads(out[-1])
    assert set(last) == {"pixel_mse", "tem_con", "fram_acc", "spat_con", "unavailable"}
    assert last["pixel_mse"] < 1e-3 and last["tem_con"] is None and last["spat_con"] is None
    assert set(last["unavailable"]) == {"tem_con", "fram_acc", "spat_con"}


def test_cli_evaluate_with_tiny_clip(videos, tiny_clip_dir, capsys):
    argv = [
        "evaluate",
        "--input",
        str(videos["in"]),
        "--output",
        str(videos["in"]),
        "--clip-model",
        str(tiny_clip_dir),
        "--prompt",
        "a cat",
        "--source-prompt",
        "a dog",
        "--device",
        "cpu",
        "--json",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    last = json.loads(out[-1])
    assert last["unavailable"] == {}
    assert last["tem_con"] is not None and 0 <= last["fram_acc"] <= 1 and last["spat_con"] == pytest.approx(0, abs=1e-6)
    assert not any("unavailable" in line for line in out[:-1])


def test_cli_mismatched_inputs_exit_2(videos, capsys):
    assert main(["evaluate", "--input", str(videos["in"]), "--output", str(videos["short"])]) == 2
    assert "has 8 frames but" in capsys.readouterr().err
    assert main(["evaluate", "--input", str(videos["in"]), "--output", str(videos["small"])]) == 2
    assert "96x64 but" in capsys.readouterr().err


def test_cli_offline_hub_id_is_unavailable_subprocess(videos):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(videos["in"].parent / "hf-home"))
    cmd = [
        sys.executable,
        "-m",
        "fresco_v2v",
        "evaluate",
        "--input",
        str(videos["in"]),
        "--output",
        str(videos["in"]),
        "--clip-model",
        "openai/clip-vit-large-patch14",
        "--json",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["pixel_mse"] < 1e-3 and last["tem_con"] is None
    assert "openai/clip-vit-large-patch14" in last["unavailable"]["tem_con"]
    assert "Traceback" not in r.stderr


def test_unreachable_hub_loads_from_the_cache_only(monkeypatch):
    from fresco_v2v import models

    monkeypatch.setattr(models, "use_local_cache_only", lambda ident: True)
    seen = []

    def loader(name, **kwargs):
        seen.append(kwargs)
        raise OSError("not in the cache")

    with pytest.raises(ModelNotFound, match="not reachable from here, so only the local cache was searched"):
        models.load_transformers(loader, "someone/clip", "CLIP model", "clip_model", dtype=torch.float32)
    with pytest.raises(ModelNotFound):
        models.load_transformers(loader, "someone/clip", "CLIP tokenizer", "clip_model", weights=False)
    assert seen[0] == {
        "local_files_only": True,
        "adapter_kwargs": {"local_files_only": True},
        "dtype": torch.float32,
        "use_safetensors": True,  # the pickle gate: hub repos with only .bin weights need allow_pickle
    }
    assert seen[1] == {"local_files_only": True}


def test_evaluate_videos_streams_and_matches_the_arrays(tmp_path):
    """evaluate_videos reads both files through FrameReaders a chunk at a time; the figures are those of the
    decoded arrays."""
    from fresco_v2v.metrics import evaluate_frames, evaluate_videos
    from fresco_v2v.testing import moving_square_clip, write_test_video
    from fresco_v2v.video import read_video

    a = write_test_video(tmp_path / "a.mp4", moving_square_clip(9, 64, 64, 16, (4, 4), (3, 2)), 24, audio_codec=None)
    b = write_test_video(tmp_path / "b.mp4", 255 - moving_square_clip(9, 64, 64, 16, (4, 4), (3, 2)), 24)
    streamed = evaluate_videos(a, b, batch_size=2)
    whole = evaluate_frames(read_video(a, short_side=None).frames, read_video(b, short_side=None).frames, batch_size=2)
    assert streamed.pixel_mse == pytest.approx(whole.pixel_mse, rel=1e-6) and streamed.pixel_mse > 0
    assert streamed.num_frames == 9 and streamed.size == (64, 64)
