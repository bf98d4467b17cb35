"""Video I/O with PyAV: exact frame rates, the model's frame size, and the original audio.

Reading keeps the frame rate as a :class:`fractions.Fraction` (29.97 fps stays 30000/1001), the frame count and a
reference to the audio stream; a variable-rate file also keeps each frame's timestamp (:class:`FrameTimes`). Writing
(at that exact rate or those timestamps, with the audio) is :mod:`fresco_v2v.encode`'s.

Resize policy (the authors resize to a 512 px short side; SD1.5's UNet needs sides that are multiples of 64,
because its decoder sees 1/64 of the frame): the short side is scaled to ``short_side`` (default 512) keeping the
aspect ratio, then the long side is brought to a multiple of 64 by a centred **crop** (default; at most 63 px are
lost) or by **pad** (edge replication; :meth:`FrameFit.unfit` removes the padding again). Frames are never
stretched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm.auto import tqdm

from .errors import ConfigError, InputError

logger = logging.getLogger(__name__)

#: Decoder blocks of SD1.5 see 1/64 of the frame (VAE 1/8, three UNet downsamplings), so sides are multiples of 64.
MODEL_MULTIPLE = 64
#: Default short side: the authors' resize (the paper states none; SD1.5 is trained at 512 px).
DEFAULT_SHORT_SIDE = 512
#: A source frame smaller than this on either side has less than one token at the UNet's deepest scale.
MIN_SOURCE_SIDE = 64


@dataclass(frozen=True)
class AudioTrack:
    """Where the original audio lives: it is remuxed from the source file at write time, never decoded early."""

    path: Path
    stream_index: int
    codec: str
    sample_rate: int
    channels: int
    #: Seconds after the first video frame from which packets are dropped (set when only the first frames were read).
    until: float | None = None
    #: When the first video frame is shown, in the source's clock (seconds). The output's video starts at 0, so the
    #: audio is moved by as much: what played with frame 0 still does (audio before it is dropped).
    video_start: float = 0.0


@dataclass(frozen=True)
class FrameTimes:
    """When each frame of a variable-rate video is shown: ``pts[i]`` in units of ``time_base``, the first at 0.

    Phones and screen recorders write variable-rate video (a frame when the sensor or screen delivers one). Writing
    such frames at their average rate would drift them against the audio; their own timestamps keep them in place.
    """

    pts: tuple[int, ...]
    time_base: Fraction

    def seconds(self, i: int) -> float:
        return float(self.pts[i] * self.time_base)


def describe_rate(fps: Fraction, variable: bool = False) -> str:
    """A rate for people: "25 fps", "30000/1001 (29.97) fps", or a variable rate's average."""
    fps = Fraction(fps)
    text = f"{fps.numerator}" if fps.denominator == 1 else f"{fps} ({float(fps):.2f})"
    return f"a variable rate (average {text} fps, each frame's timestamp kept)" if variable else f"{text} fps"


def frame_times(pts: list[int | None], time_base: Fraction, fps: Fraction) -> FrameTimes | None:
    """The frames' own timestamps when they differ from a constant ``fps``, else None (constant rate).

    pts: each decoded frame's presentation time in ``time_base`` units. Constant rate means every frame lies within
    one tick or 1% of a frame period (whichever is larger) of n / fps: container rounding (29.97 fps in milliseconds
    gives 33/34 ms steps) is not variable rate. Missing or non-increasing timestamps cannot be trusted: None.
    """
    if len(pts) < 2:
        return None
    if any(p is None for p in pts):
        logger.debug("frames without timestamps: read as constant rate")
        return None
    rel = np.asarray(pts, dtype=np.int64) - pts[0]
    if np.any(np.diff(rel) <= 0):
        logger.debug("timestamps that do not increase: read as constant rate")
        return None
    seconds = rel * float(time_base)
    nominal = np.arange(len(rel)) / float(fps)
    if np.abs(seconds - nominal).max() <= max(float(time_base), 0.01 / float(fps)):
        return None
    return FrameTimes(tuple(int(p) for p in rel), Fraction(time_base))


