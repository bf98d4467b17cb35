"""What a visitor of `fresco ui` may see and load, for a page served beyond this machine (``--share`` or a host
other than 127.0.0.1).

- **Visitors.** Each browser gets a random, HttpOnly cookie. Its visitor id, an HMAC of the cookie under a key made
  when the server starts, names the visitor's run folders (``OUTPUT_ROOT/ID/...``) and the folder of the files the
  page shows them (``SHOWN_ROOT/ID/...``). :class:`VisitorFiles` serves a file under ``SHOWN_ROOT`` only to the cookie
  whose id it is, and no file under the output root at all: a second visitor who has the first one's link gets 403.
  The id is not the cookie, so a link shows nothing that lets anyone act as its owner.
- **Model paths.** :func:`confine_paths` lets the model, VAE, LoRA, ControlNet, IP-Adapter and its image encoder,
  annotator, mask, per-keyframe style image and flow fields name hub ids or files under the server's
  ``--models-root`` only; anything else is refused with one message whether it exists or not.
- **Texts.** :func:`public_text` cuts absolute server paths out of what reaches the page (messages, the report).

Pure functions and one ASGI middleware; gradio is not imported here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import shutil
from pathlib import Path, PurePosixPath, PureWindowsPath

from .config import RunConfig, propagation_config
from .errors import ConfigError

#: The visitor cookie's name.
COOKIE = "fresco_visitor"
#: A visitor cookie is secrets.token_urlsafe(32): 43 characters of the URL-safe alphabet. Anything else a browser
#: sends under this name is replaced by a fresh one.
_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]{43}")
#: A hub repository id, owner/name (huggingface_hub's rules, without "." and ".." as a part).
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
#: A hub repository id with a path in the repository (an IP-Adapter's file or image encoder's subfolder).
_HUB_PATH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9._-]+)*")


def new_cookie() -> str:
    return secrets.token_urlsafe(32)


def visitor_id(key: bytes, cookie: str) -> str:
    """The id that names a visitor's folders: HMAC-SHA256 of the cookie, 128 bits in hex."""
    return hmac.new(key, cookie.encode(), hashlib.sha256).hexdigest()[:32]


def cookie_of(cookies: dict) -> str | None:
    """The visitor cookie among a request's cookies, when it is one we could have made."""
    value = cookies.get(COOKIE)
    return value if isinstance(value, str) and _COOKIE_VALUE.fullmatch(value) else None


def _inside(path: str | Path, root: str | Path) -> bool:
    p, r = os.path.realpath(path), os.path.realpath(root)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def may_fetch(path: str, visitor: str | None, shown_root: Path, private_roots: tuple[Path, ...]) -> bool:
    """Whether a ``/file=PATH`` request of ``visitor`` may go on to gradio (which applies its own rules next)."""
    if any(_inside(path, root) for root in private_roots):
        return False
    if not _inside(path, shown_root):
        return True
    rel = Path(os.path.realpath(path)).relative_to(os.path.realpath(shown_root))
    return visitor is not None and len(rel.parts) > 1 and rel.parts[0] == visitor


def _with_cookie(headers: list, cookie: str) -> list:
    """Request headers with the visitor cookie added to the Cookie header (starlette reads only the first one)."""
    pair = f"{COOKIE}={cookie}".encode()
    out, merged = [], False
    for name, value in headers:
        if name == b"cookie" and not merged:
            value, merged = value + b"; " + pair, True
        out.append((name, value))
    return out if merged else [*out, (b"cookie", pair)]


