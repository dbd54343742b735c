"""Node classes, value types and file layout of the ComfyUI emulator.

Theory of operation: every node class mirrors the input spec of the real ComfyUI 0.3.64 class of
the same name (``nodes.py`` and ``comfy_extras``), so validation and ``/object_info`` look real.
The values flowing between nodes are small stand-ins: models are names, conditioning is text, a
latent remembers its size, seed and prompt text, and ``VAEDecode`` turns that into a Pillow image
that depends only on (seed, positive text, batch index). Images travel as lists of RGB
``PIL.Image`` objects (one per batch item) and are never mutated in place, because the executor
caches node outputs between prompts as ComfyUI does.

Model loaders read the real file: a ``.safetensors`` / ``.sft`` file must be a valid safetensors
file (``check_safetensors`` reads its header as ``safetensors.safe_open`` does and fails with the
same ``SafetensorError`` messages), and a file that vanished after validation raises the real
``FileNotFoundError`` message. Other extensions (``.ckpt``, ``.pth``, ...) are loaded whatever they
hold: real ComfyUI unpickles them with torch, which the emulator does not imitate.
``minimal_safetensors`` builds a tiny valid file for placeholders and tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mimetypes
import os
import random
import re
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol

from PIL import Image, ImageDraw, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

__all__ = [
    "FOLDER_KEYS",
    "MAX_RESOLUTION",
    "NODE_CLASSES",
    "SAFETENSORS_EXTENSIONS",
    "SUPPORTED_PT_EXTENSIONS",
    "Dirs",
    "ExecContext",
    "Node",
    "NodeResult",
    "SafetensorError",
    "check_safetensors",
    "minimal_safetensors",
    "render_image",
]

MAX_RESOLUTION = 16384
SUPPORTED_PT_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})

#: folder key -> (directories relative to base_dir/models, allowed extensions; empty = anything).
#: Order and contents follow folder_paths.py at 0.3.64; the first directory wins on name clashes.
_MODEL_FOLDERS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "checkpoints": (("checkpoints",), SUPPORTED_PT_EXTENSIONS),
    "configs": (("configs",), frozenset({".yaml"})),
    "loras": (("loras",), SUPPORTED_PT_EXTENSIONS),
    "vae": (("vae",), SUPPORTED_PT_EXTENSIONS),
    "text_encoders": (("text_encoders", "clip"), SUPPORTED_PT_EXTENSIONS),
    "diffusion_models": (("unet", "diffusion_models"), SUPPORTED_PT_EXTENSIONS),
    "clip_vision": (("clip_vision",), SUPPORTED_PT_EXTENSIONS),
    "style_models": (("style_models",), SUPPORTED_PT_EXTENSIONS),
    "embeddings": (("embeddings",), SUPPORTED_PT_EXTENSIONS),
    "diffusers": (("diffusers",), frozenset({"folder"})),
    "vae_approx": (("vae_approx",), SUPPORTED_PT_EXTENSIONS),
    "controlnet": (("controlnet", "t2i_adapter"), SUPPORTED_PT_EXTENSIONS),
    "gligen": (("gligen",), SUPPORTED_PT_EXTENSIONS),
    "upscale_models": (("upscale_models",), SUPPORTED_PT_EXTENSIONS),
    "custom_nodes": ((), frozenset()),
    "hypernetworks": (("hypernetworks",), SUPPORTED_PT_EXTENSIONS),
    "photomaker": (("photomaker",), SUPPORTED_PT_EXTENSIONS),
    "classifiers": (("classifiers",), frozenset({""})),
    "model_patches": (("model_patches",), SUPPORTED_PT_EXTENSIONS),
    "audio_encoders": (("audio_encoders",), SUPPORTED_PT_EXTENSIONS),
}
FOLDER_KEYS: tuple[str, ...] = tuple(_MODEL_FOLDERS)
_LEGACY_FOLDERS = {"unet": "diffusion_models", "clip": "text_encoders"}
#: main.py also searches <output>/<key> for these (CheckpointSave and friends write there).
_OUTPUT_MODEL_FOLDERS = {
    "checkpoints": "checkpoints",
    "text_encoders": "clip",
    "vae": "vae",
    "diffusion_models": "diffusion_models",
    "loras": "loras",
}


class SafetensorError(Exception):
    """Stand-in for the safetensors Rust error, so ``exception_type`` reads like the real one."""


SafetensorError.__module__ = "safetensors._safetensors_rust"
SafetensorError.__qualname__ = "SafetensorError"

#: safetensors' MAX_HEADER_SIZE: a larger header is refused before it is read.
SAFETENSORS_MAX_HEADER_BYTES = 100_000_000
SAFETENSORS_EXTENSIONS = frozenset({".safetensors", ".sft"})  # comfy.utils.load_torch_file's test
#: bits per element of each safetensors dtype (safetensors' Dtype::bitsize).
_SAFETENSORS_DTYPE_BITS = {
    **dict.fromkeys(("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0"), 8),
    **dict.fromkeys(("I16", "U16", "F16", "BF16"), 16),
    **dict.fromkeys(("I32", "U32", "F32"), 32),
    **dict.fromkeys(("I64", "U64", "F64"), 64),
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}


def _header_error(reason: str) -> SafetensorError:
    # The Python binding prefixes every header failure so; the reasons are the Rust Display texts.
    return SafetensorError(f"Error while deserializing header: {reason}")


def _tensor_entry(name: str, info: Any) -> tuple[int, int, int]:
    """(start, end, size in bits) of one header entry, or the error serde would give."""
    if not isinstance(info, dict):
        raise _header_error(f"invalid JSON in header: tensor `{name}` is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    dtype_bits = _SAFETENSORS_DTYPE_BITS.get(dtype) if isinstance(dtype, str) else None
    if dtype_bits is None:
        raise _header_error(f"invalid JSON in header: unknown dtype {dtype!r} for tensor `{name}`")

    def naturals(value: Any, length: int | None = None) -> bool:
        return (
            isinstance(value, list)
            and (length is None or len(value) == length)
            and all(type(v) is int and v >= 0 for v in value)
        )

    if not isinstance(shape, list) or not isinstance(offsets, list) or not naturals(shape):
        raise _header_error(f"invalid JSON in header: bad shape for tensor `{name}`")
    if not naturals(offsets, 2):
        raise _header_error(f"invalid JSON in header: bad data_offsets for tensor `{name}`")
    elements = 1
    for dim in shape:
        elements *= dim
    return offsets[0], offsets[1], elements * dtype_bits


def check_safetensors(path: str) -> None:
    """Read the header of a safetensors file as ``safe_open`` does; raise ``SafetensorError`` if
    the file would not load: fewer than 8 bytes, a header length over the limit or past the end,
    a header that is not UTF-8 JSON of tensor entries, offsets that are not contiguous from 0 or
    do not match shape x dtype, or data that does not end exactly at the end of the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _header_error("header too small")
        header_bytes = int.from_bytes(prefix, "little")
        if header_bytes > SAFETENSORS_MAX_HEADER_BYTES:
            raise _header_error("header too large")
        if 8 + header_bytes > size:
            raise _header_error("invalid header length")
        raw = f.read(header_bytes)
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _header_error(f"invalid UTF-8 in header: {exc}") from None
    except ValueError as exc:
        raise _header_error(f"invalid JSON in header: {exc}") from None
    if not isinstance(header, dict):
        raise _header_error(f"invalid JSON in header: expected a map, not {type(header).__name__}")
    entries = sorted(
        (*_tensor_entry(name, info), name) for name, info in header.items() if name != "__metadata__"
    )
    data_end = 0
    for start, end, bits, name in entries:
        if start != data_end or end < start:
            raise _header_error(f"invalid offset for tensor `{name}`")
        if bits % 8 or bits // 8 != end - start:
            raise _header_error("invalid shape, data type, or offset for tensor")
        data_end = end
    if 8 + header_bytes + data_end != size:
        raise _header_error("incomplete metadata, file not fully covered")