@dataclass(frozen=True)
class FrameFit:
    """How a source frame is brought to the model's size: scale (aspect kept), then crop or pad the long side."""

    source_size: tuple[int, int]  # (W, H) of the file
    scaled_size: tuple[int, int]  # (W, H) after scaling the short side
    size: tuple[int, int]  # (W, H) given to the model, multiples of `multiple`
    offset: tuple[
        int, int
    ]  # (x, y) of the model frame inside the scaled frame (crop) or of it inside the model frame (pad)
    mode: str  # "crop" or "pad"

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """[H0, W0, 3] uint8 source frame -> [H, W, 3] uint8 model frame."""
        if (frame.shape[1], frame.shape[0]) != self.scaled_size:
            shrink = self.scaled_size[0] < frame.shape[1]
            frame = cv2.resize(frame, self.scaled_size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        x, y = self.offset
        w, h = self.size
        if self.mode == "crop":
            return np.ascontiguousarray(frame[y : y + h, x : x + w])
        sw, sh = self.scaled_size
        return cv2.copyMakeBorder(frame, y, h - sh - y, x, w - sw - x, cv2.BORDER_REPLICATE)

    def unfit(self, frame: np.ndarray) -> np.ndarray:
        """Model frame -> frame at ``scaled_size`` with padding removed (pad mode); crop mode returns it as is."""
        if self.mode == "crop":
            return frame
        x, y = self.offset
        sw, sh = self.scaled_size
        return np.ascontiguousarray(frame[y : y + sh, x : x + sw])


def plan_fit(
    source_size: tuple[int, int],
    short_side: int | None = DEFAULT_SHORT_SIDE,
    multiple: int = MODEL_MULTIPLE,
    mode: str = "crop",
) -> FrameFit:
    """Plan the resize of a (W, H) source; ``short_side=None`` keeps the source size (it must fit ``multiple``)."""
    if mode not in ("crop", "pad"):
        raise ConfigError("fit", "'crop' or 'pad'", mode)
    if not isinstance(multiple, int) or multiple < 1:
        raise ConfigError("multiple", "a positive integer", multiple)
    w0, h0 = source_size
    if short_side is None:
        if w0 % multiple or h0 % multiple:
            raise ConfigError(
                "resolution",
                f"a short side to resize to, since the frames ({w0}x{h0}) are not multiples of {multiple}",
                None,
            )
        return FrameFit(source_size, source_size, source_size, (0, 0), mode)
    if not isinstance(short_side, int) or short_side < multiple or short_side % multiple:
        raise ConfigError("resolution", f"a multiple of {multiple} (e.g. 512)", short_side)
    scale = short_side / min(w0, h0)
    # The short side is set exactly; the long side is rounded (aspect ratio kept to within half a pixel).
    sw, sh = (
        (short_side, max(short_side, round(h0 * scale)))
        if w0 <= h0
        else (max(short_side, round(w0 * scale)), short_side)
    )
    if mode == "crop":
        w, h = sw // multiple * multiple, sh // multiple * multiple
        return FrameFit(source_size, (sw, sh), (w, h), ((sw - w) // 2, (sh - h) // 2), mode)
    w, h = -(-sw // multiple) * multiple, -(-sh // multiple) * multiple
    return FrameFit(source_size, (sw, sh), (w, h), ((w - sw) // 2, (h - sh) // 2), mode)


@dataclass
class Clip:
    """Decoded video: frames at the model's size, the exact rate and the audio to carry over."""

    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    fps: Fraction
    path: Path
    fit: FrameFit
    audio: AudioTrack | None
    #: Frames in the file when it says so (the container's count), else the number decoded.
    source_frame_count: int
    #: The frames' own timestamps for a variable-rate video (``fps`` is then its average rate); None: constant rate.
    times: FrameTimes | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the frames."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])

    @property
    def duration(self) -> float:
        if self.times is not None:  # the last frame is shown for one average period
            return self.times.seconds(self.num_frames - 1) + float(1 / self.fps)
        return float(self.num_frames / self.fps)


def _open_input(path: str | os.PathLike) -> tuple[Path, av.container.InputContainer]:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected a video file")
    try:
        return p, av.open(str(p), mode="r")
    except av.FFmpegError as e:
        raise InputError(f"{p}: not a video file that ffmpeg can read ({e.strerror or e})") from None
    except OSError as e:
        raise InputError(f"{p}: cannot be opened ({e})") from None


def _frame_rate(p: Path, stream) -> Fraction:
    # average_rate is what ffprobe reports as avg_frame_rate (exact for constant-rate files, e.g. 30000/1001).
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    raise InputError(f"{p}: the video stream has no frame rate")


def _audio_track(p: Path, container) -> AudioTrack | None:
    if not container.streams.audio:
        return None
    a = container.streams.audio[0]
    cc = a.codec_context
    # the codec, not its decoder: MP3's decoder is "mp3float", which would not match MP4_AUDIO_CODECS
    codec = getattr(cc.codec, "canonical_name", None) or cc.name
    return AudioTrack(p, a.index, codec, int(cc.sample_rate or 0), int(cc.channels or 0))


def display_quarter_turns(frame: av.VideoFrame) -> int | None:
    """Counter-clockwise quarter turns (0-3) that the frame's display matrix asks for (phones record portrait
    video as landscape frames plus a rotation); None for an angle that is not a multiple of 90 (used as stored)."""
    angle = frame.rotation or 0
    return None if angle % 90 else (int(angle) // 90) % 4


def _upright_rgb(frame: av.VideoFrame, fit: FrameFit | None) -> np.ndarray:
    """[H, W, 3] uint8 RGB of a decoded frame, turned upright (display matrix) and fitted when ``fit`` is given."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = display_quarter_turns(frame)  # None (not a quarter turn): used as stored (scan_video warned once)
    if turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, turns))  # np.rot90 turns counter-clockwise, like rotation
    return fit.apply(rgb) if fit is not None else rgb


def iter_frames(
    path: str | os.PathLike,
    fit: FrameFit | None = None,
    max_frames: int | None = None,
    *,
    pts: list[int | None] | None = None,
    stopped: list[str] | None = None,
) -> Iterator[np.ndarray]:
    """Decode RGB uint8 frames one by one (fitted when ``fit`` is given), so long videos need not fit in memory.

    Frames are turned upright as the file's display matrix says (``display_quarter_turns``), as players show them.
    ``pts``: a list that receives each yielded frame's presentation timestamp (stream time base), when given.
    ``stopped``: a list that receives the decoder's error when the stream fails after some frames (they are kept).
    """
    return (_upright_rgb(frame, fit) for frame in _decoded(path, max_frames, pts, stopped))


def _decoded(
    path: str | os.PathLike,
    max_frames: int | None,
    pts: list[int | None] | None,
    stopped: list[str] | None = None,
) -> Iterator[av.VideoFrame]:
    """The video stream's decoded frames as they are (no conversion), recording their timestamps in ``pts``.

    A stream that fails after some frames ends there: the error goes to ``stopped`` when given (the caller says
    what it does about it), else to the log."""
    p, container = _open_input(path)
    with container:
        if not container.streams.video:
            raise InputError(f"{p}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = 0
        try:
            for frame in container.decode(stream):
                if max_frames is not None and n >= max_frames:
                    break
                if pts is not None:
                    pts.append(frame.pts)
                yield frame
                n += 1
        except av.FFmpegError as e:
            if n == 0:
                raise InputError(f"{p}: no frame could be decoded ({e.strerror or e})") from None
            if stopped is not None:
                stopped.append(str(e.strerror or e))
            else:
                logger.warning("%s: decoding stopped after %d frames (%s); keeping those", p, n, e)


@dataclass
class VideoInfo:
    """Everything about a video but its frames (what :func:`scan_video` learns in one decoding pass)."""

    path: Path
    fps: Fraction
    fit: FrameFit
    audio: AudioTrack | None
    num_frames: int
    #: Frames in the file when it says so (the container's count), else the number decoded.
    source_frame_count: int
    #: The frames' own timestamps for a variable-rate video (``fps`` is then its average rate); None: constant rate.
    times: FrameTimes | None = None
    #: Each frame's presentation timestamp in the stream's time base (None where the file gives none): what
    #: :class:`FrameReader` seeks by. Small: one integer a frame.
    pts: tuple[int | None, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the frames at the model's size."""
        return self.fit.size

    @property
    def duration(self) -> float:
        if self.times is not None:  # the last frame is shown for one average period
            return self.times.seconds(self.num_frames - 1) + float(1 / self.fps)
        return float(self.num_frames / self.fps)


#: Transfer characteristics of HDR video (ITU-T H.273): SMPTE ST 2084 (PQ) and ARIB STD-B67 (HLG).
_HDR_TRANSFERS = {16: "PQ (SMPTE ST 2084)", 18: "HLG (ARIB STD-B67)"}


def _warn_pixel_format(p: Path, codec_context) -> None:
    """What the conversion to 8-bit RGB loses, said once per file: an alpha channel (dropped), HDR (no tone
    mapping), more than 8 bits (rounded)."""
    try:
        fmt = av.VideoFormat(codec_context.pix_fmt) if codec_context.pix_fmt else None
    except (ValueError, av.FFmpegError):
        fmt = None
    if fmt is None:
        return
    if any(c.is_alpha for c in fmt.components):
        logger.warning("%s: has an alpha channel (%s); it is dropped: frames are used as opaque", p, fmt.name)
    hdr = _HDR_TRANSFERS.get(codec_context.color_trc)
    if hdr is not None:
        logger.warning(
            "%s: is HDR video (%s); frames are converted to 8-bit SDR without tone mapping, so colours look flat and "
            "washed out: tone-map it to SDR first (e.g. ffmpeg's zscale and tonemap filters)",
            p,
            hdr,
        )
    elif max(c.bits for c in fmt.components) > 8:
        logger.info("%s: %d-bit frames (%s) are rounded to 8 bits", p, max(c.bits for c in fmt.components), fmt.name)


def _probe(p: Path) -> tuple[int, int, Fraction, Fraction | None, AudioTrack | None, int, int | None]:
    """(upright width, height, rate, time base, audio, declared frame count, expected frame count) from the headers
    and the first frame. The expected count (declared, else duration x rate; None if neither is known) is for
    progress bars only."""
    _, container = _open_input(p)
    with container:
        if not container.streams.video:
            raise InputError(f"{p}: has no video stream (is it an audio file?)")
        stream = container.streams.video[0]
        if stream.codec_context is None or not (stream.codec_context.width and stream.codec_context.height):
            raise InputError(
                f"{p}: its video stream cannot be read (no codec parameters: a file cut off before its index, or an "
                "unsupported codec)"
            )
        w0, h0 = stream.codec_context.width, stream.codec_context.height
        _warn_pixel_format(p, stream.codec_context)
        fps = _frame_rate(p, stream)
        time_base = Fraction(stream.time_base) if stream.time_base else None
        audio = _audio_track(p, container)
        declared = int(stream.frames or 0)
        expected = declared or (round(container.duration / 1_000_000 * fps) if container.duration else None)
        turns = 0
        try:  # the display matrix travels with the frames: read it from the first one
            first = next(container.decode(stream))
            turns = display_quarter_turns(first)
            if turns is None:
                logger.warning(
                    "%s: display rotation of %s degrees is not a quarter turn; frames used as stored", p, first.rotation
                )
                turns = 0
        except (StopIteration, av.FFmpegError):
            pass  # no decodable frame: the decoding pass says so
        if turns % 2:
            w0, h0 = h0, w0
            logger.info("%s: display rotation of %d degrees; frames are turned upright", p, 90 * turns)
    return w0, h0, fps, time_base, audio, declared, expected


def scan_video(
    path: str | os.PathLike,
    visit: Callable[[int, np.ndarray], None] | None = None,
    *,
    short_side: int | None = DEFAULT_SHORT_SIDE,
    fit: str = "crop",
    multiple: int = MODEL_MULTIPLE,
    max_frames: int | None = None,
    progress: bool = False,
) -> VideoInfo:
    """One decoding pass over a video at the model's frame size, calling ``visit(i, frame)`` for each frame and
    keeping none of them: memory does not grow with the video's length (see the module docstring for the sizing).
    ``progress``: a "reading frames" bar with rate and time left (out of the frames the headers expect).

    Raises :class:`InputError` naming the file for: a missing file, a file that is not a video, no video stream,
    zero decodable frames, and frames smaller than ``MIN_SOURCE_SIDE`` pixels on a side.
    """
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ConfigError("max_frames", "a positive integer or None", max_frames)
    p = Path(path)
    w0, h0, fps, time_base, audio, declared, expected = _probe(p)
    if min(w0, h0) < MIN_SOURCE_SIDE:
        raise InputError(f"{p}: frames are {w0}x{h0}; the model needs at least {MIN_SOURCE_SIDE} px on each side")
    plan = plan_fit((w0, h0), short_side, multiple, fit)
    pts: list[int | None] = []
    stopped: list[str] = []  # the decoder's error, when the stream fails mid-file
    n = 0
    total = min(expected, max_frames) if expected and max_frames else expected or max_frames
    with tqdm(total=total, desc="reading frames", unit="frame", disable=not progress, leave=False) as bar:
        # without a visitor the frames are only counted and timed: no conversion to RGB, no resizing
        if visit is not None:
            frames = iter_frames(p, plan, max_frames, pts=pts, stopped=stopped)
        else:
            frames = _decoded(p, max_frames, pts, stopped)
        for n, frame in enumerate(frames, start=1):
            if visit is not None:
                visit(n - 1, frame)
            bar.update(1)
    if n == 0:
        raise InputError(f"{p}: the video stream has no decodable frames")
    times = frame_times(pts, time_base, fps) if time_base else None
    if times is not None:
        logger.info("%s: variable frame rate (average %s fps); each frame keeps its own timestamp", p, fps)
    if audio is not None and pts and pts[0] is not None and time_base:
        audio = replace(audio, video_start=float(pts[0] * time_base))
    info = VideoInfo(p, fps, plan, audio, n, declared or n, times, tuple(pts))
    trimmed = max_frames is not None and n < (declared or n + 1)  # asked for the first max_frames
    ended_early = bool(declared) and n < declared and (max_frames is None or n < max_frames)  # a cut-off file
    if stopped:  # a damaged stream: whatever the file goes on with, the video ends at its last decodable frame
        logger.warning(
            "%s: the video stream cannot be decoded past frame %d (%s); using the %d frames before%s",
            p, n, stopped[0], n, ", with the audio up to them" if audio is not None else "",
        )  # fmt: skip
    elif ended_early:
        logger.warning("%s: the video stream ends after %d of its %d frames; using those", p, n, declared)
    ended_early = ended_early or bool(stopped)
    if audio is not None and (trimmed or ended_early):
        info.audio = replace(audio, until=info.duration)  # the audio ends with the last frame kept
    logger.info(
        "read %s: %d frames at %s fps, %dx%d -> %dx%d (%s)%s",
        p,
        n,
        fps,
        w0,
        h0,
        *plan.size,
        plan.mode,
        f", audio {info.audio.codec}" if info.audio else ", no audio",
    )
    return info


class FrameReader:
    """The frames of a scanned video by index, decoded on demand at the model's size (:func:`scan_video`'s fit).

    A read at or after the decoder's position decodes forward; a read behind it seeks to the stream's keyframe
    before that frame (by its timestamp) and decodes forward from there. The last ``cache`` frames read stay in
    memory, so neighbouring stages re-reading a few frames (a batch's anchor, a segment's keys) cost nothing; memory
    does not grow with the video. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, info: VideoInfo, cache: int = 16):
        self.info = info
        self._cache: dict[int, np.ndarray] = {}
        self._capacity = max(1, cache)
        self._index = {p: i for i, p in enumerate(info.pts) if p is not None}
        self._container = None
        self._frames: Iterator[av.VideoFrame] | None = None
        self._next = 0  # index of the frame the decoder yields next

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._frames = None, None

    def __len__(self) -> int:
        return self.info.num_frames

    def _restart(self, target: int) -> None:
        """Position the decoder at or before frame ``target``: seek by its timestamp, else reopen at frame 0."""
        self.close()
        _, self._container = _open_input(self.info.path)
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        pts = self.info.pts[target] if target < len(self.info.pts) else None
        if target > 0 and pts is not None and len(self._index) == self.info.num_frames:
            self._container.seek(pts, stream=stream, backward=True, any_frame=False)
            self._next = -1  # known from the first decoded frame's timestamp
        else:
            self._next = 0
        self._frames = iter(self._container.decode(stream))

    def _decode_next(self) -> tuple[int, av.VideoFrame]:
        frame = next(self._frames)
        index = self._index.get(frame.pts, self._next) if self._next < 0 else self._next
        self._next = index + 1
        return index, frame

    def __getitem__(self, i: int | slice) -> np.ndarray:
        """[H, W, 3] uint8 RGB of frame ``i`` (0 <= i < len); a slice gives [n, H, W, 3]."""
        if isinstance(i, slice):
            return self.take(range(*i.indices(self.info.num_frames)))
        if not 0 <= i < self.info.num_frames:
            raise IndexError(f"frame {i} of a {self.info.num_frames}-frame video")
        if i in self._cache:
            return self._cache[i]
        if self._frames is None or not 0 <= self._next <= i:
            self._restart(i)
        while True:
            try:
                index, frame = self._decode_next()
            except StopIteration:
                raise InputError(f"{self.info.path}: frame {i} could not be decoded again") from None
            except av.FFmpegError as e:  # a damaged stream that failed later in the decoding pass
                raise InputError(f"{self.info.path}: frame {i} could not be decoded again ({e})") from None
            if index == i:
                rgb = _upright_rgb(frame, self.info.fit)
                self._cache[i] = rgb
                while len(self._cache) > self._capacity:
                    self._cache.pop(next(iter(self._cache)))
                return rgb
            if index > i:  # the seek landed after the frame (should not happen with backward=True): start over
                self._restart(0)

    def take(self, indices: Sequence[int]) -> np.ndarray:
        """[len(indices), H, W, 3] uint8: the frames at ``indices`` (read in increasing order)."""
        got = {i: self[i] for i in sorted(set(indices))}
        return np.stack([got[i] for i in indices])


def read_video(
    path: str | os.PathLike,
    *,
    short_side: int | None = DEFAULT_SHORT_SIDE,
    fit: str = "crop",
    multiple: int = MODEL_MULTIPLE,
    max_frames: int | None = None,
) -> Clip:
    """Read any ffmpeg-readable video into a :class:`Clip` at the model's frame size: :func:`scan_video` keeping
    the frames (for short clips; long ones stream through ``scan_video``)."""
    frames: list[np.ndarray] = []
    info = scan_video(
        path, lambda i, f: frames.append(f), short_side=short_side, fit=fit, multiple=multiple, max_frames=max_frames
    )
    return Clip(np.stack(frames), info.fps, info.path, info.fit, info.audio, info.source_frame_count, info.times)
