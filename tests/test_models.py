"""Model loading through diffusers' real code paths, offline, on the tiny stack saved to disk; and clear errors."""

import numpy as np
import pytest
import torch

from fresco_v2v import ConfigError, ModelNotFound
from fresco_v2v.flow import DISFlow
from fresco_v2v.models import LoraSpec, load_controlnet, load_pipeline, resolve_device, resolve_dtype
from fresco_v2v.pipeline import FrescoPipeline
from fresco_v2v.testing import make_tiny_pipeline, moving_square_clip


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    pipe = make_tiny_pipeline(seed=0)
    pipe.save_pretrained(root / "base")
    pipe.controlnet.save_pretrained(root / "controlnet")
    return root, pipe


def frames():
    return moving_square_clip(3, 64, 64, 16, (8, 8), (4, 0))


def translate(pipe):
    return pipe(
        frames(),
        "a painting",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        flow_estimator=DISFlow(),
    ).frames


def test_from_pretrained_folder_round_trip(saved, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, original = saved
    pipe = load_pipeline(str(root / "base"), [str(root / "controlnet")], device="cpu")
    assert isinstance(pipe, FrescoPipeline) and pipe.unet.dtype == torch.float32
    assert all(np.array_equal(a, b) for a, b in zip(translate(pipe), translate(original)))


def test_lora_changes_the_output(saved, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    root, original = saved
    donor = make_tiny_pipeline(seed=0)
    donor.unet.add_adapter(
        LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    )
    FrescoPipeline.save_lora_weights(tmp_path / "lora", unet_lora_layers=get_peft_model_state_dict(donor.unet))
    lora_file = next((tmp_path / "lora").glob("*.safetensors"))
    pipe = load_pipeline(
        str(root / "base"), [str(root / "controlnet")], loras=[LoraSpec(str(lora_file), 0.8)], device="cpu"
    )
    assert not np.array_equal(translate(pipe)[0], translate(original)[0])


def test_missing_model_names_it_and_the_alternative(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match=r"ControlNet 'nobody/no-such-controlnet'.*local folder.*safetensors"):
        load_controlnet("nobody/no-such-controlnet", torch.float32)
    with pytest.raises(ModelNotFound, match="missing-controlnet"):
        load_pipeline("nobody/no-such-model", [str(tmp_path / "missing-controlnet")])


def test_missing_base_model_file(tmp_path, monkeypatch):
    from fresco_v2v import models

    monkeypatch.setattr(models, "load_controlnet", lambda *a, **k: object())  # only the base model is looked up
    with pytest.raises(ModelNotFound, match=r"base model '.*absent\.safetensors'.*no such file"):
        load_pipeline(str(tmp_path / "absent.safetensors"), ["x"])


def test_pickle_checkpoints_need_opt_in(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not really")
    with pytest.raises(ConfigError, match="allow_pickle"):
        load_controlnet(str(ckpt), torch.float32)


def test_tiny_model_and_freeu():
    pipe = load_pipeline("tiny", ["tiny"], device="cpu", freeu=True)
    assert getattr(pipe.unet.up_blocks[0], "b1", None) == 1.2
    assert len(translate(pipe)) == 3


def test_device_dtype_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("meta")) == torch.float16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        resolve_dtype("float8", torch.device("cpu"))
    with pytest.raises(ConfigError, match="device"):
        resolve_device("toaster")


@pytest.mark.parametrize(
    "text,expect",
    [
        ("style.safetensors", ("style.safetensors", 1.0)),
        ("style.safetensors:0.6", ("style.safetensors", 0.6)),
        ("C:\\loras\\style.safetensors", ("C:\\loras\\style.safetensors", 1.0)),
    ],
)
def test_lora_spec_parse(text, expect):
    spec = LoraSpec.parse(text)
    assert (spec.path, spec.scale) == expect


@pytest.mark.slow
def test_real_sd15_from_hub():  # pragma: no cover - needs weights: FRESCO_RUN_SLOW=1
    pipe = load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert isinstance(pipe, FrescoPipeline)


def test_hub_reachable_probe(monkeypatch):
    from fresco_v2v import models

    for k in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    calls = []

    def no_network(address, timeout):
        calls.append((address, timeout))
        raise OSError("Name or service not known")

    monkeypatch.setattr(models.socket, "create_connection", no_network)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org:8443")
    assert not models.hub_reachable()
    assert calls == [(("hub.example.org", 8443), 3.0)]
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")  # a proxy decides: no probe
    assert models.hub_reachable() and len(calls) == 1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not models.hub_reachable() and len(calls) == 1


def test_unreachable_hub_goes_to_the_cache_at_once_and_says_so(tmp_path, monkeypatch):
    from diffusers import ControlNetModel

    from fresco_v2v import models

    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: False)
    seen = {}

    def fake_from_pretrained(ident, **kwargs):
        seen.update(kwargs)
        raise OSError(f"{ident} does not appear to have a file named config.json")

    monkeypatch.setattr(ControlNetModel, "from_pretrained", fake_from_pretrained)
    with pytest.raises(ModelNotFound, match=r"'nobody/cn': the Hugging Face hub is not reachable from here, so only"):
        load_controlnet("nobody/cn", torch.float32)
    assert seen["local_files_only"] is True
    # a local folder is never a cache-only lookup, whatever the network
    folder = tmp_path / "my-controlnet"
    folder.mkdir()
    with pytest.raises(ModelNotFound, match="my-controlnet"):
        load_controlnet(str(folder), torch.float32)
    assert seen["local_files_only"] is False


def test_freeu_factors_reach_the_unet():
    pipe = load_pipeline("tiny", ["tiny"], device="cpu", freeu=(1.1, 1.3, 0.8, 0.3))
    got = {k: getattr(pipe.unet.up_blocks[0], k) for k in ("b1", "b2", "s1", "s2")}
    assert got == {"b1": 1.1, "b2": 1.3, "s1": 0.8, "s2": 0.3}
    plain = load_pipeline("tiny", ["tiny"], device="cpu")
    assert getattr(plain.unet.up_blocks[0], "b1", None) is None
    assert not all(np.array_equal(a, b) for a, b in zip(translate(pipe), translate(plain)))  # FreeU acts


def test_freeu_true_on_sdxl_asks_for_its_factors():
    with pytest.raises(ConfigError, match="freeu: expected four factors .* for an SDXL model"):
        load_pipeline("tiny-xl", ["tiny-xl"], device="cpu", freeu=True)  # SD1.x's factors do not fit SDXL
    xl = load_pipeline("tiny-xl", ["tiny-xl"], device="cpu", freeu=(1.1, 1.2, 0.6, 0.4))
    assert getattr(xl.unet.up_blocks[0], "b1", None) == 1.1


def test_production_code_never_imports_the_test_helpers():
    """Named stacks register themselves (fresco_v2v.stacks); `testing` is for tests and benchmarks only."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import fresco_v2v.cli, fresco_v2v.runner, fresco_v2v.webui\n"
        "from fresco_v2v.models import load_pipeline, model_note\n"
        "load_pipeline('tiny', ['tiny']); load_pipeline('toy', ['toy'])\n"
        "assert model_note('toy') and model_note('tiny') and not model_note('org/model')\n"
        "print('fresco_v2v.testing' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_registered_stack_is_found_by_name_and_name_path():
    from fresco_v2v.stacks import find_stack, register_stack

    register_stack("unit-test-stack", lambda model, n, seed: (model, n, seed), "a note")
    assert find_stack("unit-test-stack").build("unit-test-stack:/w.safetensors", 2, 0)[1] == 2
    assert find_stack("unit-test-stack:/w.safetensors").note == "a note"
    assert find_stack("runwayml/stable-diffusion-v1-5") is None and find_stack("./tiny") is None


def test_another_vae_from_a_folder_or_a_pipeline_folder(saved, tmp_path):
    """--vae: the weights that land in the pipeline are the given VAE's, from its own folder or a pipeline's vae/."""
    root, _ = saved
    other = make_tiny_pipeline(seed=5).vae  # different random weights, same architecture
    other.save_pretrained(tmp_path / "vae-folder")
    for ident in (tmp_path / "vae-folder", root / "base"):
        want = other if ident != root / "base" else saved[1].vae
        pipe = load_pipeline(str(root / "base"), [str(root / "controlnet")], device="cpu", vae=str(ident))
        got = pipe.vae.state_dict()
        assert all(torch.equal(got[k], v) for k, v in want.state_dict().items())
    base = load_pipeline(str(root / "base"), [str(root / "controlnet")], device="cpu")
    cn = [str(root / "controlnet")]
    swapped = load_pipeline(str(root / "base"), cn, device="cpu", vae=str(tmp_path / "vae-folder"))
    assert not torch.equal(base.encode_frames(frames()), swapped.encode_frames(frames()))


def test_a_vae_that_does_not_fit_is_refused(saved, tmp_path):
    from diffusers import AutoencoderKL

    root, _ = saved
    AutoencoderKL(block_out_channels=(8, 8), norm_num_groups=8, latent_channels=4).save_pretrained(tmp_path / "f2")
    with pytest.raises(ConfigError) as e:
        load_pipeline(str(root / "base"), [str(root / "controlnet")], device="cpu", vae=str(tmp_path / "f2"))
    assert e.value.field == "vae" and "factor 2" in str(e.value)
    with pytest.raises(ModelNotFound, match="VAE"):
        load_pipeline(str(root / "base"), [str(root / "controlnet")], device="cpu", vae=str(tmp_path / "missing"))


def test_a_folder_model_without_controlnet(saved):
    root, _ = saved
    pipe = load_pipeline(str(root / "base"), [], device="cpu")
    assert pipe.controlnet is None and pipe.num_controlnets == 0
    out = pipe(frames(), "a painting", num_inference_steps=2, flow_estimator=DISFlow())
    assert len(out.frames) == 3


def test_pickle_weights_need_the_opt_in(saved, tmp_path):
    """A folder with only .bin weights, and a LoRA .bin/.pt file, are refused before loading without allow_pickle."""
    root, pipe = saved
    pipe.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    assert list((tmp_path / "pickled" / "unet").glob("*.bin"))  # transformers keeps .safetensors for CLIP
    cn = [str(root / "controlnet")]
    with pytest.raises(ConfigError) as e:
        load_pipeline(str(tmp_path / "pickled"), cn, device="cpu")
    assert e.value.field == "model" and "allow_pickle" in str(e.value)
    loaded = load_pipeline(str(tmp_path / "pickled"), cn, device="cpu", allow_pickle=True)
    assert torch.equal(loaded.unet.conv_in.weight, pipe.unet.conv_in.weight)
    pipe.controlnet.save_pretrained(tmp_path / "cn-pickled", safe_serialization=False)
    with pytest.raises(ConfigError) as e:
        load_pipeline(str(root / "base"), [str(tmp_path / "cn-pickled")], device="cpu")
    assert e.value.field == "controlnet"
    (tmp_path / "style.bin").write_bytes(b"not even read")
    with pytest.raises(ConfigError) as e:
        load_pipeline(str(root / "base"), cn, device="cpu", loras=[LoraSpec(str(tmp_path / "style.bin"), 1.0)])
    assert e.value.field == "lora"
