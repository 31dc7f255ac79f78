"""fakevlm: FakeVLM-style synthetic image detection with artifact explanations."""

__version__ = "0.1.0"
