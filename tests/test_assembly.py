"""Stages 4-5 as a cluster cuts them (``fresco_v2v.assembly``): each output chunk made by its own task as soon as the
batches holding its keys are done, in any order, then assembled: the same bytes as `translate_video`'s one pass."""

from fractions import Fraction

import pytest

from fresco_v2v import encode
from fresco_v2v.assembly import assemble_chunks, batches_needed, output_chunks, propagate_chunk
from fresco_v2v.config import RunConfig
from fresco_v2v.errors import InputError
from fresco_v2v.runner import load_run_pipeline, read_and_plan, translate_one_batch, translate_video
from fresco_v2v.testing import moving_square_clip, write_test_video

SMALL = {"model": "tiny", "steps": 2, "strength": 1.0, "resolution": 64, "s_min": 2, "s_max": 3, "batch_size": 3}


def _outputs(folder):
    files = sorted((folder / "keyframes").glob("*.png")) + [folder / "video.mp4", folder / "run.json"]
    return {f.name: f.read_bytes() for f in files if f.name != "run.json"}


def test_chunks_made_as_their_keys_appear_give_the_one_pass_output(tmp_path, monkeypatch):
    monkeypatch.setattr(encode, "CHUNK_FRAMES", 4)  # a 16-frame clip in several chunks
    clip = tmp_path / "in.mp4"
    write_test_video(clip, moving_square_clip(16, 64, 80, 20, (6, 20), (3, 1)), Fraction(25))
    whole = translate_video(RunConfig(input=clip, prompt="a painting", output=tmp_path / "whole", **SMALL))

    plan = read_and_plan(RunConfig(input=clip, prompt="a painting", output=tmp_path / "cut", **SMALL), progress=False)
    with plan.lock:
        starts, needs = output_chunks(plan), batches_needed(plan)
        assert len(starts) >= 3 and len(plan.batches) >= 3 and needs == sorted(needs) and needs[-1] == len(plan.batches)
        assert needs[0] < len(plan.batches)  # the first chunks can start while later batches still run
        pipe = load_run_pipeline(plan.cfg)
        made, anchors = [], None
        for b in range(len(plan.batches)):
            anchors = translate_one_batch(plan, b, pipe, anchors if b % 2 else None)  # handed on, or from disk
            ready = [c for c, need in enumerate(needs) if need == b + 1]
            for c in reversed(ready):  # any order; a later key would be read from a file not written yet
                assert propagate_chunk(plan, c) is True
                made.append(c)
        assert sorted(made) == list(range(len(starts)))
        assert propagate_chunk(plan, 0) is False  # a retried task redoes nothing
        result = assemble_chunks(plan)
    assert result.report["frames"] == 16 and result.report["keyframes"] == whole.keyframes
    assert _outputs(tmp_path / "cut") == _outputs(tmp_path / "whole")


def test_a_chunk_cannot_be_made_before_its_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(encode, "CHUNK_FRAMES", 4)
    clip = tmp_path / "in.mp4"
    write_test_video(clip, moving_square_clip(16, 64, 80, 20, (6, 20), (3, 1)), Fraction(25))
    plan = read_and_plan(RunConfig(input=clip, prompt="a painting", output=tmp_path / "o", **SMALL), progress=False)
    with plan.lock:
        with pytest.raises(InputError, match="needs keyframes .* not translated yet"):  # no batch done yet
            propagate_chunk(plan, len(output_chunks(plan)) - 1)
        with pytest.raises(InputError, match="not made yet"):
            assemble_chunks(plan)


def test_propagation_tasks_do_not_import_diffusers():
    """A chunk task's process (a Ray CPU task on a cluster) imports the assembly stage only: no diffusers or
    transformers (seconds of start-up per process, measured in benchmarks/cluster_ray.log)."""
    import subprocess
    import sys

    code = (
        "import sys, fresco_v2v.assembly, fresco_v2v.cluster.run\n"
        "print(sorted(m for m in ('diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
