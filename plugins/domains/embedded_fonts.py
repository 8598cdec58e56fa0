"""The font families matplotlib ships, split into the families printed digits train on and those they are tested on.

A test digit is always drawn in a family no train digit was drawn in, so the printed and
street domains measure generalisation to an unseen typeface, not recall of a seen glyph.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .embedded_common import read_shipped

# Only fonts whose digit code points draw digits: matplotlib also ships symbol fonts
# (cmex, cmsy, cmmi, STIXNonUni, the STIXSiz* size variants), a fallback font of boxes
# (LastResort) and "Display" cuts that differ from their base font only in hinting.
FAMILIES: dict[str, tuple[str, ...]] = {
    "DejaVu Sans": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf"),
    "DejaVu Sans Mono": ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf"),
    "DejaVu Serif": ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf"),
    "STIX General": ("STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf"),
    "Computer Modern Roman": ("cmr10.ttf", "cmb10.ttf", "cmti10.ttf"),
    "Computer Modern Sans": ("cmss10.ttf",),
    "Computer Modern Typewriter": ("cmtt10.ttf",),
}
# Each side holds a sans, a serif and a monospaced (typewriter) family, so train and test
# differ in typeface, not in kind of typeface. The two closest pairs are split across
# sides on purpose (DejaVu Sans vs its Mono, DejaVu Serif vs STIX) so the test is fair
# rather than trivial or hopeless; train gets the extra serif family because Computer
# Modern Roman's italic digits are the most "handwritten-like" of the lot.
TRAIN_FAMILIES = ("DejaVu Sans", "DejaVu Serif", "Computer Modern Roman", "Computer Modern Typewriter")
TEST_FAMILIES = ("STIX General", "DejaVu Sans Mono", "Computer Modern Sans")
RENDER_SIZE = 64  # points; digits come out about 45 pixels tall, ample for 32x32 images


def font_folder() -> Path:
    """Where matplotlib keeps its TrueType fonts (tests point this at a temporary folder)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def family_files(families: tuple[str, ...]) -> list[str]:
    """The font file names of ``families``, in a fixed order."""
    return [name for family in families for name in FAMILIES[family]]


def sample_fonts(families: tuple[str, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices into ``family_files(families)``: a family uniformly, then one of its files.

    Drawing families (not files) evenly keeps a one-file family such as Computer Modern
    Sans from being swamped by the four-file families.
    """
    starts = np.cumsum([0, *(len(FAMILIES[f]) for f in families)])
    family = rng.integers(len(families), size=n)
    sizes = np.diff(starts)[family]
    return (starts[family] + (rng.random(n) * sizes).astype(np.int64)).astype(np.int64)


def _draw(font: ImageFont.FreeTypeFont, digit: str) -> Image.Image:
    canvas = Image.new("L", (2 * RENDER_SIZE, 2 * RENDER_SIZE))
    ImageDraw.Draw(canvas).text((RENDER_SIZE, RENDER_SIZE), digit, fill=255, font=font, anchor="mm")
    box = canvas.getbbox()
    return canvas.crop(box) if box else canvas.crop((0, 0, 0, 0))


def _digits_of(path: Path) -> list[Image.Image]:
    """The ten digits of one font file; raises what a damaged file raises (see ``read_shipped``)."""
    # From bytes, not a file name: given a name it cannot open, PIL quietly tries the system's
    # font folders, and a missing file would come back as some other installed font.
    font = ImageFont.truetype(io.BytesIO(path.read_bytes()), RENDER_SIZE)
    digits = [_draw(font, str(d)) for d in range(10)]
    # A truncated file can load yet draw blanks: treat it as unreadable, like one that fails to open.
    if any(g.width == 0 for g in digits) or len({g.tobytes() for g in digits}) < 10:
        raise ValueError(f"{path.name} draws no ten distinct digits")
    return digits


def render_glyphs(files: list[str]) -> list[list[Image.Image]]:
    """Per font file, its ten digits as tight-cropped greyscale masks (255 = ink)."""
    folder = font_folder()
    return [read_shipped(folder / name, "matplotlib", _digits_of) for name in files]