def minimal_safetensors(payload: bytes = b"", metadata: dict[str, str] | None = None) -> bytes:
    """A valid safetensors file holding ``payload`` as one U8 tensor ``weight`` (different payloads
    give different files and hashes), with an optional ``__metadata__`` map."""
    size = len(payload)
    header: dict[str, Any] = {"weight": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads its header to 8 bytes with spaces
    return len(raw).to_bytes(8, "little") + raw + payload


@dataclass(frozen=True)
class Dirs:
    """The emulated ComfyUI directory layout; every path is absolute and normalised."""

    base: str

    @property
    def models(self) -> str:
        return os.path.join(self.base, "models")

    @property
    def input(self) -> str:
        return os.path.join(self.base, "input")

    @property
    def output(self) -> str:
        return os.path.join(self.base, "output")

    @property
    def temp(self) -> str:
        return os.path.join(self.base, "temp")

    def by_type(self, kind: str) -> str | None:
        """Directory for a ``type`` query value (output, input, temp) or None if unknown."""
        return {"output": self.output, "input": self.input, "temp": self.temp}.get(kind)

    def model_roots(self, folder: str) -> list[str]:
        folder = _LEGACY_FOLDERS.get(folder, folder)
        if folder == "custom_nodes":
            return [os.path.join(self.base, "custom_nodes")]
        roots = [os.path.join(self.models, d) for d in _MODEL_FOLDERS[folder][0]]
        if folder in _OUTPUT_MODEL_FOLDERS:
            roots.append(os.path.join(self.output, _OUTPUT_MODEL_FOLDERS[folder]))
        return roots

    def list_models(self, folder: str) -> list[str]:
        """Sorted relative names under all roots of ``folder``; rescanned on every call."""
        folder = _LEGACY_FOLDERS.get(folder, folder)
        extensions = _MODEL_FOLDERS[folder][1]
        found: set[str] = set()
        for root in self.model_roots(folder):
            if not os.path.isdir(root):
                continue
            for dirpath, subdirs, filenames in os.walk(root, followlinks=True):
                subdirs[:] = [d for d in subdirs if d != ".git"]
                found.update(os.path.relpath(os.path.join(dirpath, f), root) for f in filenames)
        return sorted(f for f in found if not extensions or os.path.splitext(f)[1].lower() in extensions)

    def model_path(self, folder: str, name: str) -> str | None:
        relative = os.path.relpath(os.path.join("/", name), "/")
        for root in self.model_roots(folder):
            path = os.path.join(root, relative)
            if os.path.isfile(path):
                return path
        return None

    def input_images(self) -> list[str]:
        """LoadImage's combo: image files directly in input/ (by MIME type), sorted."""
        if not os.path.isdir(self.input):
            return []
        names = [f for f in os.listdir(self.input) if os.path.isfile(os.path.join(self.input, f))]
        return sorted(
            f for f in names if (mimetypes.guess_type(f, strict=False)[0] or "").startswith("image/")
        )

    def annotated_path(self, name: str) -> str:
        """``folder_paths.get_annotated_filepath``: ``"x.png [output]"`` style names, input/ default."""
        for suffix, directory in (
            (" [output]", self.output),
            (" [input]", self.input),
            (" [temp]", self.temp),
        ):
            if name.endswith(suffix.strip()):
                return os.path.join(directory, name[: -len(suffix)])
        return os.path.join(self.input, name)


class ExecContext(Protocol):
    """What a running node may ask of the executor."""

    dirs: Dirs
    node_id: str

    async def progress(self, value: int, total: int) -> None:
        """Report sampler-style progress; raises the interrupt exception if one is pending."""

    async def sleep_step(self) -> None:
        """Sleep for one sampler step (EmulatorConfig.step_seconds)."""

    async def load_model(self, folder: str, name: str, *, main_model: bool = False) -> str:
        """Resolve and "load" a model file; ``main_model`` loads cost EmulatorConfig.model_load_seconds."""

    async def to_thread(self, func: Any, *args: Any) -> Any:
        """Run CPU-bound image work off the event loop."""


@dataclass(frozen=True)
class NodeResult:
    outputs: tuple[Any, ...] = ()
    ui: dict[str, list[Any]] | None = None


# ---------------------------------------------------------------- values passed between nodes


@dataclass(frozen=True)
class FakeModel:
    name: str
    loras: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class FakeClip:
    names: tuple[str, ...]
    loras: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class FakeVae:
    name: str


@dataclass(frozen=True)
class Conditioning:
    text: str
    guidance: float | None = None


@dataclass(frozen=True)
class UpscaleModel:
    name: str
    scale: int


@dataclass(frozen=True)
class Latent:
    width: int
    height: int
    batch_size: int
    seed: int | None = None  #: set once a sampler ran
    positive: str = ""
    source: tuple[Image.Image, ...] = ()  #: VAEEncode input (img2img)
    denoise: float = 1.0


def render_image(seed: int, text: str, width: int, height: int) -> Image.Image:
    """A deterministic picture for (seed, text): a two-colour gradient with three discs."""
    digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
    c1, c2, c3 = (tuple(digest[i : i + 3]) for i in (0, 3, 6))
    mask = Image.linear_gradient("L")
    if digest[9] % 2:
        mask = mask.transpose(Image.Transpose.ROTATE_90)
    mask = mask.resize((width, height))
    image = Image.composite(
        Image.new("RGB", (width, height), c1), Image.new("RGB", (width, height), c2), mask
    )
    draw = ImageDraw.Draw(image)
    for k in range(3):
        x, y = digest[10 + 3 * k] / 255 * width, digest[11 + 3 * k] / 255 * height
        r = (0.05 + digest[12 + 3 * k] / 255 * 0.25) * min(width, height)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(c3[0], c3[1], (c3[2] + 85 * k) % 256))
    return image


