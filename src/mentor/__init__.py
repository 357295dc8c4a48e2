"""mentor: teach a language model your domain and measure which way serves you best."""

__version__ = "0.1.0"
