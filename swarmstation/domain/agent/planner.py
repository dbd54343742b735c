"""The offline planner: a request and a conversation snapshot in, one decision out.

Pure: no clock, no randomness (a new seed comes from ``context.seed``), no I/O. The steps:

1. **Questions** about the platform (price, balance, what a tool does, what went wrong,
   what it can do) become a :class:`Question` the caller answers from the API's data.
2. **Out of scope**: a request for something no tool's output type is (a song, a video, an essay)
   or an errand (book a flight) is declined with what the platform can do (:class:`Abstain`);
   so is a request the catalog matches below :data:`ABSTAIN_SCORE` that does not read as a prompt.
3. **Iteration**: with a prior plan, "more vibrant", "without the hat", "another one", "more
   steps", "cfg 4", "use flux instead" and "then upscale it" edit that plan's pipeline.
4. **A new plan**: what the user has (text, an attached image, a previous output) and wants
   (operations found in the text, in order) give the shortest type-correct chain of tools:
   each operation is a port signature (``text → image``, ``image → text``…) and a tool is chosen
   among those that have it, a missing link (an image to upscale when there is only text) is
   bridged by the operation that produces it. Parameters the text states fill the inputs.
"""

# The vocabularies below are long regular-expression alternations in four languages, kept one
# alternation per line as far as reads well; the multiplication sign is what users type ("4x").
# ruff: noqa: E501, RUF001

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from swarmstation.domain.agent.lexical import (
    DEFAULT_FAMILY,
    TYPO_SIMILARITY,
    LexicalRetriever,
    fold,
    normalize,
    trigram_similarity,
)
from swarmstation.domain.agent.types import (
    Abstain,
    CatalogTool,
    Context,
    Decision,
    MediaRef,
    PriorPlan,
    Proposal,
    Question,
    Retriever,
)
from swarmstation.domain.tools.spec import InputSpec, ToolSpec

__all__ = ["ABSTAIN_SCORE", "OPERATIONS", "Operation", "decide", "stated_params"]

#: Below this retrieval score (and with no operation or prompt in sight) a request is declined.
ABSTAIN_SCORE = 1.5
_LEXICAL = LexicalRetriever()


