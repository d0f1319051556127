"""The model registry: names → diffusers loading recipes with per-model sampling defaults.

A `--model` is a registry name, a local diffusers pipeline folder (with optional `sampling_defaults.json`), or a
LADD training checkpoint folder (a folder holding `ladd_checkpoint.json`). Hub weights are looked up in the local
Hugging Face cache before anything else; when they are absent and the hub is off limits (`HF_HUB_OFFLINE=1`), or
the download fails (gated licence, no login, no network), the run stops with one `ModelUnavailable` line.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError
from ladd.paths import MODELS_DIR

CHECKPOINT_MARKER = "ladd_checkpoint.json"


class ModelUnavailable(BenchError):
    """A model's weights are neither on disk nor downloadable."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "hub" | "folder" | "checkpoint"
    source: str  # hub repo id or folder path
    defaults: dict = field(default_factory=dict)  # pipeline call arguments (steps, guidance, size, ...)
    pipeline: str = "DiffusionPipeline"  # diffusers class used to load a hub repo
    scheduler: tuple[str, dict] | None = None  # (diffusers scheduler class, config overrides)
    unet: tuple[str, str | None] | None = None  # replacement UNet: (repo, safetensors file or None for a folder)
    cuda_dtype: str = "float16"  # weights dtype on GPU (CPU always runs float32)
    variant: str | None = None
    licence: str = ""
    note: str = ""
    batch_size: int = 4

    @property
    def scheduler_label(self) -> str:
        if self.scheduler:
            return self.scheduler[0] + "".join(f" {k}={v}" for k, v in self.scheduler[1].items())
        return "repo default"

    def hub_files(self) -> list[tuple[str, str]]:
        """(repo, file) pairs that must be in the cache for an offline load (the rest follows model_index.json)."""
        files = [(self.source, "model_index.json")]
        if self.unet:
            files.append((self.unet[0], self.unet[1] or "config.json"))
        return files


def read_sampling_defaults(folder: str | Path) -> dict:
    # ladd.sampling imports torch and diffusers; deferring it keeps argument errors instant.
    from ladd.sampling import read_sampling_defaults as read

    return read(folder)


def _sd_size(side: int) -> dict:
    return {"height": side, "width": side}


