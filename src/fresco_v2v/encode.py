"""Encoding (the last stage): frames to H.264 mp4 at the input's exact rate (or its frames' timestamps) with its
audio, chunk by chunk so that a killed run resumes at its first unfinished chunk.

Writing encodes yuv420p H.264 and remuxes the input's audio packets untouched when mp4 can hold their codec
(otherwise AAC, logged). Chunks are joined by remuxing their packets, not by a second encode; x264 is kept
deterministic (:func:`x264_options`), so a resumed run's file is the uninterrupted run's byte for byte.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm.auto import tqdm

from .disk import PARTIAL, remove_quietly, write_failure
from .errors import ConfigError, InputError
from .video import AudioTrack, FrameTimes

logger = logging.getLogger(__name__)

#: Audio codecs that the mp4 muxer stores as they are; anything else is re-encoded to AAC.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "mp2", "opus", "alac", "flac", "ac3", "eac3"})
#: Audio kept before video frame 0 when it is cut there, for the decoder to warm up (Opus asks for 80 ms, RFC 7845).
PREROLL_SECONDS = 0.08
_STANDARD_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 8: "7.1"}


def _atomic_target(path: Path) -> Path:
    # Same folder, so the final os.replace is an atomic rename; the suffix keeps the container format guessable.
    return path.with_name(f".{path.stem}{PARTIAL}{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def _atomic_output(out_path: Path) -> Iterator[Path]:
    """A temporary name to write ``out_path`` to, renamed into place when the block ends without an error and
    removed when it fails; a full or read-only disk becomes :func:`write_failure`'s one message naming the file."""
    tmp = _atomic_target(out_path)
    try:
        yield tmp
        os.replace(tmp, out_path)
    except OSError as e:  # our writes (the input's read errors are InputErrors or pass through unchanged)
        remove_quietly(tmp)
        raise write_failure(out_path, e) from None
    except BaseException:
        remove_quietly(tmp)
        raise


@functools.cache
def _x264_asm() -> dict[str, str]:
    """x264's instruction sets, AVX-512 left out where the CPU has it: with it, x264 wrote other bytes for the same
    frames from run to run (measured on 64x64 frames, depending on what the process had allocated before); with
    AVX2 at most, every run's bytes are the same (and equal to the C code's). So a resumed run's video is the
    uninterrupted run's, byte for byte. Where torch sees no AVX-512, x264 keeps its own choice: naming AVX2 on a
    CPU without it would crash."""
    import torch

    return {"x264-params": "asm=AVX2"} if torch.backends.cpu.get_cpu_capability() == "AVX512" else {}


BT709 = 1  # ITU-T H.273 code of BT.709, for matrix, primaries and transfer alike


