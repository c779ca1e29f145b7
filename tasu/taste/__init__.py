"""TASTE: text-aligned speech tokenization (aggregator + RVQ + unit decoder) and TASLM head pieces.

Modules: config (TasteConfig), units (k-means unit discovery), rvq (ResidualVQ), aggregator (TextAlignedAggregator),
unit_decoder (UnitDecoder, Vocoder protocol), model (TasteAutoencoder), taslm (delay, heads, loss), taslm_model
(TaslmModel: LLM + LoRA over the joint sequence, selection scoring), metrics. Not imported here (they pull in the
data pipeline and encoders): data (utterances, batches), unit_discovery (`tasu units fit|assign`), recipe (the TASTE
stages of `tasu train`).
"""

from tasu.taste.aggregator import TextAlignedAggregator, pick_key_value, word_pool
from tasu.taste.config import TasteConfig
from tasu.taste.metrics import bitrate, next_speech_selection_accuracy, tokens_per_second, unit_accuracy
from tasu.taste.model import TasteAutoencoder, TasteOutput
from tasu.taste.rvq import ResidualVQ, RVQOutput
from tasu.taste.taslm import PAD_CODE, SpeechEmbedding, SpeechHeads, TaslmLoss, delay_codes, taslm_loss, undelay_codes
from tasu.taste.taslm_model import TaslmModel
from tasu.taste.unit_decoder import UnitDecoder, UnitDecoderOutput, Vocoder
from tasu.taste.units import MiniBatchKMeans, assign, fit_kmeans, load_centroids, save_centroids

__all__ = [
    "PAD_CODE", "MiniBatchKMeans", "RVQOutput", "ResidualVQ", "SpeechEmbedding", "SpeechHeads", "TasteAutoencoder",
    "TasteConfig", "TasteOutput", "TaslmLoss", "TaslmModel", "TextAlignedAggregator", "UnitDecoder",
    "UnitDecoderOutput", "Vocoder",
    "assign", "bitrate", "delay_codes", "fit_kmeans", "load_centroids", "next_speech_selection_accuracy",
    "pick_key_value", "save_centroids", "taslm_loss", "tokens_per_second", "undelay_codes", "unit_accuracy",
    "word_pool",
]