class VisitorFiles:
    """ASGI middleware: gives each browser its visitor cookie, and refuses ``/file=`` requests for another
    visitor's shown files or for anything under the output root (403, as gradio answers a file it does not serve).

    A request without the cookie gets a new one, set on the response and added to the request itself, so the event
    it carries already runs as that visitor.
    """

    def __init__(self, app, key: bytes, shown_root: Path, private_roots: tuple[Path, ...]):
        self.app, self.key, self.shown_root, self.private_roots = app, key, shown_root, private_roots

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = list(scope.get("headers", []))
        cookies = _parse_cookies(headers)
        cookie, new = cookie_of(cookies), False
        if cookie is None:
            cookie, new = new_cookie(), True
            others = [h for h in headers if h[0] != b"cookie"]
            scope = dict(scope, headers=_with_cookie(others + _kept(headers), cookie))
        path = scope.get("path", "")
        if "/file=" in path:
            wanted = path.split("/file=", 1)[1]
            if not may_fetch(wanted, visitor_id(self.key, cookie), self.shown_root, self.private_roots):
                return await _forbidden(send)
        if not new:
            return await self.app(scope, receive, send)
        secure = scope.get("scheme") == "https" or (b"x-forwarded-proto", b"https") in headers
        set_cookie = f"{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), (b"set-cookie", set_cookie.encode())])
            await send(message)

        return await self.app(scope, receive, send_with_cookie)


async def _forbidden(send) -> None:
    await send({"type": "http.response.start", "status": 403, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"File not allowed."})


def _kept(headers: list) -> list:
    """The Cookie headers of a request without an invalid visitor cookie in them."""
    out = []
    for name, value in headers:
        if name == b"cookie":
            parts = [p for p in value.split(b";") if p.strip().split(b"=", 1)[0] != COOKIE.encode()]
            if parts:
                out.append((name, b";".join(parts).strip()))
    return out


def _parse_cookies(headers: list) -> dict:
    cookies = {}
    for name, value in headers:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, sep, v = part.strip().partition("=")
                if sep:
                    cookies.setdefault(k, v)
    return cookies


