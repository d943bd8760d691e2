"""vae-lightning: Variational Autoencoders with Lightning, from YAML.

The public classes are importable from here, e.g. ``vae_lightning.VAE``; imports are lazy so
that ``vae --help`` does not pay for torch and lightning.
"""

from importlib import import_module

__all__ = [
    "VAE", "BetaVAE", "FreeBitsVAE", "BetaTCVAE", "ForwardRecord", "Objective",
    "MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder",
    "Bernoulli", "Gaussian", "LearnedGaussian",
    "StandardNormal", "MixtureOfGaussians", "VampPrior",
    "Constant", "LinearWarmup", "Cyclical",
]

_WHERE = {
    **dict.fromkeys(["VAE", "ForwardRecord", "Objective"], "vae_lightning.models"),
    **dict.fromkeys(["BetaVAE", "FreeBitsVAE", "BetaTCVAE"], "vae_lightning.variants"),
    **dict.fromkeys(["MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder"], "vae_lightning.nets"),
    **dict.fromkeys(["Bernoulli", "Gaussian", "LearnedGaussian"], "vae_lightning.likelihoods"),
    **dict.fromkeys(["StandardNormal", "MixtureOfGaussians", "VampPrior"], "vae_lightning.priors"),
    **dict.fromkeys(["Constant", "LinearWarmup", "Cyclical"], "vae_lightning.objectives"),
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vae_lightning' has no attribute {name!r}")