# -- operations -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """Something a user can want done: a port signature (``takes`` → ``gives``), the tool
    category that does it (None: any), the query that ranks candidate tools, and the step id."""

    name: str
    takes: str
    gives: str
    category: str | None
    query: str
    step: str


OPERATIONS: Mapping[str, Operation] = {
    op.name: op
    for op in (
        Operation("enhance", "text", "text", None, "enhance prompt idea", "enhance"),
        Operation("generate", "text", "image", "text-to-image", "generate image text prompt", "gen"),
        Operation("img2img", "image", "image", "image-to-image", "redraw image prompt", "edit"),
        Operation("upscale", "image", "image", "upscale", "upscale image 4x", "big"),
        Operation("caption", "image", "text", None, "describe image caption", "caption"),
        Operation("resize", "image", "image", "image-utility", "resize scale width height", "resize"),
        Operation("crop", "image", "image", "image-utility", "crop rectangle cut", "crop"),
        Operation("pad", "image", "image", "image-utility", "pad border aspect ratio", "pad"),
        Operation("convert", "image", "image", "image-utility", "convert format jpeg png webp", "convert"),
        Operation("grid", "image", "image", "image-utility", "contact sheet grid images", "grid"),
    )
}

_FORMAT = r"(?:jpe?g|png|webp)"
_CUES: Mapping[str, re.Pattern[str]] = {
    name: re.compile(pattern)
    for name, pattern in {
        "enhance": (
            r"\b(?:better|improved?|enhanced?|more detailed|richer|longer|stronger|good|nicer|great|proper)"
            r" prompt|\bprompt[\s-]*(?:enhanc|improv|boost|help)|\b(?:improve|enhance|expand|rewrite|polish|"
            r"refine|flesh out|punch up|optimi[sz]e|fix|upgrade|beef up|tweak|write|craft|turn)\b[^.?!]{0,40}"
            r"\bprompts?\b|\bam[eé]lior\w*[^.?!]{0,20}prompt|\bprompt\w*[^.?!]{0,20}am[eé]lior|"
            r"\bprompts?\b[^.?!]{0,12}\b(?:more detailed|more descriptive|better|richer|longer|stronger|nicer)\b|"
            r"\bverbesser\w*[^.?!]{0,20}prompt|\bprompt\w*[^.?!]{0,20}verbesser|\bmejor\w*[^.?!]{0,20}prompt"
        ),
        "img2img": (
            r"\bturn (?:it|this|that|them|my \w+|the \w+|this \w+)\s+into\b|\bmake (?:it|this|my \w+|the \w+|"
            r"this \w+) (?:look )?(?:like|into)\b|\blook like\b|\bin the style of\b|\bredraw\w*|\brestyle\w*|"
            r"\breimagin\w*|\bstyli[sz]\w*|\bvariations? of (?:it|this|my|the)\b|\bimg2img\b|\btransform\w*|"
            r"\bchange (?:the )?style|\brepaint\w*|\bconvert (?:it |this |my \w+ |the \w+ )?(?:in)?to an? "
            r"(?!"
            + _FORMAT
            + r")\w+|\bas an? (?:\w+ )?(?:painting|drawing|sketch|cartoon|anime|watercolou?r|"
            r"comic|pixel art|oil painting)\b|\btransforme\w*|\bverwandl\w*|\bconviert\w* (?:esta|mi|la)|"
            r"\bcomme une? (?:peinture|aquarelle|dessin)|\bals (?:ein |eine )?(?:gem[aä]lde|aquarell|zeichnung)|"
            r"\bmake (?:it|this) (?:more )?(?:cartoon|anime|painterly|realistic)\w*"
        ),
        "upscale": (
            r"\bup-?s(?:c|k)al\w*|\bupsacl\w*|\bupscael\w*|\benlarg\w*|\bbigger\b|\blarger\b|\bhigher[\s-]res\w*|"
            r"\bhi-?res\b|\bhigh[\s-]resolution|\bmore resolution|\bsuper[\s-]?res\w*|\bincrease (?:the )?"
            r"(?:resolution|size)|\b[248]x\b|\b4k\b|\bhd\b|\bagrandi\w*|\bplus grand|\bvergr(?:o|oe)(?:ss|ß)er\w*|"
            r"\bgr(?:o|oe)(?:ss|ß)er\b|\bhochskalier\w*|\bampl[ií]a\w*|\bm[aá]s grande|\bhochaufl\w*|"
            r"\bsharper\b|\bupres\b|\bblow (?:it )?up\b|\bmore pixels"
        ),
        "caption": (
            r"\bwhat(?:'s| is) (?:going on|happening) in\b|\bwho(?:'s| is) in (?:this|the)\b|\bdes(?:c|k)ri\w*|\bdiscrib\w*|\bcaption\w*|\balt[\s-]?text|\bwhat(?:'s| is) (?:in|on) (?:this|the|my|"
            r"that)\b|\bwhat (?:does|do) (?:this|the|my|it) (?:image|picture|photo|pic)? ?(?:show|depict)|"
            r"\btell me what\b|\bwhat do you see\b|\bd[eé]cri\w*|\bbeschreib\w*|\bqu'y a-t-il|\bwas ist (?:auf|in) "
            r"(?:dem|diesem)|\bqu[eé] (?:hay|ves) en"
        ),
        "resize": (
            r"\bresiz\w*|\bre-size\w*|\brescal\w*|\bscale (?:it |this |them |the \w+ )?(?:down|to)\b|"
            r"\bdownscal\w*|\bshrink\w*|\bsmaller\b|\bthumbnail\w*|\b(?:change|set) (?:the )?(?:dimensions|"
            r"size)|\bredimension\w*|\bverkleiner\w*|\bredimensiona\w*|\bm[aá]s peque[nñ]\w*|\bplus petit"
        ),
        "crop": r"\bcrop\w*|\btrim\w*|\bcut (?:out|off|away|it|the)\b|\brecadr\w*|\bzuschneid\w*|\brecort\w*|\bbeschneid\w*",
        "pad": (
            r"\bpad(?:ding)?\b(?= (?:it|this|that|them|the|to|out|with|my|all))|\bpadd\w* (?:it|this|the|to)|\bletter-?box\w*|\bpillar-?box\w*|\bborders?\b|\bmargins?\b|\bmarges?\b|"
            r"\bbordure\w*|\brahmen\b|\brand\b|\bbordes?\b|\b(?:add|put) (?:a |an )?(?:\w+ )?frame\b"
        ),
        "convert": (
            r"\bconvert\w*|\bkonvertier\w*|\bconvier\w*|\bexport\w*|\bsave (?:it |this |them )?as\b|"
            r"\b(?:as|to|into|in) (?:a |an )?" + _FORMAT + r"\b|\b" + _FORMAT + r" (?:format|file|version)|"
            r"^\W*(?:jpe?g|png|webp)\W*$|\b(?:change|switch) (?:the )?(?:file )?format|\bformat\b|\bumwandeln|\ben "
            + _FORMAT
            + r"\b"
        ),
        "grid": (
            r"\bgrid\b|\bcontact[\s-]?sheet|\bcollage|\bmosaic|\bmontage|\bside[\s-]by[\s-]side|\bgrille|"
            r"\braster\b|\bcuadr[ií]cula|\bplanche[\s-]contact"
        ),
        "generate": (
            r"\bgenerat\w*|\bdraw\w*|\bpaint\w*|\brender\w*|\bsketch\w*|\billustrat\w*|\bcreate\w*|\bmake\b|"
            r"\bimagine\b|\bdesign\w*|\b(?:picture|image|photo|pic|wallpaper|poster|logo|portrait|artwork|icon)s?"
            r"\b|\bdessin\w*|\bg[eé]n[eè]r\w*|\bcr[eé]e[rz]?\b|\bfais\b|\bzeichn\w*|\berstell\w*|\bgenerier\w*|"
            r"\bdibuj\w*|\bcrea\b|\bhaz\w*|\bbild\b|\bimagen\b"
        ),
    }.items()
}
#: Operations in the order a chain runs them when the text does not say otherwise.
_SOURCE_OPS = ("enhance", "generate", "img2img")

# -- questions and out-of-scope requests ----------------------------------------------------------

_Q_BALANCE = re.compile(
    r"\bbalance\b|\bhow many credits\b|\bcredits? (?:do i have|have i got|left|remaining)|\bmy credits\b|"
    r"\bsolde\b|\bguthaben\b|\bsaldo\b|\bwallet\b|\bhow much (?:money|credit)s? (?:do i|have i|is|are)|"
    r"\bcombien de cr[eé]dits|\bwie viele credits|\bcu[aá]ntos cr[eé]ditos"
)
_Q_PRICE = re.compile(
    r"\bhow much\b|\bprices?\b|\bpricing\b|\bcosts?\b|\bcosting\b|\bcombien\b|\bwie ?viel\w*|\bkoste\w*|"
    r"\bpreis\w*|\bcu[aá]nto\b|\bprecio\w*|\bprix\b|\bexpensive\b|\bcheap\w*|\bcuesta\b|\bco[uû]te\w*"
)
_Q_RUN = re.compile(
    r"\bwhat went wrong|\bwhy did (?:it|that|this|my|the)\b|\bfail(?:ed|ure|s|ing)?\b|\berror\w*|"
    r"\bdid ?n[o']?t work|\bdoes ?n[o']?t work|\bbroken?\b|\bstuck\b|\bwhat happened|\bnicht funktioniert|"
    r"\bschief\w*|\b[eé]chou\w*|\bqu'est-ce qui (?:s'est pass|n'a pas march)|\bqu[eé] pas[oó]|\bfall[oó]|"
    r"\bno funcion[oó]|\bhasn'?t finished|\bnever finished|\btaking so long"
)
_Q_CAPABILITIES = re.compile(
    r"\bwhat (?:else )?can (?:you|i|it|we) do\b|\bwhat (?:tools|models|options|features)\b|\bwhich (?:tools|"
    r"models|features)\b|\bwhat are (?:your|the) (?:tools|capabilities|options|features)|\bcapabilit\w*|"
    r"\bwhat do you (?:offer|support|do)\b|\bwhat (?:is|are) possible|\bque (?:peux|pouvez)[- ](?:tu|vous) "
    r"faire|\bwas kannst du|\bqu[eé] (?:puedes|sabes) hacer|\bwhat can you\b|\blist (?:the |your |all )?"
    r"(?:tools|models)|^\W*help\W*$|^\W*(?:can you )?help(?: me)?\W*$|\bwhat are you able\b|"
    r"\bwhat kind of (?:things|stuff)|\bhow (?:do|does) (?:this|it) work\b"
)
_Q_TOOL = re.compile(
    r"\bwhat (?:does|do|is|are|'s)\b|\bwhat'?s\b|\btell me (?:about|more about)\b|\bexplain\b|\bhow does\b|"
    r"\bwhat .* (?:for|do)\?|\bqu'est-ce que\b|\b(?:que|quoi) fait\b|\bwas (?:macht|ist)\b|\bqu[eé] (?:hace|es)\b|"
    r"\bwhat would\b|\bwhat kind\b|\bwhat'?s the difference\b|\bdifference between\b"
)
_QUESTION_START = re.compile(
    r"^(?:what|whats|what's|who|when|where|why|how|which|is|are|do|does|did|can|could|will|would|should|"
    r"qu|que|quel|quelle|comment|pourquoi|was|wie|wer|wo|warum|welche|qu[eé]|c[oó]mo|cu[aá]l|d[oó]nde|"
    r"por qu[eé])\b"
)
#: Output types no tool gives, and errands: (pattern, what it is).
_UNSUPPORTED: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"\bsongs?\b|\bmusic\w*|\bmelod\w*|\btunes?\b|\bjingles?\b|\bsoundtracks?\b|\baudio\b|\bsound effects?"
            r"|\bvoice ?over|\bvoices?\b|\bspeech\b|\bpodcasts?\b|\bnarrat\w*|\bsing\b|\bsinging\b|\brap\b|"
            r"\bbeats?\b|\bchansons?\b|\bmusique\b|\blied\b|\bmusik\b|\bcanci[oó]n\w*|\bm[uú]sica\b|\bsonidos?\b|"
            r"\blyrics\b|\bringtone|\bsound\b|\bmp3\b|\bparoles\b|\bliedtext|\blullab\w*|\bcompose\b|\bsymphon\w*|"
            r"\baloud\b|\bout loud\b|\baccent\b|\btext[\s-]to[\s-]speech|\btts\b|\bpronounc\w*"
        ),
        "audio",
    ),
    (
        re.compile(
            r"\bvideos?\b|\bvid[eé]os?\b|\bmovies?\b|\banimat\w*|\bclips?\b|\bshort film|\ba film\b|\btime-?lapse|"
            r"\bgifs?\b|\bpel[ií]cula\w*|\bfilm(?:chen)?\b(?! noir| grain| still| photo| camera)|\btiktok|\breels?\b"
            r"|\bslideshow|\bmp4\b|\bframes? per second|\bfps\b|\banime opening"
        ),
        "video",
    ),
    (re.compile(r"\b3d (?:model|mesh|print|object|asset|file)|\bmesh\b|\bstl\b|\bobj file|\bglb\b"), "3D"),
    (
        re.compile(
            r"\bpoems?\b|\bessays?\b|\be-?mails?\b|\bletters? to\b|\bstory about|\bshort story|\bstories\b|"
            r"\barticles?\b|\bblog\b|\btweets?\b|\bcover letter|\bsummar\w*|\btranslat\w*|\bcode\b|\bscripts?\b|"
            r"\bpython\b|\bjavascript\b|\bsql\b|\bspreadsheets?\b|\bexcel\b|\bpowerpoint\b|\bslides\b|\bpdfs?\b|"
            r"\bwebsites?\b|\bweb ?page|\bapps?\b|\bpoemas?\b|\bgedicht\w*|\bpo[eè]mes?\b|\br[eé]sum[eé]\b|"
            r"\btradu\w*|\b[uü]bersetz\w*|\bhaiku|\blimerick|\bcv\b|\bspeech\b|\bhomework|\bmath\b|\bequation|"
            r"\bword document|\bdocx\b|\bcsv\b|\bchatbot|\bnovel\b"
        ),
        "text",
    ),
    (
        re.compile(
            r"\bremove (?:the |my |this )?backgrounds?\b|\bbackground remov\w*|\berase\b|\binpaint\w*|"
            r"\bface ?swap\w*|\bswap (?:the |my |our )?faces?\b|\bvectori[sz]\w*|\bsvg\b|\bdeblur\w*|"
            r"\bcolori[sz]\w*|\bremove (?:the |this |that |a )?(?:person|people|man|woman|text|watermark|object|"
            r"car|guy|girl|logo)s?\b|\btransparent background|\bcut (?:me |him |her )?out of\b|"
            r"\bfreisteller?|\bhintergrund entfern\w*|\bquitar (?:el )?fondo|\bsupprim\w* (?:le )?fond|"
            r"\brestore (?:my |this |an |the )?old|\bretouch\w*|\blip ?sync|\bedit (?:my|this) (?:video|clip)"
        ),
        "an edit no tool makes",
    ),
    (
        re.compile(
            r"^(?:(?:please|pls|hey|hi|can you|could you|would you|i need you to|i want you to)[\s,]+)*"
            r"(?:book|order|buy|purchase|pay|send|call|phone|remind|schedule|play|set (?:a|an|up)|calculate|compute"
            r"|convert (?:\d+|usd|eur|dollars|euros)|find me (?:a|an|the|some) (?:flight|hotel|restaurant|job)|"
            r"search (?:the web|google|online)|google|download|install|delete my|transfer|tell me a joke|"
            r"tell me a story|sing|chat with|solve|fix my (?:code|computer|wifi|printer)|text|reserve|"
            r"r[eé]serve|bestell\w*|buch\w*|reserva\w*|compra\w*)\b"
        ),
        "an errand",
    ),
    (
        re.compile(
            r"\bwhat(?:'s| is| will be) the weather|\bweather (?:forecast|today|tomorrow|like|in|for|this)\b|"
            r"\bstock (?:price|market)|\bexchange rate|\b(?:latest|the|today'?s) news\b|\bnews (?:about|today)|"
            r"\ba recipe\b|\brecipe for\b|\bhow (?:do|can|should) i (?:cook|bake|make (?:a |an )?(?:cake|soup|pasta|rice))|"
            r"\bcapital of\b|\bwho (?:is|was|won)\b|\bwhen (?:is|was|did)\b|\bwhat time\b|\bmeaning of life|"
            r"\bhoroscope|\bstocks\b|\bbitcoin price|\bm[eé]t[eé]o\b|\bwetter (?:morgen|heute|in)\b|\bclima (?:en|de|hoy)\b|"
            r"\bquelle heure"
        ),
        "a question for another service",
    ),
)
#: Words right after an unsupported word that make it a picture after all ("movie poster").
_PICTURE_AFTER = re.compile(
    r"^\s*-?\s*(?:poster|cover|covers|art|artwork|thumbnail|still|frame|illustration|picture|image|photo|wallpaper|"
    r"logo|icon|scene|style|screenshot|character|set|studio|theater|theatre|night|shop|store|game|festival|band|"
    r"club|room|player|theme|notes?|box|lover|sheet|album)s?\b"
)
_PICTURE_BEFORE = re.compile(
    r"\b(?:poster|cover|artwork|art|thumbnail|illustration|picture|image|photo|wallpaper|logo|icon|drawing|"
    r"painting)s?\s+(?:for|of|about|from)\s+(?:my|a|an|the|our|his|her|this)?\s*(?:\w+\s+)?$"
)

# -- parameters -----------------------------------------------------------------------------------

_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "twelve": 12, "a couple of": 2, "a pair of": 2, "a few": 3, "deux": 2, "trois": 3,
    "quatre": 4, "cinq": 5, "six_": 6, "zwei": 2, "drei": 3, "vier": 4, "funf": 5, "fuenf": 5, "dos": 2,
    "tres": 3, "cuatro": 4, "cinco": 5, "several": 3,
}  # fmt: skip
_NUM = r"(\d{1,2}|" + "|".join(re.escape(w) for w in _NUMBER_WORDS if not w.endswith("_")) + r")"
_COUNT_RE = re.compile(
    r"\b" + _NUM + r"\s+(?:\w+\s+)?(?:images|pictures|pics|photos|versions|variations|variants|options|takes|"
    r"ones|renders|bilder|imagenes|fotos|versiones|variantes|drafts|shots|portraits|logos|wallpapers|icons|"
    r"illustrations|designs|posters|alternatives|candidates|different ones|more|stickers|concepts|avatars|ideas|"
    r"sketches|looks|styles)\b"
)
_SIZE_RE = re.compile(r"\b(\d{2,5})\s*(?:px\s*)?[x×*]\s*(\d{2,5})\b")
_WIDTH_RE = re.compile(
    r"\b(\d{2,5})\s*(?:px|pixels?)?\s*(?:wide|width|breit|de large|de ancho|across)\b|\bwidth\s*(?:of|=|:|to)?"
    r"\s*(\d{2,5})"
)
_HEIGHT_RE = re.compile(
    r"\b(\d{2,5})\s*(?:px|pixels?)?\s*(?:tall|high|height|hoch|de haut|de alto)\b|\bheight\s*(?:of|=|:|to)?"
    r"\s*(\d{2,5})"
)
_SIDE_RE = re.compile(r"\b(\d{2,5})\s*(?:px|pixels?)\b(?!\s*(?:wide|tall|high|width|height))")
_ASPECT_RE = re.compile(r"\b(\d{1,2})\s*[:/]\s*(\d{1,2})\b(?!\s*(?:am|pm))")
_ASPECT_WORDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<!town )(?<!city )(?<!market )(?<!village )(?<!times )(?<!public )\bsquare\b"), "1:1"),
    (re.compile(r"\bcarr[eé]e?\b|\bquadratisch\w*|\bcuadrad[ao]\b"), "1:1"),
    (re.compile(r"\bwide-?screen\b|\bcinematic (?:format|aspect|ratio)|\blandscape (?:format|orientation)\b"), "16:9"),
    (re.compile(r"\bportrait (?:format|orientation|mode)\b|\bvertical (?:format|image|orientation)\b|\bphone wallpaper"), "9:16"),
)  # fmt: skip
_SEED_RE = re.compile(r"\b(?:seed|graine|semilla|semence)\s*(?:=|:|of|#|number|no\.?|n°)?\s*(\d{1,20})\b")
_STEPS_RE = re.compile(
    r"\b(\d{1,3})\s*(?:sampling\s+|sampler\s+|diffusion\s+)?(?:steps|schritte|pasos|etapes|iterations)\b|"
    r"\bsteps\s*(?:=|:|to|of|at)?\s*(\d{1,3})\b"
)
_CFG_RE = re.compile(
    r"\b(?:cfg|guidance|cfg scale|guidance scale)\s*(?:scale\s*)?(?:=|:|of|to|at)?\s*(\d{1,2}(?:\.\d+)?)\b|"
    r"\b(\d{1,2}(?:\.\d+)?)\s*cfg\b"
)
_QUALITY_RE = re.compile(
    r"\bquality\s*(?:of|=|:|at|to)?\s*(\d{1,3})\b|\b(\d{1,3})\s*%?\s*quality\b|\bqualit[eé]\s*(\d{1,3})"
)
_DENOISE_RE = re.compile(r"\b(?:denoise|denoising|strength)\s*(?:of|=|:|at|to)?\s*(0?\.\d+|1\.0|1|0)\b")
_COLUMNS_RE = re.compile(
    r"\b(\d{1,2})\s*(?:columns|per row|across|wide grid|colonnes|spalten|columnas)\b|\b(\d)\s*[x×]\s*\d\s*grid\b"
)
_SCALE_RE = re.compile(r"\b([2-8])x\b|\b(two|four|eight|[2-8]) times\b")
_COLORS = {
    "white": "#ffffff", "black": "#000000", "grey": "#808080", "gray": "#808080", "red": "#ff0000",
    "blue": "#0000ff", "green": "#00ff00", "yellow": "#ffff00", "transparent": "#00000000",
    "blanc": "#ffffff", "blanche": "#ffffff", "noir": "#000000", "weiss": "#ffffff", "schwarz": "#000000",
    "blanco": "#ffffff", "negro": "#000000",
}  # fmt: skip
_HEX_RE = re.compile(r"#[0-9a-f]{6}(?:[0-9a-f]{2})?\b")
_FAMILY_TOKENS = {"sdxl": "SDXL", "sd15": "SD1.5", "flux": "FLUX"}
_FAMILY_NAMES = {v: k for k, v in _FAMILY_TOKENS.items()}


def _number(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBER_WORDS.get(word, 0)


def _first_int(match: re.Match[str] | None) -> int | None:
    if match is None:
        return None
    for group in match.groups():
        if group:
            return _number(group) if not group.isdigit() else int(group)
    return None


def stated_params(text: str) -> dict[str, Any]:
    """The parameters ``text`` states, by name: ``width``, ``height``, ``aspect`` ("16:9"),
    ``count``, ``seed``, ``model`` (sdxl, sd15, flux), ``scale``, ``steps``, ``cfg``,
    ``format``, ``quality``, ``detail``, ``columns``, ``color``, ``denoise``."""
    folded = fold(text)
    norm = normalize(text)
    out: dict[str, Any] = {}
    if m := _SIZE_RE.search(folded):
        out["width"], out["height"] = int(m.group(1)), int(m.group(2))
    else:
        if (w := _first_int(_WIDTH_RE.search(folded))) is not None:
            out["width"] = w
        if (h := _first_int(_HEIGHT_RE.search(folded))) is not None:
            out["height"] = h
        if (
            not out
            and (m := _SIDE_RE.search(folded))
            and not _SEED_RE.search(folded[max(0, m.start() - 8) : m.end()])
        ):
            out["width"] = int(m.group(1))
    if m := _ASPECT_RE.search(folded):
        a, b = int(m.group(1)), int(m.group(2))
        if 0 < a <= 32 and 0 < b <= 32:
            out["aspect"] = f"{a}:{b}"
    else:
        for pattern, aspect in _ASPECT_WORDS:
            if pattern.search(folded):
                out["aspect"] = aspect
                break
    if m := _COUNT_RE.search(folded):
        n = _number(m.group(1))
        if 1 < n <= 16:
            out["count"] = n
    if m := _SEED_RE.search(folded):
        out["seed"] = int(m.group(1)) % (2**64)
    for token, _family in _FAMILY_TOKENS.items():
        if re.search(rf"\b{token}\b", norm):
            out["model"] = token
            break
    if (scale := _SCALE_RE.search(norm)) is not None:
        out["scale"] = int(scale.group(1) or 0) or _number(scale.group(2))
    if (steps := _first_int(_STEPS_RE.search(folded))) is not None and 0 < steps <= 200:
        out["steps"] = steps
    if m := _CFG_RE.search(folded):
        out["cfg"] = float(m.group(1) or m.group(2))
    if m := re.search(r"\b(jpe?g|png|webp)\b", folded):
        out["format"] = "jpeg" if m.group(1).startswith("jp") else m.group(1)
    if (quality := _first_int(_QUALITY_RE.search(folded))) is not None and 1 <= quality <= 100:
        out["quality"] = quality
    if re.search(
        r"\b(?:detailed|in detail|a paragraph|long|thorough|full|en d[eé]tail|ausf[uü]hrlich|detallad\w*)\b",
        folded,
    ):
        out["detail"] = "detailed"
    elif re.search(r"\b(?:short|one sentence|brief|one line|quick|court|kurz|breve)\b", folded):
        out["detail"] = "short"
    if (columns := _first_int(_COLUMNS_RE.search(folded))) is not None:
        out["columns"] = columns
    if m := _HEX_RE.search(folded):
        out["color"] = m.group(0)
    else:
        for word, hex_color in _COLORS.items():
            if re.search(rf"\b{word}\b", folded):
                out["color"] = hex_color
                break
    if m := _DENOISE_RE.search(folded):
        out["denoise"] = float(m.group(1))
    return out


# -- the catalog as operations see it ------------------------------------------------------------


def _takes(spec: ToolSpec) -> str | None:
    """What a tool's main input is: ``image`` (a required image input) or ``text`` (a required
    string input)."""
    if any(i.type == "image" and i.required for i in spec.inputs):
        return "image"
    if any(i.type == "string" and i.required for i in spec.inputs):
        return "text"
    return None


def _gives(spec: ToolSpec) -> str | None:
    return spec.outputs[0].type if spec.outputs else None


def _input(spec: ToolSpec, name: str) -> InputSpec | None:
    return next((i for i in spec.inputs if i.name == name), None)


def _main_input(spec: ToolSpec, kind: str) -> InputSpec | None:
    wanted = "image" if kind == "image" else "string"
    return next((i for i in spec.inputs if i.type == wanted and i.required), None)


def _port(spec: ToolSpec, kind: str) -> str:
    for out in spec.outputs:
        if out.type == kind:
            return out.name
    return spec.outputs[0].name if spec.outputs else kind


def _family_token(spec: ToolSpec) -> str | None:
    return _FAMILY_NAMES.get(spec.base_model)


class _Catalog:
    def __init__(self, tools: Sequence[CatalogTool], retriever: Retriever) -> None:
        self.tools = list(tools)
        self.by_slug = {t.spec.slug: t for t in tools}
        self.retriever = retriever

    def candidates(self, op: Operation) -> list[CatalogTool]:
        return [
            t
            for t in self.tools
            if _takes(t.spec) == op.takes
            and _gives(t.spec) == op.gives
            and (op.category is None or t.spec.category == op.category)
        ]

    def pick(self, op: Operation, family: str | None = None) -> CatalogTool | None:
        """The tool for ``op``: of the stated family if one has it, else the default family,
        else the best ranked for the operation's query; available tools before unavailable."""
        found = self.candidates(op)
        if not found:
            return None
        order = {r.slug: i for i, r in enumerate(self.retriever.rank(op.query, found, limit=len(found)))}

        def key(t: CatalogTool) -> tuple[int, int, int, int, str]:
            fam = t.spec.base_model
            return (
                0 if t.available else 1,
                0 if family is not None and fam == _FAMILY_TOKENS.get(family) else 1,
                0 if fam == DEFAULT_FAMILY else 1,
                order.get(t.spec.slug, len(found)),
                t.spec.slug,
            )

        return min(found, key=key)


