"""Video I/O: exact rates, frame counts, the resize policy, untouched audio, atomic writes, and clear errors."""

import ctypes
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

from fresco_v2v import ConfigError, InputError
from fresco_v2v.encode import write_video
from fresco_v2v.testing import moving_square_clip, shifted_texture_clip, write_test_video
from fresco_v2v.video import FrameReader, FrameTimes, frame_times, plan_fit, read_video, scan_video

NTSC = Fraction(30000, 1001)


@pytest.fixture
def clip_frames():
    return shifted_texture_clip(12, 96, 160, (2, 1))


def _packets(path, kind):
    with av.open(str(path)) as c:
        s = getattr(c.streams, kind)[0]
        return [bytes(p) for p in c.demux(s) if p.dts is not None]


def test_round_trip_keeps_rate_count_and_audio(tmp_path, clip_frames):
    src = write_test_video(tmp_path / "in.mp4", clip_frames, NTSC)
    clip = read_video(src, short_side=128)
    assert clip.fps == NTSC and isinstance(clip.fps, Fraction)
    assert clip.num_frames == 12 and clip.frames.dtype == np.uint8
    assert clip.size == (192, 128) and clip.audio is not None and clip.audio.codec == "aac"
    out = write_video(tmp_path / "out.mp4", clip.frames, clip.fps, audio=clip.audio)
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
        assert v.average_rate == NTSC
    back = read_video(out, short_side=None)
    assert back.fps == NTSC and back.num_frames == 12
    assert np.abs(back.frames.astype(int) - clip.frames).mean() < 6  # lossy codec, same picture
    assert _packets(out, "audio") == _packets(src, "audio")  # remuxed untouched, byte for byte


def test_integer_rate_and_no_audio(tmp_path, clip_frames):
    src = write_test_video(tmp_path / "in.mp4", clip_frames, 24, audio_codec=None)
    clip = read_video(src, short_side=128)
    assert clip.fps == 24 and clip.audio is None
    out = write_video(tmp_path / "out.mp4", clip.frames, clip.fps)
    with av.open(str(out)) as c:
        assert not c.streams.audio and c.streams.video[0].frames == 12


def test_audio_that_mp4_cannot_hold_is_reencoded(tmp_path, clip_frames):
    src = write_test_video(tmp_path / "in.mkv", clip_frames, NTSC, audio_codec="pcm_s16le")
    clip = read_video(src, short_side=128)
    assert clip.audio.codec == "pcm_s16le"
    out = write_video(tmp_path / "out.mp4", clip.frames, clip.fps, audio=clip.audio)
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac"
        assert abs(float(a.duration * a.time_base) - 12 / float(NTSC)) < 0.1


def test_max_frames_trims_audio(tmp_path, clip_frames):
    src = write_test_video(tmp_path / "in.mp4", clip_frames, NTSC)
    clip = read_video(src, short_side=128, max_frames=5)
    assert clip.num_frames == 5 and clip.audio.until == pytest.approx(5 / float(NTSC))
    out = write_video(tmp_path / "out.mp4", clip.frames, clip.fps, audio=clip.audio)
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        assert float(a.duration * a.time_base) < 5 / float(NTSC) + 0.05


@pytest.mark.parametrize(
    "size,short,mode,expect",
    [
        ((160, 96), 128, "crop", ((213, 128), (192, 128), (10, 0))),
        ((96, 160), 128, "crop", ((128, 213), (128, 192), (0, 10))),
        ((160, 96), 128, "pad", ((213, 128), (256, 128), (21, 0))),
        ((1920, 1080), 512, "crop", ((910, 512), (896, 512), (7, 0))),
        ((512, 512), 512, "crop", ((512, 512), (512, 512), (0, 0))),
        ((640, 512), None, "crop", ((640, 512), (640, 512), (0, 0))),
    ],
)
def test_fit_plan(size, short, mode, expect):
    fit = plan_fit(size, short, 64, mode)
    assert (fit.scaled_size, fit.size, fit.offset) == expect
    assert fit.size[0] % 64 == 0 and fit.size[1] % 64 == 0
    sw, sh = fit.scaled_size
    assert abs(sw / sh - size[0] / size[1]) < 1 / min(sw, sh)  # aspect ratio kept


