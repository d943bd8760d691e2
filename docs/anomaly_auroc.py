"""The README's anomaly table: AUROC of every `vae predict` score for held-out MNIST 9s against
held-out 0–8, after several training lengths, in one process (a plain loop, same objective).

    python docs/anomaly_auroc.py --net mlp --steps 600 2000      # ~30 s on 2 cores
    python docs/anomaly_auroc.py --net conv --steps 300 600 4000  # ~4 min

Data as in tests/test_anomaly.py: the real MNIST test split (``--mnist``); training on the
digits 0–8 of its first 9,000 images, dynamically binarized; scoring the 9s among them plus
the last 1,000 images, with one fixed binarization.
"""

from __future__ import annotations

import argparse
import gzip
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from vae_lightning import VAE, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from vae_lightning.data.base import fixed_binarization
from vae_lightning.evaluation.metrics import PixelMarginals
from vae_lightning.evaluation.scoring import anomaly_scores


def read_idx(path: Path) -> torch.Tensor:
    data = gzip.open(path).read()
    shape = np.frombuffer(data[4 : 4 + 4 * data[3]], ">i4")
    return torch.from_numpy(np.frombuffer(data[4 + 4 * data[3] :], np.uint8).reshape(shape).copy())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", choices=["mlp", "conv"], default="mlp")
    p.add_argument("--steps", type=int, nargs="+", default=[600, 2000], help="report after these steps")
    p.add_argument("--mnist", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))
    a = p.parse_args()
    torch.manual_seed(0)
    x = read_idx(Path(a.mnist, "t10k-images-idx3-ubyte.gz")).unsqueeze(1)
    y = read_idx(Path(a.mnist, "t10k-labels-idx1-ubyte.gz")).long()
    train = x[:9000][y[:9000] != 9].float() / 255  # gray; binarized anew at every step
    held_out = torch.cat([(y[:9000] == 9).nonzero().squeeze(1), torch.arange(9000, 10000)])
    x_test, is_nine = fixed_binarization(x[held_out], 1).float() / 255, (y[held_out] == 9).long()
    print(
        f"training on {len(train)} digits 0-8; scoring {len(x_test)} held-out digits, {int(is_nine.sum())} of them 9s"
    )

    nets = (partial(ConvEncoder, channels=[32, 64], hidden=256), partial(ConvDecoder, channels=[32, 64], hidden=256))
    encoder, decoder = nets if a.net == "conv" else (MLPEncoder, MLPDecoder)
    model = VAE(encoder=encoder, decoder=decoder, latent_dim=16, image_shape=(1, 28, 28), iw_samples=50)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    background = PixelMarginals((1, 28, 28), binary=True)
    for i in range(0, len(train), 1000):  # one binarized pass, as vae predict fits it from the train loader
        background.update(torch.bernoulli(train[i : i + 1000]))
    log_p_pixels = background.compute().log_prob(x_test)

    step = 0
    for target in sorted(a.steps):
        model.train()
        for _ in range(step, target):
            batch = torch.bernoulli(train[torch.randint(len(train), (128,))])
            f = model(batch)
            loss = f.recon.mean() + f.kl.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        step = target
        model.eval()
        parts = [anomaly_scores(model, x_test[i : i + 500], model.iw_samples) for i in range(0, len(x_test), 500)]
        scores = {k: torch.cat([s[k] for s in parts]) for k in parts[0]}
        scores["nll_pixels"] = -log_p_pixels
        scores["neg_llr"] = scores["nll_iw"] - scores["nll_pixels"]
        row = []
        for name, s in scores.items():
            s = s.double()
            row.append(f"{name} {binary_auroc((s - s.min()) / (s.max() - s.min()), is_nine).item():.3f}")
        print(f"step {step}: AUROC " + ", ".join(row), flush=True)


if __name__ == "__main__":
    main()