# -- text handling --------------------------------------------------------------------------------

_CONNECTOR_RE = re.compile(
    r"(?<=[a-z])[.!]\s+(?=[a-z])|\s*(?:,|;|\.)?\s*\b(?:and then|then|after that|afterwards|afterward|next|finally|and finally|"
    r"once (?:it'?s|that'?s) done|when (?:it'?s|that'?s) done|puis|ensuite|et puis|apr[eè]s [cç]a|dann|danach|"
    r"und dann|anschlie(?:ss|ß)end|luego|y luego|despu[eé]s|y despu[eé]s|y finalmente)\b\s*,?\s*|\s*(?:->|→|=>|;)\s*"
    r"|\s*(?:,|\band\b|\bet\b|\bund\b|\by\b)\s+(?=(?:also\s+)?(?:make|upscale|upscal\w*|resize|crop|pad|convert|"
    r"describe|caption|enlarge|turn|save|export|put|give|scale|shrink|agrandi\w*|d[eé]cri\w*|vergr\w*|"
    r"beschreib\w*|ampl[ií]a\w*|describ\w*|add borders|write|improve|enhance|then)\b)"
)
_LEAD_RE = re.compile(
    r"^(?:hey there|hey|hi there|hi|hello|yo|ok(?:ay)?|so|please|pls|plz|could (?:you|u)(?: please)?|can (?:you|u)(?: please)?|"
    r"would you(?: please)?(?: mind)?|will you|i(?:'d| would) (?:really )?(?:like|love)(?: you)?(?: to)?(?: have)?|"
    r"i want(?: you)?(?: to)?|i wanna|i need(?: you to)?|let'?s|go ahead and|just|quickly|now|and|also|first|"
    r"for me|real quick|i'm looking for|im looking for|looking for|how about|what about|bonjour|salut|"
    r"s'il (?:te|vous) pla[iî]t|je (?:voudrais|veux|souhaite)|peux-tu|pouvez-vous|hallo|bitte|ich (?:m[oö]chte|"
    r"will|h[aä]tte gern)|kannst du|hola|por favor|quiero|me gustar[ií]a|puedes)\b[\s,!:]*"
)
_VERB_RE = re.compile(
    r"^(?:turn|transform|generate|create|make|draw|paint|render|sketch|illustrate|design|imagine|produce|show|give|get|do|"
    r"picture|visuali[sz]e|depict|build|whip up|come up with|fais|fais-moi|dessine|dessine-moi|g[eé]n[eè]re|"
    r"cr[eé]e|cr[eé]er|mach|mache|machen|erstelle|erstellen|zeichne|zeichnen|generiere|male|haz|hazme|dibuja|"
    r"dibujame|genera|crea|generar|crear|dibujar)(?:-moi)?(?: me| us| mir| moi)?\b[\s,:]*"
)
_OBJECT_RE = re.compile(
    r"^(?:(?:an?|one|some|the|une?|des|ein|eine|einen|una?|mir)\s+)?(?:(?:quick|nice|cool|beautiful|new|simple|"
    r"high quality|good|great|pretty|lovely|little|small)\s+)?(?:images?|pictures?|pics?|renders?|artworks?|"
    r"bild(?:er)?|imagen(?:es)?|fotos?)\s*(?:of|showing|with|depicting|featuring|de|von|mit|con|:)?\s+"
)
_STRIP_RES: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"\b(?:at|in|with|of|as)?\s*(?:a\s+)?(?:size\s+)?\d{2,5}\s*(?:px\s*)?[x×*]\s*\d{2,5}(?:\s*px|\s*pixels)?"
    ),
    re.compile(
        r"\b(?:in|at|with)?\s*(?:an?\s+)?(?:aspect(?: ratio)?\s*(?:of\s*)?)?\d{1,2}\s*:\s*\d{1,2}(?:\s*(?:aspect(?: ratio)?|ratio|format))?"
    ),
    re.compile(
        r"\b(?:in|at|with)?\s*(?:a\s+)?(?:widescreen|square|portrait|landscape|vertical)\s+(?:format|orientation|mode|aspect|image|ratio)\b"
    ),
    re.compile(r"\b(?:at|in|with|of)?\s*\d{2,5}\s*(?:px|pixels)\s*(?:wide|tall|high|width|height)?\b"),
    re.compile(
        r"\b(?:with|using|and)?\s*(?:a\s+)?(?:the\s+)?(?:seed|graine|semilla)\s*(?:=|:|of|#|number)?\s*\d+"
    ),
    re.compile(r"\b(?:with|using|in|on|at|and)?\s*\d{1,3}\s*(?:sampling\s+)?(?:steps|schritte|pasos)\b"),
    re.compile(
        r"\b(?:with|using|at|and)?\s*(?:a\s+)?(?:cfg|guidance)\s*(?:scale\s*)?(?:=|:|of|at)?\s*\d+(?:\.\d+)?"
    ),
    re.compile(
        r"\b(?:with|using|in|on|via|through|avec|mit|con|en)\s+(?:the\s+)?(?:sdxl|sd15|flux)(?:\s+(?:model|checkpoint))?\b"
    ),
    re.compile(r"\b(?:sdxl|sd15|flux)\b(?:\s+(?:model|checkpoint|please))?"),
    re.compile(
        r"\b"
        + _NUM
        + r"\s+(?:different\s+|distinct\s+|separate\s+)?(?:images|pictures|pics|versions|variations|variants|options|takes|renders|bilder|imagenes|versiones|drafts|shots)\s*(?:(?:of|de|von|di)\s+)?"
    ),
    re.compile(
        r"[\s,]*\b(?:please|pls|plz|thanks|thank you|thx|ty|merci|danke|gracias|s'il te pla[iî]t|bitte|por favor)\b[\s!.]*"
    ),
)
_TRAIL_RE = re.compile(r"^[\s,.;:!?'\"-]+|[\s,.;:!?'\"-]+$")
_REF_RE = re.compile(
    r"^(?:(?:it|this|that|them|these|me|us|the (?:image|picture|photo|pic|result|last one|output|one)|my (?:image|picture|"
    r"photo|pic|selfie|drawing|sketch|dog|cat)|this (?:image|picture|photo|pic|one|selfie|drawing|sketch)|the attached "
    r"(?:image|picture|photo|one))\s*)(?:look\s+)?(?:into|to|like|as|in the style of|more)?\s*"
)
_GENERIC_PROMPT_WORDS = frozenset(
    ("a", "an", "the", "it", "this", "that", "one", "image", "picture", "photo", "pic", "something", "anything",
     "me", "please", "thing", "stuff")
)  # fmt: skip


