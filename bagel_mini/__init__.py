"""bagel-mini: a compact, readable re-implementation of BAGEL (arXiv 2505.14683) in plain PyTorch."""

from pathlib import Path

DEFAULT_MODEL = Path(__file__).parent / "default_model"  # the toy model trained on Shapes World by train.py
