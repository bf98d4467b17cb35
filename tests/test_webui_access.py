"""A page served beyond this machine: visitor ids and who may fetch what, model fields confined to the models root,
texts without server paths, and a public WebSession that keeps each visitor's runs and Stop to themselves."""

import asyncio
import json
import os
from fractions import Fraction
from pathlib import Path

import pytest

from fresco_v2v.config import RunConfig
from fresco_v2v.errors import ConfigError, InputError
from fresco_v2v.testing import moving_square_clip, write_test_video
from fresco_v2v.webui import FormValues, WebSession
from fresco_v2v.webui_access import (
    COOKIE,
    VisitorFiles,
    confine_paths,
    confine_propagation_options,
    cookie_of,
    may_fetch,
    new_cookie,
    public_data,
    public_text,
    show_files,
    visitor_id,
)

FAST = dict(model="tiny", steps=2.0, strength=1.0, resolution=64.0, max_frames=0, controlnet="canny")
SMALL = "s_min: 2\ns_max: 4\nbatch_size: 3\n"


def test_visitor_ids_and_cookies():
    key, other_key, cookie = b"k" * 32, b"o" * 32, new_cookie()
    assert cookie_of({COOKIE: cookie}) == cookie and len(cookie) == 43
    assert (
        cookie_of({COOKIE: "short"}) is None and cookie_of({COOKIE: "x" * 42 + "/"}) is None and cookie_of({}) is None
    )
    vid = visitor_id(key, cookie)
    assert vid == visitor_id(key, cookie) and len(vid) == 32 and cookie not in vid
    assert visitor_id(other_key, cookie) != vid and visitor_id(key, new_cookie()) != vid  # a new server: new ids


def test_who_may_fetch_what(tmp_path):
    shown, runs = tmp_path / "shown", tmp_path / "runs"
    (shown / "a" / "run").mkdir(parents=True)
    (shown / "b" / "run").mkdir(parents=True)
    (runs / "a" / "run").mkdir(parents=True)
    for d in (shown / "a" / "run", shown / "b" / "run", runs / "a" / "run"):
        (d / "video.mp4").write_bytes(b"v")
    ok = lambda path, visitor: may_fetch(str(path), visitor, shown, (runs,))  # noqa: E731
    assert ok(shown / "a" / "run" / "video.mp4", "a")
    assert not ok(shown / "b" / "run" / "video.mp4", "a")  # another visitor's file
    assert not ok(f"{shown}/a/../b/run/video.mp4", "a")  # no way round by ..
    assert not ok(shown / "a" / "run" / "video.mp4", None)  # no cookie, no shown files
    assert not ok(runs / "a" / "run" / "video.mp4", "a")  # the run folders are never served, not even to the owner
    os.symlink(runs / "a" / "run" / "video.mp4", shown / "a" / "run" / "link.mp4")
    assert not ok(shown / "a" / "run" / "link.mp4", "a")  # a link into the run folders is read where it points
    assert ok(tmp_path / "elsewhere.mp4", None)  # the rest: gradio's own rules decide


def _asgi_call(middleware, path: str, cookie: str | None):
    """One GET through the middleware: (status, set-cookie header or None, the cookies the app saw)."""
    seen, sent = {}, []

    async def app(scope, receive, send):
        seen["cookie"] = dict(scope["headers"]).get(b"cookie")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message):
        sent.append(message)

    headers = [(b"cookie", f"access-token=t; {COOKIE}={cookie}".encode())] if cookie else []
    scope = {"type": "http", "path": path, "headers": headers, "scheme": "http"}
    middleware.app = app
    asyncio.run(middleware(scope, None, send))
    start = sent[0]
    set_cookie = dict(start["headers"]).get(b"set-cookie")
    return start["status"], set_cookie, seen.get("cookie")


def test_middleware_gives_a_cookie_and_guards_shown_files(tmp_path):
    key, shown, runs = b"k" * 32, tmp_path / "shown", tmp_path / "runs"
    guard = VisitorFiles(None, key, shown, (runs,))
    status, set_cookie, seen = _asgi_call(guard, "/", None)
    assert status == 200 and set_cookie.startswith(f"{COOKIE}=".encode()) and b"HttpOnly" in set_cookie
    cookie = set_cookie.split(b";")[0].split(b"=", 1)[1].decode()
    assert seen == f"{COOKIE}={cookie}".encode()  # the first request already runs as the new visitor
    status, set_cookie, seen = _asgi_call(guard, "/config", cookie)
    assert status == 200 and set_cookie is None and b"access-token=t" in seen  # kept; gradio's login cookie too
    vid = visitor_id(key, cookie)
    (shown / vid / "r").mkdir(parents=True)
    (shown / "other" / "r").mkdir(parents=True)
    assert _asgi_call(guard, f"/gradio_api/file={shown}/{vid}/r/video.mp4", cookie)[0] == 200
    assert _asgi_call(guard, f"/gradio_api/file={shown}/other/r/video.mp4", cookie)[0] == 403
    assert _asgi_call(guard, f"/gradio_api/file={runs}/{vid}/r/video.mp4", cookie)[0] == 403
    status, set_cookie, _ = _asgi_call(guard, "/", "not-a-cookie-we-made")
    assert set_cookie is not None  # replaced


