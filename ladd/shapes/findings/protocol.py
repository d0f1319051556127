"""The findings' protocol: what every arm shares, what varies, and where each artefact lives in the work folder.

One protocol for every arm — the same prompts, iterations, recipe (the paper's: adversarial loss only, t̂ ~
logit-normal(1, 1), the shapes config `configs/ladd-shapes.toml`), seed and evaluation — and one knob changed per
arm. No arm is tuned: each student is its run's last EMA export (the paper: "we train only once and select the last
checkpoint"), evaluated on the 256 held-out prompts at 1 and 4 steps. The centre configuration also runs with a
second seed, so seed spread can be set against every contrast.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ladd.paths import CONFIGS_DIR, MODELS_DIR

REAL, SYNTHETIC = "real", "synthetic"


@dataclass(frozen=True)
class Arm:
    """One LADD run: the depths of student, teacher (discriminator features) and data generator, the renoising
    mean m, the data source, the L_distill weight, the training seed, and `dpo`: the preference source of the DPO
    teacher that is student initialisation, teacher and data generator (Sec. 4.5; "" for the pretrained teacher)."""

    student_depth: int
    teacher_depth: int
    generator_depth: int
    logit_mean: float = 1.0
    data: str = SYNTHETIC
    distill_weight: float = 0.0
    seed: int = 0
    dpo: str = ""

    @property
    def name(self) -> str:
        data = f"g{self.generator_depth}" if self.data == SYNTHETIC else REAL
        return (f"s{self.student_depth}-t{self.teacher_depth}-{data}-m{self.logit_mean:g}"
                f"-distill{self.distill_weight:g}-seed{self.seed}" + (f"-dpo-{self.dpo}" if self.dpo else ""))

    def tags(self) -> dict:
        """What `bench.run --tag` records, so the report can place the run (e.g. Fig. 7 from the depth tags)."""
        tags = {"student_depth": self.student_depth, "teacher_depth": self.teacher_depth,
                "logit_mean": self.logit_mean, "data": self.data, "distill_weight": self.distill_weight,
                "seed": self.seed}
        if self.data == SYNTHETIC:
            tags["generator_depth"] = self.generator_depth
        if self.dpo:
            tags["dpo"] = self.dpo
        return tags


@dataclass(frozen=True)
class Protocol:
    depths: tuple[int, ...] = (2, 4, 8)
    centre: int = 4  # the committed teacher's depth
    logit_means: tuple[float, ...] = (-1.0, 0.0, 1.0, 2.0)
    centre_logit_mean: float = 1.0  # the paper's choice
    distill_weight: float = 0.2  # the "with L_distill" arms; chosen before measuring (docs/ladd-results.md's 0.2)
    seeds: tuple[int, ...] = (0, 1)  # the centre runs with each; every other arm with the first
    iterations: int = 1000
    batch_size: int = 64
    checkpoint_every: int = 250  # a killed run loses at most this much
    train_config: Path = CONFIGS_DIR / "ladd-shapes.toml"
    train_prompts: int = 6000  # training prompts, the same for every data source
    synth_batch: int = 64
    synth_steps: int = 0  # 0: the generator's own (50 steps, CFG 4.0)
    zoo_config: Path = CONFIGS_DIR / "zoo.toml"
    zoo_reuse: Path = MODELS_DIR  # the committed zoo: the centre teacher, CLIP, VAE and scene encoder
    zoo_overrides: tuple[str, ...] = ()  # e.g. teacher.steps for a shorter build (recorded)
    smoke_zoo: bool = False  # build a smoke zoo in the work folder instead of linking the committed one
    eval_steps: tuple[int, ...] = (1, 4)
    samples_per_prompt: int = 4
    eval_limit: int | None = None  # None: all 256 held-out prompts
    study_samples: int = 4
    study_views: int = 4
    study_noise: float = 0.1  # mean per-annotator probability of answering at random
    study_careless: float = 0.1  # share of careless annotators, on top of one attentive annotator per batch
    n_boot: int = 2000
    # Sec. 4.5: DPO teachers from each preference source; the first one's feeds the DPO-LADD arm
    dpo_sources: tuple[str, ...] = ("evaluator", "study")
    dpo_config: Path = CONFIGS_DIR / "dpo-shapes.toml"
    dpo_iterations: int | None = None  # None: the config's
    dpo_prompts: int = 800  # evaluator pairs: prompts, each drawn dpo_samples times by the teacher
    dpo_samples: int = 4
    dpo_study_prompts: int = 400  # the study route: two teacher runs of these prompts, one comparison per image
    dpo_study_samples: int = 2
    dpo_study_guidance: tuple[float, ...] = (4.0, 2.0)  # the two runs: the teacher's own CFG, and a weaker one

    def centre_arm(self, seed: int = 0) -> Arm:
        return Arm(self.centre, self.centre, self.centre, self.centre_logit_mean, SYNTHETIC, 0.0, seed)

    def vary(self, **change) -> Arm:
        return replace(self.centre_arm(), **change)


FULL = Protocol()
SMOKE = Protocol(
    depths=(1, 2), centre=1, iterations=6, batch_size=4, checkpoint_every=3,
    train_config=CONFIGS_DIR / "ladd-smoke.toml", train_prompts=16, synth_batch=8, synth_steps=2, zoo_config=CONFIGS_DIR / "zoo-smoke.toml", smoke_zoo=True,
    samples_per_prompt=2, eval_limit=8, study_samples=2, study_views=2, n_boot=200,
    # a smoke teacher's images pass no check, so the evaluator gives no pairs (tests/ladd/test_dpo.py runs that route
    # on the committed teacher)
    dpo_sources=("study",), dpo_iterations=2, dpo_study_prompts=24, dpo_study_samples=2)


@dataclass(frozen=True)
class Layout:
    """Where each artefact lives under the work folder."""

    work: Path

    @property
    def zoo(self) -> Path:
        return self.work / "zoo"

    def teacher(self, depth: int, protocol: Protocol) -> Path:
        """The pretrained model of a depth: the zoo's own teacher at the centre, `shapes-sd3-d<depth>` otherwise."""
        return self.zoo / ("shapes-sd3" if depth == protocol.centre else f"shapes-sd3-d{depth}")

    @property
    def prompts(self) -> Path:
        return self.work / "data" / "prompts.csv"

    @property
    def real_csv(self) -> Path:
        return self.work / "data" / "real.csv"

    def data(self, arm: Arm) -> Path:
        if arm.data == REAL:
            return self.work / "data" / REAL
        return self.work / "data" / (f"synth-g{arm.generator_depth}" + (f"-dpo-{arm.dpo}" if arm.dpo else ""))

    def dpo(self, source: str) -> Path:
        """A DPO teacher's folder: its preference pairs (and their images), and the `ladd.dpo` run (`dpo_run`)."""
        return self.work / "dpo" / source

    def dpo_run(self, source: str) -> Path:
        return self.dpo(source) / f"dpo-{source}"  # the run's name labels its LoRA in reports (OUT/lora)

    def dpo_teacher(self, source: str) -> Path:
        return self.dpo_run(source) / "pipeline"

    def dpo_lora(self, source: str) -> Path:
        return self.dpo_run(source) / "lora"

    def pretrained(self, depth: int, protocol: Protocol, dpo: str = "") -> Path:
        """What an arm starts from, distils from and generates with: the pretrained model of `depth`, or the DPO
        teacher of a preference source (which is the centre's)."""
        return self.dpo_teacher(dpo) if dpo else self.teacher(depth, protocol)

    def run(self, arm: Arm) -> Path:
        return self.work / "runs" / arm.name

    def student(self, arm: Arm) -> Path:
        return self.run(arm) / "pipeline"

    def bench(self, label: str) -> Path:
        return self.work / "bench" / label

    def study(self, finding: str) -> Path:
        return self.work / "studies" / f"{finding}.db"

    def features(self, label: str) -> Path:
        return self.work / "features" / f"{label}.npz"