def test_fit_apply_and_unfit():
    frame = shifted_texture_clip(1, 96, 160, (0, 0))[0]
    crop = plan_fit((160, 96), 128, 64, "crop")
    assert crop.apply(frame).shape == (128, 192, 3)
    pad = plan_fit((160, 96), 128, 64, "pad")
    padded = pad.apply(frame)
    assert padded.shape == (128, 256, 3)
    restored = pad.unfit(padded)
    assert restored.shape == (128, 213, 3)
    np.testing.assert_array_equal(padded[:, 21 : 21 + 213], restored)


@pytest.mark.parametrize("short,field", [(500, "resolution"), (32, "resolution")])
def test_fit_validates(short, field):
    with pytest.raises(ConfigError, match=field):
        plan_fit((640, 480), short)


def test_no_resize_needs_multiples():
    with pytest.raises(ConfigError, match="resolution"):
        plan_fit((640, 480), None)


def test_atomic_write_leaves_nothing_on_failure(tmp_path, clip_frames):
    def frames():
        yield clip_frames[0]
        yield clip_frames[1]
        raise KeyboardInterrupt

    target = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        write_video(target, frames(), 24)
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_bad_frames(tmp_path):
    with pytest.raises(ConfigError, match="frames"):
        write_video(tmp_path / "o.mp4", [np.zeros((64, 64, 3), np.float32)], 24)
    with pytest.raises(ConfigError, match="frames"):
        write_video(tmp_path / "o.mp4", [np.zeros((64, 64, 3), np.uint8), np.zeros((64, 32, 3), np.uint8)], 24)
    with pytest.raises(ConfigError, match="frames"):
        write_video(tmp_path / "o.mp4", [], 24)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fills freed heap blocks through glibc's malloc")