HUB_MODELS = [
    ModelSpec("sd3-turbo", "hub", "stabilityai/stable-diffusion-3.5-large-turbo",
              {"num_inference_steps": 4, "guidance_scale": 0.0, **_sd_size(1024)},
              pipeline="StableDiffusion3Pipeline", cuda_dtype="bfloat16", licence="stabilityai-ai-community (gated)",
              note="Stability's public SD3.5 Large Turbo (adversarial diffusion distillation); the LADD paper's "
                   "own SD3-Turbo weights were never released"),
    ModelSpec("sd3", "hub", "stabilityai/stable-diffusion-3.5-large",
              {"num_inference_steps": 28, "guidance_scale": 3.5, **_sd_size(1024)},
              pipeline="StableDiffusion3Pipeline", cuda_dtype="bfloat16", licence="stabilityai-ai-community (gated)",
              note="SD3.5 Large, the public successor of the paper's SD3 teacher"),
    ModelSpec("sd3-medium", "hub", "stabilityai/stable-diffusion-3-medium-diffusers",
              {"num_inference_steps": 28, "guidance_scale": 7.0, **_sd_size(1024)},
              pipeline="StableDiffusion3Pipeline", cuda_dtype="float16", licence="stabilityai-ai-community (gated)",
              note="SD3 Medium (2B MMDiT)"),
    ModelSpec("sdxl-turbo", "hub", "stabilityai/sdxl-turbo",
              {"num_inference_steps": 1, "guidance_scale": 0.0, **_sd_size(512)},
              pipeline="StableDiffusionXLPipeline", variant="fp16", licence="sai-nc-community",
              note="ADD-distilled SDXL, 1 step at 512 px", batch_size=8),
    ModelSpec("sdxl", "hub", "stabilityai/stable-diffusion-xl-base-1.0",
              {"num_inference_steps": 50, "guidance_scale": 5.0, **_sd_size(1024)},
              pipeline="StableDiffusionXLPipeline", variant="fp16", licence="openrail++",
              note="SDXL base 1.0, no refiner"),
    ModelSpec("sdxl-lightning", "hub", "stabilityai/stable-diffusion-xl-base-1.0",
              {"num_inference_steps": 4, "guidance_scale": 0.0, **_sd_size(1024)},
              pipeline="StableDiffusionXLPipeline", variant="fp16",
              scheduler=("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
              unet=("ByteDance/SDXL-Lightning", "sdxl_lightning_4step_unet.safetensors"), licence="openrail++",
              note="ByteDance's 4-step UNet on SDXL base (progressive adversarial distillation)"),
    ModelSpec("lcm-sdxl", "hub", "stabilityai/stable-diffusion-xl-base-1.0",
              {"num_inference_steps": 4, "guidance_scale": 8.0, **_sd_size(1024)},
              pipeline="StableDiffusionXLPipeline", variant="fp16", scheduler=("LCMScheduler", {}),
              unet=("latent-consistency/lcm-sdxl", None), licence="openrail++",
              note="latent consistency model UNet on SDXL base"),
    ModelSpec("flux-schnell", "hub", "black-forest-labs/FLUX.1-schnell",
              {"num_inference_steps": 4, "guidance_scale": 0.0, "max_sequence_length": 256, **_sd_size(1024)},
              pipeline="FluxPipeline", cuda_dtype="bfloat16", licence="apache-2.0",
              note="FLUX.1 [schnell], timestep-distilled (LADD) 12B rectified flow transformer"),
    ModelSpec("instruct-pix2pix", "hub", "timbrooks/instruct-pix2pix",
              {"num_inference_steps": 20, "guidance_scale": 7.5, "image_guidance_scale": 1.5, **_sd_size(512)},
              pipeline="StableDiffusionInstructPix2PixPipeline", licence="mit",
              note="InstructPix2Pix (SD1.5): the instruction editor the paper's SD3-edit follows (Fig. 13)"),
    ModelSpec("sd15-inpainting", "hub", "stable-diffusion-v1-5/stable-diffusion-inpainting",
              {"num_inference_steps": 50, "guidance_scale": 7.5, **_sd_size(512)},
              pipeline="StableDiffusionInpaintPipeline", licence="creativeml-openrail-m",
              note="SD1.5 inpainting (9-channel UNet): the paper's diffusion baseline in Fig. 13"),
    ModelSpec("sdxl-inpainting", "hub", "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
              {"num_inference_steps": 30, "guidance_scale": 8.0, **_sd_size(1024)},
              pipeline="StableDiffusionXLInpaintPipeline", variant="fp16", licence="openrail++",
              note="SDXL inpainting 0.1 (9-channel UNet)"),
    ModelSpec("pixart-sigma", "hub", "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
              {"num_inference_steps": 20, "guidance_scale": 4.5, **_sd_size(1024)},
              pipeline="PixArtSigmaPipeline", licence="openrail++", note="PixArt-Σ XL 1024"),
    ModelSpec("playground-v2.5", "hub", "playgroundai/playground-v2.5-1024px-aesthetic",
              {"num_inference_steps": 50, "guidance_scale": 3.0, **_sd_size(1024)},
              pipeline="StableDiffusionXLPipeline", variant="fp16", licence="playground-v2dot5-community",
              note="Playground v2.5 (EDM scheduler from the repo)"),
]

SHAPES_MODELS = {
    "shapes-turbo": ("models/shapes-turbo", "the shapes world's LADD student (4 steps, no guidance)"),
    "shapes-sd3": ("models/shapes-sd3", "the shapes world's teacher (SD3 architecture, 50 steps, CFG)"),
    "shapes-sd3-edit": ("models/shapes-sd3-edit", "the shapes world's edit teacher (nested CFG over image and text)"),
    "shapes-sd3-inpaint": ("models/shapes-sd3-inpaint", "the shapes world's inpainting teacher (channel-concat)"),
    "shapes-edit-turbo": ("models/shapes-edit-turbo", "the shapes world's LADD edit student"),
    "shapes-inpaint-turbo": ("models/shapes-inpaint-turbo", "the shapes world's LADD inpainting student"),
}
# Shapes models not committed with the zoo (docs/image-to-image.md): the command that builds each.
SHAPES_BUILDS = {"shapes-sd3-edit": "python -m ladd.shapes.image_to_image edit",
                 "shapes-sd3-inpaint": "python -m ladd.shapes.image_to_image inpaint"}
# Classical inpainting (OpenCV, no weights): the shapes table's stand-in for LaMa (bench.classical).
CLASSICAL_MODELS = {
    "opencv-telea": ("telea", "OpenCV's fast-marching inpainting (Telea 2004): fills a hole from its border"),
    "opencv-ns": ("ns", "OpenCV's Navier-Stokes inpainting (Bertalmio et al. 2001)"),
}
DEFAULT_MODELS = ("shapes-turbo", "shapes-sd3")  # the embedded default: the student if present, else the teacher

REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in HUB_MODELS}