# ---------------------------------------------------------------- node base


class Node:
    """Base class: class attributes mirror ComfyUI's node attributes of the same meaning."""

    DISPLAY_NAME: ClassVar[str] = ""
    CATEGORY: ClassVar[str] = "sd"
    DESCRIPTION: ClassVar[str] = ""
    PYTHON_MODULE: ClassVar[str] = "nodes"
    RETURN_TYPES: ClassVar[tuple[str, ...]] = ()
    RETURN_NAMES: ClassVar[tuple[str, ...] | None] = None
    OUTPUT_TOOLTIPS: ClassVar[tuple[str, ...] | None] = None
    OUTPUT_NODE: ClassVar[bool] = False
    #: inputs checked by ``validate_inputs`` instead of the built-in min/max/combo checks.
    VALIDATE_INPUTS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, dirs: Dirs, **inputs: Any) -> bool | str:
        return True

    @classmethod
    def is_changed(cls, dirs: Dirs, inputs: dict[str, Any]) -> Any:
        """Like IS_CHANGED: extra cache-key material; None when the class has none."""
        return None

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        raise NotImplementedError


def _combo(options: list[str], **extra: Any) -> tuple[Any, ...]:
    return (options, extra) if extra else (options,)


_SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde",
    "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]  # fmt: skip