def test_write_video_bytes_do_not_depend_on_what_the_process_allocated_before(tmp_path):
    """The same frames give the same file, whatever the heap held before (the encoder once read bytes it never
    wrote: with AVX-512, 64x64 frames encoded differently after other allocations). A resumed run relies on it."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    frames = [
        np.ascontiguousarray(np.roll(f, 3 * i, axis=1))
        for i, f in enumerate(moving_square_clip(24, 64, 64, 16, (4, 4), (1, 1)))
    ]
    files = []
    for seed in range(5):
        rng = np.random.default_rng(seed)  # freed blocks full of noise, which later allocations may get back
        blocks = [libc.malloc(size) for size in [1 << 12, 1 << 14, 1 << 16, 1 << 18, 100_000, 30_000, 5_000] * 20]
        for b, size in zip(blocks, [1 << 12, 1 << 14, 1 << 16, 1 << 18, 100_000, 30_000, 5_000] * 20):
            ctypes.memmove(b, rng.bytes(size), size)
        for b in blocks:
            libc.free(ctypes.c_void_p(b))
        files.append(write_video(tmp_path / f"{seed}.mp4", frames, 30).read_bytes())
    assert all(f == files[0] for f in files)


def test_write_odd_size_pads_one_pixel(tmp_path):
    frames = shifted_texture_clip(3, 65, 67, (1, 0))
    out = write_video(tmp_path / "odd.mp4", frames, 10)
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (68, 66)


# -- bad input: clear errors that name the file ------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.mp4: no such file"):
        read_video(tmp_path / "nope.mp4")


def test_folder(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        read_video(tmp_path)


def test_not_a_video(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video")
    with pytest.raises(InputError, match=r"notes\.mp4: not a video file"):
        read_video(p)


def test_audio_only_file(tmp_path):
    p = tmp_path / "song.m4a"
    with av.open(str(p), "w") as out:
        s = out.add_stream("aac", rate=44100)
        s.layout = "stereo"
        for i in range(5):
            f = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
            f.sample_rate, f.pts = 44100, i * 1024
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    with pytest.raises(InputError, match=r"song\.m4a: has no video stream"):
        read_video(p)


def test_zero_decodable_frames(tmp_path, clip_frames):
    src = write_test_video(tmp_path / "ok.mp4", clip_frames, 24, audio_codec=None)
    data = bytearray(src.read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4  # keep the index, zero every frame's data
    data[start:end] = bytes(end - start)
    bad = tmp_path / "zeroed.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"zeroed\.mp4: (no frame could be decoded|the video stream has no)"):
        read_video(bad)


def test_frames_too_small(tmp_path):
    src = write_test_video(tmp_path / "tiny.mp4", shifted_texture_clip(3, 48, 96, (1, 0)), 24, audio_codec=None)
    with pytest.raises(InputError, match=r"tiny\.mp4: frames are 96x48; the model needs at least 64"):
        read_video(src)


def test_bad_max_frames(tmp_path, clip_frames):
    src = write_test_video(tmp_path / "in.mp4", clip_frames, 24, audio_codec=None)
    with pytest.raises(ConfigError, match="max_frames"):
        read_video(src, max_frames=0)


@pytest.mark.shared_data
def test_real_clips(shared_videos):
    clip = read_video(shared_videos / "music.mp4", max_frames=10)
    assert clip.fps == 24 and clip.fit.source_size == (640, 512) and clip.size == (640, 512)
    assert clip.source_frame_count == 240 and clip.num_frames == 10
    boxer = read_video(shared_videos / "boxer-punching-towards-camera.mp4")
    assert boxer.fps == 10 and boxer.num_frames == 32 and boxer.size == (512, 512)


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_display_rotation_is_applied(tmp_path, degrees):
    # a phone's portrait clip: landscape frames stored with a display matrix; players (and we) show them upright
    stored = np.zeros((4, 64, 128, 3), np.uint8)
    stored[:, :16, :16] = (255, 0, 0)  # a red top-left corner tells the orientation
    stored[:, 40:, 90:] = (0, 0, 255)
    path = write_test_video(tmp_path / "phone.mp4", stored, 24, audio_codec=None, display_rotation=degrees)
    clip = read_video(path, short_side=None)
    want = np.rot90(stored, degrees // 90, axes=(1, 2))  # counter-clockwise, as the display matrix says
    assert clip.frames.shape == want.shape
    assert np.abs(clip.frames.astype(int) - want).mean() < 3.0


def test_frame_times_tell_variable_from_constant_rate():
    tb = Fraction(1, 90000)
    assert frame_times([3003 * i for i in range(10)], tb, NTSC) is None  # exact 29.97 fps
    ms = [round(i * 1000 * 1001 / 30000) for i in range(30)]  # 29.97 fps in milliseconds: 33/34 ms steps
    assert frame_times(ms, Fraction(1, 1000), NTSC) is None
    assert frame_times([900 + 3600 * i for i in range(5)], tb, Fraction(25)) is None  # an offset start
    vfr = [900, 4500, 8100, 19800, 23400]  # 25 fps with a 0.09 s stall
    assert frame_times(vfr, tb, Fraction(25)) == FrameTimes((0, 3600, 7200, 18900, 22500), tb)
    assert frame_times([0, 3600, None], tb, Fraction(25)) is None  # missing timestamps: not trusted
    assert frame_times([0, 3600, 3600, 9000], tb, Fraction(25)) is None  # not increasing
    assert frame_times([0], tb, Fraction(25)) is None


def test_variable_rate_round_trip_keeps_each_frame_time(tmp_path, clip_frames):
    """Phone clips are variable-rate: every frame must come out when it went in, or it drifts from the audio."""
    seconds = [0.0, 0.04, 0.08, 0.2, 0.24, 0.28, 0.5, 0.54, 0.58, 0.62, 0.66, 0.9]
    src = write_test_video(tmp_path / "vfr.mp4", clip_frames, 25, timestamps=seconds)
    clip = read_video(src, short_side=64)
    assert clip.times is not None and clip.num_frames == 12
    assert [round(clip.times.seconds(i), 6) for i in range(12)] == seconds
    assert clip.duration == pytest.approx(0.9 + 1 / float(clip.fps))
    out = write_video(tmp_path / "out.mp4", clip.frames, clip.fps, audio=clip.audio, times=clip.times)
    with av.open(str(out)) as c:
        assert [round(f.time, 6) for f in c.decode(c.streams.video[0])] == seconds
    back = read_video(out, short_side=None)
    assert back.num_frames == 12 and back.times == clip.times and back.audio is not None
    # the first frames only: the audio ends with the last kept frame's period, by its own time
    short = read_video(src, short_side=64, max_frames=7)
    assert short.audio.until == pytest.approx(0.5 + 1 / float(short.fps))
    with pytest.raises(ConfigError, match="times: expected one timestamp per frame"):
        write_video(tmp_path / "bad.mp4", clip.frames[:5], clip.fps, times=clip.times)
    with pytest.raises(ConfigError, match="times: expected one timestamp per frame"):
        write_video(tmp_path / "bad.mp4", np.concatenate([clip.frames, clip.frames[:1]]), clip.fps, times=clip.times)
    assert not (tmp_path / "bad.mp4").exists()


def test_constant_rate_files_have_no_times(tmp_path, clip_frames):
    # mkv stores milliseconds (29.97 fps: 33/34 ms steps); MPEG-TS starts at an offset: both still constant
    for name, rate in (("cfr.mp4", NTSC), ("cfr.mkv", NTSC), ("film.mkv", Fraction(24000, 1001)), ("cfr.ts", NTSC)):
        clip = read_video(write_test_video(tmp_path / name, clip_frames, rate, audio_codec=None), short_side=64)
        assert clip.times is None and clip.num_frames == 12, name


def test_variable_rate_mkv_in_milliseconds(tmp_path, clip_frames):
    seconds = [0.0, 0.04, 0.08, 0.3, 0.34, 0.38, 0.42, 0.46, 0.5, 0.54, 0.58, 0.62]
    clip = read_video(write_test_video(tmp_path / "vfr.mkv", clip_frames, 25, timestamps=seconds), short_side=64)
    assert clip.times is not None and clip.times.time_base == Fraction(1, 1000)
    assert [clip.times.seconds(i) for i in range(12)] == pytest.approx(seconds)


def _audio_signal(path) -> np.ndarray:
    """The decoded first channel of the first audio stream."""
    with av.open(str(path)) as c:
        parts = []
        for f in c.decode(c.streams.audio[0]):
            a = f.to_ndarray().astype(np.float32)
            parts.append(a[0] if f.format.is_planar else a[0, :: len(f.layout.channels)])
    return np.concatenate(parts)


@pytest.mark.parametrize("name,codec", [("offset.mp4", "aac"), ("offset.mkv", "pcm_s16le"), ("offset.mkv", "mp3")])
def test_audio_stays_in_sync_when_the_video_starts_later(tmp_path, clip_frames, name, codec):
    """The first frame is shown 0.48 s into the file: the audio that played with it must play with it in the output
    (the tone starts with frame 0), whether the audio is remuxed (AAC) or re-encoded (PCM -> AAC)."""
    src = write_test_video(
        tmp_path / name, clip_frames, 25, audio_codec=codec, audio_seconds=2.0, video_start=0.48, amplitude=0.3
    )
    clip = read_video(src, short_side=64)
    assert clip.audio.video_start == pytest.approx(0.48)
    out = write_video(tmp_path / "out.mp4", clip.frames, clip.fps, audio=clip.audio)
    with av.open(str(out)) as c:
        assert next(c.decode(c.streams.video[0])).time == 0
        sr = c.streams.audio[0].codec_context.sample_rate
    sig = np.abs(_audio_signal(out))

    def onset(x: np.ndarray) -> float:  # seconds to the first 5 ms whose mean level reaches half the tone's (0.19)
        w = int(0.005 * sr)
        levels = x[: len(x) // w * w].reshape(-1, w).mean(1)
        return float(np.argmax(levels > 0.09) * w / sr)

    # The tone starts with frame 0 as in the source (not after the 0.48 s of silence before it), to within a few
    # ms; the source's own onset includes its codec's delay (MP3 in mkv: ~30 ms), which travels along.
    assert abs(onset(sig) - (onset(np.abs(_audio_signal(src))) - 0.48)) <= 0.02
    with av.open(str(out)) as c:
        kept = c.streams.audio[0].codec_context.codec.canonical_name
        assert kept == ("aac" if codec == "pcm_s16le" else codec)  # remuxed (MP3 too), or re-encoded to AAC
    # and the output audio is as long as the source's after frame 0 (2.0 - 0.48 s), within a packet or two
    assert abs(len(sig) / sr - 1.52) < 0.06


def test_scan_video_visits_each_frame_once_in_order(tmp_path):
    """The streaming pass sees exactly the frames read_video keeps, in order, with the same rate, size and audio."""
    from fresco_v2v.video import scan_video

    src = write_test_video(tmp_path / "in.mp4", moving_square_clip(7, 64, 96, 16, (4, 4), (5, 3)), 25)
    seen: list[tuple[int, np.ndarray]] = []
    info = scan_video(src, lambda i, f: seen.append((i, f.copy())), short_side=64, max_frames=6)
    clip = read_video(src, short_side=64, max_frames=6)
    assert [i for i, _ in seen] == list(range(6)) == list(range(info.num_frames))
    assert all(np.array_equal(f, g) for (_, f), g in zip(seen, clip.frames))
    assert (info.fps, info.size, info.source_frame_count) == (clip.fps, clip.size, clip.source_frame_count)
    assert info.duration == clip.duration and info.audio == clip.audio


@pytest.mark.parametrize("kind", ["constant", "variable", "rotated"])
def test_frame_reader_random_access_matches_read_video(tmp_path, kind):
    """Forward, backward (a seek), repeated and far reads give exactly read_video's frames, for a constant-rate, a
    variable-rate and a phone-rotated file; the cache stays bounded."""
    from fresco_v2v.video import FrameReader, scan_video

    frames = moving_square_clip(40, 64, 96, 16, (4, 4), (1, 1))
    extra = {
        "constant": {},
        "variable": {"timestamps": [0.05 * i + (0.3 if i > 20 else 0.0) for i in range(40)]},
        "rotated": {"display_rotation": 90},
    }[kind]
    # keyframes every 8 frames, so a backward read really seeks to a keyframe before the target
    src = write_test_video(tmp_path / f"{kind}.mp4", frames, 25, audio_codec=None, gop=8, **extra)
    want = read_video(src, short_side=64).frames
    with FrameReader(scan_video(src, short_side=64), cache=4) as reader:
        assert len(reader) == len(want)
        for i in [0, 1, 2, 30, 31, 5, 5, 39, 17, 16, 0, 38]:
            assert np.array_equal(reader[i], want[i]), i
            assert len(reader._cache) <= 4
        assert np.array_equal(reader.take([12, 3, 12]), want[[12, 3, 12]])
        with pytest.raises(IndexError):
            reader[40]


def _faststart_copy(src, dst):
    """``src`` remuxed with its index first (as streaming sites serve mp4s), so a cut-off copy still opens."""
    with av.open(str(src)) as i, av.open(str(dst), "w", options={"movflags": "faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for packet in i.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                o.mux(packet)
    return dst


def test_a_file_cut_off_anywhere_reads_its_first_frames_or_says_why(tmp_path):
    """Cut at random offsets: each copy either fails with an InputError naming it, or gives the frames before the
    cut, in order, with the audio ending at the last of them; never another exception."""
    frames = moving_square_clip(40, 64, 64, 16, (4, 4), (1, 0))
    full = _faststart_copy(write_test_video(tmp_path / "a.mp4", frames, 24), tmp_path / "fast.mp4")
    whole = read_video(full, short_side=None)
    data = full.read_bytes()
    rng = np.random.default_rng(0)
    outcomes = set()
    for i, cut in enumerate(sorted(rng.integers(len(data) // 20, len(data) - 1, 12))):
        part = tmp_path / f"cut{i}.mp4"
        part.write_bytes(data[:cut])
        try:
            clip = read_video(part, short_side=None)
        except InputError as e:
            assert str(part) in str(e)
            outcomes.add("refused")
            continue
        outcomes.add("read")
        assert 0 < clip.num_frames <= whole.num_frames
        assert np.array_equal(clip.frames[:-1], whole.frames[: clip.num_frames - 1])  # the last may be damaged
        if clip.num_frames < whole.num_frames and clip.audio is not None:
            assert clip.audio.until == pytest.approx(clip.num_frames / 24)
    assert "read" in outcomes  # a faststart file cut in its media keeps the frames before the cut
    index_last = tmp_path / "cut-index-last.mp4"  # the default layout has the index at the end: nothing to read
    index_last.write_bytes((tmp_path / "a.mp4").read_bytes()[:-2000])
    with pytest.raises(InputError, match=r"cut-index-last.mp4: (not a video file|its video stream cannot be read)"):
        read_video(index_last)


def _damaged_mkv(src, dst, bad_packet: int):
    """``src`` remuxed to Matroska (which declares no frame count) with video packet ``bad_packet`` scrambled: the
    decoder fails there while the file, and its audio, go on to the end."""
    with av.open(str(src)) as i, av.open(str(dst), "w", format="matroska") as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        k = 0
        for packet in i.demux():
            if packet.dts is None:
                continue
            out = streams[packet.stream.index]
            if packet.stream.type == "video":
                k += 1
                if k == bad_packet:
                    data = bytes(packet)
                    bad = av.Packet(data[:4] + bytes((b * 7 + 13) % 256 for b in data[4:]))
                    bad.pts, bad.dts, bad.time_base = packet.pts, packet.dts, packet.time_base
                    packet = bad
            packet.stream = out
            o.mux(packet)
    return dst


def test_a_stream_that_fails_mid_file_keeps_its_frames_and_the_audio_ends_with_them(tmp_path, caplog):
    """The decoder fails at frame 20 of 40 while the file goes on: the 19 frames before are used, said in the log,
    and the audio is cut where they end (it kept its full 1.7 s before)."""
    frames = moving_square_clip(40, 64, 64, 16, (4, 4), (1, 0))
    src = write_test_video(tmp_path / "a.mp4", frames, 24)
    bad = _damaged_mkv(src, tmp_path / "damaged.mkv", 20)
    with caplog.at_level("WARNING", logger="fresco_v2v.video"):
        clip = read_video(bad, short_side=None)
    whole = read_video(src, short_side=None)
    n = clip.num_frames
    assert 0 < n < 40 and np.array_equal(clip.frames, whole.frames[:n])
    assert clip.audio.until == pytest.approx(n / 24)
    assert f"cannot be decoded past frame {n}" in caplog.text and "with the audio up to them" in caplog.text
    out = write_video(tmp_path / "out.mp4", clip.frames, clip.fps, audio=clip.audio)
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        assert float(a.duration * a.time_base) < n / 24 + 0.05  # not the source's 1.7 s
    with FrameReader(scan_video(bad, short_side=None)) as reader:  # a later pass reads the same frames
        assert len(reader) == n and np.array_equal(reader[n - 1], whole.frames[n - 1])


def _encode(path, codec, pix_fmt, rgba, tags=None):
    with av.open(str(path), "w") as o:
        s = o.add_stream(codec, rate=24)
        s.width, s.height, s.pix_fmt = rgba.shape[2], rgba.shape[1], pix_fmt
        for name, value in (tags or {}).items():
            setattr(s.codec_context, name, value)
        for i, f in enumerate(rgba):
            frame = av.VideoFrame.from_ndarray(f, format="rgba").reformat(format=pix_fmt)
            frame.pts = i
            o.mux(s.encode(frame))
        o.mux(s.encode())
    return path


def test_alpha_hdr_and_10_bit_input_read_with_what_is_lost_said(tmp_path, caplog):
    """An alpha channel is dropped (warned), HDR is converted without tone mapping (warned, naming PQ), 10-bit SDR
    is rounded to 8 bits (logged); the frames read as 8-bit RGB either way."""
    import logging

    rgba = np.zeros((4, 64, 64, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 200, 128
    alpha = _encode(tmp_path / "alpha.mov", "qtrle", "argb", rgba)
    hdr = _encode(tmp_path / "hdr.mp4", "libx264", "yuv420p10le", rgba, {"color_trc": 16, "color_primaries": 9})
    ten = _encode(tmp_path / "ten.mp4", "libx264", "yuv420p10le", rgba)
    with caplog.at_level(logging.INFO):
        clips = [read_video(p, short_side=None) for p in (alpha, hdr, ten)]
    assert all(c.frames.shape == (4, 64, 64, 3) and c.frames.dtype == np.uint8 for c in clips)
    assert np.abs(clips[0].frames.astype(int) - 200).max() <= 2  # the colour as stored, alpha ignored
    text = caplog.text
    assert "alpha.mov: has an alpha channel (argb); it is dropped" in text
    assert "hdr.mp4: is HDR video (PQ (SMPTE ST 2084)); frames are converted to 8-bit SDR without tone mapping" in text
    assert "ten.mp4: 10-bit frames (yuv420p10le) are rounded to 8 bits" in text
    assert "ten.mp4: is HDR" not in text


def test_output_is_bt709_tagged_and_its_colours_read_back(tmp_path):
    """What we write is converted with the BT.709 matrix at limited range and tagged so; reading it back (by its
    tags) gives the colours written, to within rounding."""
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128], [30, 200, 90], [250, 240, 10]])
    frames = np.zeros((3, 64, 192, 3), np.uint8)
    for i, c in enumerate(colours):
        frames[:, :, 32 * i : 32 * i + 32] = c
    out = write_video(tmp_path / "c.mp4", frames, 24)
    with av.open(str(out)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range) == (1, 1, 1, 1)  # BT.709, MPEG
    back = read_video(out, short_side=None, fit="pad", multiple=1).frames
    centres = back[1, 32, 16::32].astype(int)  # [6, 3]: the middle of each patch
    assert np.abs(centres - colours).max() <= 3
