"""The image utility tools on small images made here: sizes, modes (RGBA, P, L), EXIF
orientation, formats, the pixel bound (refused from the header, before decoding), the deadline,
and bad numbers refused with messages naming the input."""

from __future__ import annotations

import io
import struct
import time
import zlib
from typing import Any

import pytest
from PIL import Image

from swarmstation.config import Settings
from swarmstation.domain.tools import bind_inputs, validate_tool
from swarmstation.domain.tools.spec import ToolInputError
from swarmstation.localtools import images as tools
from swarmstation.localtools.base import LocalContext, LocalImage, LocalResult, LocalToolError
from swarmstation.localtools.registry import local_tool, local_tools, unavailable_reason

SETTINGS = Settings()


def ctx(max_pixels: int = 4_000_000, deadline: float = 30.0) -> LocalContext:
    return LocalContext(settings=SETTINGS, deadline_seconds=deadline, max_pixels=max_pixels)


def encoded(img: Image.Image, fmt: str = "PNG", **params: Any) -> LocalImage:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return LocalImage(out.getvalue(), f"image/{fmt.lower()}")


def solid(
    size: tuple[int, int], mode: str = "RGB", color: Any = (200, 30, 30), fmt: str = "PNG"
) -> LocalImage:
    return encoded(Image.new(mode, size, color), fmt)


def split(size: tuple[int, int]) -> Image.Image:
    """Left half red, right half blue: where the pixels went shows what a tool did."""
    img = Image.new("RGB", size, (255, 0, 0))
    img.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return img


def run(slug: str, inputs: dict[str, Any], images: dict[str, list[LocalImage]], **kw: Any) -> LocalResult:
    tool = local_tool(slug)
    assert tool is not None
    return tool.run(ctx(**kw), inputs, images)


def only(result: LocalResult) -> Image.Image:
    assert result.values == {} and result.usage == {}
    [file] = result.files
    assert file.port == "image"
    img = Image.open(io.BytesIO(file.data))
    assert (img.format or "").lower() in file.content_type
    return img


# -- the registry and the specs ------------------------------------------------------------------


def test_the_registry_holds_every_contract_slug_once() -> None:
    slugs = set(local_tools())
    assert {"image-resize", "image-crop", "image-pad", "image-convert", "contact-sheet"} <= slugs
    assert {"prompt-enhance", "caption"} <= slugs
    assert local_tool("sdxl-txt2img") is None
    assert unavailable_reason("sdxl-txt2img", SETTINGS) is None  # ComfyUI tools: the pool's business
    assert unavailable_reason("image-crop", SETTINGS) is None
    assert unavailable_reason("prompt-enhance", SETTINGS) is not None  # no LLM endpoint here


@pytest.mark.parametrize("tool", tools.IMAGE_TOOLS, ids=lambda t: t.spec.slug)
def test_image_tool_specs_are_valid_local_tools(tool: Any) -> None:
    spec = tool.spec
    validate_tool(spec)
    assert (spec.kind, spec.pool, spec.category, spec.base_model) == (
        "image",
        "control",
        "image-utility",
        "other",
    )
    assert [(o.name, o.type) for o in spec.outputs] == [("image", "image")]
    assert spec.workflow == {} and not spec.accepts_loras
    assert tool.max_tokens(SETTINGS) == 0 and tool.unavailable(SETTINGS) is None


def test_bind_inputs_checks_the_numbers_before_a_job_exists() -> None:
    crop = tools.crop_spec()
    with pytest.raises(ToolInputError) as err:
        bind_inputs(crop, {"image": "upload:a", "width": 0, "height": 5}, random_seed=1)
    assert err.value.field == "width"
    sheet = tools.contact_sheet_spec()
    bound = bind_inputs(sheet, {"images": ["upload:a", "upload:b"]}, random_seed=1)
    assert bound.input_images == {"images": ["upload:a", "upload:b"]}
    with pytest.raises(ToolInputError):
        bind_inputs(sheet, {"images": []}, random_seed=1)


