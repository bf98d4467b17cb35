"""`fresco batch` on a local Ray instance (CPU, the tiny model at 64 px): the same outputs as `fresco translate` of
each video, a bad entry reported while the others finish, an actor per (logical) GPU, and an actor killed mid-batch
retried without changing the outputs. Skipped without Ray (``pip install 'fresco-v2v[cluster]'``)."""

import json
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from fresco_v2v.cluster import read_manifest
from fresco_v2v.runner import translate_video
from fresco_v2v.testing import moving_square_clip, write_test_video

ray = pytest.importorskip("ray")

SMALL = {"model": "tiny", "steps": 2, "strength": 1.0, "resolution": 64, "s_min": 2, "s_max": 4, "batch_size": 3}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    for i, n in enumerate((8, 10, 12)):
        write_test_video(d / f"v{i}.mp4", moving_square_clip(n, 64, 80, 20, (8, 20), (3, 1)), Fraction(25))
    (d / "batch.yaml").write_text(
        "- {input: v0.mp4, prompt: a painting}\n"
        "- {input: v1.mp4, prompt: a drawing, seed: 3}\n"
        "- {input: missing.mp4, prompt: lost}\n"
        "- {input: v2.mp4, prompt: a painting}\n"
    )
    return d


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)  # two logical GPUs
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def alone(clips, tmp_path_factory):
    """Each video's outputs from `fresco translate`'s path (``translate_video``), once for the module."""
    out = tmp_path_factory.mktemp("alone")
    made = {}
    for e in read_manifest(clips / "batch.yaml", out, SMALL):
        if e.name != "missing":
            translate_video(e.config, progress=False)
            made[e.name] = _outputs(out / e.name)
    return made


def _outputs(folder: Path) -> dict:
    files = sorted((folder / "keyframes").glob("*.png")) + [folder / "video.mp4"]
    return {f.relative_to(folder).as_posix(): f.read_bytes() for f in files}


def test_batch_gives_what_translate_gives_and_reports_the_failed_video(clips, local_ray, alone, tmp_path):
    from fresco_v2v.cluster.run import translate_many

    entries = read_manifest(clips / "batch.yaml", tmp_path / "out", SMALL)
    # the workers on this process's thread count: float sums, and so the bytes, depend on it
    report = translate_many(entries, tmp_path / "out", progress=False, worker_threads=torch.get_num_threads())
    by_name = {r["name"]: r for r in report}
    assert [by_name[n]["status"] for n in ("v0", "v1", "missing", "v2")] == ["done", "done", "failed", "done"]
    assert "missing.mp4: no such file" in by_name["missing"]["error"]
    n_batches = len(json.loads((tmp_path / "out" / "v2" / "run.json").read_text())["batches"])
    assert by_name["v2"]["batches"] == f"{n_batches}/{n_batches}" and by_name["v2"]["chunks"] == "1/1"
    assert all(by_name["v2"]["seconds"][k] > 0 for k in ("translate", "propagate", "assemble"))
    assert json.loads((tmp_path / "out" / "batch.json").read_text())["videos"] == json.loads(json.dumps(report))
    assert json.loads((tmp_path / "out" / "batch.json").read_text())["workers"] == 2  # one actor per logical GPU
    for name in ("v0", "v1", "v2"):
        assert _outputs(tmp_path / "out" / name) == alone[name], name


class DiesOnce:
    """A worker whose first batch kills its process halfway (a node lost mid-batch), once per marker file."""

    def __init__(self, marker: str, threads: int):
        from fresco_v2v.cluster.run import BatchWorker

        self.inner, self.marker = BatchWorker(threads), Path(marker)

    def translate(self, plan, b, anchors=None):
        import os

        if not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        return self.inner.translate(plan, b, anchors)


def test_two_gpus_get_two_workers_and_a_killed_worker_is_retried(clips, local_ray, alone, tmp_path):
    import ray.cloudpickle

    from fresco_v2v.cluster.run import translate_many

    ray.cloudpickle.register_pickle_by_value(__import__(__name__))  # the workers cannot import this test module
    marker = tmp_path / "died"
    entries = [e for e in read_manifest(clips / "batch.yaml", tmp_path / "out", SMALL) if e.name != "missing"]
    threads = torch.get_num_threads()
    report = translate_many(
        entries, tmp_path / "out", progress=False, worker_class=DiesOnce, worker_args=(str(marker), threads),
        worker_threads=threads,
    )  # fmt: skip
    assert marker.is_file() and all(r["status"] == "done" for r in report), report
    assert json.loads((tmp_path / "out" / "batch.json").read_text())["workers"] == 2  # one actor per logical GPU
    for name in ("v0", "v1", "v2"):
        assert _outputs(tmp_path / "out" / name) == alone[name], name


def test_fresco_batch_command_prints_a_table_and_exits_2_when_a_video_failed(clips, local_ray, tmp_path, capsys):
    from fresco_v2v.cli import main

    manifest = tmp_path / "two.csv"
    manifest.write_text(f"input,prompt,seed\n{clips / 'v0.mp4'},a painting,1\n{clips / 'gone.mp4'},a drawing,\n")
    flags = ["--model", "tiny", "--steps", "2", "--strength", "1.0", "--resolution", "64", "--s-min", "2"]
    flags += ["--s-max", "4", "--batch-size", "3", "--quiet"]
    assert main(["batch", str(manifest), "-o", str(tmp_path / "out"), *flags]) == 2
    out = capsys.readouterr().out
    assert "v0    done" in out and "gone  failed" in out and "gone.mp4: no such file" in out
    assert "1 of 2 videos done" in out and (tmp_path / "out" / "v0" / "video.mp4").is_file()