def shapes_spec(name: str) -> ModelSpec:
    relative, note = SHAPES_MODELS[name]
    folder = MODELS_DIR / Path(relative).name
    return ModelSpec(name, "folder", str(folder), read_sampling_defaults(folder) if folder.is_dir() else {},
                     note=note, batch_size=64)


def default_model() -> str:
    for name in DEFAULT_MODELS:
        if (MODELS_DIR / name / "model_index.json").is_file():
            return name
    raise ModelUnavailable(f"no embedded model: neither {MODELS_DIR / DEFAULT_MODELS[0]} nor "
                           f"{MODELS_DIR / DEFAULT_MODELS[1]} exists (the shapes zoo is committed under models/; "
                           f"update your checkout), or pass --model NAME|PATH")


def classical_spec(name: str) -> ModelSpec:
    method, note = CLASSICAL_MODELS[name]
    return ModelSpec(name, "classical", method, {"num_inference_steps": 0, "width": 64, "height": 64}, note=note,
                     batch_size=64)


def resolve_model(model: str) -> ModelSpec:
    """A registry name, a shapes-zoo name, a classical baseline, a LADD checkpoint folder or a pipeline folder →
    its spec."""
    if model in REGISTRY:
        return REGISTRY[model]
    if model in CLASSICAL_MODELS:
        return classical_spec(model)
    if model in SHAPES_MODELS:
        spec = shapes_spec(model)
        if not (Path(spec.source) / "model_index.json").is_file():
            if model in SHAPES_BUILDS:
                raise ModelUnavailable(f"{model}: {spec.source} not found (not committed with the zoo; build it with "
                                       f"`{SHAPES_BUILDS[model]}`), or pass --model /local/dir")
            raise ModelUnavailable(f"{model}: {spec.source} not found (the shapes zoo is committed under models/; "
                                   f"update your checkout), or pass --model /local/dir")
        return spec
    path = Path(model).expanduser()
    if (path / CHECKPOINT_MARKER).is_file():
        return ModelSpec(model, "checkpoint", str(path.resolve()), read_sampling_defaults(path),
                         note="LADD training checkpoint", batch_size=16)
    if (path / "model_index.json").is_file():
        return ModelSpec(model, "folder", str(path.resolve()), read_sampling_defaults(path),
                         note="local diffusers pipeline folder", batch_size=16)
    if path.exists() or os.sep in model or model.startswith("."):
        raise ModelUnavailable(f"--model {model}: not a diffusers pipeline folder (no model_index.json) "
                               f"nor a LADD checkpoint (no {CHECKPOINT_MARKER})")
    raise BenchError(f"unknown model {model!r}; see `python -m bench.run --list-models`, or pass a local "
                     f"pipeline folder")


# ---------------------------------------------------------------------------------------------------------------
# Availability and loading


