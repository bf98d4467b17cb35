"""`fresco batch`'s pure parts: the manifest and the batch scheduler (against a brute-force oracle)."""

import numpy as np
import pytest

from fresco_v2v.cluster import (
    Chain,
    lower_bound,
    pick_next,
    read_manifest,
    simulate_interleaved,
    simulate_whole_videos,
)
from fresco_v2v.errors import ConfigError


def test_pick_next_takes_the_longest_remaining_chain():
    assert pick_next({}, {}) is None
    assert pick_next({"a": 3.0, "b": 9.0, "c": 9.0}, {}) == "b"  # longest; ties: manifest order
    sigs = {"a": "sd15", "b": "sdxl", "c": "sd15"}
    assert pick_next({"a": 8.5, "b": 9.0}, sigs, loaded="sd15", affinity=0.1) == "a"  # within 10%: no reload
    assert pick_next({"a": 5.0, "b": 9.0}, sigs, loaded="sd15", affinity=0.1) == "b"  # too far behind
    assert pick_next({"a": 5.0, "b": 9.0}, sigs, loaded="sdxl", affinity=0.1) == "b"


def test_pick_next_takes_the_shortest_chain_while_none_is_critical():
    ready = {"a": 3.0, "b": 9.0, "c": 2.0}
    assert pick_next(ready, {}, critical=10.0) == "c"  # none reaches the work left per worker: shortest
    assert pick_next(ready, {}, critical=5.0) == "b"  # b could decide the makespan
    sigs = {"a": "sd15", "b": "sdxl", "c": "sdxl"}
    assert pick_next(ready, sigs, loaded="sd15", affinity=0.1, critical=10.0) == "a"  # the loaded model's shortest
    assert pick_next(ready, sigs, loaded="sd15", affinity=0.0, critical=10.0) == "c"  # affinity off


def test_finishing_videos_early_lets_their_propagation_run_beside_the_batches():
    # four equal videos on one GPU and one CPU; each video's finish (propagation, assembly) costs two batches
    chains = [Chain(f"v{i}", (1.0, 1.0, 1.0), finish=2.0) for i in range(4)]
    assert lower_bound(chains, 1, cpus=1) == 12.0
    longest = simulate_interleaved(chains, 1, cpus=1, critical=False)  # all four end together: finishes queue up
    assert (longest.gpu_end, longest.makespan) == (12.0, 17.0)
    shortest = simulate_interleaved(chains, 1, cpus=1)  # videos end at 3, 6, 9, 12: finishes overlap the batches
    assert (shortest.gpu_end, shortest.makespan) == (12.0, 14.0)
    assert simulate_whole_videos(chains, 1, cpus=1).makespan == 14.0


def _best_makespan(chains, workers) -> float:
    """Brute force: every order in which free workers may take ready batches (non-delay schedules)."""
    best = float("inf")

    def go(now, nxt, running, free):
        nonlocal best
        ready = [i for i, c in enumerate(chains) if i not in {r[1] for r in running} and nxt[i] < len(c.costs)]
        if free and ready:
            for i in ready:
                cost = chains[i].costs[nxt[i]]
                go(now, nxt, running + [(now + cost, i)], free - 1)
            return
        if not running:
            best = min(best, now)
            return
        running = sorted(running)
        end, i = running[0]
        n2 = list(nxt)
        n2[i] += 1
        go(end, n2, running[1:], free + 1)

    go(0.0, [0] * len(chains), [], workers)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_interleaved_schedule_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    chains = [Chain(f"v{i}", tuple(float(x) for x in rng.integers(1, 5, rng.integers(1, 4)))) for i in range(4)]
    got = simulate_interleaved(chains, 2)
    best = _best_makespan(chains, 2)
    assert lower_bound(chains, 2) <= best <= got.makespan <= 1.25 * best
    assert sum(got.busy) == pytest.approx(sum(sum(c.costs) for c in chains))


def test_interleaving_beats_whole_videos_per_gpu():
    # four short videos then a long one: a loop per GPU starts the long one last
    chains = [Chain(f"s{i}", (1.0, 1.0)) for i in range(4)] + [Chain("long", (1.0,) * 8)]
    assert simulate_whole_videos(chains, 2).makespan == 12.0
    assert simulate_interleaved(chains, 2).makespan == 8.0 == lower_bound(chains, 2)