# -- resize ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "size"),
    [
        ({"width": 50}, (50, 25)),
        ({"height": 10}, (20, 10)),
        ({"width": 30, "height": 30, "fit": "contain"}, (30, 15)),
        ({"width": 30, "height": 30, "fit": "cover"}, (30, 30)),
        ({"width": 30, "height": 30, "fit": "stretch"}, (30, 30)),
        ({"width": 400, "height": 100}, (200, 100)),
    ],
)
def test_resize_sizes(inputs: dict[str, Any], size: tuple[int, int]) -> None:
    out = only(run("image-resize", inputs, {"image": [encoded(split((100, 50)))]}))
    assert out.size == size and out.format == "PNG"


def test_resize_cover_crops_from_the_centre() -> None:
    out = only(
        run(
            "image-resize",
            {"width": 10, "height": 10, "fit": "cover"},
            {"image": [encoded(split((100, 50)))]},
        )
    )
    out = out.convert("RGB")
    assert out.getpixel((1, 5)) == pytest.approx((255, 0, 0), abs=8)
    assert out.getpixel((8, 5)) == pytest.approx((0, 0, 255), abs=8)


def test_resize_needs_a_width_or_a_height() -> None:
    with pytest.raises(LocalToolError, match="give a width, a height or both"):
        run("image-resize", {}, {"image": [solid((10, 10))]})


def test_resize_refuses_an_output_over_the_pixel_bound_before_making_it() -> None:
    with pytest.raises(LocalToolError, match="the resized image: 2000x1000 is 2,000,000 pixels") as err:
        run("image-resize", {"width": 2000}, {"image": [solid((20, 10))]}, max_pixels=1_000_000)
    assert not err.value.retryable