_SCHEDULERS = [
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
]
_UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
_RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_CLIP_TYPES = [
    "stable_diffusion",
    "stable_cascade",
    "sd3",
    "stable_audio",
    "mochi",
    "ltxv",
    "pixart",
    "cosmos",
    "lumina2",
    "wan",
    "hidream",
    "chroma",
    "ace",
    "omnigen2",
    "qwen_image",
    "hunyuan_image",
]


# ---------------------------------------------------------------- loaders


class CheckpointLoaderSimple(Node):
    DISPLAY_NAME = "Load Checkpoint"
    CATEGORY = "loaders"
    DESCRIPTION = "Loads a diffusion model checkpoint, diffusion models are used to denoise latents."
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        tip = "The name of the checkpoint (model) to load."
        return {"required": {"ckpt_name": _combo(dirs.list_models("checkpoints"), tooltip=tip)}}

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        name = inputs["ckpt_name"]
        await ctx.load_model("checkpoints", name, main_model=True)
        return NodeResult((FakeModel(name), FakeClip((name,)), FakeVae(name)))


class UNETLoader(Node):
    DISPLAY_NAME = "Load Diffusion Model"
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "unet_name": _combo(dirs.list_models("diffusion_models")),
                "weight_dtype": _combo(["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]),
            }
        }

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        await ctx.load_model("diffusion_models", inputs["unet_name"], main_model=True)
        return NodeResult((FakeModel(inputs["unet_name"]),))


