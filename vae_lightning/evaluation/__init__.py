"""What a trained model is measured by: ``metrics`` (IW bound, KL per dimension, active units,
mutual information), ``disentanglement`` (MIG, FactorVAE score), ``disentanglement_classifiers`` (DCI,
SAP, modularity, explicitness, BetaVAE score), ``scoring`` (anomaly scores), ``fid`` (Fréchet
Inception Distance) and ``pictures`` (image grids). The callbacks that report them during
``vae fit|test|predict`` are in ``vae_lightning.callbacks``."""