def show_files(files: list[Path], shown_root: Path, visitor: str, run: str) -> list[Path]:
    """Links (or copies, across file systems) of ``files`` in ``SHOWN_ROOT/VISITOR/RUN/``, the paths the page gets.

    Keyframes keep their folder (``keyframes/0012.png``); every other file its name.
    """
    folder = shown_root / visitor / run
    out = []
    for f in files:
        dest = folder / (Path("keyframes") / f.name if f.parent.name == "keyframes" else f.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest.unlink()
        try:
            os.link(f, dest)
        except OSError:
            shutil.copyfile(f, dest)
        out.append(dest)
    return out


# ------------------------------------------------------------------------------------------------ model paths


def _confined(value: str, field: str, models_root: Path | None, *, hub: bool = True, hub_path: bool = False) -> str:
    """``value`` as a visitor may give it: a hub id (unchanged) or a path under ``models_root`` (made absolute).

    Everything else is refused with the same message whether the path exists or not.
    """
    text = value.strip()
    if models_root is not None and text:
        candidate = models_root / text  # an absolute text replaces the root here, and is then checked like others
        if _inside(candidate, models_root) and candidate.exists():
            return os.path.realpath(candidate)
    # A hub id that is also a path from the server's working folder would be loaded from there by diffusers.
    hub_form = _HUB_PATH if hub_path else _HUB_ID
    if hub and hub_form.fullmatch(text) and ".." not in text.split("/") and not os.path.lexists(text):
        return text
    local = "a file or folder under the server's models folder" if models_root else None
    if hub:
        expected = f"a hub id (owner/name) or {local}" if local else "a hub id (owner/name; no local files here)"
    else:
        expected = local or "no local path (this server takes no local files: --models-root)"
    raise ConfigError(field, expected, value)


def _confined_model(model: str, models_root: Path | None) -> str:
    from .models import builtin_model

    if builtin_model(model):  # 'tiny', 'toy' or 'toy:PATH': the path part is confined like any other
        name, sep, path = model.partition(":")
        return f"{name}:{_confined(path, 'model', models_root, hub=False)}" if sep and path else model
    return _confined(model, "model", models_root)


def _confined_flow(flow: str, field: str, models_root: Path | None) -> str:
    name, sep, path = flow.partition(":")
    return f"{name}:{_confined(path, field, models_root, hub=False)}" if sep and path.strip() else flow


def confine_paths(cfg: RunConfig, models_root: Path | None) -> RunConfig:
    """``cfg`` with every model-like field a hub id or an absolute path under ``models_root``; a ConfigError names
    the first field that is neither. The input and output are the page's own (an upload, a visitor folder)."""
    from .models import LoraSpec

    d = cfg.to_dict()
    d["model"] = _confined_model(cfg.model, models_root)
    if cfg.vae is not None:
        d["vae"] = _confined(cfg.vae, "vae", models_root)
    loras = []
    for text in cfg.lora:
        spec = LoraSpec.parse(text)
        path = _confined(spec.path, "lora", models_root)
        loras.append(path if spec.path == text else f"{path}:{spec.scale}")
    d["lora"] = loras
    d["controlnet"] = [
        f"{kind}:{_confined(weights, 'controlnet', models_root)}" if sep else kind
        for kind, sep, weights in (c.partition(":") for c in cfg.controlnet)
    ]
    for name in ("depth_estimator", "hed_annotator"):
        d[name] = _confined(getattr(cfg, name), name, models_root)
    if cfg.foreground_masks is not None:
        d["foreground_masks"] = _confined(cfg.foreground_masks, "foreground_masks", models_root, hub=False)
    d["flow"] = _confined_flow(cfg.flow, "flow", models_root)
    if cfg.ip_adapter is not None:
        d["ip_adapter"] = _confined_ip_adapter(cfg.ip_adapter, models_root)
    if cfg.ip_adapter_image_encoder is not None:
        encoder = cfg.ip_adapter_image_encoder
        d["ip_adapter_image_encoder"] = _confined(encoder, "ip_adapter_image_encoder", models_root, hub_path=True)
    # style_image is the page's upload; per-keyframe style images (More options) are server files
    d["style_images"] = {
        k: _confined(p, f"style_images.{k}", models_root, hub=False) for k, p in d["style_images"].items()
    }
    d["propagation_options"] = confine_propagation_options(cfg.propagation_options, models_root)
    return RunConfig.from_dict(d).validate()


def _confined_ip_adapter(text: str, models_root: Path | None) -> str:
    """An IP-Adapter 'ID|PATH[:SCALE]' as :func:`confine_paths` takes it: 'tiny', a hub id (with a path in the
    repo) or a path under the models root, its scale kept."""
    from .run_config import ip_adapter_spec

    source, scale = ip_adapter_spec(text)
    confined = source if source == "tiny" else _confined(source, "ip_adapter", models_root, hub_path=True)
    return confined if scale is None else f"{confined}:{scale}"


def confine_propagation_options(options: dict, models_root: Path | None, name: str = "propagation_options") -> dict:
    """Propagation options (checked) with their flow backend's checkpoint confined as :func:`confine_paths` does."""
    propagation_config(dict(options), name)
    out = dict(options)
    if isinstance(out.get("flow"), str):
        out["flow"] = _confined_flow(out["flow"], f"{name}.flow", models_root)
    return out


# ------------------------------------------------------------------------------------------------ texts

#: An absolute POSIX path (not the path part of a URL, nor the slash of a hub id) or a Windows drive path.
_DRIVE = re.compile(r"[A-Za-z]:\\")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/\\-])/[^\s'\"`<>|,;()\[\]{}]+|\b[A-Za-z]:\\[^\s'\"`<>|,;()\[\]{}]+")


def public_text(text: str, roots: tuple[Path, ...] = ()) -> str:
    """``text`` without absolute server paths: a path under one of ``roots`` keeps its part below the root, any
    other keeps its last part."""

    def cut(m: re.Match) -> str:
        path = m.group(0).rstrip(".:")
        tail = m.group(0)[len(path) :]
        for root in roots:
            r = str(root).rstrip(os.sep) + os.sep
            if path.startswith(r):
                return path[len(r) :] + tail
        name = (PureWindowsPath if _DRIVE.match(path) else PurePosixPath)(path).name
        return (name or "…") + tail

    return _ABSOLUTE_PATH.sub(cut, text)


def public_data(data, roots: tuple[Path, ...] = ()):
    """:func:`public_text` on every text of plain data (a run report)."""
    if isinstance(data, str):
        return public_text(data, roots)
    if isinstance(data, dict):
        return {k: public_data(v, roots) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [public_data(v, roots) for v in data]
    return data