#: The words of operations a typo is read as ("descibe" → describe, "upscsle" → upscale).
_TYPO_LEMMAS: tuple[tuple[str, str], ...] = (
    ("describe", "caption"), ("caption", "caption"), ("description", "caption"), ("upscale", "upscale"),
    ("enlarge", "upscale"), ("resize", "resize"), ("thumbnail", "resize"), ("convert", "convert"),
    ("contact", "grid"), ("collage", "grid"), ("letterbox", "pad"),
)  # fmt: skip


def _clauses(text: str) -> list[str]:
    return [c for c in _CONNECTOR_RE.split(text) if c and c.strip()]


def _ops_in(clause: str) -> list[tuple[int, str]]:
    """Operations a clause asks for (not ``generate``), with where they start."""
    folded = normalize(clause)
    found: list[tuple[int, str]] = []
    for name, pattern in _CUES.items():
        if name == "generate":
            continue
        m = pattern.search(folded)
        if m is None:
            continue
        if name == "convert" and (
            _CUES["img2img"].search(folded) and not re.search(r"\b" + _FORMAT + r"\b", folded)
        ):
            continue
        if name == "pad" and re.search(r"\bframe\b", folded) and not re.search(r"\b(?:add|put)\b", folded):
            continue
        found.append((m.start(), name))
    names = {n for _, n in found}
    for m in re.finditer(r"[a-z]{5,}", folded):
        word = m.group(0)
        for lemma, name in _TYPO_LEMMAS:
            if (
                name not in names
                and word != lemma
                and trigram_similarity(word, lemma) >= TYPO_SIMILARITY + 0.08
            ):
                found.append((m.start(), name))
                names.add(name)
    if "enhance" in names and "convert" in names and not re.search(r"\b" + _FORMAT + r"\b", folded):
        found = [(p, n) for p, n in found if n != "convert"]  # "turn my idea into a prompt"
    if "img2img" in names and "upscale" in names and re.search(r"\b(?:bigger|larger)\b", folded):
        found = [(p, n) for p, n in found if n != "img2img" or "look like" in folded or "style" in folded]
    if "resize" in names and "upscale" in names:
        found = [
            (p, n)
            for p, n in found
            if n != ("resize" if re.search(r"bigger|larger|upscal", folded) else "upscale")
        ]
    return sorted(found)


def _without_ops(clause: str) -> str:
    out = normalize(clause)
    for name, pattern in _CUES.items():
        if name != "generate":
            out = pattern.sub(" ", out)
    out = re.sub(r"\b[2-8]x\b|\b(?:two|four|eight|[2-8]) times\b|\b(?:make|turn|get) (?:it|them)\b", " ", out)
    return " ".join(out.split())


