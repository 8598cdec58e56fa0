"""The street domain: colour house-number-like digits, recreating the hard direction of SVHN→MNIST.

Like SVHN's cropped digits, each image centres the labelled digit between partly visible
neighbours (random digits, usually in the same font and colour), on a plain, gradient or
textured background with clutter (lines, frames, the edge of a plate or wall), in a
colour that contrasts with the background by a random, sometimes low, amount; the house
number is randomly scaled, stretched and tilted, then the image is blurred and saved as a
JPEG of random quality. Fonts are split by family like the printed domain's, textures by
source like the textured domain's, so test images use neither a train font nor a train
texture. Images are drawn at 64x64 and reduced to 32x32, so edges are anti-aliased.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cdkd_bench import DomainData

from .embedded_common import SIZE, as_domain, balanced_labels
from .embedded_fonts import TEST_FAMILIES, TRAIN_FAMILIES, family_files, render_glyphs, sample_fonts
from .embedded_textures import TEST_TEXTURES, TRAIN_TEXTURES, load_sources, random_crops

TRAIN_PER_CLASS = 500
TEST_PER_CLASS = 200
CANVAS = 2 * SIZE
BACKGROUNDS = ("plain", "gradient", "texture")
BACKGROUND_ODDS = (0.5, 0.3, 0.2)
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class StreetSplit:
    """Per image of one split: the font file of its centre digit."""

    fonts: np.ndarray


def _luma(colour: np.ndarray) -> float:
    return float(colour @ _LUMA)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A random colour, often muted: painted walls, plates and numbers are seldom pure hues."""
    rgb = rng.uniform(0, 255, 3)
    return rgb.mean() + (rgb - rgb.mean()) * rng.uniform(0.2, 1.0)


def _contrasting(background: np.ndarray, contrast: float, rng: np.random.Generator) -> tuple[int, int, int]:
    """A random-hued colour whose brightness differs from ``background``'s by about ``contrast``."""
    base = _luma(background)
    room_up, room_down = 255 - base, base
    if room_up >= contrast and room_down >= contrast:
        target = base + contrast * rng.choice([-1, 1])
    else:  # not enough room on one side: go the roomier way, as far as it allows
        target = base + min(contrast, room_up) if room_up > room_down else base - min(contrast, room_down)
    colour = _random_colour(rng)
    for _ in range(4):  # shift to the target brightness; clipping a channel needs another pass
        colour = np.clip(colour + (target - _luma(colour)), 0, 255)
    red, green, blue = (int(round(c)) for c in colour)
    return red, green, blue


_RAMP_Y, _RAMP_X = np.mgrid[0:CANVAS, 0:CANVAS] / (CANVAS - 1) - 0.5  # gradient coordinates, made once


