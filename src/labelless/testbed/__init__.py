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

from __future__ import annotations

from typing import Any

#: public name -> the submodule that defines it. Imported on first access, so that the
#: ``labelless testbed`` command line (``labelless.testbed.cli``) answers without loading torch.
_LAZY = {
    **dict.fromkeys(("Testbed", "TestbedConfig", "ensure_testbed"), "labelless.testbed.build"),
    **dict.fromkeys(("CODE_VERSION", "config_hash", "default_cache_dir"), "labelless.testbed.cache"),
    **dict.fromkeys(("MODEL_CONFIG_DIR", "MODEL_NAME", "PretrainConfig", "ensure_pretrained",
                     "register_model_configs"), "labelless.testbed.pretrain"),
    **dict.fromkeys(("TaskConfig", "TaskPaths", "build_task", "group_captions", "task_hash"),
                    "labelless.testbed.task"),
    **dict.fromkeys(("load_task_file", "write_task_file"), "labelless.testbed.taskfile"),
    **dict.fromkeys(("Scene", "SceneObject", "WorldConfig", "caption", "render", "sample_pairs",
                     "sample_scene", "simulate_caption", "simulate_group_caption"),
                    "labelless.testbed.world"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'labelless.testbed' has no attribute {name!r}")


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
