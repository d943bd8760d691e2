"""pythae's trainer (``BaseTrainer``) on the same nets, objective, data, batch size and thread
count. Runs with the bench's own virtual environment (``bench/.venv-pythae``, made by
``python -m bench``), which sees our torch through a ``.pth`` file instead of installing another.

Our nets are wrapped in pythae's ``BaseEncoder``/``BaseDecoder`` and pythae's ``VAE.forward`` is
replaced by our objective, so only the trainer (its per-item DataLoader, loop and bookkeeping)
differs from the other runners.

    bench/.venv-pythae/bin/python -m bench.pythae_run --out pythae.json --threads 2
"""

from __future__ import annotations

import json
import tempfile
import time

import torch
from pythae.data.datasets import BaseDataset
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.trainers import BaseTrainer, BaseTrainerConfig
from pythae.trainers.training_callbacks import TrainingCallback

from bench import workloads as w
from vae_lightning.likelihoods import Bernoulli


class Encoder(BaseEncoder):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        mu, logvar = self.net(x)
        return ModelOutput(embedding=mu, log_covariance=logvar)


class Decoder(BaseDecoder):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, z):
        return ModelOutput(reconstruction=self.net(z))


class OurObjectiveVAE(VAE):
    """pythae's VAE with our loss (recon + kl from ``bench.workloads.objective``)."""

    def forward(self, inputs, **kwargs):
        loss = w.objective(self.encoder.net, self.decoder.net, self.our_likelihood, inputs["data"])
        return ModelOutput(loss=loss, recon_loss=loss, reg_loss=loss)


class Done(Exception):
    pass


class Timer(TrainingCallback):
    def __init__(self, warmup: int, steps: int, batch_sizes: list[int]):
        self.warmup, self.steps, self.sizes = warmup, steps, batch_sizes
        self.done, self.images, self.t0 = 0, 0, None

    def on_train_step_end(self, training_config, **kwargs):
        self.done += 1
        if self.done == self.warmup:
            self.t0, self.c0 = time.perf_counter(), time.process_time()
        elif self.done > self.warmup:
            self.images += self.sizes[(self.done - 1) % len(self.sizes)]
            if self.done == self.warmup + self.steps:
                self.seconds, self.cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
                raise Done


def main() -> None:
    a = w.runner_args()
    images, labels, _ = w.mnist_images()
    data = w.train_images(images)
    encoder, decoder = w.nets()
    model = OurObjectiveVAE(VAEConfig(input_dim=w.IMAGE_SHAPE, latent_dim=w.LATENT), Encoder(encoder), Decoder(decoder))
    model.our_likelihood = Bernoulli()
    n, b = len(data), w.BATCH
    sizes = [b] * (n // b) + ([n % b] if n % b else [])  # pythae keeps the last, smaller batch
    timer = Timer(a.warmup, a.steps, sizes)
    with tempfile.TemporaryDirectory() as tmp:
        config = BaseTrainerConfig(
            output_dir=tmp,
            num_epochs=10_000,
            per_device_train_batch_size=b,
            learning_rate=w.LR,
            optimizer_cls="Adam",
            no_cuda=True,
            steps_saving=None,
        )
        trainer = BaseTrainer(
            model,
            BaseDataset(data, torch.from_numpy(labels[: w.N_TRAIN].copy())),
            training_config=config,
            callbacks=[timer],
        )
        try:
            trainer.train()
        except Done:
            pass
    with open(a.out, "w") as f:
        json.dump(
            {
                "runner": "pythae",
                "threads": torch.get_num_threads(),
                "timed_steps": a.steps,
                "seconds": timer.seconds,
                "images_per_s": timer.images / timer.seconds,
                "images_per_cpu_s": timer.images / timer.cpu,
            },
            f,
        )


if __name__ == "__main__":
    main()