def test_twenty_uneven_videos_on_eight_gpus_end_near_the_lower_bound():
    rng = np.random.default_rng(0)
    chains = [Chain(f"v{i}", tuple(rng.uniform(0.5, 1.5, int(rng.integers(2, 30))))) for i in range(20)]
    got = simulate_interleaved(chains, 8)
    assert got.makespan <= 1.10 * lower_bound(chains, 8) < simulate_whole_videos(chains, 8).makespan


def test_model_affinity_saves_reloads():
    # 12 videos needing three models on 3 workers; a model load costs three batches
    rng = np.random.default_rng(0)
    sigs = ["sd15", "sdxl", "anime"]
    chains = [
        Chain(f"v{i}", tuple(rng.uniform(0.5, 1.5, int(rng.integers(2, 8)))), sigs[int(rng.integers(0, 3))])
        for i in range(12)
    ]
    sticky = simulate_interleaved(chains, 3, load_cost=3.0, affinity=0.3)
    blind = simulate_interleaved(chains, 3, load_cost=3.0, affinity=0.0)
    assert sticky.loads < blind.loads and sticky.makespan < blind.makespan


def test_manifest_yaml_and_csv(tmp_path):
    (tmp_path / "clips").mkdir()
    yml = tmp_path / "clips" / "batch.yaml"
    yml.write_text(
        "- {input: dog.mp4, prompt: a watercolor dog}\n"
        "- {input: dog.mp4, prompt: an ink dog, strength: 0.5}\n"
        "- {input: /abs/car.mp4, prompt: a car, output: 'my car!'}\n"
        "- {input: x.mp4, prompt: a cat, stength: 0.5}\n"
        "- just a string\n"
        "- {input: y.mp4, prompt: a fox, ip_adapter: tiny, style_image: s.png,\n"
        "   style_images: {4: /abs/t.png, 8: u.png}}\n"
    )
    entries = read_manifest(yml, tmp_path / "out", {"steps": 10})
    assert [e.name for e in entries] == ["dog", "dog-2", "my-car", "x", "entry-5", "y"]
    a, b, c, bad, junk, styled = entries
    assert styled.config.style_image == str(tmp_path / "clips" / "s.png"), styled.error  # beside the manifest
    assert styled.config.style_images == {4: "/abs/t.png", 8: str(tmp_path / "clips" / "u.png")}
    assert a.config.input == str(tmp_path / "clips" / "dog.mp4") and a.config.output == str(tmp_path / "out" / "dog")
    assert a.config.steps == 10 and b.config.strength == 0.5 and c.config.input == "/abs/car.mp4"
    assert bad.config is None and "entry 4 (x)" in bad.error and "did you mean 'strength'" in bad.error
    assert junk.config is None and "expected a mapping" in junk.error

    csv = tmp_path / "batch.csv"
    csv.write_text("input,prompt,strength,colorize,freeu\nclips/dog.mp4,a dog,0.6,true,\nclips/cat.mp4,a cat,,false,\n")
    d, e = read_manifest(csv, tmp_path / "out")
    assert (d.config.strength, d.config.colorize, e.config.strength, e.config.colorize) == (0.6, True, 0.75, False)
    with pytest.raises(ConfigError, match="manifest: expected a YAML list"):
        (tmp_path / "m.yaml").write_text("input: a.mp4\n")
        read_manifest(tmp_path / "m.yaml", tmp_path / "out")


def test_brute_force_oracle_itself():
    # two workers, chains (2) and (1, 1): best is 2
    assert _best_makespan([Chain("a", (2.0,)), Chain("b", (1.0, 1.0))], 2) == 2.0
    assert _best_makespan([Chain("a", (1.0,) * 3)], 4) == 3.0


def test_batch_without_ray_names_the_extra(tmp_path, monkeypatch, capsys):
    import sys

    from fresco_v2v.cli import main

    (tmp_path / "m.yaml").write_text("- {input: a.mp4, prompt: a dog}\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["batch", str(tmp_path / "m.yaml"), "-o", str(tmp_path / "out")]) == 2
    assert "pip install 'fresco-v2v[cluster]'" in capsys.readouterr().err
