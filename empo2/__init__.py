"""empo2: EMPO² (memory-augmented hybrid on/off-policy RL for LLM agents) on PyTorch Lightning.

Runs never contact a model hub: Hugging Face libraries are put in offline mode on import (a user
may still override these variables explicitly before importing empo2).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
