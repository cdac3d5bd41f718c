"""Draw the bundled probe example: a 3000x2000 "slide" of synthetic ichthyolith-like specimens.

Ichthyoliths are microfossil fish teeth and denticles. This image only imitates their look
(amber teeth and ridged scales on a mottled pale background) so that the probe has a
realistic-sized input with small objects; it is not a real specimen image.

    python examples/01-data/make_example.py            # writes ichthyoliths.jpg next to this file

The drawing is deterministic (fixed seed), so the prompts of examples/00-probe_configs and
the probe's default prompt keep pointing at specimens. Their bounding boxes (pixels,
[x, y, width, height]) are printed.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT = 3000, 2000
SEED = 20240611

# (kind, centre x, centre y, length, width, angle in degrees)
SPECIMENS = [
    ("tooth", 1500, 1000, 300, 130, -20),  # the probe's default prompt frames this one
    ("tooth", 620, 520, 240, 100, 35),
    ("denticle", 2350, 640, 190, 150, 10),
    ("tooth", 2480, 1480, 210, 90, 100),
    ("denticle", 820, 1500, 160, 120, -40),
    ("tooth", 1900, 420, 150, 70, 60),
    ("denticle", 1150, 250, 110, 90, 0),
    ("tooth", 300, 1100, 180, 80, -75),
]


def background(rng: np.random.Generator) -> np.ndarray:
    """A pale, slightly mottled slide with a vignette and a few dark specks of sediment."""
    coarse = rng.normal(0, 1, (HEIGHT // 100, WIDTH // 100, 1)).astype(np.float32)
    mottle = cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)[:, :, None]
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    r = np.hypot((xs - WIDTH / 2) / WIDTH, (ys - HEIGHT / 2) / HEIGHT)
    vignette = (1 - 0.35 * r**2)[:, :, None]
    base = np.array([196, 205, 212], np.float32)  # BGR: a cool pale grey
    image = np.clip(base * vignette + 6 * mottle, 0, 255).astype(np.uint8)
    for _ in range(260):
        x, y = int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))
        shade = int(rng.integers(60, 140))
        cv2.circle(image, (x, y), int(rng.integers(1, 5)), (shade, shade + 5, shade + 10), -1, cv2.LINE_AA)
    return image


def tooth_outline(cx, cy, length, width, angle) -> np.ndarray:
    """A curved cone: wide base, sharp tip, one side bulging more than the other."""
    t = np.linspace(0, 1, 60)
    half = width / 2 * (1 - t) ** 0.8
    spine = length * (t - 0.35)
    bend = 0.18 * length * t**2
    left = np.stack([spine, half + bend], 1)
    right = np.stack([spine, -half + bend], 1)[::-1]
    base = np.stack(
        [
            np.full(20, spine[0]) - width * 0.12 * np.sin(np.linspace(0, math.pi, 20)),
            np.linspace(-width / 2, width / 2, 20),
        ],
        1,
    )
    points = np.concatenate([left, right, base])
    return _place(points, cx, cy, angle)


def denticle_outline(cx, cy, length, width, angle) -> np.ndarray:
    """A rounded scale with a notched posterior edge."""
    a = np.linspace(0, 2 * math.pi, 120, endpoint=False)
    notch = 1 - 0.12 * np.clip(np.cos(3 * a), 0, None) * (np.cos(a) > 0)
    points = np.stack([length / 2 * np.cos(a) * notch, width / 2 * np.sin(a)], 1)
    return _place(points, cx, cy, angle)


def _place(points: np.ndarray, cx, cy, angle) -> np.ndarray:
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    rotated = points @ np.array([[c, s], [-s, c]])
    return np.round((rotated + (cx, cy)) * 16).astype(np.int32)


def draw_specimen(image: np.ndarray, kind: str, cx, cy, length, width, angle) -> tuple[int, int, int, int]:
    outline = (tooth_outline if kind == "tooth" else denticle_outline)(cx, cy, length, width, angle)
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [outline], 255, cv2.LINE_AA, shift=4)
    x, y, w, h = cv2.boundingRect((outline >> 4).astype(np.int32))
    # amber body, brighter along the axis, darker towards the rim
    dist = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 5)
    glow = np.clip(dist / max(1.0, dist.max()), 0, 1)[:, :, None]
    body = np.array([40, 110, 170], np.float32) + glow * np.array([50, 80, 70], np.float32)
    if kind == "denticle":  # growth ridges
        ys, xs = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
        ridges = (np.sin(np.hypot(xs - cx, ys - cy) / 7.0) * 12)[:, :, None]
        body = body + ridges
    alpha = (mask.astype(np.float32) / 255)[:, :, None]
    image[:] = np.clip(image * (1 - alpha) + body * alpha, 0, 255).astype(np.uint8)
    cv2.polylines(image, [outline], True, (25, 60, 95), 3, cv2.LINE_AA, shift=4)
    return x, y, w, h


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).with_name("ichthyoliths.jpg"))
    parser.add_argument("--quality", type=int, default=85)
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    image = background(rng)
    for index, (kind, cx, cy, length, width, angle) in enumerate(SPECIMENS):
        box = draw_specimen(image, kind, cx, cy, length, width, angle)
        print(f"{index}: {kind:8s} box [x, y, w, h] = {list(box)}")
    cv2.imwrite(str(args.output), image, [cv2.IMWRITE_JPEG_QUALITY, args.quality])
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