def test_show_files_links_into_the_visitors_folder(tmp_path):
    run = tmp_path / "runs" / "r1"
    (run / "keyframes").mkdir(parents=True)
    (run / "video.mp4").write_bytes(b"video")
    (run / "keyframes" / "0004.png").write_bytes(b"png")
    shown = show_files([run / "video.mp4", run / "keyframes" / "0004.png"], tmp_path / "shown", "vid", "r1")
    assert shown == [tmp_path / "shown/vid/r1/video.mp4", tmp_path / "shown/vid/r1/keyframes/0004.png"]
    assert shown[0].read_bytes() == b"video" and shown[1].read_bytes() == b"png"


@pytest.fixture
def models(tmp_path):
    root = tmp_path / "models"
    (root / "sd15").mkdir(parents=True)
    (root / "sd15" / "model.safetensors").write_bytes(b"w")
    (root / "style.safetensors").write_bytes(b"w")
    (root / "masks").mkdir()
    (tmp_path / "outside.safetensors").write_bytes(b"secret")
    os.symlink(tmp_path / "outside.safetensors", root / "escape.safetensors")
    return root


def cfg(**kw) -> RunConfig:
    return RunConfig.from_dict({"input": "in.mp4", "prompt": "a painting", **kw}).validate()


def test_confine_paths_takes_hub_ids_and_files_under_the_models_root(models):
    c = confine_paths(
        cfg(
            model="sd15/model.safetensors",
            lora=["style.safetensors:0.7", "owner/lora-repo"],
            controlnet=["canny", "depth:owner/depth-net"],
            vae="stabilityai/sd-vae-ft-mse",
            flow="gmflow:sd15/model.safetensors",
            foreground_masks="masks",
            propagation_options={"flow": "dis"},
        ),
        models,
    )
    real = os.path.realpath(models)
    assert c.model == f"{real}/sd15/model.safetensors" and c.flow == f"gmflow:{real}/sd15/model.safetensors"
    assert c.lora == (f"{real}/style.safetensors:0.7", "owner/lora-repo")
    assert c.controlnet == ("canny", "depth:owner/depth-net") and c.vae == "stabilityai/sd-vae-ft-mse"
    assert c.foreground_masks == f"{real}/masks" and c.model != cfg().model
    assert confine_paths(cfg(model="tiny"), None).model == "tiny"  # the built-in stacks need no files


@pytest.mark.parametrize(
    "field, there, missing",
    [
        ("model", "/etc/passwd", "/etc/no-such-file"),
        ("model", "../outside.safetensors", "../no-such.safetensors"),
        ("model", "escape.safetensors", "no-such.safetensors"),  # a link out of the models root
        ("model", "toy:../outside.safetensors", "toy:../no-such.safetensors"),
        ("vae", "/etc", "/no-such-folder"),
        ("lora", ["/etc/hosts:0.5"], ["/etc/no-such:0.5"]),
        ("controlnet", ["canny:/root"], ["canny:/no-such"]),
        ("depth_estimator", "..", "../no-such"),
        ("hed_annotator", "/proc/self", "/proc/no-such"),
        ("flow", "gmflow:/etc/passwd", "gmflow:/etc/no-such"),
        ("propagation_options", {"flow": "gmflow:../outside.safetensors"}, {"flow": "gmflow:../no-such.pth"}),
    ],
)
def test_confine_paths_refuses_the_rest_alike_whether_it_exists_or_not(models, field, there, missing):
    def refusal(value):
        with pytest.raises(ConfigError) as e:
            confine_paths(cfg(**{field: value}), models)
        assert "models folder" in str(e.value) and str(models.parent) not in str(e.value)
        return e.value.field, e.value.expected

    assert refusal(there) == refusal(missing)  # nothing tells whether the path exists


def test_no_models_root_means_hub_ids_only(models):
    with pytest.raises(ConfigError, match="no local files"):
        confine_paths(cfg(model="sd15/model.safetensors/x"), None)
    assert confine_paths(cfg(model="sd15/model.safetensors"), None).model == "sd15/model.safetensors"  # a hub id
    with pytest.raises(ConfigError, match=r"options.flow: expected no local path"):
        confine_propagation_options({"flow": "gmflow:x.pth"}, None, "options")


