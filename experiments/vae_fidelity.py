"""Experiment: how faithfully, and how fast, small VAEs decode the zoo VAE's latents.

Measured: the slim decoder (`models/shapes-slim-vae`) decodes as faithfully as the zoo VAE about 3x faster, the
GroupNorm-per-channel and TAESD-style variants do not; one call of 64 latents costs a third more per image than two
of 32 (why `ladd.pipelines.swap_vae` decodes in slices). Written up in docs/notebook/shapes-world-diary.md ("A faster
decoder for the same latents"). The recorded results ran at 3eeff72 and 867f98b (the batch-64 columns).

    python experiments/vae_fidelity.py models/shapes-slim-vae [more VAE folders ...] [--vae models/shapes-sd3/vae]

256 rendered grammar scenes (the first is "a blue circle on a gray background") are encoded by the zoo VAE; each
VAE folder decodes the same latents. Prints PSNR against the zoo VAE's own decodes (mean, worst scene, the blue
circle), the blue circle's centre pixel, and decode milliseconds per image (channels-last, median of 9): at batch 32,
and for a batch of 64 decoded in one call and in two calls of 32; then what diffusers' Upsample2D costs at batch
>= 64, where it makes channels-last activations contiguous (a CUDA workaround) — the difference between the two.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from ladd.paths import REPO_ROOT
from ladd.pipelines import load_vae
from ladd.conditioning import to_model_range
from ladd.shapes.grammar import sample_scene, scene_to_prompt
from ladd.shapes.render import render_prompt


def psnr(images: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """Per image, for images in [-1, 1] (peak-to-peak 2)."""
    mse = ((images - reference) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return (10 * torch.log10(4.0 / mse)).numpy()


def ms_per_image(run, batch: int, repeats: int = 9) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times) / batch


@torch.inference_mode()
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="VAE folders of the zoo VAE's latent space")
    parser.add_argument("--vae", default=str(REPO_ROOT / "models" / "shapes-sd3" / "vae"), help="the reference VAE")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(5)
    prompts = ["a blue circle on a gray background"] + [scene_to_prompt(sample_scene(rng)) for _ in range(255)]
    images = to_model_range(torch.stack([torch.from_numpy(np.array(render_prompt(p, seed=i))).permute(2, 0, 1)
                                         for i, p in enumerate(prompts)]))
    zoo = load_vae(args.vae).eval()
    latents = zoo.encode(images).latent_dist.mean
    reference = zoo.decode(latents).sample.clamp(-1, 1)
    centre = lambda decoded: tuple(int(v) for v in ((decoded[0, :, 32, 32] + 1) * 127.5).round())  # noqa: E731
    print(f"{args.vae} against the renders: {psnr(reference, images).mean():.1f} dB\n")
    print("| VAE | PSNR vs the zoo VAE's decodes, mean / worst | blue circle | its centre pixel (zoo VAE: "
          f"{centre(reference)}) | decode ms / image | batch 64: one call | batch 64: two calls of 32 |")
    print("|---|---|---|---|---|---|---|")
    for folder in [args.vae, *args.folders]:
        vae = load_vae(folder).eval().to(memory_format=torch.channels_last)
        decoded = vae.decode(latents).sample.clamp(-1, 1)
        scores = psnr(decoded, reference)
        cells = ("-", "-") if folder == args.vae else (f"{scores.mean():.1f} / {scores.min():.1f} dB",
                                                       f"{scores[0]:.1f} dB")
        ms = ms_per_image(lambda: vae.decode(latents[:32]), 32)
        whole = ms_per_image(lambda: vae.decode(latents[:64]), 64)
        halves = ms_per_image(lambda: [vae.decode(half) for half in latents[:64].split(32)], 64)
        print(f"| {folder} | {cells[0]} | {cells[1]} | {centre(decoded)} | {ms:.2f} | {whole:.2f} | {halves:.2f} |")
    features = torch.randn(64, 32, 32, 32).to(memory_format=torch.channels_last)  # an upsampler's input
    nearest = {layout: ms_per_image(lambda: F.interpolate(x, scale_factor=2.0, mode="nearest"), 64)
               for layout, x in (("channels-last", features), ("contiguous", features.contiguous()))}
    ratio = nearest["contiguous"] / nearest["channels-last"]
    print(f"\nnearest 2x upsampling of 64 x 32 x 32 x 32 features: {nearest['channels-last']:.3f} ms / image "
          f"channels-last, {nearest['contiguous']:.3f} contiguous ({ratio:.0f}x)")


if __name__ == "__main__":
    main()
