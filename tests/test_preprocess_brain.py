"""Brain extraction: deepbet against the true brain, HD-BET on a test-built model, and none."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from test_preprocess_phantom import acquire, dice, make_grid, motion, world_head

from glioma.errors import InputError
from glioma.preprocess.brain import (
    extract_brain,
    extract_brain_file,
    hdbet_folder,
    largest_component_filled,
    nonzero_mask,
)

torch.set_num_threads(2)

UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def _tiny_plans() -> dict:
    """nnU-Net v2 plans of a 3-stage PlainConvUNet (4/8/16 features) working at 6 mm."""
    conv = [[3, 3, 3]] * 3
    plans = {
        "dataset_name": "Dataset999_TinyBet",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [3.0, 3.0, 3.0],
        "original_median_shape_after_transp": [64, 64, 64],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 1.0,
                "mean": 0.5,
                "median": 0.5,
                "min": 0.0,
                "percentile_00_5": 0.0,
                "percentile_99_5": 1.0,
                "std": 0.2,
            }
        },
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 1,
                "patch_size": [32, 32, 32],
                "median_image_size_in_voxels": [64, 64, 64],
                "spacing": [6.0, 6.0, 6.0],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {
                    "is_seg": False,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_seg_kwargs": {
                    "is_seg": True,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_probabilities_kwargs": {
                    "is_seg": False,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "batch_dice": False,
                "architecture": {
                    "network_class_name": UNET,
                    "arch_kwargs": {
                        "n_stages": 3,
                        "features_per_stage": [4, 8, 16],
                        "conv_op": "torch.nn.modules.conv.Conv3d",
                        "kernel_sizes": conv,
                        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                        "n_conv_per_stage": [1, 1, 1],
                        "n_conv_per_stage_decoder": [1, 1],
                        "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                        "dropout_op": None,
                        "dropout_op_kwargs": None,
                        "nonlin": "torch.nn.LeakyReLU",
                        "nonlin_kwargs": {"inplace": True},
                    },
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
            }
        },
    }
    return plans


def _tiny_nnunet_folder(folder):
    """Write a randomly initialised nnU-Net v2 model folder in HD-BET's format (a 3-stage U-Net)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = _tiny_plans()
    dataset = {
        "channel_names": {"0": "T1"},
        "labels": {"background": 0, "brain": 1},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    (folder / "fold_all").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    manager = PlansManager(plans)
    network = nnUNetTrainer.build_network_architecture(
        manager, manager.get_configuration("3d_fullres"), 1, 2, enable_deep_supervision=False
    )
    torch.manual_seed(0)
    with torch.no_grad():
        # Bias the output layer towards "brain" so the random network gives a non-empty mask.
        network.decoder.seg_layers[-1].bias.copy_(torch.tensor([-1.0, 1.0]))
    checkpoint = {
        "network_weights": network.state_dict(),
        "trainer_name": "nnUNetTrainer",
        "init_args": {"configuration": "3d_fullres"},
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(checkpoint, folder / "fold_all" / "checkpoint_final.pth")
    return folder


@pytest.fixture(scope="module")
def head():
    """A T1w head with skull on an oblique, RAS-flipped 2 mm grid, and its true brain mask."""
    world = world_head(2.0)
    grid = make_grid([2.0] * 3, rotation_deg=(10, 0, 5), flip=(-1, -1, 1))
    pose = motion((3, -4, 2), (2, 3, -4))
    image = acquire(world.images["t1w"], grid, pose, noise=0.01)
    truth = sitk.GetArrayFromImage(acquire(world.brain, grid, pose, label=True)) > 0
    return image, truth


def test_deepbet_matches_true_brain(head, tmp_path):
    image, truth = head
    sitk.WriteImage(sitk.Cast(image * 1000, sitk.sitkInt16), str(tmp_path / "t1w.nii.gz"))
    extract_brain_file(tmp_path / "t1w.nii.gz", tmp_path / "mask.nii.gz", threads=2)
    mask = sitk.ReadImage(str(tmp_path / "mask.nii.gz"))
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSize() == image.GetSize()
    np.testing.assert_allclose(mask.GetDirection(), image.GetDirection(), atol=1e-5)
    assert dice(sitk.GetArrayFromImage(mask) > 0, truth) >= 0.95


def test_hdbet_runs_with_test_built_model(tmp_path):
    folder = _tiny_nnunet_folder(tmp_path / "hdbet_model")
    image = acquire(world_head(3.0).images["t1w"], make_grid([4.0] * 3, extent_mm=(200,) * 3))
    mask = extract_brain(image, method="hdbet", hdbet_weights=folder)
    array = sitk.GetArrayFromImage(mask)
    assert mask.GetSize() == image.GetSize()
    assert set(np.unique(array)) <= {0, 1}
    assert array.any()


def test_hdbet_missing_weights_says_where_to_put_them(tmp_path):
    with pytest.raises(InputError) as err:
        hdbet_folder(tmp_path / "nowhere")
    message = str(err.value)
    for name in ("dataset.json", "plans.json", "fold_all/checkpoint_final.pth", "nowhere"):
        assert name in message
    assert "hdbet_weights" in message


def test_hdbet_missing_weights_in_file_function_names_patient(tmp_path):
    image = sitk.Image([8, 8, 8], sitk.sitkFloat32) + 1
    sitk.WriteImage(image, str(tmp_path / "t1w.nii.gz"))
    with pytest.raises(InputError, match=r"patient 'P1'.*missing"):
        extract_brain_file(
            tmp_path / "t1w.nii.gz",
            tmp_path / "m.nii.gz",
            method="hdbet",
            hdbet_weights=tmp_path / "empty",
            patient="P1",
            column="t1w",
        )
    assert not (tmp_path / "m.nii.gz").exists()


def test_none_method_keeps_largest_component_and_fills_holes():
    array = np.zeros((20, 20, 20), np.float32)
    array[4:16, 4:16, 4:16] = 1.0
    array[8:12, 8:12, 8:12] = 0.0  # a hole (e.g. a zero-valued necrosis)
    array[0, 0, 0] = 5.0  # a speck away from the brain
    mask = nonzero_mask(array)
    assert mask[10, 10, 10] and not mask[0, 0, 0]
    assert mask.sum() == 12**3
    image = sitk.GetImageFromArray(array)
    out = sitk.GetArrayFromImage(extract_brain(image, method="none"))
    np.testing.assert_array_equal(out, mask.astype(np.uint8))


def test_empty_input_gives_clear_error():
    with pytest.raises(InputError, match="empty"):
        extract_brain(sitk.Image([6, 6, 6], sitk.sitkFloat32), method="none")
    assert not largest_component_filled(np.zeros((3, 3, 3), bool)).any()
