"""bagel-mini: a compact, readable re-implementation of BAGEL (arXiv 2505.14683) in plain PyTorch."""
