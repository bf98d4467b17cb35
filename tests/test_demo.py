"""`fresco demo`'s pieces: the generated shape scenes and the labelled comparison images."""

from __future__ import annotations

import numpy as np

from fresco_v2v.demo import LABEL_HEIGHT, contact_sheet, labelled, side_by_side_frame
from fresco_v2v.synthetic import DEMO_SEED, TRAIN_SCENE_SEEDS, demo_clip, shape_scene_clip


def test_shape_scenes_are_seeded_move_and_stay_in_view():
    a, b = shape_scene_clip(12, 64, 96, seed=3), shape_scene_clip(12, 64, 96, seed=3)
    assert a.shape == (12, 64, 96, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, shape_scene_clip(12, 64, 96, seed=4))
    assert np.abs(a[0].astype(int) - a[-1].astype(int)).max() > 50  # something moved
    # the demo scene: two shapes whose pixels differ from the background in every frame (none leaves the view)
    clip = demo_clip(48, 128, 192)
    background = shape_scene_clip(48, 128, 192, DEMO_SEED, objects=0)
    changed = np.abs(clip.astype(int) - background.astype(int)).max(-1) > 20  # [T, H, W]
    assert changed.reshape(48, -1).mean(1).min() > 0.05
    assert DEMO_SEED < TRAIN_SCENE_SEEDS  # the demo's scene is not a training scene


def test_labelled_panels_and_contact_sheet_layout():
    panels = [np.full((20, 30, 3), v, np.uint8) for v in (0, 100, 200)]
    one = labelled(panels[0], "input")
    assert one.shape == (LABEL_HEIGHT + 20, 30, 3)
    assert one[:LABEL_HEIGHT].max() == 255 and one[LABEL_HEIGHT:].max() == 0  # white text on the strip only
    row = side_by_side_frame(panels, ["a", "b", "c"], gap=4)
    assert row.shape == (LABEL_HEIGHT + 20, 3 * 30 + 2 * 4, 3)
    np.testing.assert_array_equal(row[LABEL_HEIGHT:, 34:64], panels[1])
    np.testing.assert_array_equal(row[LABEL_HEIGHT:, 30:34], 255)
    videos = [np.stack([p + i for i in range(9)]) for p in panels]  # frame i has value p + i
    sheet = contact_sheet(videos, ["x", "y", "z"], count=3, gap=2)
    assert sheet.shape == (3 * (LABEL_HEIGHT + 20) + 2 * 2, 3 * 30 + 2 * 2, 3)
    # row 2 (the third video), column 3 is its last frame (frame 8): value 200 + 8
    top, left = 2 * (LABEL_HEIGHT + 20 + 2) + LABEL_HEIGHT, 2 * (30 + 2)
    assert (sheet[top : top + 20, left : left + 30] == 208).all()
