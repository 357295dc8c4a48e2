"""Keep third-party chatter out of mentor's own terminal output."""

from __future__ import annotations

import logging
import os


def quiet_libraries() -> None:
    """Silence transformers' info logs and tqdm bars; mentor shows its own rich progress."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # the loader reports unreadable PDFs itself
    # bitsandbytes (dev, qlora) looks for a hub kernel when transformers imports it, and warns
    # twice on every offline command although mentor's own NF4 code never needs that kernel
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("kernels").setLevel(logging.ERROR)
