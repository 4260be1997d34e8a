"""CLEVR-like scenes rendered headless with pyrender: images, instance masks, tasks, re-rendering."""
from .dataset import SPLITS, load_manifest, load_scenes, load_split, render_splits
from .tasks import TASKS, TaskError, build_task
from .renderer import Frame, Renderer, get_renderer
from .world import RenderParamsError, World, task_world

__all__ = [
    "SPLITS", "TASKS", "Frame", "Renderer", "RenderParamsError", "TaskError", "World",
    "build_task", "get_renderer", "load_manifest", "load_scenes", "load_split", "render_splits", "task_world",
]