def hub_offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or value.strip().lower() in {"1", "true", "yes", "on"}


def missing_hub_files(spec: ModelSpec) -> list[tuple[str, str]]:
    from ladd.pipelines import cached_hub_file

    return [(repo, name) for repo, name in spec.hub_files() if cached_hub_file(repo, name) is None]


def unavailable_message(spec: ModelSpec, reason: str) -> str:
    repos = list(dict.fromkeys([spec.source] + ([spec.unet[0]] if spec.unet else [])))
    gated = "accept its licence on https://huggingface.co/" + repos[0] + " and " if "gated" in spec.licence else ""
    return (f"model {spec.name}: {reason} — {' + '.join(repos)} must be in the Hugging Face cache; "
            f"{gated}log in with `huggingface-cli login` (or `hf auth login`), then rerun with network access "
            f"(unset HF_HUB_OFFLINE) to download it, or pass --model /local/dir with a diffusers pipeline folder")


def is_available(spec: ModelSpec) -> bool:
    """Whether a model can load without the network (used by --list-models)."""
    if spec.kind == "classical":
        return True
    if spec.kind != "hub":
        return Path(spec.source).is_dir()
    return not missing_hub_files(spec)


def check_available(spec: ModelSpec) -> None:
    """Fail before loading anything if the weights are not cached and the hub may not be asked."""
    if spec.kind == "hub" and hub_offline():
        missing = missing_hub_files(spec)
        if missing:
            repo, name = missing[0]
            raise ModelUnavailable(unavailable_message(spec, f"{repo}/{name} is not cached and HF_HUB_OFFLINE is set"))


def _torch_dtype(spec: ModelSpec, device):
    import torch

    return getattr(torch, spec.cuda_dtype) if str(device).startswith("cuda") else torch.float32


def _dtype_kwarg() -> str:
    # diffusers renamed `torch_dtype` to `dtype` (the old name still works but warns); pick what this version takes.
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _load_hub_pipeline(spec: ModelSpec, device):
    import diffusers

    dtype = _torch_dtype(spec, device)
    local_only = hub_offline() or not missing_hub_files(spec)  # a complete cache never needs the network
    kwargs = {_dtype_kwarg(): dtype, "local_files_only": local_only}
    if spec.variant and str(device).startswith("cuda"):
        kwargs["variant"] = spec.variant
    if spec.unet:
        kwargs["unet"] = _load_unet(spec, dtype, local_only)
    pipeline_class = getattr(diffusers, spec.pipeline)
    pipe = pipeline_class.from_pretrained(spec.source, **kwargs)
    if spec.scheduler:
        scheduler_class = getattr(diffusers, spec.scheduler[0])
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config, **spec.scheduler[1])
    return pipe


def _load_unet(spec: ModelSpec, dtype, local_only: bool):
    from diffusers import UNet2DConditionModel

    repo, filename = spec.unet
    if filename is None:  # a full UNet folder (LCM)
        return UNet2DConditionModel.from_pretrained(repo, local_files_only=local_only, **{_dtype_kwarg(): dtype})
    from huggingface_hub import hf_hub_download
    from safetensors.torch import load_file

    config = UNet2DConditionModel.load_config(spec.source, subfolder="unet", local_files_only=local_only)
    unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(load_file(hf_hub_download(repo, filename, local_files_only=local_only)))
    return unet.to(dtype)


def _hub_error_types() -> tuple[type[BaseException], ...]:
    from huggingface_hub import errors

    names = ("GatedRepoError", "RepositoryNotFoundError", "LocalEntryNotFoundError", "HfHubHTTPError",
             "EntryNotFoundError", "OfflineModeIsEnabled", "RevisionNotFoundError")
    return tuple(getattr(errors, n) for n in names if hasattr(errors, n)) + (OSError, ValueError)


