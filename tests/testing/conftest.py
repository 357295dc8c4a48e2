"""Keep the test-kit tests offline: nothing may reach a model hub."""

import os

# Set before any test module imports transformers, which reads these once at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