def test_a_hub_id_that_is_a_local_path_is_refused(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # diffusers would load ./owner/name as a local folder
    (tmp_path / "owner" / "name").mkdir(parents=True)
    with pytest.raises(ConfigError, match="model: expected a hub id"):
        confine_paths(cfg(model="owner/name"), models)
    assert confine_paths(cfg(model="owner/other"), models).model == "owner/other"


def test_public_text_cuts_server_paths():
    roots = (Path("/srv/runs/abc"), Path("/srv/models"))
    text = (
        "/srv/runs/abc/20261201-x/video.mp4: cannot open; model /srv/models/sd15/m.safetensors, upload "
        "'/tmp/gradio/9f/in.mp4', see https://huggingface.co/owner/name and owner/name. C:\\Users\\me\\m.ckpt."
    )
    assert public_text(text, roots) == (
        "20261201-x/video.mp4: cannot open; model sd15/m.safetensors, upload 'in.mp4', see "
        "https://huggingface.co/owner/name and owner/name. m.ckpt."
    )
    assert public_data({"a": ["/x/y/z.png", 3, {"b": "/q/r"}]}) == {"a": ["z.png", 3, {"b": "r"}]}


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    return write_test_video(d / "in.mp4", moving_square_clip(8, 64, 80, 20, (8, 20), (3, 1)), Fraction(25))


def test_public_session_keeps_visitors_apart_and_paths_off_the_page(src, tmp_path):
    runs, shown = tmp_path / "runs", tmp_path / "shown"
    session = WebSession(runs, public=True, models_root=None, shown_root=shown)
    form = FormValues(**({"video": str(src), "prompt": "a painting", "more_options": SMALL} | FAST))
    with pytest.raises(InputError, match="allow cookies"):
        session.translate(form, progress=False)  # no visitor, nowhere to put the run
    out = session.translate(form, progress=False, visitor="v1")
    (run,) = (runs / "v1").iterdir()
    assert (run / "video.mp4").is_file() and Path(out.video) == shown / "v1" / run.name / "video.mp4"
    assert all(Path(p).parent == shown / "v1" / run.name / "keyframes" for p, _ in out.keyframes) and out.keyframes
    page = out.message + json.dumps(out.report)
    assert str(tmp_path) not in page and str(src.parent) not in page and f"run `{run.name}`" in out.message
    assert out.report["config"]["output"] == run.name and out.report["input"] == f"{run.name}/input.mp4"
    with pytest.raises(ConfigError, match="model: expected a hub id"):
        session.translate(FormValues(**{**form.__dict__, "model": str(src)}), progress=False, visitor="v1")


def test_a_visitors_stop_reaches_only_their_own_run(tmp_path):
    session = WebSession(tmp_path, public=True)
    with session._stoppable("translate", "v1") as request:
        assert not session.stop("translate", "v2") and not request.is_set()
        assert session.stop("translate", "v1") and request.is_set()
    local = WebSession(tmp_path)
    with local._stoppable("translate", None) as request:
        assert local.stop() and request.is_set()  # this machine only: one user


def test_public_page_shows_no_exception_text(src, tmp_path, monkeypatch):
    gr = pytest.importorskip("gradio")
    from fresco_v2v.webui_page import build_app

    session = WebSession(tmp_path, public=True)
    app = build_app(session)
    (fn,) = [f.fn for f in app.fns.values() if f.name == "on_run"]
    values = {c: None for c in app.blocks.values()}
    fields = {c.label: c for c in app.blocks.values() if getattr(c, "label", None)}
    values[fields["Prompt"]], values[fields["Input video"]] = "a painting", str(src)
    monkeypatch.setattr(session, "translate", lambda form, visitor=None: open("/srv/secret/weights.bin"))
    steps = fn(values)
    next(steps)
    status = next(steps)[0]
    assert status.startswith("**Failed:** an internal error (reference ") and "secret" not in status
    with pytest.raises(gr.Error) as e:
        next(steps)
    assert "secret" not in str(e.value) and "FileNotFoundError" not in str(e.value)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_served_public_page_over_http(src, tmp_path):
    """Over HTTP, as two visitors with the same login: the first gets their video, the second cannot fetch it by its
    URL, no one fetches a run folder's file, a path outside the models root is refused, uploads are limited."""
    pytest.importorskip("gradio")
    client_mod = pytest.importorskip("gradio_client")
    import httpx

    from fresco_v2v.webui_page import launch

    runs, models = tmp_path / "runs", tmp_path / "models"
    models.mkdir()
    login = ("alice", "a-long-password")
    app = launch(
        port=_free_port(), output_root=runs, auth=login, public=True, models_root=models, max_upload_mb=1,
        prevent_thread_lock=True,
    )  # fmt: skip
    try:
        url = app.local_url
        one = client_mod.Client(url, auth=login, verbose=False, download_files=False)
        args = [client_mod.handle_file(str(src)), "a painting", "tiny", 1.0, 2, 7.5, 0, 128, 6, "", "", "", "", "canny"]
        message, result, gallery, report = one.predict(*args, SMALL, "", None, api_name="/translate")
        (visitor,) = [d.name for d in runs.iterdir()]
        (run,) = (runs / visitor).iterdir()
        assert f"run `{run.name}`" in message and str(tmp_path) not in message + json.dumps(report)
        video_url = result["url"]  # under gradio's upload folder, in a folder of this visitor's id
        fetch = lambda u, client: httpx.get(u, cookies=client.cookies, auth=None, timeout=30)  # noqa: E731
        mine = fetch(video_url, one)
        assert mine.status_code == 200 and mine.content == (run / "video.mp4").read_bytes()
        assert all(fetch(g["image"]["url"], one).status_code == 200 for g in gallery) and gallery

        two = client_mod.Client(url, auth=login, verbose=False, download_files=False)
        assert two.cookies["fresco_visitor"] != one.cookies["fresco_visitor"]
        assert fetch(video_url, two).status_code == 403  # the same URL, another visitor
        assert fetch(f"{url}gradio_api/file={run / 'video.mp4'}", one).status_code == 403  # the run folder: no one
        assert fetch(f"{url}gradio_api/file={run / 'video.mp4'}", two).status_code == 403

        args[2] = "/etc"
        message, result, *_ = two.predict(*args, SMALL, "", None, api_name="/translate")
        refused = "model: expected a hub id (owner/name) or a file or folder under the server's models folder"
        assert message == f"**Error:** {refused}, got '/etc'" and result is None
        big = tmp_path / "big.mp4"
        big.write_bytes(os.urandom(1_500_000))
        with big.open("rb") as f:
            upload = httpx.post(f"{url}gradio_api/upload", files={"files": f}, cookies=two.cookies, timeout=30)
        assert upload.status_code == 413
    finally:
        app.close()


def test_ip_adapter_paths_are_confined_as_lora_paths_are(models):
    def styled(**kw) -> RunConfig:
        return cfg(style_image="upload.png", **kw)

    real = os.path.realpath(models)
    light = "h94/IP-Adapter/models/ip-adapter_sd15_light.safetensors"  # a file in a hub repo
    accepted = {
        "tiny:0.7": "tiny:0.7",
        "h94/IP-Adapter:0.6": "h94/IP-Adapter:0.6",
        light: light,
        "style.safetensors:0.5": f"{real}/style.safetensors:0.5",
        "sd15": f"{real}/sd15",
    }
    for given, kept in accepted.items():
        assert confine_paths(styled(ip_adapter=given), models).ip_adapter == kept
    encoder = confine_paths(
        styled(ip_adapter="tiny", ip_adapter_image_encoder="h94/IP-Adapter/models/image_encoder"), models
    )
    assert (
        encoder.ip_adapter_image_encoder == "h94/IP-Adapter/models/image_encoder"
        and encoder.style_image == "upload.png"
    )

    def refusal(**kw) -> ConfigError:
        with pytest.raises(ConfigError) as e:
            confine_paths(cfg(**kw), models)
        assert str(models.parent) not in str(e.value)
        return e.value

    lora = refusal(lora=["/etc/hosts:0.5"])
    for value in ("/etc/passwd", "/etc/no-such:0.5", "../outside.safetensors", "escape.safetensors", "h94/IP/../../x"):
        e = refusal(ip_adapter=value, style_image="upload.png")
        assert (e.field, e.expected) == ("ip_adapter", lora.expected)  # the same words as for a LoRA
    e = refusal(ip_adapter="tiny", style_image="u.png", ip_adapter_image_encoder="/etc")
    assert (e.field, e.expected) == ("ip_adapter_image_encoder", lora.expected)
    for there, missing in (("/etc/passwd", "/etc/no-such.png"), ("../outside.safetensors", "../no-such.png")):
        a = refusal(ip_adapter="tiny", style_images={0: there})
        b = refusal(ip_adapter="tiny", style_images={0: missing})
        assert (
            (a.field, a.expected)
            == (b.field, b.expected)
            == ("style_images.0", "a file or folder under the server's models folder")
        )