@pytest.mark.parametrize(
    ("mode", "color", "out_mode"),
    [
        ("RGBA", (10, 20, 30, 100), "RGBA"),
        ("L", 128, "L"),
        ("LA", (128, 40), "LA"),
        ("1", 1, "L"),
        ("CMYK", (0, 0, 0, 0), "RGB"),
    ],
)
def test_modes_are_kept_or_made_ordinary(mode: str, color: Any, out_mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = only(run("image-resize", {"width": 8}, {"image": [solid((16, 16), mode, color, fmt)]}))
    assert out.mode == out_mode and out.size == (8, 8)


def test_a_palette_image_with_transparency_keeps_it() -> None:
    img = Image.new("P", (8, 8), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(1, (4, 0, 8, 8))
    out = only(run("image-resize", {"width": 8}, {"image": [encoded(img, transparency=1)]}))
    assert out.mode == "RGBA"
    assert out.getpixel((1, 4)) == (255, 0, 0, 255)
    assert out.getchannel("A").getpixel((7, 4)) == 0


# -- crop ------------------------------------------------------------------------------------


def test_crop_takes_the_rectangle() -> None:
    out = only(
        run(
            "image-crop",
            {"x": 60, "y": 10, "width": 30, "height": 20},
            {"image": [encoded(split((100, 50)))]},
        )
    )
    assert out.size == (30, 20)
    assert out.convert("RGB").getcolors() == [(600, (0, 0, 255))]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            {"x": 80, "y": 0, "width": 30, "height": 10},
            r"x, width: the rectangle ends at x=110, past the image's width \(100\)",
        ),
        (
            {"x": 0, "y": 45, "width": 10, "height": 10},
            r"y, height: the rectangle ends at y=55, past the image's height \(50\)",
        ),
        ({"x": 0, "y": 0, "width": 10}, "the rectangle's width and height are needed"),
        ({"x": -1, "y": 0, "width": 10, "height": 10}, "x: must be between 0 and"),
        ({"x": 1.5, "y": 0, "width": 10, "height": 10}, "x: must be a whole number"),
        ({"x": True, "y": 0, "width": 10, "height": 10}, "x: must be a whole number"),
    ],
)
def test_a_bad_crop_is_refused(inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(LocalToolError, match=message) as err:
        run("image-crop", inputs, {"image": [encoded(split((100, 50)))]})
    assert not err.value.retryable


def test_exif_orientation_is_applied_before_cropping() -> None:
    """Stored 40x20 with orientation 6 (rotate 90° clockwise to view): a viewer sees 20x40, the
    stored left (red) half at the top."""
    img = split((40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    source = encoded(img, "JPEG", exif=exif.tobytes(), quality=95)
    out = only(run("image-crop", {"x": 0, "y": 0, "width": 20, "height": 40}, {"image": [source]})).convert(
        "RGB"
    )
    assert out.size == (20, 40)
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 200 and top[2] < 60  # red
    assert bottom[2] > 200 and bottom[0] < 60  # blue


# -- pad -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "aspect", "expected"),
    [
        ((100, 100), "16:9", (178, 100)),
        ((160, 90), "1:1", (160, 160)),
        ((90, 160), "16x9", (285, 160)),
        ((40, 30), "4/3", (40, 30)),
    ],
)
def test_pad_reaches_the_aspect(size: tuple[int, int], aspect: str, expected: tuple[int, int]) -> None:
    out = only(run("image-pad", {"aspect": aspect}, {"image": [solid(size)]}))
    assert out.size == expected


def test_pad_centres_the_image_on_the_colour() -> None:
    out = only(run("image-pad", {"aspect": "3:1", "color": "#00ff00"}, {"image": [solid((10, 10))]})).convert(
        "RGB"
    )
    assert out.size == (30, 10)
    assert out.getpixel((2, 5)) == (0, 255, 0) and out.getpixel((27, 5)) == (0, 255, 0)
    assert out.getpixel((15, 5)) == (200, 30, 30)


def test_pad_with_a_transparent_colour_makes_rgba() -> None:
    out = only(run("image-pad", {"aspect": "2:1", "color": "#00000000"}, {"image": [solid((10, 10))]}))
    assert out.mode == "RGBA" and out.getpixel((1, 1)) == (0, 0, 0, 0)
    assert out.getchannel("A").getpixel((10, 5)) == 255


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"aspect": "wide"}, "aspect: 'wide' is not a ratio like 16:9"),
        ({"aspect": "0:1"}, "both sides"),
        ({"aspect": "1000:1"}, "more extreme than 100:1"),
        ({"aspect": "1:1", "color": "notacolour"}, "color: 'notacolour' is not a colour"),
    ],
)
def test_bad_pad_inputs_are_refused(inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(LocalToolError, match=message):
        run("image-pad", inputs, {"image": [solid((10, 10))]})


def test_pad_refuses_a_canvas_over_the_pixel_bound() -> None:
    with pytest.raises(LocalToolError, match="the padded image"):
        run("image-pad", {"aspect": "100:1"}, {"image": [solid((10, 10))]}, max_pixels=5_000)


# -- convert ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "pil", "ext"), [("png", "PNG", "png"), ("jpeg", "JPEG", "jpg"), ("webp", "WEBP", "webp")]
)
def test_convert_writes_the_format(fmt: str, pil: str, ext: str) -> None:
    result = run("image-convert", {"format": fmt}, {"image": [solid((12, 8), "RGBA", (0, 0, 0, 0))]})
    [file] = result.files
    assert file.filename.endswith(f".{ext}") and file.content_type == f"image/{fmt}"
    img = Image.open(io.BytesIO(file.data))
    assert img.format == pil and img.size == (12, 8)
    if fmt == "jpeg":  # no alpha in JPEG: transparency flattened onto white
        assert img.convert("RGB").getpixel((5, 4)) == pytest.approx((255, 255, 255), abs=3)


def test_convert_quality_changes_the_size() -> None:
    noisy = Image.effect_noise((64, 64), 80).convert("RGB")
    source = encoded(noisy)
    low = run("image-convert", {"format": "jpeg", "quality": 5}, {"image": [source]}).files[0]
    high = run("image-convert", {"format": "jpeg", "quality": 95}, {"image": [source]}).files[0]
    assert len(low.data) < len(high.data)
    with pytest.raises(LocalToolError, match="quality: must be between 1 and 100"):
        run("image-convert", {"format": "jpeg", "quality": 0}, {"image": [source]})
    with pytest.raises(LocalToolError, match="format: must be one of png, jpeg, webp"):
        run("image-convert", {"format": "gif"}, {"image": [source]})


