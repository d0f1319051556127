"""LADD: latent adversarial diffusion distillation for SD3-family teachers (the shapes world is `ladd.shapes`)."""