def clean_prompt(text: str) -> str:
    """What to draw: the request without commands, politeness, references and parameters."""
    out = normalize(text)
    out = _TRAIL_RE.sub("", out)
    # "show me what flux can do: a forest" - what follows a short lead-in is the picture
    if (
        (m := re.match(r"^([^:]{1,60}?)\s*:\s*(\D.+)$", out))
        and len(m.group(1).split()) <= 8
        and len(m.group(2).split()) >= 2
    ):
        out = m.group(2)
    for _ in range(6):
        before = out
        out = _LEAD_RE.sub("", out)
        out = _VERB_RE.sub("", out)
        out = _OBJECT_RE.sub("", out)
        out = _REF_RE.sub("", out) if re.match(r"^(?:it|this|that|them|these|the|my|me|us)\b", out) else out
        out = _TRAIL_RE.sub("", out)
        if out == before:
            break
    for pattern in _STRIP_RES:
        out = pattern.sub(" ", out)
    out = re.sub(r"\s+,", ",", " ".join(out.split()))
    out = _TRAIL_RE.sub("", out)
    out = re.sub(r"^(?:of|with|showing|and)\s+", "", out)
    return out


def _is_generic(prompt: str) -> bool:
    return all(w in _GENERIC_PROMPT_WORDS for w in re.findall(r"[a-z0-9]+", prompt))


# -- building pipelines ---------------------------------------------------------------------------


@dataclass
class _Builder:
    catalog: _Catalog
    seed: int
    steps: dict[str, dict[str, Any]]
    inputs: dict[str, dict[str, Any]]
    chain: list[str]

    def step_id(self, base: str) -> str:
        sid, n = base, 2
        while sid in self.steps:
            sid, n = f"{base}{n}", n + 1
        return sid

    def add(self, sid: str, spec: ToolSpec, inputs: dict[str, Any], count: int | None = None) -> str:
        sid = self.step_id(sid)
        step: dict[str, Any] = {"tool": spec.slug, "inputs": inputs}
        if count is not None and count > 1:
            step["variations"] = {"count": count}
        self.steps[sid] = step
        self.chain.append(spec.slug)
        return sid

    def require(self, name: str, kind: str, label: str) -> dict[str, str]:
        """A value the text did not state and the tool needs: a pipeline input to fill in."""
        self.inputs[name] = {
            "type": kind,
            "required": True,
            "default": None,
            "label": label,
            "description": "",
        }
        return {"input": name}

    def pipeline(self) -> dict[str, Any]:
        return {"inputs": dict(self.inputs), "steps": dict(self.steps)}


def _dims(spec: ToolSpec, aspect: str) -> tuple[int, int] | None:
    w_in, h_in = _input(spec, "width"), _input(spec, "height")
    if w_in is None or h_in is None or not isinstance(w_in.default, int) or not isinstance(h_in.default, int):
        return None
    a, b = (int(x) for x in aspect.split(":"))
    area = w_in.default * h_in.default
    width = (area * a / b) ** 0.5
    height = width * b / a

    def snap(v: float, inp: InputSpec) -> int:
        value = max(64, round(v / 64.0) * 64)
        return int(min(value, inp.maximum)) if inp.maximum is not None else value

    return snap(width, w_in), snap(height, h_in)


def _set_if(spec: ToolSpec, inputs: dict[str, Any], name: str, value: Any) -> None:
    inp = _input(spec, name)
    if inp is None or value is None:
        return
    if inp.type == "number":
        value = float(value)
    if inp.minimum is not None and isinstance(value, int | float) and value < inp.minimum:
        value = type(value)(inp.minimum)
    if inp.maximum is not None and isinstance(value, int | float) and value > inp.maximum:
        value = type(value)(inp.maximum)
    if inp.choices is not None and value not in inp.choices:
        return
    inputs[name] = value


def _fill(
    op: str, spec: ToolSpec, params: Mapping[str, Any], b: _Builder, *, sized: bool, prompt: str, source: Any
) -> tuple[dict[str, Any], int | None]:
    """The inputs of one step; ``sized``: the size the text states belongs to this step."""
    inputs: dict[str, Any] = {}
    main = _main_input(spec, OPERATIONS[op].takes)
    if main is not None:
        if main.many and isinstance(source, str):
            inputs[main.name] = [source]
        else:
            inputs[main.name] = source
    count: int | None = None
    if op in ("generate", "img2img"):
        if _input(spec, "prompt") is not None and "prompt" not in inputs:
            inputs["prompt"] = prompt
        _set_if(spec, inputs, "seed", params.get("seed", b.seed))
        if sized:
            if "width" in params or "height" in params:
                _set_if(spec, inputs, "width", params.get("width"))
                _set_if(spec, inputs, "height", params.get("height"))
            elif "aspect" in params and (dims := _dims(spec, params["aspect"])):
                inputs["width"], inputs["height"] = dims
        _set_if(spec, inputs, "steps", params.get("steps"))
        _set_if(spec, inputs, "cfg", params.get("cfg"))
        _set_if(spec, inputs, "denoise", params.get("denoise"))
        count = params.get("count")
    elif op == "enhance":
        _set_if(spec, inputs, "base_model", params.get("_family", DEFAULT_FAMILY))
    elif op == "caption":
        _set_if(spec, inputs, "detail", params.get("detail"))
    elif op in ("resize", "crop"):
        for side in ("width", "height"):
            if sized and side in params:
                _set_if(spec, inputs, side, params[side])
        for side in ("width", "height"):
            inp = _input(spec, side)
            if inp is not None and inp.required and side not in inputs:
                inputs[side] = b.require(f"{op}_{side}", "integer", f"{op.capitalize()} {side}")
        if op == "resize" and not ({"width", "height"} & set(inputs)):
            inputs["width"] = b.require("resize_width", "integer", "Width")
    elif op == "pad":
        aspect = params.get("aspect")
        inputs["aspect"] = aspect if aspect else b.require("aspect", "string", "Aspect ratio")
        _set_if(spec, inputs, "color", params.get("color"))
    elif op == "convert":
        _set_if(spec, inputs, "format", params.get("format"))
        _set_if(spec, inputs, "quality", params.get("quality"))
    elif op == "grid":
        _set_if(spec, inputs, "columns", params.get("columns"))
    return inputs, count


def _wanted_ops(text: str, has_image: bool) -> tuple[list[str], str, dict[str, str]]:
    """The operations the text asks for, in the order they run, the text that describes the
    picture (the clauses that ask for no other operation), and the clause of each operation."""
    ordered: list[str] = []
    prompt_parts: list[str] = []
    clause_of: dict[str, str] = {}
    generate_cue = False
    for index, clause in enumerate(_clauses(text)):
        ops = _ops_in(clause)
        folded = normalize(clause)
        if _CUES["generate"].search(folded):
            generate_cue = True
        names = [n for _, n in ops]
        sized = bool({"width", "height"} & set(stated_params(clause)))
        if not names and index > 0 and sized and len(clean_prompt(clause).split()) <= 4:
            names = ["resize"]  # "..., then a 1920 pixel wide version"
        if not names or names == ["enhance"] or "img2img" in names:
            prompt_parts.append(clause)
        for n in names:
            if n not in ordered:
                ordered.append(n)
                clause_of[n] = clause
    described = ", ".join(prompt_parts)
    if not described and not has_image:
        # one clause asks for everything ("make the image of a tiger 2x bigger"): the picture is
        # what remains without the operations' words
        described = " ".join(_without_ops(c) for c in _clauses(text))
    for name in ("generate", "img2img"):
        clause_of[name] = described or text
    if "enhance" in clause_of and not described:
        clause_of["enhance"] = text
    prompt = clean_prompt(described)
    if "enhance" in ordered:
        prompt = re.sub(
            r"^(?:\w+\s+){0,4}?(?:a\s+|an\s+|the\s+|my\s+)?(?:better|improved|detailed|good|great|nicer|richer)?\s*"
            r"prompts?\s*(?:for|about|of|from|:)?\s*(?:this|my|the)?\s*(?:idea|one)?\s*[:,]?\s*",
            "",
            prompt,
        )
        prompt = re.sub(
            r"\b(?:improve|enhance|expand|rewrite|polish|refine)\s+(?:my\s+|the\s+|this\s+)?(?:prompt|idea)\b[\s:,]*",
            "",
            prompt,
        )
        prompt = _TRAIL_RE.sub("", prompt)
    has_content = bool(prompt) and not _is_generic(prompt)
    if has_image:
        plain = not ordered or (generate_cue and not set(ordered) - {"enhance"})
        if "img2img" not in ordered and has_content and plain:
            ordered.insert(0, "img2img")
    else:
        image_ops = [n for n in ordered if OPERATIONS[n].takes == "image"]
        enhance_only = ordered == ["enhance"] and not (generate_cue and _explicit_generate(text))
        if not enhance_only and (image_ops or has_content or generate_cue) and "generate" not in ordered:
            ordered.insert(1 if ordered[:1] == ["enhance"] else 0, "generate")
        if "img2img" in ordered:
            ordered.remove("img2img")
    # the source operations run first, the others in the order the text gives them
    if has_image:
        first = [n for n in ("img2img",) if n in ordered]
    else:
        first = [n for n in _SOURCE_OPS if n in ordered]
    rest = [n for n in ordered if n not in first]
    return first + rest, prompt, clause_of


def _explicit_generate(text: str) -> bool:
    folded = normalize(text)
    return bool(
        re.search(
            r"\b(?:generat\w*|draw|render|paint|make (?:an? |the )?(?:image|picture|pic)|create (?:an? |the )?"
            r"(?:image|picture)|then (?:make|create|use) it|and (?:make|use|run) it|use it|run it|dessine|"
            r"g[eé]n[eè]re|zeichne|genera|dibuja)\b",
            folded,
        )
    )


