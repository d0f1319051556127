"""Experiment: does a shapes teacher read word order? A paired-seed test on the held-out two-object prompts.

Measured: the CLIP-only teacher placed objects by the seed (P's relation held as often for the swapped prompt);
the teacher with the scene encoder in SD3's T5 slot reverses the layout every time. Written up in
docs/notebook/shapes-world-diary.md ("The scene encoder: why, and what it changed"). The recorded results ran at
6c18f87.

    python experiments/teacher_word_order.py [--model models/shapes-sd3] [--seeds 4]

For every held-out prompt P = "A <relation> B", the swapped prompt P' = "B <relation> A" has the same words and the
opposite meaning. Both are sampled with the same seeds (the model's default steps and guidance), and every image is
judged against P's relation by the exact evaluator. A model that reads the order puts P's relation in P's images and
breaks it in P''s; a model that reads only the bag of words does the same for both. Also compares the pooled text
embeddings the transformer receives: P against P' (opposite scene) and against P'' = "B <inverse relation> A" (the
same scene in other words). Prints markdown tables and writes a grid of paired samples
(docs/img/teacher-word-order.png).
"""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from ladd.conditioning import encode_prompts
from ladd.paths import REPO_ROOT
from ladd.pipelines import load_pipeline
from ladd.sampling import read_sampling_defaults
from ladd.shapes.evaluate import evaluate
from ladd.shapes.grammar import INVERSE_RELATION, parse_prompt, scene_to_prompt, swap_groups
from ladd.shapes.heldout import load_heldout


def opposite(prompt: str) -> str:
    """The same words, the opposite scene: "A left of B" -> "B left of A"."""
    return scene_to_prompt(swap_groups(parse_prompt(prompt)))


def paraphrase(prompt: str) -> str:
    """The same scene in other words: "A left of B" -> "B right of A"."""
    swapped = swap_groups(parse_prompt(prompt))
    return scene_to_prompt(replace(swapped, relation=INVERSE_RELATION[swapped.relation]))


def pooled_similarities(pipe, prompts: list[str], max_sequence_length: int) -> list[str]:
    """Markdown rows: how far the transformer's pooled text input moves when the meaning flips vs when it does not."""
    unit = [torch.nn.functional.normalize(encode_prompts(pipe, batch, max_sequence_length)[1], dim=-1)
            for batch in (prompts, [opposite(p) for p in prompts],
                          [paraphrase(p) for p in prompts])]
    to_opposite, to_same = (unit[0] * unit[1]).sum(-1), (unit[0] * unit[2]).sum(-1)
    return ["| pooled text embedding of P against | mean cosine |", "|---|---|",
            f"| P' (same words, opposite scene) | {to_opposite.mean():.4f} |",
            f"| P'' (other words, same scene) | {to_same.mean():.4f} |",
            f"| share of prompts where P'' is the nearer | {100 * (to_same > to_opposite).float().mean():.1f}% |"]


def judge(image, prompt: str) -> tuple[bool, bool]:
    """(P's relation holds, every object of P is found with its colour and shape)."""
    checks = evaluate(image, prompt).checks
    return bool(checks["relation"]), all(v for k, v in checks.items() if k.startswith("object_"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO_ROOT / "models" / "shapes-sd3"))
    parser.add_argument("--seeds", type=int, default=4, help="images per prompt and per word order")
    parser.add_argument("--plot", default=str(REPO_ROOT / "docs" / "img" / "teacher-word-order.png"))
    args = parser.parse_args(argv)
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    defaults = read_sampling_defaults(args.model)
    kwargs = {k: defaults[k] for k in ("num_inference_steps", "guidance_scale", "max_sequence_length") if k in defaults}

    rows = load_heldout().query("category == 'two_object'")
    results = {"asked": [], "swapped": []}
    examples = []
    for index, row in enumerate(rows.itertuples()):
        prompts = [row.prompt] * args.seeds + [opposite(row.prompt)] * args.seeds
        generators = [torch.Generator().manual_seed(1000 * index + s) for s in range(args.seeds)] * 2
        images = pipe(prompts, generator=generators, width=row.width, height=row.height, **kwargs).images
        results["asked"] += [judge(image, row.prompt) for image in images[: args.seeds]]
        results["swapped"] += [judge(image, row.prompt) for image in images[args.seeds:]]
        if len(examples) < 6 and (row.width, row.height) == (64, 64):
            examples.append((row.prompt, prompts[-1], images[0], images[args.seeds]))

    print(f"{args.model}: {len(rows)} held-out two-object prompts x {args.seeds} seeds, "
          f"{kwargs.get('num_inference_steps')} steps, guidance {kwargs.get('guidance_scale')}\n")
    print("| images sampled from | P's relation holds | ... among images with both objects right |")
    print("|---|---|---|")
    for label, key in (("P (as asked)", "asked"), ("P' (same words, groups swapped)", "swapped")):
        judged = results[key]
        with_objects = [relation for relation, objects in judged if objects]
        print(f"| {label} | {100 * sum(r for r, _ in judged) / len(judged):.1f}% | "
              f"{100 * sum(with_objects) / max(1, len(with_objects)):.1f}% (of {len(with_objects)}) |")

    print()
    print("\n".join(pooled_similarities(pipe, list(rows["prompt"]), kwargs.get("max_sequence_length", 256))))

    fig, axes = plt.subplots(2, len(examples), figsize=(1.6 * len(examples), 4.4))
    for column, (asked, swap, image_asked, image_swapped) in enumerate(examples):
        for row_index, (text, image) in enumerate(((asked, image_asked), (swap, image_swapped))):
            ax = axes[row_index, column]
            ax.imshow(image)
            ax.set_title("\n".join(textwrap.wrap(text, 24)), fontsize=6)
            ax.axis("off")
    fig.suptitle("same seed, same words, groups swapped (top: P, bottom: P')", fontsize=8)
    fig.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=130)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
