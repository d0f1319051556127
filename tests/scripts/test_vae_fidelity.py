"""scripts/vae_fidelity.py on the smoke zoo: the reference VAE scores nothing against itself, a small VAE gets a row."""

import torch
from vae_fidelity import main, psnr


def test_psnr_is_capped_for_identical_images_and_drops_with_error():
    images = torch.zeros(2, 3, 4, 4)
    noisy = images.clone()
    noisy[1] += 0.1
    scores = psnr(noisy, images)
    assert abs(scores[0] - 106.02) < 0.01  # the error is floored at 1e-10
    assert abs(scores[1] - 10 * torch.log10(torch.tensor(4.0 / 0.01)).item()) < 1e-3  # every pixel 0.1 off


def test_prints_a_row_per_vae_and_the_upsampling_cost(smoke_zoo, capsys):
    out, _ = smoke_zoo
    main([str(out / "shapes-slim-vae"), "--vae", str(out / "shapes-sd3" / "vae")])
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith(f"| {out}")]
    assert len(rows) == 2 and rows[0].split(" | ")[1] == "-"
    assert " dB | " in rows[1]
    assert all(float(cell) > 0 for row in rows for cell in row.rstrip(" |").split(" | ")[-3:])  # three decode timings
    assert "batch 64: two calls of 32" in printed and "nearest 2x upsampling" in printed
