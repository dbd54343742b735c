"""The image utility tools: `image-resize`, `image-crop`, `image-pad` (to an aspect ratio),
`image-convert` (PNG, JPEG, WebP) and `contact-sheet` (several images in a grid), with Pillow.

They are local tools (localtools/base.py): kind "image", no workflow, run on the control plane's
side ("control" pool) without a GPU, priced per run (`SWARMSTATION_IMAGE_TOOL_CREDITS`). Each
has one `image` output port.

Bounds, because the bytes come from users and the control plane must not fall over:
- an input's size is read from its header (`Image.open` is lazy) and refused over
  `ctx.max_pixels` before any pixel is decoded; an output's size is computed and refused over it
  before it is allocated. That per-call check is the bound; Pillow's process-wide
  decompression-bomb guard (`Image.MAX_IMAGE_PIXELS`) stays as a backstop and its error is
  turned into the same refusal (setting the global per call would race between threads);
- only common raster formats are opened (PNG, JPEG, WebP, GIF, BMP, TIFF);
- `ctx.deadline_seconds` is checked between stages (open, decode, transform, encode, and per
  image of a contact sheet); the executor bounds the whole run too.

Every refusal is a LocalToolError that is not retryable (the same image fails the same way) with
a message naming the input. Images are turned upright by their EXIF orientation before anything
else, so a crop's coordinates are those a viewer shows. Output is PNG unless `image-convert` is
asked for another format.
"""

from __future__ import annotations

import io
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

from swarmstation.domain.tools import LOCAL_POOL, InputSpec, OutputSpec, ToolSpec
from swarmstation.localtools.base import (
    LocalContext,
    LocalFile,
    LocalImage,
    LocalResult,
    LocalTool,
    LocalToolError,
)

if TYPE_CHECKING:
    from swarmstation.config import Settings

__all__ = [
    "IMAGE_TOOLS",
    "ContactSheet",
    "ImageConvert",
    "ImageCrop",
    "ImagePad",
    "ImageResize",
    "parse_aspect",
    "parse_color",
]

#: The formats an input may be in: what people upload and what ComfyUI writes.
OPEN_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
#: The formats `image-convert` writes: name → (Pillow format, content type, extension).
WRITE_FORMATS: dict[str, tuple[str, str, str]] = {
    "png": ("PNG", "image/png", "png"),
    "jpeg": ("JPEG", "image/jpeg", "jpg"),
    "webp": ("WEBP", "image/webp", "webp"),
}
#: The longest side a size input may ask for (the pixel bound applies as well).
MAX_SIDE = 16_384
DEFAULT_QUALITY = 90
DEFAULT_CELL = 256
MAX_SHEET_IMAGES = 64
#: Modes kept as they are; anything else (palette, 1-bit, 16-bit, CMYK, ...) becomes RGB or RGBA.
KEPT_MODES = ("L", "LA", "RGB", "RGBA")
ASPECT_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*[:x/]\s*(\d+(?:\.\d+)?)\s*")
MAX_ASPECT = 100.0


class _Deadline:
    """`check` refuses once the run has taken longer than the context allows."""

    def __init__(self, ctx: LocalContext, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.seconds = ctx.deadline_seconds
        self.ends = clock() + ctx.deadline_seconds

    def check(self, stage: str) -> None:
        if self.clock() > self.ends:
            raise LocalToolError(f"took longer than the {self.seconds:g} s a local tool may take ({stage})")


def _one(images: dict[str, list[LocalImage]], name: str) -> LocalImage:
    given = images.get(name) or []
    if len(given) != 1:
        raise LocalToolError(f"{name}: one image is needed, got {len(given)}")
    return given[0]


def _check_pixels(what: str, width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise LocalToolError(f"{what}: {width}x{height} is not a size an image can have")
    if width * height > max_pixels:
        raise LocalToolError(
            f"{what}: {width}x{height} is {width * height:,} pixels, more than the {max_pixels:,} allowed"
        )


def open_image(
    image: LocalImage,
    name: str,
    ctx: LocalContext,
    deadline: _Deadline,
    *,
    draft: tuple[int, int] | None = None,
) -> Image.Image:
    """The image, upright (EXIF orientation applied) and in a mode the tools handle (L, LA, RGB,
    RGBA). The size is checked from the header before the pixels are decoded. `draft`: the
    caller needs no more than this size, so a JPEG may be decoded at a fraction of its size."""
    try:
        img = Image.open(io.BytesIO(image.data), formats=OPEN_FORMATS)
    except Image.DecompressionBombError:  # Pillow's backstop: twice Image.MAX_IMAGE_PIXELS
        limit = min(ctx.max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or ctx.max_pixels))
        raise LocalToolError(f"{name}: the image has more pixels than the {limit:,} allowed") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise LocalToolError(
            f"{name}: not an image in a supported format ({', '.join(f.lower() for f in OPEN_FORMATS)})"
        ) from None
    _check_pixels(name, img.width, img.height, ctx.max_pixels)
    deadline.check(f"opening {name}")
    try:
        if draft is not None and img.format == "JPEG":
            img.draft(img.mode, draft)
        img.load()
        upright = ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError):  # truncated or corrupt pixel data
        raise LocalToolError(f"{name}: the image data is damaged and cannot be decoded") from None
    deadline.check(f"decoding {name}")
    return normalise_mode(upright)


