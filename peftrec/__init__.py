"""peftrec: parameter-efficient fine-tuning of pretrained language models as recommenders."""

__version__ = "0.1.0"
