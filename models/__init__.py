"""Flow classifiers: the Detector interface and baselines (:mod:`models.baselines`), the model families
(:mod:`models.registry`, :mod:`models.family`; one subpackage per family), checkpoints (:mod:`models.checkpoint`),
training loops (:mod:`models.training`) and weight helpers (:mod:`models.weights`).

The package imports nothing itself, so that naming a family or reading a model specification does not load
torch: import the submodule you need.
"""
