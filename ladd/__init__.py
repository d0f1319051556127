"""LADD: latent adversarial diffusion distillation, and the shapes world it is tested on."""

import os

# OpenMP threads that spin while they wait make torch up to 7x slower on a CPU shared with other jobs (measured on
# this project's 2-core machine: 24.7 s against 4.1 s for the same shapes-teacher batch); sleeping threads cost
# little on an idle machine. Importing this package before torch sets the policy, which OpenMP reads once; an
# explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