class LoraLoader(Node):
    DISPLAY_NAME = "Load LoRA"
    CATEGORY = "loaders"
    RETURN_TYPES: ClassVar[tuple[str, ...]] = ("MODEL", "CLIP")

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        strength = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}),
                "clip": ("CLIP", {"tooltip": "The CLIP model the LoRA will be applied to."}),
                "lora_name": _combo(dirs.list_models("loras"), tooltip="The name of the LoRA."),
                "strength_model": ("FLOAT", strength),
                "strength_clip": ("FLOAT", strength),
            }
        }

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        model, clip = inputs["model"], inputs["clip"]
        sm, sc = inputs["strength_model"], inputs.get("strength_clip", 0.0)
        if sm == 0 and sc == 0:
            return NodeResult((model, clip))
        name = inputs["lora_name"]
        await ctx.load_model("loras", name)
        if isinstance(model, FakeModel):
            model = replace(model, loras=(*model.loras, (name, sm)))
        if isinstance(clip, FakeClip):
            clip = replace(clip, loras=(*clip.loras, (name, sc)))
        return NodeResult((model, clip))


class LoraLoaderModelOnly(LoraLoader):
    DISPLAY_NAME = "LoraLoaderModelOnly"
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "model": ("MODEL",),
                "lora_name": _combo(dirs.list_models("loras")),
                "strength_model": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}),
            }
        }

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        result = await super().execute(ctx, clip=None, strength_clip=0.0, **inputs)
        return NodeResult(result.outputs[:1])


class VAELoader(Node):
    DISPLAY_NAME = "Load VAE"
    CATEGORY = "loaders"
    RETURN_TYPES = ("VAE",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {"required": {"vae_name": _combo([*dirs.list_models("vae"), "pixel_space"])}}

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        if inputs["vae_name"] != "pixel_space":
            await ctx.load_model("vae", inputs["vae_name"])
        return NodeResult((FakeVae(inputs["vae_name"]),))


class CLIPLoader(Node):
    DISPLAY_NAME = "Load CLIP"
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("CLIP",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {
            "required": {"clip_name": _combo(dirs.list_models("text_encoders")), "type": _combo(_CLIP_TYPES)},
            "optional": {"device": _combo(["default", "cpu"], advanced=True)},
        }

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        await ctx.load_model("text_encoders", inputs["clip_name"])
        return NodeResult((FakeClip((inputs["clip_name"],)),))


class DualCLIPLoader(Node):
    DISPLAY_NAME = "DualCLIPLoader"
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("CLIP",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        encoders = dirs.list_models("text_encoders")
        return {
            "required": {
                "clip_name1": _combo(encoders),
                "clip_name2": _combo(list(encoders)),
                "type": _combo(["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image"]),
            },
            "optional": {"device": _combo(["default", "cpu"], advanced=True)},
        }

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        for key in ("clip_name1", "clip_name2"):
            await ctx.load_model("text_encoders", inputs[key])
        return NodeResult((FakeClip((inputs["clip_name1"], inputs["clip_name2"])),))


def _upscale_factor(name: str) -> int:
    """Scale of an upscale model, read from its name ("4x-UltraSharp", "RealESRGAN_x2plus"); default 4."""
    match = re.search(r"(?<![0-9])([1-8])x|x([1-8])(?![0-9])", name.lower())
    return int(match.group(1) or match.group(2)) if match else 4


class UpscaleModelLoader(Node):
    DISPLAY_NAME = "Load Upscale Model"
    CATEGORY = "loaders"
    PYTHON_MODULE = "comfy_extras.nodes_upscale_model"
    RETURN_TYPES = ("UPSCALE_MODEL",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {"required": {"model_name": _combo(dirs.list_models("upscale_models"))}}

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        await ctx.load_model("upscale_models", inputs["model_name"])
        return NodeResult((UpscaleModel(inputs["model_name"], _upscale_factor(inputs["model_name"])),))


# ---------------------------------------------------------------- conditioning, latents, sampling


class CLIPTextEncode(Node):
    DISPLAY_NAME = "CLIP Text Encode (Prompt)"
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "text": (
                    "STRING",
                    {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to be encoded."},
                ),
                "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text."}),
            }
        }

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        if inputs.get("clip") is None:
            raise RuntimeError(
                "ERROR: clip input is invalid: None\n\nIf the clip is from a checkpoint loader node "
                "your checkpoint does not contain a valid clip or text encoder model."
            )
        return NodeResult((Conditioning(inputs["text"]),))


class FluxGuidance(Node):
    CATEGORY = "advanced/conditioning/flux"
    PYTHON_MODULE = "comfy_extras.nodes_flux"
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "conditioning": ("CONDITIONING",),
                "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1}),
            }
        }

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        return NodeResult((replace(inputs["conditioning"], guidance=inputs["guidance"]),))