def _plan(
    text: str,
    context: Context,
    cat: _Catalog,
    image: MediaRef | None,
    images: Sequence[MediaRef],
    params: dict[str, Any],
) -> Decision:
    ops, prompt, clause_of = _wanted_ops(text, image is not None)
    if not ops:
        return Question("capabilities")
    b = _Builder(cat, context.seed, {}, {}, [])
    family = params.get("model")
    # what a clause states belongs to its operation; a size in a clause that also asks for a
    # resize or a crop belongs to that; the seed, model, steps and cfg to the whole request
    global_params = {k: v for k, v in params.items() if k in _GLOBAL_PARAMS}
    op_params: dict[str, dict[str, Any]] = {}
    for name in ops:
        clause = clause_of.get(name, text)
        own = {k: v for k, v in stated_params(clause).items() if k not in _GLOBAL_PARAMS}
        if name in ("generate", "img2img") and any(clause_of.get(o) == clause for o in ("resize", "crop")):
            own = {k: v for k, v in own.items() if k not in ("width", "height")}
        op_params[name] = {**global_params, **own}
    stated: dict[str, Any] = {}
    kind = "image" if image is not None else "text"
    source: Any = image.ref if image is not None else None
    if image is not None and "grid" in ops and len(images) > 1:
        source = [m.ref for m in images]
    used: list[str] = []

    def add_step(name: str, step_params: Mapping[str, Any], source: Any) -> Decision | Any:
        op = OPERATIONS[name]
        tool = cat.pick(op, family)
        if tool is None:
            return Abstain(
                f"no tool here can {name.replace('img2img', 'redraw an image')}", _suggestions(cat)
            )
        if not tool.available:
            return _unavailable(tool, cat)
        filled = dict(step_params)
        if name == "enhance":
            gen = cat.pick(OPERATIONS["generate"], family) if "generate" in ops else None
            filled["_family"] = (
                gen.spec.base_model if gen else _FAMILY_TOKENS.get(family or "", DEFAULT_FAMILY)
            )
        src = source
        if name in ("generate", "img2img") and source is None:
            src = prompt or text
        inputs, count = _fill(name, tool.spec, filled, b, sized=True, prompt=prompt or text, source=src)
        if name == "generate" and isinstance(source, dict):
            inputs["prompt"] = source  # the prompt the enhance step writes
        if name == "enhance":
            idea = _main_input(tool.spec, "text")
            inputs[idea.name if idea else "idea"] = prompt or text
        sid = b.add(op.step, tool.spec, inputs, count)
        used.append(name)
        stated.update(_relevant(step_params, [name]))
        return {"from": sid, "output": _port(tool.spec, op.gives)}

    for name in ops:
        op = OPERATIONS[name]
        if op.takes != kind:
            # bridge a type gap with the operation that produces the missing type
            bridge = next(
                (
                    o
                    for o in ("generate", "caption")
                    if OPERATIONS[o].takes == kind and OPERATIONS[o].gives == op.takes
                ),
                None,
            )
            if bridge is None:
                return Abstain(f"nothing turns {kind} into {op.takes} here", _suggestions(cat))
            bridged = add_step(bridge, op_params.get(bridge, global_params), source)
            if isinstance(bridged, Abstain):
                return bridged
            source, kind = bridged, OPERATIONS[bridge].gives
        added = add_step(name, op_params[name], source)
        if isinstance(added, Abstain):
            return added
        source, kind = added, op.gives
    if len(b.chain) > 1:
        intent = "chain"
    elif image is not None:
        intent = "transform"
    else:
        intent = "create"
    return Proposal(
        pipeline=b.pipeline(),
        chain=tuple(b.chain),
        params=stated,
        explanation=_explain(b.chain, prompt, image is not None),
        intent=intent,  # type: ignore[arg-type]
    )


#: Parameters that belong to the whole request, whichever clause states them.
_GLOBAL_PARAMS = frozenset({"seed", "model", "steps", "cfg", "denoise"})

_PARAMS_BY_OP = {
    "generate": {"width", "height", "aspect", "count", "seed", "model", "steps", "cfg"},
    "img2img": {"width", "height", "aspect", "count", "seed", "model", "steps", "cfg", "denoise"},
    "upscale": {"scale"},
    "caption": {"detail"},
    "enhance": {"model"},
    "resize": {"width", "height"},
    "crop": {"width", "height"},
    "pad": {"aspect", "color"},
    "convert": {"format", "quality"},
    "grid": {"columns", "count"},
}


def _relevant(params: Mapping[str, Any], ops: Sequence[str]) -> dict[str, Any]:
    keep: set[str] = set()
    for op in ops:
        keep |= _PARAMS_BY_OP.get(op, set())
    return {k: v for k, v in params.items() if k in keep}


def _explain(chain: Sequence[str], prompt: str, has_image: bool) -> str:
    steps = " → ".join(chain)
    what = f" for “{prompt}”" if prompt else ""
    src = " on your image" if has_image else ""
    return f"{steps}{src}{what}"


def _suggestions(cat: _Catalog) -> tuple[str, ...]:
    picks: list[str] = []
    for name in ("generate", "img2img", "upscale", "caption", "enhance"):
        tool = cat.pick(OPERATIONS[name])
        if tool is not None and tool.available and tool.spec.slug not in picks:
            picks.append(tool.spec.slug)
    return tuple(picks)


def _unavailable(tool: CatalogTool, cat: _Catalog) -> Abstain:
    return Abstain(f"{tool.spec.name} ({tool.spec.slug}) cannot run here right now", _suggestions(cat))


# -- iteration ------------------------------------------------------------------------------------

_NEW_SEED_RE = re.compile(
    r"\banother(?: one| version| take| variation| image| picture)?\b|\bagain\b|\bone more\b|\bnew seed\b|"
    r"\bdifferent (?:seed|one|version|take)\b|\bre-?roll\w*|\btry again\b|\bencore\b|\bune autre\b|\bnoch (?:ein|eins|"
    r"einmal|mal)\b|\bein anderes\b|\botr[ao]\b|\bde nuevo\b|\bredo\b|\bregenerate\b|\bsomething else\b|"
    r"\bnouvelle graine\b|\bneuer seed\b|\bnueva semilla\b|\bdon'?t like (?:it|this|that)\b|\bnot (?:good|great|"
    r"what i (?:wanted|asked for))\b|\bugly\b|\bmeh\b|\bnope\b|\bnot quite\b"
)
_REMOVE_RE = re.compile(
    r"\b(?:without|no more|no|remove|get rid of|lose|drop|take (?:away|off|out)|minus|delete|sans|enl[eè]ve\w*|"
    r"supprime\w*|retire\w*|ohne|entferne\w*|sin|quita\w*|elimina\w*)\s+(?:the|a|an|his|her|its|their|any|that|"
    r"those|le|la|les|l'|un|une|den|die|das|der|dem|einen|eine|el|los|las|su)?\s*([a-z][a-z'-]*(?:\s+[a-z][a-z-]*)?)"
)
_LESS_RE = re.compile(r"\b(?:less|not so|not as|too much|moins|weniger|menos)\s+([a-z]+)")
_SWITCH_RE = re.compile(
    r"\b(?:use|try|switch to|switch|with|on|in|redo (?:it )?(?:with|in)|do it (?:with|in)|instead|rather|avec|mit|"
    r"con|utilise|nimm|usa|prueba)\b"
)
_MORE_STEPS_RE = re.compile(
    r"\bmore (?:sampling )?steps\b|\bmore detail(?:ed)? steps|\bhigher steps|\bmehr schritte|\bplus d'[eé]tapes|\bm[aá]s pasos"
)
_FEWER_STEPS_RE = re.compile(
    r"\b(?:fewer|less|lower) (?:sampling )?steps\b|\bweniger schritte|\bmoins d'[eé]tapes|\bmenos pasos"
)
_CFG_UP_RE = re.compile(
    r"\b(?:higher|more|raise|increase|up|stronger|bump)(?: the)? (?:cfg|guidance)|\b(?:cfg|guidance) (?:up|higher)|\bfollow (?:the )?prompt more"
)
_CFG_DOWN_RE = re.compile(
    r"\b(?:lower|less|reduce|decrease|down|weaker)(?: the)? (?:cfg|guidance)|\b(?:cfg|guidance) (?:down|lower)"
)
_ADD_RES: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"^(?:but |and |now )*(?:can|could|would|should) (?:it|you make it|we make it|they|you make them) (?:be|look|get)"
        r"\s+(?:a bit |a little |slightly |much |even )?(?:more\s+)?(?:like\s+)?(.+)$"
    ),
    re.compile(
        r"^(?:but |and |now |ok |okay |hmm,? )*(?:make (?:it|them|him|her|the \w+) |a bit |a little |slightly |much |way )*(?:more|extra|plus|mehr|m[aá]s)\s+(.+)$"
    ),
    re.compile(
        r"^(?:but |and |now |ok |okay )*(?:(?:the )?same(?: thing| one| image| picture| prompt)?,? but|but|only|just)\s+(.+)$"
    ),
    re.compile(
        r"^(?:but |and |now |ok |okay )*(?:add|include|put|give (?:it|him|her|them)|with|plus|ajoute|mit|a[nñ]ade|con)\s+(.+)$"
    ),
    re.compile(
        r"^(?:but |and |now |ok |okay )*(?:make (?:it|them|him|her|the \w+)|let it be|should be)\s+(.+)$"
    ),
    re.compile(r"^(?:but |and |now )*((?:at|in|on|during|under|by|from|inside|near|with|as) .+)$"),
    re.compile(r"^(?:but |and |now )*(?:change (?:it|the \w+) to|turn (?:it|the \w+) (?:into|to))\s+(.+)$"),
)
_EDIT_START_RE = re.compile(
    r"^(?:(?:can|could|would) (?:it|you make it|we make it)|more|less|make it|make them|make the|make him|make her|give (?:it|him|her|them)|turn (?:it|the)|same|but|with|without|no|add|remove|another|again|new|different|try|use|"
    r"switch|now|also|instead|at|in|on|during|keep|change|bit|a bit|slightly|darker|brighter|lighter|bigger|"
    r"warmer|cooler|redo|reroll|then|and|ok|okay|hmm|nice|great|cool|perfect|love it|encore|plus|sans|ohne|mehr|"
    r"noch|otra|otro|m[aá]s|sin|higher|lower|fewer|cfg|steps|seed|give it|put|only|just|too|not|get rid|lose)\b"
)


def _last_output_step(pipeline: Mapping[str, Any]) -> str | None:
    steps = pipeline.get("steps")
    if not isinstance(steps, Mapping) or not steps:
        return None
    consumed = set()
    for step in steps.values():
        for value in (step.get("inputs") or {}).values():
            if isinstance(value, Mapping) and "from" in value:
                consumed.add(value["from"])
    ends = [str(sid) for sid in steps if sid not in consumed]
    return ends[-1] if ends else str(list(steps)[-1])