def short_reason(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def load_model(spec: ModelSpec, device="cpu"):
    """Load the pipeline behind `spec` onto `device`; hub failures become one `ModelUnavailable` line. The
    libraries' loading bars stay off: bench.run shows one bar over all images, and an error is its only line."""
    check_available(spec)
    if spec.kind == "classical":
        from bench.classical import ClassicalInpainting

        return ClassicalInpainting(spec.source)
    with quiet_loading():
        pipe = _load_pipeline(spec, device)
    pipe.set_progress_bar_config(disable=True)  # bench.run shows one progress bar over all images
    return pipe.to(device)


@contextlib.contextmanager
def quiet_loading():
    """diffusers' and transformers' loading progress bars off for the block, restored after."""
    import diffusers
    import transformers

    libraries = (diffusers.utils.logging, transformers.utils.logging)
    enabled = [lib.is_progress_bar_enabled() for lib in libraries]
    for lib in libraries:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, was in zip(libraries, enabled):
            if was:
                lib.enable_progress_bar()


def _load_pipeline(spec: ModelSpec, device):
    if spec.kind == "checkpoint":
        from ladd.checkpoint import load_student_pipeline  # provided by the training code; imported only when used

        return load_student_pipeline(spec.source)
    if spec.kind == "folder":
        from ladd.pipelines import load_pipeline

        return load_pipeline(spec.source)
    import diffusers

    # diffusers logs its own "Couldn't connect to the Hub" lines; the failure is reported once, below.
    previous = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()
    try:
        return _load_hub_pipeline(spec, device)
    except _hub_error_types() as error:
        raise ModelUnavailable(unavailable_message(spec, short_reason(error))) from None
    finally:
        diffusers.utils.logging.set_verbosity(previous)


def checkpoint_info(spec: ModelSpec) -> dict:
    """The contents of a checkpoint's `ladd_checkpoint.json` (plain data; recorded in config.json)."""
    if spec.kind != "checkpoint":
        return {}
    try:
        return json.loads((Path(spec.source) / CHECKPOINT_MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _transformer_depth(pipeline_dir: str | Path) -> int | None:
    config = Path(pipeline_dir) / "transformer" / "config.json"
    try:
        return json.loads(config.read_text()).get("num_layers")
    except (OSError, json.JSONDecodeError):
        return None


def checkpoint_tags(spec: ModelSpec) -> dict:
    """Tags a LADD checkpoint implies (for ablation tables): student and teacher depth, training iteration."""
    info = checkpoint_info(spec)
    if not info:
        return {}
    tags = {"student_depth": (info.get("student_config") or {}).get("num_layers"),
            "teacher_depth": _transformer_depth(info["teacher"]) if info.get("teacher") else None,
            "iteration": info.get("iteration")}
    return {**{k: v for k, v in tags.items() if v is not None}, **(info.get("tags") or {})}


def format_table(rows: list[dict]) -> str:
    """Left-aligned plain-text columns (no extra dependency)."""
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)


def list_models() -> str:
    """The `--list-models` text: every registry entry with its defaults and whether it is on disk."""
    specs = [shapes_spec(name) for name in SHAPES_MODELS] + [classical_spec(n) for n in CLASSICAL_MODELS] + HUB_MODELS
    rows, notes = [], []
    for spec in specs:
        d = spec.defaults
        rows.append({
            "name": spec.name,
            "source": spec.source if spec.kind == "hub" else os.path.relpath(spec.source),
            "steps": d.get("num_inference_steps", len(d.get("sigmas", [])) or "-"),
            "guidance": d.get("guidance_scale", "-"),
            "size": f"{d['width']}x{d['height']}" if "width" in d and "height" in d else "-",
            "scheduler": spec.scheduler_label,
            "on disk": "yes" if is_available(spec) else "no",
        })
        notes.append(f"  {spec.name}: {spec.note}" + (f" [licence: {spec.licence}]" if spec.licence else ""))
    return "\n".join([
        format_table(rows),
        "",
        "notes:",
        *notes,
        "",
        "Also accepted: any local diffusers pipeline folder (its sampling_defaults.json applies) and a LADD training",
        f"checkpoint folder (one containing {CHECKPOINT_MARKER}). Shapes models show their defaults once built.",
    ])