def normalise_mode(img: Image.Image) -> Image.Image:
    if img.mode in KEPT_MODES:
        return img
    has_alpha = img.mode in ("PA", "RGBa", "La") or "transparency" in img.info or "A" in img.getbands()
    if img.mode == "1":
        return img.convert("L")
    return img.convert("RGBA" if has_alpha else "RGB")


def _flatten(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """No alpha (for JPEG): transparent parts over `background`."""
    if img.mode in ("RGB", "L"):
        return img
    rgba = img.convert("RGBA")
    base = Image.new("RGB", rgba.size, background)
    base.paste(rgba, mask=rgba.getchannel("A"))
    return base


def encode(img: Image.Image, fmt: str, quality: int, deadline: _Deadline, *, stem: str) -> LocalFile:
    """`img` written as `fmt` (a WRITE_FORMATS key) into a file of the `image` port."""
    pil_format, content_type, ext = WRITE_FORMATS[fmt]
    out = io.BytesIO()
    if pil_format == "JPEG":
        _flatten(img).save(out, "JPEG", quality=quality, optimize=True)
    elif pil_format == "WEBP":
        img.save(out, "WEBP", quality=quality)
    else:
        img.save(out, "PNG")
    deadline.check("encoding the result")
    return LocalFile(port="image", filename=f"{stem}.{ext}", content_type=content_type, data=out.getvalue())


def _int(inputs: dict[str, Any], name: str, default: int | None, lo: int, hi: int) -> int | None:
    """A whole number input (checked by bind_inputs already; checked again because `run` is also
    called directly)."""
    value = inputs.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise LocalToolError(f"{name}: must be a whole number")
    number = int(value)
    if not lo <= number <= hi:
        raise LocalToolError(f"{name}: must be between {lo} and {hi}, not {number}")
    return number


def parse_aspect(text: str) -> float:
    """ "16:9" (also "16x9", "16/9", "1.91:1") → width / height. Raises LocalToolError."""
    match = ASPECT_RE.fullmatch(text or "")
    if match is None:
        raise LocalToolError(f"aspect: {text!r} is not a ratio like 16:9")
    w, h = float(match.group(1)), float(match.group(2))
    if w <= 0 or h <= 0:
        raise LocalToolError(f"aspect: both sides of {text!r} must be more than 0")
    ratio = w / h
    if not 1 / MAX_ASPECT <= ratio <= MAX_ASPECT:
        raise LocalToolError(f"aspect: {text!r} is more extreme than {MAX_ASPECT:g}:1")
    return ratio


def parse_color(text: str) -> tuple[int, int, int, int]:
    """ "#rgb", "#rrggbb", "#rrggbbaa" or a CSS colour name → RGBA. Raises LocalToolError."""
    try:
        rgba = ImageColor.getcolor(str(text).strip(), "RGBA")
    except ValueError:
        raise LocalToolError(f"color: {text!r} is not a colour like #000000") from None
    assert isinstance(rgba, tuple)
    return (rgba[0], rgba[1], rgba[2], rgba[3])


def _quality(inputs: dict[str, Any]) -> int:
    return _int(inputs, "quality", DEFAULT_QUALITY, 1, 100) or DEFAULT_QUALITY


# -- specs -------------------------------------------------------------------------------------


def _spec(slug: str, name: str, description: str, inputs: tuple[InputSpec, ...]) -> ToolSpec:
    return ToolSpec(
        slug=slug,
        name=name,
        description=description,
        category="image-utility",
        base_model="other",
        workflow={},
        inputs=inputs,
        pool=LOCAL_POOL,
        accepts_loras=False,
        kind="image",
        outputs=(OutputSpec(name="image", type="image", description="The resulting image"),),
    )


def _image_input(description: str) -> InputSpec:
    return InputSpec("image", "image", (), required=True, description=description)


def _side(name: str, description: str, *, required: bool = False, minimum: int = 1) -> InputSpec:
    return InputSpec(
        name, "integer", (), required=required, minimum=minimum, maximum=MAX_SIDE, description=description
    )


@cache
def resize_spec() -> ToolSpec:
    return _spec(
        "image-resize",
        "Resize image",
        "Scales an image to a width and/or height: contain (fits inside, aspect kept), cover (fills "
        "the box, the overflow cropped from the centre) or stretch (exactly that size).",
        (
            _image_input("The image to resize"),
            _side("width", "The width in pixels (alone: the height follows the aspect ratio)"),
            _side("height", "The height in pixels (alone: the width follows the aspect ratio)"),
            InputSpec(
                "fit",
                "string",
                (),
                default="contain",
                choices=("contain", "cover", "stretch"),
                description="How the image fits a width and height given together",
            ),
        ),
    )


@cache
def crop_spec() -> ToolSpec:
    return _spec(
        "image-crop",
        "Crop image",
        "Cuts a rectangle out of an image (coordinates from the top left, as the image is shown).",
        (
            _image_input("The image to crop"),
            _side("x", "The left edge of the rectangle, in pixels", minimum=0),
            _side("y", "The top edge of the rectangle, in pixels", minimum=0),
            _side("width", "The rectangle's width in pixels", required=True),
            _side("height", "The rectangle's height in pixels", required=True),
        ),
    )


@cache
def pad_spec() -> ToolSpec:
    return _spec(
        "image-pad",
        "Pad image to an aspect ratio",
        "Adds borders around an image (centred) so that it has the given aspect ratio, e.g. 16:9.",
        (
            _image_input("The image to pad"),
            InputSpec(
                "aspect",
                "string",
                (),
                required=True,
                max_length=32,
                description="The aspect ratio to reach, width:height (16:9, 1:1, 4:5)",
            ),
            InputSpec(
                "color",
                "string",
                (),
                default="#000000",
                max_length=32,
                description="The border colour (#rrggbb, or #rrggbbaa for transparency)",
            ),
        ),
    )


@cache
def convert_spec() -> ToolSpec:
    return _spec(
        "image-convert",
        "Convert image format",
        "Re-encodes an image as PNG, JPEG (transparency flattened onto white) or WebP.",
        (
            _image_input("The image to convert"),
            InputSpec(
                "format",
                "string",
                (),
                default="png",
                choices=tuple(WRITE_FORMATS),
                description="The format to write",
            ),
            InputSpec(
                "quality",
                "integer",
                (),
                minimum=1,
                maximum=100,
                description=f"JPEG and WebP quality, 1 to 100 (default {DEFAULT_QUALITY}); PNG ignores it",
            ),
        ),
    )


@cache
def contact_sheet_spec() -> ToolSpec:
    return _spec(
        "contact-sheet",
        "Contact sheet",
        "Lays several images out in a grid of square cells, each image scaled to fit its cell.",
        (
            InputSpec(
                "images",
                "image",
                (),
                required=True,
                many=True,
                max_items=MAX_SHEET_IMAGES,
                description="The images, in the order they are laid out (left to right, top to bottom)",
            ),
            InputSpec(
                "columns",
                "integer",
                (),
                minimum=1,
                maximum=MAX_SHEET_IMAGES,
                description="How many images a row holds (default: a square-ish grid)",
            ),
            InputSpec(
                "cell",
                "integer",
                (),
                minimum=16,
                maximum=2048,
                description=f"The side of each square cell in pixels (default {DEFAULT_CELL})",
            ),
        ),
    )


# -- tools -------------------------------------------------------------------------------------


class _ImageTool:
    """What the image tools share: always available, priced per run (no tokens)."""

    def unavailable(self, settings: Settings) -> str | None:
        return None

    def max_tokens(self, settings: Settings) -> int:
        return 0


def resize_size(size: tuple[int, int], width: int | None, height: int | None, fit: str) -> tuple[int, int]:
    """The size `image-resize` produces (before cover's crop, cover's box is the result)."""
    w, h = size
    if width is None and height is None:
        raise LocalToolError("width, height: give a width, a height or both")
    if width is None:
        assert height is not None
        return max(1, round(w * height / h)), height
    if height is None:
        return width, max(1, round(h * width / w))
    if fit == "stretch" or fit == "cover":
        return width, height
    scale = min(width / w, height / h)
    return max(1, round(w * scale)), max(1, round(h * scale))


@dataclass(frozen=True)
class ImageResize(_ImageTool):
    """`image-resize`: image, width?, height?, fit → image."""

    @property
    def spec(self) -> ToolSpec:
        return resize_spec()

    def run(
        self, ctx: LocalContext, inputs: dict[str, Any], images: dict[str, list[LocalImage]]
    ) -> LocalResult:
        deadline = _Deadline(ctx)
        width = _int(inputs, "width", None, 1, MAX_SIDE)
        height = _int(inputs, "height", None, 1, MAX_SIDE)
        fit = str(inputs.get("fit") or "contain")
        if fit not in ("contain", "cover", "stretch"):
            raise LocalToolError(f"fit: must be contain, cover or stretch, not {fit!r}")
        img = open_image(_one(images, "image"), "image", ctx, deadline)
        target = resize_size(img.size, width, height, fit)
        _check_pixels("the resized image", *target, ctx.max_pixels)
        if fit == "cover" and width is not None and height is not None:
            out = ImageOps.fit(img, target, method=Image.Resampling.LANCZOS)
        else:
            out = img.resize(target, Image.Resampling.LANCZOS)
        deadline.check("resizing")
        return LocalResult(files=[encode(out, "png", DEFAULT_QUALITY, deadline, stem="resized")])


@dataclass(frozen=True)
class ImageCrop(_ImageTool):
    """`image-crop`: image, x, y, width, height → image (the rectangle must lie in the image)."""

    @property
    def spec(self) -> ToolSpec:
        return crop_spec()

    def run(
        self, ctx: LocalContext, inputs: dict[str, Any], images: dict[str, list[LocalImage]]
    ) -> LocalResult:
        deadline = _Deadline(ctx)
        x = _int(inputs, "x", 0, 0, MAX_SIDE) or 0
        y = _int(inputs, "y", 0, 0, MAX_SIDE) or 0
        width = _int(inputs, "width", None, 1, MAX_SIDE)
        height = _int(inputs, "height", None, 1, MAX_SIDE)
        if width is None or height is None:
            raise LocalToolError("width, height: the rectangle's width and height are needed")
        img = open_image(_one(images, "image"), "image", ctx, deadline)
        if x + width > img.width:
            raise LocalToolError(
                f"x, width: the rectangle ends at x={x + width}, past the image's width ({img.width})"
            )
        if y + height > img.height:
            raise LocalToolError(
                f"y, height: the rectangle ends at y={y + height}, past the image's height ({img.height})"
            )
        out = img.crop((x, y, x + width, y + height))
        deadline.check("cropping")
        return LocalResult(files=[encode(out, "png", DEFAULT_QUALITY, deadline, stem="cropped")])


def pad_size(size: tuple[int, int], ratio: float) -> tuple[int, int]:
    """The smallest canvas of aspect `ratio` (width / height) that holds an image of `size`."""
    w, h = size
    if w / h < ratio:
        return max(w, math.ceil(h * ratio - 1e-9)), h
    return w, max(h, math.ceil(w / ratio - 1e-9))


@dataclass(frozen=True)
class ImagePad(_ImageTool):
    """`image-pad`: image, aspect "W:H", color → image (centred on a canvas of that aspect)."""

    @property
    def spec(self) -> ToolSpec:
        return pad_spec()

    def run(
        self, ctx: LocalContext, inputs: dict[str, Any], images: dict[str, list[LocalImage]]
    ) -> LocalResult:
        deadline = _Deadline(ctx)
        ratio = parse_aspect(str(inputs.get("aspect") or ""))
        color = parse_color(str(inputs.get("color") or "#000000"))
        img = open_image(_one(images, "image"), "image", ctx, deadline)
        canvas_size = pad_size(img.size, ratio)
        _check_pixels("the padded image", *canvas_size, ctx.max_pixels)
        transparent = color[3] < 255 or img.mode in ("LA", "RGBA")
        mode = "RGBA" if transparent else "RGB"
        canvas = Image.new(mode, canvas_size, color if mode == "RGBA" else color[:3])
        left = (canvas_size[0] - img.width) // 2
        top = (canvas_size[1] - img.height) // 2
        canvas.paste(img.convert(mode), (left, top))
        deadline.check("padding")
        return LocalResult(files=[encode(canvas, "png", DEFAULT_QUALITY, deadline, stem="padded")])


@dataclass(frozen=True)
class ImageConvert(_ImageTool):
    """`image-convert`: image, format png|jpeg|webp, quality? → image."""

    @property
    def spec(self) -> ToolSpec:
        return convert_spec()

    def run(
        self, ctx: LocalContext, inputs: dict[str, Any], images: dict[str, list[LocalImage]]
    ) -> LocalResult:
        deadline = _Deadline(ctx)
        fmt = str(inputs.get("format") or "png").lower()
        if fmt not in WRITE_FORMATS:
            raise LocalToolError(f"format: must be one of {', '.join(WRITE_FORMATS)}, not {fmt!r}")
        quality = _quality(inputs)
        img = open_image(_one(images, "image"), "image", ctx, deadline)
        return LocalResult(files=[encode(img, fmt, quality, deadline, stem="converted")])


def sheet_layout(count: int, columns: int | None) -> tuple[int, int]:
    """(columns, rows) for `count` images: default ceil(sqrt(count)) columns, never more columns
    than images."""
    cols = min(count, columns) if columns else math.ceil(math.sqrt(count))
    return cols, math.ceil(count / cols)


@dataclass(frozen=True)
class ContactSheet(_ImageTool):
    """`contact-sheet`: images (many), columns?, cell? → one image, a grid of letterboxed cells."""

    @property
    def spec(self) -> ToolSpec:
        return contact_sheet_spec()

    def run(
        self, ctx: LocalContext, inputs: dict[str, Any], images: dict[str, list[LocalImage]]
    ) -> LocalResult:
        deadline = _Deadline(ctx)
        given = images.get("images") or []
        if not given:
            raise LocalToolError("images: at least one image is needed")
        if len(given) > MAX_SHEET_IMAGES:
            raise LocalToolError(f"images: at most {MAX_SHEET_IMAGES} images, not {len(given)}")
        columns = _int(inputs, "columns", None, 1, MAX_SHEET_IMAGES)
        cell = _int(inputs, "cell", DEFAULT_CELL, 16, 2048) or DEFAULT_CELL
        cols, rows = sheet_layout(len(given), columns)
        _check_pixels("the contact sheet", cols * cell, rows * cell, ctx.max_pixels)
        sheet = Image.new("RGB", (cols * cell, rows * cell), (0, 0, 0))
        for n, image in enumerate(given):
            name = f"images[{n}]"
            img = open_image(image, name, ctx, deadline, draft=(cell, cell))
            thumb = ImageOps.contain(img, (cell, cell), method=Image.Resampling.LANCZOS).convert("RGBA")
            left = (n % cols) * cell + (cell - thumb.width) // 2
            top = (n // cols) * cell + (cell - thumb.height) // 2
            sheet.paste(thumb, (left, top), mask=thumb.getchannel("A"))
            img.close()
            deadline.check(f"placing {name}")
        return LocalResult(files=[encode(sheet, "png", DEFAULT_QUALITY, deadline, stem="contact-sheet")])


IMAGE_TOOLS: list[LocalTool] = [ImageResize(), ImageCrop(), ImagePad(), ImageConvert(), ContactSheet()]