def _prompt_step(pipeline: Mapping[str, Any]) -> tuple[str, str] | None:
    """The step and input that hold the picture's description (a literal string prompt or idea)."""
    for sid, step in (pipeline.get("steps") or {}).items():
        inputs = step.get("inputs") or {}
        for name in ("idea", "prompt"):
            if isinstance(inputs.get(name), str):
                return sid, name
    return None


def _chain_of(pipeline: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(step["tool"] for step in (pipeline.get("steps") or {}).values())


def _clean_term(term: str) -> str:
    term = _TRAIL_RE.sub("", term)
    term = re.sub(r"^(?:look\s+)?(?:a bit |a little |slightly |much )?(?:more\s+)?(?:like\s+)", "", term)
    term = re.sub(r"^(?:the|a|an|some|more)\s+", "", term)
    term = re.sub(r"\s+(?:please|pls|instead|this time|now|too|as well|thanks)\b.*$", "", term)
    return _TRAIL_RE.sub("", term)


def _remove_term(prompt: str, term: str) -> str:
    words = [w for w in term.split() if w not in ("the", "a", "an")]
    if not words:
        return prompt
    head = re.escape(words[-1].rstrip("s"))
    # the phrase that carries it: "wearing a red hat", "with a hat", "a hat"
    phrase = re.compile(
        rf"(?:,\s*)?\b(?:(?:with|wearing|in|im|on|at|under|and|holding|has|having|en|dans|sur|avec|auf|am|mit|con)\s+)?"
        rf"(?:(?:an?|the|his|her|its|their|some|la|le|les|el|los|las|der|die|das|dem|den)\s+)?"
        rf"(?:(?!(?:in|im|on|at|en|la|le|el|de|du|of|the|and|with|auf|am|mit|con|avec|dans|sur|a|an)\b)[a-z-]+\s+){{0,2}}"
        rf"{head}s?\b"
    )
    out = phrase.sub("", prompt, count=1)
    if out == prompt:
        out = re.sub(rf"\b{re.escape(term)}\b", "", prompt)
    out = re.sub(r"\s+,", ",", " ".join(out.split()))
    return _TRAIL_RE.sub("", out)


def _iterate(text: str, context: Context, cat: _Catalog, prior: PriorPlan) -> Proposal | None:
    """An edit of the prior plan, or None when the message is not one."""
    folded = normalize(text)
    stripped = _TRAIL_RE.sub("", folded)
    params = stated_params(text)
    ops = [n for _, n in _ops_in(text)]
    starts_as_edit = (
        bool(_EDIT_START_RE.match(stripped))
        or len(stripped.split()) <= 3
        or bool(_NEW_SEED_RE.search(folded))
    )
    if not starts_as_edit and len(re.findall(r"[a-z]{3,}", clean_prompt(text))) >= 2:
        return None  # a new request ("a dog on a beach, 16:9"), not an edit
    pipeline: dict[str, Any] = copy.deepcopy(dict(prior.pipeline))
    steps: dict[str, Any] = pipeline.setdefault("steps", {})
    changes: dict[str, Any] = {}
    changed = False

    # a step appended on the last output ("then upscale it")
    image_ops = [n for n in ops if OPERATIONS[n].takes == "image" and n != "img2img"]
    if image_ops and (starts_as_edit or re.search(r"\b(?:it|them|this|that|the result|the image)\b", folded)):
        last = _last_output_step(pipeline)
        if last is None:
            return None
        last_tool = cat.by_slug.get(steps[last]["tool"])
        source: dict[str, Any] = {
            "from": last,
            "output": _port(last_tool.spec, "image") if last_tool else "image",
        }
        b = _Builder(cat, context.seed, steps, pipeline.setdefault("inputs", {}), list(_chain_of(pipeline)))
        for name in image_ops:
            tool = cat.pick(OPERATIONS[name], None)
            if tool is None:
                return None
            inputs, _ = _fill(
                name, tool.spec, params, b, sized=name in ("resize", "crop"), prompt="", source=source
            )
            sid = b.add(OPERATIONS[name].step, tool.spec, inputs)
            source = {"from": sid, "output": _port(tool.spec, OPERATIONS[name].gives)}
        changes.update(_relevant(params, image_ops))
        return Proposal(
            pipeline=pipeline, chain=tuple(b.chain), params=changes,
            explanation=f"the last plan, then {' → '.join(b.chain[len(prior.chain):])}", intent="iterate",
        )  # fmt: skip

    last = _last_output_step(pipeline)
    last_tool = cat.by_slug.get(steps[last]["tool"]) if last else None
    if (
        last is not None
        and last_tool is not None
        and _gives(last_tool.spec) == "text"
        and (
            _explicit_generate(text) or re.search(r"\b(?:draw|make|render|paint) (?:it|that|this)\b", folded)
        )
    ):
        gen = cat.pick(OPERATIONS["generate"], params.get("model"))
        if gen is not None:
            b = _Builder(
                cat, context.seed, steps, pipeline.setdefault("inputs", {}), list(_chain_of(pipeline))
            )
            source = {"from": last, "output": _port(last_tool.spec, "text")}
            inputs, count = _fill("generate", gen.spec, params, b, sized=True, prompt="", source=source)
            inputs["prompt"] = source
            b.add("gen", gen.spec, inputs, count)
            return Proposal(
                pipeline=pipeline, chain=tuple(b.chain), params=_relevant(params, ["generate"]),
                explanation=f"the last plan, then {gen.spec.slug} on its text", intent="iterate",
            )  # fmt: skip

    found = _prompt_step(pipeline)
    if found is None:
        return None
    sid, field = found
    step = steps[sid]
    gen_tool = cat.by_slug.get(step["tool"])
    spec = gen_tool.spec if gen_tool else None
    # the step that draws (the enhance step only holds the idea)
    draw_sid = next(
        (
            s
            for s, st in steps.items()
            if (t := cat.by_slug.get(st["tool"])) and t.spec.category in ("text-to-image", "image-to-image")
        ),
        sid,
    )
    draw = steps[draw_sid]
    draw_tool = cat.by_slug.get(draw["tool"])
    draw_spec = draw_tool.spec if draw_tool else spec

    # another model ("use flux instead")
    family = params.get("model")
    if (
        family
        and draw_spec is not None
        and draw_spec.base_model != _FAMILY_TOKENS[family]
        and (_SWITCH_RE.search(folded) or starts_as_edit)
    ):
        op = "generate" if draw_spec.category == "text-to-image" else "img2img"
        new = cat.pick(OPERATIONS[op], family)
        if new is not None and new.spec.base_model == _FAMILY_TOKENS[family]:
            kept = {
                k: v
                for k, v in draw["inputs"].items()
                if _input(new.spec, k) is not None and k not in ("steps", "cfg", "negative_prompt")
            }
            draw["tool"] = new.spec.slug
            draw["inputs"] = kept
            for name in ("steps", "cfg"):
                if name in params:
                    _set_if(new.spec, kept, name, params[name])
            draw_spec = new.spec
            changes["model"] = family
            changed = True
            if field == "idea":
                _set_if(spec, steps[sid]["inputs"], "base_model", new.spec.base_model) if spec else None

    if _NEW_SEED_RE.search(folded) or (params.get("seed") is not None):
        seed = params.get("seed", context.seed)
        if draw_spec is not None and _input(draw_spec, "seed") is not None:
            draw["inputs"]["seed"] = seed
            changes["seed"] = seed
            changed = True
    if draw_spec is not None:
        current_steps = draw["inputs"].get(
            "steps", (_input(draw_spec, "steps") or InputSpec("steps", "integer", ())).default
        )
        if "steps" in params and "model" not in changes:
            _set_if(draw_spec, draw["inputs"], "steps", params["steps"])
            changes["steps"] = draw["inputs"].get("steps")
            changed = True
        elif isinstance(current_steps, int) and _MORE_STEPS_RE.search(folded):
            _set_if(draw_spec, draw["inputs"], "steps", max(current_steps + 1, round(current_steps * 1.5)))
            changes["steps"] = draw["inputs"].get("steps")
            changed = True
        elif isinstance(current_steps, int) and _FEWER_STEPS_RE.search(folded):
            _set_if(draw_spec, draw["inputs"], "steps", max(1, round(current_steps / 1.5)))
            changes["steps"] = draw["inputs"].get("steps")
            changed = True
        cfg_in = _input(draw_spec, "cfg")
        current_cfg = draw["inputs"].get("cfg", cfg_in.default if cfg_in else None)
        if cfg_in is not None and "cfg" in params and "model" not in changes:
            _set_if(draw_spec, draw["inputs"], "cfg", params["cfg"])
            changes["cfg"] = draw["inputs"].get("cfg")
            changed = True
        elif cfg_in is not None and isinstance(current_cfg, int | float) and _CFG_UP_RE.search(folded):
            _set_if(draw_spec, draw["inputs"], "cfg", round(float(current_cfg) + 1.5, 2))
            changes["cfg"] = draw["inputs"].get("cfg")
            changed = True
        elif cfg_in is not None and isinstance(current_cfg, int | float) and _CFG_DOWN_RE.search(folded):
            _set_if(draw_spec, draw["inputs"], "cfg", round(max(0.0, float(current_cfg) - 1.5), 2))
            changes["cfg"] = draw["inputs"].get("cfg")
            changed = True
        if "width" in params or "height" in params or "aspect" in params:
            if "width" in params or "height" in params:
                _set_if(draw_spec, draw["inputs"], "width", params.get("width"))
                _set_if(draw_spec, draw["inputs"], "height", params.get("height"))
            elif dims := _dims(draw_spec, params["aspect"]):
                draw["inputs"]["width"], draw["inputs"]["height"] = dims
            changes.update({k: params[k] for k in ("width", "height", "aspect") if k in params})
            changed = True
        if "count" in params:
            draw["variations"] = {"count": params["count"]}
            changes["count"] = params["count"]
            changed = True

    # prompt terms removed and added
    prompt = steps[sid]["inputs"][field]
    removed: list[str] = []
    for m in _REMOVE_RE.finditer(folded):
        term = _clean_term(m.group(1))
        term = re.split(r"\b(?:and|but|,|please|instead|make|add|with)\b", term)[0].strip()
        if term and term not in ("more", "longer", "seed"):
            removed.append(term)
    for m in _LESS_RE.finditer(folded):
        removed.append(m.group(1))
    for term in removed:
        prompt = _remove_term(prompt, term)
    if removed:
        changed = True
        changes["removed"] = removed
        neg = _input(draw_spec, "negative_prompt") if draw_spec else None
        if neg is not None:
            old = draw["inputs"].get("negative_prompt")
            terms_ = ([old] if isinstance(old, str) and old else []) + removed
            draw["inputs"]["negative_prompt"] = ", ".join(terms_)
    recoloured = _recolour(prompt, stripped)
    if recoloured is not None:
        prompt, addition = recoloured, ""
        changes["added"] = [stripped]
        changed = True
    else:
        addition = _addition(stripped, removed)
    if addition:
        prompt = f"{prompt}, {addition}" if prompt else addition
        changes["added"] = [addition]
        changed = True
    steps[sid]["inputs"][field] = prompt
    if not changed:
        return None
    return Proposal(
        pipeline=pipeline,
        chain=_chain_of(pipeline),
        params={k: v for k, v in changes.items() if k not in ("removed", "added")},
        explanation=_iteration_explanation(changes),
        intent="iterate",
    )


_NOT_ADDITIONS = re.compile(
    r"\b(?:another|again|one more|new seed|different (?:seed|one)|re-?roll|try again|encore|noch|otr[ao]|"
    r"steps?|cfg|guidance|seed|instead|use|switch|flux|sdxl|sd15|model|images?|versions?|redo|regenerate|"
    r"\d+:\d+|\d+x\d+|square|widescreen)\b"
)


def _addition(stripped: str, removed: Sequence[str]) -> str:
    """The terms a message adds to the prompt ("more vibrant" → "vibrant")."""
    text = stripped
    for m in _REMOVE_RE.finditer(text):
        text = text.replace(m.group(0), " ")
    for m in _LESS_RE.finditer(text):
        text = text.replace(m.group(0), " ")
    text = _NEW_SEED_RE.sub(" ", text)  # "another one", "i don't like it": a new seed, no new words
    text = " ".join(text.split())
    if not re.search(
        r"\b(?!(?:it|this|that|the|one|please|but|and|now|you|can|try|just|okay)\b)[a-z]{3,}", text
    ):
        return ""
    text = re.sub(r"^(?:ok(?:ay)?|hmm+|nice|great|cool|perfect|love it|good|yes|yeah|thanks)\W+", "", text)
    text = re.sub(r"^(?:please|pls|can you|could you)\s+", "", text)
    if not text:
        return ""
    for pattern in _ADD_RES:
        if found := pattern.match(text):
            term = _clean_term(found.group(1))
            if term and not _NOT_ADDITIONS.search(term):
                return term
            return ""
    words = text.split()
    if len(words) <= 4 and not _NOT_ADDITIONS.search(text) and not _CUES["generate"].search(text):
        return _clean_term(text)
    return ""


_COLOUR_WORDS = (
    "red|blue|green|yellow|orange|purple|violet|pink|brown|black|white|grey|gray|golden|gold|silver|teal|"
    "turquoise|beige|cyan|magenta|crimson|navy"
)
_RECOLOUR_RE = re.compile(
    rf"^(?:make|turn|paint|change|colou?r) (?:the |his |her |its )?([a-z]+) (?:to |into |in )?({_COLOUR_WORDS})$"
)


def _recolour(prompt: str, stripped: str) -> str | None:
    """ "make the car blue" on "a red sports car": the colour of the thing replaced, or None."""
    m = _RECOLOUR_RE.match(stripped)
    if m is None:
        return None
    noun, colour = m.group(1), m.group(2)
    found = re.search(rf"\b(?:(?:{_COLOUR_WORDS})\s+)?((?:[a-z-]+\s+)?){re.escape(noun)}s?\b", prompt)
    if found is None:
        return None
    words = found.group(0).split()
    if words[0] in _COLOUR_WORDS.split("|"):
        words = words[1:]
    return prompt[: found.start()] + " ".join([colour, *words]) + prompt[found.end() :]


def _iteration_explanation(changes: Mapping[str, Any]) -> str:
    parts = []
    if "added" in changes:
        parts.append("added " + ", ".join(changes["added"]))
    if "removed" in changes:
        parts.append("removed " + ", ".join(changes["removed"]))
    for key in ("model", "seed", "steps", "cfg", "count", "aspect", "width", "height"):
        if key in changes:
            parts.append(f"{key} {changes[key]}")
    return "the last plan with " + "; ".join(parts)


# -- the entry point -----------------------------------------------------------------------------


def _unsupported(text: str) -> str | None:
    folded = normalize(text)
    for pattern, what in _UNSUPPORTED:
        for m in pattern.finditer(folded):
            if what in ("audio", "video", "text") and (
                _PICTURE_AFTER.match(folded[m.end() :]) or _PICTURE_BEFORE.search(folded[: m.start()])
            ):
                continue
            return what
    return None


def _question(text: str, cat: _Catalog, has_image: bool) -> Question | None:
    folded = normalize(text)
    is_question = "?" in text or bool(_QUESTION_START.match(folded))
    if _Q_BALANCE.search(folded):
        return Question("balance")
    if _Q_PRICE.search(folded) and (
        is_question or re.search(r"\bhow much|\bprice|\bcost|\bcombien|\bkoste|\bcu[aá]nto", folded)
    ):
        return Question("price", _named_tool(text, cat))
    if _Q_RUN.search(folded) and (is_question or len(folded.split()) <= 8):
        return Question("run")
    if _Q_CAPABILITIES.search(folded):
        return Question("capabilities")
    about_the_image = has_image and re.search(
        r"\b(?:this|my|the|that)\s+(?:\w+\s+)?(?:photo|image|picture|pic)\b", folded
    )
    if is_question and _Q_TOOL.search(folded) and not about_the_image:
        tool = _named_tool(text, cat, strict=True)
        if tool is not None:
            return Question("tool", tool)
    return None


def _named_tool(text: str, cat: _Catalog, *, strict: bool = False) -> str | None:
    """The tool a question is about, if it names one: an operation's word or a family."""
    folded = normalize(text)
    family = stated_params(text).get("model")
    for name in ("upscale", "caption", "enhance", "img2img", "resize", "crop", "pad", "convert", "grid"):
        if _CUES[name].search(folded):
            tool = cat.pick(OPERATIONS[name], family)
            if tool is not None:
                return tool.spec.slug
    for tool in cat.tools:
        if tool.spec.slug in folded:
            return tool.spec.slug
    if family:
        tool = cat.pick(OPERATIONS["generate"], family)
        return tool.spec.slug if tool else None
    if re.search(r"\b(?:txt2img|text to image|generat\w*)\b", folded):
        tool = cat.pick(OPERATIONS["generate"], None)
        return tool.spec.slug if tool else None
    if strict:
        ranked = cat.retriever.rank(text, cat.tools, limit=1)
        if ranked and ranked[0].score >= ABSTAIN_SCORE * 2:
            return ranked[0].slug
    return None


def _pick_media(text: str, media: Sequence[MediaRef]) -> tuple[MediaRef | None, list[MediaRef]]:
    """The image the message is about: an attachment, else a previous output the text refers to
    ("it", "the second one"), newest last."""
    attachments = [m for m in media if m.source == "attachment" and m.kind == "image"]
    if attachments:
        return attachments[-1], attachments
    outputs = [m for m in media if m.source == "output" and m.kind == "image"]
    if not outputs:
        return None, []
    folded = normalize(text)
    ordinals = {
        "first": 0,
        "1st": 0,
        "second": 1,
        "2nd": 1,
        "third": 2,
        "3rd": 2,
        "fourth": 3,
        "4th": 3,
        "last": -1,
    }
    for word, index in ordinals.items():
        if re.search(rf"\b(?:the )?{word}(?: one| image| picture)?\b", folded) and -len(
            outputs
        ) <= index < len(outputs):
            return outputs[index], [outputs[index]]
    if m := re.search(r"\b(?:number|#|no\.?)\s*(\d)\b", folded):
        index = int(m.group(1)) - 1
        if 0 <= index < len(outputs):
            return outputs[index], [outputs[index]]
    if re.search(
        r"\b(?:it|this|that|them|these|the (?:image|picture|result|output|one)|my (?:image|picture|photo))\b",
        folded,
    ):
        return outputs[-1], outputs
    return None, []


def decide(text: str, context: Context, *, retriever: Retriever | None = None) -> Decision:
    """What to do with the user's message ``text`` given ``context`` (see the module docstring)."""
    cat = _Catalog(context.catalog, retriever or _LEXICAL)
    attachments = [m for m in context.media if m.source == "attachment"]
    if not text.strip():
        return Question("capabilities")
    question = _question(text, cat, bool(attachments))
    if question is not None:
        return question
    what = _unsupported(text)
    if what is not None:
        return Abstain(f"no tool here makes {what}", _suggestions(cat))
    if context.prior is not None and not attachments:
        image, _ = _pick_media(text, context.media)
        ops = [n for _, n in _ops_in(text)]
        image_ops = [n for n in ops if OPERATIONS[n].takes == "image" and n != "img2img"]
        if image is not None and image_ops:
            return _plan(text, context, cat, image, [image], stated_params(text))
        edited = _iterate(text, context, cat, context.prior)
        if edited is not None:
            return edited
    image, images = _pick_media(text, context.media)
    params = stated_params(text)
    folded = normalize(text)
    ops = [n for _, n in _ops_in(text)]
    if not ops and image is None and not _CUES["generate"].search(folded):
        # nothing asks for an operation or a picture: a prompt, or something else entirely?
        ranked = cat.retriever.rank(text, cat.tools, limit=1)
        best = ranked[0].score if ranked else 0.0
        is_question = "?" in text or bool(_QUESTION_START.match(folded))
        if best < ABSTAIN_SCORE and is_question:
            return Abstain("that is not something the tools here do", _suggestions(cat))
    return _plan(text, context, cat, image, images, params)