def _bt709_frame(rgb: np.ndarray) -> av.VideoFrame:
    """An RGB frame [H, W, 3] as the yuv420p frame we encode: BT.709 matrix, limited range, tagged so (HD video's
    colour space, which players assume for untagged HD; swscale's default matrix would be BT.601)."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return frame.reformat(
        format="yuv420p",
        src_colorspace="ITU709",
        dst_colorspace="ITU709",
        src_color_range="JPEG",
        dst_color_range="MPEG",
        dst_color_trc=BT709,
        dst_color_primaries=BT709,
    )


def x264_options(crf: int = 18, preset: str = "medium") -> dict[str, str]:
    """The libx264 options of every video we write: quality (``crf``), speed (``preset``) and the instruction sets
    that keep the output deterministic."""
    return {"crf": str(crf), "preset": preset, **_x264_asm()}


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: Fraction | int | float,
    *,
    audio: AudioTrack | None = None,
    crf: int = 18,
    preset: str = "medium",
    times: FrameTimes | None = None,
) -> Path:
    """Write RGB uint8 frames as H.264 (yuv420p) mp4 at exactly ``fps``, with ``audio`` remuxed from its file.

    ``times``: a variable-rate video's own timestamps (``Clip.times``), one per frame; the frames are then shown when
    the input showed them, and ``fps`` is only the stream's nominal (average) rate.

    The file appears at ``path`` only when complete (written to a temporary name, then renamed). yuv420p needs even
    sides: an odd-sized frame gets one replicated pixel row/column, and a warning says so.
    """
    out_path = Path(path)
    rate = Fraction(fps).limit_denominator(1_000_000)
    if rate <= 0:
        raise ConfigError("fps", "a positive frame rate", fps)
    with _atomic_output(out_path) as tmp, av.open(str(tmp), mode="w", format="mp4") as out:
        vstream = None
        a_in = a_out = None
        n = 0
        for frame in frames:
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ConfigError("frames", "[H, W, 3] uint8 RGB arrays", f"{frame.dtype} {frame.shape}")
            if vstream is None:
                h, w = frame.shape[:2]
                pad_h, pad_w = h % 2, w % 2
                if pad_h or pad_w:
                    logger.warning(
                        "%s: %dx%d is odd-sized; yuv420p needs even sides, replicating one edge pixel",
                        out_path,
                        w,
                        h,
                    )
                vstream = out.add_stream("libx264", rate=rate)
                vstream.width, vstream.height = w + pad_w, h + pad_h
                vstream.pix_fmt = "yuv420p"
                cc = vstream.codec_context
                cc.time_base = times.time_base if times is not None else 1 / rate
                # tagged as converted (_bt709_frame): players then show the colours that were encoded
                cc.colorspace = cc.color_primaries = cc.color_trc = BT709
                cc.color_range = 1  # MPEG (limited) range
                vstream.options = x264_options(crf, preset)
                if audio is not None:
                    a_in, a_out, remux = _add_audio(out, audio)
                size = (h, w)
            if frame.shape[:2] != size:
                raise ConfigError(
                    "frames", f"every frame {size[1]}x{size[0]}", f"frame {n} of {frame.shape[1]}x{frame.shape[0]}"
                )
            if pad_h or pad_w:
                frame = cv2.copyMakeBorder(frame, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
            vf = _bt709_frame(frame)
            if times is not None:
                if n >= len(times.pts):
                    raise ConfigError("times", f"one timestamp per frame ({len(times.pts)})", f"frame {n}")
                vf.pts, vf.time_base = times.pts[n], times.time_base
            else:
                vf.pts, vf.time_base = n, 1 / rate
            out.mux(vstream.encode(vf))
            n += 1
        if vstream is None:
            raise ConfigError("frames", "at least one frame", "none")
        if times is not None and n != len(times.pts):
            raise ConfigError("times", f"one timestamp per frame ({n} frames)", f"{len(times.pts)} timestamps")
        out.mux(vstream.encode(None))
        if a_in is not None:
            _copy_audio(a_in, a_out, audio, out, remux)
    logger.info("wrote %s: %d frames at %s fps%s", out_path, n, rate, f", audio {audio.codec}" if audio else "")
    return out_path


def concatenate_video(
    chunks: Sequence[Path],
    starts: Sequence[int],
    path: str | os.PathLike,
    fps: Fraction | int | float,
    *,
    audio: AudioTrack | None = None,
    times: FrameTimes | None = None,
    on_chunk: Callable[[], object] | None = None,
) -> Path:
    """One video from chunks that :func:`write_video` wrote (same size and settings, each from frame
    ``starts[c]`` of the whole), by remuxing their packets: no second encode. Each chunk's packets are moved to the
    time its first frame has in the whole (``fps``, or ``times`` for a variable-rate video); ``audio`` is remuxed
    as :func:`write_video` does. The file appears at ``path`` only when complete."""
    out_path = Path(path)
    rate = Fraction(fps).limit_denominator(1_000_000)
    with _atomic_output(out_path) as tmp, av.open(str(tmp), mode="w", format="mp4") as out:
        vout = a_in = a_out = None
        for chunk, start in zip(chunks, starts):
            with av.open(str(chunk)) as src:
                stream = src.streams.video[0]
                if vout is None:
                    vout = out.add_stream_from_template(stream)
                    if audio is not None:
                        a_in, a_out, remux = _add_audio(out, audio)
                tb = stream.time_base
                begin = times.pts[start] * times.time_base if times is not None else Fraction(start) / rate
                packets = [p for p in src.demux(stream) if p.pts is not None and p.dts is not None]
                offset = round(begin / tb) - min(p.pts for p in packets)
                for packet in packets:
                    packet.pts, packet.dts = packet.pts + offset, packet.dts + offset
                    packet.stream = vout
                    out.mux(packet)
            if on_chunk is not None:
                on_chunk()
        if vout is None:
            raise ConfigError("chunks", "at least one chunk", "none")
        if a_in is not None:
            _copy_audio(a_in, a_out, audio, out, remux)
    logger.info("wrote %s from %d chunks%s", out_path, len(chunks), f", audio {audio.codec}" if audio else "")
    return out_path


def _add_audio(out, audio: AudioTrack):
    """Open the source audio and add the output stream: a copy of it, or AAC when mp4 cannot hold the codec."""
    try:
        src = av.open(str(audio.path), mode="r")
    except (av.FFmpegError, OSError) as e:
        raise InputError(f"{audio.path}: cannot reopen for its audio ({e})") from None
    a_in = src.streams[audio.stream_index]
    if audio.codec in MP4_AUDIO_CODECS:
        return a_in, out.add_stream_from_template(a_in), True
    logger.info("audio codec %s cannot be stored in mp4 as is; re-encoding it to AAC", audio.codec)
    a_out = out.add_stream("aac", rate=audio.sample_rate or 48000)
    # Layouts with an unspecified channel order ("2 channels") are refused by the AAC encoder: name a standard one.
    a_out.layout = _STANDARD_LAYOUTS.get(a_in.codec_context.channels, "stereo")
    return a_in, a_out, False


def _copy_audio(a_in, a_out, audio: AudioTrack, out, remux: bool) -> None:
    """The source audio into ``out``, moved in time so that what played with video frame 0 still does."""
    src = a_in.container
    with src:
        tb = a_in.time_base
        shift = round(audio.video_start / tb)  # audio ticks: the source's time of video frame 0
        if remux:  # packets untouched, moved in time by -shift
            for packet in src.demux(a_in):
                if packet.dts is None or packet.pts is None:  # the demuxer's end-of-stream marker
                    continue
                if audio.until is not None and (packet.pts - shift) * tb >= audio.until:
                    break
                # Before frame 0: dropped, but for the last packets before it, which decoders need to warm up
                # (overlapped transforms, MP3's bit reservoir, Opus's 80 ms pre-roll of RFC 7845): two packets or
                # 80 ms, whichever is longer. They keep their negative time, as AAC's priming packet does in the
                # source. Measured: one packet left MP3's first 20 ms silent, two Opus's first 80 ms quieter.
                dur = packet.duration or 0
                preroll = max(2 * dur, round(PREROLL_SECONDS / tb))
                if shift > 0 and (packet.pts + dur + preroll <= shift if dur else packet.pts < shift):
                    continue
                packet.pts -= shift
                packet.dts -= shift
                packet.stream = a_out
                out.mux(packet)
            return
        # Re-encoded: every resampled frame is stamped with its sample position after frame 0 (the first may be
        # negative: decoders drop that part, as for AAC priming), so the encoder's own delay is accounted for too.
        rate = a_out.codec_context.sample_rate
        resampler = av.AudioResampler(format=a_out.codec_context.format.name, layout=a_out.layout.name, rate=rate)
        position: int | None = None  # next output sample, counted from video frame 0

        def encode(frames) -> None:
            nonlocal position
            for rf in frames:
                rf.pts, rf.time_base = position, Fraction(1, rate)
                position += rf.samples
                out.mux(a_out.encode(rf))

        for frame in src.decode(a_in):
            t = frame.time - audio.video_start if frame.time is not None else None  # s after video frame 0
            if audio.until is not None and t is not None and t >= audio.until:
                break
            if t is not None and t + frame.samples / frame.sample_rate <= 0:
                continue  # played entirely before frame 0
            if position is None:
                position = round((t or 0.0) * rate)  # < 0: starts before frame 0; > 0: the audio starts later
            frame.pts = None  # the resampler's output is stamped above
            encode(resampler.resample(frame))
        if position is not None:
            encode(resampler.resample(None))
        out.mux(a_out.encode(None))


#: About this many frames per chunk file of the output (a chunk ends at a keyframe): a run killed while propagating
#: resumes at its first unfinished chunk. Our choice: a few seconds of video, so little is redone.
CHUNK_FRAMES = 120


def chunk_starts(num_frames: int, keys: Sequence[int], every: int | None = None) -> list[int]:
    """First frames of the output's chunks: 0, then each first key at least ``every`` (default ``CHUNK_FRAMES``)
    frames after the last start."""
    every = CHUNK_FRAMES if every is None else every
    starts = [0]
    for k in keys:
        if k - starts[-1] >= every and k < num_frames:
            starts.append(int(k))
    return starts


def chunk_files(chunks: Path, starts: Sequence[int]) -> list[Path]:
    """The chunk files of an output whose chunks begin at ``starts`` (each file complete or absent)."""
    return [chunks / f"chunk_{c:04d}.mp4" for c in range(len(starts))]


def encode_chunk(chunks: Path, starts: Sequence[int], c: int, frames: Iterator[np.ndarray], clip) -> None:
    """Chunk ``c``: the next ``starts[c+1] - starts[c]`` frames of ``frames`` encoded into its file (written whole
    or not at all), at the clip's rate or its frames' own timestamps."""
    chunks.mkdir(parents=True, exist_ok=True)
    a = starts[c]
    b = starts[c + 1] if c + 1 < len(starts) else clip.num_frames
    times = FrameTimes(clip.times.pts[a:b], clip.times.time_base) if clip.times is not None else None
    write_video(chunk_files(chunks, starts)[c], itertools.islice(frames, b - a), clip.fps, times=times)


def join_chunks(path: Path, clip, chunks: Path, starts: Sequence[int], progress: bool = False) -> str:
    """The finished chunks remuxed into ``path`` with the clip's audio at its exact rate (no second encode), then
    deleted. An unreadable audio stream costs the audio, not the video (a warning says so). Returns what happened
    to the audio, for the report."""
    files = chunk_files(chunks, starts)
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise InputError(f"{chunks}: chunks {missing[:3]} not made yet")
    with tqdm(total=len(files), desc="assembling", unit="chunk", disable=not progress, leave=False) as bar:
        join = functools.partial(
            concatenate_video, files, starts, path, clip.fps, times=clip.times, on_chunk=bar.update
        )
        if clip.audio is None:
            note = "none in the input"
            join()
        else:
            try:
                join(audio=clip.audio)
                note = f"kept ({clip.audio.codec})"
            except Exception as e:
                logger.warning("%s: the audio could not be carried over (%s); writing it without", clip.path, e)
                bar.reset()
                join()
                note = f"dropped: {e}"
    shutil.rmtree(chunks, ignore_errors=True)
    return note


def encode_video(
    path: Path,
    make_frames: Callable[[int], Iterator[np.ndarray]],
    clip,
    chunks: Path,
    starts: Sequence[int],
    progress: bool = False,
) -> str:
    """The frames of ``make_frames(start)`` (frames ``start``.. in order) encoded chunk by chunk into ``chunks/``
    as they come, then joined into ``path`` (:func:`join_chunks`). Finished chunks are not made again, so a rerun
    after a kill resumes at the first unfinished one. Returns what happened to the audio, for the report."""
    files = chunk_files(chunks, starts)
    first = next((c for c, f in enumerate(files) if not f.is_file()), len(files))
    if first:
        logger.info(
            "%d of %d chunks already done; resuming at frame %d", first, len(files), starts[min(first, len(starts) - 1)]
        )
    if first < len(files):
        stream = iter(make_frames(starts[first]))
        for c in range(first, len(files)):
            encode_chunk(chunks, starts, c, stream, clip)
    return join_chunks(path, clip, chunks, starts, progress)