class EmptyLatentImage(Node):
    DISPLAY_NAME = "Empty Latent Image"
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    STEP: ClassVar[int] = 8

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        size = {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": cls.STEP}
        return {
            "required": {
                "width": ("INT", {**size, "tooltip": "The width of the latent images in pixels."}),
                "height": ("INT", {**size, "tooltip": "The height of the latent images in pixels."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
            }
        }

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        # Latents are 1/8 of the pixel size, so the decoded image is rounded down to a multiple of 8.
        width, height = inputs["width"] // 8 * 8, inputs["height"] // 8 * 8
        return NodeResult((Latent(width, height, inputs.get("batch_size", 1)),))


class EmptySD3LatentImage(EmptyLatentImage):
    DISPLAY_NAME = "EmptySD3LatentImage"
    CATEGORY = "latent/sd3"
    PYTHON_MODULE = "comfy_extras.nodes_sd3"
    STEP = 16

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        size = {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 16}
        return {
            "required": {
                "width": ("INT", size),
                "height": ("INT", dict(size)),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
            }
        }


class KSampler(Node):
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model used for denoising the input latent."}),
                "seed": (
                    "INT",
                    {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True},
                ),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
                "sampler_name": _combo(_SAMPLERS),
                "scheduler": _combo(_SCHEDULERS),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        steps, latent = inputs["steps"], inputs["latent_image"]
        for step in range(steps):
            await ctx.sleep_step()
            await ctx.progress(step + 1, steps)
        positive = inputs["positive"]
        text = positive.text if isinstance(positive, Conditioning) else str(positive)
        return NodeResult(
            (replace(latent, seed=inputs["seed"], positive=text, denoise=inputs.get("denoise", 1.0)),)
        )


# ---------------------------------------------------------------- VAE


def _decode(latent: Latent) -> list[Image.Image]:
    images = []
    for index in range(latent.batch_size):
        source = latent.source[min(index, len(latent.source) - 1)] if latent.source else None
        if latent.seed is None:
            # An unsampled latent: zeros decode to flat grey, an encoded image round-trips.
            images.append(
                source.copy() if source else Image.new("RGB", (latent.width, latent.height), (128,) * 3)
            )
            continue
        picture = render_image(latent.seed + index, latent.positive, latent.width, latent.height)
        if source is not None and latent.denoise < 1.0:
            picture = Image.blend(source.resize(picture.size), picture, latent.denoise)
        images.append(picture)
    return images


class VAEDecode(Node):
    DISPLAY_NAME = "VAE Decode"
    CATEGORY = "latent"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The latent to be decoded."}),
                "vae": ("VAE", {"tooltip": "The VAE model used for decoding the latent."}),
            }
        }

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        return NodeResult((await ctx.to_thread(_decode, inputs["samples"]),))


class VAEEncode(Node):
    DISPLAY_NAME = "VAE Encode"
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}}

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        images: list[Image.Image] = inputs["pixels"]
        width, height = images[0].size
        return NodeResult((Latent(width, height, len(images), source=tuple(images)),))


# ---------------------------------------------------------------- images


