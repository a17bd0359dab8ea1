"""The ``'nnunet_mm'`` block of dataset.json: one typed reader (:func:`read_settings`), sub-blocks registered by
each method package (:func:`register_sub_block`), shared value checks (:mod:`.validation`)."""
from nnunet_mm.settings.block import (BLOCK_KEY, DatasetSettings, SubBlock, block_of, model_folder_dataset_json_source,
                                      preprocessed_dataset_json_source, read_settings, register_sub_block,
                                      registered_sub_blocks)
from nnunet_mm.settings.description import DatasetDescription
from nnunet_mm.settings.multimodal import (CHANNEL_ACQUISITIONS, AugmentationDecision, MisalignmentSettings,
                                          ModalityDropoutSettings, MultiModalSettings)

__all__ = ["BLOCK_KEY", "CHANNEL_ACQUISITIONS", "AugmentationDecision", "DatasetDescription", "DatasetSettings",
           "MisalignmentSettings", "ModalityDropoutSettings", "MultiModalSettings", "SubBlock", "block_of",
           "model_folder_dataset_json_source", "preprocessed_dataset_json_source", "read_settings",
           "register_sub_block", "registered_sub_blocks"]
