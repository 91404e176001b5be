"""The Hydra configs, shipped inside the installed package as ``alexnet_common.conf`` (a link to this folder):
the commands find them with ``pkg://alexnet_common.conf`` from any working directory."""
