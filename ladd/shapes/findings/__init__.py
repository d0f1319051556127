"""The paper's findings, reproduced in the shapes world: one resumable command per finding.

    python -m ladd.shapes.findings.scaling   [--smoke] [--stage all] [--work results/findings] [--out docs/findings]
    python -m ladd.shapes.findings.renoise   ...      (Fig. 4: t̂ ~ logit-normal(m, 1), m ∈ {−1, 0, 1, 2})
    python -m ladd.shapes.findings.data      ...      (Fig. 5: synthetic vs real data, with and without L_distill)
    python -m ladd.shapes.findings.steps     ...      (Fig. 11: 1 vs 4 steps of one student, metrics and study)
    python -m ladd.shapes.findings.dpo       ...      (Sec. 4.5, Fig. 8: DPO teacher, DPO-LADD, the LoRA reapplied)

(Fig. 7, `scaling`: student / teacher / data-generator depth around the centre, and the study of Figs. 9–11:
students of each depth against the centre.) Every command plans the same kind of stages — pretrained models of
other depths (the zoo's own build, `ladd.shapes.build teacher.depth=…`), training data (`ladd.shapes.prompts`,
`ladd.synth`), LADD runs (`ladd.train`), benchmark runs (`bench.run`), an evaluator-grounded study through the real
study database (`annotate.study`, `annotate.simulate --oracle`) and the tables — and runs the ones not done yet,
each through the module's own command-line entry with the arguments it prints, so every step can be rerun by hand.
A stage that finished leaves a marker; one that was interrupted resumes through its command's own resumption
(`ladd.synth` shards, `ladd.train` checkpoints, `bench.run` images). The commands share one work folder, and an arm
two findings share (the centre configuration) is trained once. `--plan` lists the stages and what is done.

Why here, in the package and not in `experiments/`: the study is part of the product — it is how a user checks
that the paper's claims hold for LADD as this toolkit implements it, rerun after any change to the method, with the
same protocol, tables and figures (`python -m bench.report --findings docs/findings`). It lives in the shapes world
(`ladd/shapes/`), not in the LADD core, because it needs what only that world has: teachers of other depths built
by the zoo, real images that are exactly aligned (the renderer) and an exact evaluator for the verdicts. Like the
zoo's build it is a client of the core, of `bench` and of `annotate`; the core imports none of it.
"""