def _save(
    images: list[Image.Image],
    directory: str,
    prefix: str,
    kind: str,
    compress_level: int,
    pnginfo: PngInfo | None,
) -> list[dict[str, str]]:
    """SaveImage's file naming (folder_paths.get_save_image_path) and writing."""
    if images and "%" in prefix:
        prefix = prefix.replace("%width%", str(images[0].width)).replace("%height%", str(images[0].height))
    subfolder = os.path.dirname(os.path.normpath(prefix))
    filename = os.path.basename(os.path.normpath(prefix))
    folder = os.path.join(directory, subfolder)
    if os.path.commonpath((directory, os.path.abspath(folder))) != directory:
        raise Exception(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(folder)}\n         output_dir: {directory}"
        )
    os.makedirs(folder, exist_ok=True)
    counter = 1
    for existing in os.listdir(folder):
        head, rest = existing[: len(filename) + 1], existing[len(filename) + 1 :]
        if os.path.normcase(head[:-1]) == os.path.normcase(filename) and head[-1:] == "_":
            with contextlib.suppress(ValueError):
                counter = max(counter, int(rest.split("_")[0]) + 1)
    results = []
    for batch_number, image in enumerate(images):
        name = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        image.save(os.path.join(folder, name), pnginfo=pnginfo, compress_level=compress_level)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return results


class SaveImage(Node):
    DISPLAY_NAME = "Save Image"
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."
    OUTPUT_NODE = True
    KIND: ClassVar[str] = "output"
    COMPRESS_LEVEL: ClassVar[int] = 4

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI"}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def _prefix(self, inputs: dict[str, Any]) -> str:
        return str(inputs.get("filename_prefix", "ComfyUI"))

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        info = PngInfo()
        if inputs.get("prompt") is not None:
            info.add_text("prompt", json.dumps(inputs["prompt"]))
        for key, value in (inputs.get("extra_pnginfo") or {}).items():
            info.add_text(key, json.dumps(value))
        directory = ctx.dirs.by_type(self.KIND)
        assert directory is not None
        results = await ctx.to_thread(
            _save, inputs["images"], directory, self._prefix(inputs), self.KIND, self.COMPRESS_LEVEL, info
        )
        return NodeResult((), {"images": results})


class PreviewImage(SaveImage):
    DISPLAY_NAME = "Preview Image"
    DESCRIPTION = "Saves the input images to your ComfyUI temp directory."
    KIND = "temp"
    COMPRESS_LEVEL = 1

    def __init__(self) -> None:
        # The alphabet (with its doubled "p" and missing "w") is copied from nodes.py.
        self.suffix = "_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {
            "required": {"images": ("IMAGE",)},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def _prefix(self, inputs: dict[str, Any]) -> str:
        return "ComfyUI" + self.suffix


def _load_image(path: str) -> tuple[list[Image.Image], list[Image.Image]]:
    images: list[Image.Image] = []
    masks: list[Image.Image] = []
    with Image.open(path) as opened:
        for frame in ImageSequence.Iterator(opened):
            frame = ImageOps.exif_transpose(frame)
            rgb = frame.convert("RGB")
            if images and rgb.size != images[0].size:
                continue
            images.append(rgb)
            if "A" in frame.getbands():
                masks.append(ImageOps.invert(frame.getchannel("A")))
            else:
                masks.append(Image.new("L", (64, 64), 0))
        if opened.format == "MPO":
            images, masks = images[:1], masks[:1]
    return images, masks


class LoadImage(Node):
    DISPLAY_NAME = "Load Image"
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    VALIDATE_INPUTS = ("image",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {"required": {"image": _combo(dirs.input_images(), image_upload=True)}}

    @classmethod
    def validate_inputs(cls, dirs: Dirs, **inputs: Any) -> bool | str:
        if not os.path.exists(dirs.annotated_path(inputs["image"])):
            return "Invalid image file: {}".format(inputs["image"])
        return True

    @classmethod
    def is_changed(cls, dirs: Dirs, inputs: dict[str, Any]) -> Any:
        with open(dirs.annotated_path(inputs["image"]), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        images, masks = await ctx.to_thread(_load_image, ctx.dirs.annotated_path(inputs["image"]))
        return NodeResult((images, masks))


class EmptyImage(Node):
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        size = {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}
        return {
            "required": {
                "width": ("INT", size),
                "height": ("INT", dict(size)),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}),
            }
        }

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        color = inputs.get("color", 0)
        rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
        image = Image.new("RGB", (inputs["width"], inputs["height"]), rgb)
        return NodeResult(([image] + [image.copy() for _ in range(inputs.get("batch_size", 1) - 1)],))