def _background(kind: str, crop: np.ndarray | None, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    """A plain colour, a gentle two-colour gradient or a subdued texture crop, and its mean colour."""
    colour = _random_colour(rng)
    if kind == "plain":
        return Image.new("RGB", (CANVAS, CANVAS), tuple(int(round(c)) for c in colour)), colour
    if kind == "gradient":
        other = np.clip(colour + rng.uniform(-70, 70, 3), 0, 255)
        angle = rng.uniform(0, 2 * np.pi)
        t = np.clip(0.5 + _RAMP_X * np.cos(angle) + _RAMP_Y * np.sin(angle), 0, 1)[..., None]
        pixels = colour + (other - colour) * t
    else:
        assert crop is not None
        # Flatten the texture toward its mean: busy enough to be a texture, calm enough to read a digit on.
        mean = crop.reshape(-1, 3).mean(axis=0)
        pixels = mean + (crop - mean) * rng.uniform(0.25, 0.6)
    return Image.fromarray(pixels.round().astype(np.uint8)), pixels.reshape(-1, 3).mean(axis=0)


def _clutter(image: Image.Image, background: np.ndarray, rng: np.random.Generator) -> None:
    """Up to four lines, frames or plate edges in shades of the background, drawn behind the digits."""
    draw = ImageDraw.Draw(image)
    for _ in range(rng.choice(5, p=[0.25, 0.3, 0.25, 0.12, 0.08])):
        shade = tuple(int(c) for c in np.clip(background + rng.uniform(-90, 90, 3), 0, 255))
        kind = rng.integers(3)
        if kind == 0:  # a wire, a crack, a railing
            points = rng.uniform(-8, CANVAS + 8, 4).tolist()
            draw.line(points, fill=shade, width=int(rng.integers(1, 5)))
        elif kind == 1:  # the frame of a plate or window, usually partly out of view
            x0, y0 = rng.uniform(-20, CANVAS / 2, 2)
            x1, y1 = rng.uniform(CANVAS / 2, CANVAS + 20, 2)
            draw.rectangle((x0, y0, x1, y1), outline=shade, width=int(rng.integers(1, 4)))
        else:  # the edge of the plate or wall: a slab of another colour along one side
            depth = rng.uniform(2, 14)
            side = rng.integers(4)
            slab = [(0, 0), (depth + rng.uniform(-4, 4), 0), (depth + rng.uniform(-4, 4), CANVAS), (0, CANVAS)]
            flipped = [(CANVAS - x, y) if side % 2 else (x, y) for x, y in slab]
            oriented = [(y, x) for x, y in flipped] if side >= 2 else flipped
            draw.polygon(oriented, fill=shade)


@dataclass(frozen=True)
class _Number:
    """The layout of one house number: centre digit, neighbours, size, stretch and tilt."""

    glyphs: list[Image.Image | None]  # left neighbour, centre digit, right neighbour (None: absent)
    colours: list[tuple[int, int, int]]
    height: float  # of every digit, in canvas pixels
    stretch: float  # width / the font's own width
    gap: float  # between neighbouring digits, in canvas pixels
    tilt: float  # radians, about the centre digit's middle
    centre: tuple[float, float]  # where the centre digit's middle lands


def _draw_number(canvas: Image.Image, number: _Number) -> None:
    """Each digit mapped onto the canvas by one affine transform (scale, stretch, tilt, place), then painted.

    Mapping the font masks straight to canvas pixels avoids rotating a whole colour layer,
    which took longer than all the rest of an image's drawing.
    """
    glyphs = number.glyphs
    scales = [(number.height / g.height * number.stretch, number.height / g.height) if g else (0.0, 0.0) for g in glyphs]
    widths = [g.width * sx if g else 0.0 for g, (sx, _) in zip(glyphs, scales, strict=True)]
    # Middles along the number's baseline before the tilt: neighbours sit a gap away from the centre digit.
    offsets = [-(widths[1] + widths[0]) / 2 - number.gap, 0.0, (widths[1] + widths[2]) / 2 + number.gap]
    cos, sin = np.cos(number.tilt), np.sin(number.tilt)
    for glyph, (sx, sy), offset, colour in zip(glyphs, scales, offsets, number.colours, strict=True):
        if glyph is None:
            continue
        px, py = number.centre[0] + cos * offset, number.centre[1] + sin * offset
        # Canvas → glyph coordinates: undo the placement, the tilt, then the scale.
        a, b, d, e = cos / sx, sin / sx, -sin / sy, cos / sy
        data = (a, b, glyph.width / 2 - a * px - b * py, d, e, glyph.height / 2 - d * px - e * py)
        mask = glyph.transform(canvas.size, Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
        canvas.paste(colour, (0, 0), mask)


def _photograph(canvas: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """Reduce to 32x32, blur a little and save as a JPEG of random quality: a camera's and a codec's losses."""
    small = canvas.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    if rng.random() < 0.7:
        small = small.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.9))))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=int(rng.integers(20, 91)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB")).transpose(2, 0, 1)


def _street_image(
    glyph_sets: tuple[list[list[Image.Image]], list[list[Image.Image]]], font: int, digit: int, kind: str,
    crop: np.ndarray | None, other_fonts: np.ndarray, rng: np.random.Generator,
) -> np.ndarray:
    """One image: background, clutter, the house number around ``digit``, then the camera's losses."""
    canvas, mean = _background(kind, crop, rng)
    _clutter(canvas, mean, rng)
    faces = glyph_sets[int(rng.random() < 0.3)]  # regular or bold: one weight for the whole number
    # Usually clear, sometimes faint; a busy texture always gets a clearer digit.
    low = rng.random() < 0.2 and kind != "texture"
    contrast = rng.uniform(35, 60) if low else rng.uniform(70, 200)
    colour = _contrasting(mean, contrast, rng)

    def neighbour(index: int) -> tuple[Image.Image | None, tuple[int, int, int]]:
        if rng.random() > 0.75:  # a number's first or last digit has no neighbour on that side
            return None, colour
        same_font = rng.random() < 0.85
        glyph = faces[font if same_font else int(other_fonts[index])][int(rng.integers(10))]
        return glyph, colour if rng.random() < 0.85 else _contrasting(mean, rng.uniform(70, 200), rng)

    (left, left_colour), (right, right_colour) = neighbour(0), neighbour(1)
    height = rng.uniform(0.6, 0.85) * CANVAS
    _draw_number(canvas, _Number(
        glyphs=[left, faces[font][digit], right],
        colours=[left_colour, colour, right_colour],
        height=height,
        stretch=float(np.exp(rng.uniform(-0.25, 0.2))),
        gap=float(rng.uniform(0.04, 0.2) * height),
        tilt=float(np.radians(rng.uniform(-8, 8))),
        centre=(CANVAS / 2 + float(rng.uniform(-3, 3)), CANVAS / 2 + float(rng.uniform(-3, 3))),
    ))
    return _photograph(canvas, rng)


def _split(families: tuple[str, ...], textures: tuple[str, ...], per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, labels and centre-digit font indices of one split, from ``families`` and ``textures`` only."""
    rng = np.random.default_rng(seed)
    regular = render_glyphs(family_files(families))
    bold = [[g.filter(ImageFilter.MaxFilter(3)) for g in digits] for digits in regular]
    labels = balanced_labels(per_class, rng)
    n = len(labels)
    fonts = sample_fonts(families, n, rng)
    other_fonts = sample_fonts(families, 2 * n, rng).reshape(n, 2)  # for neighbours in another font
    kinds = rng.choice(len(BACKGROUNDS), size=n, p=BACKGROUND_ODDS)
    textured = np.flatnonzero(kinds == BACKGROUNDS.index("texture"))
    crops, _ = random_crops(load_sources(textures), len(textured), CANVAS, rng)
    crop_of = dict(zip(textured.tolist(), crops, strict=True))
    images = np.stack([
        _street_image((regular, bold), int(fonts[i]), int(labels[i]), BACKGROUNDS[kinds[i]], crop_of.get(i), other_fonts[i], rng)
        for i in range(n)
    ])
    return images, labels, fonts


def street_with_metadata() -> tuple[DomainData, StreetSplit, StreetSplit]:
    """The street domain and, per split, the font of each image's centre digit."""
    train_x, train_y, train_fonts = _split(TRAIN_FAMILIES, TRAIN_TEXTURES, TRAIN_PER_CLASS, seed=5)
    test_x, test_y, test_fonts = _split(TEST_FAMILIES, TEST_TEXTURES, TEST_PER_CLASS, seed=6)
    # One font file's rendering of one centre digit is one item, as in the printed domain.
    domain = as_domain(train_x, train_y, test_x, test_y, train_fonts * 10 + train_y)
    meta = (StreetSplit(np.array(family_files(TRAIN_FAMILIES))[train_fonts]),
            StreetSplit(np.array(family_files(TEST_FAMILIES))[test_fonts]))
    return domain, *meta


def street() -> DomainData:
    return street_with_metadata()[0]
