"""Example requests per tool (slug → requests a user might type), which the lexical retriever
indexes next to a tool's name and description. They are written for the tools, not copied from
the evaluation set (``swarmstation/agent_eval/set.jsonl``)."""

from __future__ import annotations

from collections.abc import Mapping

EXAMPLES: Mapping[str, tuple[str, ...]] = {
    "sdxl-txt2img": (
        "generate a picture of a lighthouse at dusk",
        "draw me a detailed illustration",
        "make an image from my prompt",
        "create artwork, a painting, a photo, a poster, a wallpaper",
        "render a scene in sdxl",
    ),
    "sd15-txt2img": (
        "generate with stable diffusion 1.5",
        "a quick sd15 picture",
        "draw an anime character with sd 1.5",
    ),
    "flux-txt2img": (
        "generate with flux",
        "a fast photorealistic image with flux schnell",
        "flux picture of a street at night",
    ),
    "sd15-img2img": (
        "redraw my photo as a painting",
        "turn this picture into a watercolor",
        "change the style of my image",
        "make my photo look like a cartoon, restyle, transform, reimagine it",
        "image to image variation of this drawing",
    ),
    "upscale-4x": (
        "make it bigger",
        "upscale my image 4x",
        "enlarge the picture, higher resolution, more pixels, hd, 4k",
        "increase the resolution and sharpen",
        "super resolution",
    ),
    "prompt-enhance": (
        "improve my prompt",
        "write a better, more detailed prompt",
        "expand this idea into a prompt",
        "rewrite the prompt for flux",
    ),
    "caption": (
        "describe this image",
        "what is in this picture",
        "write a caption or alt text for my photo",
        "tell me what the image shows",
    ),
    "image-resize": (
        "resize the image to 800 pixels wide",
        "scale it down, make it smaller, shrink",
        "make a thumbnail",
        "change the dimensions",
    ),
    "image-crop": (
        "crop the image",
        "cut out the top left corner",
        "trim the edges",
    ),
    "image-pad": (
        "pad it to 16:9",
        "add borders, letterbox, white frame around it",
        "fit it to a square with a border",
    ),
    "image-convert": (
        "convert to jpeg",
        "save it as webp or png",
        "change the file format",
        "export as jpg with quality 80",
    ),
    "contact-sheet": (
        "put the images in a grid",
        "make a contact sheet, collage, mosaic of these pictures",
        "combine them side by side",
    ),
}