class ImageInvert(Node):
    DISPLAY_NAME = "Invert Image"
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {"required": {"image": ("IMAGE",)}}

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        return NodeResult(
            (await ctx.to_thread(lambda ims: [ImageOps.invert(i) for i in ims], inputs["image"]),)
        )


def _scale(images: list[Image.Image], method: str, width: int, height: int, crop: str) -> list[Image.Image]:
    out = []
    for image in images:
        if crop == "center":
            old_w, old_h = image.size
            old_aspect, new_aspect = old_w / old_h, width / height
            x = round((old_w - old_w * (new_aspect / old_aspect)) / 2) if old_aspect > new_aspect else 0
            y = round((old_h - old_h * (old_aspect / new_aspect)) / 2) if old_aspect < new_aspect else 0
            image = image.crop((x, y, old_w - x, old_h - y))
        out.append(image.resize((width, height), _RESAMPLE.get(method, Image.Resampling.BILINEAR)))
    return out


class ImageScale(Node):
    DISPLAY_NAME = "Upscale Image"
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        size = {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": _combo(_UPSCALE_METHODS),
                "width": ("INT", size),
                "height": ("INT", dict(size)),
                "crop": _combo(["disabled", "center"]),
            }
        }

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        images: list[Image.Image] = inputs["image"]
        width, height = inputs["width"], inputs["height"]
        if width == 0 and height == 0:
            return NodeResult((images,))
        w0, h0 = images[0].size
        if width == 0:
            width = max(1, round(w0 * height / h0))
        elif height == 0:
            height = max(1, round(h0 * width / w0))
        return NodeResult(
            (await ctx.to_thread(_scale, images, inputs["upscale_method"], width, height, inputs["crop"]),)
        )


class ImageScaleBy(Node):
    DISPLAY_NAME = "Upscale Image By"
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": _combo(_UPSCALE_METHODS),
                "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}),
            }
        }

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        images: list[Image.Image] = inputs["image"]
        w, h = images[0].size
        size = round(w * inputs["scale_by"]), round(h * inputs["scale_by"])
        return NodeResult((await ctx.to_thread(_scale, images, inputs["upscale_method"], *size, "disabled"),))


class ImageUpscaleWithModel(Node):
    DISPLAY_NAME = "Upscale Image (using Model)"
    CATEGORY = "image/upscaling"
    PYTHON_MODULE = "comfy_extras.nodes_upscale_model"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def input_types(cls, dirs: Dirs) -> dict[str, dict[str, Any]]:
        return {"required": {"upscale_model": ("UPSCALE_MODEL",), "image": ("IMAGE",)}}

    async def execute(self, ctx: ExecContext, **inputs: Any) -> NodeResult:
        images: list[Image.Image] = inputs["image"]
        scale = inputs["upscale_model"].scale
        w, h = images[0].size
        return NodeResult((await ctx.to_thread(_scale, images, "lanczos", w * scale, h * scale, "disabled"),))


NODE_CLASSES: dict[str, type[Node]] = {
    cls.__name__: cls
    for cls in (
        CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage, EmptySD3LatentImage, KSampler, VAEDecode,
        VAEEncode, SaveImage, PreviewImage, LoadImage, LoraLoader, LoraLoaderModelOnly, VAELoader, UNETLoader,
        DualCLIPLoader, CLIPLoader, FluxGuidance, UpscaleModelLoader, ImageUpscaleWithModel, ImageScale,
        ImageScaleBy, EmptyImage, ImageInvert,
    )
}  # fmt: skip
