"""Import LoRA metadata from Civitai and Hugging Face through their public REST APIs.

Only metadata is fetched here: name, trigger words, base model, the file's name, size and
SHA-256, and where to download it. The file itself is fetched when an admin approves the LoRA
(`staging.py`). Written from the APIs' documented shapes (see the protocol reference §3.3):
Civitai's `trainedWords` entries are kept as written (an entry may be a comma-separated group),
hashes are uppercase hex, `baseModel` is a free string whose unknown values map to "other".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

from swarmstation.domain.errors import InvalidInput
from swarmstation.net import outbound
from swarmstation.net.policy import Credential, HostRule, OutboundPolicy, origin_rule

LORA_TYPES = frozenset({"LORA", "LOCON", "DORA"})


class LoraImportError(InvalidInput):
    """The URL or what it points at cannot become a LoRA; the message says why (422)."""


@dataclass(frozen=True)
class ImportedLora:
    name: str
    description: str
    triggers: tuple[str, ...]
    base_model: str  # our family label
    source_base_model: str
    file_name: str  # the source's file name
    file_size: int | None
    file_sha256: str | None  # lowercase hex
    source_kind: str  # civitai | huggingface
    download_url: str
    page_url: str
    original_author: str | None
    tags: tuple[str, ...] = ()
    preview_images: tuple[str, ...] = ()
    external_id: str = ""  # e.g. "civitai:123@456", used to make the slug unique
    extra: dict[str, Any] = field(default_factory=dict)


def family_label(source_base_model: str) -> str:
    """Civitai / Hugging Face base-model strings → our labels (SD1.5, SDXL, Pony, Illustrious,
    NoobAI, FLUX, SD3, other). Unknown names are "other", never an error."""
    b = source_base_model.strip().lower()
    if not b:
        return "other"
    if "pony v7" in b or "auraflow" in b:
        return "other"
    if "pony" in b:
        return "Pony"
    if "illustrious" in b:
        return "Illustrious"
    if "noobai" in b or "noob" in b:
        return "NoobAI"
    if "flux" in b:
        return "FLUX"
    if "sdxl" in b or "xl-base" in b or "stable-diffusion-xl" in b or b.startswith("sd xl"):
        return "SDXL"
    if re.search(r"sd ?3|stable-diffusion-3", b):
        return "SD3"
    if re.search(r"sd ?1\.[45]|stable-diffusion-v1-[45]|stable-diffusion-v1", b):
        return "SD1.5"
    return "other"


# -- URL parsing -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceRef:
    kind: str  # civitai | huggingface
    model_id: str | None = None  # civitai model id
    version_id: str | None = None  # civitai model-version id
    repo: str | None = None  # huggingface owner/name
    file: str | None = None  # huggingface file path inside the repo
    revision: str = "main"


_CIVITAI_HOSTS = {"civitai.com", "www.civitai.com"}
_HF_HOSTS = {"huggingface.co", "www.huggingface.co", "hf.co"}


def parse_source_url(
    url: str, *, civitai_hosts: set[str] | None = None, hf_hosts: set[str] | None = None
) -> SourceRef:
    """Which Civitai model or version, or which Hugging Face repository (and file), a URL names."""
    if not isinstance(url, str) or len(url) > 2000:
        raise LoraImportError("url: must be a Civitai or Hugging Face URL")
    parsed = urlparse(url.strip())
    host = (parsed.hostname or "").lower()
    if parsed.port:
        host = f"{host}:{parsed.port}"
    if parsed.scheme not in ("http", "https") or not host:
        raise LoraImportError(f"url: {url!r} is not an http(s) URL")
    parts = [p for p in parsed.path.split("/") if p]
    query = parse_qs(parsed.query)
    if host in (civitai_hosts or _CIVITAI_HOSTS):
        version: str | None = (query.get("modelVersionId") or [""])[0] or None
        if len(parts) >= 2 and parts[0] == "models" and parts[1].isdigit():
            return SourceRef(
                "civitai", model_id=parts[1], version_id=version if version and version.isdigit() else None
            )
        if parts[:3] == ["api", "v1", "models"] and len(parts) >= 4 and parts[3].isdigit():
            return SourceRef(
                "civitai", model_id=parts[3], version_id=version if version and version.isdigit() else None
            )
        if parts[:3] == ["api", "v1", "model-versions"] and len(parts) >= 4 and parts[3].isdigit():
            return SourceRef("civitai", version_id=parts[3])
        if parts[:3] == ["api", "download", "models"] and len(parts) >= 4 and parts[3].isdigit():
            return SourceRef("civitai", version_id=parts[3])
        raise LoraImportError("url: a Civitai URL must name a model (…/models/<id>) or a model version")
    if host in (hf_hosts or _HF_HOSTS):
        if len(parts) < 2 or parts[0] in ("api", "datasets", "spaces", "docs", "models"):
            raise LoraImportError("url: a Hugging Face URL must name a model repository (…/<owner>/<name>)")
        repo = f"{parts[0]}/{parts[1]}"
        revision, file = "main", None
        if len(parts) >= 4 and parts[2] in ("blob", "resolve", "tree"):
            revision = parts[3]
            file = "/".join(parts[4:]) or None
        return SourceRef("huggingface", repo=repo, file=file, revision=revision)
    raise LoraImportError(f"url: {host} is neither Civitai nor Hugging Face; import from one of those")


# -- clients -----------------------------------------------------------------------------------
def _get_json(http: httpx.Client, url: str, what: str) -> Any:
    try:
        resp = http.get(url)
    except outbound.RefusedByPolicy as exc:
        raise LoraImportError(f"{what}: refused: {exc}") from exc
    except httpx.HTTPError as exc:
        raise LoraImportError(f"{what}: cannot reach {httpx.URL(url).host}: {type(exc).__name__}") from exc
    if resp.status_code == 404:
        raise LoraImportError(f"{what}: not found")
    if resp.status_code in (401, 403):
        raise LoraImportError(f"{what}: access denied (a token may be needed)")
    if resp.status_code >= 400:
        raise LoraImportError(f"{what}: the source answered HTTP {resp.status_code}")
    try:
        return resp.json()
    except ValueError as exc:
        raise LoraImportError(f"{what}: the source did not answer with JSON") from exc


def _pick_civitai_file(files: list[dict[str, Any]]) -> dict[str, Any]:
    models = [f for f in files if isinstance(f, dict) and f.get("type") in (None, "Model", "Pruned Model")]
    if not models:
        raise LoraImportError("this model version has no model file")
    primary = [f for f in models if f.get("primary")]
    safetensors = [f for f in models if str(f.get("name", "")).lower().endswith(".safetensors")]
    return (primary or safetensors or models)[0]


def source_credential(kind: str, token: str | None, base_url: str) -> Credential | None:
    """A source's token, scoped to that source's own hosts: its public names and the configured
    base URL's origin. It is never sent anywhere else (a ``downloadUrl`` or a redirect that names
    a storage host or a third party gets no token)."""
    if not token:
        return None
    names = _CIVITAI_HOSTS if kind == "civitai" else _HF_HOSTS
    return Credential.bearer(token, [*(HostRule(h) for h in sorted(names)), origin_rule(base_url)])


class _SourceClient:
    """A read-only JSON API with an optional bearer token (never logged), fetched through the
    outbound policy; the configured base URL is trusted (the operator named it)."""

    default_base_url = ""
    kind = ""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = 30,
        policy: OutboundPolicy | None = None,
    ) -> None:
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        trusted = (policy or OutboundPolicy()).with_allowed(origin_rule(self.base_url))
        credential = source_credential(self.kind, token, self.base_url)
        self.http = outbound.sync_client(
            trusted, credentials=[credential] if credential else [], timeout=timeout
        )

    def close(self) -> None:
        self.http.close()


class CivitaiClient(_SourceClient):
    default_base_url = "https://civitai.com"
    kind = "civitai"

    def fetch(self, ref: SourceRef) -> ImportedLora:
        model: dict[str, Any] | None = None
        if ref.version_id is None:
            model = _get_json(
                self.http, f"{self.base_url}/api/v1/models/{ref.model_id}", f"Civitai model {ref.model_id}"
            )
            versions = model.get("modelVersions") or []
            if not versions:
                raise LoraImportError(f"Civitai model {ref.model_id} has no published version")
            version = versions[0]  # newest first
        else:
            version = _get_json(
                self.http,
                f"{self.base_url}/api/v1/model-versions/{ref.version_id}",
                f"Civitai model version {ref.version_id}",
            )
            model_id = version.get("modelId") or ref.model_id
            if model_id is not None:
                model = _get_json(
                    self.http, f"{self.base_url}/api/v1/models/{model_id}", f"Civitai model {model_id}"
                )
        if not isinstance(version, dict):
            raise LoraImportError("Civitai answered an unexpected shape")
        model_type = str((model or {}).get("type") or (version.get("model") or {}).get("type") or "")
        if model_type.upper() not in LORA_TYPES:
            raise LoraImportError(
                f"this Civitai model is a {model_type or 'model of unknown type'}, not a LoRA"
            )
        file = _pick_civitai_file(version.get("files") or [])
        hashes = {str(k).upper(): str(v) for k, v in (file.get("hashes") or {}).items()}
        size_kb = file.get("sizeKB")
        version_id = str(version.get("id") or ref.version_id or "")
        download = file.get("downloadUrl") or version.get("downloadUrl")
        if not download:
            raise LoraImportError("this Civitai model version has no download (archived?)")
        name = str(
            (model or {}).get("name") or (version.get("model") or {}).get("name") or f"civitai-{version_id}"
        )
        vname = str(version.get("name") or "")
        triggers = tuple(str(w).strip() for w in version.get("trainedWords") or [] if str(w).strip())
        creator = (model or {}).get("creator") or {}
        images = tuple(
            str(i["url"]) for i in version.get("images") or [] if isinstance(i, dict) and i.get("url")
        )[:8]
        base = str(version.get("baseModel") or "")
        model_id_of = (model or {}).get("id") or version.get("modelId") or ref.model_id
        return ImportedLora(
            name=f"{name} {vname}".strip() if vname and vname.lower() not in name.lower() else name,
            description=str((model or {}).get("description") or version.get("description") or "")[:20_000],
            triggers=triggers,
            base_model=family_label(base),
            source_base_model=base,
            file_name=str(file.get("name") or f"{version_id}.safetensors"),
            file_size=int(float(size_kb) * 1024) if isinstance(size_kb, int | float) else None,
            file_sha256=hashes["SHA256"].lower() if hashes.get("SHA256") else None,
            source_kind="civitai",
            download_url=str(download),
            page_url=f"https://civitai.com/models/{model_id_of}?modelVersionId={version_id}",
            original_author=str(creator.get("username")) if creator.get("username") else None,
            tags=tuple(str(t) for t in (model or {}).get("tags") or [] if isinstance(t, str))[:30],
            preview_images=images,
            external_id=f"civitai:{model_id_of}@{version_id}",
        )


_HF_BASE_TAG = re.compile(r"^base_model:(?:finetune:|adapter:)?(.+)$")


class HuggingFaceClient(_SourceClient):
    default_base_url = "https://huggingface.co"
    kind = "huggingface"

    def fetch(self, ref: SourceRef) -> ImportedLora:
        assert ref.repo is not None
        info = _get_json(
            self.http,
            f"{self.base_url}/api/models/{ref.repo}?blobs=true",
            f"Hugging Face repository {ref.repo}",
        )
        if not isinstance(info, dict):
            raise LoraImportError("Hugging Face answered an unexpected shape")
        siblings = [s for s in info.get("siblings") or [] if isinstance(s, dict) and s.get("rfilename")]
        weights = [s for s in siblings if str(s["rfilename"]).lower().endswith(".safetensors")]
        if ref.file is not None:
            chosen = [s for s in siblings if s["rfilename"] == ref.file]
            if not chosen:
                raise LoraImportError(f"{ref.repo} has no file {ref.file}")
        elif len(weights) == 1:
            chosen = weights
        elif not weights:
            raise LoraImportError(f"{ref.repo} has no .safetensors file")
        else:
            loras = [s for s in weights if "lora" in str(s["rfilename"]).lower()]
            if len(loras) != 1:
                names = ", ".join(sorted(str(s["rfilename"]) for s in weights)[:10])
                raise LoraImportError(
                    f"{ref.repo} has several weight files ({names}); name one in the URL (…/blob/main/<file>)"
                )
            chosen = loras
        file = chosen[0]
        lfs = file.get("lfs") or {}
        card = info.get("cardData") or {}
        base_candidates: list[str] = []
        cb = card.get("base_model")
        base_candidates += [cb] if isinstance(cb, str) else [str(x) for x in cb or [] if isinstance(x, str)]
        for tag in info.get("tags") or []:
            m = _HF_BASE_TAG.match(str(tag))
            if m:
                base_candidates.append(m.group(1))
        base = base_candidates[0] if base_candidates else ""
        prompt = card.get("instance_prompt")
        triggers = (
            [prompt] if isinstance(prompt, str) else [str(p) for p in prompt or [] if isinstance(p, str)]
        )
        revision = str(info.get("sha") or ref.revision)
        return ImportedLora(
            name=str(card.get("model_name") or ref.repo.split("/")[1]),
            description=str(card.get("description") or ""),
            triggers=tuple(t.strip() for t in triggers if t and t.strip()),
            base_model=family_label(base),
            source_base_model=base,
            file_name=str(file["rfilename"]).rsplit("/", 1)[-1],
            file_size=int(lfs.get("size") or file.get("size") or 0) or None,
            file_sha256=str(lfs["sha256"]).lower() if lfs.get("sha256") else None,
            source_kind="huggingface",
            download_url=f"{self.base_url}/{ref.repo}/resolve/{revision}/{file['rfilename']}",
            page_url=f"https://huggingface.co/{ref.repo}",
            original_author=str(info.get("author")) if info.get("author") else None,
            tags=tuple(str(t) for t in info.get("tags") or [] if ":" not in str(t))[:30],
            external_id=f"hf:{ref.repo}/{file['rfilename']}",
        )


def fetch_metadata(url: str, *, civitai: CivitaiClient, huggingface: HuggingFaceClient) -> ImportedLora:
    civitai_host = httpx.URL(civitai.base_url).netloc.decode()
    hf_host = httpx.URL(huggingface.base_url).netloc.decode()
    ref = parse_source_url(url, civitai_hosts=_CIVITAI_HOSTS | {civitai_host}, hf_hosts=_HF_HOSTS | {hf_host})
    return civitai.fetch(ref) if ref.kind == "civitai" else huggingface.fetch(ref)
