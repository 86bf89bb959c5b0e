"""prealign-data: turn parallel text into multilingual language models the PreAlign way."""

__version__ = "0.1.0"
