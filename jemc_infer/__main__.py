"""``python -m jemc_infer``: the ``jemc-infer`` command."""

from jemc_infer.cli import run

run()
