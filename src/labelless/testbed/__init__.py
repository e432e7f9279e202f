"""In-project testbed: a procedural vision-language world and a tiny CLIP pre-trained on it.

No pretrained CLIP weights are needed: :func:`ensure_testbed` generates image-caption pairs,
pre-trains a small open_clip model on the CPU (cached by config hash), and writes a downstream
fine-grained task with a domain shift, class descriptions and SIMULATED captions. The learning
tests of the adaptation methods run on it.

    tb = ensure_testbed()
    backbone = load_backbone(tb.spec)          # "openclip:labelless-testbed:/.../model.pt"
    tb.task.split_json, tb.task.descriptions_json, ...

Other tasks are YAML task files (:mod:`labelless.testbed.taskfile`; ``--data
testbed:task=FILE,split=train``); ``labelless testbed suite`` draws suites of them
(:mod:`labelless.testbed.suite`). The pre-trained model serves every task.

(``labelless.testbed.pretrain`` is the pre-training module; its ``pretrain`` function is not
re-exported here so that the module name is not shadowed.)
"""

from labelless.testbed.build import Testbed, TestbedConfig, ensure_testbed
from labelless.testbed.cache import CODE_VERSION, config_hash, default_cache_dir
from labelless.testbed.pretrain import (
    MODEL_CONFIG_DIR,
    MODEL_NAME,
    PretrainConfig,
    ensure_pretrained,
    register_model_configs,
)
from labelless.testbed.task import TaskConfig, TaskPaths, build_task, group_captions, task_hash
from labelless.testbed.taskfile import load_task_file, write_task_file
from labelless.testbed.world import (
    Scene,
    SceneObject,
    WorldConfig,
    caption,
    render,
    sample_pairs,
    sample_scene,
    simulate_caption,
    simulate_group_caption,
)

__all__ = [
    "CODE_VERSION",
    "MODEL_CONFIG_DIR",
    "MODEL_NAME",
    "PretrainConfig",
    "Scene",
    "SceneObject",
    "TaskConfig",
    "TaskPaths",
    "Testbed",
    "TestbedConfig",
    "WorldConfig",
    "build_task",
    "caption",
    "config_hash",
    "default_cache_dir",
    "ensure_pretrained",
    "ensure_testbed",
    "group_captions",
    "load_task_file",
    "register_model_configs",
    "render",
    "sample_pairs",
    "sample_scene",
    "simulate_caption",
    "simulate_group_caption",
    "task_hash",
    "write_task_file",
]
