"""The shapes world's T5 slot: a bidirectional text encoder trained to say, at every word, what that word's object
group is and where it stands.

Why it exists: SD3 reads prompts through two CLIP towers and T5. The shapes CLIP is causal and contrastive, and its
text states do not separate "A left of B" from "B left of A" (`experiments/teacher_word_order.py`); a teacher trained
on them draws colour and shape as a bag of words and places objects by the seed. In "a red circle left of a blue
square" a causal encoder cannot tell the words "red circle" that a "left of" follows them. A `T5EncoderModel` sees
the whole sentence from every word, and this objective makes it write the scene into each group's words: colour,
shape, count, size and the group's place ("left" for A, "right" for B). The teacher's joint attention can then
bind an image region to the words whose state says that region.

The objective is text-only (prompts and their parsed scene specs, no images): per-token classification heads on the
encoder's last hidden state, which is what `StableDiffusion3Pipeline` passes to the transformer. The heads are
discarded after training; the encoder is saved as the pipeline's `text_encoder_3`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm
from transformers import T5Config, T5EncoderModel

from ladd.logs import MetricsLog
from ladd.shapes.grammar import (
    BACKGROUNDS,
    COLOURS,
    COUNT_WORDS,
    PLACES,
    SHAPES,
    SIZES,
    Scene,
    group_places,
    sample_scene,
    scene_to_prompt,
    word_groups,
)
from ladd.shapes.optim import make_optimizer
from ladd.shapes.zoo import SCENE_SEQUENCE_LENGTH

IGNORE = -100  # F.cross_entropy's ignore_index: tokens a head has nothing to say about

# What each head predicts, and its classes. Group heads label the words of an object group; the background head
# labels every token (the background colours the whole image).
GROUP_CLASSES = {
    "colour": list(COLOURS),
    "shape": list(SHAPES),
    "count": list(COUNT_WORDS),
    "size": [None, *SIZES],
    "place": list(PLACES),
}
BACKGROUND_CLASSES = [None, *BACKGROUNDS]


def scene_encoder_config(tokenizer, cfg: dict, width: int) -> T5Config:
    """A tiny T5 encoder whose width is the transformer's joint-attention width (the pipeline pads the CLIP token
    states to T5's width and concatenates the two streams)."""
    return T5Config(
        vocab_size=len(tokenizer),
        d_model=width,
        d_kv=width // cfg["heads"],
        d_ff=cfg["ff_mult"] * width,
        num_layers=cfg["layers"],
        num_heads=cfg["heads"],
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )


def token_targets(scene: Scene, max_length: int) -> dict[str, list[int]]:
    """Class index per token for each head, for the prompt tokenized as [BOS, one token per word, EOS, pad...]
    (every grammar word is one token of the shapes tokenizer)."""
    targets = {name: [IGNORE] * max_length for name in GROUP_CLASSES}
    places = group_places(scene)
    for word, group in enumerate(word_groups(scene)):
        position = word + 1  # after BOS
        if group is None or position >= max_length:
            continue
        g = scene.groups[group]
        values = {"colour": g.colour, "shape": g.shape, "count": g.count, "size": g.size, "place": places[group]}
        for name, value in values.items():
            targets[name][position] = GROUP_CLASSES[name].index(value)
    targets["background"] = [BACKGROUND_CLASSES.index(scene.background)] * max_length
    return targets


class SceneParsingHeads(nn.Module):
    """One linear classifier per head over the encoder's last hidden state."""

    def __init__(self, width: int):
        super().__init__()
        classes = {**GROUP_CLASSES, "background": BACKGROUND_CLASSES}
        self.heads = nn.ModuleDict({name: nn.Linear(width, len(c)) for name, c in classes.items()})

    def forward(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(states) for name, head in self.heads.items()}


def scene_parsing_loss(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over heads of the token-level cross-entropy (ignored tokens excluded)."""
    return sum(F.cross_entropy(logits[n].flatten(0, 1), targets[n].flatten(), ignore_index=IGNORE) for n in logits)


def place_accuracy(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> float:
    """Share of two-group words whose place (left / right / above / below) is predicted right: the part a causal
    encoder cannot do for the first group."""
    target = targets["place"]
    keep = (target != IGNORE) & (target != PLACES.index("alone"))
    return (logits["place"].argmax(-1)[keep] == target[keep]).float().mean().item()


def sample_batch(rng: np.random.Generator, tokenizer, batch_size: int, max_length: int, exclude: set[str]):
    scenes = []
    while len(scenes) < batch_size:
        scene = sample_scene(rng)
        if scene_to_prompt(scene) not in exclude:
            scenes.append(scene)
    ids = tokenizer([scene_to_prompt(s) for s in scenes], padding="max_length", max_length=max_length,
                    truncation=True, return_tensors="pt").input_ids
    per_scene = [token_targets(s, max_length) for s in scenes]
    targets = {name: torch.tensor([t[name] for t in per_scene]) for name in per_scene[0]}
    return ids, targets


def train_scene_encoder(tokenizer, cfg: dict, width: int, log: MetricsLog, seed: int,
                        exclude: set[str] = frozenset()) -> T5EncoderModel:
    """Train the encoder (and throw-away heads) on random grammar prompts, never one in `exclude`."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    encoder = T5EncoderModel(scene_encoder_config(tokenizer, cfg, width))
    heads = SceneParsingHeads(width)
    params = [*encoder.parameters(), *heads.parameters()]
    optimizer, schedule = make_optimizer(params, cfg, cfg["steps"])
    encoder.train()
    for step in tqdm(range(cfg["steps"]), desc="scene encoder"):
        ids, targets = sample_batch(rng, tokenizer, cfg["batch_size"], SCENE_SEQUENCE_LENGTH, exclude)
        logits = heads(encoder(input_ids=ids).last_hidden_state)
        loss = scene_parsing_loss(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == cfg["steps"] - 1:
            log.write(step=step, loss=loss.item(), place_accuracy=place_accuracy(logits, targets))
    return encoder.eval()
