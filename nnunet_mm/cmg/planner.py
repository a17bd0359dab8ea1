"""Memory-aware plans for CMGTrainer: nnU-Net's default planner, sizing the patch and batch for a CMGUNet.

A CMGUNet runs one encoder (and, through the guidance levels, one decoder) per phase, so at the plain U-Net's
patch size it needs several times the activation memory. This planner keeps nnU-Net's whole procedure (target
spacing, topology, the VRAM heuristic against ``gpu_memory_target_in_gb``) but

* plans ``nnunet_mm.cmg.network.CMGUNet`` with features per stage × ``stream_width_factor(N phases)`` (the
  same slimming ``CMGTrainer`` applies to default plans), and
* estimates memory with ``CMGUNet.compute_conv_feature_map_size``, which counts every phase's streams, the fusion
  and the guidance blocks, so the heuristic shrinks the patch (then the batch) until it fits.

The preprocessed data are those of the default plans (``generate_data_identifier`` returns ``nnUNetPlans_<cfg>``:
spacing, normalisation and transposition do not depend on the network), so planning costs seconds and nothing is
preprocessed twice. nnU-Net's ``-pl`` only searches nnU-Net's own folder, so run it through the plugin::

    nnunet_mm plan -d 501 [-gpu_memory_target 8]        # writes nnUNet_preprocessed/Dataset501_*/nnUNetPlansCMG.json
    nnUNetv2_train 501 3d_fullres 0 -tr CMGTrainer -p nnUNetPlansCMG
"""
from __future__ import annotations

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

from nnunet_mm.cmg.network import CMGUNet
from nnunet_mm.networks.from_plans import slim_features, stream_width_factor

PLANS_NAME = "nnUNetPlansCMG"


class CMGPlanner(ExperimentPlanner):
    """nnU-Net's ExperimentPlanner for a CMGUNet with one stream per channel of the dataset."""

    def __init__(self, dataset_name_or_id: str | int, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = PLANS_NAME,
                 overwrite_target_spacing=None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        num_phases = len(self.dataset_json["channel_names"])
        if num_phases < 2:
            raise ValueError(f"{self.dataset_name} has {num_phases} channel; CMG needs at least two phases.")
        factor = stream_width_factor(num_phases)
        self.UNet_class = CMGUNet
        self.UNet_base_num_features, self.UNet_max_features_2d, self.UNet_max_features_3d = slim_features(
            (self.UNet_base_num_features, self.UNet_max_features_2d, self.UNet_max_features_3d), factor)

    def generate_data_identifier(self, configuration_name: str) -> str:
        return "nnUNetPlans_" + configuration_name
