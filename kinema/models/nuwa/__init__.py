"""NÜWA (Wu et al. 2021, arXiv 2111.12417): per-frame VQ-GAN tokens + 3DNA encoder-decoder; card: docs/models/nuwa.md."""