# -- contact sheet ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "columns", "grid"),
    [
        (1, None, (1, 1)),
        (4, None, (2, 2)),
        (5, None, (3, 2)),
        (10, None, (4, 3)),
        (5, 2, (2, 3)),
        (3, 8, (3, 1)),
    ],
)
def test_contact_sheet_grid(count: int, columns: int | None, grid: tuple[int, int]) -> None:
    images = [solid((20 + n, 10)) for n in range(count)]
    inputs: dict[str, Any] = {"cell": 16}
    if columns is not None:
        inputs["columns"] = columns
    out = only(run("contact-sheet", inputs, {"images": images}))
    assert out.size == (grid[0] * 16, grid[1] * 16)


def test_contact_sheet_letterboxes_each_image_in_order() -> None:
    red, blue = solid((40, 20), color=(255, 0, 0)), solid((20, 40), "RGBA", (0, 0, 255, 255))
    out = only(run("contact-sheet", {"cell": 20, "columns": 2}, {"images": [red, blue]})).convert("RGB")
    assert out.size == (40, 20)
    assert out.getpixel((10, 10)) == (255, 0, 0) and out.getpixel((10, 1)) == (0, 0, 0)  # bars above/below
    assert out.getpixel((30, 10)) == (0, 0, 255) and out.getpixel((21, 10)) == (0, 0, 0)  # bars left/right


def test_contact_sheet_bounds() -> None:
    with pytest.raises(LocalToolError, match="at least one image"):
        run("contact-sheet", {}, {"images": []})
    with pytest.raises(LocalToolError, match="the contact sheet: "):
        run("contact-sheet", {"cell": 2048}, {"images": [solid((4, 4))] * 4}, max_pixels=1_000_000)
    with pytest.raises(LocalToolError, match=r"images\[1\]: not an image"):
        run("contact-sheet", {}, {"images": [solid((4, 4)), LocalImage(b"nope", "image/png")]})


# -- what every tool refuses -------------------------------------------------------------------


def png_header(width: int, height: int) -> LocalImage:
    """A PNG that claims `width` x `height` and has no real pixel data: opening reads the size;
    decoding would fail as damaged (so a size refusal shows nothing was decoded)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    return LocalImage(data + chunk(b"IEND", b""), "image/png")


def test_an_input_over_the_pixel_bound_is_refused_from_its_header() -> None:
    with pytest.raises(LocalToolError, match="image: 2000x1000 is 2,000,000 pixels, more than the 1,000,000"):
        run("image-convert", {"format": "png"}, {"image": [png_header(2000, 1000)]}, max_pixels=1_000_000)
    with pytest.raises(LocalToolError, match="image: the image data is damaged"):  # within: decoded
        run("image-convert", {"format": "png"}, {"image": [png_header(2000, 1000)]}, max_pixels=2_000_000)


def test_a_decompression_bomb_is_refused_in_our_words() -> None:
    """40000x40000 (1.6 G pixels) trips Pillow's own guard in Image.open: the same refusal."""
    started = time.monotonic()
    with pytest.raises(LocalToolError) as err:
        run("image-resize", {"width": 4}, {"image": [png_header(40_000, 40_000)]}, max_pixels=10**12)
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    assert str(err.value) == f"image: the image has more pixels than the {limit:,} allowed"
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"%PDF-1.4 hello"],
    ids=["empty", "text", "broken-png", "pdf"],
)
def test_non_images_are_refused_plainly(data: bytes) -> None:
    with pytest.raises(LocalToolError) as err:
        run("image-resize", {"width": 4}, {"image": [LocalImage(data, "image/png")]})
    message = str(err.value)
    assert message.startswith("image: ") and "Error" not in message and "<" not in message


def test_a_truncated_image_is_refused_as_damaged() -> None:
    whole = encoded(Image.effect_noise((64, 64), 80).convert("RGB")).data
    with pytest.raises(LocalToolError, match=r"image: (the image data is damaged|not an image)"):
        run("image-resize", {"width": 4}, {"image": [LocalImage(whole[: len(whole) // 2], "image/png")]})


def test_one_image_is_needed_where_one_is_expected() -> None:
    with pytest.raises(LocalToolError, match="image: one image is needed, got 2"):
        run("image-convert", {}, {"image": [solid((4, 4)), solid((4, 4))]})


def test_the_deadline_is_checked_between_stages() -> None:
    with pytest.raises(LocalToolError, match="took longer than the 0 s a local tool may take"):
        run("image-resize", {"width": 4}, {"image": [solid((8, 8))]}, deadline=0.0)
