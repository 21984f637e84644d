"""Differential privacy for local training: DP-SGD with opacus (:mod:`models.dp.training`) and its accounting over
a whole federated run (:mod:`models.dp.accounting`)."""
